"""Watermarking schemes, one file each, registered by name (``nnmark list schemes``)."""

from __future__ import annotations

from typing import Any

from nnmark.schemes import (  # noqa: F401  (registers the schemes)
    adi,
    afs,
    deepsigns,
    label_change,
    null_embedding,
    zhang,
    zhong,
)
from nnmark.schemes.base import (
    SCHEMES,
    KeyBatchMixer,
    KeyMaterial,
    Scheme,
    SchemeParams,
    register_scheme,
)


def create_scheme(name: str, **params: Any) -> Scheme:
    """Build a scheme by name with validated parameters (unknown names are refused)."""
    return SCHEMES.get(name)(**params)


__all__ = [
    "SCHEMES",
    "KeyBatchMixer",
    "KeyMaterial",
    "Scheme",
    "SchemeParams",
    "create_scheme",
    "register_scheme",
]
