"""Gaussian noise added to every query (randomised input transformation; Zhang 2018's noise keys
are its mirror image). ``std`` 0.1 on the [0, 1] scale is nnmark's choice (no watermark paper gives
one): digits stay readable, faint trigger patterns drown. Seeded, fresh noise for every query."""

from __future__ import annotations

from typing import Any

import torch
from pydantic import Field
from torch import Tensor

from nnmark.attacks.query.defenses import QUERY_ATTACKS, register_defense
from nnmark.attacks.query.preprocess import Preprocessed, PreprocessParams
from nnmark.oracle import Oracle


class NoiseParams(PreprocessParams):
    std: float = Field(0.1, gt=0, description="noise standard deviation on the [0, 1] scale")


class Noise(Preprocessed[NoiseParams]):
    """Every query plus Gaussian noise (then clipped to [0, 1] when ``clip``)."""

    name = "noise"

    def transform(self, x: Tensor) -> Tensor:
        p = self.params
        noisy = x + p.std * torch.randn(x.shape, generator=self.gen)
        return noisy.clamp(0, 1) if p.clip else noisy


QUERY_ATTACKS.register(Noise.name)(Noise)


@register_defense("noise")
def noise(inner: Oracle, images: Tensor | None = None, *, seed: int = 0, **settings: Any) -> Oracle:
    """every input plus Gaussian noise (std 0.1)"""
    return Noise(inner, seed=seed, **settings)
