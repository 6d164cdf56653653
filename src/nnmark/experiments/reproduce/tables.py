"""Tables beside the papers' published numbers (``nnmark/experiments/papers/*.csv``, transcribed in
``shared/seeds/tables``): paper value, ours as mean ± sd over repeats, the difference; written as
Markdown and CSV."""

from __future__ import annotations

import csv
import functools
import io
import math
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

NOT_YET = "not yet reproduced"
NO_VALUE = "no value (see the records)"
UNCERTAIN_MARKS = ("ORDER-UNCERTAIN", "CONFLICT")


@dataclass(frozen=True)
class PaperValue:
    value: str
    unit: str
    note: str

    @property
    def number(self) -> float | None:
        try:
            return float(self.value)
        except ValueError:
            return None

    @property
    def uncertain(self) -> bool:
        return any(m in self.note for m in UNCERTAIN_MARKS)


@functools.lru_cache(maxsize=8)
def paper_values(paper: str) -> dict[tuple[str, str, str], PaperValue]:
    """(table, row, column) -> the published value of ``paper`` (the seeds' CSV, shipped in the package)."""
    text = resources.files("nnmark.experiments").joinpath("papers", f"{paper}.csv").read_text()
    out = {}
    for r in csv.DictReader(io.StringIO(text)):
        out[(r["table"], r["row"], r["column"])] = PaperValue(r["value"], r["unit"], r["note"])
    return out


@dataclass
class Row:
    """One line of a reproduced table. ``values`` are ours, one per repeat, as fractions for
    percentages (multiplied by 100 when the paper's unit is ``%``) or in the paper's unit otherwise."""

    row: str
    column: str
    values: list[float] = field(default_factory=list)
    paper: tuple[str, str, str] | None = None
    status: str = ""
    note: str = ""
    percent: bool = True


@dataclass
class Table:
    paper: str
    name: str
    title: str
    caption: str
    rows: list[Row] = field(default_factory=list)

    def add(self, row: Row) -> Row:
        self.rows.append(row)
        return row


def mean_sd(values: Sequence[float]) -> tuple[float, float | None]:
    vals = [v for v in values if v is not None and not math.isnan(v)]
    if not vals:
        return math.nan, None
    return statistics.fmean(vals), (statistics.stdev(vals) if len(vals) > 1 else None)


def _fmt(x: float | None, digits: int = 2) -> str:
    if x is None or math.isnan(x):
        return "—"
    return f"{x:.{digits}f}"


@dataclass(frozen=True)
class Line:
    """A row made ready for output (all strings and numbers)."""

    table: str
    row: str
    column: str
    paper: str
    unit: str
    ours_mean: float | None
    ours_sd: float | None
    n: int
    diff: float | None
    status: str
    note: str


def lines(table: Table) -> list[Line]:
    refs = paper_values(table.paper)
    out = []
    for r in table.rows:
        pv = refs.get(r.paper) if r.paper else None
        unit = pv.unit if pv else ("%" if r.percent else "")
        scale = 100.0 if (unit == "%" or (pv is None and r.percent)) else 1.0
        vals = [v * scale for v in r.values if v is not None and not math.isnan(v)]
        mean, sd = mean_sd(vals)
        paper_num = pv.number if pv else None
        diff = mean - paper_num if paper_num is not None and vals else None
        note = r.note
        if pv is not None and pv.uncertain:
            note = (note + "; " if note else "") + "paper value uncertain (see seeds/tables README)"
        status = r.status or ("" if vals else NO_VALUE)
        out.append(
            Line(
                table.name,
                r.row,
                r.column,
                pv.value if pv else "—",
                unit,
                None if math.isnan(mean) else mean,
                sd,
                len(vals),
                diff,
                status,
                note,
            )
        )
    return out


def markdown(table: Table) -> str:
    head = f"### {table.paper} {table.name}: {table.title}\n\n{table.caption}\n\n"
    rows = [
        "| row | column | paper | ours (mean ± sd) | n | ours − paper | note |",
        "|---|---|---|---|---|---|---|",
    ]
    for ln in lines(table):
        unit = "" if ln.unit in ("%", "") else f" {ln.unit}"
        paper = f"{ln.paper}{'%' if ln.unit == '%' and ln.paper != '—' else unit}"
        ours = (
            (ln.status or NO_VALUE) if ln.ours_mean is None else f"{_fmt(ln.ours_mean)} ± {_fmt(ln.ours_sd)}"
        )
        diff = _fmt(ln.diff)
        note = "; ".join(x for x in (ln.status if ln.ours_mean is not None else "", ln.note) if x)
        rows.append(f"| {ln.row} | {ln.column} | {paper} | {ours} | {ln.n} | {diff} | {note} |")
    return head + "\n".join(rows) + "\n"


CSV_FIELDS = (
    "paper",
    "table",
    "row",
    "column",
    "paper_value",
    "unit",
    "ours_mean",
    "ours_sd",
    "n",
    "diff",
    "status",
    "note",
)


def write_csv(tables: Iterable[Table], path: Path) -> None:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(CSV_FIELDS)
    for t in tables:
        for ln in lines(t):
            w.writerow(
                [
                    t.paper,
                    ln.table,
                    ln.row,
                    ln.column,
                    ln.paper,
                    ln.unit,
                    "" if ln.ours_mean is None else f"{ln.ours_mean:.4f}",
                    "" if ln.ours_sd is None else f"{ln.ours_sd:.4f}",
                    ln.n,
                    "" if ln.diff is None else f"{ln.diff:.4f}",
                    ln.status,
                    ln.note,
                ]
            )
    from nnmark.io import atomic_write_bytes

    atomic_write_bytes(path, buf.getvalue().encode())
