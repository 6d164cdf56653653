"""Which datasets ``nnmark reproduce`` runs on (issue 11): MNIST-5k and Fashion-MNIST where this machine
has them; the papers' MNIST and CIFAR-10/100 where a user supplies their files."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from nnmark.errors import NnmarkError
from nnmark.experiments.reproduce.base import available_datasets, get_scale

sys.path.insert(0, str(Path(__file__).resolve().parent / "data"))
from test_data_loaders import MNIST_NAMES, make_cifar10, write_idx_dataset  # noqa: E402


def test_supplied_mnist_and_cifar_are_run_and_a_missing_folder_is_refused(tmp_path: Path) -> None:
    tiny = get_scale("tiny")
    with pytest.raises(NnmarkError, match="no such folder"):
        available_datasets(tiny, str(tmp_path / "nowhere"))
    (tmp_path / "empty").mkdir()
    chosen, notes = available_datasets(tiny, str(tmp_path / "empty"))
    assert [d.name for d in chosen] == ["mnist5k"] and "stands in" in notes[0]

    write_idx_dataset(tmp_path / "mnist", MNIST_NAMES, h=28, w=28)
    make_cifar10(tmp_path / "cifar-10-batches-py")
    chosen, notes = available_datasets(tiny, str(tmp_path))
    by_name = {d.name: d for d in chosen}
    assert list(by_name) == ["mnist", "cifar10"]  # the papers' own MNIST replaces MNIST-5k
    assert by_name["mnist"].paper == "MNIST" and by_name["mnist"].model == "digit-cnn"
    assert by_name["cifar10"].paper == "CIFAR10" and by_name["cifar10"].model == "resnet32"
    assert all(d.data_dir == str(tmp_path) for d in chosen)
    assert "MNIST's own files" in notes[0] and any("resnet32" in n for n in notes)


def test_a_cell_on_supplied_files_verifies_from_them(tmp_path: Path) -> None:
    """The verifier draws its probes from the cell's own data folder (a cell on the user's MNIST files
    failed at verification, looking for them in the default folder)."""
    import numpy as np
    from test_data_loaders import write_idx

    from nnmark.experiments.cells import run_cell

    rng = np.random.default_rng(0)
    for name, n in zip(MNIST_NAMES, (400, 400, 300, 300), strict=True):
        shape = (n, 28, 28) if "images" in name else (n,)
        high = 256 if "images" in name else 10
        write_idx(tmp_path / "mnist" / name, rng.integers(0, high, size=shape, dtype=np.uint8))
    cell = {"task": "watermark", "dataset": "mnist", "data_dir": str(tmp_path), "n_train": 400}
    rec = run_cell({**cell, "scheme": "zhong-new-label", "epochs": 1, "test": "first-hit"})
    assert rec["status"] == "ok", rec.get("error")
    assert "model" in rec["verdicts"]
