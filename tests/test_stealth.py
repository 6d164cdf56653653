"""benchmarks/stealth.py's measures: the AUC helper against a brute-force count of pairs, and the
Namba detector's score crossing 1 exactly where the served defense flags a query."""

from __future__ import annotations

import itertools
import sys
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from stealth import auc, namba_score  # noqa: E402

from nnmark.attacks.query.autoencoder import ConvAutoencoder, QueryModification  # noqa: E402


def test_auc_is_the_share_of_pairs_a_detector_orders_right() -> None:
    assert auc(torch.tensor([3.0, 4.0]), torch.tensor([1.0, 2.0])) == 1.0
    assert auc(torch.tensor([1.0, 2.0]), torch.tensor([3.0, 4.0])) == 0.0
    assert auc(torch.full((5,), 0.3), torch.full((7,), 0.3)) == 0.5  # cannot tell them apart
    gen = torch.Generator().manual_seed(0)
    pos = torch.randint(0, 6, (40,), generator=gen).float()  # many ties
    neg = torch.randint(0, 5, (55,), generator=gen).float()
    pairs = [(1.0 if p > n else 0.5 if p == n else 0.0) for p, n in itertools.product(pos, neg)]
    assert abs(auc(pos, neg) - sum(pairs) / len(pairs)) < 1e-12


def test_namba_score_exceeds_one_exactly_when_the_defense_flags() -> None:
    torch.manual_seed(0)
    detector = QueryModification(nn.Sequential(nn.Flatten(), nn.Linear(28 * 28, 10)))
    detector.autoencoder = ConvAutoencoder((1, 28, 28)).eval()
    x = torch.rand(300, 1, 28, 28)
    info = detector.inspect(x)
    detector.tau_rec = float(info.rec.median())
    detector.tau_jsd = float(info.jsd.quantile(0.8))
    flagged = detector.inspect(x).flagged
    assert 0 < int(flagged.sum()) < 300
    assert torch.equal(namba_score(detector, x) > 1, flagged)
