"""The one training engine every nnmark command uses (airbench style).

The training set lives on the device as uint8 for the whole run, is shuffled there every epoch
and turned into float32 in [0, 1] one batch at a time; there is no DataLoader in the hot loop.
Watermarking schemes plug in through a :class:`BatchMixer`, which sees every batch and may
append key samples and per-sample loss weights. On CUDA the forward pass runs under bf16
autocast; on the CPU everything stays float32 and a run is reproducible bit for bit.

Randomness: the model's initial weights come from the caller (use :func:`set_seed` before
building it). ``train`` itself draws from three CPU ``torch.Generator`` objects derived from
``TrainConfig.seed`` — one for the epoch shuffles, one for augmentation and one handed to the
mixer — so adding a mixer changes neither the data order nor the augmentation of a run.
"""

from __future__ import annotations

import logging
import math
import random
import re
import time
from dataclasses import dataclass
from typing import Annotated, Any, Protocol

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import (
    ConfigDict,
    Field,
    ModelWrapValidatorHandler,
    Strict,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic.dataclasses import dataclass as pydantic_dataclass
from torch import Tensor, nn

from nnmark.errors import NnmarkError

log = logging.getLogger(__name__)

__all__ = [
    "BatchMixer",
    "Criterion",
    "TrainConfig",
    "TrainResult",
    "augment_crop_flip",
    "evaluate",
    "predict_logits",
    "resolve_device",
    "set_seed",
    "train",
]


# Offsets that derive the augmentation and mixer generators from the seed (arbitrary constants).
_AUG_STREAM = 0x5EED_A06
_MIX_STREAM = 0x5EED_313


def set_seed(seed: int) -> None:
    """Seed Python's, NumPy's and torch's global generators (e.g. before building a model)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def device_name(name: str) -> str:
    """``name`` as one of ``"cpu"``, ``"auto"``, ``"cuda"``, ``"cuda:N"`` (case and spaces ignored),
    without asking whether this machine has it (a Ray cluster's nodes may have GPUs the driver
    lacks); anything else is an NnmarkError."""
    text = str(name).strip().lower()
    if not re.fullmatch(r"cpu|auto|cuda(:\d+)?", text):
        raise NnmarkError(f"unknown device {name!r}; use cpu, cuda, cuda:N or auto")
    return text


def resolve_device(name: str) -> torch.device:
    """Turn ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or ``"auto"`` into a ``torch.device``.

    ``"auto"`` picks CUDA when it is available, else the CPU. Asking for CUDA on a machine
    without it is a user error (NnmarkError), never a silent fall-back.
    """
    text = device_name(name)
    if text == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if text == "cpu":
        return torch.device("cpu")
    if text == "cuda" or text.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise NnmarkError(
                f"device {name!r} was requested but CUDA is not available on this machine; "
                "use --device cpu (or auto)"
            )
        try:
            dev = torch.device(text)
        except RuntimeError:
            raise NnmarkError(f"unknown device {name!r}; use cpu, cuda, cuda:N or auto") from None
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise NnmarkError(
                f"device {name!r} does not exist: this machine has "
                f"{torch.cuda.device_count()} CUDA device(s); use cuda:0 .. "
                f"cuda:{torch.cuda.device_count() - 1}"
            )
        return dev
    raise NnmarkError(f"unknown device {name!r}; use cpu, cuda, cuda:N or auto")


OPTIMIZERS = ("adam", "sgd")
SCHEDULES = ("none", "cosine", "step")
AUGMENTS = ("none", "crop-flip")
_CHOICES = {"optimizer": OPTIMIZERS, "schedule": SCHEDULES, "augment": AUGMENTS}
_NUMBERS = ("epochs", "batch_size", "lr", "momentum", "weight_decay", "seed")


@pydantic_dataclass(frozen=True, config=ConfigDict(extra="forbid"))
class TrainConfig:
    """Hyper-parameters of one training run; invalid values raise NnmarkError at construction.

    A frozen pydantic dataclass: validated like every other nnmark config (the schemes' and
    attacks' ``Params``), and still a dataclass, so ``dataclasses.replace`` and ``fields`` work
    (``replace`` validates again). Numbers given as text (``--set lr=1e-3`` reads "1e-3" as a
    string) are converted; booleans are never taken for numbers.

    Attributes:
        epochs: passes over the training set (>= 1).
        batch_size: images per step, before a mixer appends key samples.
        lr: peak learning rate.
        optimizer: ``"adam"`` or ``"sgd"`` (with ``momentum``).
        momentum: SGD momentum (ignored by Adam).
        weight_decay: L2 penalty passed to the optimizer.
        schedule: ``"none"``; ``"cosine"`` (per step, down to 0); ``"step"`` (×0.1 once 50 % and
            again once 75 % of all steps are done).
        augment: ``"none"`` or ``"crop-flip"`` (random crop of the 4-pixel zero-padded image and
            a random horizontal flip, done on the device for the whole batch, before the mixer:
            key samples are never augmented).
        seed: seeds the shuffle, augmentation and mixer generators.
        device: ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or ``"auto"``.
        compile: wrap the model in ``torch.compile`` for the run (off by default).
    """

    epochs: int = Field(default=5, ge=1)
    batch_size: int = Field(default=64, ge=1)
    lr: float = Field(default=1e-3, gt=0, allow_inf_nan=False)
    optimizer: str = "adam"
    momentum: float = Field(default=0.9, ge=0, lt=1, allow_inf_nan=False)
    weight_decay: float = Field(default=0.0, ge=0, allow_inf_nan=False)
    schedule: str = "none"
    augment: str = "none"
    seed: int = Field(default=0, ge=0, lt=2**63)
    device: str = Field(default="cpu", min_length=1)
    compile: Annotated[bool, Strict()] = False

    @field_validator(*_NUMBERS, mode="before")
    @classmethod
    def _no_bool(cls, value: object) -> object:
        if isinstance(value, bool):
            raise ValueError("a number, not true/false")
        return value

    @field_validator(*_CHOICES, mode="after")
    @classmethod
    def _known(cls, value: str, info: ValidationInfo) -> str:
        known = _CHOICES[str(info.field_name)]
        if value not in known:
            raise ValueError(f"use one of {', '.join(known)}")
        return value

    @model_validator(mode="wrap")
    @classmethod
    def _one_line(cls, values: Any, handler: ModelWrapValidatorHandler[TrainConfig]) -> TrainConfig:
        """Any invalid setting becomes one NnmarkError line naming the setting and the fix."""
        try:
            return handler(values)
        except ValidationError as e:
            problems = []
            for err in e.errors():
                name = ".".join(str(p) for p in err["loc"]) or "?"
                why = err["msg"].removeprefix("Value error, ")
                problems.append(f"training setting {name}={err.get('input')!r} is invalid: {why}")
            raise NnmarkError("; ".join(problems)) from None


@dataclass(frozen=True)
class TrainResult:
    """What :func:`train` measured.

    ``images_per_second`` counts training-set images (not appended key samples) over the whole
    run; ``final_loss`` and ``train_accuracy`` are the means over the last epoch's trained
    samples (key samples included, loss unweighted by batch size differences).
    """

    seconds: float
    images_per_second: float
    final_loss: float
    device: str
    epochs: int
    train_accuracy: float = float("nan")


class Criterion(Protocol):
    """A per-sample loss ``(output, x, y) -> (N,)`` replacing cross-entropy in :func:`train`."""

    def __call__(self, output: Tensor, x: Tensor, y: Tensor, /) -> Tensor: ...


class BatchMixer(Protocol):
    """Hook through which a watermarking scheme shapes every training batch.

    Called once per step with the batch about to be trained on: ``x`` float32 in [0, 1],
    N×C×H×W, on the training device (already augmented when the config asks for it), ``y`` int64
    labels on the same device, and ``gen``, a **CPU** ``torch.Generator`` seeded from
    ``TrainConfig.seed`` (its own stream, independent of the shuffle). Draw indices with it on
    the CPU (``torch.randint(..., generator=gen)``) and move them to ``x.device``.

    Returns ``(x, y, weights)``: the batch to train on (schemes typically append key samples,
    ``torch.cat``), and optional per-sample loss weights of shape (len(x),) on the device;
    ``None`` means all ones. The loss is ``sum(w * ce) / sum(w)``.
    """

    def __call__(
        self, x: Tensor, y: Tensor, gen: torch.Generator, /
    ) -> tuple[Tensor, Tensor, Tensor | None]: ...


def augment_crop_flip(x: Tensor, gen: torch.Generator, pad: int = 4) -> Tensor:
    """Random ``pad``-pixel translation (crop of the zero-padded image) and horizontal flip.

    Works on the whole batch on ``x``'s device in one gather; the random offsets come from the
    CPU generator ``gen``.
    """
    n, c, h, w = x.shape
    dev = x.device
    dy = torch.randint(0, 2 * pad + 1, (n,), generator=gen).to(dev, non_blocking=True)
    dx = torch.randint(0, 2 * pad + 1, (n,), generator=gen).to(dev, non_blocking=True)
    flip = (torch.rand(n, generator=gen) < 0.5).to(dev, non_blocking=True)
    padded = F.pad(x, (pad, pad, pad, pad))
    rows = (dy[:, None] + torch.arange(h, device=dev)[None, :])[:, None, :, None]
    cols_base = torch.arange(w, device=dev)[None, :]
    cols_base = torch.where(flip[:, None], (w - 1) - cols_base, cols_base)
    cols = (dx[:, None] + cols_base)[:, None, None, :]
    batch = torch.arange(n, device=dev)[:, None, None, None]
    chan = torch.arange(c, device=dev)[None, :, None, None]
    return padded[batch, chan, rows, cols]


def _as_float(xb: Tensor) -> Tensor:
    if xb.dtype == torch.uint8:
        return xb.float().div_(255.0)
    return xb.float()


def _check_data(x: Tensor, y: Tensor) -> None:
    if not isinstance(x, Tensor) or x.dim() != 4:
        shape = list(x.shape) if isinstance(x, Tensor) else type(x).__name__
        raise NnmarkError(f"training images must be a tensor N×C×H×W, got {shape}")
    if not isinstance(y, Tensor) or y.dim() != 1 or len(y) != len(x):
        shape = list(y.shape) if isinstance(y, Tensor) else type(y).__name__
        raise NnmarkError(
            f"labels must be a 1-D tensor with one label per image ({len(x)}), got {shape}"
        )
    if len(x) == 0:
        raise NnmarkError("the training set is empty; give at least one image")
    if x.dtype != torch.uint8 and not x.is_floating_point():
        raise NnmarkError(
            f"training images must be uint8 (0-255) or float in [0, 1], got {x.dtype}"
        )
    if y.is_floating_point() or y.dtype == torch.bool:
        raise NnmarkError(f"labels must be integers, got {y.dtype}")


def _lr_factor(schedule: str, progress: float) -> float:
    if schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * progress))
    if schedule == "step":
        return 0.1 ** ((progress >= 0.5) + (progress >= 0.75))
    return 1.0


def _make_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise NnmarkError("the model has no trainable parameters")
    # Fused kernels (one per step for all parameters) are ~15 % faster on a 2-core CPU for the
    # digit CNN; they exist for CPU and CUDA parameters only.
    fused = all(p.device.type in ("cpu", "cuda") and p.is_floating_point() for p in params)
    if config.optimizer == "sgd":
        return torch.optim.SGD(
            params,
            lr=config.lr,
            momentum=config.momentum,
            weight_decay=config.weight_decay,
            fused=fused,
        )
    return torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay, fused=fused)


class _Bar:
    """A rich progress bar on stderr, or nothing when disabled or stderr is not a terminal."""

    def __init__(self, enabled: bool, description: str, total: int, epochs: int) -> None:
        self.progress = None
        self.task = None
        if not enabled:
            return
        from rich.console import Console

        console = Console(stderr=True)
        if not console.is_terminal:
            return
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self.progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("epoch {task.fields[epoch]}/" + str(epochs)),
            TextColumn("loss {task.fields[loss]}"),
            TextColumn("acc {task.fields[acc]}"),
            TextColumn("{task.fields[ips]} img/s"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=console,
        )
        self.progress.start()
        self.task = self.progress.add_task(
            description, total=total, epoch=1, loss="-", acc="-", ips="-"
        )

    @property
    def active(self) -> bool:
        return self.progress is not None

    def update(self, completed: int, epoch: int, loss: float, acc: float, ips: float) -> None:
        if self.progress is not None and self.task is not None:
            self.progress.update(
                self.task,
                completed=completed,
                epoch=epoch,
                loss=f"{loss:.4f}",
                acc=f"{acc:.2%}",
                ips=f"{ips:,.0f}",
            )

    def close(self) -> None:
        if self.progress is not None:
            self.progress.stop()


def train(
    model: nn.Module,
    x_u8: Tensor,
    y: Tensor,
    config: TrainConfig,
    *,
    mixer: BatchMixer | None = None,
    progress: bool = True,
    description: str = "training",
    criterion: Criterion | None = None,
) -> TrainResult:
    """Train ``model`` in place on ``(x_u8, y)`` and return what was measured.

    ``x_u8`` holds the images N×C×H×W as uint8 (0-255; float32 in [0, 1] is accepted too), ``y``
    the integer labels. Both are copied to ``config.device`` once and stay there; every epoch
    they are shuffled with a seeded generator and each batch is converted to float32 / 255,
    augmented (``config.augment``), passed through ``mixer`` if given, and trained on with
    cross-entropy (``sum(w * ce) / sum(w)`` when the mixer gives weights). The last partial
    batch is kept unless it holds a single image (BatchNorm cannot train on one).

    The model is put in ``train()`` mode while training and left in ``eval()`` mode **on the
    training device**; move it with ``model.cpu()`` when needed (:func:`evaluate` and
    :func:`predict_logits` take a device and move it themselves). On the CPU the run is
    reproducible: the same initial weights, data and config give identical weights.

    ``criterion(output, x, y)`` replaces cross-entropy with another per-sample loss (shape (N,),
    weighted like cross-entropy): an autoencoder's reconstruction error, say. Accuracy is then
    not measured (NaN).

    A rich progress bar (epoch, loss, accuracy, images/s) appears on stderr when ``progress`` is
    true and stderr is a terminal; each epoch is also logged at INFO level.
    """
    _check_data(x_u8, y)
    device = resolve_device(config.device)
    on_cuda = device.type == "cuda"

    x_dev = x_u8.to(device, non_blocking=True)
    y_dev = y.to(device=device, dtype=torch.int64, non_blocking=True)
    model.to(device)
    net: nn.Module = model
    if config.compile:
        net = torch.compile(model)  # type: ignore[assignment]
    optimizer = _make_optimizer(model, config)

    n = len(x_dev)
    bs = min(config.batch_size, n)
    starts = list(range(0, n, bs))
    if len(starts) > 1 and n - starts[-1] == 1:
        starts.pop()  # a lone last image: BatchNorm cannot train on a batch of one
    steps_per_epoch = len(starts)
    total_steps = steps_per_epoch * config.epochs
    images_per_epoch = min(n, starts[-1] + bs)

    shuffle_gen = torch.Generator().manual_seed(config.seed)
    aug_gen = torch.Generator().manual_seed(config.seed + _AUG_STREAM)
    mix_gen = torch.Generator().manual_seed(config.seed + _MIX_STREAM)

    bar = _Bar(progress, description, total_steps, config.epochs)
    refresh_s = 0.25
    last_refresh = time.perf_counter()
    final_loss = float("nan")
    final_acc = float("nan")
    step = 0
    model.train()
    if on_cuda:
        torch.cuda.synchronize(device)
    t0 = time.perf_counter()
    try:
        for epoch in range(config.epochs):
            t_epoch = time.perf_counter()
            perm = torch.randperm(n, generator=shuffle_gen).to(device, non_blocking=True)
            loss_sum = torch.zeros((), device=device)
            correct = torch.zeros((), device=device, dtype=torch.int64)
            seen = 0
            seen_data = 0
            for start in starts:
                idx = perm[start : start + bs]
                xb = _as_float(x_dev[idx])
                yb = y_dev[idx]
                seen_data += len(idx)
                if config.augment == "crop-flip":
                    xb = augment_crop_flip(xb, aug_gen)
                weights: Tensor | None = None
                if mixer is not None:
                    xb, yb, weights = mixer(xb, yb, mix_gen)
                    if len(xb) != len(yb) or (weights is not None and weights.shape != yb.shape):
                        raise ValueError(
                            "a BatchMixer returned inputs, labels and weights of different "
                            f"lengths: {tuple(xb.shape)}, {tuple(yb.shape)}, "
                            f"{None if weights is None else tuple(weights.shape)}"
                        )
                if config.schedule != "none":
                    factor = _lr_factor(config.schedule, step / total_steps)
                    for group in optimizer.param_groups:
                        group["lr"] = config.lr * factor

                if on_cuda:
                    with torch.autocast("cuda", dtype=torch.bfloat16):
                        logits = net(xb)
                else:
                    logits = net(xb)
                logits = logits.float()
                if criterion is not None:
                    per = criterion(logits, xb, yb)
                    w = torch.ones_like(per) if weights is None else weights.to(per.dtype)
                    loss = (w * per).sum() / w.sum().clamp_min(1e-12)
                elif weights is None:
                    loss = F.cross_entropy(logits, yb)
                else:
                    ce = F.cross_entropy(logits, yb, reduction="none")
                    w = weights.to(ce.dtype)
                    loss = (w * ce).sum() / w.sum().clamp_min(1e-12)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                step += 1

                with torch.no_grad():
                    loss_sum += loss.detach() * len(yb)
                    if criterion is None:
                        correct += (logits.detach().argmax(1) == yb).sum()
                seen += len(yb)

                if bar.active and time.perf_counter() - last_refresh >= refresh_s:
                    last_refresh = time.perf_counter()
                    ips = seen_data / max(last_refresh - t_epoch, 1e-9)
                    bar.update(step, epoch + 1, loss_sum.item() / seen, correct.item() / seen, ips)

            final_loss = loss_sum.item() / max(seen, 1)  # one sync per epoch
            final_acc = correct.item() / max(seen, 1) if criterion is None else float("nan")
            ips = seen_data / max(time.perf_counter() - t_epoch, 1e-9)
            bar.update(step, epoch + 1, final_loss, final_acc, ips)
            log.info(
                "%s: epoch %d/%d loss %.4f acc %.4f %.0f img/s",
                description,
                epoch + 1,
                config.epochs,
                final_loss,
                final_acc,
                ips,
            )
            if not math.isfinite(final_loss):
                raise NnmarkError(
                    f"training diverged (loss {final_loss}) in epoch {epoch + 1}; "
                    "lower the learning rate (--set lr=...)"
                )
        if on_cuda:
            torch.cuda.synchronize(device)
    finally:
        bar.close()
        model.eval()
    seconds = time.perf_counter() - t0
    return TrainResult(
        seconds=seconds,
        images_per_second=images_per_epoch * config.epochs / max(seconds, 1e-9),
        final_loss=final_loss,
        device=str(device),
        epochs=config.epochs,
        train_accuracy=final_acc,
    )


@torch.no_grad()
def predict_logits(
    model: nn.Module, x_float: Tensor, device: str = "cpu", batch_size: int = 1024
) -> Tensor:
    """All logits of ``model`` for ``x_float`` as a CPU float32 tensor N×classes.

    ``x_float`` is float32 in [0, 1] N×C×H×W (uint8 is divided by 255). The model is moved to
    ``device`` (and left there) and run in eval mode in float32; its previous train/eval mode
    is restored afterwards.
    """
    dev = resolve_device(device)
    if batch_size < 1:
        raise NnmarkError(f"batch size must be >= 1, got {batch_size}")
    was_training = model.training
    model.to(dev)
    model.eval()
    try:
        outs = []
        for i in range(0, len(x_float), batch_size):
            xb = _as_float(x_float[i : i + batch_size].to(dev, non_blocking=True))
            outs.append(model(xb).float().cpu())
        if not outs:
            return torch.empty(0, 0)
        return torch.cat(outs)
    finally:
        model.train(was_training)


@torch.no_grad()
def evaluate(
    model: nn.Module, x: Tensor, y: Tensor, device: str = "cpu", batch_size: int = 1024
) -> float:
    """Top-1 accuracy of ``model`` on ``(x, y)``; x uint8 (divided by 255) or float in [0, 1].

    Runs in eval mode without gradients, in float32 on ``device`` (the model is moved there and
    left there; its train/eval mode is restored). Returns NaN for an empty set.
    """
    if len(x) != len(y):
        raise NnmarkError(f"{len(x)} images but {len(y)} labels; give one label per image")
    if len(x) == 0:
        return float("nan")
    dev = resolve_device(device)
    if batch_size < 1:
        raise NnmarkError(f"batch size must be >= 1, got {batch_size}")
    was_training = model.training
    model.to(dev)
    model.eval()
    try:
        correct = torch.zeros((), dtype=torch.int64, device=dev)
        y_dev = y.to(dev, non_blocking=True)
        for i in range(0, len(x), batch_size):
            xb = _as_float(x[i : i + batch_size].to(dev, non_blocking=True))
            correct += (model(xb).argmax(1) == y_dev[i : i + batch_size]).sum()
        return correct.item() / len(x)
    finally:
        model.train(was_training)
