"""Transfer learning, and the owner's recovery step (Li et al. 2019, Sec. 8.4, Tables 7-8).

The thief uses the stolen (teacher) model for its own task: the output layer is replaced by a new
one with the student task's classes and the model is fine-tuned on the student's data (Li A.3:
SGD, learning rate 0.01, decay 0, 200 epochs; ``layers`` "last" trains the new layer only, "all"
every layer — Table 7's "Added Layers" and "All Layers"). The student's task is the attacker's
data: another dataset with its own labels (``--attacker-data``; MNIST → Fashion-MNIST is nnmark's
analogue of Li's traffic-sign transfer). The student's accuracy is measured on a held-out fifth
of the attacker's images.

The owner then recovers a verifiable model from the student (Table 8): the student's output
layer is replaced by a random layer sized like the teacher's output and fine-tuned 6 epochs on
the teacher's (owner's) training data, the rest of the student frozen ("Last Layer"; the owner's
recipe at its last learning rate). The attack returns this *recovered* model — it has the
owner's outputs, so the owner's keys can be verified on it (``metrics.json``: the verdicts, and
the student's accuracy as ``student_accuracy``).

``ew`` (:class:`nnmark.attacks.base.EwParams`; default: the victim run's EW temperature): the
student is fine-tuned with the stolen model's EW layers in place, as Namba's thief would retrain
f_K (Sec. 5.2); the new output layers are ordinary ones (the thief's and the owner's own), so
with ``layers=last`` EW changes nothing but float rounding.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Literal

import torch
from pydantic import Field
from torch import nn

from nnmark.attacks.base import EwParams, RemovalAttack, register_attack
from nnmark.attacks.removal.finetune import attacker_config, last_layer
from nnmark.data.base import ImageDataset
from nnmark.errors import NnmarkError
from nnmark.training import TrainConfig, evaluate, train
from nnmark.types import ModelSpec


class TransferParams(EwParams):
    layers: Literal["last", "all"] = Field("all", description="student fine-tuning: new layer only, or all")
    epochs: int = Field(200, ge=1, description="student fine-tuning epochs (Li A.3: 200)")
    lr: float = Field(0.01, gt=0, description="student fine-tuning learning rate, SGD (Li A.3: 0.01)")
    recovery_epochs: int = Field(6, ge=0, description="owner's recovery fine-tuning epochs (Li Table 8: 6)")


def replace_head(model: nn.Module, classes: int, seed: int) -> nn.Linear:
    """Swap the output layer for a fresh ``nn.Linear`` with ``classes`` outputs (seeded); returns it."""
    head = last_layer(model)
    if not isinstance(head, nn.Linear):
        raise NnmarkError("transfer needs a model whose output layer is dense")
    torch.manual_seed(seed)
    new = nn.Linear(head.in_features, classes)
    for module in model.modules():
        for child_name, child in module.named_children():
            if child is head:
                setattr(module, child_name, new)
                return new
    raise NnmarkError("could not find the output layer to replace")


def train_layers(model: nn.Module, only: nn.Module | None, x: torch.Tensor, y: torch.Tensor, cfg: TrainConfig,
                 progress: bool, what: str) -> None:  # fmt: skip
    """Train ``model`` on (x, y); with ``only`` given every other parameter is frozen."""
    keep = {id(p) for p in only.parameters()} if only is not None else None
    for p in model.parameters():
        p.requires_grad_(keep is None or id(p) in keep)
    try:
        train(model, x, y, cfg, progress=progress, description=what)
    finally:
        for p in model.parameters():
            p.requires_grad_(True)


@register_attack
class Transfer(RemovalAttack[TransferParams]):
    """Transfer learning to the attacker's task, then the owner's recovery of its outputs (Li 2019 8.4)."""

    name = "transfer"

    def run(
        self, model: torch.nn.Module, spec: ModelSpec, data: ImageDataset, config: TrainConfig, progress: bool
    ) -> torch.nn.Module:
        p = self.params
        n = len(data.train_x)
        if n < 10:
            raise NnmarkError(
                "transfer needs at least 10 attacker images (a fifth is kept to measure the student)"
            )
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(config.seed + 31))
        held, fit = perm[: n // 5], perm[n // 5 :]
        classes = int(max(data.num_classes, int(data.train_y.max()) + 1))
        head = replace_head(model, classes, config.seed)
        student_cfg = replace(config, epochs=p.epochs, lr=p.lr, optimizer="sgd", weight_decay=0.0,
                              schedule="none", augment="none")  # fmt: skip
        train_layers(model, head if p.layers == "last" else None, data.train_x[fit], data.train_y[fit],
                     student_cfg, progress, "attack: transfer")  # fmt: skip
        student_accuracy = evaluate(model, data.train_x[held], data.train_y[held])
        owner = self.owner_data
        if owner is None:
            raise NnmarkError(
                "transfer's recovery step needs the owner's training data (run it via attack_run)"
            )
        recovered_head = replace_head(model, spec.num_classes, config.seed + 1)
        if p.recovery_epochs:
            cfg = attacker_config(config, "owner", None, None, p.recovery_epochs)
            train_layers(
                model, recovered_head, owner.train_x, owner.train_y, cfg, progress, "owner: recovery"
            )
        self.report = {
            "student_classes": classes,
            "student_accuracy": student_accuracy,
            "student_layers": p.layers,
            "student_epochs": p.epochs,
            "recovery_epochs": p.recovery_epochs,
        }
        return model.cpu().eval()
