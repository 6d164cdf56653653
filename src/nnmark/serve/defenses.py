"""Query defenses a served suspect can run: the one place ``nnmark serve --defense`` is built.

:func:`build_defense` turns a defense name into a :class:`QueryDefense` (the model plus what it
does to queries it flags). It is the only function the server calls, so switching it to the
defense registry of :mod:`nnmark.attacks` changes nothing else.

Defense ``reject`` (out-of-distribution query rejection, the defense Namba et al. 2019 discuss
against key queries): a :class:`PixelStatsDetector` fitted on the run's training images scores
each input by its mean squared per-pixel z-score against the training images' per-pixel mean
and spread, and flags inputs above the 99.5th percentile of held-out training images (so about
0.5% of ordinary queries are flagged too). A flagged input is **answered with a wrong label**,
not refused: the served scores are the real ones with the top class swapped for another class
drawn at random (seeded by the input's bytes, so repeating a query repeats the answer). This is
what a thief would do: an HTTP 403 would tell the owner that their key was spotted. The server
logs how many inputs it flagged; nothing in the replies or in the metadata reveals the defense.

Defense ``autoencoder`` (Namba et al. 2019's query modification, the attack itself, see
:mod:`nnmark.attacks.query.autoencoder`): a convolutional autoencoder is trained on a share
(``defense_fraction``, default 10 %, drawn as :func:`~nnmark.attacks.base.share_indices` draws
the attacker's data) of the run's training images; an input whose reconstruction loss or whose
Jensen–Shannon divergence between ``f(x)`` and ``f(AE(x))`` is above its 95th percentile on
held-out images is answered with ``f(AE(x))``, any other with ``f(x)``. The autoencoder and its
thresholds are cached in the run folder as ``defense/autoencoder.safetensors`` (written
atomically) and reused while the model's weights, the dataset, the share, the seed and the
settings (``defense_settings``, e.g. ``{"epochs": 5}``) are unchanged; otherwise it is retrained.
A run folder that cannot be written to is served anyway (the cache is skipped, with a warning).
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from nnmark.errors import NnmarkError

if TYPE_CHECKING:
    from nnmark.attacks.query.autoencoder import QueryModification
    from nnmark.types import ModelSpec

log = logging.getLogger(__name__)

DEFENSES = ("none", "reject", "autoencoder")
DEFENSE_DIR = "defense"
AUTOENCODER_FILE = "autoencoder.safetensors"


@dataclass
class QueryDefense:
    """The model as a defended server answers: ``answer(x)`` gives logits and how many inputs of
    ``x`` the defense flagged (and answered otherwise)."""

    name: str
    model: torch.nn.Module
    detector: PixelStatsDetector | None = None
    guard: QueryModification | None = None
    secret: bytes = b"0"

    @torch.no_grad()
    def answer(self, x: torch.Tensor) -> tuple[torch.Tensor, int]:
        if self.guard is not None:
            before = self.guard.stats.flagged
            logits = self.guard.scores(x)
            return logits, self.guard.stats.flagged - before
        logits = self.model(x).float()
        if self.detector is None:
            return logits, 0
        flagged = self.detector.flags(x)
        if not flagged.any():
            return logits, 0
        return mislead(x, logits, flagged, self.secret), int(flagged.sum())


def build_defense(
    name: str,
    run_dir: Path,
    model: torch.nn.Module,
    spec: ModelSpec,
    *,
    data_dir: str | Path | None = None,
    seed: int = 0,
    fraction: float = 0.1,
    settings: dict[str, Any] | None = None,
    progress: bool = False,
) -> QueryDefense:
    """The defense ``name`` (``none``, ``reject``, ``autoencoder``) around ``model``."""
    if name not in DEFENSES:
        raise NnmarkError(f"unknown defense {name!r}; choose one of {', '.join(DEFENSES)}")
    defense = QueryDefense(name, model, secret=str(seed).encode())
    if name == "reject":
        defense.detector = PixelStatsDetector(training_images(run_dir, spec, name, data_dir), seed=seed)
    elif name == "autoencoder":
        defense.guard = autoencoder_defense(
            run_dir,
            model,
            training_images(run_dir, spec, name, data_dir),
            fraction=fraction,
            seed=seed,
            settings=settings,
            progress=progress,
        )
    return defense


def training_images(
    run_dir: Path, spec: ModelSpec, defense: str, data_dir: str | Path | None
) -> torch.Tensor:
    """The run's training images (what ordinary queries look like), which a defense fits on."""
    from nnmark.data import load_dataset

    if not spec.dataset:
        raise NnmarkError(f"{run_dir} does not name its dataset, which the {defense} defense needs")
    data = load_dataset(spec.dataset, data_dir)
    if data.input_shape != spec.input_shape:
        raise NnmarkError(
            f"dataset {spec.dataset} has {data.input_shape} images but the model takes {spec.input_shape}"
        )
    return data.train_x


def mislead(x: torch.Tensor, logits: torch.Tensor, flagged: torch.Tensor, secret: bytes) -> torch.Tensor:
    """Swap the top class of each flagged row with another, drawn from the input's bytes."""
    logits = logits.clone()
    k = logits.shape[1]
    if k < 2:
        return logits
    for i in torch.nonzero(flagged).flatten().tolist():
        digest = hashlib.sha256(secret + x[i].numpy().tobytes()).digest()
        top = int(logits[i].argmax())
        other = (top + 1 + int.from_bytes(digest[:8], "big") % (k - 1)) % k
        logits[i, [top, other]] = logits[i, [other, top]]
    return logits


class PixelStatsDetector:
    """Flags inputs whose pixels are far from the training images' (a simple OOD detector).

    Score of an image ``x``: ``mean(((x - μ) / max(σ, 0.05))²)`` over its pixels, with ``μ`` and
    ``σ`` the per-pixel mean and standard deviation of half of (at most ``max_images``) training
    images; the threshold is the ``quantile`` of the scores of the other half.
    """

    def __init__(
        self, train_x: torch.Tensor, quantile: float = 0.995, max_images: int = 5000, seed: int = 0
    ) -> None:
        if len(train_x) < 4:
            raise NnmarkError("the reject defense needs training images (what ordinary queries look like)")
        gen = torch.Generator().manual_seed(seed)
        idx = torch.randperm(len(train_x), generator=gen)[:max_images]
        x = train_x[idx].float() / (255.0 if train_x.dtype == torch.uint8 else 1.0)
        half = len(x) // 2
        fit, held = x[:half], x[half:]
        self.mean = fit.mean(0)
        self.std = fit.std(0).clamp_min(0.05)
        self.threshold = float(torch.quantile(self.score(held), quantile))

    def score(self, x: torch.Tensor) -> torch.Tensor:
        return ((x - self.mean) / self.std).pow(2).mean(dim=(1, 2, 3))

    def flags(self, x: torch.Tensor) -> torch.Tensor:
        return self.score(x) > self.threshold


def autoencoder_defense(
    run_dir: str | Path,
    model: torch.nn.Module,
    train_x: torch.Tensor,
    *,
    fraction: float = 0.1,
    seed: int = 0,
    settings: dict[str, Any] | None = None,
    progress: bool = False,
) -> QueryModification:
    """Namba 2019 query modification over ``model``, trained on ``fraction`` of ``train_x``, or loaded
    from ``run_dir/defense/autoencoder.safetensors`` when that was made for the same weights, data
    share, seed and settings (else trained again and the cache rewritten, atomically)."""
    from nnmark.attacks.base import share_indices
    from nnmark.attacks.query.autoencoder import QueryModification
    from nnmark.io import MODEL_FILE

    run = Path(run_dir)
    cache = run / DEFENSE_DIR / AUTOENCODER_FILE
    qm = QueryModification(model, seed=seed, **(settings or {}))  # validates the settings first
    made_for = {
        "model_sha256": hashlib.sha256((run / MODEL_FILE).read_bytes()).hexdigest(),
        "images": len(train_x),
        "images_shape": list(train_x.shape[1:]),
        "fraction": fraction,
    }
    if cache.is_file():
        try:
            config = QueryModification.read_metadata(cache)
            same = (config.get("extra"), config.get("params"), config.get("seed"))
            if same == (made_for, qm.params.model_dump(), seed):
                log.info("autoencoder defense: using %s", cache)
                return QueryModification.load(cache, model)
            log.info("autoencoder defense: %s was made for another model or settings; retraining", cache)
        except NnmarkError as e:
            log.warning("autoencoder defense: ignoring %s (%s); retraining", cache, e)
    share = train_x[share_indices(len(train_x), fraction, seed)]
    log.info("autoencoder defense: training on %d of %d training images", len(share), len(train_x))
    qm.fit(share, progress=progress)
    try:
        qm.save(cache, extra=made_for)
    except OSError as e:
        log.warning("autoencoder defense: cannot cache the autoencoder in %s (%s); serving anyway", cache, e)
    return qm
