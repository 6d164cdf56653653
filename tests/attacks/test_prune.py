# ruff: noqa: F811  (fixtures imported from attack_runs)
"""Pruning (Namba 2019 Sec. 4.3.1): q % of each layer's weights zeroed and kept at zero through the
retraining, 10 retraining epochs by default, and Namba's sweep that keeps the rate with the lowest
watermark accuracy among those losing < 10 % accuracy."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from attack_runs import content_run, label_change_run, owner_data  # noqa: F401  (fixtures)
from torch import nn

from nnmark.attacks import ATTACKS
from nnmark.attacks.data import attacker_data
from nnmark.attacks.measure import key_accuracy
from nnmark.attacks.run import attack_run
from nnmark.data.base import ImageDataset
from nnmark.errors import NnmarkError
from nnmark.io import load_spec, read_json
from nnmark.keyfile import load_key
from nnmark.training import TrainConfig, evaluate
from nnmark.workflow import load_model


def zero_share(model: nn.Module) -> float:
    weights = [m.weight for m in model.modules() if isinstance(m, nn.Conv2d | nn.Linear)]
    return sum(int((w == 0).sum()) for w in weights) / sum(w.numel() for w in weights)


def test_defaults_are_namba() -> None:
    p = ATTACKS.get("prune")().params
    assert p.epochs == 10 and p.lr == 1e-3 and p.max_loss == 0.1  # type: ignore[attr-defined]


@pytest.mark.parametrize("epochs", [0, 1])
def test_q_09_zeroes_90_percent_and_keeps_them_zero(
    epochs: int, content_run: Path, owner_data: ImageDataset
) -> None:
    share = attacker_data(owner_data, 0.1, seed=0).data
    victim = load_model(content_run)
    state = {k: v.clone() for k, v in victim.state_dict().items()}
    attacked = ATTACKS.get("prune")(rate=0.9, epochs=epochs)(
        victim, load_spec(content_run), share, TrainConfig(seed=0), False
    )
    assert zero_share(attacked) == pytest.approx(0.9, abs=0.01)
    assert zero_share(victim) < 0.01 and all(torch.equal(state[k], v) for k, v in victim.state_dict().items())
    if epochs == 0:  # 90 % pruned without retraining breaks a dnn1 (measured 0.88 -> 0.33)
        assert (
            evaluate(attacked, share.test_x, share.test_y)
            < evaluate(victim, share.test_x, share.test_y) - 0.2
        )


def test_namba_sweep_keeps_the_worst_watermark_within_the_accuracy_loss(
    label_change_run: Path, owner_data: ImageDataset, tmp_path: Path
) -> None:
    result = attack_run(
        "prune", label_change_run, tmp_path / "out", owner_data, TrainConfig(seed=0),
        settings={"sweep": True, "rates": [0.0, 0.5, 0.9, 0.95], "epochs": 1},
        keys=[label_change_run / "watermark.key"], progress=False,
    )  # fmt: skip
    metrics = read_json(tmp_path / "out" / "metrics.json", "metrics")
    rows = metrics["sweep"]
    assert [r["rate"] for r in rows] == [0.0, 0.5, 0.9, 0.95]
    floor = 0.9 * metrics["sweep_baseline_accuracy"]
    assert all(r["allowed"] == (r["accuracy"] >= floor) for r in rows)
    allowed = [r for r in rows if r["allowed"]]
    assert any(not r["allowed"] for r in rows)  # q = 0.95 breaks the tiny model
    best = min(allowed, key=lambda r: r["watermark_accuracy"])
    assert metrics["rate"] == best["rate"]
    assert zero_share(result.model) == pytest.approx(best["rate"], abs=0.01)


def test_sweep_needs_the_keys(content_run: Path, owner_data: ImageDataset, tmp_path: Path) -> None:
    with pytest.raises(NnmarkError, match="--key"):
        attack_run("prune", content_run, tmp_path / "o", owner_data, TrainConfig(), settings={"sweep": True})
    assert not (tmp_path / "o").exists()


def test_sweep_prunes_every_rate_from_the_victim(
    label_change_run: Path, owner_data: ImageDataset, tmp_path: Path
) -> None:
    """Rates are not cumulative: each q starts again from the victim's weights, so q = 0 after q = 0.9
    (no retraining) is the victim itself: its accuracy the baseline and the model returned unpruned."""
    victim = load_model(label_change_run)
    result = attack_run(
        "prune", label_change_run, tmp_path / "out", owner_data, TrainConfig(seed=0),
        settings={"sweep": True, "rates": [0.9, 0.5, 0.0], "epochs": 0, "max_loss": 0.5},
        keys=[label_change_run / "watermark.key"], progress=False,
    )  # fmt: skip
    rows = result.metrics["sweep"]
    assert [r["rate"] for r in rows] == [0.9, 0.5, 0.0]
    assert rows[2]["accuracy"] == result.metrics["sweep_baseline_accuracy"]  # q = 0: the victim itself
    key = load_key(label_change_run / "watermark.key")
    assert rows[2]["watermark_accuracy"] == pytest.approx(key_accuracy(victim, key))
    assert rows[0]["accuracy"] < rows[2]["accuracy"] - 0.2  # q = 0.9 unretrained breaks dnn1
    assert (
        result.metrics["rate"]
        == min((r for r in rows if r["allowed"]), key=lambda r: r["watermark_accuracy"])["rate"]
    )
    # the chosen rate's model (measured: q = 0.5) holds that share of zero weights, not a previous rate's
    assert zero_share(result.model) == pytest.approx(result.metrics["rate"], abs=0.01)
