"""Errors a user can cause. The CLI turns each into one line on stderr and exit status 2."""

from __future__ import annotations


class NnmarkError(Exception):
    """A problem the user can fix: the message says what went wrong and how to fix it."""


class KeyTamperedError(NnmarkError):
    """A key file whose bytes or signature do not check out."""


class BudgetExceededError(NnmarkError):
    """An oracle was asked for more queries than its budget allows."""
