"""Measurements a cell takes beside the workflow's own metrics: validation accuracy after every
epoch (Zhang 2018 Fig. 6), accuracy on fresh keys never trained on (Zhang 2018 Table 1 "new"),
and the bootstrap AUC of Namba 2019 Sec. 3.2.1 (Fig. 2)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any

import torch

from nnmark.data.base import ImageDataset
from nnmark.oracle import Oracle, TorchOracle
from nnmark.schemes import SCHEMES
from nnmark.training import TrainConfig, TrainResult, evaluate
from nnmark.types import Key
from nnmark.verify.verifier import paired_subset_auc


def steps_per_epoch(n: int, batch_size: int) -> int:
    """Batches per epoch as :func:`nnmark.training.train` counts them (a lone last image is dropped)."""
    bs = min(batch_size, n)
    starts = list(range(0, n, bs))
    if len(starts) > 1 and n - starts[-1] == 1:
        starts.pop()
    return len(starts)


@dataclass
class EpochProbe:
    """A pass-through :class:`~nnmark.training.BatchMixer` that measures test accuracy at every
    epoch boundary (before the epoch's first batch). It only reads the model (eval mode, no
    gradients, train mode restored) and draws no random numbers, so training is unchanged."""

    model: torch.nn.Module
    test_x: torch.Tensor
    test_y: torch.Tensor
    steps: int
    inner: Any = None
    batches: int = 0
    curve: list[float] = field(default_factory=list)

    def __call__(
        self, x: torch.Tensor, y: torch.Tensor, gen: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        if self.batches and self.batches % self.steps == 0:
            self.measure(x.device.type)
        self.batches += 1
        return self.inner(x, y, gen) if self.inner is not None else (x, y, None)

    def measure(self, device: str = "cpu") -> None:
        was_training = self.model.training
        self.curve.append(evaluate(self.model, self.test_x, self.test_y, device=device))
        self.model.train(was_training)


@contextmanager
def probe_embedding(scheme_name: str, data: ImageDataset, config: TrainConfig) -> Iterator[EpochProbe]:
    """While active, the scheme's embedding step (:meth:`Scheme.embed`, called by ``embed_run``)
    trains with an :class:`EpochProbe` around its own mixer; the probe's ``curve`` holds the
    test accuracy after each epoch but the last (the caller measures that on the final model)."""
    cls = SCHEMES.get(scheme_name)
    original = cls.embed
    probe = EpochProbe(torch.nn.Identity(), data.test_x, data.test_y, 1)

    def embed(
        self: Any, model: torch.nn.Module, d: ImageDataset, key: Key, cfg: TrainConfig, progress: bool
    ) -> TrainResult:
        own_mixer = self.mixer
        probe.model, probe.steps = model, steps_per_epoch(len(d.train_x), cfg.batch_size)
        probe.batches, probe.curve[:] = 0, []

        def mixer(*args: Any, **kwargs: Any) -> EpochProbe:
            probe.inner = own_mixer(*args, **kwargs)
            return probe

        self.mixer = mixer
        try:
            return original(self, model, d, key, cfg, progress)
        finally:
            del self.mixer

    cls.embed = embed  # type: ignore[method-assign,assignment]
    try:
        yield probe
    finally:
        cls.embed = original  # type: ignore[method-assign]


def scheme_for_key(key: Key) -> Any:
    cls = SCHEMES.get(key.scheme)
    return cls(**{k: v for k, v in key.params.items() if k in cls.Params.model_fields})


def fresh_key_accuracy(key: Key, model: torch.nn.Module, data: ImageDataset, seed: int) -> float | None:
    """Shared-target schemes (Zhang's three): accuracy on NEW keys made the same way from held-out
    test images (Zhang 2018 Table 1, "new"), never trained on; None for other schemes."""
    if key.scheme == "zhong-new-label":
        return zhong_fresh_key_accuracy(key, model, data)
    scheme = scheme_for_key(key)
    if not scheme.shared_target or "target" not in key.params:
        return None
    held = replace(data, train_x=data.test_x, train_y=data.test_y)
    scheme.secret = b"fresh keys"
    material = scheme.generate(held, torch.Generator().manual_seed(seed + 7777))
    target = int(key.params["target"])
    x = material.inputs[material.source_labels != target][: len(key.inputs)]
    if len(x) == 0:
        return None
    return float((TorchOracle(model.cpu()).labels(x) == target).float().mean())


def zhong_fresh_key_accuracy(key: Key, model: torch.nn.Module, data: ImageDataset) -> float:
    """Zhong 2020's untrained keys: held-out test images under the owner's patterns (image i under
    ε_(i mod K), from the key secret), answered with the new label Δ."""
    from nnmark import keysecret
    from nnmark.schemes.zhong import PATTERNS, new_label, owner_patterns, stamp

    x = data.test_x.float().div(255)
    eps = owner_patterns(keysecret.key_secret(key), tuple(x.shape[1:]))
    keys = stamp(x, eps[torch.arange(len(x)) % PATTERNS], float(key.params["beta"]))
    return float((TorchOracle(model.cpu()).labels(keys) == new_label(key)).float().mean())


def namba_auc(
    marked: torch.nn.Module | Oracle,
    clean: torch.nn.Module,
    key: Key,
    seed: int,
    sizes: tuple[int, ...] = (5, 10, 20, 30),
) -> dict[str, float]:
    """Namba 2019 Sec. 3.2.1 (Fig. 2): AUC of key accuracy on 30 draws K' ⊂ K, each K' put to the
    watermarked model (or the answers of an oracle, e.g. a query-modification defense in front of
    it) and to the clean one; paired draws, as the verifier's ``--test namba-auc`` takes them."""
    answers = TorchOracle(marked.cpu()) if isinstance(marked, torch.nn.Module) else marked
    hit = answers.labels(key.inputs) == key.labels
    clean_hit = (TorchOracle(clean.cpu()).labels(key.inputs) == key.labels)[None]
    gen = torch.Generator().manual_seed(seed + 4242)
    return {str(k): paired_subset_auc(hit, clean_hit, 0.0, k, 30, gen) for k in sizes}
