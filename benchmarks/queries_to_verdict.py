"""Queries to a verdict: each test's mean number of key queries against the theoretical optimum.

    .venv/bin/python benchmarks/queries_to_verdict.py [--runs 200] [--keys 200]

A suspect answers each key query with the key's label with probability ``rate`` (a watermark of
that key accuracy; ``rate`` = p0 is a model never trained on the keys). Keys are adi keys (p0 = 1/C
exactly, C = 10), verified through ``nnmark.verify`` as a user would, at alpha = 1e-6. For each test
it prints the mean queries to the verdict and the verdicts reached, beside:

* Wald's expected sample size E[N] for an SPRT of the same p0, p1 and error rates (alpha, beta =
  0.01), the optimum among sequential tests (Wald & Wolfowitz 1948); nnmark's SPRT runs each part
  at alpha/2 and uses p1 = 0.8 (its protocol), so the optimum is taken at that p1;
* the smallest fixed number of keys with which the binomial test reaches "found" with probability
  1 - beta at that rate (what a fixed-sample test must send).

Against a clean model, "not found" must reject a watermark of key accuracy 40 % at 1 % (issue 8: only
a test with power says "not found"): nnmark's sequential test does so by Ville's inequality, and
the optimum printed is Wald's E[N] for p0 against that weak watermark (and, for comparison, against
p1). The binomial test always sends every key.
"""

from __future__ import annotations

import argparse
import math
import random

import torch

from nnmark.byo import make_key
from nnmark.data import load_dataset
from nnmark.oracle import Oracle
from nnmark.verify import stats
from nnmark.verify.verifier import SPRT_P1, verify

C = 10
ALPHA = 1e-6
BETA = 0.01


class BernoulliSuspect(Oracle):
    """Answers a key input with its key label with probability ``rate``, else another label."""

    def __init__(self, key, rate: float, rng: random.Random) -> None:
        super().__init__()
        self.table = {x.numpy().tobytes(): int(y) for x, y in zip(key.inputs, key.labels, strict=True)}
        self.rate, self.rng = rate, rng

    def _predict(self, x: torch.Tensor) -> torch.Tensor:
        out = []
        for row in x:
            label = self.table.get(row.numpy().tobytes(), 0)
            if self.rng.random() >= self.rate:
                label = (label + self.rng.randrange(1, C)) % C
            out.append(label)
        return torch.nn.functional.one_hot(torch.tensor(out), C).float()


def wald_expected_n(p0: float, p1: float, rate: float, alpha: float, beta: float) -> float:
    """Wald's approximation of E[N] for the SPRT of p0 vs p1 (errors alpha, beta) when the true rate
    is ``rate``: at or above p1 it ends at the upper boundary, at p0 at the lower one."""
    a, b = math.log((1 - beta) / alpha), math.log(beta / (1 - alpha))
    step_hit, step_miss = math.log(p1 / p0), math.log((1 - p1) / (1 - p0))
    drift = rate * step_hit + (1 - rate) * step_miss
    if rate >= p1:
        return ((1 - beta) * a + beta * b) / drift
    return ((1 - alpha) * b + alpha * a) / drift


def fixed_n(p0: float, rate: float, alpha: float, beta: float) -> int:
    """Smallest n whose binomial test finds a watermark of key accuracy ``rate`` with power 1 - beta."""
    for n in range(1, 5000):
        k = stats.binomial_threshold(n, p0, alpha)
        if k <= n and stats.binomial_p_value(k, n, rate) >= 1 - beta:
            return n
    return -1


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--keys", type=int, default=200)
    args = parser.parse_args()
    data = load_dataset("mnist5k")
    key = make_key("adi", data.train_x[:300], data.train_y[:300], C, keys=args.keys)
    p0 = 1 / C
    rng = random.Random(0)
    print(f"adi keys: {args.keys}, p0 = {p0}, alpha = {ALPHA:g}, {args.runs} runs per row\n")
    print("| test | suspect's key accuracy | mean queries | verdicts (found/not/none) | optimum | ratio |")
    print("|---|---|---|---|---|---|")
    for rate in (SPRT_P1, 0.95, 1.0, p0):
        for test in ("sprt", "binomial"):
            queries, verdicts = [], {True: 0, False: 0, None: 0}
            for _ in range(args.runs):
                v = verify(key, BernoulliSuspect(key, rate, rng), alpha=ALPHA, test=test)
                queries.append(v.queries)
                verdicts[v.watermarked] += 1
            mean = sum(queries) / len(queries)
            if test == "sprt" and rate > p0:
                optimum = wald_expected_n(p0, SPRT_P1, rate, ALPHA, BETA)
                what = f"Wald E[N] {optimum:.1f}"
            elif test == "sprt":  # "not found" must reject a watermark at stats.weak_rate(p0)
                weak = stats.weak_rate(p0)
                optimum = wald_expected_n(p0, weak, p0, stats.POWER_BETA, BETA)
                what = (
                    f"Wald E[N] {optimum:.1f} (p0 vs {weak}; vs p1 {SPRT_P1}: "
                    f"{wald_expected_n(p0, SPRT_P1, p0, ALPHA, BETA):.1f})"
                )
            else:
                optimum = float(fixed_n(p0, max(rate, SPRT_P1), ALPHA, BETA)) if rate > p0 else float("nan")
                what = f"fixed n {optimum:.0f}" if not math.isnan(optimum) else "—"
            ratio = f"{mean / optimum:.2f}×" if optimum == optimum and optimum > 0 else "—"
            found = f"{verdicts[True]}/{verdicts[False]}/{verdicts[None]}"
            print(f"| {test} | {rate:.2f} | {mean:.1f} | {found} | {what} | {ratio} |")


if __name__ == "__main__":
    main()
