"""Attacks a thief runs to remove or evade a watermark.

Removal attacks (``attacks/removal``) take a model and the attacker's data and return a new
model; the victim module is never modified in place. Those whose parameters derive from
:class:`EwParams` attack the model with its exponential-weighting layers in place (``ew``).
Claim attacks (``attacks/piracy``) also produce a key signed with the attacker's identity: an
ownership claim of their own.
"""

from __future__ import annotations

import abc
import copy
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, ClassVar, Generic, TypeVar, cast

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch.nn.utils.parametrize import is_parametrized

from nnmark.attacks.ew_inplace import ew_in_place, run_ew_temperature
from nnmark.data.base import ImageDataset
from nnmark.errors import NnmarkError
from nnmark.identity import OwnerKey, generate_owner
from nnmark.registry import Configurable, Registry, validate_params
from nnmark.training import TrainConfig
from nnmark.types import Key, ModelSpec, Owner


class AttackParams(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class EwParams(AttackParams):
    """Parameters of an attack that changes the stolen model's weights, and so can do it through the
    model's exponential-weighting layers (Namba 2019 Sec. 5.2, Eq. 11).

    Namba's owner distributes f_K, whose conv/dense layers compute EW(θ, T); the thief prunes and
    retrains *that* model. nnmark stores the folded weights EW(θ, T); with ``ew`` = T the attack
    runs on the model with EW layers put back over the exactly recovered θ
    (:mod:`nnmark.attacks.ew_inplace`) and the result is folded again. Magnitude pruning picks the
    same weights either way (EW is monotone in |θ| within a layer, and EW(θ)_i = 0 iff θ_i = 0);
    retraining does not: gradients pass through EW (Eq. 13), so small θ barely move and the large
    ones carry the update. Neuron pruning ranks units by Σ|θ| then, the thief's parameters.

    Default (``None``): ``nnmark attack`` uses the temperature the victim run was embedded with
    (its key's ``ew``; :func:`nnmark.attacks.ew_inplace.run_ew_temperature`), because that is the
    model Namba's thief holds; 0 for a run without EW. ``ew=0`` attacks the folded weights as
    plain layers. Called on a module directly (no run folder), ``None`` means 0.
    """

    ew: float | None = Field(
        None,
        ge=0.0,
        description="attack through EW layers at this temperature (Namba's f_K); "
        "default: the victim run's own EW temperature, 0 = plain layers",
    )


def with_victim_ew(
    attack_cls: type[Any], settings: dict[str, Any], run: str | Path
) -> tuple[dict[str, Any], str | None]:
    """``settings`` for an attack on the victim ``run``: an :class:`EwParams` attack without ``ew``
    gets the temperature the victim was embedded with (:func:`run_ew_temperature`: the f_K Namba's
    thief holds), and where it was read; ``None`` when the attack takes no ``ew``."""
    params = getattr(attack_cls, "Params", None)
    if not (isinstance(params, type) and issubclass(params, EwParams)):
        return settings, None
    temperature, source = run_ew_temperature(run)
    given = settings.get("ew")
    if given is None:
        return {**settings, "ew": temperature}, source
    if float(given) != temperature and float(given) != 0.0:
        # layers at another T than the weights were folded at: a different model, not f_K
        return settings, (
            f"--set ew, although the victim's weights were folded at T={temperature:g} ({source}): the "
            "attack's EW layers are not the victim's"
        )
    return settings, "--set ew"


AP = TypeVar("AP", bound=AttackParams)
"""An attack's parameter model: ``class Prune(RemovalAttack[PruneParams])`` types ``self.params``."""


class RemovalAttack(Configurable, abc.ABC, Generic[AP]):
    """A model -> model attack with validated parameters (``--set k=v``), generic over its
    parameter model (``RemovalAttack[PruneParams]`` sets ``Params`` and types ``self.params``)."""

    name: ClassVar[str]
    Params: ClassVar[type[AttackParams]] = AttackParams
    params: AP
    #: False for attacks whose output is the victim's function unchanged (key forgery)
    changes_model: ClassVar[bool] = True

    def __init__(self, **params: Any) -> None:
        # Params is the class's declared model (registry.TypedParams checks it when the class is made)
        self.params = cast(AP, validate_params(self.Params, params, f"attack {self.name}"))
        #: what the last call measured beyond accuracy (queries used, the rate a sweep chose, ...);
        #: ``attack_run`` writes it into ``metrics.json``
        self.report: dict[str, Any] = {}
        #: the owner's keys, given only to attacks that tune against them as the papers' evaluators do
        #: (Namba's prune sweep picks the rate with the lowest watermark accuracy); never changed
        self.evaluator_keys: list[Key] = []
        #: the owner's training data, for attacks that include an owner's step (transfer's recovery)
        self.owner_data: ImageDataset | None = None

    def __call__(
        self,
        model: torch.nn.Module,
        spec: ModelSpec,
        data: ImageDataset,
        config: TrainConfig,
        progress: bool = True,
    ) -> torch.nn.Module:
        self.report = {}
        victim = copy.deepcopy(model).cpu()
        if not isinstance(self.params, EwParams):
            return self.run(victim, spec, data, config, progress)
        temperature = float(self.params.ew or 0.0)
        with ew_in_place(victim, temperature):  # T = 0: plain layers, no change
            attacked = self.run(victim, spec, data, config, progress)
            if attacked is not victim and any(is_parametrized(m) for m in attacked.modules()):
                # a deep copy of the EW model: it shares its parametrised classes with ``victim``
                # (torch.nn.utils.parametrize), so folding one breaks the other; take its values
                victim.load_state_dict(attacked.state_dict())
                attacked = victim
        self.report["ew"] = temperature
        return attacked

    @abc.abstractmethod
    def run(
        self, model: torch.nn.Module, spec: ModelSpec, data: ImageDataset, config: TrainConfig, progress: bool
    ) -> torch.nn.Module:
        """Attack ``model`` (a private copy) with the attacker's ``data``."""


@dataclass(frozen=True)
class Claim:
    """What an ownership attack presents: a model, a key signed with the attacker's identity, and
    the numbers measured on the way (accuracy, watermark rates before and after)."""

    model: torch.nn.Module
    key: Key
    signer: OwnerKey
    metrics: dict[str, Any] = field(default_factory=dict)


class ClaimAttack(RemovalAttack[AP]):
    """An attack that ends in an ownership claim (Li 2019's piracy, key forgery): besides a model it
    produces a key signed with the attacker's own identity. As a removal attack it returns the model."""

    def claim(
        self,
        model: torch.nn.Module,
        spec: ModelSpec,
        data: ImageDataset,
        config: TrainConfig,
        *,
        attacker: OwnerKey | None = None,
        victim_keys: Sequence[Key] = (),
        progress: bool = True,
    ) -> Claim:
        """Attack a private copy of ``model``; ``victim_keys`` (the owner's, if known) are only measured."""
        signer = attacker or generate_owner(f"{self.name} attacker")
        victim = copy.deepcopy(model).cpu()
        claim = self.make_claim(victim, spec, data, config, signer, list(victim_keys), progress)
        # the key names its signer; ``save_key(path, claim.key, claim.signer)`` signs it
        return replace(claim, key=replace(claim.key, owner=Owner(signer.name, signer.public_key_pem)))

    @abc.abstractmethod
    def make_claim(
        self,
        model: torch.nn.Module,
        spec: ModelSpec,
        data: ImageDataset,
        config: TrainConfig,
        attacker: OwnerKey,
        victim_keys: list[Key],
        progress: bool,
    ) -> Claim:
        """Build the claim from ``model`` (a private copy) and the attacker's ``data``."""

    def run(
        self, model: torch.nn.Module, spec: ModelSpec, data: ImageDataset, config: TrainConfig, progress: bool
    ) -> torch.nn.Module:
        attacker = generate_owner(f"{self.name} attacker")
        return self.make_claim(model, spec, data, config, attacker, [], progress).model


ATTACKS: Registry[type[RemovalAttack[Any]]] = Registry("attack")

A = TypeVar("A", bound=type[RemovalAttack[Any]])


def register_attack(cls: A) -> A:
    """Class decorator: add an attack to :data:`ATTACKS` under its ``name``. One file per attack;
    the package scan in :mod:`nnmark.attacks` imports it, so nothing else needs editing."""
    ATTACKS.register(cls.name)(cls)
    return cls


def share_indices(n: int, fraction: float, seed: int) -> torch.Tensor:
    """Indices of a random ``fraction`` of ``n`` items (at least one), fixed by ``seed``."""
    if not 0 < fraction <= 1:
        raise NnmarkError(f"--attacker-fraction must be in (0, 1], got {fraction}")
    k = max(1, round(n * fraction))
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed + 99991))[:k]


def attacker_share(
    data: ImageDataset, fraction: float, seed: int, other: ImageDataset | None = None
) -> ImageDataset:
    """The attacker's data, disjoint from the owner's training split (Namba 2019 Sec. 6.1.1):
    ``fraction`` × the owner's training-set size drawn from the held-out split (or from ``other``);
    the returned test split holds only images the attacker does not (see :mod:`nnmark.attacks.data`)."""
    from nnmark.attacks.data import attacker_data

    return attacker_data(data, fraction, seed, other).data


#: fields of a training recipe an attack may take from the owner's run (``metrics.json`` "config")
RECIPE_FIELDS = ("optimizer", "lr", "batch_size", "momentum", "weight_decay", "schedule")


def owner_recipe(metrics: dict[str, Any]) -> dict[str, Any]:
    """The owner's training recipe as recorded in a run's ``metrics.json`` (``config`` or
    ``train_config``: optimiser, lr, batch size, momentum, weight decay), or ``{}`` when the run does
    not record one (runs written before nnmark recorded it)."""
    for field_name in ("config", "train_config", "recipe"):
        recipe = metrics.get(field_name)
        if isinstance(recipe, dict):
            return {k: recipe[k] for k in RECIPE_FIELDS if k in recipe}
    return {k: metrics[k] for k in RECIPE_FIELDS if k in metrics}
