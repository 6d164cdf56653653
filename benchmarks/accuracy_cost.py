"""Test accuracy of clean vs watermarked digit-cnn on MNIST-5k, and watermark accuracy, over seeds.

    python benchmarks/accuracy_cost.py --seeds 3 --epochs 5 [--schemes zhang-content zhang-noise ...]

Prints one row per scheme: mean test accuracy, its cost against the clean mean, and mean watermark
accuracy. Embedding here uses a fixed target (no calibration) because only accuracy is measured.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

from nnmark.schemes import SCHEMES
from nnmark.training import TrainConfig
from nnmark.workflow import embed_run, train_run

DEFAULT_SCHEMES = ("zhang-content", "zhang-unrelated", "zhang-noise")


def measure(
    schemes: list[str], seeds: int, epochs: int, arch: str, data: str
) -> dict[str, list[tuple[float, float]]]:
    results: dict[str, list[tuple[float, float]]] = {"clean": []}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for seed in range(seeds):
            config = TrainConfig(epochs=epochs, seed=seed)
            m = train_run(data, arch, config, root / f"clean{seed}", progress=False).metrics
            results["clean"].append((m["test_accuracy"], float("nan")))
            for name in schemes:
                settings = {"target": 0} if SCHEMES.get(name).shared_target else {}
                r = embed_run(
                    name, settings, data, arch, config, root / f"{name}{seed}", calibrate=0, progress=False
                )
                results.setdefault(name, []).append(
                    (r.metrics["test_accuracy"], r.metrics["watermark_accuracy"])
                )
    return results


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--model", default="digit-cnn")
    ap.add_argument("--data", default="mnist5k")
    ap.add_argument("--schemes", nargs="*", default=list(DEFAULT_SCHEMES))
    args = ap.parse_args()
    res = measure(args.schemes, args.seeds, args.epochs, args.model, args.data)
    clean = statistics.mean(a for a, _ in res["clean"])
    print(f"{args.model} on {args.data}, {args.epochs} epochs, {args.seeds} seeds (means)")
    print(f"{'model':18} {'test acc':>9} {'cost (pts)':>10} {'wm acc':>8}  per-seed test acc")
    for name, rows in res.items():
        acc = statistics.mean(a for a, _ in rows)
        wm = statistics.mean(w for _, w in rows)
        seeds = " ".join(f"{a:.3f}" for a, _ in rows)
        print(f"{name:18} {acc:9.2%} {100 * (clean - acc):10.2f} {wm:8.2%}  {seeds}")


if __name__ == "__main__":
    main()
