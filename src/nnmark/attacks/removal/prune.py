"""Pruning attack, the model-modification attack of Namba & Sakuma 2019 ("Robust Watermarking of
Neural Network with Exponential Weighting", Sec. 4.3.1): the q % weights with the smallest
absolute values in each conv/dense layer are set to zero, then "the entire network is retrained
for ten epochs by Adam with learning rate 0.001" with the pruned weights held at zero.

Defaults are the paper's: ``epochs`` 10, ``lr`` 1e-3 (Adam), batch 64 (nnmark's; the paper gives
none for retraining). A single run prunes ``rate`` (0.5: nnmark's; the paper sweeps q instead).

Namba's protocol (``sweep=true``): "We changed q from 0 to 90 by 10 ... we varied pruning rate r so
that the deterioration of the test accuracy is less than 10 % of the baseline ... we tuned the
pruning rate so that the watermark accuracy becomes the worst." Each q in ``rates`` is pruned and
retrained from the victim; among the rates whose accuracy (on the held-out images the attacker
does not hold) is ≥ (1 − ``max_loss``) × the victim's, the one with the lowest mean watermark
accuracy of the keys given (``--key``: the evaluator tunes the attack against them, as Namba does)
is kept. ``metrics.json`` gets the whole sweep and the chosen rate. The baseline is the victim's
accuracy (nnmark has no clean model at hand; Namba's is the model without watermark).

``ew`` (:class:`nnmark.attacks.base.EwParams`): Namba's thief prunes and retrains the distributed
f_K, with its EW layers (Sec. 5.2, Eq. 11), and so does this attack by default when the victim
run was embedded with EW (``ew=0``: the folded weights as plain layers). The pruned weights are
the same either way, since EW(θ, T)_i = θ_i · exp(T(|θ_i| − max|θ|)) is monotone in |θ_i| within a
layer and zero only where θ_i is, so ranking by |θ| and by |w| agree; the masks are put on θ.
The retraining differs: gradients reach θ through EW (Eq. 13), which damps the small weights.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import torch
from pydantic import Field
from torch import nn

from nnmark.attacks.base import EwParams, RemovalAttack, register_attack
from nnmark.attacks.ew_inplace import trainable_weight
from nnmark.attacks.measure import key_accuracy
from nnmark.data.base import ImageDataset
from nnmark.errors import NnmarkError
from nnmark.training import TrainConfig, evaluate, train
from nnmark.types import ModelSpec

NAMBA_RATES = tuple(round(0.1 * i, 1) for i in range(10))


class PruneParams(EwParams):
    rate: float = Field(0.5, ge=0.0, lt=1.0, description="fraction q of weights set to zero in each layer")
    epochs: int = Field(10, ge=0, description="retraining epochs after pruning (Namba: 10)")
    lr: float = Field(1e-3, gt=0, description="retraining learning rate (Adam; Namba: 1e-3)")
    sweep: bool = Field(
        False, description="Namba's protocol: try every q in rates, keep the worst for the keys"
    )
    rates: tuple[float, ...] = Field(
        NAMBA_RATES, description="rates the sweep tries (Namba: 0, 0.1, ..., 0.9)"
    )
    max_loss: float = Field(
        0.1, gt=0, lt=1, description="sweep: largest relative accuracy loss allowed (Namba: 10 %)"
    )


def prune_masks(model: nn.Module, rate: float) -> dict[str, torch.Tensor]:
    """Per-layer masks keeping the (1 − rate) largest-magnitude weights of every conv/dense layer
    (in an EW layer the weights it computes with: the same ranking as its θ)."""
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
            weight = trainable_weight(modules[name])  # θ in an EW layer (EW(θ)_i = 0 iff θ_i = 0)
            weight.mul_(mask.to(weight.device))


class _MaskKeeper:
    """Re-applies the pruning masks after every optimiser step (as a gradient hook would)."""

    def __init__(self, model: nn.Module, masks: dict[str, torch.Tensor]) -> None:
        self.handles = []
        modules = dict(model.named_modules())
        for name, mask in masks.items():
            w = trainable_weight(modules[name])
            self.handles.append(w.register_hook(lambda g, m=mask: g * m.to(g.device)))

    def remove(self) -> None:
        for h in self.handles:
            h.remove()


def prune_and_retrain(
    model: nn.Module,
    data: ImageDataset,
    config: TrainConfig,
    rate: float,
    epochs: int,
    lr: float,
    progress: bool,
) -> nn.Module:
    """Prune ``model`` in place at ``rate``; retrain ``epochs`` with Adam at ``lr``, pruned weights pinned."""
    masks = prune_masks(model, rate)
    apply_masks(model, masks)
    if epochs:
        keeper = _MaskKeeper(model, masks)
        try:
            cfg = replace(
                config,
                epochs=epochs,
                lr=lr,
                optimizer="adam",
                weight_decay=0.0,
                schedule="none",
                augment="none",
            )
            train(
                model,
                data.train_x,
                data.train_y,
                cfg,
                progress=progress,
                description=f"attack: retrain q={rate:g}",
            )
        finally:
            keeper.remove()
        apply_masks(model, masks)  # Adam's momentum can move a zero weight; pin them again
    return model.cpu().eval()


def _clone_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


@register_attack
class Prune(RemovalAttack[PruneParams]):
    """Magnitude pruning of q % of the weights, retrained 10 epochs (Namba 2019); sweep=true tunes q."""

    name = "prune"

    def run(
        self, model: torch.nn.Module, spec: ModelSpec, data: ImageDataset, config: TrainConfig, progress: bool
    ) -> torch.nn.Module:
        p = self.params
        if not p.sweep:
            self.report = {"rate": p.rate, "retrain_epochs": p.epochs}
            return prune_and_retrain(model, data, config, p.rate, p.epochs, p.lr, progress)
        if not self.evaluator_keys:
            raise NnmarkError("prune's sweep picks the rate by watermark accuracy; give the keys with --key")
        if not len(data.test_x):
            raise NnmarkError("prune's sweep needs held-out images to measure accuracy on")
        baseline = evaluate(model, data.test_x, data.test_y)
        floor = (1 - p.max_loss) * baseline
        rows: list[dict[str, Any]] = []
        best: tuple[float, float, dict[str, torch.Tensor]] | None = None
        # each rate starts from the victim's state, restored in place: a deep copy of a model with
        # EW layers (``ew``) would share its parametrised classes with the original
        start = _clone_state(model)
        for rate in p.rates:
            if not 0 <= rate < 1:
                raise NnmarkError(f"prune rates must be in [0, 1), got {rate}")
            model.load_state_dict(start)
            attacked = prune_and_retrain(model, data, config, rate, p.epochs, p.lr, progress)
            acc = evaluate(attacked, data.test_x, data.test_y)
            wm = sum(key_accuracy(attacked, k) for k in self.evaluator_keys) / len(self.evaluator_keys)
            allowed = acc >= floor
            rows.append({"rate": rate, "accuracy": acc, "watermark_accuracy": wm, "allowed": allowed})
            if allowed and (best is None or wm < best[1]):
                best = (rate, wm, _clone_state(attacked))
        if best is None:
            raise NnmarkError(
                f"no pruning rate kept accuracy within {p.max_loss:.0%} of {baseline:.2%}; try smaller rates"
            )
        self.report = {
            "rate": best[0],
            "retrain_epochs": p.epochs,
            "sweep": rows,
            "sweep_baseline_accuracy": baseline,
            "sweep_rule": "lowest mean watermark accuracy among rates keeping accuracy "
            f"≥ {1 - p.max_loss:g} × baseline",
        }
        model.load_state_dict(best[2])
        return model
