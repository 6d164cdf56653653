"""The verifier's context for a key, with the ``--owner-pub`` check's outcome first among its notes."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from nnmark.types import Key
    from nnmark.verify.context import VerifyContext


def owner_checked_context(
    key_path: str | Path, key: Key, owner_pub: str | Path | None = None, **choices: Any
) -> VerifyContext:
    """:func:`~nnmark.keyfile.verify_context` for ``key``, after checking who signed it.

    The signature is checked first (against ``owner_pub``, the owner's published ``STEM.pub``,
    when given: a key signed by anyone else raises :class:`~nnmark.errors.KeyTamperedError` before
    any query is sent); what was checked leads the context's notes, so every verdict says it.
    ``choices`` are the verifier's own (alpha, judge, references, trust, probe_data, data_dir).
    """
    from nnmark.keyfile import verify_context
    from nnmark.verify.verifier import check_owner

    owner_notes = check_owner(key, owner_pub)
    ctx = verify_context(key_path, key, **choices)
    ctx.notes[:0] = owner_notes
    return ctx
