"""What exponential weighting's T does to the weights of a trained model (Namba 2019 Eq. 11).

    python benchmarks/ew_weights.py [--epochs 3] [--model digit-cnn] [--data mnist5k]

Trains a clean model, then prints for each conv/dense layer and each T the factor
exp(T(|θ| − max|θ|)) that EW multiplies the weights by (10th / 50th / 90th percentile over the
layer), the share of weights it takes below half their value, and the share of the layer's L1
mass held by its largest 10 % of weights before and after EW.
"""

from __future__ import annotations

import argparse

import torch

from nnmark.data import load_dataset
from nnmark.models import build_model
from nnmark.schemes.ew import ew_stats
from nnmark.training import TrainConfig, train
from nnmark.workflow import model_spec

TEMPERATURES = (0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 50.0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--model", default="digit-cnn")
    ap.add_argument("--data", default="mnist5k")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    data = load_dataset(args.data)
    torch.manual_seed(args.seed)
    model = build_model(model_spec(args.model, data))
    train(model, data.train_x, data.train_y, TrainConfig(epochs=args.epochs, seed=args.seed), progress=False)
    print(f"{args.model} trained {args.epochs} epochs on {args.data}")
    print(
        f"{'layer':8} {'weights':>8} {'med|θ|':>7} {'max|θ|':>7} {'T':>5} {'factor p10/p50/p90':>20} "
        f"{'<0.5':>6} {'top10% L1 before→after':>24}"
    )
    for t in TEMPERATURES:
        for row in ew_stats(model, t):
            print(
                f"{row['layer']:8} {row['weights']:8d} {row['median_abs']:7.4f} {row['max_abs']:7.4f} {t:5g} "
                f"{row['factor_p10']:6.3f} {row['factor_median']:6.3f} {row['factor_p90']:6.3f} "
                f"{row['share_factor_below_half']:6.1%} "
                f"{row['top10_l1_share_before']:11.1%} → {row['top10_l1_share_after']:6.1%}"
            )


if __name__ == "__main__":
    main()
