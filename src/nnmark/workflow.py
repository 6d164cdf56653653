"""The owner's workflow as library calls: train a clean model, embed a watermark, save runs.

The CLI and the demo only compose these functions; each writes a complete run folder or nothing.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, fields, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch
import yaml

from nnmark import calibration as calib
from nnmark import keysecret
from nnmark.data import load_dataset
from nnmark.data.base import ImageDataset
from nnmark.errors import NnmarkError
from nnmark.identity import OwnerKey
from nnmark.io import KEY_FILE, METRICS_FILE, load_spec, load_state, new_folder, write_json, write_model_files
from nnmark.keyfile import load_key, save_key
from nnmark.models import MODELS, build_model
from nnmark.schemes import SCHEMES, Scheme
from nnmark.schemes.base import KeyMaterial, add_output_classes
from nnmark.schemes.ew import exponential_weighting
from nnmark.training import TrainConfig, TrainResult, evaluate, train
from nnmark.types import Key, ModelSpec
from nnmark.verify.stats import MIN_REFERENCES

log = logging.getLogger(__name__)

TRAINING_KEYS = {"lr", "batch_size", "optimizer", "momentum", "weight_decay", "schedule", "augment"}


def parse_settings(pairs: list[str] | None) -> dict[str, Any]:
    """Parse ``--set k=v`` pairs; values are read as YAML scalars (``3``, ``0.5``, ``auto``)."""
    out: dict[str, Any] = {}
    for pair in pairs or []:
        name, sep, raw = pair.partition("=")
        if not sep or not name.strip():
            raise NnmarkError(f"--set {pair!r} is not of the form name=value")
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            value = raw
        out[name.strip()] = value
    return out


def split_training_settings(
    settings: dict[str, Any], base: TrainConfig
) -> tuple[TrainConfig, dict[str, Any]]:
    """Take the training settings (lr, batch_size, ...) out of ``settings``; return the rest."""
    train_set = {k: v for k, v in settings.items() if k in TRAINING_KEYS}
    rest = {k: v for k, v in settings.items() if k not in TRAINING_KEYS}
    names = {f.name for f in fields(TrainConfig)}
    assert names >= TRAINING_KEYS
    try:
        config = replace(base, **train_set)
    except TypeError as e:
        raise NnmarkError(f"bad training setting: {e}") from e
    return config, rest


def model_spec(arch: str, data: ImageDataset, extra_classes: int = 0, **arch_args: Any) -> ModelSpec:
    MODELS.get(arch)
    mean, std = data.channel_stats()
    return ModelSpec(
        arch=arch,
        num_classes=data.num_classes + extra_classes,
        input_shape=data.input_shape,
        mean=tuple(mean),
        std=tuple(std),
        dataset=data.name,
        arch_args=dict(arch_args),
    )


def fingerprint(model: torch.nn.Module) -> str:
    """SHA-256 over the weights: recorded in the key, never compared with a suspect."""
    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def metrics_json(
    model: torch.nn.Module, data: ImageDataset, result: TrainResult, device: str, **extra: Any
) -> dict[str, Any]:
    acc = evaluate(model, data.test_x, data.test_y, device=device)
    return {
        "test_accuracy": acc,
        "seconds": round(result.seconds, 3),
        "images_per_second": round(result.images_per_second, 1),
        "device": result.device,
        "epochs": result.epochs,
        "dataset": data.name,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        **extra,
    }


@dataclass(frozen=True)
class RunResult:
    out: Path
    metrics: dict[str, Any]
    key: Key | None = None
    commitment: str = ""


def resolve_data(data: str | ImageDataset, data_dir: str | None = None) -> ImageDataset:
    """A dataset by registry name, or an :class:`ImageDataset` the caller built."""
    return data if isinstance(data, ImageDataset) else load_dataset(data, data_dir)


def train_run(
    data_name: str | ImageDataset,
    arch: str,
    config: TrainConfig,
    out: str | Path,
    *,
    force: bool = False,
    progress: bool = True,
    data_dir: str | None = None,
) -> RunResult:
    """Train a clean model and write its run folder."""
    data = resolve_data(data_name, data_dir)
    spec = model_spec(arch, data)
    torch.manual_seed(config.seed)
    model = build_model(spec)
    with new_folder(out, force) as tmp:
        result = train(model, data.train_x, data.train_y, config, progress=progress, description="train")
        metrics = metrics_json(model, data, result, config.device)
        write_model_files(tmp, model, spec)
        write_json(tmp / METRICS_FILE, metrics)
    return RunResult(Path(out), metrics)


def load_model(run_dir: str | Path) -> torch.nn.Module:
    """An ordinary trainable module (eval mode, CPU) taking float32 [0, 1] inputs, giving all logits."""
    from nnmark.io import MODEL_FILE, check_run

    spec = load_spec(run_dir)
    model = build_model(spec)
    state = load_state(check_run(run_dir) / MODEL_FILE)
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        raise NnmarkError(f"weights in {run_dir} do not fit a {spec.arch} ({str(e).splitlines()[0]})") from e
    return model.eval()


def save_model(
    model: torch.nn.Module,
    run_dir: str | Path,
    like: str | Path,
    *,
    force: bool = False,
    metrics: dict[str, Any] | None = None,
) -> Path:
    """Write ``model`` as a run folder; only the architecture comes from ``like`` (never its key)."""
    spec = load_spec(like)
    reference = build_model(spec)
    theirs, ours = model.state_dict(), reference.state_dict()
    if set(theirs) != set(ours) or any(theirs[k].shape != ours[k].shape for k in ours):
        raise NnmarkError(f"the module does not have the architecture of {like} ({spec.arch})")
    with new_folder(run_dir, force) as tmp:
        write_model_files(tmp, model, spec)
        write_json(tmp / METRICS_FILE, metrics or {"source": "save_model", "like": str(like)})
    return Path(run_dir)


def prepare_secret(
    scheme: Scheme, owner: OwnerKey | None, key_seed: int | None
) -> tuple[dict[str, Any], torch.Generator]:
    """Give ``scheme`` a fresh key secret (the OS's CSPRNG, signed by ``owner`` when given; from
    ``key_seed`` only for reproducible research keys, which say they are guessable); returns the
    key's secret entry and the generator key material is drawn from. ``--seed`` plays no part."""
    entry = keysecret.new_secret(scheme.name, owner, key_seed)
    scheme.secret = keysecret.secret_from_entry(entry)
    return entry, keysecret.generator(scheme.secret, f"{scheme.name}/generate")


def build_key(
    scheme: Scheme,
    material: KeyMaterial,
    spec: ModelSpec,
    model: torch.nn.Module | None,
    secret: dict[str, Any],
    data: ImageDataset | None = None,
) -> Key:
    """The key of labelled ``material`` (uncalibrated; ``model`` gives the weights' fingerprint;
    ``data``, the training split the key was drawn from, is fingerprinted into the key)."""
    assert material.labels is not None
    params = {
        **scheme.params.model_dump(),
        **material.params,
        keysecret.SECRET_PARAM: secret,
        "protocol": scheme.protocol_version,
        "dataset": spec.dataset,
    }
    if data is not None:
        params[keysecret.DATASET_PARAM] = keysecret.dataset_fingerprint(data)
    return Key(
        scheme=scheme.name,
        params=params,
        input_shape=spec.input_shape,
        num_classes=spec.num_classes,
        inputs=material.inputs.float().contiguous(),
        labels=material.labels.long(),
        tensors=material.tensors,
        fingerprint=fingerprint(model) if model is not None else "",
    )


def embed_run(
    scheme_name: str,
    settings: dict[str, Any],
    data_name: str | ImageDataset,
    arch: str,
    config: TrainConfig,
    out: str | Path,
    *,
    from_run: str | Path | None = None,
    calibrate: int | None = None,
    owner: OwnerKey | None = None,
    key_seed: int | None = None,
    force: bool = False,
    progress: bool = True,
    data_dir: str | None = None,
) -> RunResult:
    """Train (or fine-tune ``from_run``) a watermarked model and write its run folder and key.

    Key material comes from a fresh secret (:func:`prepare_secret`), never from ``config.seed``;
    ``key_seed`` makes it reproducible for research grids, and the key then says it is guessable.
    """
    config, scheme_params = split_training_settings(settings, config)
    scheme = SCHEMES.get(scheme_name)(owner=owner, **scheme_params)
    data = resolve_data(data_name, data_dir)
    if from_run is not None:
        spec = load_spec(from_run)
        if spec.input_shape != data.input_shape:
            raise NnmarkError(
                f"{from_run} takes {spec.input_shape} inputs but {data.name} has {data.input_shape}"
            )
        base_model = load_model(from_run)
        if scheme.extra_classes:  # a new-label scheme: the trained model gets its extra output(s)
            if spec.num_classes != data.num_classes:
                raise NnmarkError(
                    f"{from_run} has {spec.num_classes} outputs, "
                    f"not the {data.num_classes} classes of {data.name}"
                )
            base_model = add_output_classes(base_model, scheme.extra_classes)
            spec = replace(spec, num_classes=spec.num_classes + scheme.extra_classes)
        scheme.start_from(Path(from_run))
    else:
        spec = model_spec(arch, data, scheme.extra_classes)
        base_model = None
    if calibrate is None:
        calibrate = scheme.default_calibration
    if calibrate < 0 or 0 < calibrate < MIN_REFERENCES:
        raise NnmarkError(
            f"--calibrate must be 0 (no calibration) or at least {MIN_REFERENCES}: fewer clean models cannot "
            "bound an unseen clean model's chance rate"
        )
    with new_folder(out, force) as tmp:
        if base_model is not None:
            model = base_model
        else:
            torch.manual_seed(config.seed)
            model = build_model(spec)
        pre_seconds, pretrained = 0.0, base_model is not None
        if scheme.retrains() and not pretrained:  # train normally first, then embed by retraining
            pre = train(model, data.train_x, data.train_y, config, progress=progress, description="train")
            pre_seconds, pretrained = pre.seconds, True
        secret, gen = prepare_secret(scheme, owner, key_seed)
        material = scheme.craft(model, data, scheme.generate(data, gen), gen)
        clean_spec = replace(spec, num_classes=data.num_classes)
        calibrate = calibrate if scheme.needs_calibration else 0  # p0 known from how keys are made
        references = (
            calib.train_reference_models(data, clean_spec, config, calibrate, progress) if calibrate else []
        )
        ref_models = [m for m, _ in references]
        # clean answers to the keys choose a shared target; keys that have labels need none
        preds = calib.predictions(ref_models, material.inputs) if material.labels is None else []
        material = scheme.assign_labels(material, data.num_classes, preds)
        key = build_key(scheme, material, spec, None, secret, data)
        if references:
            key = replace(key, calibration=calib.calibrate_key(key, ref_models, [d for _, d in references]))
        retrain_epochs = scheme.params.retrain_epochs
        embed_config = replace(config, epochs=retrain_epochs) if pretrained and retrain_epochs else config
        result = scheme_train(scheme, model, data, key, embed_config, progress)
        result = replace(result, seconds=result.seconds + pre_seconds)
        key = replace(key, fingerprint=fingerprint(model))
        wm_acc = scheme.watermark_accuracy(model.cpu(), key)
        metrics = metrics_json(
            model,
            data,
            result,
            config.device,
            watermark_accuracy=wm_acc,
            scheme=scheme_name,
            from_run=str(from_run) if from_run else None,
            calibration_models=calibrate,
            pretrain_seconds=round(pre_seconds, 3),
            **scheme.metrics(model.cpu(), key),
        )
        write_model_files(tmp, model, spec)
        write_json(tmp / METRICS_FILE, metrics)
        commitment = save_key(tmp / KEY_FILE, key, owner)
        # the key as a verifier reads it: signed and naming its owner when there is one
        key = load_key(tmp / KEY_FILE)
    return RunResult(Path(out), metrics, key, commitment)


def scheme_train(
    scheme: Scheme, model: torch.nn.Module, data: ImageDataset, key: Key, config: TrainConfig, progress: bool
) -> TrainResult:
    """Train by the scheme's :meth:`~nnmark.schemes.base.Scheme.embed`; with ``ew`` > 0 through
    exponential-weighting layers (Namba 2019 Eq. 11-12), folded into the weights afterwards."""
    with exponential_weighting(model, scheme.params.ew):
        return scheme.embed(model, data, key, config, progress)
