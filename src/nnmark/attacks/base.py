"""Attacks a thief runs to remove or evade a watermark.

Removal attacks (``attacks/removal``) take a model and the attacker's data and return a new
model; the victim module is never modified in place.
"""

from __future__ import annotations

import abc
import copy
from typing import Any, ClassVar

import torch
from pydantic import BaseModel, ConfigDict, ValidationError

from nnmark.data.base import ImageDataset
from nnmark.errors import NnmarkError
from nnmark.registry import Registry
from nnmark.training import TrainConfig
from nnmark.types import ModelSpec


class AttackParams(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RemovalAttack(abc.ABC):
    """A model -> model attack with validated parameters (``--set k=v``)."""

    name: ClassVar[str]
    Params: ClassVar[type[AttackParams]] = AttackParams

    def __init__(self, **params: Any) -> None:
        try:
            self.params = self.Params(**params)
        except ValidationError as e:
            problems = "; ".join(f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in e.errors())
            raise NnmarkError(
                f"bad parameter for attack {self.name}: {problems} (known: {', '.join(self.Params.model_fields)})"
            ) from None

    def __call__(self, model: torch.nn.Module, spec: ModelSpec, data: ImageDataset, config: TrainConfig,
                 progress: bool = True) -> torch.nn.Module:
        victim = copy.deepcopy(model).cpu()
        return self.run(victim, spec, data, config, progress)

    @abc.abstractmethod
    def run(self, model: torch.nn.Module, spec: ModelSpec, data: ImageDataset, config: TrainConfig,
            progress: bool) -> torch.nn.Module:
        """Attack ``model`` (a private copy) with the attacker's ``data``."""

    @classmethod
    def describe(cls) -> str:
        doc = (cls.__doc__ or "").strip().splitlines()
        return doc[0] if doc else cls.name

    @classmethod
    def parameter_table(cls) -> list[tuple[str, str, str]]:
        return [(n, repr(f.default), f.description or "") for n, f in cls.Params.model_fields.items()]


ATTACKS: Registry[type[RemovalAttack]] = Registry("attack")


def register_attack(cls: type[RemovalAttack]) -> type[RemovalAttack]:
    ATTACKS.register(cls.name)(cls)
    return cls


def attacker_share(data: ImageDataset, fraction: float, seed: int) -> ImageDataset:
    """The attacker's data: a random ``fraction`` of the owner's training set (test set unchanged)."""
    if not 0 < fraction <= 1:
        raise NnmarkError(f"--attacker-fraction must be in (0, 1], got {fraction}")
    n = max(1, round(len(data.train_x) * fraction))
    idx = torch.randperm(len(data.train_x), generator=torch.Generator().manual_seed(seed + 99991))[:n]
    return ImageDataset(data.name, data.train_x[idx], data.train_y[idx], data.test_x, data.test_y,
                        data.num_classes, data.class_names)
