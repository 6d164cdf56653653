"""Turn a suspect's answers to key queries into a :class:`~nnmark.types.Verdict`."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from nnmark.errors import KeyTamperedError, NnmarkError
from nnmark.oracle import Oracle
from nnmark.types import Calibration, Key, Verdict
from nnmark.verify import stats

if TYPE_CHECKING:
    from nnmark.schemes.base import Scheme

ZHANG_TAU = 0.3
ZHANG_QUERIES = 40
SPRT_P1 = 0.8


def verify(
    key: Key,
    oracle: Oracle,
    alpha: float = 1e-6,
    budget: int | None = None,
    test: str | None = None,
    calibration: Calibration | None = None,
) -> Verdict:
    """Decide whether the model behind ``oracle`` carries the watermark of ``key``.

    ``calibration`` (e.g. from ``calibration.json``) replaces the one made at embed time.
    ``budget`` caps the single inputs sent. The verdict's ``watermarked`` is None when no verdict
    is possible (e.g. a shared-target key that was never calibrated).
    """
    from nnmark.schemes import SCHEMES

    if not 0 < alpha < 1:
        raise NnmarkError(f"--alpha must be between 0 and 1, got {alpha}")
    scheme_cls = SCHEMES.get(key.scheme)
    scheme = scheme_cls(**{k: v for k, v in key.params.items() if k in scheme_cls.Params.model_fields})
    test = test or scheme.default_test
    if test not in scheme.tests:
        raise NnmarkError(f"scheme {key.scheme} supports --test {', '.join(scheme.tests)}, not {test}")
    if budget is not None:
        oracle.budget = oracle.queries + budget
    if calibration is not None:
        key = replace(key, calibration=calibration)
    verdict = scheme.verify(key, oracle, test, alpha)
    notes = list(verdict.notes)
    if not key.signed or key.owner is None:
        named = f" (it names {key.owner.name!r}, but carries no signature)" if key.owner else ""
        notes.append(
            f"unsigned key{named}: it proves nothing about who made it (embed with --owner STEM.key)"
        )
    elif scheme.signature_bound:
        notes.append(
            f"signed by {key.owner.name}; the watermark follows from {key.owner.name}'s signature over a "
            f"message naming {key.owner.name}, so no one else can have made it (the time in the message is "
            "the signer's own claim)"
        )
    else:
        notes.append(
            f"signed by {key.owner.name}; a signature proves who, not when: priority rests on when "
            f"commitment {key.commitment[:16]}… was published"
        )
    return replace(verdict, notes=tuple(notes))


def _budgeted(oracle: Oracle, n: int) -> int:
    rem = oracle.remaining
    return n if rem is None else max(0, min(n, rem))


def match_verdict(scheme: Scheme, key: Key, oracle: Oracle, test: str, alpha: float) -> Verdict:
    """Verdicts for keys judged by how many answers equal the key labels."""
    p0, p0_source = scheme.chance_rate(key)
    n_keys = len(key.inputs)
    if test == "sprt":
        return _sprt(scheme, key, oracle, alpha, p0, p0_source)
    n = min(n_keys, ZHANG_QUERIES) if test == "threshold" else n_keys
    n = _budgeted(oracle, n)
    if n == 0:
        raise NnmarkError("the query budget allows no query; raise --budget")
    answers = oracle.labels(key.inputs[:n])
    matches = int((answers == key.labels[:n]).sum())
    evidence = {"p0_source": p0_source, "match_rate": matches / n}
    if test == "threshold":
        found = stats.zhang_threshold_found(matches, n, ZHANG_TAU)
        p_value = stats.binomial_p_value(matches, n, p0) if p0 is not None else math.nan
        threshold = math.ceil((1 - ZHANG_TAU) * n)
        reason = f"Zhang's threshold test: at most {ZHANG_TAU:.0%} of {n} key answers may miss"
        notes: tuple[str, ...] = ()
        if p0 is None:
            notes = ("the threshold test ignores chance: without calibration no p-value exists",)
        return Verdict(key.scheme, test, found, p_value, alpha, oracle.queries, matches,
                       threshold=threshold, p0=p0, reason=reason, notes=notes, evidence=evidence)
    if p0 is None:
        return Verdict(key.scheme, test, None, math.nan, alpha, oracle.queries, matches,
                       threshold=n + 1, p0=None, reason=p0_source, evidence=evidence)
    p_value = stats.binomial_p_value(matches, n, p0)
    threshold = stats.binomial_threshold(n, p0, alpha)
    reason = (
        f"{matches}/{n} key answers match; a model never trained on the keys matches at most "
        f"{p0:.3f} of them ({p0_source})"
    )
    return Verdict(key.scheme, test, p_value <= alpha, p_value, alpha, oracle.queries, matches,
                   threshold=threshold, p0=p0, reason=reason, evidence=evidence)


def _sprt(scheme: Scheme, key: Key, oracle: Oracle, alpha: float, p0: float | None, src: str) -> Verdict:
    if p0 is None:
        return Verdict(key.scheme, "sprt", None, math.nan, alpha, oracle.queries, 0, 0, None, src)
    test = stats.Sprt(p0=p0, p1=max(SPRT_P1, p0 + 0.05), alpha=alpha)
    decision: bool | None = None
    order = torch.arange(len(key.inputs))
    for i in order.tolist():
        if oracle.remaining is not None and oracle.remaining <= 0:
            break
        answer = oracle.labels(key.inputs[i : i + 1])
        decision = test.update(bool(answer[0] == key.labels[i]))
        if decision is not None:
            break
    # Ville's inequality: under H0 the likelihood ratio exceeds 1/a with probability ≤ a
    p_value = min(1.0, math.exp(-test.llr))
    watermarked = decision if decision is not None else p_value <= alpha
    reason = (
        f"Wald SPRT (p0 {p0:.3f} vs p1 {test.p1:.2f}) stopped after {test.n} queries with "
        f"{test.matches} matches" + ("" if decision is not None else " (keys or budget ran out)")
    )
    # a sequential test has no fixed match count to reach: threshold 0, the boundary is in evidence
    return Verdict(key.scheme, "sprt", watermarked, p_value, alpha, oracle.queries, test.matches,
                   threshold=0, p0=p0, reason=reason,
                   evidence={"p0_source": src, "log_likelihood_ratio": test.llr, "boundary": test.upper})


def check_owner(key: Key, owner_pub: str | Path | None) -> list[str]:
    """Refuse a key not signed by the owner given with ``--owner-pub``; say what was checked."""
    from nnmark import identity

    if owner_pub is None:
        if key.signed and key.owner is not None:
            return [
                f"signature checked against the public key inside the key file ({key.owner.name}); "
                "pass --owner-pub STEM.pub to check it against the owner's published key"
            ]
        return []
    name, pem = identity.load_public(owner_pub)
    if not key.signed or key.owner is None:
        raise KeyTamperedError(f"the key is unsigned, so it cannot be {name}'s (--owner-pub {owner_pub})")
    if not identity.same_public_key(key.owner.public_key_pem, pem):
        raise KeyTamperedError(
            f"the key is signed by {key.owner.name!r}, not by the owner of {owner_pub} ({name!r})"
        )
    return [f"signed by {name}, checked against {owner_pub}"]
