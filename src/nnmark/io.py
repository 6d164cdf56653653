"""Run folders and key files on disk.

A run folder holds ``model.safetensors``, ``model.json`` (a :class:`~nnmark.types.ModelSpec`),
``metrics.json`` and, for watermarked models, ``watermark.key`` (mode 0600). Folders are built
in a temporary sibling and renamed into place, so a failure never leaves half a run behind.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from nnmark.errors import NnmarkError
from nnmark.types import ModelSpec

MODEL_FILE = "model.safetensors"
SPEC_FILE = "model.json"
METRICS_FILE = "metrics.json"
KEY_FILE = "watermark.key"
CALIBRATION_FILE = "calibration.json"


def atomic_write_bytes(path: str | Path, data: bytes, mode: int = 0o644) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same folder, then rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: str | Path, obj: Any, mode: int = 0o644) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode(), mode)


def read_json(path: str | Path, what: str) -> Any:
    path = Path(path)
    if not path.is_file():
        raise NnmarkError(f"{what} {path} not found")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise NnmarkError(f"{what} {path} is corrupt ({e.__class__.__name__}); recreate it") from e


@contextmanager
def new_folder(out: str | Path, force: bool = False) -> Iterator[Path]:
    """Yield a temporary folder that becomes ``out`` only if the block finishes without error."""
    out = Path(out)
    if out.exists() and not force:
        raise NnmarkError(f"{out} already exists; choose another --out or pass --force to replace it")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp"))
    try:
        yield tmp
        if out.exists():
            shutil.rmtree(out) if out.is_dir() else out.unlink()
        os.replace(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def write_model_files(folder: Path, model: torch.nn.Module, spec: ModelSpec) -> None:
    state = {k: v.detach().to("cpu").contiguous().clone() for k, v in model.state_dict().items()}
    save_file(state, str(folder / MODEL_FILE), metadata={"format": "nnmark-model", "arch": spec.arch})
    write_json(folder / SPEC_FILE, spec.to_json())


def check_run(run_dir: str | Path) -> Path:
    run = Path(run_dir)
    if not run.is_dir():
        raise NnmarkError(f"run folder {run} not found; create one with `nnmark train` or `nnmark embed`")
    for name in (MODEL_FILE, SPEC_FILE):
        if not (run / name).is_file():
            raise NnmarkError(f"{run} is not a run folder: {name} is missing")
    return run


def load_spec(run_dir: str | Path) -> ModelSpec:
    run = check_run(run_dir)
    raw = read_json(run / SPEC_FILE, "model description")
    try:
        return ModelSpec.from_json(raw)
    except (KeyError, TypeError, ValueError) as e:
        raise NnmarkError(f"{run / SPEC_FILE} is corrupt or from another tool ({e})") from e


def load_state(path: Path) -> dict[str, torch.Tensor]:
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise NnmarkError(f"weights file {path} is corrupt ({e}); recreate the run") from e


def load_metrics(run_dir: str | Path) -> dict[str, Any]:
    path = Path(run_dir) / METRICS_FILE
    if not path.is_file():
        return {}
    data = read_json(path, "metrics file")
    return data if isinstance(data, dict) else {}
