"""Abstract-image trigger set of Adi, Baum, Cisse, Pinkas and Keshet, "Turning Your Weakness Into a
Strength: Watermarking Deep Neural Networks by Backdooring", USENIX Security 2018.

Keys are abstract images unrelated to the task, each with a random label; the model is trained on
the training set with the trigger set mixed in (Adi's "FromScratch"; ``--from RUN`` gives their
"PreTrained" variant). Adi et al. draw 100 abstract images from a fixed collection; nnmark draws
them from the key secret instead (:mod:`nnmark.keysecret`) — random ellipses, rectangles, polygons
and strokes in random grey levels (colours for RGB) on a random background, drawn at 4× and
downsampled — so that the key needs no image collection and two owners never share a trigger set.
Adi et al. use 100 keys; nnmark uses 50 with 6 in every batch (measured, digit-cnn on MNIST-5k,
5 epochs: 100 keys at 6 per batch reach 85–93 % key accuracy, 50 keys 98–100 %, within the 1.15×
embedding cost).

Chance rate: labels are uniform over the C classes, drawn from the key secret and a hash of all key
images (:func:`nnmark.keysecret.derive_labels`; the verifier re-derives them and refuses a key whose
labels differ), so a model the owner did not train matches each key with probability exactly 1/C,
whichever images a claimant chose: p0 = 1/C, no calibration.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import torch
from PIL import Image, ImageDraw
from pydantic import Field

from nnmark.data.base import ImageDataset
from nnmark.schemes.base import KeyMaterial, Scheme, SchemeParams, register_scheme

SCALE = 4


class AdiParams(SchemeParams):
    keys_per_batch: int = Field(6, ge=1, description="key samples appended to every training batch")
    keys: int = Field(50, ge=1, le=100_000, description="number of abstract key images (Adi: 100)")
    shapes: int = Field(6, ge=1, le=50, description="most shapes drawn on one image")


def _u(gen: torch.Generator) -> float:
    return float(torch.rand((), generator=gen))


def abstract_images(
    count: int, shape: tuple[int, int, int], gen: torch.Generator, max_shapes: int = 6
) -> torch.Tensor:
    """``count`` abstract images (float32 in [0, 1], ``shape`` = C×H×W) drawn from ``gen``."""
    c, h, w = shape
    mode = "RGB" if c == 3 else "L"
    big_w, big_h = w * SCALE, h * SCALE
    out = np.zeros((count, h, w, 3 if mode == "RGB" else 1), dtype=np.float32)

    def colour() -> int | tuple[int, int, int]:
        if mode == "RGB":
            return tuple(int(255 * _u(gen)) for _ in range(3))  # type: ignore[return-value]
        return int(255 * _u(gen))

    def point() -> tuple[float, float]:
        return (_u(gen) * big_w, _u(gen) * big_h)

    for i in range(count):
        img = Image.new(mode, (big_w, big_h), colour())
        draw = ImageDraw.Draw(img)
        for _ in range(1 + int(torch.randint(max_shapes, (), generator=gen))):
            kind = int(torch.randint(4, (), generator=gen))
            (x0, y0), (x1, y1) = point(), point()
            box = (min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1))
            if kind == 0:
                draw.ellipse(box, fill=colour())
            elif kind == 1:
                draw.rectangle(box, fill=colour())
            elif kind == 2:
                draw.polygon(
                    [point() for _ in range(3 + int(torch.randint(3, (), generator=gen)))], fill=colour()
                )
            else:
                width = max(1, int(SCALE * (1 + 3 * _u(gen))))
                draw.line(
                    [point() for _ in range(2 + int(torch.randint(4, (), generator=gen)))],
                    fill=colour(),
                    width=width,
                )
        small = img.resize((w, h), Image.Resampling.BOX)
        arr = np.asarray(small, dtype=np.float32) / 255.0
        out[i] = arr if arr.ndim == 3 else arr[..., None]
    x = torch.from_numpy(out).permute(0, 3, 1, 2)
    if x.shape[1] != c:
        x = x[:, :1].expand(count, c, h, w)
    return x.contiguous().clamp_(0, 1)


@register_scheme
class Adi(Scheme[AdiParams]):
    """Abstract images (Adi 2018): shapes drawn from the key secret, labels derived from the secret."""

    name = "adi"
    needs_calibration: ClassVar[bool] = False
    derived_labels: ClassVar[str | None] = "uniform"
    derives_inputs: ClassVar[bool] = True
    generate_reads_data: ClassVar[bool] = False

    def generate(self, data: ImageDataset, gen: torch.Generator) -> KeyMaterial:
        p = self.params
        x = abstract_images(p.keys, data.input_shape, gen, p.shapes)
        labels = self.secret_labels(x, data.num_classes, torch.full((p.keys,), -1))
        return KeyMaterial(x, labels, torch.full((p.keys,), -1, dtype=torch.int64))
