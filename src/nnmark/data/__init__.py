"""Datasets by name: ``load_dataset("mnist5k")`` returns an :class:`ImageDataset`.

Every loader is a function ``loader(root: Path) -> ImageDataset`` registered in
:data:`DATASETS`; ``root`` is the data directory (``--data-dir``, ``$NNMARK_DATA`` or
``~/.nnmark/data``) where the standard files of each dataset are looked for. ``mnist5k`` is
embedded (it ships inside nnmark) and needs no files. No torchvision, no downloads.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from pathlib import Path

import torch

from nnmark.data import base, cifar, idx, mnist5k
from nnmark.data.base import ImageDataset, data_dir
from nnmark.registry import Registry

__all__ = [
    "DATASETS",
    "ImageDataset",
    "clear_dataset_cache",
    "data_dir",
    "describe_dataset",
    "load_dataset",
]

log = logging.getLogger(__name__)

DATASETS: Registry[Callable[[Path], ImageDataset]] = Registry("dataset")

for _name, _loader in (
    ("mnist5k", mnist5k.load_mnist5k),
    ("mnist", idx.load_mnist),
    ("fashion-mnist", idx.load_fashion_mnist),
    ("emnist", idx.load_emnist),
    ("cifar10", cifar.load_cifar10),
    ("cifar100", cifar.load_cifar100),
):
    DATASETS.register(_name)(_loader)


def load_dataset(name: str, data_dir: str | Path | None = None) -> ImageDataset:
    """Load dataset ``name`` from ``data_dir`` (default: ``$NNMARK_DATA`` or ~/.nnmark/data).

    Results are cached in-process per (name, resolved directory), so repeated loads are free;
    the returned tensors are shared between callers and must not be modified in place.
    Raises NnmarkError for an unknown name or missing/corrupt files.
    """
    DATASETS.get(name)  # unknown name: NnmarkError listing the known ones
    root = base.data_dir(data_dir).resolve()
    return _load_cached(name, root)


@functools.lru_cache(maxsize=8)
def _load_cached(name: str, root: Path) -> ImageDataset:
    ds = DATASETS.get(name)(root)
    _check(ds)
    log.info(
        "dataset %s: %d train / %d test images of shape %s, %d classes",
        name,
        len(ds.train_y),
        len(ds.test_y),
        ds.input_shape,
        ds.num_classes,
    )
    return ds


def _check(ds: ImageDataset) -> None:
    """Guard the contract every loader promises (a broken loader is a bug, not a user error)."""
    for x, y in ((ds.train_x, ds.train_y), (ds.test_x, ds.test_y)):
        if x.dtype != torch.uint8 or x.ndim != 4 or y.dtype != torch.int64 or y.ndim != 1:
            raise TypeError(f"loader for {ds.name!r} broke the uint8 N×C×H×W / int64 N contract")
        if len(x) != len(y):
            raise ValueError(f"loader for {ds.name!r} returned {len(x)} images, {len(y)} labels")


def clear_dataset_cache() -> None:
    """Forget every dataset loaded so far (frees memory; files are read again next time)."""
    _load_cached.cache_clear()


def describe_dataset(name: str) -> str:
    """One line about dataset ``name``: the first line of its loader's docstring."""
    doc = DATASETS.get(name).__doc__ or ""
    lines = doc.strip().splitlines()
    return lines[0].strip() if lines else name
