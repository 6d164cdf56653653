"""Embedding cost: ``nnmark train`` against ``nnmark embed`` with the same model, data and epochs.

    python benchmarks/embed_overhead.py [--epochs 3] [--repeats 2] [--schemes label-change adi ...]

Both run in this one process, interleaved, without calibration (``--calibrate 0``), so that they
share the machine's state; each time is the fastest of ``--repeats``. Printed per scheme: the
training-loop seconds recorded in metrics.json and the wall time of the whole call (key
generation, evaluation and writing the run folder included), and their ratio to clean training.
One-run schemes (keys mixed into the one training run) aim at ≤ 1.15×. Train-then-retrain
schemes (``afs``, ``deepsigns-bb``, any scheme with ``ew`` > 0) train normally and then retrain
with the keys; for them the extra seconds over clean training are printed.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

from nnmark.data import load_dataset
from nnmark.schemes import SCHEMES
from nnmark.training import TrainConfig
from nnmark.workflow import embed_run, train_run

ONE_RUN = ("zhong-new-label", "label-change", "adi", "zhang-noise")
RETRAIN = ("afs", "deepsigns-bb", "label-change+ew=2")
GOAL = 1.15


def parse(entry: str) -> tuple[str, dict[str, Any]]:
    """``scheme`` or ``scheme+name=value+...`` (e.g. ``label-change+ew=2``)."""
    name, *sets = entry.split("+")
    settings: dict[str, Any] = {"target": 0} if SCHEMES.get(name).shared_target else {}
    for s in sets:
        k, _, v = s.partition("=")
        settings[k] = float(v) if "." in v or k == "ew" else int(v)
    return name, settings


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--data", default="mnist5k")
    ap.add_argument("--model", default="digit-cnn")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--schemes", nargs="*", default=[*ONE_RUN, *RETRAIN])
    args = ap.parse_args()
    data = load_dataset(args.data)
    config = TrainConfig(epochs=args.epochs, seed=0, device=args.device)
    loop: dict[str, list[float]] = {}
    wall: dict[str, list[float]] = {}
    retrains: dict[str, bool] = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for rep in range(args.repeats):
            t = time.perf_counter()
            m = train_run(data, args.model, config, root / f"train{rep}", progress=False).metrics
            wall.setdefault("train", []).append(time.perf_counter() - t)
            loop.setdefault("train", []).append(m["seconds"])
            for entry in args.schemes:
                name, settings = parse(entry)
                scheme = SCHEMES.get(name)(**{k: v for k, v in settings.items()})
                retrains[entry] = scheme.retrains()
                t = time.perf_counter()
                r = embed_run(
                    name,
                    settings,
                    data,
                    args.model,
                    config,
                    root / f"{entry}{rep}",
                    calibrate=0,
                    progress=False,
                )
                wall.setdefault(entry, []).append(time.perf_counter() - t)
                loop.setdefault(entry, []).append(r.metrics["seconds"])
    base_loop, base_wall = min(loop["train"]), min(wall["train"])
    print(f"{args.model} on {args.data}, {args.epochs} epochs, {args.device}, fastest of {args.repeats} runs")
    print(f"{'run':22} {'loop s':>7} {'ratio':>6} {'wall s':>7} {'ratio':>6}  note")
    print(f"{'train (clean)':22} {base_loop:7.2f} {1:6.2f} {base_wall:7.2f} {1:6.2f}")
    for entry in args.schemes:
        lo, wa = min(loop[entry]), min(wall[entry])
        if retrains[entry]:
            note = f"train-then-retrain: +{lo - base_loop:.1f}s training ({lo / base_loop - 1:+.0%})"
        else:
            note = "one run: " + ("within" if lo / base_loop <= GOAL else "OVER") + f" the {GOAL}x goal"
        print(f"{entry:22} {lo:7.2f} {lo / base_loop:6.2f} {wa:7.2f} {wa / base_wall:6.2f}  {note}")


if __name__ == "__main__":
    main()
