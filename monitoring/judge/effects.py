"""Effect sizes with their confidence sequences, and the classical test beside each.

Every function returns an ``Estimate``: the effect (new minus old, or new / old - 1), the
bounds of its confidence sequence at the given ``Boundary``, the test statistic and p-value a
reader expects (McNemar, Wilcoxon, Mann-Whitney, KS, two-proportion z, Welch, DeLong), and how
the half-width would shrink with more data (for "how many more predictions"). The p-values are
shown, not decided on: decisions compare the interval with a tolerance (``decision.py``).

Conventions: ``a`` is the incumbent (champion, stable), ``b`` the newcomer (shadow, canary).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy import stats

from monitoring.judge.sequential import multiplier


@dataclass(frozen=True)
class Boundary:
    """The confidence sequences' level and tuning, with the multiplier at a sample size."""

    alpha: float
    tightest_at: float

    def multiplier(self, t: float) -> float:
        return multiplier(t, self.alpha, self.tightest_at)


@dataclass(frozen=True)
class Estimate:
    effect: float
    low: float
    high: float
    t: float  # the observations the interval rests on (pairs, or the smaller track)
    statistic: float | None = None
    p_value: float | None = None
    # The interval's half-width at another sample size (same spread): for needed sizes.
    half_width_at: Callable[[float], float] | None = None
    # The scale the interval is symmetric on (identity, or log(1 + x) for ratios).
    working: Callable[[float], float] = float


def _scaled(boundary: Boundary, standard_error: float, t: float) -> Callable[[float], float]:
    """Half-width at size s if the standard deviation stays as now: m(s) * se * sqrt(t / s)."""
    return lambda size: boundary.multiplier(size) * standard_error * math.sqrt(t / size)


def _two_sided_normal(z: float) -> float:
    return math.erfc(abs(z) / math.sqrt(2.0))


def two_proportions(x_a: int, n_a: int, x_b: int, n_b: int, boundary: Boundary) -> Estimate:
    """p_b - p_a for two independent samples. Interval: Agresti-Caffo (z^2/4 successes and
    failures added to each sample, so zero counts do not give a zero-width interval) with the
    sequence's multiplier as z; test: pooled two-proportion z."""
    t = min(n_a, n_b)
    m = boundary.multiplier(t)
    pseudo = m * m / 4
    p_a, p_b = x_a / n_a, x_b / n_b
    adj_a, adj_b = (x_a + pseudo) / (n_a + 2 * pseudo), (x_b + pseudo) / (n_b + 2 * pseudo)
    se = math.sqrt(adj_a * (1 - adj_a) / (n_a + 2 * pseudo)
                   + adj_b * (1 - adj_b) / (n_b + 2 * pseudo))
    center = adj_b - adj_a
    pooled = (x_a + x_b) / (n_a + n_b)
    pooled_se = math.sqrt(pooled * (1 - pooled) * (1 / n_a + 1 / n_b))
    z = (p_b - p_a) / pooled_se if pooled_se > 0 else 0.0
    return Estimate(p_b - p_a, center - m * se, center + m * se, t, z, _two_sided_normal(z),
                    _scaled(boundary, se, t))


def proportion(x: int, n: int, boundary: Boundary) -> Estimate:
    """One share x / n. Interval: Wilson's score interval with the sequence's multiplier as z
    (sensible at zero counts). No test: the statistic is the count."""
    m = boundary.multiplier(n)
    m2 = m * m
    center = (x + m2 / 2) / (n + m2)
    half = m / (n + m2) * math.sqrt(x * (n - x) / n + m2 / 4)
    p = x / n
    se = math.sqrt(max(p * (1 - p), 1 / n) / n)
    return Estimate(p, max(0.0, center - half), min(1.0, center + half), n, float(x), None,
                    _scaled(boundary, se, n))


def paired_proportions(only_a: int, only_b: int, n: int, boundary: Boundary) -> Estimate:
    """Share flagged by b minus share flagged by a, on the same n customers: ``only_b``
    customers are flagged by b alone, ``only_a`` by a alone. Interval: Wald with Agresti-Min's
    half a customer added to each cell; test: McNemar's, exact (binomial on the discordant
    pairs); statistic: McNemar's chi-squared."""
    m = boundary.multiplier(n)
    n_adj = n + 2.0
    b_adj, a_adj = only_b + 0.5, only_a + 0.5
    center = (b_adj - a_adj) / n_adj
    se = math.sqrt(max((b_adj + a_adj) / n_adj - center * center, 0.0) / n_adj)
    discordant = only_a + only_b
    if discordant:
        chi2 = (only_b - only_a) ** 2 / discordant
        p = float(stats.binomtest(only_b, discordant, 0.5).pvalue)
    else:
        chi2, p = 0.0, 1.0
    return Estimate((only_b - only_a) / n, center - m * se, center + m * se, n, chi2, p,
                    _scaled(boundary, se, n))


def _log_ratio(log_ratio: float, se: float, t: float, boundary: Boundary,
               statistic: float | None, p_value: float | None) -> Estimate:
    m = boundary.multiplier(t)
    return Estimate(math.expm1(log_ratio), math.expm1(log_ratio - m * se),
                    math.expm1(log_ratio + m * se), t, statistic, p_value,
                    _scaled(boundary, se, t), math.log1p)


def ratio_of_means(a: np.ndarray, b: np.ndarray, boundary: Boundary) -> Estimate:
    """mean(b) / mean(a) - 1 for two independent samples of positive values. Interval: on the
    log of the ratio (delta method); test: Welch's t on the values."""
    mean_a, mean_b = float(a.mean()), float(b.mean())
    if mean_a <= 0 or mean_b <= 0:
        raise ValueError("a ratio of means needs positive means")
    se = math.sqrt(a.var(ddof=1) / (len(a) * mean_a ** 2) + b.var(ddof=1) / (len(b) * mean_b ** 2))
    with warnings.catch_warnings():  # a constant track (all one value) is a fine input here
        warnings.simplefilter("ignore", RuntimeWarning)
        welch = stats.ttest_ind(b, a, equal_var=False)
    t_stat, p = float(welch.statistic), float(welch.pvalue)
    return _log_ratio(math.log(mean_b / mean_a), se, min(len(a), len(b)), boundary,
                      None if math.isnan(t_stat) else t_stat, None if math.isnan(p) else p)


def paired_ratio_of_means(a: np.ndarray, b: np.ndarray, boundary: Boundary) -> Estimate:
    """mean(b) / mean(a) - 1 on the same customers (= mean paired difference / mean(a)).
    Interval: on the log of the ratio, with the pairs' covariance (delta method: the mean of
    b_i / mean_b - a_i / mean_a); test: Wilcoxon's signed rank on the differences."""
    mean_a, mean_b = float(a.mean()), float(b.mean())
    if mean_a <= 0 or mean_b <= 0:
        raise ValueError("a ratio of means needs positive means")
    n = len(a)
    influence = b / mean_b - a / mean_a
    se = math.sqrt(influence.var(ddof=1) / n) if n > 1 else 0.0
    differences = b - a
    if np.any(differences != 0):
        result = stats.wilcoxon(differences, zero_method="zsplit", method="approx")
        w, p = float(result.statistic), float(result.pvalue)
    else:  # identical predictions: nothing to rank
        w, p = 0.0, 1.0
    return _log_ratio(math.log(mean_b / mean_a), se, n, boundary, w, p)


def _pairs_above(sorted_a: np.ndarray, sorted_b: np.ndarray, shift: float) -> float:
    """Mann-Whitney's count of pairs with b_i - shift > a_j, ties counted half (both arrays
    sorted: the searches then run through memory in order, four times faster). Ties need a
    second search only at a shift of exactly 0: elsewhere b_i - shift == a_j is a float
    coincidence."""
    shifted = sorted_b - shift
    below = float(np.searchsorted(sorted_a, shifted, side="left").sum())
    if shift != 0:
        return below
    return (below + np.searchsorted(sorted_a, shifted, side="right").sum()) / 2.0


def hodges_lehmann(a: np.ndarray, b: np.ndarray, boundary: Boundary,
                   resolution: float = 1e-4) -> Estimate:
    """The Hodges-Lehmann shift of b against a (the median of all differences b_i - a_j) and
    its interval by inverting the Mann-Whitney test (the shifts it would not reject, at the
    sequence's multiplier), without forming the n_a x n_b differences: the count of pairs
    above a shift falls as the shift grows, so each is a bisection to ``resolution``.
    Test: Mann-Whitney U (asymptotic), statistic U of b."""
    sorted_a, sorted_b = np.sort(a), np.sort(b)
    n_a, n_b = len(a), len(b)
    total = n_a * n_b
    spread = math.sqrt(n_a * n_b * (n_a + n_b + 1) / 12.0)
    t = min(n_a, n_b)
    m = boundary.multiplier(t)
    lowest = float(sorted_b[0] - sorted_a[-1]) - resolution
    highest = float(sorted_b[-1] - sorted_a[0]) + resolution

    def shift_where(count: float) -> float:
        """The shift at which the count of pairs above falls to ``count``: regula falsi
        (Illinois), a bisection step whenever it stalls; the count is a fine staircase."""
        low, high = lowest, highest
        f_low, f_high = total - count, -count  # count above, minus the target
        side = 0
        while high - low > resolution:
            middle = low + (high - low) * f_low / (f_low - f_high)
            if not low + resolution / 4 < middle < high - resolution / 4:
                middle = (low + high) / 2
            f_middle = _pairs_above(sorted_a, sorted_b, middle) - count
            if f_middle > 0:
                low, f_low = middle, f_middle
                f_high = f_high / 2 if side == 1 else f_high
                side = 1
            else:
                high, f_high = middle, f_middle
                f_low = f_low / 2 if side == -1 else f_low
                side = -1
            if f_middle == 0:
                return middle
        return (low + high) / 2

    estimate = shift_where(total / 2)
    lower = shift_where(min(total / 2 + m * spread, total))
    upper = shift_where(max(total / 2 - m * spread, 0))
    u_stat = _pairs_above(sorted_a, sorted_b, 0.0)
    result = stats.mannwhitneyu(b, a, alternative="two-sided", method="asymptotic")
    p = float(result.pvalue)
    half = (upper - lower) / 2  # shrinks as 1/sqrt(t), like every other interval
    return Estimate(estimate, lower, upper, t, float(u_stat), None if math.isnan(p) else p,
                    _scaled(boundary, half / m, t))


def dkw_time_uniform(n: float, alpha: float) -> float:
    """Time-uniform Dvoretzky-Kiefer-Wolfowitz bound (Howard & Ramdas, "Sequential estimation of
    quantiles", 2022, Theorem 2 with m = 1): with probability 1 - alpha, at every n,
    sup |F_n - F| <= 0.85 sqrt((log log(e n) + 0.8 log(1612 / alpha)) / n)."""
    return 0.85 * math.sqrt((math.log(math.log(math.e * n)) + 0.8 * math.log(1612 / alpha)) / n)


def ks_distance(a: np.ndarray, b: np.ndarray, boundary: Boundary) -> Estimate:
    """The two-sample Kolmogorov-Smirnov distance D (largest gap between the two empirical
    CDFs, 0 to 1) with a distribution-free interval: D moves by at most the two samples'
    time-uniform DKW bounds (alpha split between them). Test: KS (asymptotic p-value)."""
    n_a, n_b = len(a), len(b)
    result = stats.ks_2samp(b, a, method="asymp")
    d = float(result.statistic)
    alpha = boundary.alpha / 2

    def half_width_at(size: float) -> float:
        # Both samples grown in proportion, the smaller to ``size``.
        scale = size / min(n_a, n_b)
        return dkw_time_uniform(n_a * scale, alpha) + dkw_time_uniform(n_b * scale, alpha)

    half = half_width_at(min(n_a, n_b))
    return Estimate(d, max(0.0, d - half), min(1.0, d + half), min(n_a, n_b), d,
                    float(result.pvalue), half_width_at)


def rank_correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman's correlation of two models' scores on the same customers (1 when both rank
    them alike; identical scores give 1, a constant model 0)."""
    if np.array_equal(a, b):
        return 1.0
    if np.ptp(a) == 0 or np.ptp(b) == 0:
        return 0.0
    return float(np.corrcoef(_midranks(a), _midranks(b))[0, 1])


def _midranks(values: np.ndarray) -> np.ndarray:
    """Ranks from 1, ties sharing their average (scipy's rankdata, without its overhead)."""
    order = np.argsort(values, kind="stable")
    ordered = values[order]
    starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1], True])
    average = (starts[:-1] + starts[1:] + 1) / 2.0
    ranks = np.empty(len(values))
    ranks[order] = np.repeat(average, np.diff(starts))
    return ranks


_SPEARMAN_VARIANCE = 1.06  # Fieller, Hartley & Pearson (1957): var(atanh r_s) ~ 1.06 / (n - 3)


def rank_agreement_difference(a_in: np.ndarray, b_in: np.ndarray, r_all: float, n_all: int,
                              boundary: Boundary) -> Estimate:
    """How much less the two models agree on the ranking inside a group of customers than on
    all customers: Spearman's r inside minus ``r_all`` (computed once, on the ``n_all``
    customers). Interval: each r through Fisher's z with Fieller's variance, at half the alpha
    each, then the widest difference; treating the two as independent overstates the
    difference's variance (the group is part of all), so the interval is conservative.
    Test: the z of the difference of the two Fisher z's."""
    n_in = len(a_in)
    r_in = rank_correlation(a_in, b_in)
    z_in, z_all = (math.atanh(min(max(r, -0.9999), 0.9999)) for r in (r_in, r_all))
    se_in = math.sqrt(_SPEARMAN_VARIANCE / max(n_in - 3, 1))
    se_all = math.sqrt(_SPEARMAN_VARIANCE / max(n_all - 3, 1))
    half_alpha = Boundary(boundary.alpha / 2, boundary.tightest_at)
    m_in, m_all = half_alpha.multiplier(n_in), half_alpha.multiplier(n_all)
    low = math.tanh(z_in - m_in * se_in) - math.tanh(z_all + m_all * se_all)
    high = math.tanh(z_in + m_in * se_in) - math.tanh(z_all - m_all * se_all)
    z = (z_in - z_all) / math.hypot(se_in, se_all)
    ratio = n_all / n_in

    def half_width_at(size: float) -> float:
        # Delta method: d tanh(z) = (1 - r^2) dz; all customers grow in proportion.
        def one(r: float, count: float) -> float:
            return ((1 - r ** 2) * half_alpha.multiplier(count)
                    * math.sqrt(_SPEARMAN_VARIANCE / max(count - 3, 1)))
        return one(r_in, size) + one(r_all, size * ratio)

    return Estimate(r_in - r_all, max(low, -2.0), min(high, 2.0), n_in, z,
                    _two_sided_normal(z), half_width_at)


def _placements(scores: np.ndarray, positive: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """ROC-AUC and DeLong's placement values (Sun & Xu 2014: from midranks, O(n log n)):
    for each positive the share of negatives it outranks, for each negative the share of
    positives that outrank it (ties half)."""
    m, n = int(positive.sum()), int((~positive).sum())
    rank_all = stats.rankdata(scores)
    rank_pos = stats.rankdata(scores[positive])
    rank_neg = stats.rankdata(scores[~positive])
    auc = (rank_all[positive].sum() - m * (m + 1) / 2) / (m * n)
    v_pos = (rank_all[positive] - rank_pos) / n
    v_neg = 1.0 - (rank_all[~positive] - rank_neg) / m
    return float(auc), v_pos, v_neg


def delong_paired(labels: np.ndarray, a: np.ndarray, b: np.ndarray,
                  boundary: Boundary) -> Estimate:
    """ROC-AUC of b minus ROC-AUC of a on the same labelled customers, with DeLong's variance
    of the paired difference (DeLong, DeLong & Clarke-Pearson 1988). Test: DeLong's z.
    Raises ValueError without both classes."""
    positive = np.asarray(labels).astype(bool)
    m, n = int(positive.sum()), int((~positive).sum())
    if m < 2 or n < 2:
        raise ValueError("ROC-AUC needs at least two customers of each class")
    auc_a, pos_a, neg_a = _placements(a, positive)
    auc_b, pos_b, neg_b = _placements(b, positive)
    var = (np.var(pos_b - pos_a, ddof=1) / m + np.var(neg_b - neg_a, ddof=1) / n)
    se = math.sqrt(max(var, 0.0))
    t = min(m, n)
    mult = boundary.multiplier(t)
    effect = auc_b - auc_a
    z = effect / se if se > 0 else 0.0
    return Estimate(effect, effect - mult * se, effect + mult * se, t, z,
                    _two_sided_normal(z) if se > 0 else 1.0, _scaled(boundary, se, t))

