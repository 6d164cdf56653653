# ruff: noqa: F811  (fixtures imported from attack_runs)
"""Model extraction by distillation (Li 2019 Sec. 8.3) and the other white-box removal attacks
that build or strip neurons: neuron pruning (Li Fig. 6) and fine-pruning (Liu et al. 2018)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from attack_runs import content_run, owner_data  # noqa: F401  (fixtures)
from torch import nn

from nnmark.attacks import ATTACKS
from nnmark.attacks.data import attacker_data
from nnmark.attacks.measure import key_accuracy
from nnmark.attacks.removal.distill import SoftTargets, extract
from nnmark.attacks.removal.finetune import last_layer
from nnmark.attacks.removal.neurons import hidden_layers
from nnmark.attacks.run import attack_run
from nnmark.data.base import ImageDataset
from nnmark.io import load_spec, read_json
from nnmark.keyfile import load_key
from nnmark.oracle import TorchOracle
from nnmark.training import TrainConfig, evaluate
from nnmark.workflow import load_model


def test_distilled_model_learns_the_task_not_the_watermark(
    content_run: Path, owner_data: ImageDataset
) -> None:
    share = attacker_data(owner_data, 0.3, seed=0).data  # 300 held-out digits, labelled by the victim
    victim = load_model(content_run)
    key = load_key(content_run / "watermark.key")
    oracle = TorchOracle(victim)
    student = extract(oracle, load_spec(content_run), share.train_x, TrainConfig(epochs=8, seed=0))
    assert oracle.queries == 300  # one query per attacker image
    assert not any(torch.equal(a, b) for a, b in zip(student.parameters(), victim.parameters(), strict=True))
    acc = evaluate(student, share.test_x, share.test_y)
    assert acc >= 0.7  # measured 0.82 (victim 0.90)
    assert key_accuracy(victim, key) == 1.0 and key_accuracy(student, key) <= 0.5  # measured 0.0


def test_soft_targets_are_the_probability_weighted_cross_entropy() -> None:
    p = torch.tensor([[0.7, 0.2, 0.1], [0.0, 0.0, 1.0]])
    x = torch.rand(2, 1, 4, 4)
    xs, labels, weights = SoftTargets(p)(x, torch.tensor([0, 1]), torch.Generator())
    assert torch.equal(xs, x.repeat_interleave(3, dim=0))
    logits = torch.randn(2, 3)  # the student's output for each image, repeated for each of its rows
    ce = nn.functional.cross_entropy(logits.repeat_interleave(3, dim=0), labels, reduction="none")
    engine_loss = (weights * ce).sum() / weights.sum()  # what the training engine minimises
    expected = -(p * torch.log_softmax(logits, 1)).sum(1).mean()
    assert torch.allclose(engine_loss, expected)


def test_distill_counts_queries_and_can_use_probabilities_and_noise(
    content_run: Path, owner_data: ImageDataset, tmp_path: Path
) -> None:
    for i, settings in enumerate(
        [{"output": "probabilities", "epochs": 1}, {"source": "uniform", "images": 64, "epochs": 1}]
    ):
        attack_run("distill", content_run, tmp_path / str(i), owner_data, TrainConfig(), settings=settings,
                   attacker_fraction=0.05, progress=False)  # fmt: skip
        metrics = read_json(tmp_path / str(i) / "metrics.json", "metrics")
        assert metrics["queries"] == (50 if i == 0 else 64)
    metrics = read_json(tmp_path / "0" / "metrics.json", "metrics")
    # the owner's recorded epochs (attack_runs.content_run), Li's "same configuration"
    assert metrics["recipe"]["epochs"] == 6


def test_distill_through_a_defense(content_run: Path, owner_data: ImageDataset) -> None:
    share = attacker_data(owner_data, 0.05, seed=0).data
    attack = ATTACKS.get("distill")(defense="noise", epochs=1)
    attack(load_model(content_run), load_spec(content_run), share, TrainConfig(), False)
    assert attack.report["queries"] == 50 and attack.report["defense"] == "noise"


def removed_units(model: nn.Module) -> dict[str, int]:
    return {n: int((m.weight.detach().flatten(1).abs().sum(1) == 0).sum()) for n, m in hidden_layers(model)}


def test_neuron_prune_removes_the_weakest_units_of_every_hidden_layer(
    content_run: Path, owner_data: ImageDataset
) -> None:
    share = attacker_data(owner_data, 0.1, seed=0).data
    victim = load_model(content_run)
    attacked = ATTACKS.get("neuron-prune")(rate=0.5)(
        victim, load_spec(content_run), share, TrainConfig(), False
    )
    for name, layer in hidden_layers(victim):
        width = layer.weight.shape[0]
        assert removed_units(attacked)[name] == width // 2
        norms = layer.weight.detach().abs().flatten(1).sum(1)
        gone = dict(hidden_layers(attacked))[name].weight.detach().flatten(1).abs().sum(1) == 0
        assert norms[gone].max() <= norms[~gone].min()  # ascending: the smallest norms go first
    assert sum(removed_units(victim).values()) == 0
    heavy = ATTACKS.get("neuron-prune")(rate=0.95)(
        victim, load_spec(content_run), share, TrainConfig(), False
    )
    assert evaluate(heavy, share.test_x, share.test_y) < 0.5  # Li Fig. 6: accuracy falls with the ratio


def test_fine_prune_stops_within_its_accuracy_drop(content_run: Path, owner_data: ImageDataset) -> None:
    share = attacker_data(owner_data, 0.1, seed=0).data
    victim = load_model(content_run)
    attack = ATTACKS.get("fine-prune")(epochs=0, max_drop=0.04)
    attacked = attack(victim, load_spec(content_run), share, TrainConfig(), False)
    report = attack.report
    conv = [n for n, m in hidden_layers(victim) if isinstance(m, nn.Conv2d)]
    assert report["layer"] == conv[-1]  # dnn1's only (so last) convolution
    assert 0 < report["units_removed"] < report["units"]
    assert removed_units(attacked)[conv[-1]] == report["units_removed"]
    assert evaluate(attacked, share.train_x, share.train_y) >= report["accuracy_start"] - 0.04


@pytest.mark.parametrize("name", ["neuron-prune", "fine-prune"])
def test_removed_units_stay_removed_through_retraining(
    name: str, content_run: Path, owner_data: ImageDataset
) -> None:
    share = attacker_data(owner_data, 0.1, seed=0).data
    attack = ATTACKS.get(name)(epochs=1)
    attacked = attack(load_model(content_run), load_spec(content_run), share, TrainConfig(), False)
    assert sum(removed_units(attacked).values()) >= attack.report["units_removed"] > 0


def test_transfer_then_the_owner_recovers_the_outputs(
    content_run: Path, owner_data: ImageDataset, tmp_path: Path
) -> None:
    # the student's task: held-out digits relabelled "which fifth of 0-9" (5 classes), a stand-in for
    # Li's traffic-sign transfer (MNIST -> Fashion-MNIST where its files are present)
    other = ImageDataset(
        "digits-mod-5", owner_data.test_x[:600], owner_data.test_y[:600] // 2, owner_data.test_x[:0],
        owner_data.test_y[:0], 5,
    )  # fmt: skip
    result = attack_run(
        "transfer", content_run, tmp_path / "t", owner_data, TrainConfig(seed=0), attacker_data=other,
        settings={"epochs": 3, "recovery_epochs": 1}, attacker_fraction=0.2,
        keys=[content_run / "watermark.key"], progress=False,
    )  # fmt: skip
    metrics = read_json(tmp_path / "t" / "metrics.json", "metrics")
    assert metrics["student_classes"] == 5 and metrics["student_accuracy"] > 0.4  # chance is 0.2
    assert result.model(torch.zeros(1, 1, 28, 28)).shape == (1, 10)  # the owner's outputs again
    assert metrics["attacker_data"]["source"] == "digits-mod-5 training split"
    assert metrics["verdicts"][0]["scheme"] == "zhang-content"


def test_transfer_recovery_restores_the_owners_task(content_run: Path, owner_data: ImageDataset) -> None:
    """Li Table 8: the owner retrains a fresh output layer (the student's body frozen) on its own
    data; without that step the returned model's head is random, near chance on the owner's task."""
    other = ImageDataset(
        "digits-mod-5", owner_data.test_x[:200], owner_data.test_y[:200] // 2, owner_data.test_x[:0],
        owner_data.test_y[:0], 5,
    )  # fmt: skip
    held_x, held_y = owner_data.test_x[500:], owner_data.test_y[500:]  # not the student's images

    def transferred(recovery_epochs: int) -> tuple[nn.Module, dict[str, Any]]:
        attack = ATTACKS.get("transfer")(layers="last", epochs=1, recovery_epochs=recovery_epochs)
        attack.owner_data = owner_data
        model = attack(load_model(content_run), load_spec(content_run), other, TrainConfig(seed=0), False)
        return model, attack.report

    recovered, report = transferred(6)  # Li's 6 epochs
    unrecovered, _ = transferred(0)
    assert report["recovery_epochs"] == 6 and report["student_classes"] == 5
    acc, chance_acc = evaluate(recovered, held_x, held_y), evaluate(unrecovered, held_x, held_y)
    assert chance_acc < 0.3  # measured 0.06: a random 10-class head on the student's body
    assert acc > 0.7 and acc > chance_acc + 0.4  # measured 0.89 (victim 0.9): the owner's task is back
    name = next(n for n, m in recovered.named_modules() if m is last_layer(recovered))
    a, b = recovered.state_dict(), unrecovered.state_dict()
    body = [k for k in a if k not in (f"{name}.weight", f"{name}.bias")]
    assert all(torch.equal(a[k], b[k]) for k in body)  # the same student body, frozen in recovery
    assert not torch.equal(a[f"{name}.weight"], b[f"{name}.weight"])  # only the head was retrained
