"""``nnmark grid run FILE.yaml`` and ``nnmark reproduce PAPER``: the experiment harness's commands
(a typer sub-app and one command, registered in :mod:`nnmark.cli` by :func:`register`)."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, TypeAlias

import typer
from rich.console import Console

from nnmark.choices import GRID_BACKENDS, PAPERS, REPRODUCTION_SCALES, registry_enum

out = Console(highlight=False, soft_wrap=True)
grid_app = typer.Typer(
    help="Run experiment grids (YAML) and keep one JSON record per cell.", no_args_is_help=True
)


if TYPE_CHECKING:
    Backend: TypeAlias = StrEnum
    Paper: TypeAlias = StrEnum
    ScaleName: TypeAlias = StrEnum
else:  # the choices are the library's registries (nnmark.choices)
    Backend = registry_enum("Backend", GRID_BACKENDS)
    Paper = registry_enum("Paper", PAPERS)
    ScaleName = registry_enum("ScaleName", REPRODUCTION_SCALES)


BackendOpt = Annotated[Backend, typer.Option(help="local processes or a Ray cluster (needs the ray extra)")]
WorkersOpt = Annotated[
    int | None, typer.Option(help="worker processes (default: one per core; 0 = in this process)")
]
AddressOpt = Annotated[
    str | None, typer.Option(help="Ray cluster address (default: start a local Ray instance)")
]
DeviceOpt = Annotated[
    str,
    typer.Option(
        help="where the cells' models train: cpu, cuda, cuda:N or auto (on one GPU every worker "
        "process trains there, several small models at once); not part of a cell's id"
    ),
]


@grid_app.command("run")
def grid_run(
    file: Annotated[Path, typer.Argument(help="grid YAML (axes, defaults, include)")],
    results: Annotated[Path, typer.Option("--results", help="folder of JSON records (resumes)")] = Path(
        "results"
    ),
    backend: BackendOpt = Backend("local"),
    workers: WorkersOpt = None,
    address: AddressOpt = None,
    device: DeviceOpt = "cpu",
    dry_run: Annotated[bool, typer.Option("--dry-run", help="list the cells and exit")] = False,
) -> None:
    """Expand FILE into cells and run those without an "ok" record in --results (failed ones run again).

    Example: nnmark grid run experiments/zhang-attacks.yaml --results results/zhang --workers 2
    """
    from nnmark.experiments.cells import check_cells
    from nnmark.experiments.grid import cell_id, expand, load_grid

    spec = load_grid(file)
    cells = expand(spec)
    check_cells(cells)  # an unknown task or setting: one line, exit 2, before --results is made
    if dry_run:
        for c in cells:
            out.print(f"{cell_id(c)}  {c}", markup=False)
        out.print(f"{len(cells)} cells")
        return
    from nnmark.experiments.runner import check_backend, run_cells

    check_backend(backend.value)  # a missing extra: one line, before --results is made
    report = run_cells(
        cells,
        results,
        backend=backend.value,
        workers=workers,
        address=address,
        title=spec.name,
        device=device,
    )
    out.print(
        f"{spec.name}: {report.total} cells, {report.skipped} already done, {report.ran} run, "
        f"{len(report.failed)} failed; records in {results}"
    )
    for cid in report.failed:
        rec = next(r for r in report.records if r["id"] == cid)
        out.print(f"  failed {cid}: {rec.get('error', '')}", markup=False)
    if report.failed:
        raise typer.Exit(1)


def reproduce(
    paper: Annotated[Paper, typer.Argument(help="which paper's tables and figures")],
    out_dir: Annotated[Path, typer.Option("--out", help="folder for tables, figures and records")],
    quick: Annotated[bool, typer.Option("--quick", help="the reduced grid (2 CPU cores, minutes)")] = False,
    scale: Annotated[
        ScaleName | None,
        typer.Option(
            help="; ".join(f"{n}: {REPRODUCTION_SCALES.get(n)}" for n in REPRODUCTION_SCALES.names())
            + " (overrides --quick)"
        ),
    ] = None,
    repeats: Annotated[int | None, typer.Option(help="repeats (seeds) per setting")] = None,
    data_dir: Annotated[
        str | None, typer.Option("--data-dir", help="folder with fashion-mnist etc. (default $NNMARK_DATA)")
    ] = None,
    backend: BackendOpt = Backend("local"),
    workers: WorkersOpt = None,
    address: AddressOpt = None,
    device: DeviceOpt = "cpu",
) -> None:
    """Reproduce a paper's tables (Markdown, CSV) and figures (PNG) beside its published numbers.

    Records go to OUT/records (an interrupted run resumes). Example:
    nnmark reproduce zhang2018 --quick --out results/zhang2018
    """
    from nnmark.experiments.reproduce import run_reproduction

    name = scale.value if scale is not None else ("quick" if quick else "cpu")
    written = run_reproduction(
        paper.value,
        out_dir,
        scale=name,
        repeats=repeats,
        data_dir=data_dir,
        backend=backend.value,
        workers=workers,
        address=address,
        device=device,
    )
    for path in written:
        out.print(f"wrote {path}", markup=False)


def register(app: typer.Typer) -> None:
    """Add ``grid`` and ``reproduce`` to the main CLI."""
    app.add_typer(grid_app, name="grid")
    app.command("reproduce")(reproduce)
