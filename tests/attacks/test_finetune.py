# ruff: noqa: F811  (fixtures imported from attack_runs)
"""Fine-tuning (Adi 2018's FTLL / FTAL / RTLL / RTAL, Li 2019's owner optimiser) on tiny dnn1 runs:
it lowers a weak watermark while keeping accuracy, touches only the layers its mode names, uses
the owner's recorded recipe, and never changes the victim."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from attack_runs import label_change_run, owner_data  # noqa: F401  (fixtures)

from nnmark.attacks import ATTACKS
from nnmark.attacks.data import attacker_data
from nnmark.attacks.measure import key_accuracy
from nnmark.attacks.removal.finetune import last_layer
from nnmark.attacks.run import attack_run
from nnmark.data.base import ImageDataset
from nnmark.io import load_spec, read_json
from nnmark.keyfile import load_key
from nnmark.training import TrainConfig, evaluate
from nnmark.workflow import load_model


def test_ftal_lowers_a_weak_watermark_and_keeps_accuracy(
    label_change_run: Path, owner_data: ImageDataset
) -> None:
    share = attacker_data(owner_data, 0.1, seed=0).data
    victim = load_model(label_change_run)
    key = load_key(label_change_run / "watermark.key")
    state = {k: v.clone() for k, v in victim.state_dict().items()}
    attacked = ATTACKS.get("finetune")(mode="ftal", epochs=5)(
        victim, load_spec(label_change_run), share, TrainConfig(seed=0), False
    )
    assert all(torch.equal(state[k], v) for k, v in victim.state_dict().items())  # victim untouched
    before, after = key_accuracy(victim, key), key_accuracy(attacked, key)
    assert before >= 0.4 and after <= before - 0.2  # measured: 0.53 -> 0.17
    acc_before = evaluate(victim, share.test_x, share.test_y)
    assert evaluate(attacked, share.test_x, share.test_y) >= acc_before - 0.03  # measured: 0.879 -> 0.877


@pytest.mark.parametrize("mode", ["ftll", "rtll", "ftal", "rtal"])
def test_each_mode_changes_the_layers_it_names(
    mode: str, label_change_run: Path, owner_data: ImageDataset
) -> None:
    share = attacker_data(owner_data, 0.1, seed=0).data
    victim = load_model(label_change_run)
    attacked = ATTACKS.get("finetune")(mode=mode, epochs=1)(
        victim, load_spec(label_change_run), share, TrainConfig(seed=0), False
    )
    head = {id(p) for p in last_layer(attacked).parameters()}
    names = {n for n, p in attacked.named_parameters() if id(p) in head}
    old, new = dict(victim.named_parameters()), dict(attacked.named_parameters())
    body_changed = any(not torch.equal(old[n], new[n]) for n in new if n not in names)
    head_changed = all(not torch.equal(old[n], new[n]) for n in names)
    assert head_changed
    assert body_changed == mode.endswith("al")
    buffers_old, buffers_new = dict(victim.named_buffers()), dict(attacked.named_buffers())
    if mode.endswith("ll"):  # frozen BatchNorm statistics too
        assert all(torch.equal(buffers_old[n], b) for n, b in buffers_new.items())


def test_the_owner_recipe_in_metrics_is_used(
    label_change_run: Path, owner_data: ImageDataset, tmp_path: Path
) -> None:
    run = tmp_path / "run"
    shutil.copytree(label_change_run, run)
    metrics = json.loads((run / "metrics.json").read_text())
    metrics["config"] = {
        "optimizer": "sgd",
        "lr": 0.05,
        "batch_size": 32,
        "momentum": 0.9,
        "schedule": "step",
    }
    (run / "metrics.json").write_text(json.dumps(metrics))
    attack_run(
        "finetune", run, tmp_path / "out", owner_data, TrainConfig(seed=0),
        settings={"epochs": 1}, attacker_fraction=0.05, progress=False,
    )  # fmt: skip
    written = read_json(tmp_path / "out" / "metrics.json", "metrics")
    assert written["optimizer"] == "sgd" and written["batch_size"] == 32
    assert written["lr"] == pytest.approx(0.0005)  # the owner's last rate: 0.05 after two ×0.1 steps
    assert written["recipe"]["source"].startswith("owner")
    written_default = attack_run(
        "finetune", label_change_run, tmp_path / "out2", owner_data, TrainConfig(seed=0),
        settings={"epochs": 1, "optimizer": "adam", "lr": 0.01}, attacker_fraction=0.05, progress=False,
    ).metrics  # fmt: skip
    assert written_default["optimizer"] == "adam" and written_default["lr"] == 0.01


@pytest.mark.parametrize("temperature", [2.0, 20.0])
def test_ew_layers_are_recovered_exactly(temperature: float, label_change_run: Path) -> None:
    from torch import nn

    from nnmark.attacks.ew_inplace import ew_in_place

    model = load_model(label_change_run)
    before = {
        n: m.weight.detach().clone() for n, m in model.named_modules() if isinstance(m, nn.Conv2d | nn.Linear)
    }
    with ew_in_place(model, temperature):
        inside = {n: m.weight.detach().clone() for n, m in model.named_modules() if n in before}
        theta = next(p for n, p in model.named_parameters() if n.endswith("original"))
        assert theta.requires_grad  # training updates θ, seen through EW(θ, T)
    for n, w in before.items():
        assert torch.allclose(inside[n], w, atol=1e-6)  # the EW layer over θ computes the stored weights
        assert torch.allclose(dict(model.named_modules())[n].weight, w, atol=1e-6)  # folded back
    assert not any("original" in n for n, _ in model.named_parameters())


def test_finetune_through_ew_layers(label_change_run: Path, owner_data: ImageDataset) -> None:
    share = attacker_data(owner_data, 0.1, seed=0).data
    victim = load_model(label_change_run)
    plain = ATTACKS.get("finetune")(epochs=1)(
        victim, load_spec(label_change_run), share, TrainConfig(seed=0), False
    )
    ew = ATTACKS.get("finetune")(epochs=1, ew=2.0)(
        victim, load_spec(label_change_run), share, TrainConfig(seed=0), False
    )
    assert set(ew.state_dict()) == set(victim.state_dict())  # an ordinary module again
    assert any(
        not torch.equal(a, b)
        for a, b in zip(plain.state_dict().values(), ew.state_dict().values(), strict=True)
    )
