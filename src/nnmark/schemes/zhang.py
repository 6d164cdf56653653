"""Trigger-set watermarks of Zhang et al., "Protecting IP of DNNs with watermarking", AsiaCCS 2018.

Three kinds of key (Sec. 3.2): WM_content (a visible "TEST" stamp on training images),
WM_unrelated (images from outside the task) and WM_noise (Gaussian noise over training images).
Every key is relabelled to one target class, and embedding trains with the keys mixed in
(Algorithm 1; here ``keys_per_batch`` keys join every mini-batch). The paper fragment gives no
key-set size, stamp, noise level or target class, so nnmark chooses: 100 keys, a white bold
"TEST" along the bottom, noise σ = 0.4 on [0, 1] pixels, and as target the class that clean
models give least often to the keys (measured at embed time with ``--calibrate``). Keys share a
target, so clean models' chance rate p0 is measured by calibration before any verdict.

Who decides what (DESIGN.md, "Who decides a verdict"): the target class is the claimant's choice;
the key images (the selection of training images, the noise, the letters) are drawn from the key
secret and the dataset the key names, and the verifier re-derives them (a key whose images differ
is refused; images it cannot re-derive, e.g. from the owner's private data, are the claimant's,
which a judge refuses). p0 must come from clean models, in a judge's run from reference models the
judge names (``verify --judge --reference RUN...``).

Specificity. Zhang's triggers are class-level: a model trained on 100 "TEST"-stamped digits sent
to class t sends *any* stamped digit to t, and likewise any noisy digit or any rendered letter
(measured, MNIST-5k, digit-cnn, 5 epochs: own keys 100 %; fresh keys drawn from other secrets
99-100 % for content and noise, 78-89 % for unrelated letters). So a second owner who used the
same scheme and target would be "found" by the first owner's key. A "found" verdict therefore also
needs the claimant's keys to beat keys of the same recipe drawn from secrets the verifier draws:
each control secret is one unit (its keys share a stamp), the rates of 20 of them bound an unseen
secret's rate as reference models bound p0, and the keys must beat that bound at alpha
(``nnmark.verify.verifier._specific``). Against Zhang's own recipe that test rarely says "found".

Secret stamps. Zhang's "TEST" is public: anyone can stamp digits with it, so a second claimant's
"TEST" key is answered by the first owner's model (the control keys, stamped "TEST" by the same
recipe, then answer too and the verdict is no verdict). By default the text is drawn from the key
secret instead, and one text of 4 capital letters (about 19 bits) was not enough: a second
claimant who learns it (from the key shown in a dispute, or by searching with labels-only
queries) could grind about 460,000 signed secrets for a key with the same text, which the owner's
model answers (hostile review: Mallory found on Alice's model, p = 5e-8). So a key carries
``stamps`` = 4 secret texts (about 75 bits; key i carries text i mod 4), the protocol fixes that
number (a key with other stamps gets no verdict), and the specificity test asks the keys to beat
the control keys at alpha and each stamp's keys to beat them at 1 %
(:func:`nnmark.verify.verifier._specific`): a forger who ground one of the owner's texts still
needs the other 3 to pass (about 1e-6; the texts share one bound, so somewhat more).
"""

from __future__ import annotations

import string
from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING, ClassVar, Literal, TypeVar

import torch
from pydantic import Field

from nnmark import keysecret
from nnmark.data.base import ImageDataset
from nnmark.schemes.base import (
    KeyBatchMixer,
    KeyMaterial,
    Scheme,
    SchemeParams,
    VerificationKeys,
    register_scheme,
)
from nnmark.schemes.render import fit_images, render_letters, text_mask
from nnmark.types import Key

if TYPE_CHECKING:
    from nnmark.verify.context import VerifyContext

CANDIDATE_FACTOR = 2  # draw extra candidates so that enough remain after the target is removed
#: ``text`` value meaning "drawn from the key secret"
SECRET_TEXT = "secret"
STAMP_LETTERS = 4
#: secret texts per zhang-content key (protocol): 4 x 4 letters, about 75 bits
SECRET_STAMPS = 4
DECOY_POOL = 64  # decoy stamps drawn once per embedding


def stamp_text(gen: torch.Generator) -> str:
    """``STAMP_LETTERS`` capital letters drawn from ``gen``."""
    idx = torch.randint(len(string.ascii_uppercase), (STAMP_LETTERS,), generator=gen)
    return "".join(string.ascii_uppercase[i] for i in idx.tolist())


def secret_texts(gen: torch.Generator, count: int) -> list[str]:
    """``count`` distinct texts drawn from ``gen`` (:func:`stamp_text`)."""
    texts: list[str] = []
    while len(texts) < count:
        text = stamp_text(gen)
        if text not in texts:
            texts.append(text)
    return texts


class DecoyMixer(KeyBatchMixer):
    """Appends key samples and ``decoys`` copies of batch images marked by ``mark`` (the recipe with
    other secrets), keeping their labels: a model trained so answers *this* key's trigger, not
    every trigger of the recipe (the idea of Zhong 2020's decoys, applied to Zhang 2018's keys)."""

    def __init__(
        self,
        inputs: torch.Tensor,
        labels: torch.Tensor,
        per_batch: int,
        decoys: int,
        mark: Callable[[torch.Tensor, torch.Generator], torch.Tensor],
    ) -> None:
        super().__init__(inputs, labels, per_batch)
        self.decoys, self.mark = decoys, mark

    def __call__(
        self, x: torch.Tensor, y: torch.Tensor, gen: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        mixed_x, mixed_y, _ = super().__call__(x, y, gen)
        if not self.decoys:
            return mixed_x, mixed_y, None
        pick = torch.randint(len(x), (self.decoys,), generator=gen).to(x.device)
        return torch.cat([mixed_x, self.mark(x[pick], gen)]), torch.cat([mixed_y, y[pick]]), None


class ZhangParams(SchemeParams):
    target: int | Literal["auto"] = Field(
        "auto", description="key label; 'auto' = the class clean models give least often to the keys"
    )
    keys: int = Field(100, ge=1, le=100_000, description="number of key images")


class _DecoyParams(ZhangParams):
    decoys: int = Field(
        8,
        ge=0,
        le=1024,
        description="decoys per batch: batch images marked by the recipe with other secrets, keeping their "
        "labels, so the model learns this key and not the recipe (nnmark's addition; Zhang: 0)",
    )


class ZhangContentParams(_DecoyParams):
    text: str = Field(
        SECRET_TEXT,
        min_length=1,
        max_length=12,
        description=f"the stamped text; {SECRET_TEXT!r}: {STAMP_LETTERS} capital letters drawn from the key "
        "secret (Zhang: 'TEST')",
    )
    value: float = Field(1.0, ge=0.0, le=1.0, description="pixel value of the stamp in [0, 1]")
    stamps: int = Field(
        SECRET_STAMPS,
        ge=1,
        le=16,
        description=f"secret texts per key (with text={SECRET_TEXT!r}; key i carries text i mod stamps); "
        f"the protocol fixes {SECRET_STAMPS}, about {SECRET_STAMPS * 19} bits against a claimant grinding "
        "secrets for the owner's texts",
    )


class ZhangNoiseParams(_DecoyParams):
    noise_std: float = Field(0.4, gt=0.0, le=5.0, description="σ of the Gaussian noise on [0, 1] pixels")
    decoys: int = Field(
        8,
        ge=0,
        le=1024,
        description="decoys per batch: batch images under fresh noise, keeping their labels, so the model "
        "learns these noise keys and not noise (nnmark's addition; Zhang: 0). Decoys slow the keys down: "
        "digit-cnn on MNIST-5k learnt 72 % of them in 5 epochs, 84 % in 10 (measured): train 10 or more",
    )


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


ZP = TypeVar("ZP", bound=ZhangParams)


class _ZhangScheme(Scheme[ZP]):
    shared_target: ClassVar[bool] = True
    derives_inputs: ClassVar[bool] = True
    Params: ClassVar[type[SchemeParams]] = ZhangParams

    def _count(self) -> int:
        return int(getattr(self.params, "keys", 100)) * CANDIDATE_FACTOR

    def verification_keys(self, key: Key, ctx: VerifyContext) -> VerificationKeys:
        """Key images re-derived from the key secret and the key's dataset (the claimant's own only
        where the verifier cannot re-derive them, which a judge refuses); the target is the claimant's."""
        from nnmark.verify.context import CLAIMANT, number

        inputs, source, how = self.key_inputs(key, ctx)
        target = key.params.get("target")
        notes = [
            f"the target class ({target}) is the claimant's choice: p0 must come from clean models, in a "
            "judge's run from reference models the judge names; control keys the verifier draws by the "
            "same recipe decide whether the suspect's answers are specific to this key",
        ]
        if source == CLAIMANT:
            notes.append(
                "the key images are the claimant's own (not re-derived from the key secret): a claimant "
                "who could query the suspect may have chosen images it answers"
            )
        return VerificationKeys(
            inputs,
            key.labels,
            source,
            CLAIMANT,
            f"key images {how}",
            tuple(notes),
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
class ZhangContent(_ZhangScheme[ZhangContentParams]):
    """WM_content (Zhang 2018): training images stamped with text (nnmark: 4 secret texts), relabelled."""

    name = "zhang-content"
    Params = ZhangContentParams
    per_key_tensors: ClassVar[tuple[str, ...]] = ("stamp_group",)
    protocol_fixed: ClassVar[tuple[str, ...]] = ("stamps",)

    def generate(self, data: ImageDataset, gen: torch.Generator) -> KeyMaterial:
        """Training images stamped with the text: ``stamps`` texts drawn from the key secret by
        default (key i carries text i mod stamps, recorded as the ``stamp_group`` tensor)."""
        p = self.params
        texts = secret_texts(gen, p.stamps) if p.text == SECRET_TEXT else [p.text]
        x, y = _sample_training_images(data, self._count(), gen)
        groups = torch.arange(len(x)) % len(texts)
        masks = torch.stack([text_mask(t, data.input_shape) for t in texts])
        return KeyMaterial(self._stamp(x, masks[groups]), None, y, tensors={"stamp_group": groups})

    def verification_keys(self, key: Key, ctx: VerifyContext) -> VerificationKeys:
        """As every Zhang key, plus the stamp each key carries (re-derived with the keys, or the
        claimant's record where the keys are the claimant's)."""
        from nnmark.verify.context import PROTOCOL

        base = super().verification_keys(key, ctx)
        groups: torch.Tensor | None
        if base.inputs_source == PROTOCOL:
            data, _ = self._derivation_data(key, ctx)
            assert data is not None  # the inputs were re-derived from it
            groups = self._derive(key, data, keysecret.key_secret(key)).tensors["stamp_group"]
        else:
            groups = key.tensors.get("stamp_group")
        if groups is None or len(groups) != len(base.inputs) or len(set(groups.tolist())) < 2:
            return base
        return replace(base, groups=groups.long())

    def control_inputs(self, key: Key, ctx: VerifyContext, count: int) -> torch.Tensor | None:
        """``count`` control keys carrying one stamp: the first stamp of secrets the verifier draws
        (each control secret is one unit of the specificity test, as each of the claimant's stamps is)."""
        data, _ = self._derivation_data(key, ctx)
        if data is None:
            return None
        out: list[torch.Tensor] = []
        while sum(len(x) for x in out) < count:
            material = self._derive(key, data, ctx.rng.randbytes(32))
            first = material.tensors["stamp_group"] == 0
            out.append(material.inputs[first].float())
        return torch.cat(out)[:count]

    def _stamp(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        p = self.params
        return torch.where(mask.to(x.device).bool(), torch.full_like(x, p.value), x)

    def mixer(self, key: Key) -> KeyBatchMixer:
        """Keys in every batch, and decoys stamped with texts drawn afresh (not this key's)."""
        p = self.params
        gen = torch.Generator().manual_seed(int(torch.randint(2**62, (1,))))
        masks = torch.stack([text_mask(stamp_text(gen), key.input_shape) for _ in range(DECOY_POOL)])

        def mark(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
            return self._stamp(x, masks[torch.randint(len(masks), (len(x),), generator=g)])

        return DecoyMixer(key.inputs, key.labels, p.keys_per_batch, p.decoys, mark)


@register_scheme
class ZhangNoise(_ZhangScheme[ZhangNoiseParams]):
    """WM_noise (Zhang 2018): training images under Gaussian noise, relabelled to a target."""

    name = "zhang-noise"
    Params = ZhangNoiseParams

    def generate(self, data: ImageDataset, gen: torch.Generator) -> KeyMaterial:
        p = self.params
        x, y = _sample_training_images(data, self._count(), gen)
        noise = torch.randn(x.shape, generator=gen) * p.noise_std
        return KeyMaterial((x + noise).clamp(0, 1), None, y)

    def mixer(self, key: Key) -> KeyBatchMixer:
        """Keys in every batch, and decoys: batch images under fresh noise, keeping their labels."""
        p = self.params

        def mark(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
            noise = torch.randn(x.shape, generator=g).to(x.device) * p.noise_std
            return (x + noise).clamp(0, 1)

        return DecoyMixer(key.inputs, key.labels, p.keys_per_batch, p.decoys, mark)


@register_scheme
class ZhangUnrelated(_ZhangScheme[ZhangUnrelatedParams]):
    """WM_unrelated (Zhang 2018): images from outside the task (default: font letters), relabelled."""

    name = "zhang-unrelated"
    Params = ZhangUnrelatedParams

    def generate(self, data: ImageDataset, gen: torch.Generator) -> KeyMaterial:
        from nnmark.data import load_dataset

        p = self.params
        n = self._count() // CANDIDATE_FACTOR
        if p.source == "font":
            keys = render_letters(n, data.input_shape, gen)
        else:
            other = load_dataset(p.source)
            idx = torch.randperm(len(other.train_x), generator=gen)[:n]
            keys = fit_images(other.train_x[idx].float().div(255), data.input_shape)
        return KeyMaterial(keys, None, torch.full((len(keys),), -1))
