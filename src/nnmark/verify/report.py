"""A self-contained HTML evidence report of one verification (``nnmark verify --report``).

Besides the verdict it lists every number that decided it with its source (DESIGN.md, "Who
decides a verdict": ``protocol``, ``verifier``, ``claimant`` or ``suspect``) and the guarantee in
words; when p0 came from the claimant it recommends a judge's run.
"""

from __future__ import annotations

import html
import json
import math
from pathlib import Path
from typing import Any

from nnmark.io import atomic_write_bytes
from nnmark.types import Key, Verdict

SOURCES = {
    "protocol": "fixed by the scheme's name and protocol version",
    "verifier": "drawn, measured or chosen by whoever verifies",
    "claimant": "supplied by the claimant (the key's owner)",
    "suspect": "taken from the suspect's answers",
}

JUDGE_RUN = (
    "p0 came from the claimant's own calibration: it can be shown, but a judge who trusts neither "
    "party should rerun with <code>nnmark verify --key KEY --model SUSPECT --judge --reference CLEAN_RUN "
    "--reference CLEAN_RUN --reference CLEAN_RUN</code> (at least 3 clean models the judge names) or "
    "with <code>--judge --trust STEM.pub</code> for a calibration signed by someone the judge trusts."
)


def _value(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.4g}"
    return str(value)


def p0_source(verdict: Verdict) -> str | None:
    """The source of the verdict's p0 (``claimant``, ``verifier``, ``protocol``), if it used one."""
    entry = verdict.decided_by.get("p0")
    return str(entry.get("source")) if entry else None


def render_report(key: Key, verdict: Verdict) -> str:
    state = {True: "watermark found", False: "watermark not found", None: "no verdict possible"}
    rows = [
        ("scheme", key.scheme),
        ("test", verdict.test),
        ("verdict", state[verdict.watermarked]),
        ("p-value", f"{verdict.p_value:.4g}"),
        ("alpha (chosen false-accusation level)", f"{verdict.alpha:g}"),
        ("guarantee", verdict.guarantee or "—"),
        ("queries sent", str(verdict.queries)),
        ("matches", str(verdict.matches)),
        ("matches needed", str(verdict.threshold)),
        ("chance rate p0", "—" if verdict.p0 is None else f"{verdict.p0:.4f}"),
        ("p0 from", p0_source(verdict) or "—"),
        ("key owner", key.owner.name if key.owner else "unsigned"),
        ("key commitment (SHA-256)", key.commitment),
        ("key created", key.created),
    ]
    if key.calibration is not None:
        rates = ", ".join(f"{r:.3f}" for r in key.calibration.rates)
        rows.append(("clean-model match rates in the key (claimant's)", rates))
    body = "\n".join(f"<tr><th>{html.escape(a)}</th><td>{html.escape(b)}</td></tr>" for a, b in rows)
    decided = "\n".join(
        "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>".format(
            html.escape(name),
            html.escape(_value(entry.get("value"))),
            html.escape(str(entry.get("source", "?"))),
            html.escape(str(entry.get("how", ""))),
        )
        for name, entry in verdict.decided_by.items()
    )
    legend = "".join(f"<li><b>{html.escape(s)}</b>: {html.escape(d)}</li>" for s, d in SOURCES.items())
    judge = ""
    if p0_source(verdict) == "claimant":
        judge = f"<h2>Recommendation</h2><p class=warn>{JUDGE_RUN}</p>"
    notes = "".join(f"<li>{html.escape(n)}</li>" for n in (verdict.reason, *verdict.notes) if n)
    evidence = html.escape(json.dumps(verdict.to_json(), indent=2, default=str))
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>nnmark verification report</title>
<style>body{{font-family:sans-serif;max-width:60em;margin:2em auto}}th{{text-align:left;padding-right:1em}}
td{{padding-right:1em;vertical-align:top}}.warn{{background:#fff4d6;padding:.5em}}
pre{{background:#f4f4f4;padding:1em;overflow:auto}}</style></head>
<body><h1>nnmark verification: {html.escape(state[verdict.watermarked])}</h1>
<table>{body}</table>
<h2>Who decided each number</h2>
<table><tr><th>number</th><th>value</th><th>source</th><th>how</th></tr>
{decided}</table>
<ul>{legend}</ul>
<p><b>Guarantee:</b> {html.escape(verdict.guarantee or "—")}</p>{judge}
<h2>Reasoning</h2><ul>{notes}</ul><h2>Machine-readable verdict</h2><pre>{evidence}</pre>
</body></html>
"""


def write_report(path: str | Path, key: Key, verdict: Verdict) -> None:
    atomic_write_bytes(path, render_report(key, verdict).encode())
