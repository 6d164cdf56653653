"""Statistics behind every verdict.

- Exact one-sided binomial test of key matches against the chance rate p0 of a clean model.
- ``bound_p0``: p0 must bound the match rate of a clean model nobody has seen yet, not the
  average of a few (clean models differ a lot). Each calibration model's rate is kept; a Beta
  distribution of per-model rates is fitted by moments to 95 % upper confidence limits of the mean
  and variance across models (beta-binomial view), and p0 is its 99.9 % quantile — never below the
  99.9 % Clopper–Pearson upper bound of the worst model seen.
- Zhang 2018 / Zhong 2020 threshold test: found if at most τ of the key answers miss.
- Zhong 2020 first-hit: Acc(q) = Σ_{θ<q} (1−p)^θ·p.
- Wald's SPRT between p0 and p1 for query-efficient sequential verification.
- ``decide_binomial``: "found" at p ≤ α; "not found" only when the test had the power to see a
  weak watermark (key accuracy ≥ ``WEAK_RATE``) and the data reject it; otherwise no verdict.
- ``pattern_rank_p_value``: an exact permutation test over whole patterns (owner patterns
  exchangeable with control patterns under "never trained on the owner's patterns").
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

PREDICTIVE_QUANTILE = 0.999
CONFIDENCE = 0.95
#: the calibration bound's own chance of being too low, added to α in every verdict's guarantee
CALIBRATION_ERROR = 1 - PREDICTIVE_QUANTILE
#: fewer clean reference models than this cannot bound an unseen clean model's rate
MIN_REFERENCES = 3
#: the weakest watermark a verdict of "not found" must have ruled out (key accuracy), and with what error
WEAK_RATE = 0.4
POWER_BETA = 0.01


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
    """Bound the chance match rate of an unseen clean model from per-model calibration rates.

    Needs at least :data:`MIN_REFERENCES` models: with one the spread between clean models is
    unknown (measured: a one-model bound accused 12 of 1,680 held-out clean models at 1e-6).
    """
    if len(rates) < MIN_REFERENCES:
        raise ValueError(
            f"p0 needs at least {MIN_REFERENCES} clean reference models, got {len(rates)}: with fewer the "
            "spread between clean models is unknown"
        )
    r = np.asarray(rates, dtype=float)
    m = len(r)
    worst = clopper_pearson_upper(round(float(r.max()) * queries), queries, PREDICTIVE_QUANTILE)
    mean = float(r.mean())
    sd = float(r.std(ddof=1))
    mean_u = mean + float(stats.t.ppf(CONFIDENCE, m - 1)) * sd / math.sqrt(m)
    var_u = sd**2 * (m - 1) / float(stats.chi2.ppf(1 - CONFIDENCE, m - 1))
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


@dataclass(frozen=True)
class Decision:
    """A test's outcome: ``watermarked`` None means no verdict (``why`` says why)."""

    watermarked: bool | None
    p_value: float
    threshold: int
    why: str = ""


def weak_rate(p0: float) -> float:
    """The key accuracy of the weakest watermark "not found" must rule out: ``WEAK_RATE``, or halfway
    between p0 and 1 when p0 is that high already."""
    return WEAK_RATE if p0 < WEAK_RATE else (1 + p0) / 2


def decide_binomial(matches: int, n: int, p0: float, alpha: float) -> Decision:
    """Found when the exact binomial p-value is ≤ α. "Not found" only when the test had power: at
    least one outcome reaches α, and a watermark at key accuracy :func:`weak_rate` would have
    matched more often than observed with probability ≥ 1 − ``POWER_BETA``. Otherwise no verdict."""
    if n <= 0:
        return Decision(None, math.nan, 1, "no key answer was received")
    p_value = binomial_p_value(matches, n, p0)
    threshold = binomial_threshold(n, p0, alpha)
    if p_value <= alpha:
        return Decision(True, p_value, threshold)
    if threshold > n:
        return Decision(
            None,
            p_value,
            threshold,
            f"the test has no power: with p0 = {p0:.3f} even {n}/{n} matches would not reach alpha {alpha:g} "
            "(more keys, more reference models or a larger alpha are needed)",
        )
    weak = weak_rate(p0)
    if weak > WEAK_RATE:
        return Decision(
            None,
            p_value,
            threshold,
            f"{matches}/{n} matches do not reach 'found' (need {threshold}), and with p0 = {p0:.3f} a clean "
            f"model's chance rate is above {WEAK_RATE:.0%}: the test cannot tell a watermark at "
            f"{WEAK_RATE:.0%}-{weak:.0%} key accuracy from chance, so it cannot say 'not found'",
        )
    miss = float(stats.binom.cdf(matches, n, weak))
    if miss <= POWER_BETA:
        return Decision(False, p_value, threshold)
    return Decision(
        None,
        p_value,
        threshold,
        f"inconclusive: {matches}/{n} matches are too few for 'found' (need {threshold}) but too many "
        f"to rule out a weak watermark at key accuracy {weak:.0%} (P = {miss:.2g} > {POWER_BETA}); "
        "send more keys",
    )


def auc(positive: Sequence[float], negative: Sequence[float]) -> float:
    """Area under the ROC curve: P(a positive scores above a negative), ties counting one half (the
    Mann–Whitney statistic over the midranks); NaN when either side is empty."""
    if not len(positive) or not len(negative):
        return math.nan
    ranks = stats.rankdata(np.concatenate([np.asarray(positive, float), np.asarray(negative, float)]))
    n1, n2 = len(positive), len(negative)
    return float((ranks[:n1].sum() - n1 * (n1 + 1) / 2) / (n1 * n2))


def pattern_rank_p_value(owner: Sequence[int], controls: Sequence[int]) -> float:
    """Exact permutation p-value that the owner's patterns score higher than control patterns.

    Under H0 (the suspect was never trained on the owner's patterns, each a random draw like the
    controls, and all are sent to the same probes in random order) the K owner scores and M
    control scores are exchangeable, so the owner's sum is the sum of a uniformly random K-subset
    of all K + M scores: p = #{K-subsets with sum ≥ observed} / C(K + M, K), counted exactly by
    dynamic programming (ties count against the owner). Smallest possible p: 1 / C(K + M, K).
    """
    scores = [int(v) for v in (*owner, *controls)]
    k = len(owner)
    if k == 0 or not controls:
        return 1.0
    observed = sum(int(v) for v in owner)
    top = sum(sorted(scores, reverse=True)[:k])
    # ways[j][s]: number of j-subsets of the scores seen so far with sum s
    ways = [[0] * (top + 1) for _ in range(k + 1)]
    ways[0][0] = 1
    for v in scores:
        for j in range(k, 0, -1):
            row, prev = ways[j], ways[j - 1]
            for s in range(top, v - 1, -1):
                if prev[s - v]:
                    row[s] += prev[s - v]
    hits = sum(ways[k][observed:])
    return float(hits) / float(math.comb(len(scores), k))


def zhang_threshold_found(matches: int, n: int, tau: float) -> bool:
    """Zhang's threshold test: found when the share of key answers that miss is at most τ."""
    return n > 0 and (n - matches) / n <= tau


def first_hit_accuracy(q: int, p: float) -> float:
    """Zhong 2020 Eq.: Acc(q) = Σ_{θ<q} (1−p)^θ·p = 1 − (1−p)^q, the chance of a hit within q queries."""
    return 1.0 - (1.0 - p) ** q


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
