"""IDX-format datasets: MNIST, Fashion-MNIST and EMNIST from their standard files.

The IDX format (LeCun et al., http://yann.lecun.com/exdb/mnist/) is a 4-byte magic number
``0x00 0x00 <type> <ndim>``, then ``ndim`` big-endian uint32 sizes, then the values in
row-major order. Every file may be stored plain (``train-images-idx3-ubyte``) or gzipped
(``train-images-idx3-ubyte.gz``); both names are accepted, and gzip is recognised by content.
"""

from __future__ import annotations

import gzip
import logging
import string
import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from nnmark.data.base import ImageDataset
from nnmark.errors import NnmarkError

log = logging.getLogger(__name__)

IDX_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}

#: Where the Debian package ``dataset-fashion-mnist`` installs the four gzipped files.
FASHION_MNIST_SYSTEM_DIR = Path("/usr/share/datasets/fashion-mnist")

FASHION_MNIST_CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
DIGITS = tuple(string.digits)

#: EMNIST splits (Cohen et al. 2017): class names in label order, and the first label's value.
EMNIST_SPLITS: dict[str, tuple[tuple[str, ...], int]] = {
    "letters": (tuple(string.ascii_lowercase), 1),  # labels 1..26 = a..z (upper/lower merged)
    "digits": (DIGITS, 0),
    "mnist": (DIGITS, 0),
    "balanced": (tuple(string.digits + string.ascii_uppercase + "abdefghnqrt"), 0),
    "bymerge": (tuple(string.digits + string.ascii_uppercase + "abdefghnqrt"), 0),
    "byclass": (tuple(string.digits + string.ascii_uppercase + string.ascii_lowercase), 0),
}


def parse_idx(raw: bytes, source: str | Path = "<bytes>") -> np.ndarray:
    """Decode the (already decompressed) bytes of one IDX file; ``source`` names it in errors."""
    fix = "download the file again"
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in IDX_DTYPES or raw[3] == 0:
        raise NnmarkError(
            f"{source} is not an IDX file (bad magic number {raw[:4].hex() or 'none'}); {fix}"
        )
    dtype, ndim = IDX_DTYPES[raw[2]], raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise NnmarkError(f"{source} is truncated inside its IDX header; {fix}")
    dims = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    expected = int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    if len(raw) - header != expected:
        raise NnmarkError(
            f"{source} is truncated or corrupt: its header promises {expected} bytes of data "
            f"(shape {dims}) but it holds {len(raw) - header}; {fix}"
        )
    values = np.frombuffer(raw, dtype=dtype, count=expected // dtype.itemsize, offset=header)
    # astype copies: the result is writable and in native byte order.
    return values.reshape(dims).astype(dtype.newbyteorder("="))


def read_idx(path: str | Path) -> np.ndarray:
    """Read one IDX file, gzipped or not, into an array of the shape its header records."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise NnmarkError(
            f"cannot read {path}: {e.strerror or e}; check that it is readable"
        ) from None
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as e:
            raise NnmarkError(
                f"{path} is a corrupt or truncated gzip file ({e}); download it again"
            ) from None
    return parse_idx(raw, path)


def find_idx_file(directory: Path, name: str) -> Path | None:
    """``directory/name`` or ``directory/name.gz``, whichever exists first; else None."""
    for candidate in (directory / name, directory / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    return None


def _idx_names(prefix: str) -> tuple[str, str, str, str]:
    return (
        f"{prefix}train-images-idx3-ubyte",
        f"{prefix}train-labels-idx1-ubyte",
        f"{prefix}test-images-idx3-ubyte" if prefix else "t10k-images-idx3-ubyte",
        f"{prefix}test-labels-idx1-ubyte" if prefix else "t10k-labels-idx1-ubyte",
    )


def _locate(
    dataset: str, dirs: Sequence[Path], names: Sequence[str], how_to_get: str
) -> list[Path]:
    """The files ``names`` from the first directory of ``dirs`` that has all of them."""
    best: tuple[Path, list[str]] | None = None
    for directory in dirs:
        found = [find_idx_file(directory, n) for n in names]
        if all(p is not None for p in found):
            return [p for p in found if p is not None]
        missing = [n for n, p in zip(names, found, strict=True) if p is None]
        if len(missing) < len(names) and (best is None or len(missing) < len(best[1])):
            best = (directory, missing)
    looked = ", ".join(str(d) for d in dirs)
    if best is not None:
        raise NnmarkError(
            f"dataset {dataset!r} is incomplete in {best[0]}: missing {', '.join(best[1])} "
            f"(plain or .gz); {how_to_get}"
        )
    raise NnmarkError(
        f"dataset {dataset!r} not found: looked for {names[0]}[.gz] and its 3 companion "
        f"files in {looked}; {how_to_get}"
    )


def _read_split(images_path: Path, labels_path: Path) -> tuple[np.ndarray, np.ndarray]:
    images, labels = read_idx(images_path), read_idx(labels_path)
    if images.ndim != 3 or images.dtype != np.uint8:
        raise NnmarkError(
            f"{images_path} holds {images.dtype} values of shape {images.shape}, expected "
            "unsigned bytes of shape N×H×W; is it an images file?"
        )
    if labels.ndim != 1 or labels.dtype != np.uint8:
        raise NnmarkError(
            f"{labels_path} holds {labels.dtype} values of shape {labels.shape}, expected "
            "unsigned bytes of shape N; is it a labels file?"
        )
    if len(images) != len(labels):
        raise NnmarkError(
            f"{images_path} has {len(images)} images but {labels_path} has {len(labels)} "
            "labels; the two files do not belong together, download them again"
        )
    return images, labels


def load_idx_dataset(
    dataset: str,
    dirs: Sequence[Path],
    names: Sequence[str],
    class_names: Sequence[str],
    *,
    how_to_get: str,
    first_label: int = 0,
    transpose: bool = False,
) -> ImageDataset:
    """Load an IDX dataset from the first of ``dirs`` that holds all four ``names``.

    ``names`` are train images, train labels, test images, test labels (without ``.gz``).
    Labels are shifted so that ``first_label`` becomes 0; ``transpose`` swaps H and W.
    """
    paths = _locate(dataset, dirs, names, how_to_get)
    num_classes = len(class_names)
    parts: list[torch.Tensor] = []
    for images_path, labels_path in ((paths[0], paths[1]), (paths[2], paths[3])):
        images, labels = _read_split(images_path, labels_path)
        y = labels.astype(np.int64) - first_label
        if len(y) and (y.min() < 0 or y.max() >= num_classes):
            raise NnmarkError(
                f"{labels_path} has labels from {int(labels.min())} to {int(labels.max())}, "
                f"expected {first_label}..{first_label + num_classes - 1} for {dataset}; "
                "is it the right file?"
            )
        if transpose:
            images = images.transpose(0, 2, 1)
        parts.append(torch.from_numpy(np.ascontiguousarray(images[:, None])))
        parts.append(torch.from_numpy(y))
    if parts[0].shape[1:] != parts[2].shape[1:]:
        raise NnmarkError(
            f"{paths[0]} holds images of size {tuple(parts[0].shape[2:])} but {paths[2]} of "
            f"size {tuple(parts[2].shape[2:])}; the files do not belong together"
        )
    log.debug(
        "%s: loaded %d train / %d test from %s",
        dataset,
        len(parts[1]),
        len(parts[3]),
        paths[0].parent,
    )
    return ImageDataset(
        name=dataset,
        train_x=parts[0],
        train_y=parts[1],
        test_x=parts[2],
        test_y=parts[3],
        num_classes=num_classes,
        class_names=tuple(class_names),
    )


def _user_hint(dataset: str, root: Path, files: Sequence[str]) -> str:
    return (
        f"put the standard files ({', '.join(files)}, plain or .gz) in {root / dataset}/ "
        "(choose the folder with --data-dir or $NNMARK_DATA)"
    )


def load_mnist(root: Path) -> ImageDataset:
    """MNIST: 60,000 train / 10,000 test handwritten digits, 28×28 grey, from the IDX files.

    Reads ``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``,
    ``t10k-images-idx3-ubyte`` and ``t10k-labels-idx1-ubyte`` (each plain or ``.gz``) from
    ``<root>/mnist/``, ``<root>/MNIST/raw/`` (torchvision's layout) or ``<root>`` itself.
    """
    names = _idx_names("")
    dirs = [root / "mnist", root / "MNIST" / "raw", root]
    return load_idx_dataset(
        "mnist", dirs, names, DIGITS, how_to_get=_user_hint("mnist", root, names)
    )


def load_fashion_mnist(root: Path) -> ImageDataset:
    """Fashion-MNIST: 60,000 train / 10,000 test 28×28 grey clothing images, 10 classes.

    Reads the MNIST-named IDX files (``train-images-idx3-ubyte[.gz]`` ...) from
    ``<root>/fashion-mnist/``, ``<root>/FashionMNIST/raw/`` (torchvision's layout), then
    ``/usr/share/datasets/fashion-mnist/`` where Debian's ``dataset-fashion-mnist`` package
    installs them gzipped.
    """
    names = _idx_names("")
    dirs = [root / "fashion-mnist", root / "FashionMNIST" / "raw", FASHION_MNIST_SYSTEM_DIR]
    how = (
        "install it with `apt-get install dataset-fashion-mnist` (`make bench` does this), "
        f"or {_user_hint('fashion-mnist', root, names)}"
    )
    return load_idx_dataset("fashion-mnist", dirs, names, FASHION_MNIST_CLASSES, how_to_get=how)


def load_emnist(root: Path, split: str = "letters") -> ImageDataset:
    """EMNIST letters: 124,800 train / 20,800 test 28×28 grey handwritten letters, 26 classes.

    Reads ``emnist-<split>-train-images-idx3-ubyte``, ``emnist-<split>-train-labels-idx1-ubyte``
    and the two ``-test-`` files (each plain or ``.gz``) from ``<root>/emnist/``,
    ``<root>/emnist/gzip/`` (the layout of the official ``gzip.zip``) or ``<root>``. EMNIST
    stores each image transposed; it is transposed back so that letters read upright. The
    letters split numbers its classes 1..26 (a..z); they become 0..25. Other splits:
    ``digits``, ``mnist``, ``balanced``, ``bymerge``, ``byclass``.
    """
    if split not in EMNIST_SPLITS:
        raise NnmarkError(
            f"unknown EMNIST split {split!r}; choose one of {', '.join(EMNIST_SPLITS)}"
        )
    class_names, first_label = EMNIST_SPLITS[split]
    names = _idx_names(f"emnist-{split}-")
    dirs = [root / "emnist", root / "emnist" / "gzip", root / "gzip", root]
    dataset = "emnist" if split == "letters" else f"emnist-{split}"
    return load_idx_dataset(
        dataset,
        dirs,
        names,
        class_names,
        how_to_get=_user_hint("emnist", root, names),
        first_label=first_label,
        transpose=True,
    )
