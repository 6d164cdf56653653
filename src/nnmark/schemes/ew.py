"""Exponential weighting, Namba & Sakuma, "Robust Watermarking of Neural Network with Exponential
Weighting", AsiaCCS 2019, Sec. 5.2.

Every conv and dense layer l computes h_{l+1} = a_l(op_l(h_l, EW(θ_l, T))) (Eq. 12) with

    EW(θ_l, T)_i = exp(|θ_{l,i}|·T) / max_j exp(|θ_{l,j}|·T) · θ_{l,i}                  (Eq. 11)

so weights far below the layer's largest magnitude are shrunk towards zero and only the large
weights carry the prediction; pruning or retraining the small ones then changes little. Gradients
flow through EW like through an activation (Eq. 13). The procedure: train normally on X, replace
every layer by its EW form, retrain on X ∪ K (K the key samples), and use the EW model.

Here EW is a :mod:`torch.nn.utils.parametrize` parametrisation of each ``Conv*d`` / ``Linear``
weight; it composes with every key-based scheme (``--set ew=2``, the paper's T): ``embed_run``
trains normally first (or starts from ``--from``), :func:`exponential_weighting` retrains through
EW layers, and on leaving it EW is folded into the stored weights (θ ← EW(θ, T)), so the saved
model is an ordinary model whose outputs equal the EW model's. The formula is computed as
θ·exp(T·(|θ| − max|θ|)), which is the same number without overflow. Which of "T multiplies" or
"T divides" the garbled Eq. 11 means cannot be read from the extraction; nnmark multiplies.

At PyTorch's weight scales T = 2 is mild (:func:`ew_stats`, ``benchmarks/ew_weights.py``;
digit-cnn after 3 epochs on MNIST-5k): the layers' max |θ| is 0.08–0.26, the factor
exp(T(|θ| − max|θ|)) at the median weight 0.74–0.89, no weight is halved, and the share of each
layer's L1 mass held by its largest 10 % of weights grows by at most 3 points — nearly a uniform
rescaling per layer. The concentration on large weights the paper describes needs T ≈ 20–50
here (T = 20: 92–100 % of the weights at least halved, top-10 % share 21–25 % → 29–49 %).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn
from torch.nn.utils import parametrize

__all__ = ["ExponentialWeighting", "apply_ew", "ew_layers", "ew_stats", "exponential_weighting", "fold_ew"]


class ExponentialWeighting(nn.Module):
    """The parametrisation θ ↦ EW(θ, T) of Namba 2019 Eq. 11, over one layer's whole weight tensor."""

    def __init__(self, temperature: float) -> None:
        super().__init__()
        self.temperature = float(temperature)

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        a = weight.abs()
        return weight * torch.exp(self.temperature * (a - a.max()))

    def extra_repr(self) -> str:
        return f"T={self.temperature:g}"


EwLayer = nn.Linear | nn.Conv1d | nn.Conv2d | nn.Conv3d


def ew_layers(model: nn.Module) -> list[tuple[str, EwLayer]]:
    """The conv and dense layers EW applies to (``Conv1d/2d/3d`` and ``Linear``), by name."""
    return [
        (n, m)
        for n, m in model.named_modules()
        if isinstance(m, EwLayer)
    ]


def apply_ew(model: nn.Module, temperature: float) -> list[str]:
    """Put EW(·, T) on the weight of every conv and dense layer of ``model`` (in place)."""
    names = []
    for name, module in ew_layers(model):
        if parametrize.is_parametrized(module, "weight"):
            continue
        parametrize.register_parametrization(module, "weight", ExponentialWeighting(temperature))
        names.append(name)
    return names


def fold_ew(model: nn.Module) -> None:
    """Replace every EW parametrisation by its value: the weights become EW(θ, T), plain tensors."""
    for _, module in ew_layers(model):
        if parametrize.is_parametrized(module, "weight"):
            parametrize.remove_parametrizations(module, "weight", leave_parametrized=True)


@contextmanager
def exponential_weighting(model: nn.Module, temperature: float) -> Iterator[nn.Module]:
    """Train through EW layers inside the block; on leaving, EW is folded into the weights.

    ``temperature`` 0 (or less) does nothing, so callers can wrap unconditionally.
    """
    if temperature <= 0:
        yield model
        return
    apply_ew(model, temperature)
    try:
        yield model
    finally:
        fold_ew(model)


@torch.no_grad()
def ew_stats(model: nn.Module, temperature: float) -> list[dict[str, Any]]:
    """What EW(·, T) does to each conv/dense layer's weights of ``model`` (plain weights, not EW'd).

    Per layer: number of weights, median and max |θ|, the factor exp(T(|θ| − max|θ|)) at the
    10th / 50th / 90th percentile of |θ|, the share of weights the factor takes below 0.5, and the
    share of the layer's L1 mass held by its largest 10 % of weights before and after EW.
    """
    rows = []
    for name, module in ew_layers(model):
        w = module.weight.detach().float().flatten()
        a = w.abs()
        top = a.max()
        factor = torch.exp(temperature * (a - top))
        after = a * factor
        k = max(1, a.numel() // 10)
        q = torch.quantile(factor, torch.tensor([0.1, 0.5, 0.9])) if a.numel() > 1 else factor.repeat(3)
        rows.append(
            {
                "layer": name,
                "weights": a.numel(),
                "median_abs": float(a.median()),
                "max_abs": float(top),
                "factor_p10": float(q[0]),
                "factor_median": float(q[1]),
                "factor_p90": float(q[2]),
                "share_factor_below_half": float((factor < 0.5).float().mean()),
                "top10_l1_share_before": float(a.topk(k).values.sum() / a.sum().clamp_min(1e-12)),
                "top10_l1_share_after": float(after.topk(k).values.sum() / after.sum().clamp_min(1e-12)),
            }
        )
    return rows
