"""nnmark: prove ownership of neural networks by watermarking.

Python API (see DESIGN.md): ``load_model``, ``save_model``, ``load_key``, ``verify`` (with a
``VerifyContext`` for the verifier's own choices: ``judge``, reference models, trusted calibrations,
probe data), ``verify_key_file`` (what ``nnmark verify`` runs: cover queries and the spent-key
log beside the key) and the oracles ``TorchOracle``, ``OnnxOracle``, ``HttpOracle``.

``HttpOracle`` needs the ``serve`` extra and ``OnnxOracle`` the ``onnx`` extra
(``pip install 'nnmark[serve,onnx]'``); both are imported only when first used, and a missing
extra raises :class:`nnmark.extras.MissingExtraError` (an ``ImportError``) naming it.
"""

from __future__ import annotations

import sys
import types
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_LAZY = {
    "verify": ("nnmark.verify.verifier", "verify"),
    "verify_key_file": ("nnmark.verify.session", "verify_key_file"),
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
    "verify_key_file",
]

if TYPE_CHECKING:
    from nnmark.keyfile import load_key
    from nnmark.oracle import OnnxOracle, TorchOracle
    from nnmark.verify.context import VerifyContext
    from nnmark.verify.session import verify_key_file
    from nnmark.verify.verifier import verify
    from nnmark.workflow import load_model, save_model


class _Package(types.ModuleType):
    """``nnmark``'s module type: ``nnmark.verify`` is the function of the public API, although
    ``nnmark.verify`` is also a subpackage. The import system binds a subpackage to its parent's
    attribute when it first loads it; that binding is refused here, so the function (imported on
    first use, like the rest of the API) is what ``nnmark.verify`` and ``from nnmark import verify``
    give, whichever was imported first."""

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "verify" and isinstance(value, types.ModuleType):
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package


def __getattr__(name: str) -> Any:
    # PEP 562: the API is imported on first use, so that `import nnmark` (and `nnmark --help`)
    # does not pay for torch
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        if name in _EXTRA:
            from nnmark.extras import require

            value = getattr(require(_EXTRA[name], module), attr)
        else:
            value = getattr(importlib.import_module(module), attr)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'nnmark' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
