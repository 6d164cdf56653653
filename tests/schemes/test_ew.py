"""Exponential weighting (Namba 2019 Eq. 11-12): EW layers, folding, composition with schemes."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch.nn.utils import parametrize

from nnmark.data.base import ImageDataset
from nnmark.keyfile import load_key
from nnmark.models import build_model
from nnmark.oracle import TorchOracle
from nnmark.schemes.ew import (
    ExponentialWeighting,
    apply_ew,
    ew_layers,
    ew_stats,
    exponential_weighting,
    fold_ew,
)
from nnmark.training import TrainConfig
from nnmark.verify.verifier import verify
from nnmark.workflow import embed_run, load_model, model_spec


def _model(data: ImageDataset, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_model(model_spec("digit-cnn", data)).eval()


def test_formula() -> None:
    w = torch.tensor([[-0.5, 0.1], [0.0, 0.25]])
    got = ExponentialWeighting(2.0)(w)
    expected = torch.exp(w.abs() * 2) / torch.exp(w.abs() * 2).max() * w
    assert torch.allclose(got, expected)
    assert got[0, 0] == -0.5  # the largest weight keeps its value
    big = torch.tensor([400.0, -1.0])  # exp(400·T) overflows; the stable form does not
    assert torch.isfinite(ExponentialWeighting(2.0)(big)).all()


def test_folded_model_gives_the_ew_layer_outputs(small_mnist: ImageDataset) -> None:
    model = _model(small_mnist)
    x = small_mnist.test_x[:64].float() / 255
    plain = model(x)
    names = apply_ew(model, 2.0)
    assert len(names) == len(ew_layers(model)) == 4
    with torch.no_grad():
        ew_out = model(x)
    assert not torch.allclose(ew_out, plain)
    fold_ew(model)
    assert not any(parametrize.is_parametrized(m) for _, m in ew_layers(model))
    assert set(model.state_dict()) == set(_model(small_mnist).state_dict())  # an ordinary model again
    with torch.no_grad():
        assert torch.allclose(model(x), ew_out, atol=1e-6)


def test_zero_temperature_is_off(small_mnist: ImageDataset) -> None:
    model = _model(small_mnist)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with exponential_weighting(model, 0.0):
        assert not any(parametrize.is_parametrized(m) for _, m in ew_layers(model))
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_stats_show_stronger_shrinking_with_larger_t() -> None:
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(1, 8, 3), torch.nn.Flatten(), torch.nn.Linear(8 * 26 * 26, 10)
    )
    medians = [ew_stats(model, t)[0]["factor_median"] for t in (0.5, 2, 10, 50)]
    assert medians == sorted(medians, reverse=True) and medians[0] < 1
    assert [r["layer"] for r in ew_stats(model, 2)] == ["0", "2"]
    row = ew_stats(model, 50)[0]
    assert row["top10_l1_share_after"] > row["top10_l1_share_before"]


def test_ew_composes_with_a_scheme_and_saves_an_ordinary_model(
    small_mnist: ImageDataset, tmp_path: Path
) -> None:
    settings = {"ew": 2, "keys": 10, "keys_per_batch": 10, "retrain_epochs": 2}
    r = embed_run(
        "label-change",
        settings,
        small_mnist,
        "digit-cnn",
        TrainConfig(epochs=1),
        tmp_path / "wm",
        calibrate=0,
        progress=False,
        key_seed=2,  # fixed keys: 10 keys in 2 epochs reach 80-100 % key accuracy by draw (measured)
    )
    m = r.metrics
    assert m["pretrain_seconds"] > 0 and m["epochs"] == 2 and m["seconds"] >= m["pretrain_seconds"]
    assert json.loads((tmp_path / "wm" / "metrics.json").read_text())["watermark_accuracy"] >= 0.9
    model = load_model(tmp_path / "wm")  # loads into the plain architecture: EW was folded in
    key = load_key(tmp_path / "wm")
    assert key.params["ew"] == 2
    assert verify(key, TorchOracle(model)).watermarked is True
