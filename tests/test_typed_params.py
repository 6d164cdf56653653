"""Schemes and attacks are generic over their parameter model (``Scheme[AdiParams]``): the model
named there is the one ``--set k=v`` is validated against and ``nnmark list --verbose`` shows, so
``self.params`` has that type without ``isinstance`` asserts."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from nnmark.attacks import ATTACKS
from nnmark.attacks.base import AttackParams, RemovalAttack
from nnmark.attacks.query import QUERY_ATTACKS
from nnmark.data.base import ImageDataset
from nnmark.errors import NnmarkError
from nnmark.registry import TypedParams, declared_params
from nnmark.schemes import SCHEMES
from nnmark.schemes.adi import AdiParams
from nnmark.schemes.base import KeyMaterial, Scheme, SchemeParams

COMPONENTS = [("scheme", n, SCHEMES.get(n)) for n in SCHEMES.names()] + [
    ("attack", n, ATTACKS.get(n)) for n in ATTACKS.names()
]


@pytest.mark.parametrize(("kind", "name", "cls"), COMPONENTS, ids=[f"{k}-{n}" for k, n, _ in COMPONENTS])
def test_every_scheme_and_attack_is_typed_over_its_params(kind: str, name: str, cls: Any) -> None:
    declared = declared_params(cls)
    base = SchemeParams if kind == "scheme" else AttackParams
    assert declared is not None and issubclass(declared, base), f"{name}: declare it as Base[XParams]"
    assert cls.Params is declared
    # what a user sets is validated against that model, and listed with its defaults
    instance = cls()
    assert type(instance.params) is declared
    assert [row[0] for row in cls.parameter_table()] == list(declared.model_fields)
    field = next(iter(declared.model_fields))
    kept = cls(**{field: getattr(instance.params, field)})
    assert getattr(kept.params, field) == getattr(instance.params, field)
    with pytest.raises(NnmarkError, match=f"bad parameter for {kind} {name}: no_such_setting"):
        cls(no_such_setting=1)


def test_query_attacks_with_parameters_are_typed_too() -> None:
    typed = [QUERY_ATTACKS.get(n) for n in QUERY_ATTACKS.names()]
    typed = [c for c in typed if issubclass(c, TypedParams)]
    assert len(typed) >= 3  # jpeg, blur, noise
    for cls in typed:
        assert declared_params(cls) is cls.Params and cls.Params.__name__ != "PreprocessParams", cls


class _OtherParams(SchemeParams):
    other: int = 1


def test_params_that_contradict_the_declared_model_are_refused_when_the_class_is_made() -> None:
    with pytest.raises(TypeError, match="declared over AdiParams"):

        class Contradicting(Scheme[AdiParams]):
            Params = _OtherParams

    class Stated(Scheme[AdiParams]):
        """A scheme stating its parameters once, in its base."""

        name = "stated"

        def generate(self, data: ImageDataset, gen: torch.Generator) -> KeyMaterial:
            raise NotImplementedError

    class Narrower(Stated):  # a subclass keeps (or narrows) the model it inherits
        pass

    assert Stated.Params is AdiParams and Narrower.Params is AdiParams
    assert Stated(keys=7).params.keys == 7

    class Untyped(RemovalAttack):  # no model named: the base's (no parameters)
        name = "untyped"

        def run(self, *args: Any) -> Any:
            raise NotImplementedError

    assert Untyped.Params is AttackParams and Untyped().params == AttackParams()
