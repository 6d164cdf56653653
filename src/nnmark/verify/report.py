"""A self-contained HTML evidence report of one verification (``nnmark verify --report``)."""

from __future__ import annotations

import html
import json
from pathlib import Path

from nnmark.io import atomic_write_bytes
from nnmark.types import Key, Verdict


def render_report(key: Key, verdict: Verdict) -> str:
    state = {True: "watermark found", False: "watermark not found", None: "no verdict possible"}
    rows = [
        ("scheme", key.scheme),
        ("test", verdict.test),
        ("verdict", state[verdict.watermarked]),
        ("p-value", f"{verdict.p_value:.4g}"),
        ("alpha (false-accusation bound)", f"{verdict.alpha:g}"),
        ("queries sent", str(verdict.queries)),
        ("matches", str(verdict.matches)),
        ("matches needed", str(verdict.threshold)),
        ("chance rate p0", "—" if verdict.p0 is None else f"{verdict.p0:.4f}"),
        ("key owner", key.owner.name if key.owner else "unsigned"),
        ("key commitment (SHA-256)", key.commitment),
        ("key created", key.created),
    ]
    if key.calibration is not None:
        rates = ", ".join(f"{r:.3f}" for r in key.calibration.rates)
        rows.append(("clean-model match rates", rates))
    body = "\n".join(f"<tr><th>{html.escape(a)}</th><td>{html.escape(b)}</td></tr>" for a, b in rows)
    notes = "".join(f"<li>{html.escape(n)}</li>" for n in (verdict.reason, *verdict.notes) if n)
    evidence = html.escape(json.dumps(verdict.to_json(), indent=2, default=str))
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>nnmark verification report</title>
<style>body{{font-family:sans-serif;max-width:50em;margin:2em auto}}th{{text-align:left;padding-right:1em}}
pre{{background:#f4f4f4;padding:1em;overflow:auto}}</style></head>
<body><h1>nnmark verification: {html.escape(state[verdict.watermarked])}</h1>
<table>{body}</table><h2>Reasoning</h2><ul>{notes}</ul><h2>Machine-readable verdict</h2><pre>{evidence}</pre>
</body></html>
"""


def write_report(path: str | Path, key: Key, verdict: Verdict) -> None:
    atomic_write_bytes(path, render_report(key, verdict).encode())
