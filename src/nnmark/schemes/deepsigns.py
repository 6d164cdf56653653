"""DeepSigns black-box watermark as Namba 2019 compares it (Sec. 3.1, item (5)): Rouhani, Chen and
Koushanfar, "DeepSigns: An End-to-End Watermarking Framework for Protecting the Ownership of Deep
Neural Networks", ASPLOS 2019.

Key samples are images of uniform random noise, each with a random label (Namba's Fig. 1(j));
the model is first trained on the training samples only and then retrained with training samples
and key samples (Namba Sec. 3.1: "In Rouhani et al. and Merrer et al.'s methods, key samples are
embedded in the model by fine-tuning"). Namba uses 30 keys (Table 6). DeepSigns' own key
selection (keeping keys that only the marked model learns) is not part of this baseline.

Chance rate: labels are uniform over the C classes, drawn from the key secret and a hash of all key
images (re-derived by the verifier, which refuses a key whose labels differ), so a model the owner
did not train matches each key with probability exactly 1/C, whatever it answers: p0 = 1/C, no
calibration needed.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from pydantic import Field

from nnmark.data.base import ImageDataset
from nnmark.schemes.base import KeyMaterial, Scheme, SchemeParams, register_scheme


class RandomLabelParams(SchemeParams):
    keys: int = Field(30, ge=1, le=100_000, description="number of key images")


@register_scheme
class DeepSignsBB(Scheme[RandomLabelParams]):
    """DeepSigns black-box (Rouhani 2019, as in Namba 2019): uniform-noise images with random labels."""

    name = "deepsigns-bb"
    needs_calibration: ClassVar[bool] = False
    derived_labels: ClassVar[str | None] = "uniform"
    derives_inputs: ClassVar[bool] = True
    generate_reads_data: ClassVar[bool] = False
    trains_first: ClassVar[bool] = True

    def generate(self, data: ImageDataset, gen: torch.Generator) -> KeyMaterial:
        p = self.params
        x = torch.rand((p.keys, *data.input_shape), generator=gen)
        labels = self.secret_labels(x, data.num_classes, torch.full((p.keys,), -1))
        return KeyMaterial(x, labels, torch.full((p.keys,), -1, dtype=torch.int64))
