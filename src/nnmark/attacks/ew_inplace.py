"""Attacking a model with its exponential-weighting layers in place (Namba 2019 Sec. 5.2).

Namba's owner distributes f_K, whose conv/dense layers compute EW(θ, T)_i =
exp(|θ_i| T) / max_j exp(|θ_j| T) · θ_i (Eq. 11), and the thief retrains *that* model, through
the EW layers. nnmark stores the folded weights w = EW(θ, T). EW is invertible layer by layer:
the largest |θ_j| keeps its value (factor 1), so M = max|θ| = max|w|, and each |θ_i| is the unique
t ≥ 0 with t · exp(T (t − M)) = |w_i|, i.e. t = W₀(T |w_i| e^{T M}) / T (W₀: Lambert's W,
:func:`scipy.special.lambertw`, computed in float64); signs are kept. :func:`ew_in_place`
recovers θ, puts EW(·, T) back on every conv/dense layer (:func:`nnmark.schemes.ew.apply_ew`)
for the duration of an attack, then folds it again, so the attacked run folder is an ordinary one.

Every attack that changes the stolen model's weights takes ``ew`` (:class:`nnmark.attacks.base.EwParams`)
and :meth:`nnmark.attacks.base.RemovalAttack.__call__` runs it inside :func:`ew_in_place`: the
attack sees the model as Namba's thief holding f_K does, its parameters θ and its layers computing
EW(θ, T). Attacks that change weights directly (pruning) change θ, through :func:`trainable_weight`
and :func:`weight_param_name`. :func:`run_ew_temperature` reads the T a run was embedded with:
``nnmark attack``'s default.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from scipy.special import lambertw
from torch import nn
from torch.nn.utils import parametrize

from nnmark.errors import NnmarkError
from nnmark.schemes.ew import apply_ew, ew_layers, fold_ew


def invert_ew(w: torch.Tensor, temperature: float) -> torch.Tensor:
    """θ with EW(θ, T) = ``w`` (one layer's weight tensor)."""
    a = w.detach().abs().double().cpu().numpy()
    m = float(a.max()) if a.size else 0.0
    if m == 0.0:
        return w.detach().clone()
    if temperature * m > 700:
        raise NnmarkError(
            f"EW temperature {temperature} is too large to invert for weights up to {m:.3g}; "
            "attack the folded weights with --set ew=0"
        )
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


def trainable_weight(module: nn.Module) -> nn.Parameter:
    """The parameter training updates for ``module``'s weight: θ inside an EW layer, else the weight."""
    if parametrize.is_parametrized(module, "weight"):
        return module.parametrizations.weight.original  # type: ignore[union-attr,return-value]
    return module.weight  # type: ignore[return-value]


def reset_layer(module: nn.Module) -> None:
    """Re-initialise ``module`` at random (``reset_parameters``); inside an EW layer θ is drawn anew
    and the layer stays an EW layer (resetting the computed weight would change nothing)."""
    if not parametrize.is_parametrized(module, "weight"):
        module.reset_parameters()  # type: ignore[operator]
        return
    ew = cast(nn.Module, module.parametrizations.weight[0])  # type: ignore[union-attr,index]
    parametrize.remove_parametrizations(module, "weight", leave_parametrized=False)
    module.reset_parameters()  # type: ignore[operator]
    parametrize.register_parametrization(module, "weight", ew)


def weight_param_name(name: str, module: nn.Module) -> str:
    """The ``named_parameters`` name of :func:`trainable_weight` for the layer called ``name``."""
    prefix = f"{name}." if name else ""
    if parametrize.is_parametrized(module, "weight"):
        return f"{prefix}parametrizations.weight.original"
    return f"{prefix}weight"


def run_ew_temperature(run: str | Path, metrics: dict[str, Any] | None = None) -> tuple[float, str]:
    """The EW temperature ``run``'s weights were folded at, and where that was read: for a run an
    attack wrote (``metrics.json`` ``attack``), that attack's ``ew`` setting; otherwise the
    ``ew`` parameter its ``watermark.key`` records (every key-based scheme's, 0 = no EW); 0 for a run
    without either (a clean model, an imported one)."""
    from nnmark.io import KEY_FILE
    from nnmark.keyfile import load_key

    if metrics is None:
        from nnmark.io import load_metrics

        try:
            metrics = load_metrics(run)
        except NnmarkError:
            metrics = {}
    if metrics.get("attack"):
        settings = metrics.get("settings")
        t = settings.get("ew") if isinstance(settings, dict) else None
        if isinstance(t, int | float) and not isinstance(t, bool):
            return float(t), f"the attack ({metrics['attack']}) that wrote the run (metrics.json)"
    if (Path(run) / KEY_FILE).is_file():
        try:
            t = load_key(Path(run) / KEY_FILE).params.get("ew", 0.0)
        except NnmarkError:
            t = None
        if isinstance(t, int | float) and not isinstance(t, bool):
            return float(t), "the run's watermark.key (the scheme's ew)"
    return 0.0, "none recorded (no EW)"
