"""The named choices the library offers and the command line lists, one registry each.

The CLI builds its options' choices (``--test``, ``--protocol``, ``--defense``, ``--output``,
``--input-type``, ``nnmark list WHAT``) from these registries when it parses or prints help, so a
new test or protocol is registered here, beside its implementation's name, and needs no CLI edit.
This module imports neither torch nor any extra, so the choices are known on a core install
(``--protocol`` and ``--defense`` then still parse, and the command says which extra it needs).

Each entry maps a name to its one-line description (``INPUT_TYPES``: to what ``HttpOracle``'s
``carry_floats`` takes). The implementations check the names they receive themselves; the tests
(``tests/test_cli_registry.py``) keep these registries equal to what the implementations accept.
"""

from __future__ import annotations

from nnmark.registry import Registry
from nnmark.wire import PROTOCOLS as PROTOCOLS  # the wire protocols' own registry (numpy, pydantic)

TESTS: Registry[str] = Registry("test")
"""Statistical tests a verifier may ask for (each scheme supports some: ``Scheme.tests``)."""


DEFENSES: Registry[str] = Registry("defense")
"""Query defenses ``nnmark serve`` can put in front of a model."""

SERVE_OUTPUTS: Registry[str] = Registry("output")
"""What ``nnmark serve``'s predictions carry."""

INPUT_TYPES: Registry[bool | None] = Registry("input type")
"""What a remote suspect takes: float values (True), uint8 pixels (False), ask the server (None)."""

LISTINGS: Registry[str] = Registry("listing")
"""What ``nnmark list`` lists (see :func:`nnmark.listing.listing`)."""

for _name, _doc in (
    ("binomial", "exact one-sided binomial test of key matches against p0"),
    ("first-hit", "Zhong 2020: queries until the first key match"),
    ("threshold", "Zhang 2018: a fixed share of 40 keys must match, and the binomial test"),
    ("sprt", "Wald's sequential test for an early 'found', else the binomial test"),
):
    TESTS.register(_name)(_doc)


for _name, _doc in (
    ("none", "answer every query"),
    ("reject", "inputs far from the training images get a wrong label"),
    ("autoencoder", "inputs an autoencoder flags as keys get f(AE(x)) (Namba 2019)"),
):
    DEFENSES.register(_name)(_doc)

for _name, _doc in (
    ("logits", "all logits"),
    ("probabilities", "softmax probabilities"),
    ("labels", "class indices only"),
):
    SERVE_OUTPUTS.register(_name)(_doc)

for _name, _carry in (("auto", None), ("float", True), ("uint8", False)):
    INPUT_TYPES.register(_name)(_carry)

for _name, _doc in (
    ("schemes", "watermarking schemes"),
    ("attacks", "attacks on watermarks"),
    ("models", "architectures"),
    ("datasets", "datasets"),
):
    LISTINGS.register(_name)(_doc)
