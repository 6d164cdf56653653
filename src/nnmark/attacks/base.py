"""Attacks a thief runs to remove or evade a watermark.

Removal attacks (``attacks/removal``) take a model and the attacker's data and return a new
model; the victim module is never modified in place. Claim attacks (``attacks/piracy``) also
produce a key signed with the attacker's identity: an ownership claim of their own.
"""

from __future__ import annotations

import abc
import copy
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar

import torch
from pydantic import BaseModel, ConfigDict

from nnmark.data.base import ImageDataset
from nnmark.errors import NnmarkError
from nnmark.identity import OwnerKey, generate_owner
from nnmark.registry import Configurable, Registry, validate_params
from nnmark.training import TrainConfig
from nnmark.types import Key, ModelSpec, Owner


class AttackParams(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RemovalAttack(Configurable, abc.ABC):
    """A model -> model attack with validated parameters (``--set k=v``)."""

    name: ClassVar[str]
    Params: ClassVar[type[AttackParams]] = AttackParams

    def __init__(self, **params: Any) -> None:
        self.params = validate_params(self.Params, params, f"attack {self.name}")

    def __call__(
        self,
        model: torch.nn.Module,
        spec: ModelSpec,
        data: ImageDataset,
        config: TrainConfig,
        progress: bool = True,
    ) -> torch.nn.Module:
        victim = copy.deepcopy(model).cpu()
        return self.run(victim, spec, data, config, progress)

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


class ClaimAttack(RemovalAttack):
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


ATTACKS: Registry[type[RemovalAttack]] = Registry("attack")


def register_attack(cls: type[RemovalAttack]) -> type[RemovalAttack]:
    ATTACKS.register(cls.name)(cls)
    return cls


def share_indices(n: int, fraction: float, seed: int) -> torch.Tensor:
    """Indices of a random ``fraction`` of ``n`` items (at least one), fixed by ``seed``."""
    if not 0 < fraction <= 1:
        raise NnmarkError(f"--attacker-fraction must be in (0, 1], got {fraction}")
    k = max(1, round(n * fraction))
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed + 99991))[:k]


def attacker_share(data: ImageDataset, fraction: float, seed: int) -> ImageDataset:
    """The attacker's data: a random ``fraction`` of the owner's training set (test set unchanged)."""
    idx = share_indices(len(data.train_x), fraction, seed)
    return replace(data, train_x=data.train_x[idx], train_y=data.train_y[idx])
