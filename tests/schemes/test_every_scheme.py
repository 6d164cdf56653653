"""Checks every registered scheme and attack gets the moment it is registered (timm style)."""

from __future__ import annotations

import pytest
import torch

from nnmark.attacks import ATTACKS
from nnmark.errors import NnmarkError
from nnmark.identity import generate_owner
from nnmark.keyfile import load_key, save_key
from nnmark.schemes import SCHEMES
from nnmark.types import ModelSpec
from nnmark.workflow import build_key

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


@pytest.mark.parametrize("name", SCHEME_NAMES)
def test_keys_generate_deterministically_and_round_trip(name, small_mnist, tmp_path):
    cls = SCHEMES.get(name)
    owner = generate_owner("Test Owner") if cls.signature_bound else None
    settings = {"target": 0} if cls.shared_target else {}

    def material():
        scheme = cls(owner=owner, **settings)
        m = scheme.generate(small_mnist, torch.Generator().manual_seed(5))
        return scheme, scheme.assign_labels(m, small_mnist.num_classes, [])

    scheme, first = material()
    _, second = material()
    assert first.labels is not None and len(first.inputs) == len(first.labels) > 0
    assert first.inputs.shape[1:] == small_mnist.train_x.shape[1:]
    if not cls.signature_bound:  # null-embedding keys carry ±λ on purpose
        assert float(first.inputs.min()) >= 0 and float(first.inputs.max()) <= 1
    if not cls.signature_bound:  # an Ed25519 signature is randomised per owner key
        assert torch.equal(first.inputs, second.inputs) and torch.equal(first.labels, second.labels)
    spec = ModelSpec(
        "digit-cnn", small_mnist.num_classes + cls.extra_classes, small_mnist.input_shape, (0.13,), (0.31,)
    )
    key = build_key(scheme, first, spec, None)
    save_key(tmp_path / "watermark.key", key, owner)
    back = load_key(tmp_path / "watermark.key")
    assert back.scheme == name and torch.equal(back.labels, key.labels)
    assert back.signed == (owner is not None)


@pytest.mark.parametrize("name", ATTACKS.names())
def test_every_attack_refuses_unknown_parameters_and_is_documented(name):
    cls = ATTACKS.get(name)
    assert cls.describe()
    with pytest.raises(NnmarkError, match="no_such_parameter"):
        cls(no_such_parameter=1)
