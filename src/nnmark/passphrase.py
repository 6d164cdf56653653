"""Passphrases for owner keys come from an environment variable the user names, never from argv."""

from __future__ import annotations

import os

from nnmark.errors import NnmarkError


def passphrase_from_env(variable: str | None) -> bytes | None:
    """The passphrase held in environment variable ``variable`` (None when no variable is named).

    A named variable that is unset or empty is a user error: silently writing an unencrypted key
    would be worse than stopping.
    """
    if not variable:
        return None
    value = os.environ.get(variable)
    if not value:
        raise NnmarkError(f"environment variable {variable} is not set or empty")
    return value.encode()
