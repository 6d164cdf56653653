"""A self-contained HTML evidence report of one verification (``nnmark verify --report``).

Besides the verdict it lists every number that decided it with its source (DESIGN.md, "Who
decides a verdict": ``protocol``, ``verifier``, ``claimant`` or ``suspect``) and the guarantee in
words; when p0 came from the claimant it recommends a judge's run.
"""

from __future__ import annotations

import html
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from scipy.stats import beta as beta_dist

from nnmark.io import atomic_write_bytes
from nnmark.types import Key, Verdict
from nnmark.verify.queries import QueryLog

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


def match_curve_svg(sequence: Sequence[int], p0: float | None, width: int = 640, height: int = 260) -> str:
    """An inline SVG of the key match rate as key queries accumulate, with its 95 % Clopper–Pearson
    band and the chance rate p0: the evidence growing query by query, in one self-contained page."""
    n = len(sequence)
    if n == 0:
        return "<p>No per-key answers were recorded for this test.</p>"
    pad, w, h = 40, width - 50, height - 60

    def xy(i: int, rate: float) -> str:
        return f"{pad + w * i / max(1, n - 1):.1f},{20 + h * (1 - rate):.1f}"

    hits, rates, lows, highs = 0, [], [], []
    for i, a in enumerate(sequence, 1):
        hits += int(a)
        rates.append(hits / i)
        lo = float(beta_dist.ppf(0.025, hits, i - hits + 1)) if hits else 0.0
        hi = float(beta_dist.ppf(0.975, hits + 1, i - hits)) if hits < i else 1.0
        lows.append(lo)
        highs.append(hi)
    band = (
        " ".join(xy(i, v) for i, v in enumerate(highs))
        + " "
        + " ".join(xy(i, v) for i, v in reversed(list(enumerate(lows))))
    )
    line = " ".join(xy(i, v) for i, v in enumerate(rates))
    chance = ""
    if p0 is not None and not math.isnan(p0):
        y = 20 + h * (1 - p0)
        chance = (
            f'<line x1="{pad}" y1="{y:.1f}" x2="{pad + w}" y2="{y:.1f}" stroke="#c00" '
            'stroke-dasharray="5,4"/>'
            f'<text x="{pad + w - 4}" y="{y - 4:.1f}" text-anchor="end" fill="#c00" font-size="12">'
            f"chance rate p0 = {p0:.3f}</text>"
        )
    ticks = "".join(
        f'<text x="{pad - 6}" y="{20 + h * (1 - t) + 4:.1f}" text-anchor="end" font-size="11">{t:.0%}</text>'
        for t in (0, 0.5, 1)
    )
    return (
        f'<svg id="match-curve" xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'role="img" aria-label="key match rate against key queries sent">'
        f'<rect x="{pad}" y="20" width="{w}" height="{h}" fill="#fafafa" stroke="#999"/>{ticks}'
        f'<polygon points="{band}" fill="#9cc3e6" fill-opacity="0.5"/>'
        f'<polyline points="{line}" fill="none" stroke="#1f5f99" stroke-width="2"/>{chance}'
        f'<text x="{pad + w / 2}" y="{height - 12}" text-anchor="middle" font-size="12">key queries sent '
        f"(1 to {n}); line: match rate, band: 95 % Clopper–Pearson interval</text></svg>"
    )


def _queries_table(log: QueryLog | None) -> str:
    if log is None or not log.records:
        return "<p>The queries were not recorded.</p>"
    rows = "\n".join(
        f'<tr class="{r.kind}"><td>{r.position + 1}</td><td>{r.kind}</td><td>{r.batch}</td>'
        f"<td><code>{r.sha256[:16]}</code></td><td>{r.answer}</td></tr>"
        for r in log.records
    )
    return (
        f"<p>{log.keys} key queries and {log.covers} cover queries, in the order sent.</p>"
        f'<details><summary>every query and answer</summary><table id="queries"><tr><th>#</th><th>kind</th>'
        f"<th>batch</th><th>input SHA-256</th><th>answer</th></tr>{rows}</table></details>"
    )


def report_document(
    key: Key, verdict: Verdict, suspect: dict[str, Any] | None = None, log: QueryLog | None = None
) -> dict[str, Any]:
    """The evidence as one JSON document (``--report FILE.json``)."""
    return {
        "verdict": verdict.to_json(),
        "key": {
            "scheme": key.scheme,
            "owner": key.owner.name if key.owner else None,
            "signed": key.signed,
            "commitment": key.commitment,
            "created": key.created,
        },
        "suspect": suspect or {},
        "queries": [r.__dict__ for r in log.records] if log is not None else None,
    }


def render_report(
    key: Key, verdict: Verdict, suspect: dict[str, Any] | None = None, log: QueryLog | None = None
) -> str:
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
    who = "".join(
        f"<tr><th>{html.escape(str(a))}</th><td>{html.escape(_value(b))}</td></tr>"
        for a, b in (suspect or {"suspect": "not described"}).items()
    )
    curve = match_curve_svg(verdict.evidence.get("match_sequence") or [], verdict.p0)
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>nnmark verification report</title>
<style>body{{font-family:sans-serif;max-width:60em;margin:2em auto}}th{{text-align:left;padding-right:1em}}
td{{padding-right:1em;vertical-align:top}}.warn{{background:#fff4d6;padding:.5em}}
pre{{background:#f4f4f4;padding:1em;overflow:auto}}</style></head>
<body><h1>nnmark verification: {html.escape(state[verdict.watermarked])}</h1>
<table>{body}</table>
<h2>The suspect</h2><table id="suspect">{who}</table>
<h2>Evidence as queries accumulate</h2>{curve}
<h2>Who decided each number</h2>
<table><tr><th>number</th><th>value</th><th>source</th><th>how</th></tr>
{decided}</table>
<ul>{legend}</ul>
<p><b>Guarantee:</b> {html.escape(verdict.guarantee or "—")}</p>{judge}
<h2>Reasoning</h2><ul>{notes}</ul>
<h2>Queries sent and answers received</h2>{_queries_table(log)}
<h2>Machine-readable verdict</h2><pre>{evidence}</pre>
</body></html>
"""


def write_report(
    path: str | Path,
    key: Key,
    verdict: Verdict,
    suspect: dict[str, Any] | None = None,
    log: QueryLog | None = None,
) -> None:
    """Write the evidence report: JSON for a ``.json`` path, else one self-contained HTML page."""
    if str(path).lower().endswith(".json"):
        doc = json.dumps(report_document(key, verdict, suspect, log), indent=2, allow_nan=True, default=str)
        atomic_write_bytes(path, doc.encode())
    else:
        atomic_write_bytes(path, render_report(key, verdict, suspect, log).encode())


def describe_suspect(model: Path | None, onnx: Path | None, url: str | None, oracle: Any) -> dict[str, Any]:
    """What identifies the suspect in a report: a file's SHA-256, or the URL and the server's metadata."""
    import hashlib

    def sha256(path: Path) -> str:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        return h.hexdigest()

    if model is not None:
        weights = Path(model) / "model.safetensors"
        return {"kind": "run folder", "path": str(model), "model.safetensors SHA-256": sha256(weights)}
    if onnx is not None:
        return {"kind": "ONNX file", "path": str(onnx), "SHA-256": sha256(Path(onnx))}
    out: dict[str, Any] = {"kind": "prediction API", "url": url}
    for attr in ("protocol", "metadata", "server_metadata"):
        value = getattr(oracle, attr, None)
        if value is not None:
            out[attr] = value if isinstance(value, str | int | float) else json.dumps(value, default=str)
    return out
