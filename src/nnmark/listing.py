"""Rows for ``nnmark list``: name, one-line summary, and (parameter, default, description)."""

from __future__ import annotations

import inspect
from typing import Any

Row = tuple[str, str, list[tuple[str, str, str]]]


def _described(registry: Any) -> list[Row]:
    """Rows of a registry whose entries describe themselves (schemes, attacks, query attacks)."""
    return [(n, registry.get(n).describe(), registry.get(n).parameter_table()) for n in registry.names()]


def listing(what: str) -> list[Row]:
    if what == "schemes":
        from nnmark.schemes import SCHEMES

        return _described(SCHEMES)
    if what == "attacks":
        from nnmark.attacks import ATTACKS
        from nnmark.attacks.query import QUERY_ATTACKS

        return _described(ATTACKS) + _described(QUERY_ATTACKS)
    if what == "models":
        from nnmark.models import MODELS, describe_model, model_parameters

        return [
            (n, describe_model(n), [(p, repr(d), "") for p, d in model_parameters(n).items()])
            for n in MODELS.names()
        ]
    from nnmark.data import DATASETS, describe_dataset

    rows: list[Row] = []
    for n in DATASETS.names():
        params = [
            (p.name, repr(p.default), "")
            for p in list(inspect.signature(DATASETS.get(n)).parameters.values())[1:]
            if p.default is not inspect.Parameter.empty
        ]
        rows.append((n, describe_dataset(n), params))
    return rows
