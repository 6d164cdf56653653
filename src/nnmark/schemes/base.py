"""What every watermarking scheme provides: key generation, how keys enter training, verification.

A scheme is a class registered in :data:`nnmark.schemes.SCHEMES`, configured by a frozen pydantic
model of parameters (unknown names are refused) that it names once, as its generic argument:
``class Adi(Scheme[AdiParams])`` makes ``Adi.Params`` and the type of ``self.params`` ``AdiParams``.
Keys are generated from the key secret (see :mod:`nnmark.keysecret`: the OS's CSPRNG, bound to the
owner's signature), given labels (possibly after calibration on clean models), mixed into training
by a :class:`~nnmark.training.BatchMixer`, and verified through an :class:`~nnmark.oracle.Oracle`.

Verification follows the scheme's *protocol*: its name and ``protocol_version`` fix the test's
parameters (``protocol_fixed`` names the parameters a key must leave at their defaults), and
:meth:`Scheme.verification_keys` says which key inputs and labels the verifier re-derives from
the secret and which it takes from the claimant.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Generic, TypeVar, cast

import torch
from pydantic import BaseModel, ConfigDict, Field

from nnmark import keysecret
from nnmark.data.base import ImageDataset
from nnmark.errors import KeyTamperedError, NnmarkError
from nnmark.identity import OwnerKey
from nnmark.oracle import Oracle
from nnmark.registry import Configurable, Registry, validate_params
from nnmark.training import TrainConfig, TrainResult, train
from nnmark.types import Key, Verdict

if TYPE_CHECKING:
    from nnmark.verify.context import VerifyContext


class SchemeParams(BaseModel):
    """Parameters shared by key-based schemes."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    keys_per_batch: int = Field(2, ge=1, description="key samples appended to every training batch")
    ew: float = Field(
        0.0,
        ge=0.0,
        le=1000.0,
        description="exponential weighting T (Namba 2019 Eq. 11-12; 0 = off, paper: 2): train normally, "
        "then retrain on X ∪ K through EW layers, folded into the saved weights",
    )
    retrain_epochs: int = Field(
        0, ge=0, description="epochs of embedding into a trained model (ew, afs, --from); 0: --epochs"
    )


SP = TypeVar("SP", bound=SchemeParams)
"""A scheme's parameter model: ``class Adi(Scheme[AdiParams])`` types ``self.params`` as ``AdiParams``."""


@dataclass(frozen=True)
class KeyMaterial:
    """Key inputs before training. ``labels`` is None while a shared target is still to be chosen;
    ``source_labels`` are the true classes of the images the keys were made from (or -1)."""

    inputs: torch.Tensor
    labels: torch.Tensor | None
    source_labels: torch.Tensor
    tensors: dict[str, torch.Tensor] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class VerificationKeys:
    """The key queries a verifier sends and the labels it expects, with where each came from:
    ``protocol`` (re-derived from the key secret by the verifier) or ``claimant`` (taken from the key)."""

    inputs: torch.Tensor
    labels: torch.Tensor
    inputs_source: str
    labels_source: str
    how: str = ""
    notes: tuple[str, ...] = ()
    #: what the labels are, in words (the ``decided_by`` "key labels" entry)
    labels_how: str = ""
    #: further ``decided_by`` entries (e.g. a claimant's target class)
    decided: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: which stamp each key carries, where a key holds several (zhang-content): the specificity test
    #: then needs every stamp's keys to beat the control keys (an intersection-union test)
    groups: torch.Tensor | None = None


class KeyBatchMixer:
    """Appends ``per_batch`` key samples, drawn with replacement, to every training batch."""

    def __init__(self, inputs: torch.Tensor, labels: torch.Tensor, per_batch: int) -> None:
        self.inputs, self.labels, self.per_batch = inputs, labels, per_batch
        self._on: torch.device | None = None

    def __call__(
        self, x: torch.Tensor, y: torch.Tensor, gen: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        if self._on != x.device:
            self.inputs, self.labels, self._on = self.inputs.to(x.device), self.labels.to(x.device), x.device
        idx = torch.randint(len(self.inputs), (self.per_batch,), generator=gen).to(x.device)
        return torch.cat([x, self.inputs[idx]]), torch.cat([y, self.labels[idx]]), None


class Scheme(Configurable, abc.ABC, Generic[SP]):
    """Base class of all watermarking schemes (see module docstring), generic over the scheme's
    parameter model: ``class Adi(Scheme[AdiParams])`` sets ``Params`` and types ``self.params``."""

    name: ClassVar[str]
    Params: ClassVar[type[SchemeParams]] = SchemeParams
    params: SP
    #: keys share one target class chosen by the owner: a clean model's chance rate must be
    #: measured on clean models (calibration) before a verdict can say "found"
    shared_target: ClassVar[bool] = False
    #: classes the watermarked model gets beyond the task's (Zhong 2020's new label)
    extra_classes: ClassVar[int] = 0
    tests: ClassVar[tuple[str, ...]] = ("binomial", "threshold", "sprt", "namba-auc")
    default_test: ClassVar[str] = "binomial"
    #: the key material follows from the owner's signature over a message naming the owner (Li 2019),
    #: so a signed key cannot be made up afterwards by someone else
    signature_bound: ClassVar[bool] = False
    #: parameters that reveal the key inputs; ``nnmark key info`` never prints them
    secret_params: ClassVar[tuple[str, ...]] = ()
    #: keys are embedded by retraining a trained model (AFS, DeepSigns): embed_run trains normally
    #: first (unless --from) and calls :meth:`craft` on the trained model
    trains_first: ClassVar[bool] = False
    #: p0 must be measured on clean reference models; False where it follows from how keys are made
    #: (random labels, a new class): embed_run then trains no reference models
    needs_calibration: ClassVar[bool] = True
    #: clean reference models ``embed`` trains by default: enough that p0 bounds an unseen model
    default_calibration: ClassVar[int] = 4
    #: the verification protocol's version, stored in every key; a key of another version is refused
    protocol_version: ClassVar[int] = 2
    #: parameters the protocol fixes: a key that changed them gets no verdict
    protocol_fixed: ClassVar[tuple[str, ...]] = ()
    #: key labels drawn from the secret and the key inputs (:func:`nnmark.keysecret.derive_labels`):
    #: "uniform" over the C classes, "other" than each image's own class, or None (the owner's labels)
    derived_labels: ClassVar[str | None] = None
    #: key inputs are a function of the key secret and the dataset the key names (:meth:`generate`,
    #: then :meth:`assign_labels`): the verifier re-derives them and never takes the claimant's, so a
    #: claimant cannot pick images some clean model happens to answer (:meth:`rederive`)
    derives_inputs: ClassVar[bool] = False
    #: :meth:`generate` reads images from the dataset (else only its shape and classes)
    generate_reads_data: ClassVar[bool] = True
    #: ``KeyMaterial.tensors`` with one row per key: :meth:`assign_labels` keeps them aligned
    per_key_tensors: ClassVar[tuple[str, ...]] = ()

    def __init__(self, owner: OwnerKey | None = None, **params: Any) -> None:
        #: the owner's signing identity, for schemes that derive keys from a signature (Li 2019)
        self.owner = owner
        # Params is the class's declared model (registry.TypedParams checks it when the class is made)
        self.params = cast(SP, validate_params(self.Params, params, f"scheme {self.name}"))
        #: the key secret (set by the workflow before :meth:`generate`; see :mod:`nnmark.keysecret`)
        self.secret: bytes | None = None

    @abc.abstractmethod
    def generate(self, data: ImageDataset, gen: torch.Generator) -> KeyMaterial:
        """Make key inputs from the key secret (``gen`` is seeded from it; ``self.secret`` is set)
        and the owner's data."""

    def retrains(self) -> bool:
        """Train normally, then embed by retraining (``trains_first`` schemes and ``ew`` > 0)."""
        return self.trains_first or self.params.ew > 0

    def craft(
        self, model: torch.nn.Module, data: ImageDataset, material: KeyMaterial, gen: torch.Generator
    ) -> KeyMaterial:
        """Finish keys that depend on the trained ``model`` (AFS); called after pre-training."""
        return material

    def metrics(self, model: torch.nn.Module, key: Key) -> dict[str, Any]:
        """Scheme-specific numbers for ``metrics.json`` (e.g. accuracy on fresh keys)."""
        return {}

    def candidate_targets(self, material: KeyMaterial, num_classes: int) -> list[int]:
        return list(range(num_classes))

    def assign_labels(
        self, material: KeyMaterial, num_classes: int, clean_predictions: list[torch.Tensor]
    ) -> KeyMaterial:
        """Give shared-target keys their label; the default target is the class clean models give
        least often to the keys (so their chance match rate p0 is smallest)."""
        if material.labels is not None:
            return material
        target = getattr(self.params, "target", "auto")
        if target == "auto":
            if not clean_predictions:
                raise NnmarkError(
                    f"{self.name} picks its target class from clean models: use --calibrate N "
                    "(N ≥ 3, default 4) or set --set target=CLASS"
                )
            preds = torch.cat(clean_predictions)
            counts = torch.bincount(preds, minlength=num_classes)[:num_classes].float()
            allowed = self.candidate_targets(material, num_classes)
            target = min(allowed, key=lambda c: (float(counts[c]), c))
        target = int(target)
        if not 0 <= target < num_classes:
            raise NnmarkError(f"target class {target} is outside 0..{num_classes - 1}")
        keep = material.source_labels != target
        n = int(getattr(self.params, "keys", len(material.inputs)))
        idx = keep.nonzero().flatten()[:n]
        return KeyMaterial(
            inputs=material.inputs[idx],
            labels=torch.full((len(idx),), target, dtype=torch.int64),
            source_labels=material.source_labels[idx],
            tensors={k: v[idx] if k in self.per_key_tensors else v for k, v in material.tensors.items()},
            params={**material.params, "target": target},
        )

    def start_from(self, run: Path) -> None:
        """Called by ``embed --from RUN`` before ``generate``: training continues from that run."""
        del run  # most schemes need nothing from the earlier run

    def calibration_queries(
        self, inputs: torch.Tensor, labels: torch.Tensor, params: dict[str, Any]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The (inputs, labels) whose match rate on clean models is p0; by default the key itself."""
        return inputs, labels

    def watermark_accuracy(self, model: torch.nn.Module, key: Key) -> float:
        """Share of key answers the model gets right (recorded in ``metrics.json``)."""
        from nnmark.oracle import TorchOracle

        return float((TorchOracle(model.cpu()).labels(key.inputs) == key.labels).float().mean())

    def mixer(self, key: Key) -> KeyBatchMixer:
        return KeyBatchMixer(key.inputs, key.labels, self.params.keys_per_batch)

    def embed(
        self, model: torch.nn.Module, data: ImageDataset, key: Key, config: TrainConfig, progress: bool
    ) -> TrainResult:
        """Train ``model`` on the training set with :meth:`mixer`'s keys in every batch."""
        return train(
            model,
            data.train_x,
            data.train_y,
            config,
            mixer=self.mixer(key),
            progress=progress,
            description=f"embed {self.name}",
        )

    def secret_labels(self, inputs: torch.Tensor, num_classes: int, own: torch.Tensor) -> torch.Tensor:
        """Labels derived from the key secret for ``derived_labels`` schemes (at key generation)."""
        if self.secret is None:
            raise NnmarkError(f"{self.name}: no key secret was prepared before generating keys")
        avoid = own if self.derived_labels == "other" else None
        if avoid is not None and num_classes < 2:
            raise NnmarkError(f"{self.name} needs at least 2 classes to give a key another label")
        return keysecret.derive_labels(self.secret, inputs, num_classes, avoid)

    #: the verdict note for keys whose inputs and labels are both the claimant's
    claimant_keys_note: ClassVar[str] = (
        "the key inputs and their labels were chosen by the claimant; p0 must come from clean models"
    )

    def exact_chance_rate(self, key: Key) -> tuple[float, str] | None:
        """(p0, why) when the way key labels are drawn fixes p0 exactly (random labels derived from
        the secret, with the number of classes the key names: whatever a model answers, it matches
        a label drawn uniformly from C classes with probability exactly 1/C); None when p0 must be
        measured on clean models."""
        c = key.num_classes
        if self.derived_labels is not None and c < 2:
            raise KeyTamperedError(f"the key names {c} class(es); derived labels need at least 2")
        if self.derived_labels == "uniform":
            return 1.0 / c, (
                f"each key label is drawn uniformly from the {c} classes by a hash of the key secret and all "
                f"key inputs: a model not trained on the keys matches each with probability 1/{c}"
            )
        if self.derived_labels == "other":
            return 1.0 / (c - 1), (
                f"each key label is drawn uniformly from the {c - 1} classes other than the image's stated "
                f"class by a hash of the key secret and all key inputs: a model not trained on the keys "
                f"matches each "
                f"with probability at most 1/{c - 1}"
            )
        return None

    def _derive(self, key: Key, data: ImageDataset, secret: bytes) -> KeyMaterial:
        """The key material that ``secret`` draws from ``data`` by this scheme's recipe, as embedding
        made it (generate, then the key's target and key count)."""
        saved, self.secret = self.secret, secret
        try:
            material = self.generate(data, keysecret.generator(secret, f"{self.name}/generate"))
            if material.labels is None:
                material = self.assign_labels(material, key.num_classes - self.extra_classes, [])
        finally:
            self.secret = saved
        return material

    def _material_for(self, key: Key, data: ImageDataset, secret: bytes) -> torch.Tensor:
        """The key inputs that ``secret`` draws from ``data`` (:meth:`_derive`)."""
        return self._derive(key, data, secret).inputs.float()

    def _derivation_data(self, key: Key, ctx: VerifyContext) -> tuple[ImageDataset | None, str]:
        if self.generate_reads_data:
            return ctx.key_dataset(key)
        c, h, w = key.input_shape
        empty = torch.zeros((0, c, h, w), dtype=torch.uint8)
        labels = torch.zeros(0, dtype=torch.int64)
        classes = key.num_classes - self.extra_classes
        return ImageDataset("shape-only", empty, labels, empty, labels, classes), "drawn from it alone"

    def rederive(self, key: Key, ctx: VerifyContext) -> tuple[torch.Tensor | None, str]:
        """(inputs, how) re-derived by the verifier from the key secret (and the dataset the key
        names); (None, why) when they cannot be. Stored inputs that differ from the derived ones
        are refused (:class:`KeyTamperedError`): the claimant chose them."""
        if not self.derives_inputs:
            return None, f"{self.name} keys are not drawn from the key secret alone"
        data, where = self._derivation_data(key, ctx)
        if data is None:
            return None, where
        derived = self._material_for(key, data, keysecret.key_secret(key))
        if derived.shape != key.inputs.shape or not torch.allclose(derived, key.inputs.float(), atol=1e-6):
            if self.generate_reads_data and key.params.get(keysecret.DATASET_PARAM):
                why = "the data matches the key's fingerprint, so they were chosen or edited by hand"
            else:
                why = "they were chosen by hand, or the key was made from other data (--data-dir)"
            raise KeyTamperedError(f"the key's images do not follow from its secret ({where}): {why}")
        return derived, f"re-derived by the verifier from the key secret ({where})"

    def control_inputs(self, key: Key, ctx: VerifyContext, count: int) -> torch.Tensor | None:
        """``count`` control keys: this scheme's recipe run on a secret the verifier draws, so that
        under "not trained on this key" a suspect cannot tell them from the claimant's keys."""
        data, _ = self._derivation_data(key, ctx)
        if data is None or not self.derives_inputs:
            return None
        out: list[torch.Tensor] = []
        while sum(len(x) for x in out) < count:
            out.append(self._material_for(key, data, ctx.rng.randbytes(32)))
        return torch.cat(out)[:count]

    def key_inputs(self, key: Key, ctx: VerifyContext) -> tuple[torch.Tensor, str, str]:
        """(inputs, source, how): re-derived from the secret where the scheme allows, else the
        claimant's as stored in the key."""
        from nnmark.verify.context import CLAIMANT, PROTOCOL

        derived, how = self.rederive(key, ctx)
        if derived is not None:
            return derived, PROTOCOL, how
        if self.derives_inputs:
            return (
                key.inputs,
                CLAIMANT,
                f"as stored in the key: the verifier could not re-derive them ({how})",
            )
        return key.inputs, CLAIMANT, "as stored in the key, chosen by the claimant"

    def verification_keys(self, key: Key, ctx: VerifyContext) -> VerificationKeys:
        """The key queries and expected labels. ``derived_labels`` schemes re-derive the labels from
        the secret (refusing a key whose stored labels differ); inputs are re-derived where the scheme
        allows (:meth:`key_inputs`), otherwise both are the claimant's."""
        inputs, inputs_source, inputs_how = self.key_inputs(key, ctx)
        if self.derived_labels is not None:
            own = key.tensors.get("source_labels") if self.derived_labels == "other" else None
            if self.derived_labels == "other" and (own is None or len(own) != len(key.inputs)):
                raise KeyTamperedError(
                    "the key holds no source_labels (one per key) to derive its labels from"
                )
            if key.num_classes < 2:
                raise KeyTamperedError(f"the key names {key.num_classes} class(es); derived labels need 2")
            labels = keysecret.derive_labels(keysecret.key_secret(key), key.inputs, key.num_classes, own)
            if labels.shape != key.labels.shape or not torch.equal(labels, key.labels.long()):
                raise KeyTamperedError(
                    "the key's labels do not follow from its secret and key images: the key was altered"
                )
            claimant = inputs_source == "claimant"
            return VerificationKeys(
                inputs,
                labels,
                inputs_source,
                "protocol",
                f"key images {inputs_how}; labels re-derived by the verifier from the key secret and a hash "
                "of all key images",
                (
                    "the key images were chosen by the claimant; their labels follow from the key secret and "
                    "a hash of all key images, re-derived by the verifier",
                )
                if claimant
                else (),
                labels_how="re-derived from the key secret and a hash of all key images",
            )
        return VerificationKeys(
            inputs,
            key.labels,
            inputs_source,
            "claimant",
            f"key inputs {inputs_how}; labels as stored in the key",
            (self.claimant_keys_note,) if inputs_source == "claimant" else (),
            labels_how="as stored in the key",
        )

    def verify(self, key: Key, oracle: Oracle, test: str, ctx: VerifyContext) -> Verdict:
        from nnmark.verify.verifier import match_verdict

        return match_verdict(self, key, oracle, test, ctx)


SCHEMES: Registry[type[Scheme[Any]]] = Registry("scheme")

S = TypeVar("S", bound=type[Scheme[Any]])


def register_scheme(cls: S) -> S:
    """Class decorator: registers a scheme under its ``name``."""
    SCHEMES.register(cls.name)(cls)
    return cls


def add_output_classes(model: torch.nn.Module, extra: int) -> torch.nn.Module:
    """Give a classifier ``extra`` more outputs (in place): its last ``Linear`` layer gets new rows,
    freshly initialised; the old outputs are unchanged. For new-label schemes embedded with --from."""
    last = None
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear):
            last = (name, module)
    if last is None:
        raise NnmarkError("the model has no final Linear layer to add an output class to")
    name, old = last
    new = torch.nn.Linear(old.in_features, old.out_features + extra, bias=old.bias is not None)
    new = new.to(old.weight.device, old.weight.dtype)
    with torch.no_grad():
        new.weight[: old.out_features] = old.weight
        if old.bias is not None and new.bias is not None:
            new.bias[: old.out_features] = old.bias
    parent_name, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent_name) if parent_name else model, child, new)
    return model
