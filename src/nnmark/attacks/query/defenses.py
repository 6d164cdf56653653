"""Query defenses: oracle -> oracle wrappers a prediction service puts in front of its model, by
name (``nnmark serve --defense NAME``, ``distill --set defense=NAME``).

A thief's service uses them to evade verification (Namba 2019's query modification, query
rejection as Zhong 2020 Sec. 5 discusses it, input preprocessing); the same wrappers let an owner
measure what each does to a watermark. Each is one file under ``nnmark/attacks/query/`` that
registers a factory with :func:`register_defense`::

    factory(inner: Oracle, images: Tensor, *, seed: int, **settings) -> Oracle

``images`` are the service's own clean images (uint8 or float [0, 1], N×C×H×W: the attacker's
share, never the owner's training images), which detectors learn ordinary queries from; wrappers
that need none ignore them. ``settings`` are the wrapper's parameters (``--set k=v``), validated
by its pydantic ``Params``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import Tensor

from nnmark.data.base import ImageDataset
from nnmark.errors import NnmarkError
from nnmark.oracle import Oracle
from nnmark.registry import Registry

DefenseFactory = Callable[..., Oracle]

DEFENSES: Registry[DefenseFactory] = Registry("defense")

#: the wrapper classes, for ``nnmark list attacks`` (each has ``describe()`` and ``parameter_table()``)
QUERY_ATTACKS: Registry[Any] = Registry("query attack")


def register_defense(name: str) -> Callable[[DefenseFactory], DefenseFactory]:
    """Decorator: register an oracle-wrapper factory under ``name``."""
    return DEFENSES.register(name)


def defenses() -> list[str]:
    """Every defense name, ``none`` first."""
    return ["none", *DEFENSES.names()]


def wrap_oracle(
    name: str, inner: Oracle, images: Tensor | ImageDataset | None = None, *, seed: int = 0, **settings: Any
) -> Oracle:
    """``inner`` behind defense ``name`` (``none``: ``inner`` itself), fitted on ``images`` (an
    :class:`ImageDataset` gives its training split: the service's own images)."""
    if name == "none":
        if settings:
            raise NnmarkError(f"defense none takes no settings, got {', '.join(settings)}")
        return inner
    factory = DEFENSES.get(name)
    x = images.train_x if isinstance(images, ImageDataset) else images
    return factory(inner, x, seed=seed, **settings)
