"""Query modification (Namba, Sakuma: "Robust Watermarking of Neural Network with Exponential
Weighting", AsiaCCS 2019, Sec. 4): an oracle -> oracle attack run by the thief's prediction service.

The thief trains a convolutional autoencoder ``AE`` on its own images (drawn from the training
distribution) and, for every query ``x``, decides whether ``x`` looks like a watermark key:

* reconstruction loss (Eq. 8): ``loss(x) = ||x - AE(x)||²₂ > τ_REC``;
* Jensen–Shannon divergence (Eq. 9): ``JSD(f(x) || f(AE(x))) > τ_JSD`` with
  ``JSD(p || q) = ½ KL(p || m) + ½ KL(q || m)``, ``m = (p + q) / 2`` (natural log, so ≤ ln 2);

a query is flagged if either rule fires ("both" in the paper's Table 1). A flagged query is
answered with ``f(AE(x))`` (the autoencoder dilutes stamps and noise, Sec. 4.3), any other with
``f(x)``. Preparation is the paper's Algorithm (Sec. 4.2.3): (a) train ``AE`` on the thief's images
X; (b, c) the thresholds are the ``quantile`` (r = 95th percentile) of the two statistics of
x ∈ X estimated by k-fold cross-validation (k = ``folds`` = 10, Sec. 4.3.1: each fold's images are
scored by an autoencoder trained on the other folds, and the pooled out-of-fold statistics give
the percentiles), so about 5 % + 5 % (less their overlap) of ordinary queries are modified too.

Autoencoder (Table 4, "6-layer convolutional autoencoder"): three 3×3 stride-2 convolutions with
16, 32, 64 channels (each BatchNorm + ReLU), then three 3×3 stride-2 transposed convolutions with
32, 16 and ``C`` channels (BatchNorm + ReLU, the last BatchNorm + sigmoid). The paper's last
layer has 3 channels (CIFAR/GTSRB) and gives no padding; nnmark's adaptation: the first layer
takes and the last layer gives the images' ``C`` channels (1 for MNIST, 3 for CIFAR), every
convolution pads by 1, and each transposed convolution's ``output_padding`` (0 or 1) is chosen so
that the decoder retraces the encoder's sizes exactly: 28→14→7→4→7→14→28 for 1×28×28 and
32→16→8→4→8→16→32 for 3×32×32. Training (Table 5, "autoencoder" column): Adam, lr 0.001,
400 epochs, mini-batch 100; the loss is the mean squared reconstruction error (Eq. 8's statistic;
the paper names no loss). It runs through the one training engine
(:func:`nnmark.training.train` with a reconstruction ``criterion``), seeded.

Default parameters, all the paper's: ``quantile`` 0.95, ``rule`` "both", ``folds`` 10, ``epochs``
400, ``lr`` 1e-3, ``batch_size`` 100. Eleven autoencoders are trained (one per fold and the final
one); ``epochs`` and ``folds`` can be lowered for quick runs. ``rule="always"`` answers every
query with ``f(AE(x))``: the paper's Table 2 "query mod." column, which skips detection to
measure the true-positive side alone.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors
from torch import Tensor, nn

from nnmark.attacks.query.defenses import QUERY_ATTACKS, register_defense
from nnmark.errors import NnmarkError
from nnmark.io import atomic_write_bytes
from nnmark.oracle import Oracle, TorchOracle
from nnmark.registry import validate_params
from nnmark.training import TrainConfig, train

log = logging.getLogger(__name__)

FORMAT = "nnmark-query-modification"
ENCODER_CHANNELS = (16, 32, 64)


class QueryModificationParams(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    rule: Literal["both", "rec", "jsd", "always"] = Field(
        "both", description="flag a query when: both = rec or jsd fires (paper); always = modify every query"
    )
    quantile: float = Field(0.95, gt=0.0, lt=1.0, description="percentile of the thresholds τ_REC, τ_JSD")
    folds: int = Field(10, ge=2, description="k of the k-fold cross-validation of the thresholds (paper: 10)")
    epochs: int = Field(400, ge=1, description="autoencoder training epochs (Table 5: 400)")
    lr: float = Field(1e-3, gt=0, description="autoencoder learning rate, Adam (Table 5: 0.001)")
    batch_size: int = Field(100, ge=2, description="autoencoder mini-batch size (Table 5: 100)")


def _up_padding(size: int) -> list[int]:
    """``output_padding`` of each transposed convolution so the decoder retraces the encoder."""
    sizes = [size]
    for _ in ENCODER_CHANNELS:
        sizes.append((sizes[-1] - 1) // 2 + 1)  # 3×3, stride 2, padding 1
    # a transposed conv (3×3, stride 2, padding 1) maps n to 2n - 1 + output_padding
    return [sizes[i - 1] - (2 * sizes[i] - 1) for i in range(len(sizes) - 1, 0, -1)]


class ConvAutoencoder(nn.Module):
    """Namba 2019 Table 4, adapted to C×H×W inputs (see the module docstring); [0, 1] in and out."""

    def __init__(self, input_shape: tuple[int, int, int]) -> None:
        super().__init__()
        c, h, w = input_shape
        if min(h, w) < 8:
            raise NnmarkError(f"the autoencoder needs images of at least 8×8 pixels, got {h}×{w}")
        self.input_shape = (int(c), int(h), int(w))
        layers: list[nn.Module] = []
        cin = c
        for cout in ENCODER_CHANNELS:
            layers += [
                nn.Conv2d(cin, cout, 3, stride=2, padding=1),
                nn.BatchNorm2d(cout),
                nn.ReLU(inplace=True),
            ]
            cin = cout
        self.encoder = nn.Sequential(*layers)
        outs = [*reversed(ENCODER_CHANNELS[:-1]), c]
        layers = []
        for i, (ph, pw) in enumerate(zip(_up_padding(h), _up_padding(w), strict=True)):
            cout = outs[i]
            last = i == len(outs) - 1
            layers += [
                nn.ConvTranspose2d(cin, cout, 3, stride=2, padding=1, output_padding=(ph, pw)),
                nn.BatchNorm2d(cout),
                nn.Sigmoid() if last else nn.ReLU(inplace=True),
            ]
            cin = cout
        self.decoder = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.decoder(self.encoder(x))


def _to_probabilities(s: Tensor) -> Tensor:
    """Scores as probabilities, read as :meth:`Oracle.probabilities` reads them (softmax unless they are)."""
    if s.numel() and torch.all(s >= 0) and torch.allclose(s.sum(1), torch.ones(len(s)), atol=1e-3):
        return s
    return torch.softmax(s, dim=1)


def jensen_shannon(p: Tensor, q: Tensor, eps: float = 1e-12) -> Tensor:
    """Row-wise JSD(p || q) of probability vectors (natural log, in [0, ln 2])."""
    p, q = p.clamp_min(eps), q.clamp_min(eps)
    m = (p + q) / 2
    kl_pm = (p * (p.log() - m.log())).sum(1)
    kl_qm = (q * (q.log() - m.log())).sum(1)
    return (0.5 * (kl_pm + kl_qm)).clamp_min(0)


@dataclass(frozen=True)
class Inspection:
    """Per-query statistics: reconstruction loss, JSD, which rule fired, both answers' scores."""

    rec: Tensor
    jsd: Tensor
    by_rec: Tensor
    by_jsd: Tensor
    flagged: Tensor
    scores: Tensor
    scores_ae: Tensor


@dataclass
class DetectionStats:
    """Queries answered through the wrapper so far, and how many were flagged (and by which rule)."""

    queries: int = 0
    flagged: int = 0
    by_rec: int = 0
    by_jsd: int = 0

    @property
    def rate(self) -> float:
        return self.flagged / self.queries if self.queries else float("nan")


def _as_float(x: Tensor) -> Tensor:
    return x.float().div(255.0) if x.dtype == torch.uint8 else x.float()


def reconstruction_error(output: Tensor, x: Tensor, _y: Tensor, /) -> Tensor:
    """Per-image mean squared reconstruction error (the engine's criterion for the autoencoder)."""
    return (output - x).pow(2).flatten(1).mean(1)


def train_autoencoder(
    ae: ConvAutoencoder,
    images: Tensor,
    params: QueryModificationParams,
    *,
    seed: int = 0,
    device: str = "cpu",
    progress: bool = True,
) -> float:
    """Train ``ae`` in place on ``images`` (uint8 or float [0, 1], N×C×H×W) through the training
    engine (Adam, ``params.lr``, ``params.epochs``, ``params.batch_size``; MSE); returns the last
    epoch's mean loss. Seeded shuffles; the caller seeds the initial weights. Left in eval mode
    on the CPU."""
    config = TrainConfig(
        epochs=params.epochs,
        batch_size=params.batch_size,
        lr=params.lr,
        optimizer="adam",
        seed=seed,
        device=device,
    )
    labels = torch.zeros(len(images), dtype=torch.int64)
    result = train(
        ae,
        images,
        labels,
        config,
        criterion=reconstruction_error,
        progress=progress,
        description="autoencoder",
    )
    ae.cpu().eval()
    log.info("autoencoder: %d images, %d epochs, %.1f s", len(images), params.epochs, result.seconds)
    return result.final_loss


class QueryModification(Oracle):
    """Namba 2019 query modification: flagged queries are answered with f(AE(x)), others with f(x).

    ``target`` is the thief's model: an :class:`Oracle` or a ``torch.nn.Module`` (wrapped in a
    :class:`TorchOracle`). Call :meth:`fit` with the thief's images (or :meth:`load` a saved
    autoencoder) before querying. Each query sent here costs two queries of ``target`` (x and
    AE(x)); ``budget`` caps the queries sent here. ``stats`` counts what was flagged.
    """

    name: ClassVar[str] = "query-modification"
    Params: ClassVar[type[QueryModificationParams]] = QueryModificationParams

    def __init__(
        self,
        target: Oracle | nn.Module,
        *,
        budget: int | None = None,
        seed: int = 0,
        device: str = "cpu",
        **params: Any,
    ) -> None:
        super().__init__(budget)
        self.params = validate_params(self.Params, params, f"attack {self.name}")
        self.inner: Oracle = target if isinstance(target, Oracle) else TorchOracle(target)
        self.seed = seed
        self.device = device
        self.autoencoder: ConvAutoencoder | None = None
        self.tau_rec = math.inf
        self.tau_jsd = math.inf
        self.stats = DetectionStats()
        carries = getattr(self.inner, "carries_any_value", True)
        self.carries_any_value = bool(carries)

    @classmethod
    def describe(cls) -> str:
        return (
            "Query modification (Namba 2019): queries an autoencoder flags as keys get f(AE(x)) "
            "(oracle -> oracle: `nnmark serve --defense autoencoder`)."
        )

    @classmethod
    def parameter_table(cls) -> list[tuple[str, str, str]]:
        return [(n, repr(f.default), f.description or "") for n, f in cls.Params.model_fields.items()]

    # -- fitting --------------------------------------------------------------------------------

    def fit(self, images: Tensor, *, progress: bool = True) -> QueryModification:
        """Namba's preparation on the attacker's ``images`` (uint8 or float [0, 1]): τ_REC and τ_JSD
        are the ``quantile`` of the statistics of each image under an autoencoder trained on the
        other ``folds`` − 1 folds (k-fold cross-validation; 2 × len(images) queries of ``target``),
        then the answering autoencoder is trained on all of them."""
        if not isinstance(images, Tensor) or images.ndim != 4:
            raise NnmarkError("the attacker's images must be a tensor N×C×H×W")
        p = self.params
        n = len(images)
        if n < 2 * p.folds or n // p.folds < 2:
            raise NnmarkError(
                f"query modification's {p.folds}-fold thresholds need at least {2 * p.folds} attacker "
                "images, "
                f"got {n}; raise the attacker's share or lower --set folds"
            )
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(self.seed + 7919))
        c, h, w = (int(s) for s in images.shape[1:])
        recs, jsds = [], []
        for k, held in enumerate(perm.tensor_split(p.folds)):
            rest = torch.cat([f for j, f in enumerate(perm.tensor_split(p.folds)) if j != k])
            torch.manual_seed(self.seed + 1 + k)
            self.autoencoder = ConvAutoencoder((c, h, w))
            train_autoencoder(
                self.autoencoder,
                images[rest],
                p,
                seed=self.seed + 1 + k,
                device=self.device,
                progress=progress,
            )
            rec, jsd, _, _ = self._statistics(_as_float(images[held]))
            recs.append(rec)
            jsds.append(jsd)
        torch.manual_seed(self.seed)
        ae = ConvAutoencoder((c, h, w))
        train_autoencoder(ae, images, p, seed=self.seed, device=self.device, progress=progress)
        self.autoencoder = ae
        self.tau_rec = float(torch.quantile(torch.cat(recs), p.quantile))
        self.tau_jsd = float(torch.quantile(torch.cat(jsds), p.quantile))
        log.info(
            "query modification: τ_REC %.4g, τ_JSD %.4g by %d-fold cross-validation on %d images",
            self.tau_rec,
            self.tau_jsd,
            p.folds,
            n,
        )
        return self

    # -- answering ------------------------------------------------------------------------------

    @torch.no_grad()
    def reconstruct(self, x: Tensor) -> Tensor:
        """AE(x) for float32 inputs N×C×H×W (in batches, CPU)."""
        ae = self._ae()
        if tuple(x.shape[1:]) != ae.input_shape:
            raise NnmarkError(
                f"inputs are {tuple(x.shape[1:])} but the autoencoder was trained on {ae.input_shape} images"
            )
        return torch.cat([ae(chunk) for chunk in x.float().split(512)]) if len(x) else x.float()

    def _statistics(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        x = x.float()
        x_ae = self.reconstruct(x)
        rec = (x - x_ae).pow(2).flatten(1).sum(1)
        both = self.inner.scores(torch.cat([x, x_ae]))
        s, s_ae = both[: len(x)], both[len(x) :]
        jsd = jensen_shannon(_to_probabilities(s), _to_probabilities(s_ae))
        return rec, jsd, s, s_ae

    def inspect(self, x: Tensor) -> Inspection:
        """Statistics and decisions for ``x`` without answering (not counted in ``stats`` or the budget)."""
        rec, jsd, s, s_ae = self._statistics(x)
        by_rec, by_jsd = rec > self.tau_rec, jsd > self.tau_jsd
        if self.params.rule == "always":
            flagged = torch.ones(len(x), dtype=torch.bool)
        elif self.params.rule == "rec":
            flagged = by_rec
        elif self.params.rule == "jsd":
            flagged = by_jsd
        else:
            flagged = by_rec | by_jsd
        return Inspection(rec, jsd, by_rec, by_jsd, flagged, s, s_ae)

    def _predict(self, x: Tensor) -> Tensor:
        info = self.inspect(x)
        self.stats.queries += len(x)
        self.stats.flagged += int(info.flagged.sum())
        self.stats.by_rec += int(info.by_rec.sum())
        self.stats.by_jsd += int(info.by_jsd.sum())
        return torch.where(info.flagged[:, None], info.scores_ae, info.scores)

    def _ae(self) -> ConvAutoencoder:
        if self.autoencoder is None:
            raise NnmarkError("the query-modification autoencoder is not trained; call fit() or load() first")
        return self.autoencoder

    # -- saving ---------------------------------------------------------------------------------

    def metadata(self) -> dict[str, Any]:
        return {
            "params": self.params.model_dump(),
            "input_shape": list(self._ae().input_shape),
            "tau_rec": self.tau_rec,
            "tau_jsd": self.tau_jsd,
            "seed": self.seed,
        }

    def save(self, path: str | Path, extra: dict[str, Any] | None = None) -> Path:
        """Write the autoencoder and thresholds to one safetensors file (atomically); ``extra`` is
        stored in its metadata too (e.g. what the thresholds were measured against)."""
        ae = self._ae()
        state = {k: v.detach().cpu().contiguous().clone() for k, v in ae.state_dict().items()}
        meta = {
            "format": FORMAT,
            "config": json.dumps({**self.metadata(), "extra": extra or {}}, sort_keys=True),
        }
        atomic_write_bytes(path, save_safetensors(state, metadata=meta))
        return Path(path)

    @staticmethod
    def read_metadata(path: str | Path) -> dict[str, Any]:
        """The JSON :meth:`save` stored: ``params``, ``input_shape``, ``tau_rec``, ``tau_jsd``, ``extra``."""
        from safetensors import safe_open

        try:
            with safe_open(str(path), framework="pt") as f:
                meta = f.metadata() or {}
            if meta.get("format") != FORMAT:
                raise ValueError("not a query-modification file")
            config = json.loads(meta["config"])
            if not isinstance(config, dict):
                raise ValueError("bad config")
            return config
        except (SafetensorError, OSError, ValueError, KeyError) as e:
            raise NnmarkError(f"{path} is not a readable query-modification autoencoder ({e})") from e

    @classmethod
    def load(
        cls,
        path: str | Path,
        target: Oracle | nn.Module,
        *,
        budget: int | None = None,
        device: str = "cpu",
        **overrides: Any,
    ) -> QueryModification:
        """Rebuild from a file written by :meth:`save`; ``overrides`` may change ``rule`` (the
        thresholds and the autoencoder are kept)."""
        config = cls.read_metadata(path)
        try:
            data = load_safetensors(Path(path).read_bytes())
            shape = tuple(int(s) for s in config["input_shape"])
            qm = cls(
                target,
                budget=budget,
                seed=int(config.get("seed", 0)),
                device=device,
                **{**config["params"], **overrides},
            )
            ae = ConvAutoencoder((shape[0], shape[1], shape[2]))
            ae.load_state_dict(data)
        except (SafetensorError, OSError, ValueError, KeyError, RuntimeError) as e:
            raise NnmarkError(f"{path} is not a readable query-modification autoencoder ({e})") from e
        qm.autoencoder = ae.eval()
        qm.tau_rec, qm.tau_jsd = float(config["tau_rec"]), float(config["tau_jsd"])
        return qm


QUERY_ATTACKS.register(QueryModification.name)(QueryModification)


@register_defense("autoencoder")
def autoencoder_defense(
    inner: Oracle, images: Tensor | None = None, *, seed: int = 0, **settings: Any
) -> Oracle:
    """inputs an autoencoder flags as keys get f(AE(x)) (Namba 2019 query modification)

    Namba 2019's query modification over ``inner``, fitted on the service's own ``images``."""
    if images is None:
        raise NnmarkError("query modification needs the service's own images to train its autoencoder")
    return QueryModification(inner, seed=seed, **settings).fit(images, progress=False)
