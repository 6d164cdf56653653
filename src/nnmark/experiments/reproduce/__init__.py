"""``nnmark reproduce PAPER``: run a paper's grid and write its tables (Markdown, CSV) and figures
(PNG) beside the published numbers. Records live in ``OUT/records`` so an interrupted run resumes."""

from __future__ import annotations

import platform
from datetime import UTC, datetime
from pathlib import Path

from nnmark.errors import NnmarkError
from nnmark.experiments.grid import cell_id
from nnmark.experiments.records import iter_records, source_digest
from nnmark.experiments.reproduce.base import Reproduction, Scale, available_datasets, get_scale
from nnmark.experiments.reproduce.tables import markdown, write_csv


def reproductions() -> dict[str, Reproduction]:
    from nnmark.experiments.reproduce.li2019 import Li2019
    from nnmark.experiments.reproduce.namba2019 import Namba2019
    from nnmark.experiments.reproduce.zhang2018 import Zhang2018
    from nnmark.experiments.reproduce.zhong2020 import Zhong2020

    return {r.paper: r for r in (Zhang2018(), Zhong2020(), Li2019(), Namba2019())}


def run_reproduction(
    paper: str,
    out: str | Path,
    *,
    scale: str = "quick",
    repeats: int | None = None,
    data_dir: str | None = None,
    backend: str = "local",
    workers: int | None = None,
    address: str | None = None,
    progress: bool = True,
    device: str = "cpu",
) -> list[Path]:
    """Run ``paper``'s cells (resuming from ``out/records``) and write ``out/PAPER.md``,
    ``out/PAPER.csv`` and its figures; returns the files written."""
    from nnmark.experiments.runner import check_backend, run_cells
    from nnmark.extras import require

    check_backend(backend)  # a missing extra is one line before anything is written
    require("plots", "matplotlib")  # the figures need it: say so before hours of cells, not after
    reps = reproductions()
    if paper not in reps:
        raise NnmarkError(f"unknown paper {paper!r}; use {', '.join(reps)}")
    rep = reps[paper]
    sc = get_scale(scale, repeats)
    datasets, notes = available_datasets(sc, data_dir)
    cells = rep.cells(sc, datasets)
    out = Path(out)
    results = out / "records"
    run_cells(
        cells,
        results,
        backend=backend,
        workers=workers,
        address=address,
        progress=progress,
        title=f"{paper} ({sc.name})",
        device=device,
    )
    ids = {cell_id(c) for c in cells}
    records = [r for r in iter_records(results) if r["id"] in ids]
    return write_outputs(
        rep,
        records,
        sc,
        datasets,
        notes,
        out,
        failed=[r for r in records if r["status"] != "ok"],
        seconds=sum(r.get("timings", {}).get("seconds", 0.0) for r in records),
    )


def write_outputs(
    rep: Reproduction,
    records: list[dict],
    sc: Scale,
    datasets: list,
    notes: list[str],
    out: Path,
    failed: list[dict],
    seconds: float,
) -> list[Path]:
    from nnmark.io import atomic_write_bytes

    tables = rep.tables(records, sc, datasets)
    figures = rep.figures(records, sc, out)
    sources = sorted({str(r.get("versions", {}).get("source", "unknown")) for r in records})
    head = [
        f"## {rep.paper}: {rep.title}",
        "",
        f"Scale `{sc.name}`: {sc.repeats} repeat(s) (seeds) per setting, {sc.epochs} training epoch(s), "
        f"{sc.n_train or 'all'} training / {sc.n_test or 'all'} test images; "
        f"{len(records)} cells ({len(failed)} failed); {seconds / 60:.0f} min of cell time in all; "
        f"python {platform.python_version()}, {datetime.now(UTC).date()}; records made by nnmark code "
        f"{', '.join(sources) or 'none'}, tables by {source_digest()}.",
        "",
        *[f"- {n}" for n in notes],
        "",
    ]
    if len(sources) > 1:
        head.append(
            f"- The records come from {len(sources)} versions of nnmark's code ({', '.join(sources)}): "
            "cells finished before a change were kept on resume; run into an empty folder for one."
        )
    for r in failed:
        head.append(f"- failed cell {r['id']} ({r['config'].get('tags', {})}): {r.get('error', '')}")
    body = "\n".join(head) + "\n" + "\n".join(markdown(t) for t in tables)
    if figures:
        body += "\n" + "\n".join(f"![{p.stem}]({p.name})" for p in figures) + "\n"
    md, csv_path = out / f"{rep.paper}.md", out / f"{rep.paper}.csv"
    atomic_write_bytes(md, body.encode())
    write_csv(tables, csv_path)
    return [md, csv_path, *figures]
