"""One verification of a key file, as ``nnmark verify`` runs it: the key's queries hidden among
cover queries when asked (issue 10, "unseen verification"), unspent key inputs first in an owner's
check, and the spent ones recorded in the log beside the key (:mod:`nnmark.verify.spend`).

The command line only parses its options into these arguments and prints what comes back, so a
Python caller verifies exactly as the CLI does.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from nnmark.oracle import Oracle
from nnmark.types import Key, Verdict
from nnmark.verify.context import VerifyContext
from nnmark.verify.queries import VerifierOracle, cover_images
from nnmark.verify.spend import balance, low_balance_warning, record_spent, spent_indices
from nnmark.verify.verifier import verify


@dataclass
class Session:
    """A verification's outcome: the verdict, the oracle that logged every query sent (keys and
    covers, for ``--report``), and warnings for the owner (a low key balance, an unwritable log)."""

    verdict: Verdict
    oracle: VerifierOracle
    warnings: list[str] = field(default_factory=list)


def verify_key_file(
    key_path: str | Path,
    key: Key,
    suspect: Oracle,
    context: VerifyContext,
    *,
    suspect_name: str,
    alpha: float = 1e-6,
    budget: int | None = None,
    test: str | None = None,
    cover_ratio: float = 0.0,
    cover_data: str | None = None,
    data_dir: str | None = None,
    spend_log: bool = True,
) -> Session:
    """Verify ``key`` (read from ``key_path``) against ``suspect``.

    ``cover_ratio`` cover queries per key query, drawn from the test split of ``cover_data``
    (default: the key's dataset), go out with the keys in the verifier's random order and batch
    sizes; only key answers are counted. With ``spend_log`` the key inputs already sent to some
    suspect (``KEY.spent.jsonl``) go last in an owner's check, and this verification's are appended
    to the log under ``suspect_name``."""
    covers = (
        cover_images(str(key.params.get("dataset") or ""), cover_data, data_dir, key.input_shape)
        if cover_ratio > 0
        else None
    )
    oracle = VerifierOracle(suspect, covers, cover_ratio, context.rng)
    if spend_log:
        context.spent = spent_indices(key_path, key)
    verdict = verify(key, oracle, alpha=alpha, budget=budget, test=test, context=context)
    session = Session(verdict, oracle)
    if spend_log and context.sent_keys:
        try:
            record_spent(key_path, key, suspect_name, context.sent_keys)
            warning = low_balance_warning(balance(key_path, key), len(context.sent_keys))
        except OSError as e:
            warning = f"the spent-key log beside {key_path} could not be written ({e})"
        if warning:
            session.warnings.append(warning)
    return session
