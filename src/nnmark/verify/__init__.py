"""Verification: statistics and verdicts from a suspect's predictions only; never trains."""

from nnmark.verify.verifier import verify

__all__ = ["verify"]
