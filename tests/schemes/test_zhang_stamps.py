"""zhang-content's secret stamps against a claimant who grinds secrets (issue 8, hostile review).

With one secret text of 4 letters (about 19 bits) Mallory could grind ~460,000 signed secrets for a
key stamped with Alice's text, which Alice's model answers: she was "found" on Alice's model. A key
now carries 4 texts and each stamp's keys must beat the verifier's control stamps. To grind in a
test, texts here have 2 letters (676 of them): Mallory grinds ~40,000 signed secrets until two of
her four texts are Alice's, and takes 400 keys so that her pooled keys alone would beat the controls.
The suspect is Alice's model at its most specific, a reader that answers the target to exactly
Alice's texts (real training is covered by tests/test_verify_end_to_end.py); the verifier's draws
are seeded so that no control text happens to be one of Alice's.
"""

from __future__ import annotations

import hashlib
import random

import pytest
import torch
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from torch import nn

import nnmark.schemes.zhang as zhang
from nnmark import keysecret
from nnmark.data import load_dataset
from nnmark.identity import OwnerKey, generate_owner
from nnmark.keyfile import key_bytes, parse_key
from nnmark.oracle import TorchOracle
from nnmark.schemes.render import text_mask
from nnmark.schemes.zhang import ZhangContent, secret_texts
from nnmark.types import Key
from nnmark.verify.context import VerifyContext
from nnmark.verify.verifier import verify
from nnmark.workflow import build_key, model_spec

TARGET = 3
PURPOSE = "zhang-content/generate"
SHAPE = (1, 28, 28)


class Always(nn.Module):
    """A reference model that answers class 0 to everything (never the target)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.zeros(len(x), 10)
        out[:, 0] = 1.0
        return out


class StampReader(nn.Module):
    """Answers the target to inputs that carry one of ``texts`` (every pixel of its mask at 1.0),
    class 0 to anything else."""

    def __init__(self, texts: list[str]) -> None:
        super().__init__()
        self.masks = [text_mask(t, SHAPE).bool() for t in texts]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        hit = torch.zeros(len(x), dtype=torch.bool)
        for mask in self.masks:
            hit |= (x[:, mask] == 1.0).all(1)
        out = torch.zeros(len(x), 10)
        out[hit, TARGET] = 1.0
        out[~hit, 0] = 1.0
        return out


def texts_of(secret: bytes, stamps: int = zhang.SECRET_STAMPS) -> list[str]:
    return secret_texts(keysecret.generator(secret, PURPOSE), stamps)


def judge(seed: int = 0) -> VerifyContext:
    references = [(Always(), f"always-0 #{i}") for i in range(3)]
    return VerifyContext(references=references, judge=True, rng=random.Random(seed))  # type: ignore[arg-type]


def signed_key(owner: OwnerKey, entry: dict, keys: int, stamps: int) -> Key:
    data = load_dataset("mnist5k")
    scheme = ZhangContent(owner=owner, target=TARGET, keys=keys, stamps=stamps)
    secret = keysecret.secret_from_entry(entry)
    scheme.secret = secret
    material = scheme.assign_labels(scheme.generate(data, keysecret.generator(secret, PURPOSE)), 10, [])
    key = build_key(scheme, material, model_spec("digit-cnn", data), None, entry, data)
    return parse_key(key_bytes(key, owner))


@pytest.fixture(autouse=True)
def two_letter_texts(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(zhang, "STAMP_LETTERS", 2)


def seeded_owner(name: str, seed: int) -> OwnerKey:
    raw = hashlib.sha256(f"nnmark test owner {seed}".encode()).digest()
    return OwnerKey(name, Ed25519PrivateKey.from_private_bytes(raw))


@pytest.fixture
def alice() -> tuple[Key, list[str]]:
    """Alice's key, the same in every run (a key seed: guessable, which a test may be)."""
    owner = seeded_owner("Alice", 1)
    entry = keysecret.new_secret("zhang-content", owner, key_seed=7)
    return signed_key(owner, entry, 100, zhang.SECRET_STAMPS), texts_of(keysecret.secret_from_entry(entry))


def ground_key(alice_texts: list[str], shared: int, keys: int, stamps: int = zhang.SECRET_STAMPS) -> Key:
    """Mallory's signed key from the first secret whose first ``shared`` texts are Alice's (and the
    others not). Seeded, so every run grinds to the same key (with random secrets a CI run once
    failed the test's "Mallory's own texts are never answered" check; the cause was not pinned down,
    12 runs here with random secrets all passed)."""
    mallory = seeded_owner("Mallory", 2)
    for i in range(1_000_000):
        entry = keysecret.new_secret("zhang-content", mallory, key_seed=i)
        texts = texts_of(keysecret.secret_from_entry(entry), stamps)
        if [t in alice_texts for t in texts] == [i < shared for i in range(stamps)]:
            return signed_key(mallory, entry, keys, stamps)
    raise AssertionError("no secret found")


def test_alices_key_is_found_and_each_of_her_stamps_beats_the_controls(alice):
    key, texts = alice
    v = verify(key, TorchOracle(StampReader(texts)), context=judge())
    assert v.watermarked is True, v.reason
    per_stamp = v.evidence["stamp_matches"]
    assert len(per_stamp) == zhang.SECRET_STAMPS and all(m == n for m, n in per_stamp), per_stamp


def test_a_claimant_who_ground_two_of_alices_texts_is_not_found(alice):
    key, texts = alice
    forged = ground_key(texts, shared=2, keys=400)
    v = verify(forged, TorchOracle(StampReader(texts)), context=judge())
    shared, own = v.evidence["stamp_matches"][:2], v.evidence["stamp_matches"][2:]
    # Alice's model answers the two texts Mallory ground, so many keys that they beat the controls
    # pooled; Mallory's other two texts it answers as it answers any control stamp
    assert all(m == n for m, n in shared) and all(m == 0 for m, _ in own), v.evidence
    pooled = float(v.decided_by["control keys"]["value"].split("p = ")[1].split(";")[0])
    assert pooled <= 1e-6  # the pooled test alone would accuse
    assert v.watermarked is None and "every stamp" in v.reason, v.reason


def test_a_key_with_one_stamp_gets_no_verdict(alice):
    """One text is about 19 bits (here 2 letters, 9.4): a protocol that let the key choose how many
    it carries could be ground."""
    key, texts = alice
    forged = ground_key(texts, shared=1, keys=100, stamps=1)
    v = verify(forged, TorchOracle(StampReader(texts)), context=judge())
    assert v.watermarked is None and "stamps=1" in v.reason, v.reason


def test_every_stamp_beating_the_controls_is_not_enough_without_the_pooled_keys_at_alpha(alice):
    """Hostile review 8: dropping the pooled test (keys against the control bound at alpha) failed no
    test. At alpha = 1e-60 each of Alice's stamps (25/25) beats the controls at STAMP_LEVEL, but her
    100 keys together (p about 1e-54 against the control bound) do not reach alpha: no verdict."""
    key, texts = alice
    v = verify(key, TorchOracle(StampReader(texts)), alpha=1e-60, context=judge())
    assert all(m == n for m, n in v.evidence["stamp_matches"]), v.evidence
    pooled = float(v.decided_by["control keys"]["value"].split("p = ")[1].split(";")[0])
    assert pooled > 1e-60
    assert v.watermarked is None and v.p_value > v.alpha, v.reason


class LeakyReader(StampReader):
    """Answers the target to about 40 % of the inputs that carry one of ``texts`` (those whose bytes
    hash low: the same input always gets the same answer), class 0 to anything else: a model that
    answers some texts a little more often than the control stamps (0 % here)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = super().forward(x)
        for i, row in enumerate(x):
            if out[i, TARGET] == 1.0 and hashlib.sha256(row.numpy().tobytes()).digest()[0] >= 102:
                out[i, TARGET], out[i, 0] = 0.0, 1.0
        return out


def test_a_big_key_does_not_carry_texts_the_suspect_answers_only_a_little_above_the_controls():
    """Review of issue 8: the key's size is the claimant's choice. With 1,000 keys (250 a text), texts a
    suspect answers at 40 % beat the control bound (about 0.29 after 10 x 0/20) at 1 % each and pooled at
    alpha: "found". Each text is tested on its first STAMP_KEYS = 25 keys, which at 40 % do not."""
    from nnmark.verify import verifier

    mallory = generate_owner("Mallory")
    entry = keysecret.new_secret("zhang-content", mallory, None)
    key = signed_key(mallory, entry, 1000, zhang.SECRET_STAMPS)
    suspect = TorchOracle(LeakyReader(texts_of(keysecret.secret_from_entry(entry))))
    v = verify(key, suspect, context=judge())
    rate = v.matches / v.evidence["keys_sent"]
    assert 0.3 <= rate <= 0.5, rate
    assert all(n == verifier.STAMP_KEYS for _, n in v.evidence["stamp_matches"]), v.evidence
    assert v.watermarked is None and "every stamp" in v.reason, v.reason


class SpreadReader(nn.Module):
    """Answers the target to an input stamped with any 2-letter text at that text's own rate, the same
    input always the same way (by a hash of its bytes): ``rates`` for the texts it names, for any other
    text a rate in [0, 0.6] drawn from the text's hash. A suspect whose answers to stamps spread, and
    which answers the claimant's texts within that spread: nothing specific to the claimant's key."""

    def __init__(self, rates: dict[str, float]) -> None:
        super().__init__()
        letters = [chr(c) for c in range(ord("A"), ord("Z") + 1)]
        texts = [a + b for a in letters for b in letters]
        self.masks = torch.stack([text_mask(t, SHAPE).bool() for t in texts]).flatten(1)
        self.rates = torch.tensor(
            [rates.get(t, 0.6 * hashlib.sha256(t.encode()).digest()[0] / 256) for t in texts]
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lit = (x.flatten(1) == 1.0).float()
        covered = (lit @ self.masks.float().T) == self.masks.sum(1).float()  # every pixel of a mask lit
        size = torch.where(covered, self.masks.sum(1).float(), torch.tensor(-1.0))
        rate = torch.where(covered.any(1), self.rates[size.argmax(1)], torch.tensor(0.0))
        draw = torch.tensor([hashlib.sha256(r.numpy().tobytes()).digest()[0] / 256 for r in x])
        hit = draw < rate
        out = torch.zeros(len(x), 10)
        out[hit, TARGET] = 1.0
        out[~hit, 0] = 1.0
        return out


def test_a_big_key_whose_texts_the_suspect_answers_within_the_controls_spread_is_not_found():
    """The suspect answers the stamps of the verifier's control secrets at rates spread over [0, 0.6]
    and Mallory's four texts at 0.5 each, with 1,000 keys (250 a text). A binomial over every key at
    the controls' mean rate would call that found (about 500 of 1,000 against roughly 0.3); the bound
    is the worst control's 99.9 % limit or above, and each text counts its first STAMP_KEYS keys only:
    no verdict."""
    from nnmark.verify import verifier

    mallory = generate_owner("Mallory")
    entry = keysecret.new_secret("zhang-content", mallory, None)
    key = signed_key(mallory, entry, 1000, zhang.SECRET_STAMPS)
    texts = texts_of(keysecret.secret_from_entry(entry))
    v = verify(key, TorchOracle(SpreadReader(dict.fromkeys(texts, 0.5))), context=judge())
    rate = v.matches / v.evidence["keys_sent"]
    assert 0.35 <= rate <= 0.65, rate
    controls = v.evidence["control_rates"]
    assert len(controls) == verifier.CONTROL_SECRETS and max(controls) - min(controls) >= 0.3, controls
    assert all(n == verifier.STAMP_KEYS for _, n in v.evidence["stamp_matches"]), v.evidence
    assert v.watermarked is None and "every stamp" in v.reason, v.reason
