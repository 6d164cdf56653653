"""Fine-tuning attack (Zhang 2018 Sec. 5.4, Zhong 2020 Table 1, Li 2019 Sec. 6): the thief
retrains the stolen model on its own labelled data, by default for 5 epochs at a lower rate."""

from __future__ import annotations

from dataclasses import replace

import torch
from pydantic import Field

from nnmark.attacks.base import AttackParams, RemovalAttack, register_attack
from nnmark.data.base import ImageDataset
from nnmark.training import TrainConfig, train
from nnmark.types import ModelSpec


class FineTuneParams(AttackParams):
    epochs: int = Field(5, ge=1, description="epochs of retraining on the attacker's data")
    lr: float = Field(5e-4, gt=0, description="learning rate (Adam)")


@register_attack
class FineTune(RemovalAttack):
    """Fine-tune the model on the attacker's data (all layers, Adam)."""

    name = "finetune"
    Params = FineTuneParams

    def run(
        self, model: torch.nn.Module, spec: ModelSpec, data: ImageDataset, config: TrainConfig, progress: bool
    ) -> torch.nn.Module:
        p = self.params
        assert isinstance(p, FineTuneParams)
        cfg = replace(config, epochs=p.epochs, lr=p.lr, optimizer="adam", schedule="none")
        train(model, data.train_x, data.train_y, cfg, progress=progress, description="attack: fine-tune")
        return model.cpu().eval()
