# ruff: noqa: F811  (fixtures imported from attack_runs)
"""Attacks with the victim's exponential-weighting layers in place (Namba 2019 Sec. 5.2, Eq. 11):
every attack that changes the stolen model's weights takes ``ew`` (attacks.base.EwParams), trains
through EW layers with it, returns an ordinary (folded) module and leaves the victim untouched;
``nnmark attack`` defaults ``ew`` to the temperature the victim run was embedded with."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest
import torch
from attack_runs import label_change_run, owner_data  # noqa: F401  (fixtures)
from torch import nn
from torch.nn.utils import parametrize

from nnmark.attacks import ATTACKS
from nnmark.attacks.base import EwParams
from nnmark.attacks.data import attacker_data
from nnmark.attacks.ew_inplace import ew_in_place, reset_layer
from nnmark.attacks.removal.finetune import last_layer
from nnmark.attacks.run import AttackResult, attack_run
from nnmark.attacks.summary import attack_lines
from nnmark.data.base import ImageDataset
from nnmark.io import load_spec
from nnmark.models import build_model
from nnmark.schemes.ew import apply_ew, fold_ew
from nnmark.training import TrainConfig
from nnmark.types import ModelSpec
from nnmark.workflow import embed_run, load_model, model_spec

#: every attack that changes the stolen model's weights, with 1-epoch settings
EW_ATTACKS: dict[str, dict[str, Any]] = {
    "finetune": {"epochs": 1},
    "prune": {"rate": 0.5, "epochs": 1},
    "fine-prune": {"epochs": 1, "max_rate": 0.3},
    "neuron-prune": {"rate": 0.3, "epochs": 1},
    "transfer": {"epochs": 1, "recovery_epochs": 1},
}

_EW_RUN: dict[str, Path] = {}


@pytest.fixture(scope="module")
def ew_run(owner_data: ImageDataset, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """dnn1 with label-change keys embedded through EW layers at T = 2 (1 epoch + 1 through EW)."""
    if "run" not in _EW_RUN:
        out = _EW_RUN["run"] = tmp_path_factory.mktemp("ew") / "ew2"
        embed_run(
            "label-change", {"ew": 2.0, "retrain_epochs": 1}, owner_data, "dnn1",
            TrainConfig(epochs=1, seed=0), out, calibrate=0, key_seed=0, progress=False,
        )  # fmt: skip
    return _EW_RUN["run"]


def state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def attack(
    name: str, model: nn.Module, run: Path, share: ImageDataset, owner: ImageDataset, **extra: Any
) -> nn.Module:
    a = ATTACKS.get(name)(**EW_ATTACKS[name], **extra)
    a.owner_data = owner  # transfer's recovery step
    return a(model, load_spec(run), share, TrainConfig(seed=0), False)


def test_the_weight_changing_attacks_take_ew() -> None:
    takes = {n for n in ATTACKS.names() if issubclass(ATTACKS.get(n).Params, EwParams)}
    assert takes == set(EW_ATTACKS)  # distill trains a fresh model, piracy embeds its own scheme


@pytest.mark.parametrize("name", sorted(EW_ATTACKS))
def test_attack_trains_through_ew_layers(name: str, label_change_run: Path, owner_data: ImageDataset) -> None:
    share = attacker_data(owner_data, 0.1, seed=0).data
    victim = load_model(label_change_run)
    before = state(victim)
    plain = attack(name, victim, label_change_run, share, owner_data, ew=0)
    ew = attack(name, victim, label_change_run, share, owner_data, ew=2.0)
    after = state(victim)
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    # an ordinary module again: the victim's parameter names, no parametrisation left
    assert set(ew.state_dict()) == set(before)
    assert not any(parametrize.is_parametrized(m) for m in ew.modules())
    # trained through EW: not the plain attack's weights (inverting and folding alone moves < 1e-6)
    p, e = plain.state_dict(), ew.state_dict()
    assert max(float((p[k] - e[k]).abs().max()) for k in p) > 1e-3


@pytest.mark.parametrize("arch", ["dnn1", "digit-cnn"])
def test_prune_09_with_ew_still_zeroes_90_percent(arch: str, owner_data: ImageDataset) -> None:
    share = attacker_data(owner_data, 0.1, seed=0).data
    spec = model_spec(arch, owner_data)
    torch.manual_seed(0)
    victim = build_model(spec)
    before = state(victim)
    attacked = ATTACKS.get("prune")(rate=0.9, epochs=1, ew=2.0)(
        victim, spec, share, TrainConfig(seed=0), False
    )
    assert all(torch.equal(before[k], v) for k, v in victim.state_dict().items())
    for m in attacked.modules():
        if isinstance(m, nn.Conv2d | nn.Linear):
            assert float((m.weight == 0).float().mean()) == pytest.approx(0.9, abs=0.01)


def test_namba_sweep_with_ew_in_place(ew_run: Path, owner_data: ImageDataset, tmp_path: Path) -> None:
    result = attack_run(
        "prune", ew_run, tmp_path / "out", owner_data, TrainConfig(seed=0),
        settings={"sweep": True, "rates": [0.0, 0.5], "epochs": 1, "max_loss": 0.5},
        keys=[ew_run / "watermark.key"],
        progress=False,
    )  # fmt: skip
    assert result.metrics["ew"] == 2.0 and [r["rate"] for r in result.metrics["sweep"]] == [0.0, 0.5]
    assert not any(parametrize.is_parametrized(m) for m in result.model.modules())
    assert set(load_model(tmp_path / "out").state_dict()) == set(load_model(ew_run).state_dict())


def test_rt_modes_reinitialise_an_ew_head(label_change_run: Path, owner_data: ImageDataset) -> None:
    victim = load_model(label_change_run)
    head = last_layer(victim)
    old = head.weight.detach().clone()
    with ew_in_place(victim, 2.0):
        reset_layer(head)
        assert parametrize.is_parametrized(head, "weight")  # still an EW layer, over a new θ
    corr = torch.corrcoef(torch.stack([old.flatten(), head.weight.detach().flatten()]))[0, 1]
    assert abs(float(corr)) < 0.2


@pytest.mark.parametrize("name", sorted(EW_ATTACKS))
def test_attack_run_on_an_ew_run_leaves_the_victim_and_writes_an_ordinary_run(
    name: str, ew_run: Path, owner_data: ImageDataset, tmp_path: Path
) -> None:
    def digest() -> dict[str, str]:
        return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(ew_run.iterdir())}

    before = digest()
    m = attack_run(
        name, ew_run, tmp_path / "out", owner_data, TrainConfig(seed=0), settings=EW_ATTACKS[name],
        progress=False,
    ).metrics  # fmt: skip
    assert digest() == before  # the victim's folder, byte for byte
    assert m["ew"] == 2.0  # the victim's own EW layers, by default
    assert set(load_model(tmp_path / "out").state_dict()) == set(load_model(ew_run).state_dict())


def test_attack_run_defaults_ew_to_the_victims_temperature(
    ew_run: Path, label_change_run: Path, owner_data: ImageDataset, tmp_path: Path
) -> None:
    results: dict[str, AttackResult] = {}

    def run(victim: Path, out: str, **settings: Any) -> dict[str, Any]:
        results[out] = attack_run(
            "prune", victim, tmp_path / out, owner_data, TrainConfig(seed=0),
            settings={"rate": 0.5, "epochs": 0, **settings}, attacker_fraction=0.05, progress=False,
        )  # fmt: skip
        return results[out].metrics

    m = run(ew_run, "ew")
    assert m["settings"]["ew"] == 2.0 and m["ew"] == 2.0 and "watermark.key" in m["ew_source"]
    assert any("EW layers at T=2" in line for line in attack_lines("prune", tmp_path / "ew", results["ew"]))
    assert run(tmp_path / "ew", "again")["settings"]["ew"] == 2.0  # an attacked run keeps its T
    assert run(ew_run, "plain", ew=0)["ew"] == 0.0  # --set ew=0: the folded weights
    # review of issue 9: another T than the victim's went through without a word
    assert "folded at T=2" in run(ew_run, "other-t", ew=5)["ew_source"]
    assert run(ew_run, "same-t", ew=2)["ew_source"] == "--set ew"
    assert run(label_change_run, "no-ew")["ew"] == 0.0  # embedded without EW
    assert not any("EW layers" in line for line in attack_lines("prune", tmp_path / "x", results["no-ew"]))


def test_neuron_prune_with_ew_ranks_units_by_theta(owner_data: ImageDataset) -> None:
    """Inside EW layers the thief's units are θ's (attacks.removal.neurons.unit_norms: Σ|θ|). Unlike
    weight pruning, the two rankings of whole units differ: EW shrinks small θ_i much more than
    large ones, so a unit of many small θ_i can have the larger Σ|θ| and the smaller Σ|EW(θ)|."""
    temperature = 2.0
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 2), nn.ReLU(), nn.Linear(2, 2))
    theta = torch.tensor([[1.0, 0.0, 0.0, 0.0], [0.4, 0.4, 0.4, 0.0]])  # Σ|θ|: 1.0 and 1.2
    with torch.no_grad():
        model[1].weight.copy_(theta)
        model[1].bias.fill_(0.1)
    apply_ew(model, temperature)
    fold_ew(model)  # the stored (folded) weights: Σ|w| = 1.0 and 1.2 · e^(-1.2) ≈ 0.36
    folded = model[1].weight.detach().abs().sum(1)
    assert folded[1] < folded[0]  # ranking by the folded weights would remove unit 1
    spec = ModelSpec("toy", 2, (1, 2, 2), (0.0,), (1.0,))
    attacked = ATTACKS.get("neuron-prune")(rate=0.5, ew=temperature)(
        model, spec, owner_data, TrainConfig(seed=0), False
    )
    w = attacked[1].weight.detach()
    # unit 0, θ's weakest (Σ|θ| = 1.0 < 1.2), is removed: weights and bias zero
    assert torch.equal(w[0], torch.zeros(4)) and float(attacked[1].bias.detach()[0]) == 0.0
    # unit 1 kept: its θ, refolded at the layer's new max|θ| = 0.4 (every θ_i of it), so EW(θ) = θ
    assert torch.allclose(w[1], theta[1], atol=1e-5)
