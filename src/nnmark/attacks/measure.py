"""Measurements attacks share: a key's watermark accuracy on a model, by the key's own scheme."""

from __future__ import annotations

import torch

from nnmark.errors import NnmarkError
from nnmark.oracle import Oracle, TorchOracle
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


class OracleModule(torch.nn.Module):
    """An oracle seen as a module: ``forward`` returns the oracle's scores, so a scheme's own
    measure (written for a model) runs through whatever stands in front of the model."""

    def __init__(self, oracle: Oracle) -> None:
        super().__init__()
        self.oracle = oracle

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.oracle.scores(x)


def oracle_key_accuracy(oracle: Oracle, key: Key) -> float:
    """:func:`key_accuracy` of the model behind ``oracle`` as the oracle answers (a query defense,
    a served model): the scheme's own measure, every query sent through the oracle."""
    return key_accuracy(OracleModule(oracle), key)
