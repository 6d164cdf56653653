"""Li 2019 null embedding (issue 5): derivation from the signature, stamps, the dual-embedding loss,
verification and its refusals, several hidden watermarks, and 1,000 random keys without a false verdict."""

from __future__ import annotations

import base64
import hashlib
import math
from dataclasses import replace
from datetime import UTC, datetime

import pytest
import torch
from torch import nn

from nnmark.calibration import calibrate_key
from nnmark.data.base import ImageDataset
from nnmark.errors import KeyTamperedError, NnmarkError
from nnmark.identity import OwnerKey, generate_owner
from nnmark.keyfile import key_bytes, parse_key
from nnmark.oracle import Oracle, TorchOracle
from nnmark.schemes.null_embedding import (
    DualMixer,
    NullEmbedding,
    Watermark,
    check_key,
    derive_watermark,
    null_rates,
    stamp,
    watermark_params,
)
from nnmark.training import TrainConfig, train
from nnmark.types import Calibration, Key, Owner
from nnmark.verify.verifier import verify

SHAPE = (1, 28, 28)
# the tiny test CNN learns a small λ in seconds (nnmark's default, λ = 2000 ramped from 20, needs
# digit-cnn-sized training); at λ = 20 random-bit decoy stamps make the watermark bit-specific
TINY = {"lam": 20.0, "lam_start": None, "decoys": 0.25}


def seeded_owner(name: str, seed: int) -> OwnerKey:
    """A reproducible owner (the test's model and its false-positive count do not vary between runs)."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    raw = hashlib.sha256(f"nnmark test owner {seed}".encode()).digest()
    return OwnerKey(name, Ed25519PrivateKey.from_private_bytes(raw))


def tiny_cnn() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 8, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(8, 16, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(16 * 7 * 7, 64), nn.ReLU(), nn.Linear(64, 10),
    )  # fmt: skip


def make_key(scheme: NullEmbedding, data: ImageDataset, seed: int = 0) -> Key:
    scheme.when = datetime(2026, 1, 1, tzinfo=UTC)
    material = scheme.generate(data, torch.Generator().manual_seed(seed))
    assert material.labels is not None
    params = {**scheme.params.model_dump(), **material.params}
    key = Key(scheme.name, params, data.input_shape, data.num_classes, material.inputs, material.labels)
    owner = scheme.owner
    assert owner is not None
    return parse_key(key_bytes(key, owner))  # as written to disk: signed, with its commitment


@pytest.fixture(scope="module")
def trained(mnist5k: ImageDataset) -> dict[str, object]:
    """A tiny CNN carrying two hidden watermarks (Alice's and Bob's), and a clean twin."""
    data = replace(mnist5k, train_x=mnist5k.train_x[:2000], train_y=mnist5k.train_y[:2000])
    alice = NullEmbedding(owner=seeded_owner("Alice", -1), probes=100, **TINY)
    key_a = make_key(alice, data, 0)
    bob = NullEmbedding(owner=seeded_owner("Bob", -2), probes=100, tag="hidden #2", **TINY)
    key_b = make_key(bob, data, 1)
    alice.kept = [key_b]  # trained together, as `embed --from` or several watermarks at first training
    config = TrainConfig(epochs=6, batch_size=32, lr=3e-3)
    torch.manual_seed(0)
    model = tiny_cnn()
    alice.embed(model, data, key_a, config, False)
    torch.manual_seed(1)
    clean = tiny_cnn()
    train(clean, data.train_x, data.train_y, config, progress=False)
    return {"data": data, "model": model.cpu(), "clean": clean.cpu(), "keys": [key_a, key_b]}


def test_derivation_follows_sha256_of_the_signature():
    sig = bytes(range(64))
    wm = derive_watermark(sig, SHAPE, 10)
    h = [int.from_bytes(hashlib.sha256(bytes([i]) + sig).digest(), "big") for i in (1, 2, 3, 4)]
    assert wm.label == h[0] % 10
    assert wm.bits == tuple((h[1] % 2**36 >> (35 - i)) & 1 for i in range(36))
    assert (wm.row, wm.col, wm.n) == (h[2] % 22, h[3] % 22, 6)
    assert derive_watermark(sig, SHAPE, 10) == wm  # deterministic


def test_different_signatures_give_different_watermarks():
    owner = generate_owner("Alice")
    sigs = {owner.sign(f"message {i}".encode()) for i in range(300)}
    marks = [derive_watermark(s, SHAPE, 10) for s in sigs]
    assert len({(m.bits, m.row, m.col, m.label) for m in marks}) == 300
    assert len({m.bits for m in marks}) == 300
    assert {m.label for m in marks} == set(range(10))
    assert all(0 <= m.row < 22 and 0 <= m.col < 22 for m in marks)
    # Ed25519 is deterministic: the same message gives the same signature, hence the same watermark
    assert owner.sign(b"message 0") in sigs


def test_stamp_sets_plus_and_minus_lambda_and_inv_swaps_them():
    wm = Watermark(3, tuple([1, 0] * 18), 2, 5, 6)
    x = torch.rand(4, 3, 28, 28)
    for inverse in (False, True):
        s = stamp(x, wm, 20.0, inverse)
        region = s[:, :, 2:8, 5:11]
        bits = wm.pattern() if not inverse else 1 - wm.pattern()
        assert torch.equal(region, ((bits * 2 - 1) * 20.0).expand_as(region))
        outside = s.clone()
        outside[:, :, 2:8, 5:11] = x[:, :, 2:8, 5:11]
        assert torch.equal(outside, x)
    assert torch.equal(stamp(x, wm, 20.0, True)[:, :, 2:8, 5:11], -stamp(x, wm, 20.0)[:, :, 2:8, 5:11])


def test_the_mixer_builds_the_dual_embedding_loss():
    wm = Watermark(7, tuple([1] * 18 + [0] * 18), 0, 0, 6)
    x, y = torch.rand(10, 1, 28, 28), torch.arange(10) % 3
    bx, by, w = DualMixer([wm], [20.0], alpha=0.5, beta=0.5)(x, y, torch.Generator().manual_seed(0))
    assert bx.shape[0] == by.shape[0] == w.shape[0] == 20
    assert torch.equal(bx[:10], x) and torch.equal(w, torch.ones(20))
    true_part, null_part = bx[10:15], bx[15:]
    assert torch.all(by[10:15] == 7) and torch.all(
        true_part[:, :, :6, :6] == stamp(true_part, wm, 20.0, True)[:, :, :6, :6]
    )
    assert torch.all(null_part[:, :, :6, :6] == stamp(null_part, wm, 20.0)[:, :, :6, :6])
    assert set(by[15:].tolist()) <= set(y.tolist())
    # α = 2: the whole batch once, weighted twice: the loss is ℓ + 2·ℓ_true + β·ℓ_null
    _, _, w = DualMixer([wm], [20.0], alpha=2.0, beta=0.3)(x, y, torch.Generator().manual_seed(0))
    assert torch.allclose(w, torch.tensor([1.0] * 10 + [2.0] * 10 + [1.0] * 3))


def test_lambda_ramp_grows_geometrically_to_lambda():
    wm = Watermark(1, (1,) * 36, 0, 0, 6)
    mixer = DualMixer([wm], [2000.0], 0.5, 0.5, ramp_steps=4, start_factor=0.01)
    factors = []
    for _ in range(6):
        factors.append(mixer.factor())
        mixer(torch.rand(4, 1, 28, 28), torch.zeros(4, dtype=torch.long), torch.Generator())
    assert (
        factors[0] == pytest.approx(0.01) and factors[2] == pytest.approx(0.1) and factors[4:] == [1.0, 1.0]
    )


def test_the_scheme_requires_an_owner(mnist5k):
    with pytest.raises(NnmarkError, match="--owner STEM.key"):
        NullEmbedding().generate(mnist5k, torch.Generator())


def test_embed_without_owner_is_refused_and_writes_nothing(tmp_path, mnist5k):
    from nnmark.workflow import embed_run

    with pytest.raises(NnmarkError, match="--owner"):
        embed_run(
            "li-null-embedding",
            {},
            mnist5k,
            "dnn1",
            TrainConfig(epochs=1),
            tmp_path / "run",
            calibrate=0,
            progress=False,
        )
    assert not (tmp_path / "run").exists()


def test_the_key_stores_message_signature_and_clean_probes(mnist5k):
    key = make_key(NullEmbedding(owner=generate_owner("Alice"), probes=30), mnist5k)
    assert (
        key.inputs.shape == (30, 1, 28, 28) and float(key.inputs.min()) >= 0 and float(key.inputs.max()) <= 1
    )
    assert "| owner: Alice |" in key.params["message"]
    wm, checked = check_key(key)
    assert wm == derive_watermark(base64.b64decode(key.params["signature"]), SHAPE, 10)
    assert "Alice's signature" in checked


def resign(key: Key, owner_name: str = "Alice", **params: object) -> Key:
    return replace(
        key,
        params={**key.params, **params},
        owner=Owner(owner_name, key.owner.public_key_pem) if key.owner else None,
    )


def test_verification_refuses_keys_whose_signature_or_derivation_fails(mnist5k):
    alice, mallory = generate_owner("Alice"), generate_owner("Mallory")
    key = make_key(NullEmbedding(owner=alice, probes=10), mnist5k)
    forged_msg = key.params["message"].replace("created: ", "created: 1")
    with pytest.raises(KeyTamperedError, match="does not verify"):
        check_key(resign(key, message=forged_msg))
    flipped = dict(
        key.params["watermark"],
        bits="".join("1" if b == "0" else "0" for b in key.params["watermark"]["bits"]),
    )
    with pytest.raises(KeyTamperedError, match="do not follow from its signature"):
        check_key(resign(key, watermark=flipped))
    with pytest.raises(KeyTamperedError, match="do not follow"):
        check_key(
            resign(
                key,
                watermark=dict(key.params["watermark"], label=(key.params["watermark"]["label"] + 1) % 10),
            )
        )
    # Mallory copies Alice's message and signature into a key of its own
    stolen = replace(key, owner=Owner("Mallory", mallory.public_key_pem))
    with pytest.raises(KeyTamperedError, match="does not verify with Mallory's public key"):
        check_key(stolen)
    # Mallory signs a message that names Alice
    msg = key.params["message"]
    sig = base64.b64encode(mallory.sign(msg.encode())).decode()
    wm = derive_watermark(base64.b64decode(sig), SHAPE, 10).to_json()
    with pytest.raises(KeyTamperedError, match="does not name the key's owner Mallory"):
        check_key(replace(stolen, params={**key.params, "signature": sig, "watermark": wm}))


class ByteOracle(Oracle):
    """A transport that can only carry 0–255 images."""

    carries_any_value = False

    def _predict(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - must never be called
        raise AssertionError("no query may be sent")


def test_a_0_255_transport_gives_no_verdict_rather_than_clipping(mnist5k):
    key = make_key(NullEmbedding(owner=generate_owner("Alice"), probes=10), mnist5k)
    verdict = verify(key, ByteOracle())
    assert verdict.watermarked is None and verdict.queries == 0
    assert "0–255" in verdict.reason and "clip" in verdict.reason


def test_calibration_measures_clean_models_on_the_null_stamp(trained):
    key_a = trained["keys"][0]
    cal = calibrate_key(key_a, [trained["clean"]], ["clean"])
    clean_acc = float((TorchOracle(trained["clean"]).labels(key_a.inputs) == key_a.labels).float().mean())
    assert cal.rates[0] < 0.5 < clean_acc  # the stamp, not the clean probes, was measured


def test_each_hidden_watermark_verifies_alone_and_a_clean_model_fails(trained):
    model, clean = trained["model"], trained["clean"]
    for key in trained["keys"]:
        key = replace(key, calibration=calibrate_key(key, [clean], ["clean twin"]))
        found = verify(key, TorchOracle(model))
        assert found.watermarked is True, found.reason
        assert found.p_value < 1e-6 and found.evidence["phi_null"] > 0.8 and found.evidence["phi_true"] > 0.8
        assert found.queries == 3 * len(key.inputs)
        assert any("no one else can have made it" in n for n in found.notes)
        assert verify(key, TorchOracle(model), test="threshold").watermarked is True
        not_found = verify(key, TorchOracle(clean))
        assert not_found.watermarked is False and not_found.evidence["phi_null"] < 0.5
        assert verify(key, TorchOracle(clean), test="threshold").watermarked is False
    uncalibrated = verify(trained["keys"][0], TorchOracle(model))
    assert uncalibrated.watermarked is None and "calibrat" in uncalibrated.reason
    rates = null_rates(model, trained["keys"][1])
    assert min(rates) > 0.8


class CachedOracle(TorchOracle):
    """Answers the shared clean probes from a cache (the sweep sends them 1,000 times)."""

    def __init__(self, model: nn.Module, probes: torch.Tensor) -> None:
        super().__init__(model)
        self.probes, self.cached = probes, super()._predict(probes)

    def _predict(self, x: torch.Tensor) -> torch.Tensor:
        if x.data_ptr() == self.probes.data_ptr() and x.shape == self.probes.shape:
            return self.cached
        return super()._predict(x)


def test_1000_random_keys_give_no_false_verdict(trained):
    """Li Sec. 7.3: 1,000 watermarks never embedded, from random owners, against a watermarked model."""
    model, data = trained["model"], trained["data"]
    probes, labels = data.test_x[:25].float().div(255), data.test_y[:25].long()
    template = trained["keys"][0]
    # a low p0 makes the binomial test stricter than any calibration would (clean models: ~0.1-0.2)
    low_p0 = Calibration((0.1,), 25, 0.1, "fixed low p0 for the sweep")
    oracle = CachedOracle(model, probes)
    found = {"binomial": 0, "threshold": 0}
    best = 0.0
    when = datetime(2026, 1, 1, tzinfo=UTC)
    for i in range(1000):
        owner = seeded_owner(f"random owner {i}", i)
        extra = watermark_params(owner, SHAPE, 10, 6, when=when)
        key = replace(
            template,
            params={**template.params, **extra},
            inputs=probes,
            labels=labels,
            owner=Owner(owner.name, owner.public_key_pem),
            calibration=low_p0,
        )
        v = verify(key, oracle)  # the binomial verdict; Li's threshold rule is its "passes" part
        found["binomial"] += bool(v.watermarked)
        rates = min(v.evidence["phi_null"], v.evidence["phi_true"])
        found["threshold"] += rates > v.evidence["threshold_rate"]
        best = max(best, rates)
    assert found == {"binomial": 0, "threshold": 0}
    assert best < 0.8
    real = replace(trained["keys"][0], inputs=probes, labels=labels, calibration=low_p0)
    assert verify(real, oracle, test="threshold").watermarked is True  # the sweep can see a real one


def test_p_value_bound_of_the_true_component():
    """b_true = ⌊N/k⌋/Y: even a model sending every stamped input to y_W gives at most 1/Y."""
    from nnmark.schemes import null_embedding as ne

    assert math.floor(100 / 100) / 10 == 0.1
    assert "⌊N / k⌋ / Y" in (ne.__doc__ or "")


def test_embed_from_a_null_embedded_run_keeps_its_watermark(tmp_path, mnist5k):
    """`embed --from RUN --owner B` keeps RUN's watermark and adds B's; each key verifies alone."""
    from nnmark.keyfile import load_key
    from nnmark.workflow import embed_run, load_model

    data = replace(mnist5k, train_x=mnist5k.train_x[:300], train_y=mnist5k.train_y[:300])
    settings = {"lam": 20.0, "lam_start": None, "probes": 20, "batch_size": 100}
    first = embed_run(
        "li-null-embedding",
        settings,
        data,
        "dnn1",
        TrainConfig(epochs=1),
        tmp_path / "a",
        calibrate=0,
        owner=seeded_owner("Alice", 5),
        progress=False,
    )
    second = embed_run(
        "li-null-embedding",
        {**settings, "tag": "hidden #2"},
        data,
        "dnn1",
        TrainConfig(epochs=1),
        tmp_path / "b",
        from_run=first.out,
        calibrate=0,
        owner=seeded_owner("Bob", 6),
        progress=False,
    )
    k1, k2 = load_key(first.out), load_key(second.out)
    assert k2.params["kept"] == [k1.commitment] and k1.params["kept"] == []
    assert (
        k1.owner is not None and k2.owner is not None and (k1.owner.name, k2.owner.name) == ("Alice", "Bob")
    )
    model = load_model(second.out)
    for key in (k1, k2):  # each key alone, nothing of the other revealed
        verdict = verify(key, TorchOracle(model), test="threshold")
        assert verdict.watermarked is not None and verdict.queries == 3 * len(key.inputs)


def test_key_info_never_shows_the_signature_or_the_pattern(tmp_path, mnist5k, monkeypatch, capsys):
    import json
    import sys

    from nnmark import cli
    from nnmark.keyfile import save_key

    owner = seeded_owner("Alice", 9)
    key = make_key(NullEmbedding(owner=owner, probes=5), mnist5k)
    save_key(tmp_path / "k.key", key, owner)
    monkeypatch.setattr(sys, "argv", ["nnmark", "key", "info", str(tmp_path / "k.key"), "--json"])
    cli.main()
    info = json.loads(capsys.readouterr().out)
    assert info["owner"] == "Alice" and info["signed"] and info["scheme"] == "li-null-embedding"
    assert "signature" not in info["params"] and "watermark" not in info["params"]
    assert key.params["signature"] not in json.dumps(info)
    assert "| owner: Alice |" in info["params"]["message"]
