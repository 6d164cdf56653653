"""label-change (Namba 2019): random other labels, p0 = 1/(C-1), keys in every batch."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from nnmark.data.base import ImageDataset
from nnmark.keyfile import load_key
from nnmark.oracle import TorchOracle
from nnmark.schemes import create_scheme
from nnmark.schemes.label_change import random_other_labels
from nnmark.training import TrainConfig
from nnmark.verify.verifier import verify
from nnmark.workflow import embed_run, load_model, train_run

FAST = {"keys": 10, "keys_per_batch": 10}


@pytest.mark.parametrize("classes", [2, 3, 10, 100])
def test_labels_always_differ_and_cover_the_other_classes(classes: int) -> None:
    g = torch.Generator().manual_seed(classes)
    y = torch.randint(classes, (20_000,), generator=g)
    new = random_other_labels(y, classes, g)
    assert not bool((new == y).any())
    assert int(new.min()) >= 0 and int(new.max()) < classes
    # uniform over the C - 1 others: every (true, new) pair with new != true occurs
    if classes <= 10:
        assert len(torch.unique(y * classes + new)) == classes * (classes - 1)


def test_generated_keys_are_training_images_with_changed_labels(small_mnist: ImageDataset) -> None:
    scheme = create_scheme("label-change", keys=200)
    for seed in range(3):
        mat = scheme.generate(small_mnist, torch.Generator().manual_seed(seed))
        assert mat.labels is not None and len(mat.inputs) == 200
        assert not bool((mat.labels == mat.source_labels).any())
        # unmodified training images
        as_u8 = (mat.inputs * 255).round().to(torch.uint8)
        train = small_mnist.train_x.flatten(1)
        assert all(bool((train == img.flatten()).all(1).any()) for img in as_u8[:20])


def test_p0_is_one_over_c_minus_one(small_mnist: ImageDataset, tmp_path: Path) -> None:
    r = embed_run(
        "label-change",
        FAST,
        small_mnist,
        "digit-cnn",
        TrainConfig(epochs=2),
        tmp_path / "wm",
        calibrate=3,
        progress=False,
    )
    assert r.metrics["calibration_models"] == 0  # p0 follows from the labels: no reference models
    key = load_key(tmp_path / "wm")
    p0, why = create_scheme("label-change").chance_rate(key)
    assert p0 == pytest.approx(1 / 9) and "no calibration" in why
    assert r.metrics["watermark_accuracy"] >= 0.9
    v = verify(key, TorchOracle(load_model(tmp_path / "wm")))
    assert v.watermarked is True and v.p0 == pytest.approx(1 / 9)
    # a clean model: found never
    train_run(small_mnist, "digit-cnn", TrainConfig(epochs=1, seed=7), tmp_path / "clean", progress=False)
    clean = verify(key, TorchOracle(load_model(tmp_path / "clean")))
    assert clean.watermarked is False


def test_embed_from_a_trained_model(small_mnist: ImageDataset, tmp_path: Path) -> None:
    train_run(small_mnist, "digit-cnn", TrainConfig(epochs=2, seed=7), tmp_path / "clean", progress=False)
    r = embed_run(
        "label-change",
        {**FAST, "retrain_epochs": 2},
        small_mnist,
        "digit-cnn",
        TrainConfig(epochs=5),
        tmp_path / "ft",
        from_run=tmp_path / "clean",
        calibrate=0,
        progress=False,
    )
    assert r.metrics["epochs"] == 2 and r.metrics["from_run"] and r.metrics["pretrain_seconds"] == 0
    assert verify(load_key(tmp_path / "ft"), TorchOracle(load_model(tmp_path / "ft"))).watermarked is True
