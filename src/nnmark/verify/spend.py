"""Keys are spent, not reused: a log beside the key file of which key inputs went to which suspect.

A key input once sent to a suspect is known to whoever runs it: a thief who logs queries can
teach the stolen model to answer it otherwise, or show it to a court as "public". So every
verification records, in ``watermark.key.spent.jsonl`` beside the key (never in the signed key,
whose bytes must not change), the indices of the key inputs it sent, to which suspect and when;
later verifications send unspent key inputs first (:meth:`VerifyContext.permutation` with
``spent``), and the owner is warned when few remain. ``nnmark key info`` shows the balance.
Schemes whose verifier draws fresh keys each time (Zhong's patterns on verifier-drawn probes, Li's
null embedding) spend nothing.

The log is the owner's bookkeeping, not evidence. It is an unsigned file beside the key, so a
judge's run (``--judge``) never lets it order the queries: whoever writes it chooses which keys an
SPRT, the threshold test's 40 or a budget see first (hostile review 8: a forger who listed every key
an innocent suspect misses as spent got "found"). In an owner's check it orders them, and the
verdict names the order as the claimant's (:meth:`~nnmark.verify.context.VerifyContext.spend_orders`).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from nnmark.errors import NnmarkError
from nnmark.types import Key

SUFFIX = ".spent.jsonl"


def spend_log_path(key_path: str | Path) -> Path:
    """The log beside the key file (``key_path`` may be the run folder holding ``watermark.key``)."""
    path = Path(key_path)
    if path.is_dir():
        path = path / "watermark.key"
    return path.with_name(path.name + SUFFIX)


def spent_indices(key_path: str | Path, key: Key) -> frozenset[int]:
    """Key inputs of ``key`` already sent to some suspect (entries of other keys are ignored)."""
    path = spend_log_path(key_path)
    if not path.is_file():
        return frozenset()
    spent: set[int] = set()
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
        except json.JSONDecodeError as e:
            raise NnmarkError(f"{path} line {number} is not JSON ({e}); fix or remove the line") from e
        if entry.get("commitment") == key.commitment:
            spent.update(int(i) for i in entry.get("indices", []) if 0 <= int(i) < len(key.inputs))
    return frozenset(spent)


def record_spent(key_path: str | Path, key: Key, suspect: str, indices: list[int]) -> Path:
    """Append one verification's spent key inputs to the log (one JSON line, flushed to disk)."""
    path = spend_log_path(key_path)
    entry = {
        "time": datetime.now(UTC).isoformat(timespec="seconds"),
        "commitment": key.commitment,
        "suspect": suspect,
        "indices": sorted(int(i) for i in indices),
    }
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(entry) + "\n")
        f.flush()
        os.fsync(f.fileno())
    return path


@dataclass(frozen=True)
class Balance:
    total: int
    spent: int

    @property
    def unspent(self) -> int:
        return self.total - self.spent

    def __str__(self) -> str:
        return f"{self.unspent} of {self.total} keys unspent"


def balance(key_path: str | Path, key: Key) -> Balance:
    return Balance(len(key.inputs), len(spent_indices(key_path, key)))


def low_balance_warning(after: Balance, per_verification: int) -> str | None:
    """A warning when fewer unspent key inputs remain than one more verification sends."""
    if per_verification and after.unspent < per_verification:
        return (
            f"{after}, fewer than one verification sends ({per_verification}): later "
            "verifications reuse spent key inputs, which a suspect that logs queries may have seen; "
            "embed a fresh key for new suspects"
        )
    return None
