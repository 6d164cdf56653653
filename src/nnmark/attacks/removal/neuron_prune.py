"""Neuron pruning, as Li et al. 2019 ("Piracy Resistant Watermarks for Deep Neural Networks",
Sec. 8.1, Fig. 6) run it: "the common neuron pruning technique [10] ... first removes neurons with
smaller absolute weights (ascending pruning)", plotted against the pruning ratio, no retraining.

In every hidden conv/dense layer (the output layer's units are the classes and stay) the
``rate`` share of units with the smallest L1 norm of incoming weights, Σ_j |w_ij|, is removed
(weights, bias and a following BatchNorm's scale and shift set to zero; see
:mod:`nnmark.attacks.removal.neurons`). Li sweeps the ratio from 0 to 1 (Fig. 6) and gives no
single default; nnmark's default ``rate`` 0.5 is the middle of that sweep. ``epochs`` > 0
retrains afterwards with the removed units held at zero (Li does not retrain; nnmark's option,
with the owner's recipe as fine-tuning uses it).

``ew`` (:class:`nnmark.attacks.base.EwParams`; default: the victim run's EW temperature): the
model is attacked with its EW layers in place, as Namba's thief holds f_K (Sec. 5.2, Eq. 11);
its parameters are then θ, so units are ranked by Σ_j |θ_ij| (not always the order of the folded
weights' Σ_j |w_ij|), and the retraining goes through EW.
"""

from __future__ import annotations

import torch
from pydantic import Field

from nnmark.attacks.base import EwParams, RemovalAttack, register_attack
from nnmark.attacks.removal.finetune import attacker_config
from nnmark.attacks.removal.neurons import UnitMaskKeeper, hidden_layers, unit_norms, zero_units
from nnmark.data.base import ImageDataset
from nnmark.training import TrainConfig, train
from nnmark.types import ModelSpec


class NeuronPruneParams(EwParams):
    rate: float = Field(
        0.5, ge=0.0, lt=1.0, description="share of units removed in each hidden layer (Li: swept)"
    )
    epochs: int = Field(0, ge=0, description="retraining epochs afterwards (Li: none)")


def neuron_prune(model: torch.nn.Module, rate: float) -> tuple[dict[str, torch.Tensor], int]:
    """Remove the ``rate`` share of smallest-norm units of every hidden layer in place; returns the
    masks that keep them removed and how many units were removed."""
    masks: dict[str, torch.Tensor] = {}
    removed = 0
    for name, layer in hidden_layers(model):
        norms = unit_norms(layer)
        k = int(rate * len(norms))
        if k:
            masks.update(zero_units(model, name, norms.argsort()[:k]))
            removed += k
    return masks, removed


@register_attack
class NeuronPrune(RemovalAttack[NeuronPruneParams]):
    """Ascending neuron pruning by incoming-weight norm (Li 2019 Fig. 6), optionally retrained."""

    name = "neuron-prune"

    def run(
        self, model: torch.nn.Module, spec: ModelSpec, data: ImageDataset, config: TrainConfig, progress: bool
    ) -> torch.nn.Module:
        p = self.params
        masks, removed = neuron_prune(model, p.rate)
        self.report = {"rate": p.rate, "units_removed": removed, "retrain_epochs": p.epochs}
        if p.epochs:
            keeper = UnitMaskKeeper(model, masks)
            try:
                cfg = attacker_config(config, "owner", None, None, p.epochs)
                train(
                    model, data.train_x, data.train_y, cfg, progress=progress, description="attack: retrain"
                )
            finally:
                keeper.remove()
            keeper.pin()
        return model.cpu().eval()
