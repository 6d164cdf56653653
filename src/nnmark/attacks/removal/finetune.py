"""Fine-tuning attacks: the thief retrains the stolen model on its own labelled data.

Four modes (Adi et al., "Turning Your Weakness Into a Strength", USENIX Security 2018, Sec. 5.2,
used by Zhang 2018 Sec. 5.4 and Zhong 2020 Table 1 under the name "fine-tuning"):

* ``ftll`` — fine-tune the last layer only (every other parameter frozen);
* ``ftal`` — fine-tune all layers;
* ``rtll`` — re-initialise the last layer at random, then train it alone;
* ``rtal`` — re-initialise the last layer at random, then train all layers.

The loss is the ordinary cross-entropy on the attacker's images and labels; nothing of the key
is used. Optimiser (Li et al. 2019, "Piracy Resistant Watermarks", Sec. 8.1, Fig. 5): "the same
parameters such as batch size, optimizer, and decay as the original model training, and the last
learning rate used during the original model training", all layers updated, 100 epochs. So by
default (``optimizer="owner"``) the optimiser, batch size, momentum and weight decay are the
owner's recipe (read from the run's ``metrics.json`` by ``nnmark attack``; nnmark's own default
recipe — Adam 1e-3, batch 64 — for runs that do not record one), and the learning rate is the
owner's *last* one: lr for a constant schedule, lr × 0.01 after nnmark's ``step`` schedule, and,
nnmark's choice, lr × 0.01 after ``cosine`` (whose last rate is 0, which would not train).
``optimizer="adam"|"sgd"`` with ``lr`` / ``batch_size`` gives another set-up. ``ew=T`` retrains
the model with its exponential-weighting layers in place (:class:`nnmark.attacks.base.EwParams`),
as Namba's thief retrains the distributed f_K (Sec. 5.2); by default, at the victim run's own EW
temperature.

Defaults: ``mode`` ftal (Li's Fig. 5: all layers), ``epochs`` 100 (Li's Fig. 5). Adi's paper is
not among nnmark's seeds; its modes are implemented as defined there, with Li's optimiser. In
``ftll``/``rtll`` BatchNorm statistics of frozen layers are frozen too (eval mode), so only the
last layer changes.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Literal

import torch
from pydantic import Field
from torch import nn

from nnmark.attacks.base import EwParams, RemovalAttack, register_attack
from nnmark.attacks.ew_inplace import reset_layer
from nnmark.data.base import ImageDataset
from nnmark.errors import NnmarkError
from nnmark.training import TrainConfig, train
from nnmark.types import ModelSpec

#: factor from a schedule's peak to its last learning rate (cosine: nnmark's choice, see above)
LAST_LR_FACTOR = {"none": 1.0, "step": 0.01, "cosine": 0.01}


class FineTuneParams(EwParams):
    mode: Literal["ftll", "ftal", "rtll", "rtal"] = Field(
        "ftal",
        description="ftll/ftal: fine-tune last/all layers; rtll/rtal: re-initialise the last layer first",
    )
    epochs: int = Field(100, ge=1, description="epochs of retraining (Li Fig. 5: 100)")
    optimizer: Literal["owner", "adam", "sgd"] = Field(
        "owner", description="owner = the owner's recipe at its last learning rate (Li Sec. 8.1)"
    )
    lr: float | None = Field(None, gt=0, description="learning rate (default: the owner's last one)")
    batch_size: int | None = Field(None, ge=1, description="batch size (default: the owner's)")


def last_layer(model: nn.Module) -> nn.Module:
    """The model's output layer: its last ``nn.Linear`` (or, failing that, ``nn.Conv2d``)."""
    layers: list[nn.Module] = [m for m in model.modules() if isinstance(m, nn.Linear)]
    layers = layers or [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    if not layers:
        raise NnmarkError("the model has no dense or convolutional layer to fine-tune")
    return layers[-1]


def attacker_config(
    config: TrainConfig, optimizer: str, lr: float | None, batch_size: int | None, epochs: int
) -> TrainConfig:
    """The fine-tuning set-up: the owner's recipe at its last learning rate, or the one given."""
    if optimizer == "owner":
        last = config.lr * LAST_LR_FACTOR.get(config.schedule, 1.0)
        cfg = replace(config, lr=lr or last)
    else:
        cfg = replace(config, optimizer=optimizer, lr=lr or 1e-3)
    return replace(
        cfg, epochs=epochs, schedule="none", augment="none", batch_size=batch_size or cfg.batch_size
    )


class _FrozenBatchNorm:
    """Keeps BatchNorm layers outside ``keep`` in eval mode while ``train`` puts the model in train mode."""

    def __init__(self, model: nn.Module, keep: nn.Module) -> None:
        kept = {id(m) for m in keep.modules()}
        self.frozen = [
            m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and id(m) not in kept
        ]
        self.handles = [m.register_forward_pre_hook(lambda mod, _inp: mod.eval()) for m in self.frozen]

    def remove(self) -> None:
        for h in self.handles:
            h.remove()


@register_attack
class FineTune(RemovalAttack[FineTuneParams]):
    """Fine-tune on the attacker's data: FTLL / FTAL / RTLL / RTAL (Adi 2018), owner's optimiser (Li 2019)."""

    name = "finetune"

    def run(
        self, model: torch.nn.Module, spec: ModelSpec, data: ImageDataset, config: TrainConfig, progress: bool
    ) -> torch.nn.Module:
        p = self.params
        cfg = attacker_config(config, p.optimizer, p.lr, p.batch_size, p.epochs)
        head = last_layer(model)
        if p.mode.startswith("rt"):
            torch.manual_seed(cfg.seed)
            reset_layer(head)  # θ itself when the layer is an EW layer
        only_head = p.mode.endswith("ll")
        frozen = None
        if only_head:
            head_params = {id(q) for q in head.parameters()}
            for q in model.parameters():
                q.requires_grad_(id(q) in head_params)
            frozen = _FrozenBatchNorm(model, head)
        try:
            train(model, data.train_x, data.train_y, cfg, progress=progress, description=f"attack: {p.mode}")
        finally:
            if frozen is not None:
                frozen.remove()
            for q in model.parameters():
                q.requires_grad_(True)
        self.report = {
            "mode": p.mode,
            "optimizer": cfg.optimizer,
            "lr": cfg.lr,
            "batch_size": cfg.batch_size,
            "epochs": cfg.epochs,
        }
        return model.cpu().eval()
