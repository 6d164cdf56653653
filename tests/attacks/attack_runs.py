"""Fixtures for the attack tests, imported by each test file (a second conftest.py would shadow
tests/conftest.py): small owner data (1,000 training and 1,000 held-out digits, so a 10 %
attacker draws 100 held-out images and 900 stay for accuracy) and tiny watermarked dnn1 runs
(a few seconds each)."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import subset
from nnmark.data.base import ImageDataset
from nnmark.training import TrainConfig
from nnmark.workflow import embed_run


@pytest.fixture(scope="session")
def owner_data(mnist5k: ImageDataset) -> ImageDataset:
    return subset(mnist5k, 1000, 1000)


#: runs made this session: each test module imports the fixtures (so pytest sees one fixture per
#: module), but every run is embedded once
_MADE: dict[str, Path] = {}


@pytest.fixture(scope="session")
def content_run(owner_data: ImageDataset, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """dnn1 with 40 zhang-content keys (target 0), watermark accuracy 1.0 after 6 epochs
    (0.82 after 4: the keys carry 4 secret texts, 10 keys each)."""
    if "content" in _MADE:
        return _MADE["content"]
    out = _MADE["content"] = tmp_path_factory.mktemp("attacks") / "content"
    embed_run(
        "zhang-content", {"target": 0, "keys": 40}, owner_data, "dnn1", TrainConfig(epochs=6, seed=0), out,
        calibrate=0, key_seed=0, progress=False,
    )  # fmt: skip
    return out


@pytest.fixture(scope="session")
def label_change_run(owner_data: ImageDataset, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """dnn1 with Namba's 30 label-change keys, a weak watermark (about half the keys) after 6 epochs."""
    if "label-change" in _MADE:
        return _MADE["label-change"]
    out = _MADE["label-change"] = tmp_path_factory.mktemp("attacks") / "label-change"
    embed_run(
        "label-change", {}, owner_data, "dnn1", TrainConfig(epochs=6, seed=0), out,
        calibrate=0, key_seed=0, progress=False,
    )  # fmt: skip
    return out
