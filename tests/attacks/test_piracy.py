"""Piracy and forgery (issue 5): the attacker's own claims on a stolen model, and when they fail."""

from __future__ import annotations

import functools
import hashlib
import json
import sys
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest
import torch
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from torch import nn

from nnmark import cli, workflow
from nnmark.attacks import ATTACKS, ClaimAttack
from nnmark.attacks.piracy import forgery as forgery_module
from nnmark.attacks.piracy import piracy as piracy_module
from nnmark.attacks.piracy.forgery import Forgery, targeted_inputs
from nnmark.attacks.piracy.piracy import Piracy
from nnmark.data.base import ImageDataset
from nnmark.errors import KeyTamperedError
from nnmark.identity import OwnerKey, save_owner
from nnmark.keyfile import key_bytes, load_key, parse_key, save_key
from nnmark.oracle import TorchOracle
from nnmark.schemes.null_embedding import DEFAULT_LAMBDA, NullEmbedding, Watermark, stamp, watermark_params
from nnmark.training import TrainConfig, evaluate, train
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


#: Alice's key seed: her watermark's pattern, label and position are the same on every run (a real
#: owner's come from the OS's CSPRNG); with this one the tiny CNN learns it (key seed 1 puts the
#: pattern on the top edge, where it reached φ_null 0.10 only)
ALICE_KEY_SEED = 3
#: the attackers draw their key secrets from the OS's CSPRNG and sign the time of day, so their
#: watermarks would differ on every run; here they come from this key seed and these times
ATTACKER_KEY_SEED = 11
PIRATE_TIME = datetime(2026, 2, 1, tzinfo=UTC)
FORGER_TIME = datetime(2026, 3, 1, tzinfo=UTC)


class FixedTimeNullEmbedding(NullEmbedding):
    """The pirate's scheme, signing ``PIRATE_TIME`` instead of now (``NullEmbedding.when``)."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.when = PIRATE_TIME


@pytest.fixture
def reproducible_attackers(monkeypatch: pytest.MonkeyPatch) -> None:
    """The piracy and forgery attacks make the same keys on every run (secret and time fixed)."""
    fresh = workflow.prepare_secret

    def seeded(scheme: object, owner: object, key_seed: int | None = None) -> object:
        return fresh(scheme, owner, ATTACKER_KEY_SEED if key_seed is None else key_seed)  # type: ignore[arg-type]

    monkeypatch.setattr(workflow, "prepare_secret", seeded)
    monkeypatch.setattr(piracy_module, "NullEmbedding", FixedTimeNullEmbedding)
    monkeypatch.setattr(
        forgery_module, "watermark_params", functools.partial(watermark_params, when=FORGER_TIME)
    )


def phi(model: nn.Module, key: Key, probes: tuple[torch.Tensor, torch.Tensor]) -> tuple[float, float]:
    """Li's Algorithm 3 measured directly on held-out ``probes`` (x, y): φ_null = Pr(F(x ⊕ [p, λ]) =
    F(x) = y) and φ_true = Pr(F(x ⊕ [inv(p), λ]) = y_W) over the probes whose label is not y_W."""
    x, y = probes
    wm = Watermark.from_json(key.params["watermark"])
    lam = float(key.params.get("lam", DEFAULT_LAMBDA))
    oracle = TorchOracle(model)
    clean, null = oracle.labels(x), oracle.labels(stamp(x, wm, lam))
    true = oracle.labels(stamp(x, wm, lam, inverse=True))
    other = y != wm.label
    phi_null = float(((null == clean) & (clean == y)).float().mean())
    return phi_null, float((true[other] == wm.label).float().mean())


@pytest.fixture(scope="module")
def stolen(mnist5k: ImageDataset, tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """Alice's null-embedded tiny CNN (λ = 2000, the default) that a thief steals, and her signed key
    (made the way `embed` makes it). Trained long enough that her watermark passes: measured on the
    200 probes φ_null 0.955, φ_true 1.0, accuracy 95.7 % on the 1,000 test digits (6 epochs at lr
    1e-3 and ramp 0.8 had left φ_null at 0.74 with an earlier key, below Li's 80 %)."""
    root = tmp_path_factory.mktemp("owners")
    alice = seeded_owner("Alice", 0)
    save_owner(alice, root / "alice")
    owner_data = replace(mnist5k, train_x=mnist5k.train_x[:2000], train_y=mnist5k.train_y[:2000])
    scheme = NullEmbedding(owner=alice, ramp=0.5)
    scheme.when = datetime(2026, 1, 1, tzinfo=UTC)
    secret, gen = workflow.prepare_secret(scheme, alice, ALICE_KEY_SEED)
    material = scheme.generate(owner_data, gen)
    key = workflow.build_key(scheme, material, replace(SPEC, dataset=mnist5k.name), None, secret)
    key = parse_key(key_bytes(key, alice))
    torch.manual_seed(0)
    model = tiny_cnn()
    scheme.embed(model, owner_data, key, TrainConfig(epochs=12, batch_size=32, lr=2e-3, seed=0), False)
    # the thief's own images: a share the owner's model was not trained on
    thief = replace(mnist5k, train_x=mnist5k.train_x[2000:2400], train_y=mnist5k.train_y[2000:2400])
    # φ is measured on 200 test digits nobody trained on (the key itself holds no probes)
    pick = torch.randperm(len(mnist5k.test_x), generator=torch.Generator().manual_seed(0))[:200]
    probes = (mnist5k.test_x[pick].float().div(255), mnist5k.test_y[pick].long())
    clean = []  # clean siblings a judge may name as reference models (other seeds and recipes)
    for i, lr in enumerate((1e-3, 2e-3, 5e-4)):
        torch.manual_seed(100 + i)
        sibling = tiny_cnn()
        train(
            sibling,
            owner_data.train_x,
            owner_data.train_y,
            TrainConfig(epochs=3, lr=lr, seed=100 + i),
            progress=False,
        )
        clean.append(sibling.cpu().eval())
    return {
        "clean": clean,
        "model": model.cpu().eval(),
        "key": key,
        "alice": alice,
        "pub": root / "alice.pub",
        "thief": thief,
        "probes": probes,
        "root": root,
    }


def owner_state(stolen: dict[str, object]) -> tuple[float, tuple[float, float]]:
    """Accuracy on the thief's test digits and the owner's (φ_null, φ_true), measured directly."""
    model, thief, key, probes = stolen["model"], stolen["thief"], stolen["key"], stolen["probes"]
    assert isinstance(model, nn.Module) and isinstance(thief, ImageDataset) and isinstance(key, Key)
    return evaluate(model, thief.test_x, thief.test_y), phi(model, key, probes)  # type: ignore[arg-type]


def test_the_stolen_model_is_useful_and_carries_the_owners_watermark(stolen):
    """The state every piracy test starts from: without it, "the attack lowers φ below 80 %" is empty."""
    accuracy, (phi_null, phi_true) = owner_state(stolen)
    assert accuracy > 0.9 and phi_null > 0.85 and phi_true > 0.85, (accuracy, phi_null, phi_true)


def test_piracy_and_forgery_are_registered_claim_attacks():
    for name in ("piracy", "forgery"):
        assert issubclass(ATTACKS.get(name), ClaimAttack)
    assert Piracy().params.epochs == 10 and Piracy().params.images == 5000


def test_piracy_with_lis_digit_recipe_leaves_a_useless_model(stolen, reproducible_attackers):
    """Li Table 3 (Digit): accuracy 98.72 → 19.02 %, neither watermark holds. Li's pirate trains with
    the owner's recipe, SGD at lr 0.001: the λ = 2000 stamps give λ-sized gradients and the weights
    blow up. Here a tiny CNN, 400 thief images, 10 epochs. Measured (attacker key seed 11): accuracy
    0.957 → 0.100, owner φ (0.955, 1.0) → (0.115, 0.0), pirate φ (0.265, 0.0) → (0.115, 0.0), training
    diverged in epoch 2; with key seeds 11–15 accuracy ended at 0.09–0.18, min φ of each ≤ 0.125."""
    model, key, thief, probes = stolen["model"], stolen["key"], stolen["thief"], stolen["probes"]
    accuracy, owner_before = owner_state(stolen)
    assert accuracy > 0.9 and min(owner_before) > 0.85, (accuracy, owner_before)  # the watermark holds
    mallory = seeded_owner("Mallory", 1)
    claim = Piracy(images=400, optimizer="sgd").claim(
        model, SPEC, thief, TrainConfig(seed=1), attacker=mallory, victim_keys=[key], progress=False
    )
    assert PIRATE_TIME.isoformat(timespec="microseconds") in claim.key.params["message"]  # reproducible
    assert owner_state(stolen) == (accuracy, owner_before)  # the stolen module is untouched
    pirated = claim.model
    accuracy_after = evaluate(pirated, thief.test_x, thief.test_y)
    owner_after, pirate_after = phi(pirated, key, probes), phi(pirated, claim.key, probes)
    assert accuracy_after < 0.3, (accuracy, accuracy_after)  # a useless model ...
    assert min(owner_after) < 0.5, (owner_before, owner_after)  # ... the owner's watermark gone ...
    assert min(pirate_after) < 0.5, pirate_after  # ... and the pirate's never there
    # the attack's report says the same (its φ are on the attacker's own probes)
    m = claim.metrics
    assert m["images"] == 400 and m["epochs"] == 10 and m["optimizer"] == "sgd"
    assert m["before"]["accuracy"] == pytest.approx(accuracy)
    assert m["after"]["accuracy"] == pytest.approx(accuracy_after)
    assert min(m["before"]["owner"].values()) > 0.8, m
    assert min(m["after"]["owner"].values()) < 0.8 and min(m["after"]["pirate"].values()) < 0.8, m
    assert claim.key.owner is not None and claim.key.owner.name == "Mallory" and claim.signer is mallory
    # the pirate's own verdict, p0 measured on clean models trained on its 400 images (measured: p0 0.13,
    # φ_null 11.5 %, p = 0.97): not found
    judged = m["pirate_verdict"]["after"]
    assert judged["verdict"] == "not found" and judged["p0_source"] == "verifier", judged
    assert len(m["pirate_references"]) == 3


def test_piracy_with_adam_keeps_the_model_and_embeds_the_pirates_stamp(stolen, reproducible_attackers):
    """An attacker using Adam (nnmark's recipe) avoids the blow-up: the model keeps its accuracy and
    the pirate's stamp is learned. Measured (attacker key seed 11): accuracy 0.957 → 0.956, pirate φ
    (0.265, 0.0) → (0.835, 1.0), owner φ (0.955, 1.0) → (0.77, 1.0). Whether the pirate's φ_null ends
    above Li's 80 % depends on its pattern, not on λ: with key seeds 11–15 it was 0.835, 0.725,
    0.415, 0.835, 0.715 (the owner's 0.77, 0.87, 0.16, 0.87, 0.89: with seed 14 both pass), so this
    test claims no piracy resistance against an Adam pirate."""
    model, key, thief, probes = stolen["model"], stolen["key"], stolen["thief"], stolen["probes"]
    accuracy, owner_before = owner_state(stolen)
    claim = Piracy(images=400).claim(
        model, SPEC, thief, TrainConfig(seed=1), attacker=seeded_owner("Mallory", 1), victim_keys=[key],
        progress=False,
    )  # fmt: skip
    m = claim.metrics
    assert not m["diverged"] and m["optimizer"] == "adam", m
    pirate_before = phi(model, claim.key, probes)
    pirated = claim.model
    accuracy_after = evaluate(pirated, thief.test_x, thief.test_y)
    pirate_after, owner_after = phi(pirated, claim.key, probes), phi(pirated, key, probes)
    print(f"\nadam piracy: owner {owner_before} -> {owner_after}, pirate {pirate_before} -> {pirate_after}")
    assert accuracy_after >= accuracy - 0.02, (accuracy, accuracy_after)
    assert pirate_before[1] < 0.2 and pirate_after[1] > 0.95, (pirate_before, pirate_after)  # true part
    assert pirate_after[0] >= pirate_before[0] + 0.2, (pirate_before, pirate_after)  # null part
    assert m["after"]["accuracy"] == pytest.approx(accuracy_after)
    assert m["after"]["pirate"]["phi_null"] >= m["before"]["pirate"]["phi_null"] + 0.2, m
    # the pirate's verdict has a p0 now (clean models on its own images), so a successful pirate can be
    # reported. Measured (key seed 11): p0 0.13, φ_null 83.5 %, φ_true 100 %, found (p = 4.5e-112);
    # not asserted, as the judge's 200 random probes put φ_null near Li's 80 % rule
    judged = m["pirate_verdict"]["after"]
    assert judged["p0_source"] == "verifier" and judged["p0"] is not None, judged
    assert judged["verdict"] in ("found", "not found", "no verdict"), judged


def test_a_forged_label_change_key_matches_only_by_chance(stolen, reproducible_attackers):
    """Labels follow from the forger's secret and a hash of all its images: moving the images towards
    chosen labels re-draws every label, so the stolen model matches at the chance rate 1/(C - 1)."""
    model = stolen["model"]
    mallory = seeded_owner("Mallory", 1)
    claim = Forgery(scheme="label-change", keys=60, steps=30).claim(
        model, SPEC, stolen["thief"], TrainConfig(), attacker=mallory, progress=False
    )
    forged = parse_key(key_bytes(claim.key, mallory))
    assert forged.scheme == "label-change" and len(forged.inputs) > 30
    matches = int((TorchOracle(model).labels(forged.inputs) == forged.labels).sum())
    assert matches <= len(forged.inputs) // 3, matches  # chance is 1/9; chosen labels would give all
    # and the verifier re-derives label-change images from the secret: moved images are refused
    with pytest.raises(KeyTamperedError, match="do not follow from its secret"):
        verify(forged, TorchOracle(model))


def test_a_forged_trigger_key_matches_but_is_refused_as_the_owners(
    stolen, reproducible_attackers, monkeypatch, capsys, tmp_path
):
    """With a shared target the forger chooses the images: they match the stolen model by
    construction, the verdict says the claimant chose them, a judge's clean references see them,
    and --owner-pub with the true owner's key refuses the claim."""
    model = stolen["model"]
    mallory = seeded_owner("Mallory", 1)
    claim = Forgery(scheme="zhang-content", keys=30, steps=30).claim(
        model, SPEC, stolen["thief"], TrainConfig(), attacker=mallory, progress=False
    )
    path = tmp_path / "forged.key"
    save_key(path, claim.key, mallory)
    forged = load_key(path)
    assert forged.scheme == "zhang-content" and len(forged.inputs) > 10
    assert torch.all(TorchOracle(model).labels(forged.inputs) == forged.labels)  # chosen, by construction
    # the images are not the ones the forger's secret draws from the data: refused
    with pytest.raises(KeyTamperedError, match="do not follow from its secret"):
        verify(forged, TorchOracle(model))
    with pytest.raises(KeyTamperedError, match="'Mallory', not by the owner"):
        check_owner(forged, stolen["pub"])
    monkeypatch.setattr(
        sys,
        "argv",
        ["nnmark", "verify", "--key", str(path), "--model", str(tmp_path / "x")]
        + ["--owner-pub", str(stolen["pub"])],
    )
    with pytest.raises(SystemExit) as exit_info:
        cli.main()
    assert exit_info.value.code == 2 and "not by the owner" in capsys.readouterr().err


def test_a_forged_null_embedding_key_cannot_be_made_to_fit(stolen, reproducible_attackers):
    """Grinding 50 signed messages: pattern and label follow from Mallory's signature, none fits."""
    mallory = seeded_owner("Mallory", 1)
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
    assert FORGER_TIME.isoformat(timespec="microseconds") in claim.key.params["message"]  # reproducible
    forged = parse_key(key_bytes(claim.key, mallory))
    # a judge measures p0 on clean models it names (here: the stolen model's clean siblings)
    refs = [(m, f"clean {i}") for i, m in enumerate(stolen["clean"])]
    verdict = verify(forged, TorchOracle(stolen["model"]), test="threshold", references=refs)
    assert verdict.watermarked is False, verdict
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


# -- Li Table 1: a trigger-set pirate (issue 9, item 4) -------------------------------------------


@pytest.fixture(scope="module")
def adi_victim(mnist5k: ImageDataset, tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """Alice's dnn1 with Adi's 50 abstract-image keys, trained 10 epochs on the first 1,000 MNIST-5k
    training digits (key seed 0: the same keys on every run). Measured: key accuracy 0.74, test
    accuracy 92 %; her verdict on it is found (27/50, p0 = 1/10). A clean dnn1 beside it (3 epochs)."""
    from nnmark.workflow import embed_run, train_run

    root = tmp_path_factory.mktemp("adi-piracy")
    alice = seeded_owner("Alice", 0)
    owner_data = replace(mnist5k, train_x=mnist5k.train_x[:1000], train_y=mnist5k.train_y[:1000])
    run = embed_run(
        "adi", {}, owner_data, "dnn1", TrainConfig(epochs=10, seed=0), root / "wm",
        calibrate=0, owner=alice, key_seed=0, progress=False,
    )  # fmt: skip
    clean = train_run(owner_data, "dnn1", TrainConfig(epochs=3, seed=5), root / "clean", progress=False)
    return {"run": run.out, "key": run.out / "watermark.key", "clean": clean.out, "root": root}


def folder_digest(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def test_an_adi_pirate_is_found_by_its_own_key(adi_victim, reproducible_attackers, monkeypatch, capsys):
    """Li Table 1 (Digit, Adi's design: pirate watermark 98 %): `nnmark attack piracy --set scheme=adi`
    embeds the thief's own 50 abstract images (Adi's mixer, 6 keys per batch) by training 10 epochs
    (Adam 1e-3) on its 400 held-out MNIST-5k digits. Measured (seed 0, Mallory's key seed 11): the
    pirate's key accuracy 0.06 → 0.64 and its judge's verdict not found (3/50, p = 0.89) → found
    (32/50, p = 2.9e-20), p0 = 1/10 from the protocol; accuracy 91.5 → 91.7 %; Alice's
    key 0.76 → 0.40, still found in her owner's check (20/50, p = 2.4e-8). With fresh attacker
    secrets and owner seeds 0–2 the pirate was found each time (28–31 of 50)."""
    run, key = adi_victim["run"], adi_victim["key"]
    before = folder_digest(run)
    out = adi_victim["root"] / "pirated"
    argv = ["nnmark", "attack", "piracy", "--model", str(run), "--data", "mnist5k", "--out", str(out)]
    mallory = adi_victim["root"] / "mallory"
    save_owner(seeded_owner("Mallory", 1), mallory)  # the thief's identity: its key secret is reproducible
    argv += ["--key", str(key), "--set", "scheme=adi", "--owner", f"{mallory}.key"]
    monkeypatch.setattr(sys, "argv", argv)
    cli.main()  # returns normally on success
    printed = capsys.readouterr().out
    assert folder_digest(run) == before  # the victim folder is unchanged
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["pirate_scheme"] == "adi" and metrics["images"] == 400 and metrics["epochs"] == 10
    judged = metrics["pirate_verdict"]
    assert judged["before"]["verdict"] == "not found", judged["before"]  # the stolen model: chance
    after = judged["after"]
    assert after["verdict"] == "found" and after["watermarked"] is True, after
    assert after["p_value"] <= 1e-6 and after["p0"] == pytest.approx(0.1) and after["p0_source"] == "protocol"
    assert metrics["after"]["pirate"]["key_accuracy"] >= metrics["before"]["pirate"]["key_accuracy"] + 0.3
    # the owner's verdict for her --key, and the pirate key's own line, each with p0's source
    owner, pirate = metrics["verdicts"]
    assert owner["key"] == str(key) and owner["scheme"] == "adi" and owner["p0_source"] == "protocol"
    assert isinstance(owner["p_value"], float) and owner["watermarked"] in (True, False, None)
    assert pirate["key"] == str(out / "watermark.key") and pirate["watermarked"] is True, pirate
    assert "pirate's verdict after (judge): found" in printed, printed
    assert abs(metrics["test_accuracy"] - metrics["accuracy_before"]) < 0.05, metrics  # a useful model
    pirate_key = load_key(out / "watermark.key")
    assert pirate_key.owner is not None and pirate_key.owner.name == "Mallory"


def test_an_adi_pirate_key_is_not_found_on_models_it_was_not_embedded_in(adi_victim, reproducible_attackers):
    """The pirate's key, verified as a judge does (p0 = 1/10 from the protocol), finds its watermark in
    the pirated model only: not on the stolen model it was made for (which the attack leaves as it
    was), nor on a clean dnn1. Measured: 32/50 on the pirated model; 3/50 (p = 0.89) on the stolen
    model and 4/50 (p = 0.75) on the clean one, both not found."""
    from nnmark.workflow import load_model

    stolen_model, clean = load_model(adi_victim["run"]), load_model(adi_victim["clean"])
    weights = {k: v.clone() for k, v in stolen_model.state_dict().items()}
    thief = attacker_share_of(adi_victim)
    claim = Piracy(scheme="adi").claim(
        stolen_model, SPEC, thief, TrainConfig(seed=0), attacker=seeded_owner("Mallory", 1), progress=False
    )
    assert all(torch.equal(weights[k], v) for k, v in stolen_model.state_dict().items())  # untouched
    key = parse_key(key_bytes(claim.key, claim.signer))
    assert key.scheme == "adi" and key.owner is not None and key.owner.name == "Mallory"
    assert verify(key, TorchOracle(claim.model), judge=True).watermarked is True
    for model in (stolen_model, clean):
        verdict = verify(key, TorchOracle(model), judge=True)
        assert verdict.watermarked is False, verdict.reason
        assert verdict.decided_by["p0"]["source"] == "protocol" and verdict.p0 == pytest.approx(0.1)


def attacker_share_of(adi_victim: dict[str, object]) -> ImageDataset:
    """The 400 held-out digits the CLI's attacker draws (10 % of MNIST-5k's 4,000 training images)."""
    from nnmark.attacks.data import attacker_data
    from nnmark.data import load_dataset

    return attacker_data(load_dataset("mnist5k"), 0.1, 0).data
