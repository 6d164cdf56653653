"""The named choices the library offers and the command line lists, one registry each.

The CLI builds its options' choices (``--test``, ``--protocol``, ``--defense``, ``--output``,
``--input-type``, ``--input-layout``, ``--input-scale``, ``--backend``, ``--scale``, ``nnmark list
WHAT``, ``nnmark reproduce PAPER``) from these registries (:func:`registry_enum`) when it parses or
prints help, so a new test, protocol, backend or paper is registered here, beside its
implementation's name, and needs no CLI edit.
This module imports neither torch nor any extra, so the choices are known on a core install
(``--protocol`` and ``--defense`` then still parse, and the command says which extra it needs).

Each entry maps a name to its one-line description (``INPUT_TYPES``: to what ``HttpOracle``'s
``carry_floats`` takes). The implementations check the names they receive themselves; the tests
(``tests/test_cli_registry.py``) keep these registries equal to what the implementations accept.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from nnmark.registry import Registry
from nnmark.wire import PROTOCOLS as PROTOCOLS  # the wire protocols' own registry (numpy, pydantic)
from nnmark.wire.base import DTYPES, LAYOUTS, OUTPUTS, SCALES

TESTS: Registry[str] = Registry("test")
"""Statistical tests a verifier may ask for (each scheme supports some: ``Scheme.tests``)."""


DEFENSES: Registry[str] = Registry("defense")
"""Query defenses ``nnmark serve`` can put in front of a model: the names of
:func:`nnmark.attacks.defenses.defenses`, read without importing torch (:func:`registered_defenses`)."""

SERVE_OUTPUTS: Registry[str] = Registry("output")
"""What ``nnmark serve``'s predictions carry."""

INPUT_TYPES: Registry[bool | None] = Registry("input type")
"""What a remote suspect takes: float values (True), uint8 pixels (False), ask the server (None)."""

LISTINGS: Registry[str] = Registry("listing")
"""What ``nnmark list`` lists (see :func:`nnmark.listing.listing`)."""

INPUT_LAYOUTS: Registry[str] = Registry("input layout")
"""Image layouts on the wire (:data:`nnmark.wire.base.LAYOUTS`): ``verify --url`` and ``serve``."""

INPUT_SCALES: Registry[str] = Registry("input scale")
"""Ranges of float pixel values on the wire (:data:`nnmark.wire.base.SCALES`)."""

INPUT_DTYPES: Registry[str] = Registry("input dtype")
"""Number types ``nnmark serve``'s TF-Serving and KServe endpoints take (:data:`nnmark.wire.base.DTYPES`)."""

GRID_BACKENDS: Registry[str | None] = Registry("backend")
"""Where grid cells run (:mod:`nnmark.experiments.runner`), each with the extra it needs (or None)."""

PAPERS: Registry[str] = Registry("paper")
"""Papers ``nnmark reproduce`` reproduces (:func:`nnmark.experiments.reproduce.reproductions`)."""

REPRODUCTION_SCALES: Registry[str] = Registry("scale")
"""Sizes of a reproduction (:data:`nnmark.experiments.reproduce.base.SCALES`)."""

for _name, _doc in (
    ("binomial", "exact one-sided binomial test of key matches against p0"),
    ("first-hit", "Zhong 2020: queries until the first key match"),
    ("threshold", "Zhang 2018: a fixed share of 40 keys must match, and the binomial test"),
    ("sprt", "Wald's sequential test for an early 'found', else the binomial test"),
    ("namba-auc", "the binomial test, with Namba 2019's AUC over |K'| = 5, 10, 20 (30 draws) beside it"),
):
    TESTS.register(_name)(_doc)


def registered_defenses() -> list[tuple[str, str]]:
    """(name, first docstring line) of every ``@register_defense("name")`` factory in a module under
    ``nnmark/attacks/`` (the registry :func:`nnmark.attacks.defenses.defenses` fills on import),
    read from the source without importing it: those modules import torch, which the command
    line's ``--help`` must not. ``none`` comes first. ``tests/test_cli_registry.py`` checks that
    this equals the imported registry, so a new defense file is offered with no other edit."""
    import ast
    from pathlib import Path

    found = [("none", "answer every query")]
    for path in sorted((Path(__file__).parent / "attacks").rglob("*.py")):
        text = path.read_text(encoding="utf-8")
        if "register_defense(" not in text:
            continue
        for node in ast.walk(ast.parse(text)):
            if not isinstance(node, ast.FunctionDef):
                continue
            for deco in node.decorator_list:
                if (
                    isinstance(deco, ast.Call)
                    and isinstance(deco.func, ast.Name)
                    and deco.func.id == "register_defense"
                    and deco.args
                    and isinstance(deco.args[0], ast.Constant)
                    and isinstance(deco.args[0].value, str)
                ):
                    doc = (ast.get_docstring(node) or deco.args[0].value).strip().splitlines()[0]
                    found.append((deco.args[0].value, doc))
    return found


for _name, _doc in registered_defenses():
    DEFENSES.register(_name)(_doc)

_OUTPUT_DOCS = {
    "logits": "all logits",
    "probabilities": "softmax probabilities",
    "labels": "class indices only",
}
for _name in OUTPUTS:
    SERVE_OUTPUTS.register(_name)(_OUTPUT_DOCS.get(_name, _name))

for _name, _carry in (("auto", None), ("float", True), ("uint8", False)):
    INPUT_TYPES.register(_name)(_carry)

for _name, _doc in (
    ("schemes", "watermarking schemes"),
    ("attacks", "attacks on watermarks"),
    ("models", "architectures"),
    ("datasets", "datasets"),
):
    LISTINGS.register(_name)(_doc)

# the wire's own constants name the choices; the descriptions are for ``--help``
for _registry, _names, _docs in (
    (INPUT_LAYOUTS, LAYOUTS, {"nchw": "N×C×H×W (PyTorch, ONNX)", "nhwc": "N×H×W×C (TensorFlow)"}),
    (INPUT_SCALES, SCALES, {"0-1": "floats in [0, 1]", "0-255": "floats in [0, 255] (pixel values)"}),
    (INPUT_DTYPES, DTYPES, {"float32": "float values", "uint8": "integer pixels 0-255"}),
):
    for _name in _names:
        _registry.register(_name)(_docs.get(_name, _name))

for _name, _extra in (("local", None), ("ray", "ray")):
    GRID_BACKENDS.register(_name)(_extra)

for _name, _doc in (
    ("zhang2018", "Zhang et al. 2018, Protecting IP of deep neural networks with watermarking"),
    ("zhong2020", "Zhong et al. 2020, Protecting IP of deep neural networks with a new label"),
    ("li2019", "Li et al. 2019, Piracy resistant watermarks (null embedding)"),
    ("namba2019", "Namba & Sakuma 2019, Robust watermarking by exponential weighting"),
):
    PAPERS.register(_name)(_doc)

for _name, _doc in (
    ("tiny", "the test suite: seconds per paper"),
    ("quick", "2 CPU cores, minutes"),
    ("cpu", "the largest CPU run"),
    ("full", "a GPU: the papers' repeats"),
):
    REPRODUCTION_SCALES.register(_name)(_doc)


def registry_enum(name: str, registry: Registry[Any], *, auto: bool = False) -> type[StrEnum]:
    """The command line's choices of an option: one ``StrEnum`` member per name registered in
    ``registry`` (``auto`` first when the option may leave the choice to the library)."""
    names = (["auto"] if auto else []) + registry.names()
    return StrEnum(name, [(n, n) for n in names])  # type: ignore[return-value]
