"""Gaussian blur of every query (a smoothing input transformation, Guo et al. 2018 / Xu et al.'s
"feature squeezing", NDSS 2018, which uses 2×2 median smoothing on MNIST). ``sigma`` 1 pixel and a
5×5 kernel are nnmark's choice (the watermark papers give none): enough to wash out
one-pixel-wide stamps, mild on 28×28 digits."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor

from nnmark.attacks.query.defenses import QUERY_ATTACKS, register_defense
from nnmark.attacks.query.preprocess import Preprocessed, PreprocessParams
from nnmark.oracle import Oracle


class BlurParams(PreprocessParams):
    sigma: float = Field(1.0, gt=0, description="Gaussian standard deviation in pixels")
    size: int = Field(5, ge=3, description="kernel size (odd)")


class Blur(Preprocessed[BlurParams]):
    """Every query blurred with a Gaussian kernel (per channel, reflect padding)."""

    name = "blur"

    def transform(self, x: Tensor) -> Tensor:
        p = self.params
        size = p.size | 1
        r = torch.arange(size, dtype=torch.float32) - size // 2
        g = torch.exp(-(r**2) / (2 * p.sigma**2))
        g = g / g.sum()
        c = x.shape[1]
        k = (g[:, None] * g[None, :]).expand(c, 1, size, size)
        pad = size // 2
        mode = "reflect" if min(x.shape[2:]) > pad else "replicate"
        return F.conv2d(F.pad(x, (pad, pad, pad, pad), mode=mode), k, groups=c)


QUERY_ATTACKS.register(Blur.name)(Blur)


@register_defense("blur")
def blur(inner: Oracle, images: Tensor | None = None, *, seed: int = 0, **settings: Any) -> Oracle:
    """every input Gaussian-blurred (sigma 1 pixel)"""
    return Blur(inner, seed=seed, **settings)
