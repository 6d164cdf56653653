"""Input preprocessing as a query defense: the service transforms every query before its model
sees it (Guo et al., "Countering Adversarial Images using Input Transformations", ICLR 2018, as a
watermark evasion: a trigger that does not survive the transform stops answering). One wrapper
per transform, each in its own file (``jpeg``, ``blur``, ``noise``); this module holds the base.

Every transform works on images, so inputs are first clipped to [0, 1] (``clip``, on by default
as in any image pipeline; a null-embedding key's ±λ pixels do not survive that alone).
"""

from __future__ import annotations

from typing import Any, ClassVar, Generic, TypeVar, cast

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor

from nnmark.oracle import Oracle
from nnmark.registry import TypedParams, validate_params


class PreprocessParams(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    clip: bool = Field(True, description="clip inputs to [0, 1] first, as an image pipeline does")


PP = TypeVar("PP", bound=PreprocessParams)


class Preprocessed(Oracle, TypedParams, Generic[PP]):
    """``inner`` answering ``transform(x)`` instead of ``x``; queries are counted here and there.
    Generic over the transform's parameters (``Preprocessed[BlurParams]``)."""

    name: ClassVar[str]
    Params: ClassVar[type[PreprocessParams]] = PreprocessParams
    params: PP

    def __init__(self, inner: Oracle, *, seed: int = 0, budget: int | None = None, **params: Any) -> None:
        super().__init__(budget)
        self.inner = inner
        self.params = cast(PP, validate_params(self.Params, params, f"defense {self.name}"))
        self.gen = torch.Generator().manual_seed(seed)
        self.carries_any_value = getattr(inner, "carries_any_value", True)

    @classmethod
    def describe(cls) -> str:
        doc = (cls.__doc__ or cls.name).strip().splitlines()[0]
        return f"{doc} (oracle -> oracle: defense {cls.name!r}, nnmark.attacks.defenses)"

    @classmethod
    def parameter_table(cls) -> list[tuple[str, str, str]]:
        return [(n, repr(f.default), f.description or "") for n, f in cls.Params.model_fields.items()]

    def transform(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    def _predict(self, x: Tensor) -> Tensor:
        if self.params.clip:
            x = x.clamp(0, 1)
        return self.inner.scores(self.transform(x))
