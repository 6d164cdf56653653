"""Bring your own model and training loop.

Most owners already have a model and a training script. These helpers give any scheme's keys as a
``torch.utils.data.Dataset`` and mix them into the owner's own loader, so a model that is not in
nnmark's registry can carry a watermark; :func:`nnmark.verify` then works on the ``nn.Module``
through :class:`~nnmark.oracle.TorchOracle`. See ``examples/own_training_loop.py``.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import replace
from typing import Any

import torch
from torch.utils.data import Dataset

from nnmark.calibration import calibrate_key, predictions
from nnmark.data.base import ImageDataset
from nnmark.errors import NnmarkError
from nnmark.identity import OwnerKey
from nnmark.schemes import SCHEMES
from nnmark.schemes.base import KeyBatchMixer
from nnmark.types import Key
from nnmark.verify.stats import MIN_REFERENCES


class KeyDataset(Dataset[tuple[torch.Tensor, torch.Tensor]]):
    """The key samples of a watermark: (float32 C×H×W image in [0, 1], int64 label) pairs."""

    def __init__(self, key: Key) -> None:
        self.inputs, self.labels = key.inputs, key.labels

    def __len__(self) -> int:
        return len(self.inputs)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.inputs[i], self.labels[i]


def keys_dataset(key: Key) -> KeyDataset:
    return KeyDataset(key)


def make_key(
    scheme: str,
    train_x: torch.Tensor,
    train_y: torch.Tensor,
    num_classes: int,
    *,
    owner: OwnerKey | None = None,
    key_seed: int | None = None,
    clean_models: Sequence[torch.nn.Module] = (),
    dataset: str = "own",
    **params: Any,
) -> Key:
    """Generate a scheme's key from the owner's own data (uint8 N×C×H×W or float in [0, 1]).

    The key secret comes from the OS's CSPRNG and, with ``owner``, from the owner's signature
    (the key is then returned signed, as ``load_key`` would give it); ``key_seed`` makes a
    reproducible research key that every verdict calls guessable. Shared-target schemes pick their
    target from ``clean_models`` (models trained without the keys, by other seeds or recipes; at
    least 3, more advised) and are calibrated on them; or pass ``target=CLASS`` and calibrate later
    with :func:`calibrate`. ``dataset`` names a registered dataset of the same task where the
    verifier may draw probe images (zhong-new-label, li-null-embedding); with the default the
    verifier must be given probe data.
    """
    from nnmark.keyfile import key_bytes, parse_key
    from nnmark.workflow import build_key, prepare_secret

    x = train_x if train_x.dtype == torch.uint8 else (train_x.clamp(0, 1) * 255).round().to(torch.uint8)
    if x.ndim != 4:
        raise NnmarkError(f"train_x must be N×C×H×W, got shape {tuple(train_x.shape)}")
    data = ImageDataset("own", x, train_y.long(), x[:0], train_y[:0].long(), num_classes)
    cls = SCHEMES.get(scheme)
    obj = cls(owner=owner, **params)
    secret, gen = prepare_secret(obj, owner, key_seed)
    material = obj.generate(data, gen)
    preds = predictions(list(clean_models), material.inputs) if clean_models else []
    material = obj.assign_labels(material, num_classes, preds)
    from nnmark.types import ModelSpec

    c, h, w = data.input_shape
    spec = ModelSpec("own", num_classes + cls.extra_classes, (c, h, w), (0.0,) * c, (1.0,) * c, dataset)
    key = build_key(obj, material, spec, None, secret, data)
    if clean_models:
        key = calibrate(key, clean_models)
    # the key exactly as load_key gives it back: its commitment, and signed by ``owner`` when given
    return parse_key(key_bytes(key, owner), "the new key")


def calibrate(key: Key, clean_models: Sequence[torch.nn.Module]) -> Key:
    """Return ``key`` with a calibration measured on ``clean_models`` (at least 3, trained without the
    keys by other seeds or recipes). Save the result with the owner's signature
    (``save_key(path, key, owner)``): a verifier counts a key's calibration as the claimant's."""
    if len(clean_models) < MIN_REFERENCES:
        raise NnmarkError(
            f"calibration needs at least {MIN_REFERENCES} clean models, got {len(clean_models)}: fewer "
            "cannot bound the chance rate of a clean model nobody has seen"
        )
    names = [f"{m.__class__.__name__} #{i + 1}" for i, m in enumerate(clean_models)]
    return replace(key, calibration=calibrate_key(key, clean_models, names))


def mix_keys(
    loader: Iterable[Sequence[torch.Tensor]], key: Key, per_batch: int = 2, seed: int = 0
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Wrap the owner's loader: every (x, y) batch comes back with ``per_batch`` key samples appended,
    then the decoys the scheme's own embedding appends (zhang-content / zhang-noise: batch images
    marked by the recipe with other secrets, keeping their labels, so that the watermark is specific
    to this key; see :mod:`nnmark.schemes.zhang`).

    Batches must hold float images in [0, 1] shaped like the keys (apply your normalisation inside
    the model, or after this wrapper).
    """
    cls = SCHEMES.get(key.scheme)
    mixer = cls(**{k: v for k, v in key.params.items() if k in cls.Params.model_fields}).mixer(key)
    if not isinstance(mixer, KeyBatchMixer):  # schemes with their own loss weights: keys only
        mixer = KeyBatchMixer(key.inputs, key.labels, per_batch)
    mixer.per_batch = per_batch
    gen = torch.Generator().manual_seed(seed)
    for batch in loader:
        x, y = batch[0], batch[1]
        if tuple(x.shape[1:]) != tuple(key.inputs.shape[1:]):
            raise NnmarkError(
                f"batch images are {tuple(x.shape[1:])}, keys are {tuple(key.inputs.shape[1:])}"
            )
        mixed_x, mixed_y, _ = mixer(x, y, gen)
        yield mixed_x.to(x.dtype), mixed_y.to(y.dtype)
