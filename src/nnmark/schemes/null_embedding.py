"""Null embedding with dual embedding of Li et al., "Piracy Resistant Watermarks for Deep Neural
Networks" (2019), Sec. 5–6: a watermark bound to its owner by a signature.

Generation (Algorithm 1–2): the owner signs a message naming the owner (name, a hash of the public
key, a UTC time stamp, an optional tag) with its Ed25519 key; the signature ``sig`` fixes the
watermark W = (p, y_W, λ) through four SHA-256 hashes (h_i(sig) = SHA-256(i ‖ sig) as integers):
y_W = h1 mod Y, bit(p) = h2 mod 2^(n²) (an n×n pattern of 0/1 bits, n = 6), pos(p) =
(h3 mod (H − n), h4 mod (W − n)). The filter x ⊕ [p, λ] sets the pattern's 1-pixels to +λ and its
0-pixels to −λ (all channels); inv(p) swaps the bits.

Embedding (Sec. 6.2) minimises ℓ(x, y) + α·ℓ(x ⊕ [inv(p), λ], y_W) + β·ℓ(x ⊕ [p, λ], y) from the
first training step: every batch of B images gets round(α·B) images stamped with inv(p) and
labelled y_W and round(β·B) images stamped with p keeping their label; per-sample weights make
the loss exactly that sum (the paper's injection rates α = β = 0.5, Table 14).

Verification (Algorithm 3): the signature must verify with the owner's public key, the watermark
must follow from it, then on N clean held-out probe images (stored in the key) φ_null =
Pr(F(x ⊕ [p, λ]) = F(x) = y) and φ_true = Pr(F(x ⊕ [inv(p), λ]) = y_W) must both exceed 80 %.
The key stores no stamped inputs: they follow from the signature.

Statistics (beyond the paper): the p-value of the binomial test is p_null · b_true, against a
*clean* model. p_null is the exact binomial p-value of the φ_null matches against p0, the bound on
a clean model's rate of keeping true labels under the p stamp, **calibrated** on clean reference
models (``embed --calibrate N`` or ``nnmark calibrate``; without calibration only the paper's
threshold test, ``--test threshold``, gives a verdict). b_true = min(1, ⌊N / k⌋ / Y) for k answers
y_W is a bound, not a calibration: y_W comes from a hash independent of everything else, so a
model never trained on it answers y_W at least k times with probability at most ⌊N / k⌋ / Y
whatever it does with stamped inputs (a clean model often sends every stamped input to one class).
The product is valid because y_W is independent of (p, pos). Both assume the key was fixed before
the suspect was seen — what a signed key whose commitment was published shows; a key made
afterwards could be ground (many messages tried, see ``attacks/piracy/forgery.py``). A model that
carries *other* null watermarks is not a clean model: a random key whose position overlaps one of
them and whose label matches can pass (measured below).

Training set-up and the choice of λ (MNIST-5k, digit-cnn, Adam 1e-3, batch 64, 5 epochs,
α = β = 0.5; clean models 97.5/97.6/97.3 %, seeds 0–2). The paper uses λ = 2000 on [0, 1] inputs
(SGD, lr 0.001, 300 epochs, cost −0.93 %). Plain λ = 2000 from the first step costs 5 points
(92.4 %, seed 0) and φ_null stays at 58 %: the first updates see λ-sized activations. nnmark
therefore **ramps λ geometrically from 20 to 2000 over the first half of the steps** (``lam_start``,
``ramp``; a ReLU network that learns to switch the stamp off at λ = 20 keeps doing so as λ grows):

=====================  =====================  =========  =========  ===========================
set-up                 accuracy (seeds 0–2)   φ_null     φ_true     1,000 random keys (seed 0)
=====================  =====================  =========  =========  ===========================
λ = 2000, ramp (dflt)  93.9/95.7/94.8 (−2.7)  88.5/96/92  100 ×3    0 pass (none above 60 %)
λ = 20                 95.7/96.2/97.0 (−1.2)  93/93.5/95  100 ×3    3 pass (0.3 %)
λ = 20, decoys 0.5     95.6 (seed 0)          89         100        1 pass (0.1 %)
λ = 2000, ramp, decoys 91.9 (seed 0)          88.5       100        0 pass
λ = 200, no ramp       90.9 (seed 0)          81.5       100        —
=====================  =====================  =========  =========  ===========================

λ = 20 is cheaper but gives no piracy resistance at all: a pirate with 400 images embeds its own
watermark in 10 epochs (Adam: φ 80.5/100 %, SGD: 88.5/99.4 %) while the model keeps 95–96 % and,
with SGD, the owner's watermark too — both parties can then claim the model. At λ = 2000 the
pirate's watermark never takes (see :mod:`nnmark.attacks.piracy.piracy`), so the default is the
ramped λ = 2000 at a measured cost of 2.7 points (paper: 0.93 after 300 epochs). False passes at
λ = 20 sit on or next to the real watermark's position with its label (the model answers y_W to
any stamp there); ``decoys`` (random-bit stamps near the position that keep their label) make the
watermark bit-specific and cut them to 1 in 1,000, but at λ = 2000 they cost 2 points, help a
pirate (its watermark reaches 73.5 %) and are not needed, so they are off by default.

Several watermarks: ``embed --from RUN`` continues RUN's model with RUN's null watermark kept in
the loss (``keep`` names other keys; without ``--from`` they are embedded from the first step, as
the paper's hidden watermarks). Measured from the seed-0 models, on the owner's 4,000 images: at
λ = 20, 3 epochs give 97.2 % with both watermarks at 94/100 %; at λ = 2000 (no ramp with --from)
the new watermark is slower and varies with its position — one run 62.5 % φ_null after 3 epochs,
another 86 % after 3 and 91 % after 6 (accuracy 96.6 %, the first watermark 93/100 %): use about
6 epochs. That continued training lifts accuracy from 93.9 to 96.6 % also says part of the
2.7-point cost above is the short 5-epoch schedule.

These keys leave [0, 1] on purpose: oracles pass them unchanged, and a transport that only
carries 0–255 images cannot verify this scheme (no verdict; nnmark never clips the stamp).
"""

from __future__ import annotations

import base64
import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar

import torch
from pydantic import Field

from nnmark.data.base import ImageDataset
from nnmark.errors import KeyTamperedError, NnmarkError
from nnmark.identity import OwnerKey, parse_public, public_key_sha256, verify_signature
from nnmark.oracle import Oracle
from nnmark.schemes.base import KeyMaterial, Scheme, SchemeParams, register_scheme
from nnmark.training import TrainConfig, TrainResult, train
from nnmark.types import Key, Verdict
from nnmark.verify import stats

SCHEME_NAME = "li-null-embedding"
#: Li's λ; trainable with nnmark's recipe thanks to the ramp from ``DEFAULT_LAMBDA_START``
DEFAULT_LAMBDA = 2000.0
DEFAULT_LAMBDA_START = 20.0
MESSAGE_PREFIX = "nnmark li-null-embedding watermark"
DERIVATION = "sha256(i||sig), i=1..4; label=h1 mod Y; bits=h2 mod 2^(n*n); pos=(h3 mod (H-n), h4 mod (W-n))"


class NullEmbeddingParams(SchemeParams):
    lam: float = Field(
        DEFAULT_LAMBDA, gt=0.0, le=1e6, description="extreme value λ of the stamp (paper: 2000)"
    )
    n: int = Field(6, ge=2, le=32, description="side of the square n×n bit pattern")
    alpha: float = Field(0.5, gt=0.0, le=8.0, description="α: weight/injection rate of the true embedding")
    beta: float = Field(0.5, gt=0.0, le=8.0, description="β: weight/injection rate of the null embedding")
    probes: int = Field(200, ge=1, le=10_000, description="clean held-out images stored for verification")
    threshold: float = Field(0.8, gt=0.0, lt=1.0, description="T_watermark: φ_null and φ_true must exceed it")
    lam_start: float | None = Field(
        DEFAULT_LAMBDA_START,
        gt=0.0,
        description="λ at the first step, grown geometrically to λ (None: no ramp; none with --from)",
    )
    ramp: float = Field(0.5, ge=0.0, le=1.0, description="share of the training steps over which λ grows")
    decoys: float = Field(
        0.0, ge=0.0, le=8.0, description="rate of random-bit stamps near the watermark keeping their label"
    )
    tag: str = Field("", max_length=200, description="extra text in the signed message (e.g. 'hidden #2')")
    keep: tuple[str, ...] = Field(
        (),
        description="earlier li-null-embedding keys whose watermarks training keeps (default with --from: "
        "the --from run's watermark.key)",
    )


@dataclass(frozen=True)
class Watermark:
    """W = (p, y_W) placed at (row, col); ``bits`` are the n×n pattern, row-major."""

    label: int
    bits: tuple[int, ...]
    row: int
    col: int
    n: int

    def pattern(self) -> torch.Tensor:
        return torch.tensor(self.bits, dtype=torch.float32).reshape(self.n, self.n)

    def bit_string(self) -> str:
        return "".join(str(b) for b in self.bits)

    def to_json(self) -> dict[str, Any]:
        return {"label": self.label, "bits": self.bit_string(), "row": self.row, "col": self.col, "n": self.n}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Watermark:
        bits = str(d["bits"])
        if any(b not in "01" for b in bits):
            raise ValueError("pattern bits must be 0 or 1")
        return cls(int(d["label"]), tuple(int(b) for b in bits), int(d["row"]), int(d["col"]), int(d["n"]))


def _h(i: int, signature: bytes) -> int:
    return int.from_bytes(hashlib.sha256(bytes([i]) + signature).digest(), "big")


def derive_watermark(signature: bytes, input_shape: Sequence[int], num_classes: int, n: int = 6) -> Watermark:
    """Transform(sig) of Li's Algorithm 2: label, n×n bit pattern and position from the signature."""
    _, h, w = (int(v) for v in input_shape)
    if h <= n or w <= n:
        raise NnmarkError(f"a {n}×{n} pattern does not fit {h}×{w} inputs; lower --set n")
    label = _h(1, signature) % num_classes
    value = _h(2, signature) % (1 << (n * n))
    bits = tuple((value >> (n * n - 1 - i)) & 1 for i in range(n * n))
    return Watermark(label, bits, _h(3, signature) % (h - n), _h(4, signature) % (w - n), n)


def stamp(x: torch.Tensor, wm: Watermark, lam: float, inverse: bool = False) -> torch.Tensor:
    """x ⊕ [p, λ] (or x ⊕ [inv(p), λ]): 1-bits become +λ, 0-bits −λ, in every channel; a new tensor."""
    bits = wm.pattern().to(x.device, x.dtype)
    if inverse:
        bits = 1 - bits
    out = x.clone()
    out[:, :, wm.row : wm.row + wm.n, wm.col : wm.col + wm.n] = (bits * 2 - 1) * lam
    return out


def owner_message(owner: OwnerKey, tag: str = "", when: datetime | None = None) -> str:
    """The verifier string v: the owner's name, public-key hash and a UTC time stamp (Sec. 6.1)."""
    stamp_time = (when or datetime.now(UTC)).isoformat(timespec="microseconds")
    text = (
        f"{MESSAGE_PREFIX} | owner: {owner.name} | public key sha256: "
        f"{public_key_sha256(owner.public_key_pem)} | created: {stamp_time}"
    )
    return f"{text} | tag: {tag}" if tag else text


def watermark_params(
    owner: OwnerKey,
    input_shape: Sequence[int],
    num_classes: int,
    n: int,
    tag: str = "",
    when: datetime | None = None,
) -> dict[str, Any]:
    """Sign a fresh message and derive its watermark; the key's ``params`` entries for it."""
    message = owner_message(owner, tag, when)
    signature = owner.sign(message.encode())
    wm = derive_watermark(signature, input_shape, num_classes, n)
    return {
        "message": message,
        "signature": base64.b64encode(signature).decode("ascii"),
        "watermark": wm.to_json(),
        "derivation": DERIVATION,
    }


def key_watermark(key: Key) -> Watermark:
    try:
        return Watermark.from_json(key.params["watermark"])
    except (KeyError, TypeError, ValueError) as e:
        raise KeyTamperedError(f"the key holds no readable null-embedding watermark ({e})") from e


def check_key(key: Key) -> tuple[Watermark, str]:
    """Li's verification step 1: the signature verifies with the key owner's public key over a
    message naming that owner, and the stored watermark is the one the signature derives.
    Returns the watermark and a sentence saying what was checked; refusals raise KeyTamperedError."""
    if key.owner is None:
        raise KeyTamperedError("this null-embedding key names no owner, so its signature cannot be checked")
    try:
        message = str(key.params["message"])
        signature = base64.b64decode(str(key.params["signature"]), validate=True)
    except (KeyError, ValueError) as e:
        raise KeyTamperedError(f"the key's message or signature is missing or corrupt ({e})") from e
    parse_public(key.owner.public_key_pem, "the key")
    if not verify_signature(key.owner.public_key_pem, message.encode(), signature):
        raise KeyTamperedError(
            f"the watermark signature does not verify with {key.owner.name}'s public key; the key is forged"
        )
    fp = public_key_sha256(key.owner.public_key_pem)
    if (
        not message.startswith(MESSAGE_PREFIX)
        or f"| owner: {key.owner.name} |" not in message
        or fp not in message
    ):
        raise KeyTamperedError(f"the signed message does not name the key's owner {key.owner.name}")
    stored = key_watermark(key)
    derived = derive_watermark(signature, key.input_shape, key.num_classes, stored.n)
    if derived != stored:
        raise KeyTamperedError("the key's pattern, label or position do not follow from its signature")
    return derived, f"watermark derived from {key.owner.name}'s signature over {message!r}"


@torch.no_grad()
def null_rates(model: torch.nn.Module, key: Key, device: str = "cpu") -> tuple[float, float]:
    """(φ_null, φ_true) of a module on the key's probes (for training reports and attacks)."""
    from nnmark.oracle import TorchOracle

    wm = key_watermark(key)
    oracle = TorchOracle(model, device=device)
    _, null_match, true_match = probe_matches(oracle, key.inputs, key.labels, wm, float(key.params["lam"]))
    phi_null = float(null_match.float().mean())
    phi_true = float(true_match.float().mean()) if len(true_match) else math.nan
    return phi_null, phi_true


def probe_matches(
    oracle: Oracle, x: torch.Tensor, y: torch.Tensor, wm: Watermark, lam: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Li's Algorithm 3 on probes ``x`` with true labels ``y`` (3 queries per probe): the clean
    answers F(x), the null matches F(x ⊕ [p, λ]) = F(x) = y, and the true matches
    F(x ⊕ [inv(p), λ]) = y_W over the probes whose label is not y_W."""
    clean = oracle.labels(x)
    null = oracle.labels(stamp(x, wm, lam))
    true = oracle.labels(stamp(x, wm, lam, inverse=True))
    other = y != wm.label
    return clean, (null == clean) & (clean == y), true[other] == wm.label


class DualMixer:
    """Appends, to every batch of B images, round(α·B) images under inv(p) labelled y_W and
    round(β·B) under p keeping their label, weighted so the loss is ℓ + α·ℓ_true + β·ℓ_null.
    With several watermarks the stamped images are shared out among them in turn.

    ``ramp_steps`` > 0 grows every λ geometrically from ``start_factor``·λ to λ over the first
    ``ramp_steps`` batches (a curriculum that makes a large λ trainable, see the module docstring).
    """

    def __init__(
        self,
        watermarks: Sequence[Watermark],
        lams: Sequence[float],
        alpha: float,
        beta: float,
        ramp_steps: int = 0,
        start_factor: float = 1.0,
        decoys: float = 0.0,
        jitter: int = 2,
    ) -> None:
        if not watermarks:
            raise ValueError("no watermark to embed")
        self.watermarks, self.lams, self.alpha, self.beta = list(watermarks), list(lams), alpha, beta
        self.ramp_steps, self.start_factor, self.step = ramp_steps, start_factor, 0
        self.decoys, self.jitter = decoys, jitter

    def factor(self) -> float:
        """The share of the final λ used at the current step."""
        if self.ramp_steps <= 0 or self.step >= self.ramp_steps:
            return 1.0
        return float(self.start_factor ** (1.0 - self.step / self.ramp_steps))

    def _stamped(
        self, x: torch.Tensor, y: torch.Tensor, rate: float, inverse: bool, gen: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        b = len(x)
        m = max(1, min(b, round(rate * b)))
        idx = torch.randperm(b, generator=gen)[:m].to(x.device)
        xs, ys = x[idx].clone(), y[idx].clone()
        k, factor = len(self.watermarks), self.factor()
        for j, (wm, lam) in enumerate(zip(self.watermarks, self.lams, strict=True)):
            sel = torch.arange(j, m, k, device=x.device)
            xs[sel] = stamp(xs[sel], wm, lam * factor, inverse)
            if inverse:
                ys[sel] = wm.label
        return xs, ys, torch.full((m,), rate * b / m, device=x.device)

    def _decoys(
        self, x: torch.Tensor, y: torch.Tensor, gen: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Random-bit stamps near each watermark's position that keep the true label: only inv(p)
        itself may trigger y_W (without them a model answers y_W to any stamp near the spot)."""
        b = len(x)
        m = max(1, min(b, round(self.decoys * b)))
        idx = torch.randperm(b, generator=gen)[:m].to(x.device)
        xs = x[idx].clone()
        _, _, h, w = x.shape
        factor = self.factor()
        for i in range(m):
            j = i % len(self.watermarks)
            wm, lam = self.watermarks[j], self.lams[j]
            dr, dc = (int(v) for v in torch.randint(-self.jitter, self.jitter + 1, (2,), generator=gen))
            bits = tuple(int(v) for v in torch.randint(0, 2, (wm.n * wm.n,), generator=gen))
            row, col = min(max(wm.row + dr, 0), h - wm.n), min(max(wm.col + dc, 0), w - wm.n)
            decoy = Watermark(wm.label, bits, row, col, wm.n)
            xs[i : i + 1] = stamp(xs[i : i + 1], decoy, lam * factor)
        return xs, y[idx].clone(), torch.full((m,), self.decoys * b / m, device=x.device)

    def __call__(
        self, x: torch.Tensor, y: torch.Tensor, gen: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        xt, yt, wt = self._stamped(x, y, self.alpha, True, gen)
        xn, yn, wn = self._stamped(x, y, self.beta, False, gen)
        parts_x, parts_y, parts_w = [x, xt, xn], [y, yt, yn], [torch.ones(len(x), device=x.device), wt, wn]
        if self.decoys > 0:
            xd, yd, wd = self._decoys(x, y, gen)
            parts_x.append(xd)
            parts_y.append(yd)
            parts_w.append(wd)
        self.step += 1
        return torch.cat(parts_x), torch.cat(parts_y), torch.cat(parts_w)


@register_scheme
class NullEmbedding(Scheme):
    """Li 2019 dual (null + true) embedding: pattern, label and position follow from the owner's signature."""

    name: ClassVar[str] = SCHEME_NAME
    Params: ClassVar[type[SchemeParams]] = NullEmbeddingParams
    shared_target: ClassVar[bool] = False
    tests: ClassVar[tuple[str, ...]] = ("binomial", "threshold")
    default_test: ClassVar[str] = "binomial"
    signature_bound: ClassVar[bool] = True
    secret_params: ClassVar[tuple[str, ...]] = ("signature", "watermark")

    def __init__(self, owner: OwnerKey | None = None, **params: Any) -> None:
        super().__init__(owner, **params)
        self.kept: list[Key] = []
        self.continued = False
        #: the time stamp signed into the message (None: now); fixed only for reproducible tests
        self.when: datetime | None = None

    @property
    def p(self) -> NullEmbeddingParams:
        assert isinstance(self.params, NullEmbeddingParams)
        return self.params

    def start_from(self, run: Path) -> None:
        """Continuing an earlier run: keep its null-embedding watermark (if any) in training."""
        from nnmark.keyfile import load_key

        self.continued = True
        if not self.p.keep and (Path(run) / "watermark.key").is_file():
            prior = load_key(run)
            if prior.scheme == SCHEME_NAME:
                self.kept.append(prior)

    def generate(self, data: ImageDataset, gen: torch.Generator) -> KeyMaterial:
        if self.owner is None:
            raise NnmarkError(
                f"{SCHEME_NAME} derives its watermark from the owner's signature: pass --owner STEM.key "
                "(create one with `nnmark keygen --owner NAME --out STEM`)"
            )
        from nnmark.keyfile import load_key

        for path in self.p.keep:
            prior = load_key(path)
            if prior.scheme != SCHEME_NAME:
                raise NnmarkError(f"--set keep: {path} is a {prior.scheme} key, not {SCHEME_NAME}")
            self.kept.append(prior)
        for prior in self.kept:
            check_key(prior)
            if prior.input_shape != data.input_shape:
                raise NnmarkError(f"a kept key is for {prior.input_shape} inputs, not {data.input_shape}")
        extra = watermark_params(
            self.owner, data.input_shape, data.num_classes, self.p.n, self.p.tag, self.when
        )
        n = min(self.p.probes, len(data.test_x))
        idx = torch.randperm(len(data.test_x), generator=gen)[:n]
        probes = data.test_x[idx].float().div(255)
        labels = data.test_y[idx].long().clone()
        return KeyMaterial(
            probes, labels, labels.clone(), params={**extra, "kept": [k.commitment for k in self.kept]}
        )

    def calibration_queries(
        self, inputs: torch.Tensor, labels: torch.Tensor, params: dict[str, Any]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Clean models are calibrated on the null component: probes under p, their true labels."""
        wm = Watermark.from_json(params["watermark"])
        return stamp(inputs, wm, float(params.get("lam", self.p.lam))), labels

    def watermark_accuracy(self, model: torch.nn.Module, key: Key) -> float:
        """min(φ_null, φ_true), the paper's watermark accuracy."""
        return min(null_rates(model, key))

    def metrics(self, model: torch.nn.Module, key: Key) -> dict[str, Any]:
        phi_null, phi_true = null_rates(model, key)
        return {"phi_null": phi_null, "phi_true": phi_true, "kept_watermarks": len(self.kept)}

    def mixer(self, key: Key, total_steps: int = 0) -> DualMixer:  # type: ignore[override]
        """The dual-embedding mixer; with ``total_steps`` known, λ ramps over the first ``ramp`` of them."""
        keys = [key, *self.kept]
        lam = float(key.params["lam"])
        start = self.p.lam_start if self.p.lam_start is not None else lam
        # a trained model (--from) already handles extreme inputs: the ramp is for first training only
        ramp = round(self.p.ramp * total_steps) if start < lam and not self.continued else 0
        return DualMixer(
            [key_watermark(k) for k in keys],
            [float(k.params["lam"]) for k in keys],
            self.p.alpha,
            self.p.beta,
            ramp_steps=ramp,
            start_factor=start / lam,
            decoys=self.p.decoys,
        )

    def embed(
        self, model: torch.nn.Module, data: ImageDataset, key: Key, config: TrainConfig, progress: bool
    ) -> TrainResult:
        """Dual embedding from the first step (Sec. 6.2), λ ramped over the first ``ramp`` of the steps."""
        n, bs = len(data.train_x), min(config.batch_size, len(data.train_x))
        steps = config.epochs * math.ceil(n / bs)
        return train(
            model,
            data.train_x,
            data.train_y,
            config,
            mixer=self.mixer(key, steps),
            progress=progress,
            description=f"embed {self.name}" + (f" (+{len(self.kept)} kept)" if self.kept else ""),
        )

    def chance_rate(self, key: Key) -> tuple[float | None, str]:
        if key.calibration is not None:
            return key.calibration.p0, f"φ_null p0 calibrated on clean models: {key.calibration.method}"
        return None, (
            "no calibration: the binomial test needs a clean model's φ_null rate; run `nnmark calibrate "
            "--key KEY --model CLEAN_RUN...` (or embed with --calibrate N), or use --test threshold "
            "(Li's rule)"
        )

    def verify(self, key: Key, oracle: Oracle, test: str, alpha: float) -> Verdict:
        wm, checked = check_key(key)
        lam = float(key.params["lam"])
        threshold_rate = float(key.params.get("threshold", self.p.threshold))
        if not oracle.carries_any_value:
            return Verdict(
                key.scheme,
                test,
                None,
                math.nan,
                alpha,
                oracle.queries,
                0,
                0,
                None,
                f"{SCHEME_NAME} queries carry pixel values ±{lam:g}, outside [0, 1], and this "
                "transport only carries 0–255 images; nnmark does not clip the stamp (that would "
                "be another query). Verify through --model or --onnx, or a protocol taking floats.",
                (checked,),
            )
        n = len(key.inputs)
        rem = oracle.remaining
        if rem is not None:
            n = min(n, rem // 3)
        if n == 0:
            raise NnmarkError(f"{SCHEME_NAME} needs 3 queries per probe; raise --budget to at least 3")
        x, y = key.inputs[:n], key.labels[:n]
        clean, null_match, true_match = probe_matches(oracle, x, y, wm, lam)
        null_hits, true_hits, n_true = int(null_match.sum()), int(true_match.sum()), len(true_match)
        phi_null = null_hits / n
        phi_true = true_hits / n_true if n_true else 0.0
        passes = phi_null > threshold_rate and phi_true > threshold_rate
        b_true = min(1.0, math.floor(n / true_hits) / key.num_classes) if true_hits else 1.0
        p0, p0_source = self.chance_rate(key)
        p_null = stats.binomial_p_value(null_hits, n, p0) if p0 is not None else math.nan
        p_value = p_null * b_true if p0 is not None else math.nan
        need = math.ceil(threshold_rate * n + 1e-9)
        if p0 is not None:
            need = max(need, stats.binomial_threshold(n, p0, alpha / max(b_true, 1e-300)))
        evidence = {
            "phi_null": phi_null,
            "phi_true": phi_true,
            "probes": n,
            "null_matches": null_hits,
            "true_matches": true_hits,
            "true_probes": n_true,
            "clean_accuracy": float((clean == y).float().mean()),
            "p_null": p_null,
            "p0_null": p0,
            "p0_source": p0_source,
            "b_true": b_true,
            "b_true_source": "bound ⌊N/k⌋/Y: y_W is a hash independent of the model",
            "lam": lam,
            "threshold_rate": threshold_rate,
            "signature": checked,
        }
        rates = f"φ_null {phi_null:.1%} ({null_hits}/{n}), φ_true {phi_true:.1%} ({true_hits}/{n_true})"

        def verdict(found: bool | None, p: float, bound: float | None, why: str) -> Verdict:
            return Verdict(key.scheme, test, found, p, alpha, oracle.queries, null_hits, threshold=need,
                           p0=bound, reason=why, notes=(checked,), evidence=evidence)

        if test == "threshold":
            reason = f"Li's rule: {rates}; both must exceed {threshold_rate:.0%}"
            return verdict(passes, p_value, p0, reason)
        if p0 is None:
            return verdict(None, math.nan, None, p0_source)
        reason = (
            f"{rates}; both must exceed {threshold_rate:.0%} and p = p_null·b_true = "
            f"{p_null:.3g}·{b_true:.3g} ≤ alpha (p0 of φ_null {p0:.3f}, {p0_source})"
        )
        return verdict(passes and p_value <= alpha, p_value, p0, reason)
