# ruff: noqa: F811  (fixtures imported from attack_runs)
"""Every registered attack (parametrised over the registry, so a new file is tested the moment it
exists): runs on a tiny watermarked model, returns a new model, leaves the victim's run folder
byte-identical, and writes metrics.json with its cost and the verdict of every key; the
attacker's data never overlaps the owner's training images."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest
import torch
from attack_runs import content_run, owner_data  # noqa: F401  (fixtures)

from nnmark.attacks import ATTACKS
from nnmark.attacks.data import attacker_data, image_hashes
from nnmark.attacks.run import attack_run
from nnmark.data.base import ImageDataset
from nnmark.errors import NnmarkError
from nnmark.io import read_json
from nnmark.training import TrainConfig
from nnmark.workflow import load_model

#: settings that keep each attack to a second or two on the tiny model (defaults otherwise)
QUICK: dict[str, dict[str, Any]] = {
    "finetune": {"epochs": 1},
    "prune": {"epochs": 1, "rate": 0.5},
    "piracy": {"epochs": 1},
    "neuron-prune": {"rate": 0.3},
    "fine-prune": {"epochs": 1},
    "distill": {"epochs": 2},
    "transfer": {"epochs": 1, "recovery_epochs": 1},
    "neural-cleanse": {"steps": 5, "batch_size": 16},
}


def digest(folder: Path) -> dict[str, str]:
    return {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()
    }


@pytest.mark.parametrize("name", ATTACKS.names())
def test_attack_writes_a_new_run_and_leaves_the_victim(
    name: str,
    content_run: Path,
    owner_data: ImageDataset,
    tmp_path: Path,
) -> None:
    before = digest(content_run)
    result = attack_run(
        name, content_run, tmp_path / "out", owner_data, TrainConfig(epochs=1, seed=0),
        settings=QUICK.get(name, {}), attacker_fraction=0.1, keys=[content_run / "watermark.key"],
        progress=False,
    )  # fmt: skip
    assert digest(content_run) == before  # the victim's folder, byte for byte
    victim, attacked = load_model(content_run), load_model(tmp_path / "out")
    changed = [
        not torch.equal(a, b)
        for a, b in zip(victim.state_dict().values(), attacked.state_dict().values(), strict=True)
    ]
    assert any(changed) == ATTACKS.get(name).changes_model
    metrics = read_json(tmp_path / "out" / "metrics.json", "metrics")
    for field in ("accuracy_before", "accuracy_after", "seconds", "queries", "attacker_data", "verdicts"):
        assert field in metrics, field
    assert metrics["seconds"] > 0
    assert metrics["attacker_data"]["images"] == 100  # 10 % of the owner's 1,000 training images
    assert metrics["attacker_data"]["overlap_with_owner_training"] == 0
    assert metrics["verdicts"][0]["key"] == str(content_run / "watermark.key")
    assert metrics["verdicts"][0]["scheme"] == "zhang-content"
    assert len(result.verdicts) == len(metrics["verdicts"])


def test_attacker_data_is_disjoint_from_the_owner_training_split(owner_data: ImageDataset) -> None:
    drawn = attacker_data(owner_data, 0.1, seed=3)
    owner = set(image_hashes(owner_data.train_x))
    attacker = image_hashes(drawn.data.train_x)
    evaluation = set(image_hashes(drawn.data.test_x))
    assert len(attacker) == 100 and not owner & set(attacker)
    assert not evaluation & set(attacker)  # accuracy is never measured on the attacker's images
    assert len(evaluation) + len(set(attacker)) <= len(owner_data.test_x)
    with pytest.raises(NnmarkError, match="attacker-data"):
        attacker_data(owner_data, 0.95, seed=0)  # more than the held-out split can give


def test_another_dataset_never_gives_the_owner_its_own_images(owner_data: ImageDataset) -> None:
    # a dataset that contains the owner's training images (full MNIST for MNIST-5k, say)
    mixed = ImageDataset(
        "other", torch.cat([owner_data.train_x, owner_data.test_x[:200]]),
        torch.cat([owner_data.train_y, owner_data.test_y[:200]]),
        owner_data.test_x[:10], owner_data.test_y[:10], 10,
    )  # fmt: skip
    drawn = attacker_data(owner_data, 0.15, seed=0, other=mixed)
    assert len(drawn.data.train_x) == 150
    assert not set(image_hashes(owner_data.train_x)) & set(image_hashes(drawn.data.train_x))
    assert drawn.info["owner_images_excluded"] == 1000
    with pytest.raises(NnmarkError, match="not the owner's training images"):
        attacker_data(owner_data, 0.25, seed=0, other=mixed)  # only 200 are not the owner's
