"""Statistics behind every verdict.

- Exact one-sided binomial test of key matches against the chance rate p0 of a clean model.
- ``bound_p0``: p0 must bound the match rate of a clean model nobody has seen yet, not the
  average of a few (clean models differ a lot). Each calibration model's rate is kept; a Beta
  distribution of per-model rates is fitted by moments to 95 % upper confidence limits of the mean
  and variance across models (beta-binomial view), and p0 is its 99.9 % quantile — never below the
  99.9 % Clopper–Pearson upper bound of the worst model seen.
- Zhang 2018 / Zhong 2020 threshold test: found if at most τ of the key answers miss.
- Zhong 2020 first-hit: Acc(q) = Σ_{θ<q} (1−p)^θ·p, and a Fisher exact test of key hits
  against control hits.
- Wald's SPRT between p0 and p1 for query-efficient sequential verification.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

PREDICTIVE_QUANTILE = 0.999
CONFIDENCE = 0.95


def binomial_p_value(matches: int, n: int, p0: float) -> float:
    """P(X ≥ matches) for X ~ Binomial(n, p0): the exact one-sided p-value."""
    if matches <= 0:
        return 1.0
    return float(stats.binom.sf(matches - 1, n, min(max(p0, 0.0), 1.0)))


def binomial_threshold(n: int, p0: float, alpha: float) -> int:
    """Smallest number of matches out of ``n`` whose p-value is ≤ alpha (``n + 1`` if none)."""
    for k in range(n + 1):
        if binomial_p_value(k, n, p0) <= alpha:
            return k
    return n + 1


def clopper_pearson_upper(k: int, n: int, confidence: float) -> float:
    if n == 0 or k >= n:
        return 1.0
    return float(stats.beta.ppf(confidence, k + 1, n - k))


@dataclass(frozen=True)
class P0Bound:
    p0: float
    method: str


def bound_p0(rates: Sequence[float], queries: int) -> P0Bound:
    """Bound the chance match rate of an unseen clean model from per-model calibration rates."""
    if not rates:
        raise ValueError("no calibration rates")
    r = np.asarray(rates, dtype=float)
    m = len(r)
    worst = clopper_pearson_upper(round(float(r.max()) * queries), queries, PREDICTIVE_QUANTILE)
    mean = float(r.mean())
    if m >= 2:
        sd = float(r.std(ddof=1))
        mean_u = mean + float(stats.t.ppf(CONFIDENCE, m - 1)) * sd / math.sqrt(m)
        var_u = sd**2 * (m - 1) / float(stats.chi2.ppf(1 - CONFIDENCE, m - 1))
    else:
        mean_u, var_u = mean, 0.0
    mean_u = min(max(mean_u, 1.0 / (queries + 1)), 1 - 1e-6)
    # a Beta must have var < mean(1 - mean); binomial noise is the least spread we assume
    var_u = min(max(var_u, mean_u * (1 - mean_u) / (queries + 1)), mean_u * (1 - mean_u) * 0.999)
    concentration = mean_u * (1 - mean_u) / var_u - 1
    a, b = mean_u * concentration, (1 - mean_u) * concentration
    beta_q = float(stats.beta.ppf(PREDICTIVE_QUANTILE, a, b))
    p0 = max(beta_q, worst)
    method = (
        f"beta fit to {m} clean model(s) (95% upper mean {mean_u:.3f}, sd {math.sqrt(var_u):.3f}), "
        f"{PREDICTIVE_QUANTILE:.1%} quantile {beta_q:.3f}; worst-model Clopper-Pearson {worst:.3f}"
    )
    return P0Bound(p0=min(p0, 1.0), method=method)


def zhang_threshold_found(matches: int, n: int, tau: float) -> bool:
    """Zhang's threshold test: found when the share of key answers that miss is at most τ."""
    return n > 0 and (n - matches) / n <= tau


def first_hit_accuracy(q: int, p: float) -> float:
    """Zhong 2020 Eq.: Acc(q) = Σ_{θ<q} (1−p)^θ·p = 1 − (1−p)^q, the chance of a hit within q queries."""
    return 1.0 - (1.0 - p) ** q


def fisher_greater(key_hits: int, key_n: int, control_hits: int, control_n: int) -> float:
    """One-sided Fisher exact p-value that keys hit more often than controls."""
    table = [[key_hits, key_n - key_hits], [control_hits, control_n - control_hits]]
    return float(stats.fisher_exact(table, alternative="greater").pvalue)


@dataclass
class Sprt:
    """Wald's sequential probability ratio test of H0: rate ≤ p0 against H1: rate ≥ p1.

    ``alpha`` bounds false accusations, ``beta`` missed watermarks. Feed one outcome at a time.
    """

    p0: float
    p1: float
    alpha: float
    beta: float = 0.01
    llr: float = 0.0
    n: int = 0
    matches: int = 0

    def __post_init__(self) -> None:
        self.p0 = min(max(self.p0, 1e-9), 1 - 1e-9)
        self.p1 = min(max(self.p1, self.p0 + 1e-6), 1 - 1e-9)
        # 1/alpha rather than Wald's (1 - beta)/alpha: by Ville's inequality crossing it keeps p <= alpha
        self.upper = math.log(1 / self.alpha)
        self.lower = math.log(self.beta / (1 - self.alpha))

    def update(self, match: bool) -> bool | None:
        """Add one outcome; returns True (watermarked), False (not) or None (keep querying)."""
        self.n += 1
        if match:
            self.matches += 1
            self.llr += math.log(self.p1 / self.p0)
        else:
            self.llr += math.log((1 - self.p1) / (1 - self.p0))
        if self.llr >= self.upper:
            return True
        if self.llr <= self.lower:
            return False
        return None
