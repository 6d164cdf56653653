"""Neural Cleanse (Wang 2019, Li Table 5) finds a planted trigger on a tiny backdoored CNN and
flags it (anomaly index ≥ 2, suspected class the backdoor's target), and does not flag the same
CNN trained without the backdoor."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from torch import nn

from conftest import subset
from nnmark.attacks import ATTACKS
from nnmark.attacks.detection.neural_cleanse import anomaly_index
from nnmark.data.base import ImageDataset
from nnmark.training import TrainConfig, train
from nnmark.types import ModelSpec

SPEC = ModelSpec("tiny", 10, (1, 28, 28), (0.0,), (1.0,))
TARGET = 7


def tiny_cnn() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 8, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(8, 16, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(16 * 7 * 7, 32), nn.ReLU(), nn.Linear(32, 10),
    )  # fmt: skip


def stamped(x: torch.Tensor) -> torch.Tensor:
    x = x.clone()
    x[:, :, -5:-1, -5:-1] = 255  # a 4×4 white square near the corner
    return x


@pytest.fixture(scope="module")
def models(mnist5k: ImageDataset) -> dict[str, nn.Module]:
    data = subset(mnist5k, 1500, 300)
    poisoned_x = torch.cat([data.train_x, stamped(data.train_x[:150])])
    poisoned_y = torch.cat([data.train_y, torch.full((150,), TARGET)])
    out = {}
    sets = {"backdoored": (poisoned_x, poisoned_y), "clean": (data.train_x, data.train_y)}
    for name, (x, y) in sets.items():
        model = tiny_cnn()
        train(model, x, y, TrainConfig(epochs=3, seed=0), progress=False)
        out[name] = model.eval()
    return out


def test_anomaly_index_is_the_mad_outlier_score() -> None:
    assert anomaly_index([10, 10, 10, 10]) == 0.0
    norms = [20.0, 22.0, 18.0, 21.0, 19.0, 2.0]
    med = 19.5
    mad = 1.4826 * 1.5
    assert anomaly_index(norms) == pytest.approx((med - 2.0) / mad)


@pytest.mark.slow  # measured 2.5 min on the shared 2-core machine (20 classes × 80 steps)
def test_finds_and_flags_a_planted_trigger(models: dict[str, nn.Module], mnist5k: ImageDataset) -> None:
    held = mnist5k.test_x[300:500], mnist5k.test_y[300:500]  # the attacker's: not the models' training images
    attacker = replace(subset(mnist5k, 0, 0), train_x=held[0], train_y=held[1])
    backdoored = models["backdoored"]
    hits = backdoored(stamped(mnist5k.test_x[:100]).float() / 255).argmax(1) == TARGET
    assert float(hits.float().mean()) > 0.9
    nc = ATTACKS.get("neural-cleanse")(steps=80)
    state = {k: v.clone() for k, v in backdoored.state_dict().items()}
    returned = nc(backdoored, SPEC, attacker, TrainConfig(seed=0), False)
    report = nc.report
    print(f"\nbackdoored: anomaly index {report['anomaly_index']:.2f}, suspected {report['suspected_class']}")
    assert report["flagged"] and report["anomaly_index"] >= 2
    assert report["suspected_class"] == TARGET
    assert all(torch.equal(state[k], v) for k, v in returned.state_dict().items())  # detection only
    nc.run(models["clean"], SPEC, attacker, TrainConfig(seed=0), False)
    print(f"clean: anomaly index {nc.report['anomaly_index']:.2f}")
    assert not nc.report["flagged"]  # measured: backdoored 2.84 (class 7), clean 0.78
