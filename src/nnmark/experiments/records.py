"""One JSON record per cell in a results folder, written atomically (temp file + rename).

A record: ``id``, ``config`` (the cell), ``status`` (``ok`` or ``failed``), ``metrics``,
``verdicts``, ``error`` / ``traceback`` for a failed cell, ``timings`` and ``versions`` (nnmark,
torch, python, and ``source``: a digest of nnmark's own code, which changes with every edit while
the version number does not). Everything but ``timings`` depends only on the cell (and the code),
never on the runner or backend that ran it.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import platform
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from nnmark.errors import NnmarkError
from nnmark.io import atomic_write_bytes

OK, FAILED = "ok", "failed"


@functools.cache
def source_digest() -> str:
    """12 hex digits of SHA-256 over nnmark's Python files (relative path and bytes, in order): a
    resumed grid can then tell records made by other code from its own."""
    import nnmark

    root = Path(nnmark.__file__).parent
    h = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        h.update(path.relative_to(root).as_posix().encode() + b"\0" + path.read_bytes())
    return h.hexdigest()[:12]


def versions() -> dict[str, str]:
    import torch

    from nnmark import __version__

    return {
        "nnmark": __version__,
        "source": source_digest(),
        "torch": torch.__version__,
        "python": platform.python_version(),
    }


def clean_json(obj: Any) -> Any:
    """``obj`` with NaN/inf turned into None and tuples into lists (strict JSON)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {str(k): clean_json(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [clean_json(v) for v in obj]
    return obj


def record_path(folder: str | Path, cid: str) -> Path:
    return Path(folder) / f"{cid}.json"


def write_record(folder: str | Path, record: dict[str, Any]) -> Path:
    path = record_path(folder, record["id"])
    data = json.dumps(clean_json(record), indent=1, sort_keys=True, allow_nan=False) + "\n"
    atomic_write_bytes(path, data.encode())
    return path


def read_record(path: str | Path) -> dict[str, Any] | None:
    """The record at ``path``, or None when it is unreadable (a torn or foreign file)."""
    try:
        doc = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        return None
    return doc if isinstance(doc, dict) and "id" in doc and "status" in doc else None


def iter_records(folder: str | Path) -> Iterator[dict[str, Any]]:
    folder = Path(folder)
    if not folder.is_dir():
        return
    for path in sorted(folder.glob("*.json")):
        rec = read_record(path)
        if rec is not None:
            yield rec


def finished_ids(folder: str | Path) -> set[str]:
    """Ids of cells whose record says ``ok`` (they are never run again)."""
    return {r["id"] for r in iter_records(folder) if r["status"] == OK}


def load_records(folder: str | Path) -> list[dict[str, Any]]:
    folder = Path(folder)
    if not folder.is_dir():
        raise NnmarkError(f"results folder {folder} not found")
    return list(iter_records(folder))
