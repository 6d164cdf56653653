"""Rows for ``nnmark list``: name, one-line summary, and (parameter, default, description)."""

from __future__ import annotations

import inspect


def listing(what: str) -> list[tuple[str, str, list[tuple[str, str, str]]]]:
    if what == "schemes":
        from nnmark.schemes import SCHEMES

        return [(n, SCHEMES.get(n).describe(), SCHEMES.get(n).parameter_table()) for n in SCHEMES.names()]
    if what == "attacks":
        from nnmark.attacks import ATTACKS
        from nnmark.attacks.query import QUERY_ATTACKS

        removal = [(n, ATTACKS.get(n).describe(), ATTACKS.get(n).parameter_table()) for n in ATTACKS.names()]
        query = [
            (n, QUERY_ATTACKS.get(n).describe(), QUERY_ATTACKS.get(n).parameter_table())
            for n in QUERY_ATTACKS.names()
        ]
        return removal + query
    if what == "models":
        from nnmark.models import MODELS, describe_model, model_parameters

        return [
            (n, describe_model(n), [(p, repr(d), "") for p, d in model_parameters(n).items()])
            for n in MODELS.names()
        ]
    from nnmark.data import DATASETS, describe_dataset

    rows = []
    for n in DATASETS.names():
        params = [
            (p.name, repr(p.default), "")
            for p in list(inspect.signature(DATASETS.get(n)).parameters.values())[1:]
            if p.default is not inspect.Parameter.empty
        ]
        rows.append((n, describe_dataset(n), params))
    return rows
