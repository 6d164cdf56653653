"""Turn a suspect's answers to key queries into a :class:`~nnmark.types.Verdict`."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from nnmark import keysecret
from nnmark.errors import KeyTamperedError, NnmarkError
from nnmark.oracle import Oracle
from nnmark.types import Key, Verdict
from nnmark.verify import stats
from nnmark.verify.context import CLAIMANT, PROTOCOL, VERIFIER, VerifyContext, guarantee, number

if TYPE_CHECKING:
    from nnmark.data.base import ImageDataset
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
    *,
    context: VerifyContext | None = None,
    probe_data: ImageDataset | str | None = None,
    references: Sequence[tuple[torch.nn.Module, str]] = (),
    judge: bool = False,
) -> Verdict:
    """Decide whether the model behind ``oracle`` carries the watermark of ``key``.

    The key's bytes, signature and secret are checked first (a tampered key raises
    :class:`~nnmark.errors.KeyTamperedError`); the scheme's protocol then fixes the test's
    parameters, and ``context`` (or ``probe_data``, ``references``, ``judge``) carries the
    verifier's own choices (see :mod:`nnmark.verify.context`). ``budget`` caps the single inputs
    sent. The verdict's ``watermarked`` is None when no verdict is possible.
    """
    from nnmark.schemes import SCHEMES

    if not 0 < alpha < 1:
        raise NnmarkError(f"--alpha must be between 0 and 1, got {alpha}")
    ctx = context or VerifyContext(probe_data=probe_data, references=references, judge=judge)
    ctx.alpha = alpha
    check_integrity(key)
    scheme_cls = SCHEMES.get(key.scheme)
    scheme = scheme_cls(**{k: v for k, v in key.params.items() if k in scheme_cls.Params.model_fields})
    test = test or scheme.default_test
    if test not in scheme.tests:
        raise NnmarkError(f"scheme {key.scheme} supports --test {', '.join(scheme.tests)}, not {test}")
    if budget is not None:
        oracle.budget = oracle.queries + budget
    off_protocol = protocol_mismatch(scheme, key)
    if off_protocol:
        verdict = Verdict(key.scheme, test, None, math.nan, alpha, oracle.queries, 0, 0, reason=off_protocol)
    else:
        verdict = scheme.verify(key, oracle, test, ctx)
    decided = {"alpha": number(alpha, VERIFIER, "chosen by whoever runs the verification (--alpha)")}
    decided["test"] = number(test, VERIFIER if test != scheme.default_test else PROTOCOL)
    decided["protocol"] = number(f"{key.scheme} v{scheme.protocol_version}", PROTOCOL)
    decided.update(verdict.decided_by)
    notes = [*verdict.notes, *ctx.notes, *identity_notes(key, scheme.signature_bound)]
    if keysecret.is_guessable(key):
        notes.append(
            "the key was made from a key seed (--key-seed, research only): anyone can regenerate it, so this "
            "verdict proves nothing about ownership"
        )
    return replace(
        verdict,
        notes=tuple(notes),
        decided_by=decided,
        guarantee=verdict.guarantee or guarantee(alpha, None),
    )


def check_integrity(key: Key) -> None:
    """Refuse a key that names an owner without a valid signature, or whose secret does not check out."""
    if key.owner is not None and not key.signed:
        raise KeyTamperedError(
            f"the key names owner {key.owner.name!r} but carries no valid signature: it was altered (a key "
            "that names an owner must be signed by that owner)"
        )
    keysecret.key_secret(key)


def protocol_mismatch(scheme: Scheme, key: Key) -> str:
    """Why the key cannot be judged under its scheme's protocol ("" when it can)."""
    version = key.params.get("protocol")
    if version != scheme.protocol_version:
        return (
            f"the key was made for protocol v{version} of {key.scheme}; this nnmark verifies "
            f"v{scheme.protocol_version}: embed again"
        )
    for name in scheme.protocol_fixed:
        want = scheme.Params.model_fields[name].default
        if name in key.params and key.params[name] != want:
            return (
                f"the key sets {name}={key.params[name]!r}, but protocol v{scheme.protocol_version} of "
                f"{key.scheme} fixes {name}={want!r}: a key with research settings cannot be judged"
            )
    return ""


def identity_notes(key: Key, signature_bound: bool) -> list[str]:
    if key.owner is None:
        return ["unsigned key: it proves nothing about who made it (embed with --owner STEM.key)"]
    if signature_bound:
        return [
            f"signed by {key.owner.name}; the watermark follows from {key.owner.name}'s signature over a "
            f"message naming {key.owner.name}, so no one else can have made it (the time in the message is "
            "the signer's own claim)"
        ]
    return [
        f"signed by {key.owner.name}; the key material follows from {key.owner.name}'s signature, and a "
        f"signature proves who, not when: priority rests on when commitment {key.commitment[:16]}… "
        "was published"
    ]


def _budgeted(oracle: Oracle, n: int) -> int:
    rem = oracle.remaining
    return n if rem is None else max(0, min(n, rem))


def _no_verdict(key: Key, test: str, ctx: VerifyContext, oracle: Oracle, why: str, **kw: Any) -> Verdict:
    return Verdict(key.scheme, test, None, math.nan, ctx.alpha, oracle.queries, 0, 0, reason=why, **kw)


def match_verdict(scheme: Scheme, key: Key, oracle: Oracle, test: str, ctx: VerifyContext) -> Verdict:
    """Verdicts for keys judged by how many answers equal the key labels.

    Keys are sent in an order the verifier draws; p0 comes from :meth:`VerifyContext.chance_rate`;
    "found" needs p ≤ α, "not found" needs a test with power (:func:`stats.decide_binomial`).
    """
    material = scheme.verification_keys(key, ctx)
    chance = ctx.chance_rate(key, material.inputs, material.labels, scheme.exact_chance_rate(key))
    decided = {
        "p0": number(chance.p0, chance.source, chance.how),
        "key inputs": number(len(material.inputs), material.inputs_source, material.how),
        "key labels": number(material.labels_source, material.labels_source),
        "query order": number("random", VERIFIER, "drawn by the verifier's CSPRNG"),
        "weak watermark ruled out by 'not found'": number(
            stats.weak_rate(chance.p0) if chance.p0 is not None else None,
            PROTOCOL,
            f"'not found' only when a watermark at this key accuracy is rejected at {stats.POWER_BETA}",
        ),
    }
    notes = tuple(material.notes)
    if chance.source == CLAIMANT:
        notes += (
            "p0 from the claimant's calibration: a judge should rerun with --judge --reference RUN... "
            "(clean models the judge names)",
        )
    if chance.p0 is None:
        return _no_verdict(key, test, ctx, oracle, chance.how, notes=notes, decided_by=decided)
    order = ctx.permutation(len(material.inputs))
    inputs, labels = material.inputs[order], material.labels[order]
    if test == "sprt":
        verdict = _sprt(key, oracle, ctx, inputs, labels, chance.p0)
    else:
        n = min(len(inputs), ZHANG_QUERIES) if test == "threshold" else len(inputs)
        n = _budgeted(oracle, n)
        if n == 0:
            raise NnmarkError("the query budget allows no query; raise --budget")
        matches = int((oracle.labels(inputs[:n]) == labels[:n]).sum())
        decision = stats.decide_binomial(matches, n, chance.p0, ctx.alpha)
        reason = (
            f"{matches}/{n} key answers match; a model never trained on the keys matches at most "
            f"{chance.p0:.3f} of them ({chance.source}: {chance.how})"
        )
        found = decision.watermarked
        if test == "threshold":
            rule = stats.zhang_threshold_found(matches, n, ZHANG_TAU)
            decided["tau"] = number(ZHANG_TAU, PROTOCOL, f"Zhang 2018: at most {ZHANG_TAU:.0%} may miss")
            reason = (
                f"Zhang's threshold rule ({'met' if rule else 'not met'}) and the binomial test: {reason}"
            )
            if found and not rule:
                found = False
        verdict = Verdict(
            key.scheme,
            test,
            found,
            decision.p_value,
            ctx.alpha,
            oracle.queries,
            matches,
            threshold=decision.threshold,
            p0=chance.p0,
            reason=decision.why or reason,
            evidence={"match_rate": matches / n},
        )
    decided["threshold"] = number(
        verdict.threshold, PROTOCOL, "smallest match count whose p-value is <= alpha"
    )
    return replace(
        verdict,
        notes=notes + verdict.notes,
        decided_by={**decided, **verdict.decided_by},
        guarantee=guarantee(ctx.alpha, chance),
    )


def _sprt(
    key: Key, oracle: Oracle, ctx: VerifyContext, inputs: torch.Tensor, labels: torch.Tensor, p0: float
) -> Verdict:
    """Wald's SPRT for an early "found"; a lower crossing or running out of keys never says "not found"
    by itself: the remaining keys are sent and the fixed binomial test decides on every key sent.
    Each part runs at alpha/2, so the whole keeps the false-accusation rate at alpha."""
    half = ctx.alpha / 2
    test = stats.Sprt(p0=p0, p1=max(SPRT_P1, p0 + 0.05), alpha=half)
    answers: list[bool] = []
    decision: bool | None = None
    for i in range(len(inputs)):
        if oracle.remaining is not None and oracle.remaining <= 0:
            break
        answer = oracle.labels(inputs[i : i + 1])
        answers.append(bool(answer[0] == labels[i]))
        decision = test.update(answers[-1])
        if decision is not None:
            break
    evidence: dict[str, Any] = {
        "log_likelihood_ratio": test.llr,
        "boundary": test.upper,
        "sprt_stopped_at": test.n,
    }
    if decision is True:
        p_value = min(1.0, math.exp(-test.llr))  # Ville's inequality
        reason = (
            f"Wald SPRT (p0 {p0:.3f} vs p1 {test.p1:.2f}, each part at alpha/2) crossed its upper boundary "
            f"after {test.n} queries with {test.matches} matches"
        )
        return Verdict(
            key.scheme,
            "sprt",
            True,
            p_value,
            ctx.alpha,
            oracle.queries,
            test.matches,
            threshold=0,
            p0=p0,
            reason=reason,
            evidence=evidence,
        )
    rest = _budgeted(oracle, len(inputs) - len(answers))
    if rest:
        start = len(answers)
        more = oracle.labels(inputs[start : start + rest])
        answers.extend(bool(a) for a in (more == labels[start : start + rest]).tolist())
    n, matches = len(answers), sum(answers)
    fixed = stats.decide_binomial(matches, n, p0, half)
    why = "crossed its lower boundary" if decision is False else "ran out of keys or budget"
    reason = fixed.why or (
        f"Wald SPRT {why} after {test.n} queries; the fixed binomial test on all {n} keys sent "
        f"(at alpha/2): {matches} matches, p0 {p0:.3f}"
    )
    return Verdict(
        key.scheme,
        "sprt",
        fixed.watermarked,
        fixed.p_value,
        ctx.alpha,
        oracle.queries,
        matches,
        threshold=fixed.threshold,
        p0=p0,
        reason=reason,
        evidence=evidence,
    )


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
