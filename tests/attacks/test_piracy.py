"""Piracy and forgery (issue 5): the attacker's own claims on a stolen model, and why they fail."""

from __future__ import annotations

import hashlib
import sys
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest
import torch
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from torch import nn

from nnmark import cli
from nnmark.attacks import ATTACKS, ClaimAttack
from nnmark.attacks.piracy.forgery import Forgery, targeted_inputs
from nnmark.attacks.piracy.piracy import Piracy
from nnmark.data.base import ImageDataset
from nnmark.errors import KeyTamperedError
from nnmark.identity import OwnerKey, generate_owner, save_owner
from nnmark.keyfile import key_bytes, load_key, parse_key, save_key
from nnmark.oracle import TorchOracle
from nnmark.schemes.null_embedding import NullEmbedding
from nnmark.training import TrainConfig, evaluate
from nnmark.types import Key, ModelSpec
from nnmark.verify.verifier import check_owner, verify

SPEC = ModelSpec("tiny", 10, (1, 28, 28), (0.0,), (1.0,))


def tiny_cnn() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 8, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(8, 16, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(16 * 7 * 7, 64), nn.ReLU(), nn.Linear(64, 10),
    )  # fmt: skip


def seeded_owner(name: str, seed: int) -> OwnerKey:
    raw = hashlib.sha256(f"nnmark piracy test owner {seed}".encode()).digest()
    return OwnerKey(name, Ed25519PrivateKey.from_private_bytes(raw))


@pytest.fixture(scope="module")
def stolen(mnist5k: ImageDataset, tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """Alice's null-embedded tiny CNN (λ = 2000, the default) that a thief steals, and her signed key."""
    root = tmp_path_factory.mktemp("owners")
    alice = seeded_owner("Alice", 0)
    save_owner(alice, root / "alice")
    owner_data = replace(mnist5k, train_x=mnist5k.train_x[:2000], train_y=mnist5k.train_y[:2000])
    scheme = NullEmbedding(owner=alice, probes=100, ramp=0.8)  # a longer ramp suits the tiny CNN
    scheme.when = datetime(2026, 1, 1, tzinfo=UTC)
    material = scheme.generate(owner_data, torch.Generator().manual_seed(0))
    assert material.labels is not None
    key = Key(
        scheme.name,
        {**scheme.params.model_dump(), **material.params},
        SPEC.input_shape,
        10,
        material.inputs,
        material.labels,
    )
    key = parse_key(key_bytes(key, alice))
    torch.manual_seed(0)
    model = tiny_cnn()
    scheme.embed(model, owner_data, key, TrainConfig(epochs=6, batch_size=32, lr=1e-3), False)
    # the thief's own images: a share the owner's model was not trained on
    thief = replace(mnist5k, train_x=mnist5k.train_x[2000:2400], train_y=mnist5k.train_y[2000:2400])
    return {
        "model": model.cpu().eval(),
        "key": key,
        "alice": alice,
        "pub": root / "alice.pub",
        "thief": thief,
        "root": root,
    }


def test_piracy_and_forgery_are_registered_claim_attacks():
    for name in ("piracy", "forgery"):
        assert issubclass(ATTACKS.get(name), ClaimAttack)
    assert Piracy().params.epochs == 10 and Piracy().params.images == 5000


def test_piracy_with_lis_digit_recipe_leaves_a_useless_model(stolen):
    """Li Table 3 (Digit): accuracy 98.72 → 19.02 %, neither watermark holds. Li's pirate trains with
    the owner's recipe, SGD at lr 0.001: the λ = 2000 stamps give λ-sized gradients and the weights
    blow up. Here a tiny CNN, 400 thief images, 10 epochs."""
    model, thief = stolen["model"], stolen["thief"]
    before = evaluate(model, thief.test_x, thief.test_y)
    mallory = seeded_owner("Mallory", 1)
    claim = Piracy(images=400, optimizer="sgd").claim(
        model, SPEC, thief, TrainConfig(seed=1), attacker=mallory, victim_keys=[stolen["key"]], progress=False
    )
    m = claim.metrics
    assert m["before"]["accuracy"] == pytest.approx(before) and m["images"] == 400 and m["epochs"] == 10
    assert evaluate(model, thief.test_x, thief.test_y) == before  # the stolen module is untouched
    assert before > 0.7 and m["after"]["accuracy"] < 0.3, (before, m)
    assert min(m["after"]["pirate"].values()) < 0.8 and min(m["after"]["owner"].values()) < 0.8, m
    assert claim.key.owner is not None and claim.key.owner.name == "Mallory" and claim.signer is mallory


def test_piracy_with_adam_keeps_the_model_but_the_pirate_watermark_does_not_take(stolen):
    """An attacker using Adam (nnmark's recipe) avoids the blow-up: the model survives, yet its own
    watermark does not embed in 10 epochs (the owner's null component is damaged, see the note)."""
    claim = Piracy(images=400).claim(
        stolen["model"],
        SPEC,
        stolen["thief"],
        TrainConfig(seed=1),
        attacker=seeded_owner("Mallory", 1),
        victim_keys=[stolen["key"]],
        progress=False,
    )
    m = claim.metrics
    assert not m["diverged"] and m["after"]["accuracy"] > 0.5, m
    assert m["after"]["pirate"]["phi_null"] < 0.8, m


def test_a_forged_trigger_key_matches_but_is_refused_as_the_owners(stolen, monkeypatch, capsys, tmp_path):
    model = stolen["model"]
    mallory = generate_owner("Mallory")
    claim = Forgery(scheme="label-change", keys=30, steps=30).claim(
        model, SPEC, stolen["thief"], TrainConfig(), attacker=mallory, progress=False
    )
    key = claim.key
    assert key.scheme == "label-change" and len(key.inputs) > 10
    assert torch.all(TorchOracle(model).labels(key.inputs) == key.labels)  # chosen labels, by construction
    path = tmp_path / "forged.key"
    save_key(path, key, mallory)
    forged = load_key(path)
    # on statistics alone the forgery "matches": what stops it is the owner's public key and time
    verdict = verify(forged, TorchOracle(model))
    assert verdict.watermarked is True
    assert any("signed by Mallory" in n and "priority rests on when commitment" in n for n in verdict.notes)
    with pytest.raises(KeyTamperedError, match="'Mallory', not by the owner"):
        check_owner(forged, stolen["pub"])
    monkeypatch.setattr(
        sys,
        "argv",
        [
            "nnmark",
            "verify",
            "--key",
            str(path),
            "--model",
            str(tmp_path / "x"),
            "--owner-pub",
            str(stolen["pub"]),
        ],
    )
    with pytest.raises(SystemExit) as exit_info:
        cli.main()
    assert exit_info.value.code == 2 and "not by the owner" in capsys.readouterr().err


def test_a_forged_null_embedding_key_cannot_be_made_to_fit(stolen):
    """Grinding 50 signed messages: pattern and label follow from Mallory's signature, none fits."""
    mallory = generate_owner("Mallory")
    claim = Forgery(keys=50, tries=50).claim(
        stolen["model"],
        SPEC,
        stolen["thief"],
        TrainConfig(),
        attacker=mallory,
        victim_keys=[stolen["key"]],
        progress=False,
    )
    assert claim.key.scheme == "li-null-embedding" and claim.metrics["best_min_phi"] < 0.8
    forged = parse_key(key_bytes(claim.key, mallory))
    verdict = verify(forged, TorchOracle(stolen["model"]), test="threshold")
    assert verdict.watermarked is False
    with pytest.raises(KeyTamperedError):
        check_owner(forged, stolen["pub"])


def test_targeted_inputs_reach_chosen_labels():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(784, 10))
    x = torch.rand(8, 1, 28, 28)
    targets = torch.arange(8) % 10
    adv, ok = targeted_inputs(model, x, targets, eps=0.5, steps=40)
    assert bool(ok.all()) and float((adv - x).abs().max()) <= 0.5 + 1e-6
    assert float(adv.min()) >= 0 and float(adv.max()) <= 1


def test_attack_command_writes_the_attackers_key(stolen, monkeypatch, capsys, tmp_path):
    """`nnmark attack forgery` on a run folder: the model, the forged key and attacker.pub."""
    from nnmark.workflow import embed_run

    data = replace(
        stolen["thief"], train_x=stolen["thief"].train_x[:200], train_y=stolen["thief"].train_y[:200]
    )
    run = embed_run(
        "label-change",
        {"keys": 10},
        data,
        "dnn1",
        TrainConfig(epochs=1),
        tmp_path / "wm",
        calibrate=0,
        owner=stolen["alice"],
        progress=False,
    )
    out = tmp_path / "forged"
    monkeypatch.setattr(
        sys,
        "argv",
        [
            "nnmark",
            "attack",
            "forgery",
            "--model",
            str(run.out),
            "--out",
            str(out),
            "--attacker-fraction",
            "0.01",
            "--set",
            "keys=5",
            "--set",
            "steps=5",
        ],
    )
    cli.main()  # returns normally on success
    captured = capsys.readouterr()
    forged = load_key(out / "watermark.key")
    assert forged.signed and forged.owner is not None and forged.owner.name == "forgery attacker"
    assert (out / "attacker.pub").is_file() and "signed by 'forgery attacker'" in captured.out
    with pytest.raises(KeyTamperedError):
        check_owner(forged, Path(stolen["pub"]))
