"""What the verifier sends a suspect: key queries hidden among cover queries, and a record of all.

Unseen verification (issue "Verify the model behind a real prediction API"): a suspect that can tell
key queries from ordinary traffic can answer them differently (Namba 2019's query modification, a
pixel-statistics filter). :class:`VerifierOracle` wraps any :class:`~nnmark.oracle.Oracle` and

* mixes every batch of key queries with cover queries (``cover_ratio`` covers per key on average,
  drawn by the verifier's CSPRNG from data the verifier names), sends the whole stream in a random
  order and in random batch sizes, and returns the answers to the key queries only;
* records every query sent and the answer received (:class:`QueryRecord`: key or cover, the
  SHA-256 of the input's bytes, the label answered), for the evidence report.

The wrapper counts key queries in ``queries`` (what the tests decide on, and what ``--budget``
caps); ``sent`` counts everything that went to the suspect.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from dataclasses import dataclass, field

import torch

from nnmark.errors import NnmarkError
from nnmark.oracle import Oracle

#: largest batch the stream is cut into (batch sizes are drawn uniformly from 1..this)
MAX_BATCH = 64


@dataclass(frozen=True)
class QueryRecord:
    """One input sent to the suspect: its place in the stream, whether it was a key or a cover
    query, the SHA-256 of its float32 bytes, and the label the suspect answered."""

    position: int
    kind: str
    sha256: str
    answer: int
    batch: int
    time: float


@dataclass
class QueryLog:
    records: list[QueryRecord] = field(default_factory=list)

    @property
    def keys(self) -> int:
        return sum(r.kind == "key" for r in self.records)

    @property
    def covers(self) -> int:
        return sum(r.kind == "cover" for r in self.records)


def input_sha256(x: torch.Tensor) -> str:
    return hashlib.sha256(x.detach().to("cpu", torch.float32).contiguous().numpy().tobytes()).hexdigest()


class VerifierOracle(Oracle):
    """Key queries hidden among cover queries, in random order and batch sizes; every query logged."""

    def __init__(
        self,
        inner: Oracle,
        covers: torch.Tensor | None = None,
        cover_ratio: float = 0.0,
        rng: secrets.SystemRandom | None = None,
        budget: int | None = None,
    ) -> None:
        super().__init__(budget)
        if cover_ratio < 0:
            raise NnmarkError(f"--cover-ratio must be >= 0, got {cover_ratio}")
        if cover_ratio > 0 and (covers is None or len(covers) == 0):
            raise NnmarkError("cover queries need cover images (--cover-data)")
        self.inner, self.covers, self.cover_ratio = inner, covers, cover_ratio
        self.rng = rng or secrets.SystemRandom()
        self.log = QueryLog()
        self.carries_any_value = inner.carries_any_value
        self._batches = 0

    @property
    def sent(self) -> int:
        return len(self.log.records)

    def _cover_count(self, keys: int) -> int:
        """Covers for ``keys`` key queries: ``cover_ratio`` per key on average, the fraction drawn."""
        whole = int(self.cover_ratio * keys)
        return whole + int(self.rng.random() < self.cover_ratio * keys - whole)

    def _predict(self, x: torch.Tensor) -> torch.Tensor:
        n_cover = self._cover_count(len(x)) if self.covers is not None else 0
        parts = [x]
        if n_cover:
            assert self.covers is not None
            pick = torch.tensor([self.rng.randrange(len(self.covers)) for _ in range(n_cover)])
            parts.append(self.covers[pick].to(x.dtype))
        stream = torch.cat(parts)
        order = list(range(len(stream)))
        self.rng.shuffle(order)
        scores: list[torch.Tensor | None] = [None] * len(stream)
        start = 0
        while start < len(order):
            size = self.rng.randint(1, MAX_BATCH) if self.cover_ratio > 0 else len(order)
            idx = order[start : start + size]
            out = self.inner.scores(stream[idx])
            self._batches += 1
            now = time.time()
            for j, i in enumerate(idx):
                scores[i] = out[j]
                self.log.records.append(
                    QueryRecord(
                        len(self.log.records),
                        "key" if i < len(x) else "cover",
                        input_sha256(stream[i]),
                        int(out[j].argmax()),
                        self._batches,
                        now,
                    )
                )
            start += size
        return torch.stack([s for s in scores[: len(x)] if s is not None])


def cover_images(
    key_dataset: str | None, name: str | None, data_dir: str | None, shape: tuple[int, ...]
) -> torch.Tensor:
    """Ordinary inputs of the task for cover queries: the test split of ``name`` (default: the
    dataset the key names), as the verifier loads it; float32 in [0, 1]."""
    from nnmark.data import load_dataset

    chosen = name or key_dataset
    if not chosen or chosen == "own":
        raise NnmarkError("cover queries need data of the suspect's task: pass --cover-data DATASET")
    data = load_dataset(chosen, data_dir)
    if tuple(data.input_shape) != tuple(shape):
        raise NnmarkError(f"--cover-data {chosen} has {data.input_shape} images, the key {tuple(shape)}")
    return data.test_x.float().div(255)
