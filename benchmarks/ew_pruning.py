"""Exponential weighting against the model-modification attack of Namba 2019 (Sec. 4.3.1, 6.3).

    python benchmarks/ew_pruning.py [--epochs 5] [--temperatures 2 20] [--retrain-epochs 10]

The owner trains a clean model on its share of the training set, then embeds label-change keys
(30 keys, 4 per batch) by retraining it on X ∪ K — once without EW and once through EW layers per
temperature T (the same pre-trained model and retraining epochs, so EW is the only difference).
The thief holds a disjoint share of the training set (Namba: owner and attacker data are mutually
exclusive), prunes the q % smallest weights of every conv/dense layer and retrains 10 epochs with
Adam 1e-3 (Namba's setting). Printed per prune rate q: test accuracy and watermark accuracy
(share of the 30 keys answered with their changed label) of each model.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from nnmark.attacks import ATTACKS
from nnmark.data import load_dataset
from nnmark.data.base import ImageDataset
from nnmark.io import load_spec
from nnmark.keyfile import load_key
from nnmark.oracle import TorchOracle
from nnmark.training import TrainConfig, evaluate
from nnmark.workflow import embed_run, load_model, train_run


def split(data: ImageDataset, attacker_fraction: float) -> tuple[ImageDataset, ImageDataset]:
    n_att = round(len(data.train_x) * attacker_fraction)
    n_own = len(data.train_x) - n_att

    def part(lo: int, hi: int) -> ImageDataset:
        return ImageDataset(
            data.name,
            data.train_x[lo:hi],
            data.train_y[lo:hi],
            data.test_x,
            data.test_y,
            data.num_classes,
            data.class_names,
        )

    return part(0, n_own), part(n_own, len(data.train_x))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--data", default="mnist5k")
    ap.add_argument("--model", default="digit-cnn")
    ap.add_argument(
        "--epochs", type=int, default=5, help="clean training, and again retraining with the keys"
    )
    ap.add_argument("--temperatures", type=float, nargs="*", default=[2.0, 20.0])
    ap.add_argument("--rates", type=float, nargs="*", default=[round(0.1 * i, 1) for i in range(10)])
    ap.add_argument("--retrain-epochs", type=int, default=10, help="attacker's retraining after pruning")
    ap.add_argument("--attacker-fraction", type=float, default=0.1)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    owner, attacker = split(load_dataset(args.data), args.attacker_fraction)
    config = TrainConfig(epochs=args.epochs, seed=args.seed)
    variants = {"no EW": 0.0, **{f"EW T={t:g}": t for t in args.temperatures}}
    prune = ATTACKS.get("prune")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        train_run(owner, args.model, config, root / "clean", progress=False)
        runs = {}
        for name, t in variants.items():
            settings = {"ew": t} if t else {}
            r = embed_run(
                "label-change",
                settings,
                owner,
                args.model,
                config,
                root / name,
                from_run=root / "clean",
                calibrate=0,
                progress=False,
            )
            runs[name] = root / name
            print(
                f"{name:10} embedded: test acc {r.metrics['test_accuracy']:.3f}, "
                f"watermark acc {r.metrics['watermark_accuracy']:.3f}, retrain {r.metrics['seconds']:.1f}s"
            )
        spec = load_spec(root / "clean")
        header = "  ".join(f"{name + ' test/wm':>17}" for name in variants)
        print(f"\nprune + retrain {args.retrain_epochs} epochs on {len(attacker.train_x)} attacker images")
        print(f"{'q':>4}  {header}")
        for q in args.rates:
            cells = []
            for run in runs.values():
                key = load_key(run)
                attacked = prune(rate=q, epochs=args.retrain_epochs)(
                    load_model(run), spec, attacker, TrainConfig(epochs=1, seed=args.seed + 1), progress=False
                )
                test = evaluate(attacked, attacker.test_x, attacker.test_y)
                wm = float((TorchOracle(attacked).labels(key.inputs) == key.labels).float().mean())
                cells.append(f"{test:8.3f} / {wm:5.3f}")
            print(f"{q:4.1f}  " + "  ".join(f"{c:>17}" for c in cells), flush=True)


if __name__ == "__main__":
    main()
