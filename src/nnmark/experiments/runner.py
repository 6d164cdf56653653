"""Run a grid's cells: on local processes (one per core, one torch thread each) or on Ray.

The driver (this process) skips cells whose record says ``ok`` (resume), hands the others to the
backend, writes each record as it comes back (atomically, so an interrupted grid keeps every
finished cell) and shows a rich progress bar with cells done, failed and the time left. Workers
only compute records; they never write, so a Ray cluster needs no shared filesystem and the
records are the same whatever backend ran them.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nnmark.choices import GRID_BACKENDS
from nnmark.errors import NnmarkError
from nnmark.experiments.cells import run_cell
from nnmark.experiments.grid import Cell, cell_id
from nnmark.experiments.records import FAILED, finished_ids, write_record

BACKENDS = tuple(GRID_BACKENDS.names())
#: imported once by the fork server, so that every worker starts with them
PRELOAD = ("torch", "nnmark.experiments.cells", "nnmark.workflow", "nnmark.attacks", "nnmark.verify.verifier")


@dataclass
class GridReport:
    total: int
    skipped: int
    ran: int = 0
    failed: list[str] = field(default_factory=list)
    records: list[dict[str, Any]] = field(default_factory=list)


def default_workers() -> int:
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1))


def _init_worker() -> None:
    import torch

    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)


def _local(cells: Sequence[Cell], workers: int, device: str) -> Iterator[dict[str, Any]]:
    """Records in completion order; ``workers`` = 0 runs the cells in this process, one by one."""
    if workers == 0:
        for cell in cells:
            yield run_cell(cell, device)
        return
    import multiprocessing as mp

    # forkserver: workers fork from a clean server process that imported torch and nnmark once (never
    # from the driver, whose threads and torch state they must not inherit); spawn where there is none
    ctx: Any
    if "forkserver" in mp.get_all_start_methods():
        ctx = mp.get_context("forkserver")
        ctx.set_forkserver_preload([*PRELOAD])
    else:
        ctx = mp.get_context("spawn")
    pool = ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init_worker)
    pending: set[Future[dict[str, Any]]] = set()
    try:
        pending = {pool.submit(run_cell, c, device) for c in cells}
        while pending:
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            for f in done:
                yield f.result()
    finally:  # interrupted: drop the cells not started; finished records are already written
        pool.shutdown(wait=not pending, cancel_futures=True)


def _ray(cells: Sequence[Cell], workers: int, address: str | None, device: str) -> Iterator[dict[str, Any]]:
    """Records from Ray tasks (one CPU, one torch thread each); a local Ray instance with
    ``workers`` CPUs when no ``address`` is given."""
    import ray  # run_cells checked the extra (check_backend)

    started = False
    if not ray.is_initialized():
        if address:
            ray.init(address=address, log_to_driver=False)
        else:
            ray.init(num_cpus=max(1, workers), include_dashboard=False, log_to_driver=False)
        started = True
    try:
        remote = ray.remote(num_cpus=1, runtime_env={"env_vars": {"OMP_NUM_THREADS": "1"}})(run_cell)
        pending = [remote.remote(c, device) for c in cells]
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            for ref in done:
                yield ray.get(ref)
    finally:
        if started:
            ray.shutdown()


def check_backend(backend: str) -> None:
    """Refuse an unknown backend, or one whose extra is not installed (one line naming the extra),
    before anything is written."""
    if backend not in BACKENDS:
        raise NnmarkError(f"unknown backend {backend!r}; use {' or '.join(BACKENDS)}")
    extra = GRID_BACKENDS.get(backend)
    if extra is not None:
        from nnmark.extras import require_all

        require_all(extra)


def run_cells(
    cells: Sequence[Cell],
    results: str | Path,
    *,
    backend: str = "local",
    workers: int | None = None,
    address: str | None = None,
    progress: bool = True,
    title: str = "grid",
    on_record: Callable[[dict[str, Any]], None] | None = None,
    device: str = "cpu",
) -> GridReport:
    """Run every cell of ``cells`` not yet finished in ``results`` and write its record there, the
    cells' models trained on ``device`` (on one GPU, each worker process trains its cells there:
    several small models at once).

    A cell whose record says ``ok`` is never run again; a failed one is run again. A failing cell
    is recorded with its error and the others go on.
    """
    check_backend(backend)
    from nnmark.training import resolve_device

    resolve_device(device)  # an unknown or absent device: one line, before anything is written
    results = Path(results)
    results.mkdir(parents=True, exist_ok=True)
    done = finished_ids(results)
    todo = [c for c in cells if cell_id(c) not in done]
    report = GridReport(total=len(cells), skipped=len(cells) - len(todo))
    if workers is None:
        workers = default_workers()
    workers = min(workers, len(todo)) if workers else 0
    stream = _ray(todo, workers, address, device) if backend == "ray" else _local(todo, workers, device)
    bar = _Progress(progress, title, len(cells), report.skipped)
    try:
        for record in stream:
            write_record(results, record)
            report.ran += 1
            report.records.append(record)
            if record["status"] == FAILED:
                report.failed.append(record["id"])
            bar.advance(record["status"] == FAILED)
            if on_record is not None:
                on_record(record)
    finally:
        bar.close()
    return report


class _Progress:
    """Cells done / total, failed, elapsed and time left (rich; silent when ``enabled`` is false)."""

    def __init__(self, enabled: bool, title: str, total: int, skipped: int) -> None:
        self.failed = 0
        self.progress = None
        if not enabled:
            return
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self.progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("cells · [red]{task.fields[failed]} failed[/] · {task.fields[skipped]} resumed"),
            TimeElapsedColumn(),
            TextColumn("left"),
            TimeRemainingColumn(),
        )
        self.task = self.progress.add_task(title, total=total, completed=skipped, failed=0, skipped=skipped)
        self.progress.start()

    def advance(self, failed: bool) -> None:
        self.failed += failed
        if self.progress is not None:
            self.progress.update(self.task, advance=1, failed=self.failed)

    def close(self) -> None:
        if self.progress is not None:
            self.progress.stop()
