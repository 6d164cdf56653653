"""Pruning attack, the model-modification attack of Namba 2019 (Sec. 3.3): set the q % smallest
weights (by magnitude, per conv/dense layer) to zero, then retrain on the attacker's data with the
pruned weights held at zero (Adam 1e-3; the paper retrains 10 epochs)."""

from __future__ import annotations

from dataclasses import replace

import torch
from pydantic import Field
from torch import nn

from nnmark.attacks.base import AttackParams, RemovalAttack, register_attack
from nnmark.data.base import ImageDataset
from nnmark.training import TrainConfig, train
from nnmark.types import ModelSpec


class PruneParams(AttackParams):
    rate: float = Field(0.5, ge=0.0, lt=1.0, description="fraction q of weights set to zero in each layer")
    epochs: int = Field(0, ge=0, description="retraining epochs after pruning (Namba: 10)")
    lr: float = Field(1e-3, gt=0, description="retraining learning rate (Adam)")


def prune_masks(model: nn.Module, rate: float) -> dict[str, torch.Tensor]:
    """Per-layer masks keeping the (1 − rate) largest-magnitude weights of every conv/dense layer."""
    masks = {}
    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d | nn.Linear):
            w = module.weight.detach().abs().flatten()
            k = int(rate * w.numel())
            if k == 0:
                continue
            cut = w.kthvalue(k).values
            masks[name] = (module.weight.detach().abs() > cut).float()
    return masks


def apply_masks(model: nn.Module, masks: dict[str, torch.Tensor]) -> None:
    modules = dict(model.named_modules())
    with torch.no_grad():
        for name, mask in masks.items():
            weight = modules[name].weight
            weight.mul_(mask.to(weight.device))


class _MaskKeeper:
    """Re-applies the pruning masks after every optimiser step (as a gradient hook would)."""

    def __init__(self, model: nn.Module, masks: dict[str, torch.Tensor]) -> None:
        self.handles = []
        modules = dict(model.named_modules())
        for name, mask in masks.items():
            w = modules[name].weight
            self.handles.append(w.register_hook(lambda g, m=mask: g * m.to(g.device)))

    def remove(self) -> None:
        for h in self.handles:
            h.remove()


@register_attack
class Prune(RemovalAttack):
    """Magnitude pruning of q % of the weights, optionally followed by retraining (Namba 2019)."""

    name = "prune"
    Params = PruneParams

    def run(
        self, model: torch.nn.Module, spec: ModelSpec, data: ImageDataset, config: TrainConfig, progress: bool
    ) -> torch.nn.Module:
        p = self.params
        assert isinstance(p, PruneParams)
        masks = prune_masks(model, p.rate)
        apply_masks(model, masks)
        if p.epochs:
            keeper = _MaskKeeper(model, masks)
            try:
                cfg = replace(config, epochs=p.epochs, lr=p.lr, optimizer="adam", weight_decay=0.0)
                train(
                    model, data.train_x, data.train_y, cfg, progress=progress, description="attack: retrain"
                )
            finally:
                keeper.remove()
            apply_masks(model, masks)  # Adam's momentum can move a zero weight; pin them again
        return model.cpu().eval()
