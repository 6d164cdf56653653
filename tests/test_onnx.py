"""ONNX export and OnnxOracle: same answers as the PyTorch model, budgets, broken files."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from nnmark.errors import BudgetExceededError, NnmarkError
from nnmark.io import METRICS_FILE, new_folder, write_json, write_model_files
from nnmark.models import build_model
from nnmark.onnx_export import export
from nnmark.oracle import OnnxOracle, TorchOracle
from nnmark.types import ModelSpec
from nnmark.workflow import load_model

SPEC = ModelSpec("digit-cnn", 10, (1, 28, 28), (0.13,), (0.31,), dataset="mnist5k", arch_args={"hidden": 64})


def make_run(path: Path, spec: ModelSpec = SPEC, seed: int = 0) -> Path:
    """A run folder holding a freshly initialised model (trained for 0 epochs)."""
    torch.manual_seed(seed)
    model = build_model(spec)
    with new_folder(path) as tmp:
        write_model_files(tmp, model, spec)
        write_json(tmp / METRICS_FILE, {"source": "test"})
    return path


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("onnx")
    run = make_run(root / "run")
    return run, export(run, root / "model.onnx")


def inputs(n: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 1, 28, 28, generator=torch.Generator().manual_seed(seed))


def test_onnx_oracle_answers_like_torch(exported: tuple[Path, Path]) -> None:
    run, onnx_file = exported
    torch_oracle = TorchOracle(load_model(run))
    onnx_oracle = OnnxOracle(onnx_file, batch_size=16)
    for n in (1, 37):  # the batch axis is dynamic; 37 crosses the oracle's batch size
        x = inputs(n, seed=n)
        assert torch.equal(onnx_oracle.labels(x), torch_oracle.labels(x))
        assert torch.allclose(onnx_oracle.scores(x), torch_oracle.scores(x), atol=1e-4)
    assert onnx_oracle.queries == 2 * 38


def test_export_graph_names_and_metadata(exported: tuple[Path, Path]) -> None:
    import onnx

    _, onnx_file = exported
    proto = onnx.load(str(onnx_file))
    assert [i.name for i in proto.graph.input] == ["input"]
    assert [o.name for o in proto.graph.output] == ["logits"]
    batch_dim = proto.graph.input[0].type.tensor_type.shape.dim[0]
    assert batch_dim.dim_param and not batch_dim.dim_value
    props = {p.key: p.value for p in proto.metadata_props}
    assert props["nnmark.arch"] == "digit-cnn" and props["nnmark.num_classes"] == "10"


def test_budget_refused_past_the_limit(exported: tuple[Path, Path]) -> None:
    oracle = OnnxOracle(exported[1], budget=10)
    oracle.labels(inputs(8))
    with pytest.raises(BudgetExceededError, match="budget"):
        oracle.labels(inputs(3))
    assert oracle.queries == 8 and oracle.remaining == 2
    oracle.labels(inputs(2))
    assert oracle.remaining == 0


def test_existing_file_refused_without_force(exported: tuple[Path, Path], tmp_path: Path) -> None:
    run, _ = exported
    target = tmp_path / "m.onnx"
    target.write_bytes(b"keep me")
    with pytest.raises(NnmarkError, match="--force"):
        export(run, target)
    assert target.read_bytes() == b"keep me"
    export(run, target, force=True)
    assert OnnxOracle(target).labels(inputs(2)).shape == (2,)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"]  # no temporary files left behind


def test_missing_run_writes_nothing(tmp_path: Path) -> None:
    with pytest.raises(NnmarkError, match="not found"):
        export(tmp_path / "no-run", tmp_path / "m.onnx")
    assert not (tmp_path / "m.onnx").exists()


def test_missing_and_corrupt_onnx_files(tmp_path: Path) -> None:
    with pytest.raises(NnmarkError, match="not found"):
        OnnxOracle(tmp_path / "absent.onnx")
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x08\x07garbage" * 10)
    with pytest.raises(NnmarkError, match="not a readable ONNX model"):
        OnnxOracle(bad)


def test_wrong_input_shape_is_a_clear_error(exported: tuple[Path, Path]) -> None:
    with pytest.raises(NnmarkError, match="takes"):
        OnnxOracle(exported[1]).labels(torch.rand(2, 3, 32, 32))


def run_cli(monkeypatch: pytest.MonkeyPatch, *args: str | Path) -> int:
    """``nnmark ARGS`` through the real entry point (user errors -> exit 2), in this process."""
    from nnmark.cli import main

    monkeypatch.setattr(sys, "argv", ["nnmark", *map(str, args)])
    try:
        main()
    except SystemExit as e:
        return int(e.code or 0)
    return 0


def test_cli_export_exit_codes(
    exported: tuple[Path, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    run, _ = exported
    target = tmp_path / "cli.onnx"
    assert run_cli(monkeypatch, "export-onnx", "--model", run, "--out", target) == 0
    assert target.is_file()
    capsys.readouterr()
    assert run_cli(monkeypatch, "export-onnx", "--model", run, "--out", target) == 2  # exists now
    lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert len(lines) == 1 and "--force" in lines[0]
