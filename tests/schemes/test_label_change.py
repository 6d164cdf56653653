"""label-change (Namba 2019): random other labels, p0 = 1/(C-1), keys in every batch."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from nnmark.data.base import ImageDataset
from nnmark.keyfile import load_key
from nnmark.keysecret import derive_labels
from nnmark.oracle import TorchOracle
from nnmark.schemes import create_scheme
from nnmark.training import TrainConfig
from nnmark.verify.verifier import verify
from nnmark.workflow import embed_run, load_model, prepare_secret, train_run

FAST = {"keys": 10, "keys_per_batch": 10}


@pytest.mark.parametrize("classes", [2, 3, 10, 100])
def test_labels_always_differ_and_cover_the_other_classes(classes: int) -> None:
    g = torch.Generator().manual_seed(classes)
    y = torch.randint(classes, (20_000,), generator=g)
    x = torch.rand(20_000, 1, 2, 2, generator=g)
    new = derive_labels(b"s" * 32, x, classes, avoid=y)
    assert not bool((new == y).any())
    assert int(new.min()) >= 0 and int(new.max()) < classes
    # uniform over the C - 1 others: every (true, new) pair with new != true occurs, evenly
    if classes <= 10:
        pairs = torch.bincount(y * classes + new, minlength=classes * classes)
        seen = pairs[pairs > 0]
        assert len(seen) == classes * (classes - 1)
        expected = 20_000 / (classes * (classes - 1))
        assert float(seen.min()) > 0.7 * expected and float(seen.max()) < 1.3 * expected


def test_generated_keys_are_training_images_with_changed_labels(small_mnist: ImageDataset) -> None:
    scheme = create_scheme("label-change", keys=200)
    for _ in range(3):
        _, gen = prepare_secret(scheme, None, None)
        mat = scheme.generate(small_mnist, gen)
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
        key_seed=2,  # fixed keys: 10 keys in 2 epochs reach 80-100 % key accuracy by draw (measured)
    )
    assert r.metrics["calibration_models"] == 0  # p0 follows from the labels: no reference models
    key = load_key(tmp_path / "wm")
    exact = create_scheme("label-change").exact_chance_rate(key)
    assert exact is not None and exact[0] == pytest.approx(1 / 9) and "other than" in exact[1]
    assert r.metrics["watermark_accuracy"] >= 0.9
    # a judge's run: p0 is the protocol's, nothing of the claimant's but the key decides
    v = verify(key, TorchOracle(load_model(tmp_path / "wm")), judge=True, probe_data=small_mnist)
    assert v.watermarked is True and v.p0 == pytest.approx(1 / 9) and v.p_value <= 1e-6
    assert v.decided_by["p0"]["source"] == "protocol" and v.decided_by["key labels"]["source"] == "protocol"
    assert v.guarantee.endswith("alpha = 1e-06")  # p0 is exact: no calibration error to add
    # a clean model: never found. With 10 keys, "not found" needs 0 matches (a 40 % watermark gives
    # 0/10 with probability 0.6^10 = 0.006 <= 0.01); 1 match (P = 0.046) is no verdict
    train_run(small_mnist, "digit-cnn", TrainConfig(epochs=1, seed=7), tmp_path / "clean", progress=False)
    clean = verify(key, TorchOracle(load_model(tmp_path / "clean")))
    assert clean.matches <= 2
    assert clean.watermarked is (False if clean.matches == 0 else None), clean.reason


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
        key_seed=2,  # fixed keys: 10 keys in 2 epochs reach 80-100 % key accuracy by draw (measured)
    )
    assert r.metrics["epochs"] == 2 and r.metrics["from_run"] and r.metrics["pretrain_seconds"] == 0
    assert verify(load_key(tmp_path / "ft"), TorchOracle(load_model(tmp_path / "ft"))).watermarked is True
