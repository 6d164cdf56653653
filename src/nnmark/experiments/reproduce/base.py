"""What every paper reproduction shares: scales (tiny for tests ... full for a GPU), the datasets
this machine has, cell construction and the selection of records by their tags."""

from __future__ import annotations

import abc
import logging
import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, ClassVar

from nnmark.experiments.grid import Cell
from nnmark.experiments.reproduce.tables import Table

log = logging.getLogger(__name__)

#: where the Debian package puts Fashion-MNIST; tried when no --data-dir is given
FASHION_DEBIAN = "/usr/share/datasets/fashion-mnist"


@dataclass(frozen=True)
class Scale:
    """How big a reproduction is. ``small`` shortens every sweep to its ends and the paper's point."""

    name: str
    repeats: int
    epochs: int
    n_train: int | None
    n_test: int | None
    attack_epochs: int
    small: bool
    keys: int = 100
    fashion: bool = True
    random_keys: int = 1000
    #: clean reference models trained at embedding where p0 must be measured (0: no verdicts there)
    calibrate: int = 3


SCALES = {
    # the test suite: seconds per paper, tiny data, one repeat
    # (250 test images: the attacker's held-out share, 100 images, plus 100 kept to measure accuracy)
    "tiny": Scale("tiny", 1, 1, 200, 250, 1, True, keys=20, fashion=False, random_keys=2, calibrate=0),
    # 2 CPU cores, minutes
    "quick": Scale("quick", 2, 3, 2000, 1000, 2, True, keys=50, fashion=True, random_keys=20),
    # the largest CPU run: all of MNIST-5k, full sweeps
    "cpu": Scale("cpu", 3, 5, None, None, 3, False, keys=100, random_keys=100),
    # a GPU: 50 repeats where the papers used 50
    "full": Scale("full", 50, 20, None, None, 10, False, keys=100, random_keys=1000),
}


def get_scale(name: str, repeats: int | None = None) -> Scale:
    from nnmark.errors import NnmarkError

    if name not in SCALES:
        raise NnmarkError(f"unknown scale {name!r}; use {', '.join(SCALES)}")
    scale = SCALES[name]
    if repeats is not None:
        if repeats < 1:
            raise NnmarkError("--repeats must be at least 1")
        scale = replace(scale, repeats=repeats)
    return scale


@dataclass(frozen=True)
class DataChoice:
    """A dataset a reproduction runs on; ``paper`` names the paper's dataset it stands in for (or is),
    ``model`` the architecture trained on it."""

    name: str
    data_dir: str | None
    paper: str
    model: str = "digit-cnn"


#: datasets a user may supply (``--data-dir`` or $NNMARK_DATA), the paper dataset each is, and the
#: model trained on it: Namba's ResNet-32 for CIFAR (the papers' CIFAR models differ; captions say so)
SUPPLIED = (
    ("mnist", "MNIST", "digit-cnn"),
    ("cifar10", "CIFAR10", "resnet32"),
    ("cifar100", "CIFAR100", "resnet32"),
)


def available_datasets(scale: Scale, data_dir: str | None) -> tuple[list[DataChoice], list[str]]:
    """MNIST-5k (embedded), or the full MNIST where the user supplies its files; CIFAR-10/100 where
    supplied (``data_dir`` or $NNMARK_DATA); Fashion-MNIST where its files are (``data_dir``,
    $NNMARK_DATA or the Debian package's folder), else a note saying it was skipped."""
    from nnmark.data import load_dataset
    from nnmark.errors import NnmarkError

    if data_dir is not None and not Path(data_dir).is_dir():
        raise NnmarkError(f"--data-dir {data_dir}: no such folder")
    supplied = []
    for name, paper, model in SUPPLIED:
        try:
            load_dataset(name, data_dir)
        except NnmarkError:
            continue
        supplied.append(DataChoice(name, data_dir, paper, model))
    if any(d.name == "mnist" for d in supplied):
        chosen: list[DataChoice] = []
        notes = ["MNIST's own files were found: the papers' MNIST (60,000 / 10,000) is used."]
    else:
        chosen = [DataChoice("mnist5k", None, "MNIST")]
        notes = [
            "MNIST-5k (4,000 training / 1,000 test digits, embedded) stands in for the papers' MNIST "
            "(60,000 / 10,000)."
        ]
    chosen += supplied
    if any(d.model != "digit-cnn" for d in supplied):
        notes.append("CIFAR files were found: their cells train resnet32 (Namba's CIFAR model).")
    if not scale.fashion:
        return chosen, notes
    for where in [data_dir] if data_dir else [None, FASHION_DEBIAN]:
        try:
            load_dataset("fashion-mnist", where)
        except NnmarkError:
            continue
        chosen.append(DataChoice("fashion-mnist", where, "Fashion-MNIST"))
        return chosen, notes
    notes.append(
        "Fashion-MNIST skipped: no files found (install the Debian package or pass --data-dir with "
        "train-images-idx3-ubyte etc.)."
    )
    return chosen, notes


def split_sizes(scale: Scale, data: DataChoice) -> tuple[int, int]:
    """The training and test images a cell of ``scale`` has on ``data`` (the scale's caps applied)."""
    from nnmark.data import load_dataset

    full = load_dataset(data.name, data.data_dir)
    n_train, n_test = len(full.train_x), len(full.test_x)
    return min(scale.n_train or n_train, n_train), min(scale.n_test or n_test, n_test)


def held_out_fraction(scale: Scale, data: DataChoice, share: float = 0.5) -> float:
    """The attack ``fraction`` (a share of the owner's training-set size, :mod:`nnmark.attacks.data`)
    that gives the attacker ``share`` of the held-out split, the rest staying to measure accuracy."""
    n_train, n_test = split_sizes(scale, data)
    return round(share * n_test) / n_train


class Reproduction(abc.ABC):
    """One paper: the cells to run and the tables/figures made from their records."""

    paper: ClassVar[str]
    title: ClassVar[str]

    @abc.abstractmethod
    def cells(self, scale: Scale, datasets: list[DataChoice]) -> list[Cell]: ...

    @abc.abstractmethod
    def tables(
        self, records: list[dict[str, Any]], scale: Scale, datasets: list[DataChoice]
    ) -> list[Table]: ...

    def figures(self, records: list[dict[str, Any]], scale: Scale, out: Path) -> list[Path]:
        return []

    # -- helpers ------------------------------------------------------------------------------

    def cell(self, scale: Scale, data: DataChoice, seed: int, group: str, **kw: Any) -> Cell:
        tags = {"paper": self.paper, "group": group, **kw.pop("tags", {})}
        return {
            "task": "watermark",
            "dataset": data.name,
            "data_dir": data.data_dir,
            "n_train": scale.n_train,
            "n_test": scale.n_test,
            "model": data.model,
            "epochs": scale.epochs,
            "seed": seed,
            **kw,
            "tags": tags,
        }


def select(records: list[dict[str, Any]], **tags: Any) -> list[dict[str, Any]]:
    """Records with status ok whose config's tags (and ``dataset``) match ``tags``."""
    out = []
    for r in records:
        if r.get("status") != "ok":
            continue
        cfg = r["config"]
        have = {**cfg.get("tags", {}), "dataset": cfg.get("dataset")}
        if all(have.get(k) == v for k, v in tags.items()):
            out.append(r)
    return out


def verdict_shares(records: list[dict[str, Any]], stage: str) -> tuple[list[float], list[float]]:
    """Per record: 1.0 where the verdict on ``stage`` said "found" (else 0.0), and 1.0 where there was
    no verdict (else 0.0); records without that verdict are left out."""
    found, none = [], []
    for r in records:
        v = r.get("verdicts", {}).get(stage)
        if v is not None:
            found.append(1.0 if v["watermarked"] is True else 0.0)
            none.append(1.0 if v["watermarked"] is None else 0.0)
    return found, none


def pick(records: list[dict[str, Any]], *path: str) -> list[float]:
    """The number at ``path`` in each record (``metrics`` first unless the path starts at ``verdicts``
    or ``timings``), skipping records without it."""
    vals = []
    for r in records:
        node: Any = r
        for part in ("metrics", *path) if path[0] not in ("metrics", "verdicts", "timings") else path:
            if not isinstance(node, dict) or part not in node:
                node = None
                break
            node = node[part]
        if isinstance(node, bool):
            node = float(node)
        if isinstance(node, int | float) and not (isinstance(node, float) and math.isnan(node)):
            vals.append(float(node))
    return vals


#: what a caption says when some records predate ``test_accuracy_before`` (the fallback is not silent)
OLD_BEFORE = (
    " {n} record(s) predate test_accuracy_before: their 'before' is the unattacked model on all test "
    "images, not the held-out remainder the 'after' is measured on."
)


def before_attack(records: list[dict[str, Any]], stage: str) -> tuple[list[float], int]:
    """Per record holding ``stage``: the unattacked model's accuracy on the held-out images that
    stage's accuracy was measured on (``test_accuracy_before``), the 'before' beside an attack's
    'after' (Zhong Table 1's parentheses, Namba Table 3's "no inv."). A record written before that
    metric existed gives ``model``'s test_accuracy (all test images) instead; the second value counts
    those, for the caption (:data:`OLD_BEFORE`)."""
    vals: list[float] = []
    old = 0
    for r in records:
        m = r.get("metrics", {})
        if stage not in m:
            continue
        v = m[stage].get("test_accuracy_before")
        if v is None:
            v = m.get("model", {}).get("test_accuracy")
            old += v is not None
        if isinstance(v, int | float) and not math.isnan(v):
            vals.append(float(v))
    return vals, old
