"""Experiment grids: expansion, records, resume, failed cells, local and Ray backends (issue 11)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
import torch
from typer.testing import CliRunner

from nnmark.cli import app
from nnmark.errors import NnmarkError
from nnmark.experiments.cells import run_cell
from nnmark.experiments.grid import cell_id, expand, parse_grid
from nnmark.experiments.probes import EpochProbe
from nnmark.experiments.records import FAILED, OK, load_records, record_path
from nnmark.experiments.runner import run_cells

GRID = """
name: demo
task: watermark
defaults: {epochs: 1, n_train: 200}
axes:
  scheme: [null, zhang-content]
  attacks: [[], [{name: prune, rate: 0.5}]]
  seed: [0, 1]
include:
  - {scheme: zhang-noise, seed: 7}
  - {scheme: null, attacks: [], seed: 0}
"""


def test_grid_expands_as_written() -> None:
    cells = expand(parse_grid(GRID))
    # 2 × 2 × 2 from the axes (first axis outermost), one included cell; the second include repeats a cell
    assert len(cells) == 9
    assert cells[0] == {
        "task": "watermark",
        "epochs": 1,
        "n_train": 200,
        "scheme": None,
        "attacks": [],
        "seed": 0,
    }
    assert cells[1]["seed"] == 1 and cells[1]["scheme"] is None
    assert cells[2]["attacks"] == [{"name": "prune", "rate": 0.5}]
    assert [c["scheme"] for c in cells[:8]] == [None] * 4 + ["zhang-content"] * 4
    assert cells[8] == {"task": "watermark", "epochs": 1, "n_train": 200, "scheme": "zhang-noise", "seed": 7}
    # ids depend only on the cell's content
    assert len({cell_id(c) for c in cells}) == 9
    assert cell_id(dict(reversed(list(cells[3].items())))) == cell_id(cells[3])


def test_grid_rejects_bad_files() -> None:
    with pytest.raises(NnmarkError, match="axis 'seed' has no values"):
        expand(parse_grid("axes: {seed: []}"))
    with pytest.raises(NnmarkError, match="axs"):
        parse_grid("axs: {seed: [1]}")


def echo_cells(n: int, **extra: Any) -> list[dict[str, Any]]:
    return [{"task": "echo", "value": i, **extra} for i in range(n)]


def test_resume_never_reruns_a_finished_cell(tmp_path: Path) -> None:
    cells = echo_cells(3)
    stop_after_one: list[dict[str, Any]] = []

    def interrupt(record: dict[str, Any]) -> None:
        stop_after_one.append(record)
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):  # the grid is interrupted after its first cell
        run_cells(cells, tmp_path, workers=0, progress=False, on_record=interrupt)
    assert len(load_records(tmp_path)) == 1
    first = record_path(tmp_path, stop_after_one[0]["id"])
    before = first.read_text()

    report = run_cells(cells, tmp_path, workers=0, progress=False)
    assert (report.total, report.skipped, report.ran) == (3, 1, 2)
    assert first.read_text() == before  # the finished cell was not run again
    assert sorted(r["metrics"]["value"] for r in load_records(tmp_path)) == [0, 1, 2]

    again = run_cells(cells, tmp_path, workers=0, progress=False)
    assert (again.skipped, again.ran) == (3, 0)


def test_a_failing_cell_is_recorded_and_the_rest_go_on(tmp_path: Path) -> None:
    cells = [*echo_cells(1), {"task": "fail", "message": "boom 42"}, *echo_cells(2, sleep=0.01)]
    report = run_cells(cells, tmp_path, workers=0, progress=False)
    assert report.ran == 4 and len(report.failed) == 1
    records = {r["id"]: r for r in load_records(tmp_path)}
    failed = records[cell_id(cells[1])]
    assert (
        failed["status"] == FAILED and "boom 42" in failed["error"] and "RuntimeError" in failed["traceback"]
    )
    assert all(records[cell_id(c)]["status"] == OK for c in cells if c["task"] == "echo")
    for r in records.values():  # every record says what produced it
        assert set(r["versions"]) == {"nnmark", "source", "torch", "python"}
        assert r["config"]["task"] in ("echo", "fail")
    # a failed cell is run again on resume; the finished ones are not
    assert run_cells(cells, tmp_path, workers=0, progress=False).ran == 1


def test_grid_cli_runs_a_file_and_exits_1_on_failed_cells(tmp_path: Path) -> None:
    grid = tmp_path / "g.yaml"
    grid.write_text("task: echo\naxes: {value: [1, 2]}\n")
    res = CliRunner().invoke(
        app, ["grid", "run", str(grid), "--results", str(tmp_path / "r"), "--workers", "0"]
    )
    assert res.exit_code == 0, res.output
    assert "2 cells, 0 already done, 2 run, 0 failed" in res.output
    assert len(list((tmp_path / "r").glob("*.json"))) == 2
    grid.write_text("task: fail\naxes: {value: [1]}\n")
    res = CliRunner().invoke(
        app, ["grid", "run", str(grid), "--results", str(tmp_path / "r"), "--workers", "0"]
    )
    assert res.exit_code == 1 and "failed" in res.output


def tiny_cells() -> list[dict[str, Any]]:
    base = {"task": "watermark", "n_train": 150, "n_test": 200, "epochs": 1, "verify": False}
    return [
        {**base, "seed": 0},
        {
            **base,
            "seed": 1,
            "scheme": "zhang-content",
            "params": {"target": 0, "keys": 10},
            "measure": ["fresh_keys"],
            "attacks": [{"name": "prune", "rate": 0.5}],
        },
    ]


def comparable(records: list[dict[str, Any]]) -> dict[str, Any]:
    return {r["id"]: {k: v for k, v in r.items() if k != "timings"} for r in records}


def test_process_pool_records_every_cell_and_goes_on_past_a_failure(tmp_path: Path) -> None:
    cells = [{"task": "fail", "message": "pool boom"}, *echo_cells(3)]
    report = run_cells(cells, tmp_path, workers=2, progress=False)
    records = {r["id"]: r for r in load_records(tmp_path)}
    assert report.ran == 4 and len(records) == 4 and report.failed == [cell_id(cells[0])]
    assert "pool boom" in records[cell_id(cells[0])]["error"]
    assert sorted(r["metrics"]["value"] for r in records.values() if r["status"] == OK) == [0, 1, 2]


@pytest.mark.slow  # worker start-up plus data loading: ~30 s on the shared 2-core machine
def test_process_pool_gives_the_records_of_an_in_process_run(tmp_path: Path) -> None:
    cells = tiny_cells()
    serial = run_cells(cells, tmp_path / "serial", workers=0, progress=False)
    pooled = run_cells(cells, tmp_path / "pool", workers=2, progress=False)
    assert not serial.failed and not pooled.failed, [r.get("error") for r in serial.records + pooled.records]
    assert comparable(load_records(tmp_path / "serial")) == comparable(load_records(tmp_path / "pool"))
    rec = json.loads(record_path(tmp_path / "pool", cell_id(cells[1])).read_text())
    m = rec["metrics"]
    assert 0 <= m["model"]["test_accuracy"] <= 1 and m["model"]["watermark_accuracy"] is not None
    assert "new_key_accuracy" in m["model"] and "prune rate=0.5" in m


@pytest.mark.slow  # Ray's start-up alone takes ~20-40 s on the shared 2-core machine
def test_ray_backend_gives_the_records_of_the_local_one(tmp_path: Path) -> None:
    pytest.importorskip("ray")
    cells = tiny_cells()
    t0 = time.perf_counter()
    ray_run = run_cells(cells, tmp_path / "ray", backend="ray", workers=2, progress=False)
    print(f"ray backend: {time.perf_counter() - t0:.1f} s for 2 tiny cells")
    local = run_cells(cells, tmp_path / "local", workers=0, progress=False)
    assert not ray_run.failed and not local.failed
    assert comparable(load_records(tmp_path / "ray")) == comparable(load_records(tmp_path / "local"))


def test_epoch_probe_measures_every_epoch_without_changing_training(small_mnist: Any) -> None:
    from nnmark.models import build_model
    from nnmark.training import TrainConfig, train
    from nnmark.workflow import model_spec

    data = small_mnist
    x, y = data.train_x[:256], data.train_y[:256]
    config = TrainConfig(epochs=3, seed=3, batch_size=64)
    spec = model_spec("digit-cnn", data)
    torch.manual_seed(0)
    plain = build_model(spec)
    train(plain, x, y, config, progress=False)
    torch.manual_seed(0)
    probed = build_model(spec)
    probe = EpochProbe(probed, data.test_x[:100], data.test_y[:100], steps=4)
    train(probed, x, y, config, mixer=probe, progress=False)
    assert len(probe.curve) == 2 and all(0 <= a <= 1 for a in probe.curve)  # after epochs 1 and 2
    for a, b in zip(plain.state_dict().values(), probed.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_an_unknown_cell_setting_fails_that_cell() -> None:
    rec = run_cell({"task": "watermark", "scheme": "zhang-content", "epocs": 1})
    assert rec["status"] == FAILED and "epocs" in rec["error"]


@pytest.mark.parametrize("path", sorted(Path(__file__).parent.parent.joinpath("experiments").glob("*.yaml")))
def test_shipped_grids_expand_into_valid_cells(path: Path) -> None:
    from nnmark.attacks import ATTACKS
    from nnmark.experiments.cells import WatermarkCell
    from nnmark.schemes import SCHEMES

    cells = expand(parse_grid(path.read_text(), str(path)))
    assert cells
    for c in cells:
        cell = WatermarkCell(**c)  # every setting is one the task knows
        if cell.scheme:
            SCHEMES.get(cell.scheme)
        for a in cell.attacks:
            assert a.name == "query-modification" or ATTACKS.get(a.name)


def test_ray_and_matplotlib_are_imported_only_when_used() -> None:
    import subprocess
    import sys

    code = (
        "import sys, nnmark.cli, nnmark.experiments.runner, nnmark.experiments.reproduce\n"
        "print(sorted(m for m in ('ray', 'matplotlib') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_a_cells_attacks_go_through_the_victims_ew_layers_as_nnmark_attack_does() -> None:
    """Namba 2019 Sec. 5.2: the thief prunes and retrains f_K, EW layers and all; ``ew=0`` opts out."""
    from nnmark.experiments.cells import watermark_task

    cell = {
        "task": "watermark",
        "n_train": 150,
        "n_test": 200,
        "epochs": 1,
        "verify": False,
        "model": "dnn1",
        "scheme": "label-change",
        "params": {"ew": 2.0, "keys": 10},
        "attacks": [
            {"name": "prune", "rate": 0.5, "epochs": 1, "fraction": 0.2, "label": "through EW"},
            {"name": "prune", "rate": 0.5, "epochs": 1, "fraction": 0.2, "ew": 0, "label": "folded"},
        ],
    }
    metrics = watermark_task(cell)["metrics"]
    assert metrics["through EW"]["ew"] == 2.0 and metrics["folded"]["ew"] == 0


class _PixelModel(torch.nn.Module):
    """Answers class 1 where the image's first pixel is above 0.5, class 0 elsewhere."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        on = (x.flatten(1)[:, 0] > 0.5).float()
        return torch.stack([1 - on, on], 1)


def test_probes_namba_auc_draws_each_subset_for_both_models() -> None:
    """Namba 2019 Fig. 2 in the reproduction: the watermarked and the clean model answer the same K'
    (paired, as the verifier's namba-auc does): one model against itself is a tie on every draw
    (AUC exactly 0.5; unpaired draws scatter around it), a model right on every key beats one right
    on half of them."""
    from nnmark.experiments.probes import namba_auc
    from nnmark.types import Key

    x = torch.zeros(40, 1, 2, 2)
    x[::2, 0, 0, 0] = 1.0  # half the keys answered 1 by the clean model, half 0
    key = Key("label-change", {}, (1, 2, 2), 2, x, torch.ones(40, dtype=torch.long))
    same = namba_auc(_PixelModel(), _PixelModel(), key, seed=3)
    assert same == {k: 0.5 for k in ("5", "10", "20", "30")}

    class Right(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.tensor([[0.0, 1.0]]).expand(len(x), 2)

    better = namba_auc(Right(), _PixelModel(), key, seed=3, sizes=(5, 20))
    assert better["20"] > 0.99 and 0.9 < better["5"] <= 1.0


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the device through CUDA's absence")
def test_the_grids_device_reaches_the_cells_training(tmp_path: Path) -> None:
    """``--device`` is where every cell's models train (issue 11: several small models at once on one
    GPU): a device this machine lacks fails the cell at training (so it was used, not ignored); the
    runner and the command refuse it in one line before writing anything; the cell's id does not
    depend on it."""
    cell = {"task": "watermark", "n_train": 60, "n_test": 100, "epochs": 1, "verify": False}
    rec = run_cell(cell, device="cuda:0")
    assert rec["status"] == FAILED and "CUDA is not available" in rec["error"]
    assert rec["id"] == run_cell(cell)["id"] and run_cell(cell)["status"] == OK
    with pytest.raises(NnmarkError, match="CUDA is not available"):
        run_cells([cell], tmp_path / "r", workers=0, progress=False, device="cuda")
    assert not (tmp_path / "r").exists()
    grid = tmp_path / "g.yaml"
    grid.write_text("task: echo\naxes: {value: [1]}\n")
    import subprocess
    import sys

    cmd = [sys.executable, "-m", "nnmark.cli", "grid", "run", str(grid), "--results", str(tmp_path / "r2")]
    res = subprocess.run([*cmd, "--device", "cuda"], capture_output=True, text=True, timeout=120)
    assert res.returncode == 2 and "CUDA is not available" in res.stderr + res.stdout
    assert not (tmp_path / "r2").exists()


def crash_grid() -> list[dict[str, Any]]:
    """Echo cells with, in the middle, one that kills its worker process (a segfault or an OOM kill)."""
    return [*echo_cells(3, sleep=0.05), {"task": "crash", "code": 7}, *echo_cells(5, sleep=0.05)[3:]]


def test_a_cell_that_kills_its_worker_is_recorded_and_the_rest_go_on(tmp_path: Path) -> None:
    """Issue 11 with worker processes: a cell that ends its process (no Python exception to catch)
    fails that cell alone, recorded with the dead worker's exit code; resume reruns only it."""
    import multiprocessing as mp

    cells = crash_grid()
    report = run_cells(cells, tmp_path, workers=2, progress=False)
    records = {r["id"]: r for r in load_records(tmp_path)}
    crash = records[cell_id(cells[3])]
    assert report.ran == 6 and len(records) == 6 and report.failed == [crash["id"]]
    assert crash["status"] == FAILED and "worker process" in crash["error"]
    assert "exit code 7" in crash["error"]
    assert crash["config"] == cells[3] and set(crash["versions"]) == {"nnmark", "source", "torch", "python"}
    assert {"started", "seconds"} <= set(crash["timings"]) and crash["metrics"] == {}
    assert sorted(r["metrics"]["value"] for r in records.values() if r["status"] == OK) == [0, 1, 2, 3, 4]
    assert not mp.active_children()  # every worker ended with the grid
    again = run_cells(cells, tmp_path, workers=2, progress=False)
    assert (again.skipped, again.ran, again.failed) == (5, 1, [crash["id"]])


def test_an_interrupted_process_grid_leaves_no_worker_running(tmp_path: Path) -> None:
    import multiprocessing as mp

    cells = [*echo_cells(1), *echo_cells(4, sleep=60)[1:]]

    def interrupt(record: dict[str, Any]) -> None:
        raise KeyboardInterrupt

    t0 = time.perf_counter()
    with pytest.raises(KeyboardInterrupt) as stopped:  # kept, as a caller reporting it would keep it
        run_cells(cells, tmp_path, workers=2, progress=False, on_record=interrupt)
    assert time.perf_counter() - t0 < 30  # the 60 s cell running beside the first was stopped
    assert [r["metrics"]["value"] for r in load_records(tmp_path)] == [0]
    assert not mp.active_children() and stopped.traceback  # stopped, not left to garbage collection


@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="finds the workers through /proc")
def test_no_worker_outlives_a_killed_driver(tmp_path: Path) -> None:
    """SIGTERM ends the driver without running its finally blocks: its workers (and the fork server)
    must go with it, not run their cells on as orphans."""
    import os
    import signal
    import subprocess
    import sys
    import uuid

    tag = uuid.uuid4().hex
    marker = f"NNMARK_TEST_TAG={tag}".encode()

    def tagged() -> list[int]:
        found = []
        for proc in Path("/proc").iterdir():
            try:
                if proc.name.isdigit() and marker in (proc / "environ").read_bytes():
                    found.append(int(proc.name))
            except OSError:
                pass
        return found

    code = (
        "import sys; from nnmark.experiments.runner import run_cells; "
        "cells = [{'task': 'echo', 'value': i, 'sleep': 120 if i else 0} for i in range(4)]; "
        "run_cells(cells, sys.argv[1], workers=2, progress=False)"
    )
    env = {**os.environ, "NNMARK_TEST_TAG": tag}
    out = subprocess.DEVNULL
    driver = subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], env=env, stdout=out, stderr=out)
    try:
        deadline = time.monotonic() + 120
        while not list(tmp_path.glob("*.json")):  # the first cell is done: workers run 120 s cells
            assert driver.poll() is None and time.monotonic() < deadline
            time.sleep(0.1)
        assert len(tagged()) >= 4  # the driver, the fork server, two workers
        driver.send_signal(signal.SIGTERM)
        driver.wait(30)
        deadline = time.monotonic() + 20
        while (left := tagged()) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not left
    finally:
        driver.kill()
        for pid in tagged():
            os.kill(pid, signal.SIGKILL)


def test_duplicate_cells_run_once(tmp_path: Path) -> None:
    cells = [*echo_cells(2), *echo_cells(2), {"value": 1, "task": "echo"}]
    report = run_cells(cells, tmp_path, workers=0, progress=False)
    assert (report.total, report.ran) == (2, 2) and len(load_records(tmp_path)) == 2


@pytest.mark.slow  # Ray's start-up alone takes ~20-40 s on the shared 2-core machine
def test_ray_records_a_cell_that_kills_its_worker_and_goes_on(tmp_path: Path) -> None:
    pytest.importorskip("ray")
    cells = crash_grid()
    report = run_cells(cells, tmp_path, backend="ray", workers=2, progress=False)
    records = {r["id"]: r for r in load_records(tmp_path)}
    crash = records[cell_id(cells[3])]
    assert report.ran == 6 and report.failed == [crash["id"]] and "WorkerCrashedError" in crash["error"]
    assert sorted(r["metrics"]["value"] for r in records.values() if r["status"] == OK) == [0, 1, 2, 3, 4]


def test_a_worker_that_dies_between_cells_is_not_blamed_on_the_next(tmp_path: Path) -> None:
    """A cell that finished but left its worker to die (a thread it started, memory that piled up):
    the next cell sent to that worker never ran there, so it runs on another worker, not recorded as
    the one that killed it; and a negative --workers is refused before anything is written."""
    cells = [{"task": "crash", "code": 9, "after": 0.3}, *echo_cells(3, sleep=0.6)]
    report = run_cells(cells, tmp_path / "r", workers=1, progress=False)
    records = load_records(tmp_path / "r")
    assert report.failed == [] and len(records) == 4
    assert all(r["status"] == OK for r in records)
    with pytest.raises(NnmarkError, match="--workers"):
        run_cells(cells, tmp_path / "neg", workers=-1, progress=False)
    assert not (tmp_path / "neg").exists()


def test_grid_refuses_an_unknown_task_or_setting_before_running(tmp_path: Path) -> None:
    """A typo in a grid is one line and exit 2 before --results is made, not a failed record per cell."""
    import subprocess
    import sys

    for i, text in enumerate(("task: nosuch\naxes: {value: [1]}\n", "axes: {epocs: [1]}\n")):
        grid = tmp_path / f"g{i}.yaml"
        grid.write_text(text)
        cmd = [sys.executable, "-m", "nnmark.cli", "grid", "run", str(grid), "--results", str(tmp_path / "r")]
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        said = res.stdout + res.stderr
        assert res.returncode == 2 and ("nosuch" in said if i == 0 else "epocs" in said), said
        assert not (tmp_path / "r").exists()
