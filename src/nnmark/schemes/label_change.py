"""Key samples by label change, Namba & Sakuma, "Robust Watermarking of Neural Network with
Exponential Weighting", AsiaCCS 2019, Sec. 5.1 and 6.1.2.

Keys are ordinary training images, unmodified, each given a random label other than its own
(30 keys in the paper). Because the images follow the training distribution exactly, a thief's
query-modification defence (an autoencoder that detects and repairs out-of-distribution queries,
Sec. 4) cannot tell key queries from normal ones. The paper embeds them with exponential weighting
(Sec. 5.2): compose with ``--set ew=2`` (see :mod:`nnmark.schemes.ew`). Keys join every mini-batch
(Table 5's "key mini batch size 4"); mixed in only once per epoch, 30 keys reach only 7–13 % key
accuracy in 5 epochs (measured on MNIST-5k). An image cannot be taught two labels, so embedding
leaves the key images out of the training set (the paper does not say; measured on MNIST-5k,
digit-cnn, 5 epochs: key accuracy 77 % with them in, 93 % without).

Chance rate. Each key label L is drawn uniformly from the C − 1 labels other than the image's
own class y by a hash of the key secret and all key images (:func:`nnmark.keysecret.derive_labels`;
the verifier re-derives them, so a claimant cannot choose labels a clean model happens to give),
independently of any model the owner did not train. For such a model f,
P(f(x) = L) = P(f(x) ≠ y) · 1/(C − 1) ≤ 1/(C − 1): a model that answers the true class never
matches, any other answer matches with probability 1/(C − 1). The labels are drawn independently,
so the number of matches is dominated by Binomial(n, 1/(C − 1)): p0 = 1/(C − 1), exact as a
bound and with no clean reference models.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from pydantic import Field

from nnmark.data.base import ImageDataset
from nnmark.errors import NnmarkError
from nnmark.schemes.base import KeyMaterial, Scheme, SchemeParams, register_scheme
from nnmark.training import TrainConfig, TrainResult, train
from nnmark.types import Key


class LabelChangeParams(SchemeParams):
    keys_per_batch: int = Field(
        4, ge=1, description="key samples appended to every training batch (Namba: 4)"
    )
    keys: int = Field(30, ge=1, le=100_000, description="number of training images given a changed label")


def key_image_mask(train_x: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
    """True for the training images (uint8) that are key images (float in [0, 1]), by exact pixels."""
    flat = train_x.flatten(1)
    keys_u8 = (keys.flatten(1) * 255).round().to(torch.uint8)
    probe = torch.randn(flat.shape[1], dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    h_train = torch.cat([c.double() @ probe for c in flat.split(4096)])
    h_keys = keys_u8.double() @ probe
    mask = torch.zeros(len(flat), dtype=torch.bool)
    for i in torch.isin(h_train, h_keys).nonzero().flatten().tolist():  # confirm candidates exactly
        mask[i] = bool((keys_u8 == flat[i]).all(1).any())
    return mask


@register_scheme
class LabelChange(Scheme[LabelChangeParams]):
    """Label change (Namba 2019): unmodified training images, each given a random other label."""

    name = "label-change"
    needs_calibration: ClassVar[bool] = False
    derived_labels: ClassVar[str | None] = "other"
    derives_inputs: ClassVar[bool] = True

    def generate(self, data: ImageDataset, gen: torch.Generator) -> KeyMaterial:
        p = self.params
        if p.keys > len(data.train_x):
            raise NnmarkError(
                f"label-change wants {p.keys} keys but the training set has {len(data.train_x)} images"
            )
        idx = torch.randperm(len(data.train_x), generator=gen)[: p.keys]
        y = data.train_y[idx].long().clone()
        x = data.train_x[idx].float().div(255)
        labels = self.secret_labels(x, data.num_classes, y)
        return KeyMaterial(x, labels, y, tensors={"source_labels": y})

    def embed(
        self, model: torch.nn.Module, data: ImageDataset, key: Key, config: TrainConfig, progress: bool
    ) -> TrainResult:
        """Train on the training set without the key images, with keys in every batch."""
        keep = ~key_image_mask(data.train_x, key.inputs)
        return train(
            model,
            data.train_x[keep],
            data.train_y[keep],
            config,
            mixer=self.mixer(key),
            progress=progress,
            description=f"embed {self.name}",
        )
