"""benchmarks/attacks.py's "wm acc" column: every row (unattacked, removal attacks, query defenses)
gives the scheme's own watermark accuracy (``nnmark.attacks.measure.key_accuracy``), asked through
the oracle each row measures — not the match rate on the key's stored inputs, which for
li-null-embedding is one blank placeholder and reads 0.0 on a perfectly watermarked model."""

from __future__ import annotations

import hashlib
import sys
from datetime import UTC, datetime
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from attacks import oracle_verdict  # noqa: E402
from nnmark.attacks.measure import key_accuracy, oracle_key_accuracy  # noqa: E402
from nnmark.data.base import ImageDataset  # noqa: E402
from nnmark.identity import OwnerKey  # noqa: E402
from nnmark.keyfile import key_bytes, parse_key  # noqa: E402
from nnmark.oracle import Oracle, TorchOracle  # noqa: E402
from nnmark.schemes.null_embedding import (  # noqa: E402
    PROTOCOL_PROBES,
    NullEmbedding,
    key_watermark,
)
from nnmark.types import Key, ModelSpec  # noqa: E402
from nnmark.workflow import build_key, prepare_secret  # noqa: E402


def li_key(data: ImageDataset) -> bytes:
    """A signed li-null-embedding key file for mnist5k, made as ``embed`` makes it (reproducible owner)."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    owner = OwnerKey("Alice", Ed25519PrivateKey.from_private_bytes(hashlib.sha256(b"wm-measure").digest()))
    scheme = NullEmbedding(owner=owner)
    scheme.when = datetime(2026, 1, 1, tzinfo=UTC)
    secret, gen = prepare_secret(scheme, owner, 7)
    material = scheme.generate(data, gen)
    spec = ModelSpec("tiny", data.num_classes, data.input_shape, (0.0,), (1.0,), "mnist5k")
    return key_bytes(build_key(scheme, material, spec, None, secret), owner)


class PerfectLi(nn.Module):
    """A model carrying ``key``'s null embedding perfectly on the protocol's probes: it answers a
    probe's true label (also under x ⊕ [p, λ]) and y_W under x ⊕ [inv(p), λ]; the probe is
    recognised by its pixels outside the stamp."""

    def __init__(self, key: Key, x: torch.Tensor, y: torch.Tensor) -> None:
        super().__init__()
        self.wm, self.lam = key_watermark(key), float(key.params["lam"])
        self.outside = torch.ones(x.shape[1:], dtype=torch.bool)
        self.outside[:, self.wm.row : self.wm.row + self.wm.n, self.wm.col : self.wm.col + self.wm.n] = False
        self.x, self.y = x, y
        self.inv = (1 - self.wm.pattern()) * 2 - 1  # inv(p)'s signs

    def forward(self, q: torch.Tensor) -> torch.Tensor:
        d = torch.cdist(q[:, self.outside].flatten(1), self.x[:, self.outside].flatten(1))
        labels = self.y[d.argmin(1)].clone()
        region = q[:, 0, self.wm.row : self.wm.row + self.wm.n, self.wm.col : self.wm.col + self.wm.n]
        inverse = (region.sign() == self.inv) & (region.abs() > 1)
        labels[inverse.all(-1).all(-1)] = self.wm.label
        return torch.nn.functional.one_hot(labels, 10).float()


class Clip(Oracle):
    """A query defense that clips every query to [0, 1] (as JPEG or any 8-bit transport does)."""

    def __init__(self, inner: Oracle) -> None:
        super().__init__(None)
        self.inner = inner

    def _predict(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner.scores(x.clamp(0, 1))


def test_wm_acc_is_the_schemes_own_measure_through_the_oracle(mnist5k: ImageDataset, tmp_path: Path) -> None:
    path = tmp_path / "watermark.key"
    path.write_bytes(li_key(mnist5k))
    key = parse_key(path.read_bytes())
    x, y = mnist5k.test_x[:PROTOCOL_PROBES].float() / 255, mnist5k.test_y[:PROTOCOL_PROBES].long()
    model = PerfectLi(key, x, y)
    stored = float((TorchOracle(model).labels(key.inputs) == key.labels).float().mean())
    assert len(key.inputs) == 1 and stored == 0.0  # the old measure: one blank placeholder
    assert key_accuracy(model, key) == 1.0  # min(φ_null, φ_true): fully embedded
    # the unattacked row and every query-defense row go through oracle_verdict
    _, wm, _ = oracle_verdict(TorchOracle(model), path, mnist5k)
    assert wm == 1.0
    # through a defense, the measure is the defended oracle's: clipping erases the ±λ stamp, so
    # φ_true (and the watermark accuracy) falls to 0 while the model behind it still carries it
    clipped = Clip(TorchOracle(model))
    _, wm_defended, _ = oracle_verdict(clipped, path, mnist5k)
    assert wm_defended == oracle_key_accuracy(Clip(TorchOracle(model)), key) == 0.0
