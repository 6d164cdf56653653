"""Neural Cleanse (Wang et al., "Neural Cleanse: Identifying and Mitigating Backdoor Attacks in
Neural Networks", IEEE S&P 2019, Sec. IV), the backdoor detector Li et al. 2019 run against
watermarked models (Table 5): a trigger-set watermark *is* a backdoor, so a thief can try to find it.

For every class c a minimal trigger is reverse-engineered on the attacker's clean images x: a
mask m ∈ [0, 1]^{H×W} and a pattern Δ ∈ [0, 1]^{C×H×W} with

    A(x, m, Δ) = (1 − m) · x + m · Δ,   min_{m, Δ}  ℓ(c, f(A(x, m, Δ))) + λ · |m|₁      (Eq. 2-3)

(m and Δ are tanh-parametrised, as in the authors' code; Adam, lr 0.1, β = (0.5, 0.9)). The L1
norms of the c masks are compared by the median absolute deviation: with MAD = median|n_c − ñ|
and the consistency constant 1.4826, the anomaly index of the smallest mask is
(ñ − min_c n_c) / (1.4826 · MAD); a model is **flagged** when it is ≥ 2 ("the suggested threshold
is 2", Li Table 5; Wang: > 2, 95 % confidence), the suspected class being the one with the
smallest mask.

Defaults: λ = 0.01 fixed (Wang start at 1e-3 and adapt λ so that ≥ 99 % of the images reach c;
nnmark keeps λ fixed, a simplification stated here), ``steps`` 300 Adam steps of batch 64 per
class (Wang: until the loss stops improving), on the attacker's images. ``metrics.json`` records
``anomaly_index``, ``flagged``, ``suspected_class`` and every class's mask norm and attack success.
The model is returned unchanged (detection only; Wang's unlearning is not built).
"""

from __future__ import annotations

import copy
import statistics
from typing import Any

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from nnmark.attacks.base import AttackParams, RemovalAttack, register_attack
from nnmark.data.base import ImageDataset
from nnmark.training import TrainConfig
from nnmark.types import ModelSpec

MAD_CONSISTENCY = 1.4826


class NeuralCleanseParams(AttackParams):
    steps: int = Field(300, ge=1, description="Adam steps per class (batch 64)")
    lam: float = Field(0.01, ge=0, description="weight λ of the mask's L1 norm (Eq. 3)")
    lr: float = Field(0.1, gt=0, description="Adam learning rate (Wang: 0.1)")
    threshold: float = Field(2.0, gt=0, description="anomaly index at which a model is flagged (Wang, Li: 2)")
    batch_size: int = Field(64, ge=1, description="images per step")


def reverse_trigger(
    model: nn.Module, x: Tensor, target: int, p: NeuralCleanseParams, gen: torch.Generator
) -> tuple[Tensor, Tensor, float]:
    """The minimal (mask, pattern) sending ``x`` (float [0, 1]) to ``target``; and its success rate."""
    _, c, h, w = x.shape
    mask_raw = torch.zeros(1, 1, h, w, requires_grad=True)
    pattern_raw = torch.zeros(1, c, h, w, requires_grad=True)
    with torch.no_grad():
        mask_raw.normal_(0, 0.1, generator=gen)
        pattern_raw.normal_(0, 0.1, generator=gen)
    opt = torch.optim.Adam([mask_raw, pattern_raw], lr=p.lr, betas=(0.5, 0.9))
    labels = torch.full((min(p.batch_size, len(x)),), target, dtype=torch.int64)
    for _ in range(p.steps):
        idx = torch.randint(0, len(x), (len(labels),), generator=gen)
        m = (torch.tanh(mask_raw) + 1) / 2
        delta = (torch.tanh(pattern_raw) + 1) / 2
        out = model((1 - m) * x[idx] + m * delta)
        loss = F.cross_entropy(out, labels) + p.lam * m.sum()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    with torch.no_grad():
        m = (torch.tanh(mask_raw) + 1) / 2
        delta = (torch.tanh(pattern_raw) + 1) / 2
        hits = torch.cat([model((1 - m) * xb + m * delta).argmax(1) == target for xb in x.split(256)])
    return m.detach()[0, 0], delta.detach()[0], float(hits.float().mean())


def anomaly_index(norms: list[float]) -> float:
    """(median − min) / (1.4826 · MAD) of the mask norms (0 when they do not vary)."""
    med = statistics.median(norms)
    mad = statistics.median(abs(n - med) for n in norms) * MAD_CONSISTENCY
    return (med - min(norms)) / mad if mad > 0 else 0.0


@register_attack
class NeuralCleanse(RemovalAttack[NeuralCleanseParams]):
    """Neural Cleanse (Wang 2019): reverse-engineer minimal triggers, flag anomaly index ≥ 2 (Li Table 5)."""

    name = "neural-cleanse"
    changes_model = False

    def run(
        self, model: torch.nn.Module, spec: ModelSpec, data: ImageDataset, config: TrainConfig, progress: bool
    ) -> torch.nn.Module:
        p = self.params
        probe = copy.deepcopy(model).eval()
        for q in probe.parameters():
            q.requires_grad_(False)
        x = data.train_x.float().div(255) if data.train_x.dtype == torch.uint8 else data.train_x.float()
        gen = torch.Generator().manual_seed(config.seed + 2019)
        classes: list[dict[str, Any]] = []
        for c in range(spec.num_classes):
            mask, _, success = reverse_trigger(probe, x, c, p, gen)
            classes.append({"class": c, "mask_l1": float(mask.sum()), "success": success})
        norms = [r["mask_l1"] for r in classes]
        index = anomaly_index(norms)
        suspected = min(classes, key=lambda r: r["mask_l1"])["class"]
        self.report = {
            "anomaly_index": index,
            "flagged": index >= p.threshold,
            "suspected_class": suspected,
            "threshold": p.threshold,
            "classes": classes,
        }
        return model.cpu().eval()
