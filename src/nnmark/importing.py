"""Bring a plain PyTorch checkpoint in as a run folder (``nnmark import``).

Accepted files (read with ``torch.load(..., weights_only=True)``: no code in the file runs):

* the ``state_dict()`` of an nnmark model (``Normalize`` then the body: keys ``0.mean``,
  ``0.std``, ``1.…``): the normalisation comes from the file and is recorded in ``model.json``;
* the ``state_dict()`` of the body alone (what most training scripts save when they normalise
  in the data pipeline): the dataset's normalisation is put in front;
* either of these under a ``module.`` (DataParallel / DDP) or ``model.`` prefix, or inside a
  checkpoint dictionary under ``state_dict``, ``model_state_dict`` or ``model``.

The weights must fit the architecture exactly (same names, same shapes); otherwise the
NnmarkError lists the missing, unexpected and mis-shaped entries. The run folder gets
``metrics.json`` with ``"source": "import"``, the file's SHA-256 and the test accuracy on the
dataset (a model near chance accuracy usually means another normalisation or another dataset).
"""

from __future__ import annotations

import hashlib
import logging
import pickle
import zipfile
from collections.abc import Mapping
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch

from nnmark.errors import NnmarkError

log = logging.getLogger(__name__)

PREFIXES = ("module.", "model.", "_orig_mod.")
CONTAINER_KEYS = ("state_dict", "model_state_dict", "model")


def import_state_dict(
    path: str | Path,
    model: str,
    out_dir: str | Path,
    *,
    data: str = "mnist5k",
    num_classes: int | None = None,
    data_dir: str | Path | None = None,
    force: bool = False,
    arch_args: Mapping[str, Any] | None = None,
    evaluate_accuracy: bool = True,
) -> Path:
    """Write ``out_dir``, a run folder holding the weights of ``path`` as architecture ``model``.

    ``data`` sets the input shape, the number of classes (``num_classes`` overrides it) and the
    normalisation used when the file has none. Returns ``out_dir``.
    """
    from nnmark.data import load_dataset
    from nnmark.io import METRICS_FILE, new_folder, write_json, write_model_files
    from nnmark.models import build_model
    from nnmark.training import evaluate
    from nnmark.workflow import model_spec

    path = Path(path)
    out = Path(out_dir)
    if out.exists() and not force:
        raise NnmarkError(f"{out} already exists; choose another --out or pass --force to replace it")
    raw = _load(path)
    dataset = load_dataset(data, data_dir)
    extra = 0 if num_classes is None else int(num_classes) - dataset.num_classes
    if num_classes is not None and num_classes < 1:
        raise NnmarkError(f"--num-classes must be at least 1, got {num_classes}")
    spec = model_spec(model, dataset, extra, **dict(arch_args or {}))
    torch.manual_seed(0)
    net = build_model(spec)
    state, with_norm = fit_state_dict(raw, net, f"{model} on {data} ({spec.num_classes} classes)", path)
    if with_norm:
        mean = tuple(round(float(v), 6) for v in state["0.mean"].flatten())
        std = tuple(round(float(v), 6) for v in state["0.std"].flatten())
        if len(mean) != spec.input_shape[0] and len(mean) != 1:
            raise NnmarkError(
                f"{path} normalises {len(mean)} channels but {data} images have "
                f"{spec.input_shape[0]}; pick the right --data"
            )
        if any(s <= 0 for s in std):
            raise NnmarkError(f"{path} holds a normalisation with a non-positive std; fix the file")
        spec = replace(spec, mean=mean, std=std)
        net = build_model(spec)
    net.load_state_dict(state, strict=True)
    net.eval()
    metrics: dict[str, Any] = {
        "source": "import",
        "state_dict": str(path),
        "sha256": _sha256(path),
        "normalisation": "file" if with_norm else "dataset",
        "dataset": dataset.name,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    if evaluate_accuracy:
        metrics["test_accuracy"] = evaluate(net, dataset.test_x, dataset.test_y)
        chance = 1.0 / max(spec.num_classes, 1)
        if metrics["test_accuracy"] < 1.5 * chance:
            log.warning(
                "imported model is near chance on %s (%.1f%%): another dataset or normalisation?",
                data,
                100 * metrics["test_accuracy"],
            )
    with new_folder(out, force) as tmp:
        write_model_files(tmp, net, spec)
        write_json(tmp / METRICS_FILE, metrics)
    return out


def _load(path: Path) -> Any:
    if not path.is_file():
        raise NnmarkError(f"state_dict file {path} not found")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        if not zipfile.is_zipfile(path) or "unsupported global" not in str(e).lower():
            raise NnmarkError(
                f"{path} is not a readable PyTorch file (unpickling failed); "
                "give a file written by torch.save(model.state_dict(), ...)"
            ) from e
        raise NnmarkError(
            f"{path} is not a plain state_dict: it holds Python objects that weights_only loading refuses "
            "(a whole pickled model?); save model.state_dict() with torch.save and import that"
        ) from e
    except (RuntimeError, EOFError, OSError, ValueError, AttributeError, KeyError) as e:
        raise NnmarkError(
            f"{path} is not a readable PyTorch file ({e.__class__.__name__}); "
            "give a file written by torch.save(model.state_dict(), ...)"
        ) from e


def _unwrap(raw: Any, path: Path) -> dict[str, torch.Tensor]:
    state = raw
    for _ in range(3):
        if isinstance(state, Mapping) and not _all_tensors(state):
            inner = next((state[k] for k in CONTAINER_KEYS if isinstance(state.get(k), Mapping)), None)
            if inner is None:
                break
            state = inner
    if not isinstance(state, Mapping) or not state:
        raise NnmarkError(
            f"{path} does not hold a state_dict (found {type(raw).__name__}); "
            "save model.state_dict() with torch.save"
        )
    bad = [k for k, v in state.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise NnmarkError(
            f"{path} holds entries that are not tensors ({', '.join(map(str, bad[:5]))}); "
            "save model.state_dict() with torch.save"
        )
    return {str(k): v for k, v in state.items()}


def _all_tensors(d: Mapping[Any, Any]) -> bool:
    return all(isinstance(v, torch.Tensor) for v in d.values())


def _strip_prefixes(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    changed = True
    while changed:
        changed = False
        for p in PREFIXES:
            if state and all(k.startswith(p) for k in state):
                state = {k[len(p) :]: v for k, v in state.items()}
                changed = True
    return state


def fit_state_dict(
    raw: Any, net: torch.nn.Module, what: str, path: Path | str = "the file"
) -> tuple[dict[str, torch.Tensor], bool]:
    """Match a loaded state_dict to ``net`` (Normalize + body); returns it keyed for ``net``.

    The boolean says whether the file carried the normalisation buffers. NnmarkError lists what
    does not fit.
    """
    state = _strip_prefixes(_unwrap(raw, Path(path)))
    full = net.state_dict()
    candidates = [(state, True), ({f"1.{k}": v for k, v in state.items()}, False)]
    best: tuple[dict[str, torch.Tensor], bool, list[str], list[str], list[str]] | None = None
    for cand, with_norm in candidates:
        cand = _fill_counters(cand, full)
        expected = full if with_norm else {k: v for k, v in full.items() if not k.startswith("0.")}
        missing = sorted(set(expected) - set(cand))
        unexpected = sorted(set(cand) - set(expected))
        shapes = [
            f"{k} (file {_dims(cand[k])}, model {_dims(expected[k])})"
            for k in sorted(set(cand) & set(expected))
            if cand[k].shape != expected[k].shape
        ]
        if not missing and not unexpected and not shapes:
            if not with_norm:
                cand = {**cand, "0.mean": full["0.mean"], "0.std": full["0.std"]}
            return {
                k: v.detach().to(torch.float32) if v.is_floating_point() else v.detach()
                for k, v in cand.items()
            }, with_norm
        errors = len(missing) + len(unexpected) + len(shapes)
        if best is None or errors < len(best[2]) + len(best[3]) + len(best[4]):
            best = (cand, with_norm, missing, unexpected, shapes)
    assert best is not None
    _, with_norm, missing, unexpected, shapes = best
    if not with_norm:
        # report keys as the file names them (without our "1." prefix)
        missing = [k[2:] for k in missing]
        unexpected = [k[2:] for k in unexpected]
        shapes = [s[2:] for s in shapes]
    parts = []
    if missing:
        parts.append(f"missing {_few(missing)}")
    if unexpected:
        parts.append(f"unexpected {_few(unexpected)}")
    if shapes:
        parts.append(f"wrong shape {_few(shapes)}")
    hint = "check --model and --data"
    if shapes and not missing and not unexpected:
        hint += " (a different number of outputs needs --num-classes)"
    raise NnmarkError(f"{path} does not fit {what}: {'; '.join(parts)}; {hint}")


def _fill_counters(cand: dict[str, torch.Tensor], full: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Batch-norm step counters are bookkeeping; files from older code may lack them."""
    fill = {
        k: full[k]
        for k in full
        if k.endswith("num_batches_tracked")
        and k not in cand
        and k.rsplit(".", 1)[0] + ".running_mean" in cand
    }
    return {**cand, **fill} if fill else cand


def _dims(t: torch.Tensor) -> str:
    return "×".join(map(str, t.shape)) or "scalar"


def _few(items: list[str], n: int = 5) -> str:
    more = f" and {len(items) - n} more" if len(items) > n else ""
    return ", ".join(items[:n]) + more


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
