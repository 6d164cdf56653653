"""Query defenses a served suspect can run: ``nnmark serve --defense NAME`` takes every name of the
one defense registry, :func:`nnmark.attacks.defenses.defenses` (oracle -> oracle wrappers, one file
each under ``nnmark/attacks/query/``; ``nnmark list attacks --verbose`` describes them).

:func:`build_defense` puts the model (a :class:`~nnmark.oracle.TorchOracle`) behind the wrapper
``NAME``, fitted on the run's training images (what ordinary queries look like; the dataset the
run folder names). Settings (``defense_settings``) are the wrapper's parameters.

The defenses built on Namba et al. 2019's autoencoder detector (``autoencoder``: query
modification, flagged inputs get ``f(AE(x))``; ``rejection``: flagged inputs get a random label)
train it on a share (``defense_fraction``, default 10 %, drawn as
:func:`~nnmark.attacks.base.share_indices` draws the attacker's data) of the training images, and
cache it and its thresholds in the run folder as ``defense/autoencoder.safetensors`` (written
atomically), reused while the model's weights, the dataset, the share, the seed and the settings
are unchanged; otherwise it is retrained. A run folder that cannot be written to is served anyway
(the cache is skipped, with a warning). Every other defense is fitted on all training images.

Nothing in the replies or the metadata reveals the defense; the server logs how many inputs a
detecting defense flagged (its ``stats``).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from nnmark.errors import NnmarkError

if TYPE_CHECKING:
    from nnmark.attacks.query.autoencoder import QueryModification
    from nnmark.oracle import Oracle
    from nnmark.types import ModelSpec

log = logging.getLogger(__name__)

DEFENSE_DIR = "defense"
AUTOENCODER_FILE = "autoencoder.safetensors"


def _on_autoencoder() -> dict[str, Callable[[QueryModification, int], Oracle]]:
    """Defenses answered through Namba's detector, from the cached detector and the seed."""
    from nnmark.attacks.query.rejection import QueryRejection

    return {
        "autoencoder": lambda qm, seed: qm,
        "rejection": lambda qm, seed: QueryRejection(qm, seed=seed),
    }


def build_defense(
    name: str,
    run_dir: Path,
    model: torch.nn.Module,
    spec: ModelSpec,
    *,
    data_dir: str | Path | None = None,
    seed: int = 0,
    fraction: float = 0.1,
    settings: dict[str, Any] | None = None,
    progress: bool = False,
) -> Oracle:
    """``model`` behind the defense ``name`` (one of :func:`nnmark.attacks.defenses.defenses`), as
    an oracle whose ``scores`` are what the server answers."""
    from nnmark.attacks.defenses import defenses, wrap_oracle
    from nnmark.oracle import TorchOracle

    names = defenses()
    if name not in names:
        raise NnmarkError(f"unknown defense {name!r}; choose one of {', '.join(names)}")
    inner = TorchOracle(model)
    if name == "none":
        return wrap_oracle(name, inner, **(settings or {}))
    train_x = training_images(run_dir, spec, name, data_dir)
    built_on_detector = _on_autoencoder().get(name)
    if built_on_detector is not None:
        detector = autoencoder_defense(
            run_dir, model, train_x, fraction=fraction, seed=seed, settings=settings, progress=progress
        )
        return built_on_detector(detector, seed)
    return wrap_oracle(name, inner, train_x, seed=seed, **(settings or {}))


def training_images(
    run_dir: Path, spec: ModelSpec, defense: str, data_dir: str | Path | None
) -> torch.Tensor:
    """The run's training images (what ordinary queries look like), which a defense fits on."""
    from nnmark.data import load_dataset

    if not spec.dataset:
        raise NnmarkError(f"{run_dir} does not name its dataset, which the {defense} defense needs")
    data = load_dataset(spec.dataset, data_dir)
    if data.input_shape != spec.input_shape:
        raise NnmarkError(
            f"dataset {spec.dataset} has {data.input_shape} images but the model takes {spec.input_shape}"
        )
    return data.train_x


def autoencoder_defense(
    run_dir: str | Path,
    model: torch.nn.Module,
    train_x: torch.Tensor,
    *,
    fraction: float = 0.1,
    seed: int = 0,
    settings: dict[str, Any] | None = None,
    progress: bool = False,
) -> QueryModification:
    """Namba 2019 query modification over ``model``, trained on ``fraction`` of ``train_x``, or loaded
    from ``run_dir/defense/autoencoder.safetensors`` when that was made for the same weights, data
    share, seed and settings (else trained again and the cache rewritten, atomically)."""
    from nnmark.attacks.base import share_indices
    from nnmark.attacks.query.autoencoder import QueryModification
    from nnmark.io import MODEL_FILE

    run = Path(run_dir)
    cache = run / DEFENSE_DIR / AUTOENCODER_FILE
    qm = QueryModification(model, seed=seed, **(settings or {}))  # validates the settings first
    made_for = {
        "model_sha256": hashlib.sha256((run / MODEL_FILE).read_bytes()).hexdigest(),
        "images": len(train_x),
        "images_shape": list(train_x.shape[1:]),
        "fraction": fraction,
    }
    if cache.is_file():
        try:
            config = QueryModification.read_metadata(cache)
            same = (config.get("extra"), config.get("params"), config.get("seed"))
            if same == (made_for, qm.params.model_dump(), seed):
                log.info("autoencoder defense: using %s", cache)
                return QueryModification.load(cache, model)
            log.info("autoencoder defense: %s was made for another model or settings; retraining", cache)
        except NnmarkError as e:
            log.warning("autoencoder defense: ignoring %s (%s); retraining", cache, e)
    share = train_x[share_indices(len(train_x), fraction, seed)]
    log.info("autoencoder defense: training on %d of %d training images", len(share), len(train_x))
    qm.fit(share, progress=progress)
    try:
        qm.save(cache, extra=made_for)
    except OSError as e:
        log.warning("autoencoder defense: cannot cache the autoencoder in %s (%s); serving anyway", cache, e)
    return qm
