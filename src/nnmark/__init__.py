"""nnmark: prove ownership of neural networks by watermarking.

Python API (see DESIGN.md): ``load_model``, ``save_model``, ``load_key``, ``verify`` (with a
``VerifyContext`` for the verifier's own choices: ``judge``, reference models, trusted calibrations,
probe data) and the oracles ``TorchOracle``, ``OnnxOracle``, ``HttpOracle``.

``HttpOracle`` needs the ``serve`` extra and ``OnnxOracle`` the ``onnx`` extra
(``pip install 'nnmark[serve,onnx]'``); both are imported only when first used, and a missing
extra raises :class:`nnmark.extras.MissingExtraError` (an ``ImportError``) naming it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_LAZY = {
    "load_model": ("nnmark.workflow", "load_model"),
    "save_model": ("nnmark.workflow", "save_model"),
    "load_key": ("nnmark.keyfile", "load_key"),
    "TorchOracle": ("nnmark.oracle", "TorchOracle"),
    "OnnxOracle": ("nnmark.oracle", "OnnxOracle"),
    "HttpOracle": ("nnmark.http_oracle", "HttpOracle"),
    "VerifyContext": ("nnmark.verify.context", "VerifyContext"),
    "keys_dataset": ("nnmark.byo", "keys_dataset"),
    "mix_keys": ("nnmark.byo", "mix_keys"),
    "make_key": ("nnmark.byo", "make_key"),
}
# names whose module needs an extra at import time (see nnmark.extras)
_EXTRA = {"HttpOracle": "serve"}

__all__ = [
    "HttpOracle",
    "OnnxOracle",
    "TorchOracle",
    "VerifyContext",
    "__version__",
    "keys_dataset",
    "load_key",
    "load_model",
    "make_key",
    "mix_keys",
    "save_model",
    "verify",
]

# `nnmark.verify` is also a subpackage: bind the function eagerly so the import system's
# submodule attribute cannot shadow it
from nnmark.verify.verifier import verify  # noqa: E402

if TYPE_CHECKING:
    from nnmark.keyfile import load_key
    from nnmark.oracle import OnnxOracle, TorchOracle
    from nnmark.verify.context import VerifyContext
    from nnmark.workflow import load_model, save_model


def __getattr__(name: str) -> Any:
    # imports stay lazy so that `nnmark --help` does not pay for torch
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        if name in _EXTRA:
            from nnmark.extras import require

            return getattr(require(_EXTRA[name], module), attr)
        return getattr(importlib.import_module(module), attr)
    raise AttributeError(f"module 'nnmark' has no attribute {name!r}")
