"""Measurements attacks share: a key's watermark accuracy on a model, by the key's own scheme."""

from __future__ import annotations

import torch

from nnmark.errors import NnmarkError
from nnmark.oracle import TorchOracle
from nnmark.types import Key


def key_accuracy(model: torch.nn.Module, key: Key) -> float:
    """The watermark accuracy the key's scheme reports (``metrics.json``'s ``watermark_accuracy``:
    the share of key inputs answered with their key label; min(φ_null, φ_true) for null embedding),
    or the plain key-label match rate when the scheme is unknown here."""
    from nnmark.schemes import SCHEMES

    if key.scheme in SCHEMES:
        try:
            return float(SCHEMES.get(key.scheme)().watermark_accuracy(model.cpu().eval(), key))
        except (NnmarkError, TypeError, ValueError, KeyError):  # a scheme that needs more than the key
            pass
    return float((TorchOracle(model.cpu()).labels(key.inputs) == key.labels).float().mean())
