"""Clean reference models and the chance match rate p0 they show on a key.

Clean models differ a lot (measured: 200 font letters sent to class 0 by 7 independently trained
digit-cnns at rates from 0.06 to 0.28), so reference models are trained with varied seeds *and*
recipes, each model's rate is kept, and :func:`nnmark.verify.stats.bound_p0` bounds the rate of
an unseen clean model. At least :data:`~nnmark.verify.stats.MIN_REFERENCES` models are needed:
with one the spread between clean models is unknown (the bound is far too tight), with two it is
useless. Uses the training engine; feeds verification.

A calibration made after embedding (:func:`calibrate_later`, ``nnmark calibrate``) is signed by
whoever made it and written to ``calibration.json`` beside the key; it counts as the claimant's
when the key's owner signed it and as the verifier's when a signer the verifier trusts did.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from nnmark.data.base import ImageDataset
from nnmark.errors import NnmarkError
from nnmark.models import build_model
from nnmark.oracle import TorchOracle
from nnmark.training import TrainConfig, train
from nnmark.types import Calibration, Key, ModelSpec
from nnmark.verify.stats import MIN_REFERENCES, bound_p0

if TYPE_CHECKING:
    from nnmark.identity import OwnerKey

log = logging.getLogger(__name__)

#: varied recipes for reference models: a thief's model is trained by someone else's recipe
RECIPES: tuple[dict[str, object], ...] = (
    {"optimizer": "adam", "lr": 1e-3, "batch_size": 64},
    {"optimizer": "sgd", "lr": 0.05, "batch_size": 64, "momentum": 0.9},
    {"optimizer": "adam", "lr": 2e-3, "batch_size": 128},
    {"optimizer": "adam", "lr": 5e-4, "batch_size": 32, "weight_decay": 1e-4},
)


def reference_config(base: TrainConfig, index: int) -> TrainConfig:
    """The ``index``-th reference recipe: a distinct seed, optimiser, rate and batch size."""
    recipe = RECIPES[index % len(RECIPES)]
    epochs = max(1, base.epochs - (index % 2))
    return replace(base, seed=base.seed * 7919 + 104729 * (index + 1), epochs=epochs, **recipe)  # type: ignore[arg-type]


def describe_config(c: TrainConfig) -> str:
    return f"{c.optimizer} lr={c.lr:g} batch={c.batch_size} epochs={c.epochs} seed={c.seed}"


def train_reference_models(
    data: ImageDataset,
    spec: ModelSpec,
    base: TrainConfig,
    count: int,
    progress: bool = True,
    build: Callable[[], torch.nn.Module] | None = None,
) -> list[tuple[torch.nn.Module, str]]:
    """Train ``count`` clean models of ``spec``'s architecture with varied recipes (``build`` makes
    each fresh model instead, after the recipe's seed is set: e.g. an unregistered architecture)."""
    models: list[tuple[torch.nn.Module, str]] = []
    for i in range(count):
        config = reference_config(base, i)
        torch.manual_seed(config.seed)
        model = build() if build is not None else build_model(spec)
        train(
            model,
            data.train_x,
            data.train_y,
            config,
            progress=progress,
            description=f"clean reference {i + 1}/{count}",
        )
        models.append((model.cpu().eval(), describe_config(config)))
        log.info("reference model %d: %s", i + 1, describe_config(config))
    return models


def predictions(models: Sequence[torch.nn.Module], inputs: torch.Tensor) -> list[torch.Tensor]:
    return [TorchOracle(m).labels(inputs) for m in models]


def calibration_from_predictions(
    preds: Sequence[torch.Tensor], labels: torch.Tensor, descriptions: Sequence[str]
) -> Calibration:
    if len(preds) < MIN_REFERENCES:
        raise NnmarkError(
            f"calibration needs at least {MIN_REFERENCES} clean models, got {len(preds)}: fewer cannot bound "
            "the chance rate of a clean model nobody has seen (add models trained by other recipes)"
        )
    rates = [float((p == labels).float().mean()) for p in preds]
    bound = bound_p0(rates, len(labels))
    return Calibration(tuple(rates), len(labels), bound.p0, bound.method, tuple(descriptions))


def calibrate_key(key: Key, models: Sequence[torch.nn.Module], descriptions: Sequence[str]) -> Calibration:
    """Measure each clean model's match rate on ``key`` and bound p0 from them (at least 3 models)."""
    from nnmark.schemes import SCHEMES

    scheme_cls = SCHEMES.get(key.scheme)
    scheme = scheme_cls(**{k: v for k, v in key.params.items() if k in scheme_cls.Params.model_fields})
    inputs, labels = scheme.calibration_queries(key.inputs, key.labels, key.params)
    return calibration_from_predictions(predictions(models, inputs), labels, descriptions)


def load_clean_models(runs: Sequence[str | Path], key: Key) -> list[tuple[torch.nn.Module, str]]:
    """Clean run folders as (model, description) pairs, refusing any that cannot take the key's inputs."""
    from nnmark.io import load_spec
    from nnmark.workflow import load_model

    models = []
    for run in runs:
        spec = load_spec(run)
        if tuple(spec.input_shape) != tuple(key.input_shape):
            raise NnmarkError(
                f"clean model {run} takes {tuple(spec.input_shape)} inputs but the key is for "
                f"{tuple(key.input_shape)}: name clean models of the key's task"
            )
        models.append((load_model(run), str(run)))
    return models


def calibrate_later(
    key_path: str | Path, model_runs: Sequence[str | Path], signer: OwnerKey
) -> tuple[Calibration, Path]:
    """``nnmark calibrate``: measure p0 of the key at ``key_path`` on clean run folders and write
    ``calibration.json`` beside the key, signed by ``signer``; returns (calibration, its path)."""
    from nnmark.keyfile import load_key, save_later_calibration
    from nnmark.schemes import SCHEMES

    key = load_key(key_path)
    if len(model_runs) < MIN_REFERENCES:
        raise NnmarkError(
            f"calibrate needs at least {MIN_REFERENCES} clean models (--model RUN, repeated), got "
            f"{len(model_runs)}: fewer cannot bound the chance rate of a clean model nobody has seen"
        )
    if key.scheme in SCHEMES and not SCHEMES.get(key.scheme).needs_calibration:
        raise NnmarkError(
            f"{key.scheme} keys need no calibration: p0 follows from how their labels are drawn"
        )
    models = load_clean_models(model_runs, key)
    calibration = calibrate_key(key, [m for m, _ in models], [d for _, d in models])
    return calibration, save_later_calibration(key_path, key, calibration, signer)
