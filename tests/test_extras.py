"""A core install without extras: every extra-gated feature ends in one line naming its extra, no
core module imports an extra, and the embedded data and fonts need neither mlxtend nor matplotlib."""

from __future__ import annotations

import importlib
import importlib.util
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from nnmark import extras
from nnmark.errors import NnmarkError
from nnmark.extras import EXTRAS, GATED_MODULES, MissingExtraError, require
from nnmark.schemes import render


def block(monkeypatch: pytest.MonkeyPatch, *modules: str) -> None:
    """Make ``import MODULE`` fail as if it were not installed (and forget nnmark modules using it)."""
    for m in modules:
        monkeypatch.setitem(sys.modules, m, None)
    for gated in GATED_MODULES:
        monkeypatch.delitem(sys.modules, gated, raising=False)


def run_cli(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], *args: str
) -> tuple[int, str]:
    from nnmark import cli

    monkeypatch.setattr(sys, "argv", ["nnmark", *args])
    capsys.readouterr()
    with pytest.raises(SystemExit) as stop:
        cli.main()
    code = stop.value.code
    return (code if isinstance(code, int) else 1), capsys.readouterr().err


GATED_COMMANDS = [
    ("onnx", ("onnxruntime",), ["verify", "--key", "absent.key", "--onnx", "suspect.onnx"]),
    ("onnx", ("onnx",), ["export-onnx", "--model", "absent-run", "--out", "x.onnx"]),
    ("serve", ("httpx",), ["verify", "--key", "absent.key", "--url", "http://127.0.0.1:9"]),
    ("serve", ("fastapi",), ["serve", "--model", "absent-run"]),
    ("serve", ("uvicorn",), ["serve", "--model", "absent-run"]),
]


@pytest.mark.parametrize(("extra", "missing", "args"), GATED_COMMANDS)
def test_gated_command_without_its_extra_is_one_line(
    extra: str,
    missing: tuple[str, ...],
    args: list[str],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    monkeypatch.chdir(tmp_path)
    block(monkeypatch, *missing)
    code, err = run_cli(monkeypatch, capsys, *args)
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert code == 2 and len(lines) == 1, err
    assert f"pip install 'nnmark[{extra}]'" in lines[0] and repr(missing[0]) in lines[0], lines[0]
    assert "Traceback" not in err
    assert not list(tmp_path.iterdir())  # stopped before doing anything


def test_python_api_without_an_extra_names_it(monkeypatch: pytest.MonkeyPatch) -> None:
    import nnmark

    block(monkeypatch, "httpx")
    with pytest.raises(ImportError, match=r"pip install 'nnmark\[serve\]'") as caught:
        nnmark.HttpOracle  # noqa: B018
    assert isinstance(caught.value, MissingExtraError) and isinstance(caught.value, NnmarkError)
    block(monkeypatch, "onnxruntime")
    with pytest.raises(MissingExtraError, match=r"nnmark\[onnx\]"):
        nnmark.OnnxOracle("model.onnx")
    for extra, modules in EXTRAS.items():
        block(monkeypatch, *modules)
        with pytest.raises(MissingExtraError, match=rf"pip install 'nnmark\[{extra}\]'"):
            require(extra, modules[0])


def test_a_real_import_error_is_not_hidden(monkeypatch: pytest.MonkeyPatch) -> None:
    """Only a missing package of the extra becomes the one-line message; a bug stays a bug."""
    block(monkeypatch, "scipy")
    with pytest.raises(ImportError) as caught:
        require("serve", "scipy")
    assert not isinstance(caught.value, MissingExtraError)
    with pytest.raises(ValueError, match="unknown extra"):
        require("gpu", "cupy")


def test_no_core_module_imports_an_extra() -> None:
    """Every nnmark module but the gated ones imports with all extras (and mlxtend) unavailable."""
    blocked = sorted({m for mods in EXTRAS.values() for m in mods} | {"mlxtend", "starlette", "pandas"})
    script = textwrap.dedent(
        f"""
        import importlib, pkgutil, sys
        for m in {blocked!r}:
            sys.modules[m] = None
        import nnmark
        gated = {sorted(GATED_MODULES)!r}
        failed = []
        for info in pkgutil.walk_packages(nnmark.__path__, "nnmark."):
            if info.name in gated:
                continue
            try:
                importlib.import_module(info.name)
            except ImportError as e:
                failed.append(f"{{info.name}}: {{e}}")
        print("\\n".join(failed))
        """
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "", f"core modules importing an extra at import time:\n{proc.stdout}"


def test_gated_modules_need_their_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    for module, extra in GATED_MODULES.items():
        block(monkeypatch, *EXTRAS[extra])
        with pytest.raises(MissingExtraError, match=rf"nnmark\[{extra}\]"):
            require(extra, module)
        monkeypatch.undo()
        assert importlib.import_module(module)


# ---------------------------------------------------------------- fonts without matplotlib


def fresh_fonts(monkeypatch: pytest.MonkeyPatch, font_dir: Path | None, fc_match: bool = False) -> None:
    render.font_path.cache_clear()
    render._font.cache_clear()
    monkeypatch.setattr(render.importlib.util, "find_spec", lambda name: None)  # no matplotlib
    monkeypatch.setattr(render, "SYSTEM_FONT_DIRS", ())
    if font_dir is None:
        monkeypatch.delenv(render.FONT_ENV, raising=False)
    else:
        monkeypatch.setenv(render.FONT_ENV, str(font_dir))
    if not fc_match:
        monkeypatch.setattr(render.shutil, "which", lambda name: None)


@pytest.fixture(autouse=True)
def _forget_fonts():
    yield
    render.font_path.cache_clear()
    render._font.cache_clear()


def test_no_font_anywhere_names_the_packages(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    fresh_fonts(monkeypatch, tmp_path)
    with pytest.raises(NnmarkError, match=r"fonts-dejavu-core.*pip install 'nnmark\[plots\]'"):
        render.render_letters(2, (1, 28, 28), torch.Generator().manual_seed(0))
    with pytest.raises(NnmarkError, match="fonts-dejavu-extra"):
        render.font_path("DejaVuSans-Oblique.ttf")


def test_letters_are_the_same_from_a_copy_of_the_same_fonts(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The same font files and generator give the same letters, wherever the files are found."""
    try:
        sources = {name: render.font_path(name) for name in render.FONT_FILES}
    except NnmarkError:
        pytest.skip("no DejaVu fonts on this machine")
    first = render.render_letters(12, (1, 28, 28), torch.Generator().manual_seed(5))
    mask = render.text_mask("TEST", (1, 28, 28))
    for name, path in sources.items():
        shutil.copy(path, tmp_path / name)
    fresh_fonts(monkeypatch, tmp_path)
    assert render.font_path("DejaVuSans.ttf") == tmp_path / "DejaVuSans.ttf"
    assert torch.equal(render.render_letters(12, (1, 28, 28), torch.Generator().manual_seed(5)), first)
    assert torch.equal(render.text_mask("TEST", (1, 28, 28)), mask)
    assert not torch.equal(render.render_letters(12, (1, 28, 28), torch.Generator().manual_seed(6)), first)


def test_matplotlib_and_system_fonts_draw_the_same(monkeypatch: pytest.MonkeyPatch) -> None:
    """Keys made where matplotlib's DejaVu is found must re-derive where only the system's is."""
    system = Path("/usr/share/fonts/truetype/dejavu")
    spec = importlib.util.find_spec("matplotlib")
    if spec is None or not all((system / name).is_file() for name in render.FONT_FILES):
        pytest.skip("needs both matplotlib and Debian's fonts-dejavu-core and fonts-dejavu-extra")
    assert spec.submodule_search_locations
    mpl = Path(spec.submodule_search_locations[0]) / "mpl-data" / "fonts" / "ttf"
    drawn = []
    for folder in (mpl, system):
        render.font_path.cache_clear()
        render._font.cache_clear()
        monkeypatch.setenv(render.FONT_ENV, str(folder))
        assert render.font_path("DejaVuSans-Oblique.ttf").parent == folder
        gen = torch.Generator().manual_seed(11)
        drawn.append(
            [render.render_letters(150, (1, 28, 28), gen), render.render_letters(30, (3, 32, 32), gen)]
            + [render.text_mask(t, (1, 28, 28)) for t in ("TEST", "K3QW", "amxz")]
        )
    for a, b in zip(*drawn, strict=True):
        assert torch.equal(a, b)


@pytest.mark.skipif(shutil.which("fc-match") is None, reason="fontconfig not installed")
def test_fc_match_finds_installed_fonts(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    fresh_fonts(monkeypatch, tmp_path, fc_match=True)
    try:
        path = render.font_path("DejaVuSans.ttf")
    except NnmarkError:
        pytest.skip("fontconfig knows no DejaVu Sans here")
    assert path.name == "DejaVuSans.ttf" and path.is_file() and path.parent != tmp_path


def test_extras_table_matches_pyproject() -> None:
    import tomllib

    pyproject = Path(__file__).resolve().parents[1] / "pyproject.toml"
    meta = tomllib.loads(pyproject.read_text())["project"]
    optional = meta["optional-dependencies"]
    for extra, modules in EXTRAS.items():
        names = {req.split(">")[0].split("=")[0].split("[")[0].strip().lower() for req in optional[extra]}
        assert names == set(modules) | set(extras.SPEEDUPS.get(extra, ())), (extra, names)
    assert set(EXTRAS) <= {e for req in optional["all"] for e in req.split("[")[1].rstrip("]").split(",")}
    core = " ".join(meta["dependencies"]).lower()
    for banned in ["mlxtend", "matplotlib", *extras.EXTRAS["onnx"], *extras.EXTRAS["serve"], "ray"]:
        assert banned not in core, banned
    assert "torch>=" in core and "torch==" not in core


@pytest.mark.parametrize(
    "args",
    [
        ["grid", "run", "g.yaml", "--backend", "ray", "--results", "out"],
        ["reproduce", "zhang2018", "--scale", "tiny", "--backend", "ray", "--out", "out"],
    ],
)
def test_ray_backend_without_ray_is_one_line_and_writes_nothing(
    args: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """Review of issue 12: the extra is checked before the results folder is made."""
    (tmp_path / "g.yaml").write_text("name: g\ntask: watermark\naxes: {seed: [0]}\n")
    monkeypatch.chdir(tmp_path)
    block(monkeypatch, "ray")
    code, err = run_cli(monkeypatch, capsys, *args)
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert code == 2 and len(lines) == 1 and "Traceback" not in err, err
    assert "pip install 'nnmark[ray]'" in lines[0], lines[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["g.yaml"]


def test_reproduce_without_matplotlib_is_one_line_and_writes_nothing(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """Review 12: the figures need the plots extra; the library says so before running any cell
    (a Python caller of run_reproduction too, not only the command line), naming the extra."""
    from nnmark.experiments.reproduce import run_reproduction

    monkeypatch.chdir(tmp_path)
    block(monkeypatch, "matplotlib")
    with pytest.raises(MissingExtraError, match=r"pip install 'nnmark\[plots\]'"):
        run_reproduction("zhang2018", tmp_path / "lib", scale="tiny", workers=0, progress=False)
    code, err = run_cli(monkeypatch, capsys, "reproduce", "zhang2018", "--scale", "tiny", "--out", "cli")
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert code == 2 and len(lines) == 1 and "Traceback" not in err, err
    assert "pip install 'nnmark[plots]'" in lines[0], lines[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == []
