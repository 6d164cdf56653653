"""Model extraction by distillation (Li et al. 2019, Sec. 8.3 and Table 6, after Papernot et al.'s
extraction [25]): "the attacker gathers unlabeled input data and uses the classification results
of the target model to label the data. This newly labeled data can be used to train a new
watermark-free, substitute model" — "with the same model architecture ... [and] the same training
configurations ... but with 0 inject ratio" (App. A.3).

A fresh model of the victim's architecture (new weights, seeded) is trained on the attacker's
images labelled by the victim, seen only through an :class:`~nnmark.oracle.Oracle` that counts
every query (``metrics.json`` ``queries``; ``budget`` caps them). ``output="labels"`` trains on
the oracle's top-1 labels (Li's extraction); ``output="probabilities"`` on its probability
vectors (Hinton-style soft targets at temperature 1: the loss Σ_c p_c · (−log q_c), computed by
the one training engine through a batch mixer that weights each class by p_c). The images are
the attacker's share (``--attacker-fraction``), another dataset (``--attacker-data``, Li's
out-of-distribution ImageNet / YouTube Faces rows) or ``source="uniform"`` noise (Li's "Random"
row, 5.46 %). ``defense`` puts one of :func:`nnmark.attacks.defenses.defenses`' oracle wrappers
(a thief's or an owner's query defense) between the attacker and the victim.

Defaults: the owner's recipe (optimiser, lr, batch size, epochs as recorded in the run; Li's
"same training configurations"), ``output`` labels (Li). The attacker's labels of its own images
are never used.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Literal

import torch
from pydantic import Field
from torch import Tensor

from nnmark.attacks.base import AttackParams, RemovalAttack, register_attack
from nnmark.data.base import ImageDataset
from nnmark.models import build_model
from nnmark.oracle import Oracle, TorchOracle
from nnmark.training import TrainConfig, train
from nnmark.types import ModelSpec


class DistillParams(AttackParams):
    output: Literal["labels", "probabilities"] = Field(
        "labels", description="what the oracle returns (Li: labels)"
    )
    source: Literal["attacker", "uniform"] = Field(
        "attacker", description="attacker = the attacker's images; uniform = random images (Li's 'Random')"
    )
    images: int | None = Field(
        None, ge=1, description="uniform: how many random images (default: the share's size)"
    )
    epochs: int | None = Field(None, ge=1, description="training epochs (default: the owner's, Li A.3)")
    budget: int | None = Field(None, ge=1, description="most queries the attacker may send")
    defense: str = Field(
        "none", description="oracle wrapper between attacker and victim (nnmark list attacks)"
    )


class SoftTargets:
    """Batch mixer for soft targets through :func:`nnmark.training.train`: the "labels" given to the
    engine are image indices; each image is repeated once per class with label c and loss weight
    p_c, so the engine's ``sum(w · ce) / sum(w)`` is the mean of Σ_c p_c · (−log q_c)."""

    def __init__(self, probabilities: Tensor) -> None:
        self.p = probabilities.float()
        self._on: torch.device | None = None

    def __call__(self, x: Tensor, y: Tensor, gen: torch.Generator, /) -> tuple[Tensor, Tensor, Tensor]:
        if self._on != x.device:
            self.p, self._on = self.p.to(x.device), x.device
        n, c = len(x), self.p.shape[1]
        xs = x.repeat_interleave(c, dim=0)
        labels = torch.arange(c, device=x.device).repeat(n)
        weights = self.p[y].reshape(-1)
        return xs, labels, weights


def extract(
    oracle: Oracle, spec: ModelSpec, images: Tensor, config: TrainConfig, *, output: str = "labels",
    progress: bool = False,
) -> torch.nn.Module:  # fmt: skip
    """Train a fresh ``spec`` model on ``images`` (uint8 or float [0, 1]) labelled through ``oracle``."""
    x = images.float().div(255) if images.dtype == torch.uint8 else images.float()
    answers = [
        oracle.probabilities(chunk) if output == "probabilities" else oracle.labels(chunk)
        for chunk in x.split(256)
    ]
    torch.manual_seed(config.seed)
    student = build_model(spec)
    if output == "probabilities":
        p = torch.cat(answers)
        train(student, images, torch.arange(len(images)), config, mixer=SoftTargets(p), progress=progress,
              description="attack: distill")  # fmt: skip
    else:
        train(student, images, torch.cat(answers), config, progress=progress, description="attack: distill")
    return student.cpu().eval()


@register_attack
class Distill(RemovalAttack[DistillParams]):
    """Model extraction (Li 2019 Sec. 8.3): a fresh model trained on the victim's answers, counted queries."""

    name = "distill"

    def run(
        self, model: torch.nn.Module, spec: ModelSpec, data: ImageDataset, config: TrainConfig, progress: bool
    ) -> torch.nn.Module:
        from nnmark.attacks.defenses import wrap_oracle

        p = self.params
        if p.source == "uniform":
            n = p.images or len(data.train_x)
            gen = torch.Generator().manual_seed(config.seed + 17)
            images = torch.randint(0, 256, (n, *data.input_shape), generator=gen, dtype=torch.uint8)
        else:
            images = data.train_x
        oracle = wrap_oracle(p.defense, TorchOracle(model, budget=p.budget), data, seed=config.seed)
        cfg = replace(config, epochs=p.epochs or config.epochs, schedule="none", augment="none")
        student = extract(oracle, spec, images, cfg, output=p.output, progress=progress)
        self.report = {
            "queries": oracle.queries,
            "images": len(images),
            "output": p.output,
            "source": p.source,
            "defense": p.defense,
            "epochs": cfg.epochs,
        }
        return student
