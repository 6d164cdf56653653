"""`nnmark import`: plain PyTorch state_dicts become run folders that give identical outputs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from nnmark.errors import NnmarkError
from nnmark.importing import import_state_dict
from nnmark.io import load_spec
from nnmark.models import build_model
from nnmark.workflow import load_model, model_spec

ARCH = "digit-cnn"


@pytest.fixture(scope="module")
def source(mnist5k) -> nn.Sequential:
    """A digit-cnn for mnist5k with weights that differ from any fresh initialisation."""
    torch.manual_seed(123)
    model = build_model(model_spec(ARCH, mnist5k))
    assert isinstance(model, nn.Sequential)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.01 * torch.randn_like(p))
    return model.eval()


def outputs(model: nn.Module) -> torch.Tensor:
    x = torch.rand(6, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        return model(x)


def save(obj: object, path: Path) -> Path:
    torch.save(obj, path)
    return path


@pytest.mark.parametrize("form", ["full", "body", "dataparallel-body", "checkpoint"])
def test_imported_model_gives_identical_outputs(
    source: nn.Sequential, mnist5k, tmp_path: Path, form: str
) -> None:
    state = {
        "full": source.state_dict(),
        "body": source[1].state_dict(),
        "dataparallel-body": {f"module.{k}": v for k, v in source[1].state_dict().items()},
        "checkpoint": {"epoch": 7, "state_dict": {f"model.{k}": v for k, v in source.state_dict().items()}},
    }[form]
    run = import_state_dict(save(state, tmp_path / "w.pt"), ARCH, tmp_path / "run", evaluate_accuracy=False)
    assert torch.equal(outputs(load_model(run)), outputs(source))
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["source"] == "import" and len(metrics["sha256"]) == 64
    mean, std = mnist5k.channel_stats()
    assert load_spec(run).mean == tuple(mean)  # from the file's buffers or the dataset: the same here
    assert metrics["normalisation"] == ("dataset" if "body" in form else "file")


def test_normalisation_from_the_file_is_recorded(source: nn.Sequential, tmp_path: Path) -> None:
    state = dict(source.state_dict())
    state["0.mean"] = torch.full((1, 1, 1, 1), 0.5)
    state["0.std"] = torch.full((1, 1, 1, 1), 0.25)
    run = import_state_dict(save(state, tmp_path / "w.pt"), ARCH, tmp_path / "run", evaluate_accuracy=False)
    spec = load_spec(run)
    assert spec.mean == (0.5,) and spec.std == (0.25,)
    reference = build_model(spec)
    reference.load_state_dict(state)
    assert torch.equal(outputs(load_model(run)), outputs(reference.eval()))


def test_wrong_architecture_lists_what_does_not_fit(source: nn.Sequential, tmp_path: Path) -> None:
    path = save(source.state_dict(), tmp_path / "w.pt")
    with pytest.raises(NnmarkError, match="does not fit dnn1.*(missing|unexpected)"):
        import_state_dict(path, "dnn1", tmp_path / "run")
    with pytest.raises(NnmarkError, match="--num-classes"):
        import_state_dict(path, ARCH, tmp_path / "run", num_classes=11)
    assert not (tmp_path / "run").exists()


def test_other_class_count_with_num_classes(mnist5k, tmp_path: Path) -> None:
    torch.manual_seed(1)
    model = build_model(model_spec(ARCH, mnist5k, extra_classes=1)).eval()
    run = import_state_dict(
        save(model.state_dict(), tmp_path / "w.pt"), ARCH, tmp_path / "run", num_classes=11
    )
    assert load_spec(run).num_classes == 11
    assert torch.equal(outputs(load_model(run)), outputs(model))
    assert 0.0 <= json.loads((run / "metrics.json").read_text())["test_accuracy"] <= 1.0


def test_existing_out_refused_without_force(source: nn.Sequential, tmp_path: Path) -> None:
    path = save(source.state_dict(), tmp_path / "w.pt")
    out = tmp_path / "run"
    out.mkdir()
    (out / "mine.txt").write_text("keep")
    with pytest.raises(NnmarkError, match="--force"):
        import_state_dict(path, ARCH, out, evaluate_accuracy=False)
    assert (out / "mine.txt").read_text() == "keep"
    import_state_dict(path, ARCH, out, force=True, evaluate_accuracy=False)
    assert not (out / "mine.txt").exists() and torch.equal(outputs(load_model(out)), outputs(source))


def test_files_that_are_not_state_dicts(source: nn.Sequential, tmp_path: Path) -> None:
    cases = {
        "absent.pt": (None, "not found"),
        "junk.pt": (b"certainly not a torch file", "not a readable PyTorch file"),
        "whole.pt": (source, "not a plain state_dict"),
        "mixed.pt": ({"weight": torch.zeros(2), "note": "hi"}, "not tensors"),
        "list.pt": ([torch.zeros(2)], "does not hold a state_dict"),
    }
    for name, (content, words) in cases.items():
        path = tmp_path / name
        if isinstance(content, bytes):
            path.write_bytes(content)
        elif content is not None:
            torch.save(content, path)
        with pytest.raises(NnmarkError, match=words):
            import_state_dict(path, ARCH, tmp_path / "run")
    assert not (tmp_path / "run").exists()


def run_cli(monkeypatch: pytest.MonkeyPatch, *args: str | Path) -> int:
    """``nnmark ARGS`` through the real entry point (user errors -> exit 2), in this process."""
    from nnmark.cli import main

    monkeypatch.setattr(sys, "argv", ["nnmark", *map(str, args)])
    try:
        main()
    except SystemExit as e:
        return int(e.code or 0)
    return 0


def test_cli_import(source: nn.Sequential, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    path = save(source[1].state_dict(), tmp_path / "w.pt")
    out = tmp_path / "run"
    assert run_cli(monkeypatch, "import", "--state-dict", path, "--model", ARCH, "--out", out) == 0
    assert "test accuracy on mnist5k" in " ".join(capsys.readouterr().out.split())
    assert torch.equal(outputs(load_model(out)), outputs(source))
    assert (
        run_cli(monkeypatch, "import", "--state-dict", path, "--model", "dnn1", "--out", tmp_path / "r2") == 2
    )
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert len(err) == 1 and "does not fit dnn1" in err[0]


def test_real_entry_point_refuses_existing_out(source: nn.Sequential, tmp_path: Path) -> None:
    path = save(source.state_dict(), tmp_path / "w.pt")
    out = tmp_path / "run"
    out.mkdir()
    exe = Path(sys.executable).parent / "nnmark"
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "nnmark.cli"]
    proc = subprocess.run(
        [*cmd, "import", "--state-dict", str(path), "--model", ARCH, "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": "200"},
    )
    assert proc.returncode == 2, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "already exists" in lines[0] and "Traceback" not in proc.stderr
    assert list(out.iterdir()) == []
