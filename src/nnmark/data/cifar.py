"""CIFAR-10 and CIFAR-100 from the official "python version" pickles (Krizhevsky 2009).

Reads ``cifar-10-batches-py/`` (``data_batch_1`` .. ``data_batch_5``, ``test_batch``,
``batches.meta``) and ``cifar-100-python/`` (``train``, ``test``, ``meta``; fine labels),
extracted or still inside ``cifar-10-python.tar.gz`` / ``cifar-100-python.tar.gz``.

The files are Python pickles, which can run code when loaded. They are acceptable here only
because they are the official files that the user downloaded and placed locally, and they are
read with an unpickler that refuses every global except the few numpy needs to rebuild an
array, so a tampered file fails instead of running code.
"""

from __future__ import annotations

import importlib
import io
import logging
import pickle
import tarfile
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

from nnmark.data.base import ImageDataset
from nnmark.errors import NnmarkError

log = logging.getLogger(__name__)

CIFAR10_CLASSES = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)

# Globals a pickle of arrays and bytes may reference (protocols 2 to 5, numpy 1 and 2 names).
_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"),
    ("numpy._core.numeric", "_frombuffer"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("_codecs", "encode"),  # how Python 3 writes bytes at protocol 2
}


# What a corrupt or hostile pickle can raise while being decoded.
_PICKLE_ERRORS = (
    pickle.UnpicklingError,
    EOFError,
    ValueError,
    TypeError,
    AttributeError,
    IndexError,
    KeyError,
    ImportError,
    OverflowError,
    MemoryError,
    RecursionError,
)


class _ArrayOnlyUnpickler(pickle.Unpickler):
    """An unpickler that only rebuilds plain containers and numpy arrays."""

    def find_class(self, module: str, name: str) -> object:
        if (module, name) not in _ALLOWED_GLOBALS:
            raise pickle.UnpicklingError(f"refusing to load global {module}.{name}")
        # numpy 2 renamed numpy.core to numpy._core; try the current name first.
        for candidate in (module.replace("numpy.core", "numpy._core"), module):
            try:
                return getattr(importlib.import_module(candidate), name)
            except (ImportError, AttributeError):
                continue
        raise pickle.UnpicklingError(f"cannot find {module}.{name} in this numpy")


def unpickle_cifar(raw: bytes, source: str | Path) -> dict[bytes, object]:
    """Decode one CIFAR pickle (``encoding="bytes"``, as the official page says) into a dict."""
    try:
        obj = _ArrayOnlyUnpickler(io.BytesIO(raw), encoding="bytes").load()
    except _PICKLE_ERRORS as e:
        raise NnmarkError(
            f"{source} is not a valid CIFAR python pickle ({type(e).__name__}: {e}); "
            "download the 'python version' archive again"
        ) from None
    if not isinstance(obj, dict):
        raise NnmarkError(
            f"{source} holds a {type(obj).__name__}, not the dict of a CIFAR batch; "
            "download the 'python version' archive again"
        )
    # Keys are bytes in the official (Python 2) files; accept str keys from re-pickled copies.
    return {k.encode() if isinstance(k, str) else k: v for k, v in obj.items()}


Reader = Callable[[str], dict[bytes, object]]


def _dir_reader(directory: Path) -> Reader:
    def read(member: str) -> dict[bytes, object]:
        path = directory / member
        try:
            raw = path.read_bytes()
        except OSError as e:
            raise NnmarkError(
                f"cannot read {path}: {e.strerror or e}; the CIFAR folder {directory} is "
                "incomplete, extract the 'python version' archive again"
            ) from None
        return unpickle_cifar(raw, path)

    return read


def _tar_reader(archive: Path, folder: str) -> Reader:
    members: dict[str, bytes] = {}

    def load_all() -> None:
        # One pass over the (gzipped) archive: seeking member by member would decompress
        # it again for each file.
        try:
            with tarfile.open(archive, "r:*") as tar:
                for info in tar:
                    handle = tar.extractfile(info) if info.isfile() else None
                    if handle is not None and info.name.startswith(f"{folder}/"):
                        members[info.name[len(folder) + 1 :]] = handle.read()
        except (tarfile.TarError, OSError, EOFError) as e:
            raise NnmarkError(
                f"{archive} is a corrupt or truncated archive ({e}); download it again"
            ) from None

    def read(member: str) -> dict[bytes, object]:
        if not members:
            load_all()
        if member not in members:
            raise NnmarkError(
                f"{archive} has no member {folder}/{member}; is it the CIFAR 'python version' "
                "archive? download it again"
            )
        return unpickle_cifar(members[member], f"{archive}:{folder}/{member}")

    return read


def _find_cifar(
    dataset: str,
    root: Path,
    folder: str,
    aliases: Sequence[str],
    required: Sequence[str],
    archive: str,
) -> tuple[Reader, str]:
    """A reader for the first extracted folder (or archive) found, and where it is."""
    dirs = [root / folder]
    for alias in aliases:
        dirs += [root / alias / folder, root / alias]
    dirs.append(root)
    for directory in dirs:
        if all((directory / name).is_file() for name in required):
            return _dir_reader(directory), str(directory)
    archives = [root / archive] + [root / alias / archive for alias in aliases]
    for path in archives:
        if path.is_file():
            return _tar_reader(path, folder), str(path)
    looked = ", ".join(str(p) for p in dirs + archives)
    raise NnmarkError(
        f"dataset {dataset!r} not found: looked for {'/'.join(required)} in {looked}; "
        f"download the CIFAR 'python version' archive ({archive}) and put it, or the "
        f"{folder}/ folder extracted from it, in {root / aliases[0]}/ "
        "(choose the folder with --data-dir or $NNMARK_DATA)"
    )


def _batch(
    batch: dict[bytes, object], label_key: bytes, num_classes: int, source: str
) -> tuple[np.ndarray, np.ndarray]:
    data, labels = batch.get(b"data"), batch.get(label_key)
    if not isinstance(data, np.ndarray) or labels is None:
        raise NnmarkError(
            f"{source} lacks the {b'data'!r} array or the {label_key!r} list of a CIFAR "
            "batch; is it the right file?"
        )
    y = np.asarray(labels, dtype=np.int64).reshape(-1)
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise NnmarkError(
            f"{source} holds {data.dtype} data of shape {data.shape}, expected uint8 rows of "
            "3072 pixels; is it the right file?"
        )
    if len(y) != len(data) or (len(y) and (y.min() < 0 or y.max() >= num_classes)):
        raise NnmarkError(
            f"{source} has {len(data)} images and {len(y)} labels (expected as many, each in "
            f"0..{num_classes - 1}); download the archive again"
        )
    return data.reshape(-1, 3, 32, 32), y


def _names(
    meta: dict[bytes, object], key: bytes, fallback: Sequence[str], n: int
) -> tuple[str, ...]:
    raw = meta.get(key)
    if isinstance(raw, list) and len(raw) == n:
        return tuple(v.decode() if isinstance(v, bytes) else str(v) for v in raw)
    return tuple(fallback)


def _dataset(
    name: str,
    train: Sequence[tuple[np.ndarray, np.ndarray]],
    test: tuple[np.ndarray, np.ndarray],
    num_classes: int,
    class_names: tuple[str, ...],
) -> ImageDataset:
    train_x = np.concatenate([x for x, _ in train])
    train_y = np.concatenate([y for _, y in train])
    return ImageDataset(
        name=name,
        train_x=torch.from_numpy(np.ascontiguousarray(train_x)),
        train_y=torch.from_numpy(np.ascontiguousarray(train_y)),
        test_x=torch.from_numpy(np.ascontiguousarray(test[0])),
        test_y=torch.from_numpy(np.ascontiguousarray(test[1])),
        num_classes=num_classes,
        class_names=class_names,
    )


def load_cifar10(root: Path) -> ImageDataset:
    """CIFAR-10: 50,000 train / 10,000 test 32×32 colour images, 10 classes.

    Reads ``data_batch_1`` .. ``data_batch_5``, ``test_batch`` and ``batches.meta`` from
    ``cifar-10-batches-py/`` under ``<root>`` or ``<root>/cifar10/`` (or those files directly
    in ``<root>/cifar10/``), else from ``cifar-10-python.tar.gz`` in the same places.
    """
    read, where = _find_cifar(
        "cifar10",
        root,
        "cifar-10-batches-py",
        ("cifar10", "cifar-10", "CIFAR10"),
        ("data_batch_1", "test_batch"),
        "cifar-10-python.tar.gz",
    )
    train = [
        _batch(read(f"data_batch_{i}"), b"labels", 10, f"{where}/data_batch_{i}")
        for i in range(1, 6)
    ]
    test = _batch(read("test_batch"), b"labels", 10, f"{where}/test_batch")
    try:
        names = _names(read("batches.meta"), b"label_names", CIFAR10_CLASSES, 10)
    except NnmarkError as e:
        log.warning("cifar10: using the standard class names: %s", e)
        names = CIFAR10_CLASSES
    log.debug("cifar10: loaded from %s", where)
    return _dataset("cifar10", train, test, 10, names)


def load_cifar100(root: Path) -> ImageDataset:
    """CIFAR-100: 50,000 train / 10,000 test 32×32 colour images, 100 fine classes.

    Reads ``train``, ``test`` and ``meta`` (fine labels and their names) from
    ``cifar-100-python/`` under ``<root>`` or ``<root>/cifar100/`` (or those files directly
    in ``<root>/cifar100/``), else from ``cifar-100-python.tar.gz`` in the same places.
    """
    read, where = _find_cifar(
        "cifar100",
        root,
        "cifar-100-python",
        ("cifar100", "cifar-100", "CIFAR100"),
        ("train", "test"),
        "cifar-100-python.tar.gz",
    )
    train = _batch(read("train"), b"fine_labels", 100, f"{where}/train")
    test = _batch(read("test"), b"fine_labels", 100, f"{where}/test")
    fallback = tuple(f"class_{i}" for i in range(100))
    try:
        names = _names(read("meta"), b"fine_label_names", fallback, 100)
    except NnmarkError as e:
        log.warning("cifar100: class names unavailable: %s", e)
        names = fallback
    log.debug("cifar100: loaded from %s", where)
    return _dataset("cifar100", [train], test, 100, names)
