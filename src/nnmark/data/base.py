"""The dataset container every loader returns: uint8 images N×C×H×W plus int64 labels."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch


@dataclass(frozen=True)
class ImageDataset:
    """Train and test splits held as uint8 tensors (pixels 0–255), labels as int64.

    Models see ``x.float() / 255`` (inputs in [0, 1]); normalisation lives inside the model.
    """

    name: str
    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    num_classes: int
    class_names: tuple[str, ...] = ()

    @property
    def input_shape(self) -> tuple[int, int, int]:
        c, h, w = self.train_x.shape[1:]
        return int(c), int(h), int(w)

    def channel_stats(self) -> tuple[list[float], list[float]]:
        """Per-channel mean and std of the training images on the [0, 1] scale."""
        x = self.train_x.float().div_(255)
        mean = x.mean(dim=(0, 2, 3))
        std = x.std(dim=(0, 2, 3)).clamp_min(1e-3)
        return [round(float(v), 6) for v in mean], [round(float(v), 6) for v in std]


def data_dir(explicit: str | Path | None = None) -> Path:
    """Where dataset files are looked for: ``--data-dir``, else ``$NNMARK_DATA``, else ~/.nnmark/data."""
    if explicit is not None:
        return Path(explicit).expanduser()
    env = os.environ.get("NNMARK_DATA")
    if env:
        return Path(env).expanduser()
    return Path.home() / ".nnmark" / "data"
