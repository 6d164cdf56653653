"""Checks every registered scheme and attack gets the moment it is registered (timm style)."""

from __future__ import annotations

import hashlib
import json

import pytest
import torch

from nnmark import keysecret
from nnmark.attacks import ATTACKS
from nnmark.errors import KeyTamperedError, NnmarkError
from nnmark.identity import generate_owner
from nnmark.keyfile import load_key, save_key
from nnmark.oracle import Oracle
from nnmark.schemes import SCHEMES
from nnmark.types import ModelSpec
from nnmark.verify.context import VerifyContext
from nnmark.verify.verifier import check_integrity, protocol_mismatch, verify
from nnmark.workflow import build_key, prepare_secret

SCHEME_NAMES = SCHEMES.names()


def test_the_papers_schemes_are_registered():
    expected = {
        "zhang-content",
        "zhang-unrelated",
        "zhang-noise",
        "zhong-new-label",
        "label-change",
        "li-null-embedding",
        "afs",
        "deepsigns-bb",
        "adi",
    }
    assert expected <= set(SCHEME_NAMES)


@pytest.mark.parametrize("name", SCHEME_NAMES)
def test_unknown_parameter_is_refused(name):
    with pytest.raises(NnmarkError, match="no_such_parameter"):
        SCHEMES.get(name)(no_such_parameter=1)


@pytest.mark.parametrize("name", SCHEME_NAMES)
def test_documented(name):
    cls = SCHEMES.get(name)
    assert cls.describe() and cls.__module__.startswith("nnmark.schemes.")
    assert (cls.__doc__ or "") and (__import__(cls.__module__, fromlist=["x"]).__doc__ or "")
    for pname, _default, desc in cls.parameter_table():
        assert desc, f"{name}.{pname} has no description for `nnmark list schemes --verbose`"


def _material(cls, data, owner, key_seed):
    """A scheme's labelled key material from a fresh secret (``key_seed`` None: the OS's CSPRNG)."""
    scheme = cls(owner=owner, **({"target": 0} if cls.shared_target else {}))
    secret, gen = prepare_secret(scheme, owner, key_seed)
    m = scheme.generate(data, gen)
    return scheme, secret, scheme.assign_labels(m, data.num_classes, [])


def _fingerprint(m) -> str:
    """Everything in key material: inputs, labels, extra tensors and parameters."""
    h = hashlib.sha256()
    for t in (m.inputs, m.labels, *(m.tensors[k] for k in sorted(m.tensors))):
        h.update(keysecret.tensor_bytes(t))
    h.update(json.dumps(m.params, sort_keys=True, default=str).encode())
    return h.hexdigest()


@pytest.mark.parametrize("name", SCHEME_NAMES)
def test_keys_come_from_the_secret_and_round_trip(name, small_mnist, tmp_path):
    cls = SCHEMES.get(name)
    owner = generate_owner("Test Owner") if cls.signature_bound else None
    # two owners who keep every default get different keys: the secret is the OS's, not --seed's
    scheme, secret, first = _material(cls, small_mnist, owner, None)
    _, _, second = _material(cls, small_mnist, owner, None)
    assert first.labels is not None and len(first.inputs) == len(first.labels) > 0
    assert first.inputs.shape[1:] == small_mnist.train_x.shape[1:]
    assert _fingerprint(first) != _fingerprint(second)
    if not cls.signature_bound:  # null-embedding keys carry ±λ on purpose
        assert float(first.inputs.min()) >= 0 and float(first.inputs.max()) <= 1
    # a research key seed reproduces the key exactly (and marks it guessable)
    _, seeded_a, a = _material(cls, small_mnist, owner, 5)
    _, _, b = _material(cls, small_mnist, owner, 5)
    assert seeded_a["guessable"] and not secret["guessable"]
    if not cls.signature_bound:  # Li 2019's signed message carries the time of signing
        assert _fingerprint(a) == _fingerprint(b)
    spec = ModelSpec(
        "digit-cnn",
        small_mnist.num_classes + cls.extra_classes,
        small_mnist.input_shape,
        (0.13,),
        (0.31,),
        small_mnist.name,
    )
    key = build_key(scheme, first, spec, None, secret, small_mnist)
    assert key.params["protocol"] == cls.protocol_version and key.params["dataset"] == small_mnist.name
    save_key(tmp_path / "watermark.key", key, owner)
    back = load_key(tmp_path / "watermark.key")
    assert back.scheme == name and torch.equal(back.labels, key.labels)
    assert back.signed == (owner is not None)
    # the verifier recovers the same secret, and a key at the protocol's defaults is judged by it
    check_integrity(back)
    assert keysecret.key_secret(back) == scheme.secret
    assert (
        protocol_mismatch(cls(**{k: v for k, v in back.params.items() if k in cls.Params.model_fields}), back)
        == ""
    )
    if cls.derived_labels is not None:
        ctx = VerifyContext()
        assert torch.equal(scheme.verification_keys(back, ctx).labels, back.labels)


@pytest.mark.parametrize("name", SCHEME_NAMES)
def test_no_scheme_finds_its_watermark_in_a_model_that_answers_at_random(name, small_mnist, tmp_path):
    """Whatever the scheme, a suspect answering at random is never "found"; every verdict names its
    deciding numbers with their sources and states its guarantee; a key-seed key says it is guessable."""
    cls = SCHEMES.get(name)
    owner = generate_owner("Test Owner")
    scheme, secret, material = _material(cls, small_mnist, owner, 11)
    spec = ModelSpec(
        "digit-cnn",
        small_mnist.num_classes + cls.extra_classes,
        small_mnist.input_shape,
        (0.13,),
        (0.31,),
        small_mnist.name,
    )
    save_key(tmp_path / "watermark.key", build_key(scheme, material, spec, None, secret), owner)
    key = load_key(tmp_path / "watermark.key")
    verdict = verify(key, RandomOracle(spec.num_classes), context=VerifyContext(probe_data=small_mnist))
    assert verdict.watermarked is not True, verdict.reason
    assert {"alpha", "protocol", "key secret"} <= set(verdict.decided_by)
    assert all(
        v["source"] in {"protocol", "verifier", "claimant", "suspect"} for v in verdict.decided_by.values()
    )
    assert verdict.guarantee and "alpha" in verdict.guarantee
    assert any("guessable" in n for n in verdict.notes)
    assert "guessable" in verdict.decided_by["key secret"]["value"]


@pytest.mark.parametrize("name", [n for n in SCHEME_NAMES if SCHEMES.get(n).signature_bound])
def test_a_signature_bound_scheme_refuses_an_unsigned_key(name, small_mnist):
    cls = SCHEMES.get(name)
    scheme, secret, material = _material(cls, small_mnist, generate_owner("Test Owner"), None)
    spec = ModelSpec(
        "digit-cnn", small_mnist.num_classes + cls.extra_classes, small_mnist.input_shape, (0.13,), (0.31,)
    )
    unsigned = build_key(scheme, material, spec, None, {**secret, "signature": None})
    with pytest.raises(KeyTamperedError, match="unsigned"):
        verify(unsigned, RandomOracle(spec.num_classes), context=VerifyContext(probe_data=small_mnist))


class RandomOracle(Oracle):
    """A suspect that answers every query with a uniformly random class."""

    def __init__(self, classes: int) -> None:
        super().__init__()
        self.classes = classes

    def _predict(self, x: torch.Tensor) -> torch.Tensor:
        return torch.rand(len(x), self.classes)


@pytest.mark.parametrize("name", ATTACKS.names())
def test_every_attack_refuses_unknown_parameters_and_is_documented(name):
    cls = ATTACKS.get(name)
    assert cls.describe()
    with pytest.raises(NnmarkError, match="no_such_parameter"):
        cls(no_such_parameter=1)
