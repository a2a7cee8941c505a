"""Drift statistics that add up: counts per partition, merged into exact totals.

PSI needs only the number of current rows in each of the reference's bins (numeric features and
the predicted probability: the reference's quantile bins plus a bin for missing values) or with
each value (categorical and boolean features, missing as a value of its own); the missing-value
and unseen-category shares and the mean probability need only counts and a sum. So
``DriftStatistics.of`` describes any slice of the current rows, ``merge`` adds two slices, and
the result is the same as computing over all rows at once: ``churn drift`` computes one slice
(all rows), ``churn drift --dask`` one per inference-log file. ``detect_drift`` reads PSI,
shares and means from here in both cases, so the two paths cannot disagree.

The label-free performance estimate (``monitoring.estimate``) needs the probabilities
themselves for its ROC-AUC; here it is computed from a histogram of 65,536 equal-width
probability bins (pairs inside one bin count as ties), which is exact up to a bound the
histogram itself gives (``roc_auc_error_bound``; about 1e-5 on the demo model's scores).
Precision, recall and rates are exact sums.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from kernel.contract import DataContract
from kernel.store import PROBABILITY_COLUMN
from monitoring.estimate import PerformanceEstimate
from monitoring.psi import MISSING, bin_counts, psi_from_shares, quantile_edges, value_text

PROBABILITY_BINS = 2**16


def reference_edges(reference: pd.DataFrame, contract: DataContract, bins: int
                    ) -> dict[str, np.ndarray]:
    """Inner quantile edges of each numeric feature (and the probability) in the reference,
    as ``monitoring.psi.psi_numeric`` cuts them."""
    columns = [c for c in contract.numeric if c in reference.columns]
    if PROBABILITY_COLUMN in reference.columns:
        columns.append(PROBABILITY_COLUMN)
    return {column: quantile_edges(reference[column], bins) for column in columns}


@dataclass
class ProbabilityHistogram:
    """What the label-free estimate needs, summed: see the module docstring."""

    threshold: float
    rows: int = 0
    positive_weight: float = 0.0  # sum of p (p clipped to [0, 1])
    flagged: int = 0  # rows with p >= threshold
    flagged_weight: float = 0.0  # sum of p over them
    self_pairs: float = 0.0  # sum of p * (1 - p): a row is never paired with itself
    p_by_bin: np.ndarray = field(default_factory=lambda: np.zeros(PROBABILITY_BINS))
    q_by_bin: np.ndarray = field(default_factory=lambda: np.zeros(PROBABILITY_BINS))

    @classmethod
    def of(cls, probability: np.ndarray, threshold: float) -> ProbabilityHistogram:
        p = np.clip(np.asarray(probability, dtype=float), 0.0, 1.0)
        q = 1.0 - p
        index = np.minimum((p * PROBABILITY_BINS).astype(np.int64), PROBABILITY_BINS - 1)
        flagged = p >= threshold
        return cls(threshold=threshold, rows=len(p), positive_weight=float(p.sum()),
                   flagged=int(flagged.sum()), flagged_weight=float(p[flagged].sum()),
                   self_pairs=float(np.sum(p * q)),
                   p_by_bin=np.bincount(index, weights=p, minlength=PROBABILITY_BINS),
                   q_by_bin=np.bincount(index, weights=q, minlength=PROBABILITY_BINS))

    def merge(self, other: ProbabilityHistogram) -> ProbabilityHistogram:
        return ProbabilityHistogram(
            threshold=self.threshold, rows=self.rows + other.rows,
            positive_weight=self.positive_weight + other.positive_weight,
            flagged=self.flagged + other.flagged,
            flagged_weight=self.flagged_weight + other.flagged_weight,
            self_pairs=self.self_pairs + other.self_pairs,
            p_by_bin=self.p_by_bin + other.p_by_bin, q_by_bin=self.q_by_bin + other.q_by_bin)

    def _pairs(self) -> tuple[float, float, float]:
        """(concordant weight, all pair weight, weight of pairs within one bin)."""
        negatives_below = np.concatenate([[0.0], np.cumsum(self.q_by_bin)[:-1]])
        within = float(np.sum(self.p_by_bin * self.q_by_bin)) - self.self_pairs
        concordant = float(np.sum(self.p_by_bin * negatives_below)) + 0.5 * within
        pairs = self.positive_weight * float(self.q_by_bin.sum()) - self.self_pairs
        return concordant, pairs, within

    def roc_auc_error_bound(self) -> float:
        """How far the histogram's ROC-AUC can be from the exact one (pairs within a bin are
        counted as half concordant; the truth is between none and all of them)."""
        _, pairs, within = self._pairs()
        return 0.0 if pairs <= 1e-9 else 0.5 * max(within, 0.0) / pairs

    def estimate(self) -> PerformanceEstimate:
        """``monitoring.estimate.estimate_performance`` from the sums."""
        concordant, pairs, _ = self._pairs()
        n = self.rows
        return PerformanceEstimate(
            rows=n, threshold=self.threshold,
            roc_auc=None if n < 2 or pairs <= 1e-9 else concordant / pairs,
            precision=self.flagged_weight / self.flagged if self.flagged else None,
            recall=(self.flagged_weight / self.positive_weight if self.positive_weight > 0
                    else None),
            expected_positive_rate=self.positive_weight / n if n else 0.0,
            flagged_rate=self.flagged / n if n else 0.0,
        )


@dataclass
class DriftStatistics:
    """Counts of one slice of rows (typed contract features + optional probability)."""

    rows: int
    missing: dict[str, int]
    bins: dict[str, np.ndarray]  # numeric column -> rows per reference bin, then missing
    values: dict[str, dict[str, int]]  # categorical/boolean feature -> rows per value text
    probability_sum: float = 0.0
    histogram: ProbabilityHistogram | None = None

    @classmethod
    def of(cls, frame: pd.DataFrame, contract: DataContract, edges: dict[str, np.ndarray],
           threshold: float | None = None) -> DriftStatistics:
        """Count ``frame``; ``threshold`` also collects the probability histogram."""
        missing, bins, values = {}, {}, {}
        for column, spec in contract.features.items():
            series = frame[column]
            missing[column] = int(series.isna().sum())
            if spec.type == "numeric":
                bins[column] = bin_counts(series, edges[column])
            else:
                values[column] = value_text(series).value_counts().to_dict()
        probability_sum, histogram = 0.0, None
        if PROBABILITY_COLUMN in frame.columns and PROBABILITY_COLUMN in edges:
            probability = frame[PROBABILITY_COLUMN]
            bins[PROBABILITY_COLUMN] = bin_counts(probability, edges[PROBABILITY_COLUMN])
            probability_sum = float(probability.sum())
            if threshold is not None:
                histogram = ProbabilityHistogram.of(probability.to_numpy(dtype=float),
                                                    threshold)
        return cls(rows=len(frame), missing=missing, bins=bins, values=values,
                   probability_sum=probability_sum, histogram=histogram)

    def merge(self, other: DriftStatistics) -> DriftStatistics:
        values = {}
        for column in self.values.keys() | other.values.keys():
            counts = dict(self.values.get(column, {}))
            for value, count in other.values.get(column, {}).items():
                counts[value] = counts.get(value, 0) + count
            values[column] = counts
        histogram = self.histogram
        if histogram is None:
            histogram = other.histogram
        elif other.histogram is not None:
            histogram = histogram.merge(other.histogram)
        return DriftStatistics(
            rows=self.rows + other.rows,
            missing={c: self.missing.get(c, 0) + other.missing.get(c, 0)
                     for c in self.missing.keys() | other.missing.keys()},
            bins={c: _add(self.bins.get(c), other.bins.get(c))
                  for c in self.bins.keys() | other.bins.keys()},
            values=values, probability_sum=self.probability_sum + other.probability_sum,
            histogram=histogram)

    def missing_share(self, column: str) -> float:
        return self.missing[column] / self.rows if self.rows else float("nan")

    def unseen(self, column: str, vocabulary: list[str], limit: int = 20
               ) -> tuple[float, list[str]]:
        """Share of rows whose value is not in ``vocabulary`` (missing is not unseen), and the
        first ``limit`` such values, sorted."""
        known = set(vocabulary)
        unseen = {v: n for v, n in self.values[column].items() if v != MISSING and v not in known}
        share = sum(unseen.values()) / self.rows if self.rows else 0.0
        return share, sorted(unseen)[:limit]


def _add(a: np.ndarray | None, b: np.ndarray | None) -> np.ndarray:
    if a is None:
        return b
    return a if b is None else a + b


def psi_from_statistics(reference: DriftStatistics, current: DriftStatistics, column: str,
                        epsilon: float) -> float:
    """PSI of ``column`` between two counted slices: the same number as ``psi_numeric`` /
    ``psi_categorical`` over the rows themselves. NaN when either side has no rows."""
    if reference.rows == 0 or current.rows == 0:
        return float("nan")
    if column in reference.bins:
        return psi_from_shares(reference.bins[column] / reference.rows,
                                current.bins[column] / current.rows, epsilon)
    ref, cur = reference.values[column], current.values[column]
    categories = sorted(ref.keys() | cur.keys())
    ref_shares = np.array([ref.get(c, 0) for c in categories]) / reference.rows
    cur_shares = np.array([cur.get(c, 0) for c in categories]) / current.rows
    return psi_from_shares(ref_shares, cur_shares, epsilon)
