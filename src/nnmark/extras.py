"""Optional features and the extras that install them (``pip install 'nnmark[serve]'``).

The core install (train, embed, verify a run folder, the demo) needs none of these. A feature
imports its third-party modules through :func:`require` at the point of use, so a missing
extra ends in one line that names it (:class:`MissingExtraError`, a user error: the CLI prints
it and exits 2) instead of an ``ImportError`` traceback, and ``import nnmark`` never pays for
them.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from nnmark.errors import NnmarkError

EXTRAS: dict[str, tuple[str, ...]] = {
    "onnx": ("onnx", "onnxruntime"),
    "serve": ("fastapi", "uvicorn", "httpx"),
    "ray": ("ray",),
    "plots": ("matplotlib",),
}
"""Each extra and the top-level modules it provides (pyproject.toml's optional-dependencies)."""

#: packages an extra installs that the code uses when present and does without otherwise
SPEEDUPS: dict[str, tuple[str, ...]] = {"serve": ("orjson",)}
GATED_MODULES = {"nnmark.http_oracle": "serve", "nnmark.serve": "serve"}
"""nnmark modules that import an extra's packages at their top; every other module imports them
where it uses them (through :func:`require`), so a core install imports all of nnmark but these."""

FEATURES = {
    "onnx": "ONNX export and verification (--onnx)",
    "serve": "serving and remote verification (nnmark serve, verify --url)",
    "ray": "experiment grids on Ray",
    "plots": "plots",
}


# packages an extra brings in as dependencies of its own, which nnmark's modules import directly
_BROUGHT = {"serve": ("starlette",), "onnx": (), "ray": (), "plots": ()}


class MissingExtraError(NnmarkError, ImportError):
    """A feature was called whose optional dependencies are not installed.

    Both a user error (the CLI prints the one line and exits 2) and an ``ImportError`` (so
    ``from nnmark import HttpOracle`` fails as Python users expect).
    """

    def __init__(self, extra: str, module: str) -> None:
        self.extra = extra
        super().__init__(
            f"{FEATURES.get(extra, extra)} needs the {module!r} package, which is not installed: "
            f"pip install 'nnmark[{extra}]'",
            name=module,
        )


def require(extra: str, module: str) -> ModuleType:
    """Import ``module`` or raise :class:`MissingExtraError` naming ``extra``.

    ``module`` is one of the extra's packages (``"onnxruntime"``) or an nnmark module that imports
    them at its top (``"nnmark.serve"``). Only a missing package of ``extra`` becomes the
    one-line message; any other import failure is a real bug and propagates unchanged.
    """
    if extra not in EXTRAS:
        raise ValueError(f"unknown extra {extra!r}; known: {', '.join(EXTRAS)}")
    if module.startswith("nnmark."):  # an nnmark module may import its extra's packages lazily
        require_all(extra)
    try:
        return importlib.import_module(module)
    except ImportError as e:
        missing = (e.name or "").partition(".")[0]
        if missing in EXTRAS[extra] or missing in _BROUGHT[extra]:
            raise MissingExtraError(extra, missing) from None
        raise


def require_all(extra: str) -> None:
    """Import every package of ``extra`` (see :func:`require`), for features that need them all."""
    for module in EXTRAS[extra]:
        require(extra, module)
