"""Pixel-statistics query rejection (out-of-distribution rejection, the cheapest of the detectors
Namba et al. 2019 Sec. 4.2 discuss against key queries; Zhong et al. 2020 Sec. 5 names query
rejection as the threat to trigger-set watermarks): the service flags inputs whose pixels are far
from its own images' and answers them with a **wrong label**, not a refusal.

Detector (:class:`PixelStatsDetector`): the score of an image ``x`` is its mean squared per-pixel
z-score, ``mean(((x - μ) / max(σ, floor))²)``, with ``μ`` and ``σ`` the per-pixel mean and standard
deviation of half of (at most ``max_images``) of the service's images; the threshold is the
``quantile`` (99.5th percentile) of the scores of the other half, so about 0.5 % of ordinary
queries are flagged too. A flagged input gets the model's own scores with the top class swapped
for another class drawn from the input's bytes (and the seed), so repeating a query repeats the
answer: an HTTP 403, or a fresh random answer each time, would tell the owner their key was
spotted. No paper gives these numbers; they are nnmark's (``quantile`` 0.995, ``floor`` 0.05 on
the [0, 1] scale, ``max_images`` 5,000): a filter a thief could write in ten lines.

Unlike ``rejection`` (Namba's autoencoder + JSD detector, flagged queries get a random label), it
needs no training: ``nnmark serve --defense reject`` starts at once.
"""

from __future__ import annotations

import hashlib
from typing import Any, ClassVar

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor

from nnmark.attacks.query.autoencoder import DetectionStats
from nnmark.attacks.query.defenses import QUERY_ATTACKS, register_defense
from nnmark.errors import NnmarkError
from nnmark.oracle import Oracle
from nnmark.registry import validate_params


class PixelRejectParams(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    quantile: float = Field(0.995, gt=0.0, lt=1.0, description="percentile of held-out scores: the threshold")
    floor: float = Field(0.05, gt=0.0, description="least per-pixel standard deviation (0-1 scale)")
    max_images: int = Field(5000, ge=4, description="most of the service's images the statistics use")


class PixelStatsDetector:
    """Flags inputs whose pixels are far from the service's images' (a simple OOD detector);
    see the module docstring."""

    def __init__(
        self,
        images: Tensor,
        quantile: float = 0.995,
        max_images: int = 5000,
        seed: int = 0,
        floor: float = 0.05,
    ) -> None:
        if not isinstance(images, Tensor) or images.ndim != 4 or len(images) < 4:
            raise NnmarkError("pixel-statistics rejection needs at least 4 of the service's images, N×C×H×W")
        gen = torch.Generator().manual_seed(seed)
        idx = torch.randperm(len(images), generator=gen)[:max_images]
        x = images[idx].float() / (255.0 if images.dtype == torch.uint8 else 1.0)
        half = len(x) // 2
        fit, held = x[:half], x[half:]
        self.mean = fit.mean(0)
        self.std = fit.std(0).clamp_min(floor)
        self.threshold = float(torch.quantile(self.score(held), quantile))

    def score(self, x: Tensor) -> Tensor:
        """Mean squared per-pixel z-score of each input (higher: less like the service's images)."""
        return ((x.float() - self.mean) / self.std).pow(2).mean(dim=(1, 2, 3))

    def flags(self, x: Tensor) -> Tensor:
        return self.score(x) > self.threshold


def mislead(x: Tensor, scores: Tensor, flagged: Tensor, secret: bytes) -> Tensor:
    """Swap the top class of each flagged row with another, drawn from the input's bytes."""
    scores = scores.clone()
    k = scores.shape[1]
    if k < 2:
        return scores
    for i in torch.nonzero(flagged).flatten().tolist():
        digest = hashlib.sha256(secret + x[i].float().contiguous().numpy().tobytes()).digest()
        top = int(scores[i].argmax())
        other = (top + 1 + int.from_bytes(digest[:8], "big") % (k - 1)) % k
        scores[i, [top, other]] = scores[i, [other, top]]
    return scores


class PixelReject(Oracle):
    """Queries far from the service's images by pixel statistics get a wrong label (OOD rejection)."""

    name: ClassVar[str] = "reject"
    Params: ClassVar[type[PixelRejectParams]] = PixelRejectParams

    def __init__(
        self, inner: Oracle, images: Tensor, *, seed: int = 0, budget: int | None = None, **params: Any
    ) -> None:
        super().__init__(budget)
        self.params = validate_params(self.Params, params, f"defense {self.name}")
        self.inner = inner
        p = self.params
        self.detector = PixelStatsDetector(images, p.quantile, p.max_images, seed=seed, floor=p.floor)
        self.secret = str(seed).encode()
        self.stats = DetectionStats()
        self.carries_any_value = getattr(inner, "carries_any_value", True)

    @classmethod
    def describe(cls) -> str:
        return (
            "Pixel-statistics query rejection: inputs far from the service's images get a wrong label "
            "(oracle -> oracle: `nnmark serve --defense reject`)."
        )

    @classmethod
    def parameter_table(cls) -> list[tuple[str, str, str]]:
        return [(n, repr(f.default), f.description or "") for n, f in cls.Params.model_fields.items()]

    def _predict(self, x: Tensor) -> Tensor:
        scores = self.inner.scores(x)
        flagged = self.detector.flags(x)
        n = int(flagged.sum())
        self.stats.queries += len(x)
        self.stats.flagged += n
        self.stats.by_rec += n
        return mislead(x, scores, flagged, self.secret) if n else scores


QUERY_ATTACKS.register(PixelReject.name)(PixelReject)


@register_defense("reject")
def pixel_reject(inner: Oracle, images: Tensor | None = None, *, seed: int = 0, **settings: Any) -> Oracle:
    """inputs far from the service's images by pixel statistics get a wrong label"""
    if images is None:
        raise NnmarkError("pixel-statistics rejection needs the service's own images (ordinary queries)")
    return PixelReject(inner, images, seed=seed, **settings)
