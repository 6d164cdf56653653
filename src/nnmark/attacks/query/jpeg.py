"""JPEG compression of every query (Pillow's encoder, the standard DCT quantisation), the
best-known input-transformation defense (Guo et al. 2018; Das et al., "Keeping the Bad Guys Out",
2017). ``quality`` 75 is Guo et al.'s setting; the watermark papers give none."""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import torch
from PIL import Image
from pydantic import Field
from torch import Tensor

from nnmark.attacks.query.defenses import QUERY_ATTACKS, register_defense
from nnmark.attacks.query.preprocess import Preprocessed, PreprocessParams
from nnmark.oracle import Oracle


class JpegParams(PreprocessParams):
    quality: int = Field(75, ge=1, le=95, description="JPEG quality (Guo et al. 2018: 75)")


class Jpeg(Preprocessed[JpegParams]):
    """Every query JPEG-encoded and decoded (8-bit, per image) before the model sees it."""

    name = "jpeg"

    def transform(self, x: Tensor) -> Tensor:
        q = self.params.quality  # type: ignore[attr-defined]
        out = []
        for img in (x.clamp(0, 1) * 255).round().to(torch.uint8):
            arr = img.permute(1, 2, 0).numpy()
            pil = Image.fromarray(arr[:, :, 0] if arr.shape[2] == 1 else arr)
            buf = io.BytesIO()
            pil.save(buf, format="JPEG", quality=q)
            back = np.asarray(Image.open(io.BytesIO(buf.getvalue())))
            t = torch.from_numpy(back.copy())
            out.append(t[None] if t.dim() == 2 else t.permute(2, 0, 1))
        return torch.stack(out).float() / 255


QUERY_ATTACKS.register(Jpeg.name)(Jpeg)


@register_defense("jpeg")
def jpeg(inner: Oracle, images: Tensor | None = None, *, seed: int = 0, **settings: Any) -> Oracle:
    """every input JPEG-compressed and decoded (quality 75)"""
    return Jpeg(inner, seed=seed, **settings)
