"""Model architectures, registered by name (timm style).

Every factory in :data:`MODELS` has the signature
``(input_shape: tuple[int, int, int], num_classes: int, **arch_args) -> nn.Module`` and returns
the *body* of a model: a module that takes normalised float32 N×C×H×W inputs and returns all
logits N×classes. :func:`build_model` puts a :class:`Normalize` in front of the body, so the
finished model takes float32 inputs in [0, 1] (the contract of ``load_model``) and applies its
own normalisation.

Each factory's docstring cites the paper the architecture comes from; its first line is the
one-line description that ``nnmark list models`` prints.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence

import torch
from torch import nn

from nnmark.errors import NnmarkError
from nnmark.registry import Registry
from nnmark.types import ModelSpec

ModelFactory = Callable[..., nn.Module]

MODELS: Registry[ModelFactory] = Registry("model")

__all__ = [
    "MODELS",
    "ModelFactory",
    "Normalize",
    "build_model",
    "check_input_shape",
    "describe_model",
    "model_parameters",
]


class Normalize(nn.Module):
    """``(x - mean) / std`` per channel; ``mean`` and ``std`` are buffers shaped 1×C×1×1.

    The buffers are persistent, so a saved ``state_dict`` carries the normalisation with it.
    """

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        if len(mean) == 0 or len(mean) != len(std):
            raise NnmarkError(
                f"normalisation mean {list(mean)} and std {list(std)} must be non-empty and have "
                "one value per input channel; fix the model's normalisation"
            )
        if any(float(s) <= 0 for s in std):
            raise NnmarkError(
                f"normalisation std {list(std)} must be positive; fix the model's normalisation"
            )
        self.register_buffer(
            "mean", torch.tensor([float(m) for m in mean], dtype=torch.float32).view(1, -1, 1, 1)
        )
        self.register_buffer(
            "std", torch.tensor([float(s) for s in std], dtype=torch.float32).view(1, -1, 1, 1)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std

    def extra_repr(self) -> str:
        return f"mean={self.mean.flatten().tolist()}, std={self.std.flatten().tolist()}"


def check_input_shape(
    input_shape: Sequence[int], *, min_size: int = 1, arch: str = "model"
) -> tuple[int, int, int]:
    """Validate ``(C, H, W)`` and return it as a tuple of ints; NnmarkError when it cannot work."""
    shape = tuple(int(v) for v in input_shape)
    if len(shape) != 3 or any(v < 1 for v in shape):
        raise NnmarkError(
            f"input shape {list(input_shape)} must be three positive numbers (C, H, W), "
            "e.g. (1, 28, 28) or (3, 32, 32)"
        )
    c, h, w = shape
    if h < min_size or w < min_size:
        raise NnmarkError(
            f"{arch} needs images of at least {min_size}×{min_size} pixels, got {h}×{w}; "
            "pick a model that fits the dataset"
        )
    return c, h, w


def _check_classes(num_classes: int) -> int:
    if int(num_classes) < 1:
        raise NnmarkError(f"number of classes must be at least 1, got {num_classes}")
    return int(num_classes)


def build_model(spec: ModelSpec) -> nn.Sequential:
    """Build ``nn.Sequential(Normalize(spec.mean, spec.std), body)`` from a :class:`ModelSpec`.

    The result takes float32 inputs in [0, 1], N×C×H×W, and returns all logits N×classes. Its
    weights are drawn from torch's global RNG: seed it (``nnmark.training.set_seed``) first for a
    reproducible initialisation.
    """
    shape = check_input_shape(spec.input_shape, arch=spec.arch)
    channels = shape[0]
    if len(spec.mean) != len(spec.std):
        raise NnmarkError(
            f"normalisation has {len(spec.mean)} means but {len(spec.std)} stds; "
            "give one of each per input channel"
        )
    if len(spec.mean) not in (1, channels):
        raise NnmarkError(
            f"normalisation has {len(spec.mean)} values but the input has {channels} channels; "
            "give one mean and std per channel"
        )
    factory = MODELS.get(spec.arch)
    params = model_parameters(spec.arch)
    unknown = sorted(set(spec.arch_args) - set(params))
    if unknown:
        known = ", ".join(params) or "none"
        raise NnmarkError(
            f"model {spec.arch!r} has no argument(s) {', '.join(unknown)}; known: {known}"
        )
    body = factory(shape, _check_classes(spec.num_classes), **spec.arch_args)
    return nn.Sequential(Normalize(spec.mean, spec.std), body)


def describe_model(name: str) -> str:
    """The one-line description of a registered model (first line of its factory's docstring)."""
    doc = inspect.getdoc(MODELS.get(name)) or ""
    return doc.strip().splitlines()[0] if doc.strip() else ""


def model_parameters(name: str) -> dict[str, object]:
    """A registered model's architecture arguments and their defaults (for ``--verbose``)."""
    sig = inspect.signature(MODELS.get(name))
    out: dict[str, object] = {}
    for i, (pname, p) in enumerate(sig.parameters.items()):
        if i < 2 or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue  # input_shape, num_classes
        out[pname] = None if p.default is inspect.Parameter.empty else p.default
    return out


# Importing the families registers them.
from nnmark.models import digit_cnn, dnn, resnet  # noqa: E402,F401
