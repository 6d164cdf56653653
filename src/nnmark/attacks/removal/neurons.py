"""Removing whole neurons (dense units, convolution channels) from an ordinary module, shared by
neuron pruning (Li 2019 Fig. 6) and fine-pruning (Liu et al. 2018). A removed unit keeps its place
(the architecture is unchanged, so the result is still a run folder every command accepts): its
incoming weights and bias are zero, and so are the scale and shift of a BatchNorm right after it,
so it outputs exactly zero. Inside an EW layer (``ew``, :class:`nnmark.attacks.base.EwParams`) the
unit's parameters are θ, the thief's: norms are Σ|θ|, and zeroing θ zeroes EW(θ, T)."""

from __future__ import annotations

import torch
from torch import nn

from nnmark.attacks.ew_inplace import trainable_weight, weight_param_name

Layer = nn.Conv2d | nn.Linear


def layers(model: nn.Module) -> list[tuple[str, Layer]]:
    """(name, module) of every conv/dense layer, in definition order."""
    return [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Conv2d | nn.Linear)]


def hidden_layers(model: nn.Module) -> list[tuple[str, Layer]]:
    """Every conv/dense layer but the output layer (the last dense one), whose units are classes."""
    return layers(model)[:-1]


def unit_norms(layer: Layer) -> torch.Tensor:
    """L1 norm of each unit's incoming weights (one value per output unit or channel; θ's in an EW layer)."""
    return trainable_weight(layer).detach().abs().flatten(1).sum(1)


def following_batchnorm(model: nn.Module, name: str) -> nn.modules.batchnorm._BatchNorm | None:
    """The BatchNorm that directly follows layer ``name`` (definition order, no layer in between)."""
    mods = list(model.named_modules())
    idx = next(i for i, (n, _) in enumerate(mods) if n == name)
    width = mods[idx][1].weight.shape[0]  # type: ignore[union-attr]
    for _, m in mods[idx + 1 :]:
        if isinstance(m, nn.Conv2d | nn.Linear):
            return None
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.num_features == width:
            return m
    return None


@torch.no_grad()
def zero_units(model: nn.Module, name: str, units: torch.Tensor) -> dict[str, torch.Tensor]:
    """Silence ``units`` of layer ``name``; returns {parameter name: mask} to keep them silent."""
    layer = dict(model.named_modules())[name]
    if not isinstance(layer, nn.Conv2d | nn.Linear):
        raise TypeError(f"layer {name!r} is a {type(layer).__name__}, not a conv or dense layer")
    keep = torch.ones(layer.weight.shape[0])
    keep[units] = 0
    masks: dict[str, torch.Tensor] = {}
    targets: list[tuple[str, torch.Tensor]] = [(weight_param_name(name, layer), trainable_weight(layer))]
    if layer.bias is not None:
        targets.append((f"{name}.bias", layer.bias))
    bn = following_batchnorm(model, name)
    if bn is not None and bn.affine:
        bn_name = next(n for n, m in model.named_modules() if m is bn)
        targets += [(f"{bn_name}.weight", bn.weight), (f"{bn_name}.bias", bn.bias)]
    for pname, p in targets:
        mask = keep.view(-1, *([1] * (p.dim() - 1))).expand_as(p).clone()
        p.mul_(mask)
        masks[pname] = mask
    return masks


class UnitMaskKeeper:
    """Keeps removed units at zero while training (gradient hooks; re-apply after the last step)."""

    def __init__(self, model: nn.Module, masks: dict[str, torch.Tensor]) -> None:
        self.params = dict(model.named_parameters())
        self.masks = masks
        self.handles = [
            self.params[n].register_hook(lambda g, m=mask: g * m.to(g.device)) for n, mask in masks.items()
        ]

    @torch.no_grad()
    def pin(self) -> None:
        for n, mask in self.masks.items():
            self.params[n].mul_(mask.to(self.params[n].device))

    def remove(self) -> None:
        for h in self.handles:
            h.remove()
