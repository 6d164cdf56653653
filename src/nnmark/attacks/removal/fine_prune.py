"""Fine-pruning (Liu, Dolan-Gavitt, Garg: "Fine-Pruning: Defending Against Backdooring Attacks on
Deep Neural Networks", RAID 2018, Sec. 4): a backdoor (here: the watermark's trigger behaviour)
lives in neurons that clean inputs leave dormant, so the defender

1. runs clean images through the model and records each channel's mean activation in the **last
   convolutional layer** (after its ReLU);
2. removes channels in increasing order of that mean activation ("pruning"), one at a time,
   stopping before the accuracy on clean images falls more than ``max_drop`` below the start;
3. fine-tunes the pruned model on the clean images (the removed channels stay removed).

Liu et al.'s paper is not among nnmark's seeds (Li 2019 and Namba 2019 name it as a removal
attack); the procedure above is theirs, the numbers are nnmark's and stated as such: the stop
rule uses the attacker's own images (it holds nothing else), ``max_drop`` 0.04 (4 points, the
order of loss Liu et al. accept) and 10 fine-tuning ``epochs`` with the owner's recipe at its
last learning rate (as :mod:`nnmark.attacks.removal.finetune` and Li Sec. 8.1). A model without
a convolutional layer is pruned in its last hidden dense layer instead.

``ew`` (:class:`nnmark.attacks.base.EwParams`; default: the victim run's EW temperature): the
channels are ranked by activation, which EW does not change, and removed and fine-tuned with the
model's EW layers in place, as Namba's thief would attack the distributed f_K (Sec. 5.2).
"""

from __future__ import annotations

import torch
from pydantic import Field
from torch import nn

from nnmark.attacks.base import EwParams, RemovalAttack, register_attack
from nnmark.attacks.removal.finetune import attacker_config
from nnmark.attacks.removal.neurons import UnitMaskKeeper, hidden_layers, zero_units
from nnmark.data.base import ImageDataset
from nnmark.errors import NnmarkError
from nnmark.training import TrainConfig, evaluate, train
from nnmark.types import ModelSpec


class FinePruneParams(EwParams):
    max_drop: float = Field(
        0.04, ge=0.0, lt=1.0, description="largest accuracy drop the pruning step accepts"
    )
    max_rate: float = Field(
        0.95, gt=0.0, le=1.0, description="never remove more than this share of the channels"
    )
    epochs: int = Field(10, ge=0, description="fine-tuning epochs after pruning (owner's recipe)")


def pruned_layer(model: nn.Module) -> tuple[str, nn.Conv2d | nn.Linear]:
    """The last convolution (Liu et al.), or the last hidden dense layer of a model without one."""
    hidden = hidden_layers(model)
    convs = [(n, m) for n, m in hidden if isinstance(m, nn.Conv2d)]
    if convs:
        return convs[-1]
    if not hidden:
        raise NnmarkError("fine-pruning needs a hidden layer; this model has only its output layer")
    return hidden[-1]


@torch.no_grad()
def mean_activations(model: nn.Module, layer: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Mean ReLU activation of each unit/channel of ``layer`` over the images ``x`` (uint8 or float)."""
    total: list[torch.Tensor] = []

    def hook(_m: nn.Module, _inp: object, out: torch.Tensor) -> None:
        a = out.relu()
        total.append(a.mean(dim=(0, 2, 3)) if a.dim() == 4 else a.mean(0))

    handle = layer.register_forward_hook(hook)
    model.eval()
    try:
        for chunk in x.split(512):
            model(chunk.float().div(255) if chunk.dtype == torch.uint8 else chunk.float())
    finally:
        handle.remove()
    return torch.stack(total).mean(0)


@register_attack
class FinePrune(RemovalAttack[FinePruneParams]):
    """Fine-pruning (Liu et al. 2018): drop dormant last-conv channels, then fine-tune."""

    name = "fine-prune"

    def run(
        self, model: torch.nn.Module, spec: ModelSpec, data: ImageDataset, config: TrainConfig, progress: bool
    ) -> torch.nn.Module:
        p = self.params
        name, layer = pruned_layer(model)
        order = mean_activations(model, layer, data.train_x).argsort()
        start = evaluate(model, data.train_x, data.train_y)
        limit = int(p.max_rate * len(order))
        masks: dict[str, torch.Tensor] = {}
        removed = 0
        for k in range(1, limit + 1):  # one channel at a time, least active first
            trial = {n: t.clone() for n, t in model.state_dict().items()}
            step = zero_units(model, name, order[:k])
            if evaluate(model, data.train_x, data.train_y) < start - p.max_drop:
                model.load_state_dict(trial)  # this channel cost too much: stop before it
                break
            masks, removed = step, k
        self.report = {
            "layer": name,
            "units": len(order),
            "units_removed": removed,
            "accuracy_start": start,
            "fine_tune_epochs": p.epochs,
        }
        if p.epochs:
            keeper = UnitMaskKeeper(model, masks)
            try:
                cfg = attacker_config(config, "owner", None, None, p.epochs)
                train(
                    model,
                    data.train_x,
                    data.train_y,
                    cfg,
                    progress=progress,
                    description="attack: fine-prune",
                )
            finally:
                keeper.remove()
            keeper.pin()
        return model.cpu().eval()
