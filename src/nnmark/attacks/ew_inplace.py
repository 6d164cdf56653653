"""Attacking a model with its exponential-weighting layers in place (Namba 2019 Sec. 5.2).

Namba's owner distributes f_K, whose conv/dense layers compute EW(θ, T)_i =
exp(|θ_i| T) / max_j exp(|θ_j| T) · θ_i (Eq. 11), and the thief retrains *that* model, through
the EW layers. nnmark stores the folded weights w = EW(θ, T). EW is invertible layer by layer:
the largest |θ_j| keeps its value (factor 1), so M = max|θ| = max|w|, and each |θ_i| is the unique
t ≥ 0 with t · exp(T (t − M)) = |w_i|, i.e. t = W₀(T |w_i| e^{T M}) / T (W₀: Lambert's W,
:func:`scipy.special.lambertw`, computed in float64); signs are kept. :func:`ew_in_place`
recovers θ, puts EW(·, T) back on every conv/dense layer (:func:`nnmark.schemes.ew.apply_ew`)
for the duration of an attack, then folds it again, so the attacked run folder is an ordinary one.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import torch
from scipy.special import lambertw
from torch import nn

from nnmark.errors import NnmarkError
from nnmark.schemes.ew import apply_ew, ew_layers, fold_ew


def invert_ew(w: torch.Tensor, temperature: float) -> torch.Tensor:
    """θ with EW(θ, T) = ``w`` (one layer's weight tensor)."""
    a = w.detach().abs().double().cpu().numpy()
    m = float(a.max()) if a.size else 0.0
    if m == 0.0:
        return w.detach().clone()
    if temperature * m > 700:
        raise NnmarkError(f"EW temperature {temperature} is too large to invert for weights up to {m:.3g}")
    t = np.real(lambertw(temperature * a * np.exp(temperature * m))) / temperature
    return torch.from_numpy(t).to(w.dtype).mul(w.detach().sign().cpu()).to(w.device)


@contextmanager
def ew_in_place(model: nn.Module, temperature: float) -> Iterator[nn.Module]:
    """Within the block ``model``'s conv/dense layers are EW layers over the recovered θ (training
    updates θ); on leaving, EW is folded back into plain weights. ``temperature`` ≤ 0: no change."""
    if temperature <= 0:
        yield model
        return
    with torch.no_grad():
        for _, module in ew_layers(model):
            module.weight.copy_(invert_ew(module.weight, temperature))
    apply_ew(model, temperature)
    try:
        yield model
    finally:
        fold_ew(model)
