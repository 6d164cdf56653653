"""The lines ``nnmark attack`` prints about an :class:`~nnmark.attacks.run.AttackResult`."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from nnmark.attacks.run import AttackResult


def verdict_word(watermarked: bool | None) -> str:
    return {True: "found", False: "not found", None: "no verdict"}[watermarked]


def _rates(value: Any) -> str:
    return ", ".join(f"{n} {r:.2%}" for n, r in value.items())


def attack_lines(name: str, out_dir: str | Path, result: AttackResult) -> list[str]:
    """What changed: a claim attack's signed key and its before/after metrics, the test accuracy,
    and each key's verdict on the attacked model (with the reason where it decides nothing, and
    always for null embedding, whose verdict needs its explanation)."""
    from nnmark.io import KEY_FILE

    lines = []
    claim = result.claim
    if claim is not None:
        key_file = Path(out_dir) / KEY_FILE
        lines.append(f"{name}: the attacker's key {key_file} is signed by {claim.signer.name!r}")
        for stage in ("before", "after"):
            if isinstance(claim.metrics.get(stage), dict):
                parts = [
                    f"{k} {v:.2%}" if isinstance(v, float) else f"{k} {_rates(v)}"
                    for k, v in claim.metrics[stage].items()
                ]
                lines.append(f"  {stage}: " + "; ".join(parts))
        judged = claim.metrics.get("pirate_verdict")
        if isinstance(judged, dict):  # piracy: the pirate's key as a judge decides it
            for stage in ("before", "after"):
                v = judged.get(stage)
                if isinstance(v, dict):
                    p0 = "" if v.get("p0") is None else f", p0 {v['p0']:.3g} from the {v.get('p0_source')}"
                    lines.append(
                        f"  pirate's verdict {stage} (judge): {v['verdict']} "
                        f"(p-value {v.get('p_value', float('nan')):.3g}{p0})"
                    )
    lines.append(
        f"{name}: test accuracy {result.victim_accuracy:.2%} -> {result.metrics['test_accuracy']:.2%}; "
        f"saved {out_dir}"
    )
    ew = result.metrics.get("ew")
    if isinstance(ew, int | float) and ew > 0:
        lines.append(
            f"  attacked through EW layers at T={ew:g} ({result.metrics.get('ew_source', '--set ew')}; "
            "--set ew=0 attacks the folded weights)"
        )
    for kpath, k, v in result.verdicts:
        state = verdict_word(v.watermarked)
        lines.append(f"  {kpath}: watermark {state} (p-value {v.p_value:.3g}, {v.matches}/{v.queries})")
        if v.watermarked is None or k.scheme == "li-null-embedding":
            lines.append(f"    {v.reason}")
    return lines
