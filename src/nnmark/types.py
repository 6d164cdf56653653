"""Frozen dataclasses shared by every part of nnmark."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch


@dataclass(frozen=True)
class ModelSpec:
    """What ``model.json`` records: enough to rebuild the architecture and feed it inputs."""

    arch: str
    num_classes: int
    input_shape: tuple[int, int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    dataset: str = ""
    arch_args: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "arch": self.arch,
            "arch_args": dict(self.arch_args),
            "num_classes": self.num_classes,
            "input_shape": list(self.input_shape),
            "normalisation": {"mean": list(self.mean), "std": list(self.std)},
            "dataset": self.dataset,
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> ModelSpec:
        shape = tuple(int(v) for v in d["input_shape"])
        if len(shape) != 3:
            raise ValueError("input_shape must have 3 entries (C, H, W)")
        return cls(
            arch=str(d["arch"]),
            arch_args=dict(d.get("arch_args", {})),
            num_classes=int(d["num_classes"]),
            input_shape=(shape[0], shape[1], shape[2]),
            mean=tuple(float(v) for v in d["normalisation"]["mean"]),
            std=tuple(float(v) for v in d["normalisation"]["std"]),
            dataset=str(d.get("dataset", "")),
        )


@dataclass(frozen=True)
class Calibration:
    """Chance match rates of clean models on a key, and the bound p0 derived from them.

    ``rates`` keeps each clean model's own rate: clean models differ a lot, so p0 bounds the rate
    of an unseen clean model (see :mod:`nnmark.verify.stats`), not the pooled mean.
    """

    rates: tuple[float, ...]
    queries: int
    p0: float
    method: str
    models: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "rates": list(self.rates),
            "queries": self.queries,
            "p0": self.p0,
            "method": self.method,
            "models": list(self.models),
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Calibration:
        return cls(
            rates=tuple(float(r) for r in d["rates"]),
            queries=int(d["queries"]),
            p0=float(d["p0"]),
            method=str(d["method"]),
            models=tuple(str(m) for m in d.get("models", [])),
        )


@dataclass(frozen=True)
class Owner:
    """The identity a key is bound to: a name and an Ed25519 public key (PEM)."""

    name: str
    public_key_pem: str


@dataclass(frozen=True)
class Key:
    """A watermark key: everything needed to verify, nothing about the suspect.

    ``inputs`` are float32 N×C×H×W in [0, 1] (null-embedding keys excepted), ``labels`` the answers
    a watermarked model gives. ``tensors`` holds other scheme material (e.g. probe images).
    """

    scheme: str
    params: dict[str, Any]
    input_shape: tuple[int, int, int]
    num_classes: int
    inputs: torch.Tensor
    labels: torch.Tensor
    tensors: dict[str, torch.Tensor] = field(default_factory=dict)
    calibration: Calibration | None = None
    owner: Owner | None = None
    created: str = ""
    fingerprint: str = ""
    signed: bool = False
    #: the key file's bytes as read by ``parse_key`` (signed keys): the verifier re-reads them to check
    #: that an in-memory key is still what its owner signed
    source: bytes = field(default=b"", repr=False, compare=False)
    commitment: str = ""
    version: int = 1


@dataclass(frozen=True)
class Verdict:
    """The outcome of a verification. ``watermarked`` is None when no verdict is possible."""

    scheme: str
    test: str
    watermarked: bool | None
    p_value: float
    alpha: float
    queries: int
    matches: int
    threshold: int
    p0: float | None = None
    reason: str = ""
    notes: tuple[str, ...] = ()
    evidence: dict[str, Any] = field(default_factory=dict)
    #: each number that decided the verdict: name -> {"value", "source" (protocol / verifier /
    #: claimant / suspect), "how"}; see DESIGN.md "Who decides a verdict"
    decided_by: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: the false-accusation guarantee in words (α plus any calibration bound's own error)
    guarantee: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "scheme": self.scheme,
            "test": self.test,
            "watermarked": self.watermarked,
            "p_value": self.p_value,
            "alpha": self.alpha,
            "queries": self.queries,
            "matches": self.matches,
            "threshold": self.threshold,
            "p0": self.p0,
            "reason": self.reason,
            "notes": list(self.notes),
            "decided_by": self.decided_by,
            "guarantee": self.guarantee,
            "evidence": self.evidence,
        }


@dataclass(frozen=True)
class TrainMetrics:
    """What one training run measured; written to ``metrics.json``."""

    test_accuracy: float
    seconds: float
    device: str
    epochs: int
    images_per_second: float
    watermark_accuracy: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)
