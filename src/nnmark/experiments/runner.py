"""Run a grid's cells: on local processes (one per core, one torch thread each) or on Ray.

The driver (this process) skips cells whose record says ``ok`` (resume), hands the others to the
backend, writes each record as it comes back (atomically, so an interrupted grid keeps every
finished cell) and shows a rich progress bar with cells done, failed and the time left. Workers
only compute records; they never write, so a Ray cluster needs no shared filesystem and the
records are the same whatever backend ran them.

A cell that kills its worker (a segfault, an out-of-memory kill, ``os._exit``) raises nothing that
:func:`~nnmark.experiments.cells.run_cell` could catch: the local backend's driver sees that worker
die, records that cell alone as failed and starts a fresh worker for the rest (a process pool
would break and lose every cell in flight); Ray's error for that task becomes the cell's record.
"""

from __future__ import annotations

import contextlib
import os
import queue
import signal
import sys
import threading
import time
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import Any

from nnmark.choices import GRID_BACKENDS
from nnmark.errors import NnmarkError
from nnmark.experiments.cells import failed_record, run_cell
from nnmark.experiments.grid import Cell, cell_id
from nnmark.experiments.records import FAILED, finished_ids, write_record

BACKENDS = tuple(GRID_BACKENDS.names())
#: imported once by the fork server, so that every worker starts with them
PRELOAD = (
    "torch",
    "nnmark.experiments.runner",
    "nnmark.workflow",
    "nnmark.attacks",
    "nnmark.verify.verifier",
)


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


def _local(cells: Sequence[Cell], workers: int, device: str) -> Generator[dict[str, Any], None, None]:
    """Records in completion order; ``workers`` = 0 runs the cells in this process, one by one.

    Each worker process runs one cell at a time, so a worker that dies names its cell: that cell's
    record says so and a fresh worker takes the next cell. Stopped early (interrupted, or the
    caller closes this generator), the workers are stopped too, their cells dropped unrecorded.
    """
    if workers == 0:
        for cell in cells:
            yield run_cell(cell, device)
        return
    ctx = _context()
    todo = list(reversed(cells))
    resent: set[str] = set()
    idle: list[_Worker] = []
    busy: list[_Worker] = []
    try:
        while True:
            while len(busy) < workers and todo:
                worker = idle.pop() if idle else _Worker(ctx, device)
                worker.give(todo.pop())
                busy.append(worker)
            for worker in idle:  # no cell left for them
                worker.stop()
            if not busy:
                return
            ready = set(wait([obj for w in busy for obj in (w.conn, w.process.sentinel)]))
            for worker in [w for w in busy if w.conn in ready or w.process.sentinel in ready]:
                record = worker.take()
                if record is None:  # it only said it started the cell
                    continue
                busy.remove(worker)
                if worker.process.exitcode is None:
                    idle.append(worker)
                else:
                    worker.stop()
                    cid = cell_id(worker.cell)
                    if (not worker.started_cell or worker.finished) and cid not in resent:
                        # it died before starting this cell, or after running others whose leftovers
                        # (threads, memory) may have killed it: the cell runs again on a fresh
                        # worker, and is recorded as the killer only if it kills that one too
                        resent.add(cid)
                        todo.append(worker.cell)
                        continue
                yield record
    finally:
        _Worker.stop_all(busy + idle)


def _context() -> Any:
    """forkserver: workers fork from a clean server process that imported torch and nnmark once (never
    from the driver, whose threads and torch state they must not inherit); spawn where there is none."""
    import multiprocessing as mp

    if "forkserver" not in mp.get_all_start_methods():
        return mp.get_context("spawn")
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload([*PRELOAD])
    return ctx


class _Worker:
    """A worker process, its end of the pipe to the driver and the cell it runs."""

    def __init__(self, ctx: Any, device: str) -> None:
        self.conn, child = ctx.Pipe()
        self.process = ctx.Process(target=_serve, args=(child, device))  # not daemonic: it may fork
        self.process.start()
        child.close()
        self.cell: Cell = {}
        self.started, self.t0 = "", 0.0
        #: the worker said it began ``cell`` (a worker that dies before saying so never ran it)
        self.started_cell = False
        #: cells this worker finished before ``cell``
        self.finished = 0

    def give(self, cell: Cell) -> None:
        self.cell, self.t0, self.started_cell = cell, time.perf_counter(), False
        self.started = datetime.now(UTC).isoformat(timespec="seconds")
        with contextlib.suppress(OSError):  # already dead: take() sees it
            self.conn.send(cell)

    def take(self) -> dict[str, Any] | None:
        """The record of the cell this worker ran (its record came, or it died), or None when the
        worker only said it started the cell."""
        try:
            while self.conn.poll():  # messages, or the end of the pipe of a dead worker
                message = self.conn.recv()
                if message == _STARTED:
                    self.started_cell = True
                    continue
                self.finished += 1
                return dict(message)
            if self.process.exitcode is None and self.process.is_alive():
                return None
        except (EOFError, OSError):
            pass
        self.process.join(10)  # its end of the pipe is closed: it is exiting
        if self.process.exitcode is None:
            self.process.kill()
            self.process.join()
        how = _death(self.process.exitcode)
        error = f"WorkerDied: the worker process (pid {self.process.pid}) running this cell died ({how})"
        return failed_record(self.cell, error, self.started, time.perf_counter() - self.t0)

    def stop(self) -> None:
        """Close the pipe: the worker sees its end close and exits, even in the middle of a cell."""
        self.conn.close()

    @staticmethod
    def stop_all(workers: list[_Worker], grace: float = 5.0) -> None:
        """Stop ``workers`` and wait for them (killed after ``grace`` seconds): none outlives the grid."""
        for w in workers:
            w.stop()
        deadline = time.monotonic() + grace
        for w in workers:
            w.process.join(max(0.0, deadline - time.monotonic()))
            if w.process.exitcode is None:
                w.process.kill()
                w.process.join()


#: what a worker sends when it begins a cell
_STARTED = "started"


def _death(exitcode: int | None) -> str:
    """How a process ended, in words: its exit code, or the signal that killed it."""
    if exitcode is None or exitcode >= 0:
        return f"exit code {exitcode}"
    try:
        name = signal.Signals(-exitcode).name
    except ValueError:
        return f"killed by signal {-exitcode}"
    return f"killed by {name}" + (", as the out-of-memory killer does" if name == "SIGKILL" else "")


def _serve(conn: Connection, device: str) -> None:
    """A worker process: run the cells the driver sends, one at a time, and send back each record.

    A thread reads the pipe, so that the worker exits the moment the driver's end closes (the grid
    ended or was interrupted, or the driver was killed: SIGTERM, SIGKILL), even in the middle of a
    cell: no worker outlives its driver. Ctrl-C is the driver's to handle (it stops the workers).
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _init_worker()
    cells: queue.SimpleQueue[Cell] = queue.SimpleQueue()

    def read() -> None:
        try:
            while True:
                cells.put(conn.recv())
        except (EOFError, OSError):
            for stream in (sys.stdout, sys.stderr):
                stream.flush()
            os._exit(0)

    threading.Thread(target=read, daemon=True).start()
    while True:
        cell = cells.get()
        conn.send(_STARTED)
        conn.send(run_cell(cell, device))


def _ray(
    cells: Sequence[Cell], workers: int, address: str | None, device: str
) -> Generator[dict[str, Any], None, None]:
    """Records from Ray tasks (one CPU, one torch thread each); a local Ray instance with
    ``workers`` CPUs when no ``address`` is given. A task that fails (its worker crashed or was
    killed for memory) gives its cell a failed record; it is not retried (a crash is usually the
    cell's own, and resume reruns failed cells), and the tasks left are cancelled when interrupted."""
    import ray  # run_cells checked the extra (check_backend)

    started = False
    if not ray.is_initialized():
        if address:
            ray.init(address=address, log_to_driver=False)
        else:
            ray.init(num_cpus=max(1, workers), include_dashboard=False, log_to_driver=False)
        started = True
    pending: list[Any] = []
    try:
        env = {"OMP_NUM_THREADS": "1"}
        if "NNMARK_DATA" in os.environ:  # the workers look for data where the driver does
            env["NNMARK_DATA"] = os.environ["NNMARK_DATA"]
        # a cuda cell asks Ray for a share of a GPU: Ray then schedules it on a GPU node and leaves
        # CUDA visible to it (Ray hides the GPUs from tasks that ask for none)
        gpus = 1 / max(1, workers) if device.startswith("cuda") else 0
        remote = ray.remote(num_cpus=1, num_gpus=gpus, max_retries=0, runtime_env={"env_vars": env})(run_cell)
        submitted = datetime.now(UTC).isoformat(timespec="seconds"), time.perf_counter()
        cell_of = {remote.remote(c, device): c for c in cells}
        pending = list(cell_of)
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            for ref in done:
                try:
                    record = ray.get(ref)
                except ray.exceptions.RayError as e:
                    error = f"the Ray task running this cell failed: {e.__class__.__name__}: {e}"
                    seconds = time.perf_counter() - submitted[1]
                    record = failed_record(cell_of[ref], error, submitted[0], seconds)
                yield record
    finally:
        for ref in pending:
            ray.cancel(ref, force=True)
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
    from nnmark.training import device_name, resolve_device

    # an unknown (or, locally, absent) device: one line, before anything is written
    if backend == "local":
        resolve_device(device)
    else:
        device = device_name(device)
    if workers is not None and workers < 0:
        raise NnmarkError(f"--workers must be 0 (this process) or more, got {workers}")
    results = Path(results)
    results.mkdir(parents=True, exist_ok=True)
    unique = list({cell_id(c): c for c in cells}.values())  # a cell written twice runs once
    done = finished_ids(results)
    todo = [c for c in unique if cell_id(c) not in done]
    report = GridReport(total=len(unique), skipped=len(unique) - len(todo))
    if workers is None:
        workers = default_workers()
    workers = min(workers, len(todo)) if workers else 0
    stream = _ray(todo, workers, address, device) if backend == "ray" else _local(todo, workers, device)
    bar = _Progress(progress, title, report.total, report.skipped)
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
        stream.close()  # interrupted: stop the workers now, not when the generator is collected
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
