"""Trigger-set watermarks of Zhang et al., "Protecting IP of DNNs with watermarking", AsiaCCS 2018.

Three kinds of key (Sec. 3.2): WM_content (a visible "TEST" stamp on training images),
WM_unrelated (images from outside the task) and WM_noise (Gaussian noise over training images).
Every key is relabelled to one target class, and embedding trains with the keys mixed in
(Algorithm 1; here ``keys_per_batch`` keys join every mini-batch). The paper fragment gives no
key-set size, stamp, noise level or target class, so nnmark chooses: 100 keys, a white bold
"TEST" along the bottom, noise σ = 0.4 on [0, 1] pixels, and as target the class that clean
models give least often to the keys (measured at embed time with ``--calibrate``). Keys share a
target, so clean models' chance rate p0 is measured by calibration before any verdict.

Who decides what (DESIGN.md, "Who decides a verdict"): the target class is the claimant's choice
and the key images are the owner's own (training images, or images from outside the task), stored
in the key and never re-derived by the verifier; only their selection and the noise are drawn
from the key secret at embedding. So p0 must come from clean models, and in a judge's run from
reference models the judge names (``verify --judge --reference RUN...``); every verdict says so.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar, Literal

import torch
from pydantic import Field

from nnmark.data.base import ImageDataset
from nnmark.schemes.base import KeyMaterial, Scheme, SchemeParams, VerificationKeys, register_scheme
from nnmark.schemes.render import fit_images, render_letters, text_mask
from nnmark.types import Key

if TYPE_CHECKING:
    from nnmark.verify.context import VerifyContext

CANDIDATE_FACTOR = 2  # draw extra candidates so that enough remain after the target is removed


class ZhangParams(SchemeParams):
    target: int | Literal["auto"] = Field(
        "auto", description="key label; 'auto' = the class clean models give least often to the keys"
    )
    keys: int = Field(100, ge=1, le=100_000, description="number of key images")


class ZhangContentParams(ZhangParams):
    text: str = Field("TEST", min_length=1, max_length=12, description="the stamped text")
    value: float = Field(1.0, ge=0.0, le=1.0, description="pixel value of the stamp in [0, 1]")


class ZhangNoiseParams(ZhangParams):
    noise_std: float = Field(0.4, gt=0.0, le=5.0, description="σ of the Gaussian noise on [0, 1] pixels")


class ZhangUnrelatedParams(ZhangParams):
    source: str = Field(
        "font",
        description="'font' (letters drawn from DejaVu fonts) or a dataset: fashion-mnist, emnist, mnist",
    )


def _sample_training_images(
    data: ImageDataset, n: int, gen: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    idx = torch.randperm(len(data.train_x), generator=gen)[:n]
    return data.train_x[idx].float().div(255), data.train_y[idx].clone()


class _ZhangScheme(Scheme):
    shared_target: ClassVar[bool] = True
    Params: ClassVar[type[SchemeParams]] = ZhangParams

    def _count(self) -> int:
        return int(getattr(self.params, "keys", 100)) * CANDIDATE_FACTOR

    def verification_keys(self, key: Key, ctx: VerifyContext) -> VerificationKeys:
        """The claimant's key images and target class, said to be the claimant's in the verdict."""
        from nnmark.verify.context import CLAIMANT, number

        del ctx
        target = key.params.get("target")
        return VerificationKeys(
            key.inputs,
            key.labels,
            CLAIMANT,
            CLAIMANT,
            "key images as stored in the key: the owner's own images, chosen by the claimant",
            (
                f"the target class ({target}) is the claimant's choice and the key images are the owner's "
                "own, chosen by the claimant (not derived from the key secret): p0 must come from clean "
                "models, in a judge's run from reference models the judge names",
            ),
            labels_how=f"every key sent to target class {target}",
            decided={
                "target class": number(
                    target,
                    CLAIMANT,
                    "chosen by the claimant (at embedding: the class clean models gave least often)",
                )
            },
        )


@register_scheme
class ZhangContent(_ZhangScheme):
    """WM_content (Zhang 2018): training images stamped with a visible "TEST", relabelled to a target."""

    name = "zhang-content"
    Params = ZhangContentParams

    def generate(self, data: ImageDataset, gen: torch.Generator) -> KeyMaterial:
        p = self.params
        assert isinstance(p, ZhangContentParams)
        x, y = _sample_training_images(data, self._count(), gen)
        mask = text_mask(p.text, data.input_shape)
        keys = torch.where(mask.bool(), torch.full_like(x, p.value), x)
        return KeyMaterial(keys, None, y, params={"text": p.text, "value": p.value})


@register_scheme
class ZhangNoise(_ZhangScheme):
    """WM_noise (Zhang 2018): training images under Gaussian noise, relabelled to a target."""

    name = "zhang-noise"
    Params = ZhangNoiseParams

    def generate(self, data: ImageDataset, gen: torch.Generator) -> KeyMaterial:
        p = self.params
        assert isinstance(p, ZhangNoiseParams)
        x, y = _sample_training_images(data, self._count(), gen)
        noise = torch.randn(x.shape, generator=gen) * p.noise_std
        return KeyMaterial((x + noise).clamp(0, 1), None, y, params={"noise_std": p.noise_std})


@register_scheme
class ZhangUnrelated(_ZhangScheme):
    """WM_unrelated (Zhang 2018): images from outside the task (default: font letters), relabelled."""

    name = "zhang-unrelated"
    Params = ZhangUnrelatedParams

    def generate(self, data: ImageDataset, gen: torch.Generator) -> KeyMaterial:
        from nnmark.data import load_dataset

        p = self.params
        assert isinstance(p, ZhangUnrelatedParams)
        n = self._count() // CANDIDATE_FACTOR
        if p.source == "font":
            keys = render_letters(n, data.input_shape, gen)
        else:
            other = load_dataset(p.source)
            idx = torch.randperm(len(other.train_x), generator=gen)[:n]
            keys = fit_images(other.train_x[idx].float().div(255), data.input_shape)
        return KeyMaterial(keys, None, torch.full((len(keys),), -1), params={"source": p.source})
