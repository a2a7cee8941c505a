"""Population stability index: the arithmetic, and the bins it is computed over.

PSI compares two distributions binned the same way: the sum over bins of
``(current - reference) * ln(current / reference)`` of the shares of rows in each bin. Numeric
values fall in bins cut at the reference's inner quantiles, with missing values as a bin of
their own; categorical and boolean values are their own bins (missing as ``<missing>``). An
empty bin counts as ``epsilon`` so a brand-new category keeps PSI finite.

``monitoring.drift`` computes PSI from rows, ``monitoring.drift_statistics`` from counts that
merge across partitions; both bin and compute here, so the two agree to the last digit. This
module imports nothing from either.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import pandas as pd

MISSING = "<missing>"

PsiBand = Literal["stable", "watch", "drift"]


def psi_from_shares(reference: np.ndarray, current: np.ndarray, epsilon: float) -> float:
    """PSI of two share vectors over the same bins (each sums to 1). A share below ``epsilon``
    counts as ``epsilon``. 0 for identical shares, positive otherwise, symmetric in its two
    arguments. Raises ValueError when the vectors differ in length."""
    if len(reference) != len(current):
        raise ValueError(f"PSI needs the same bins on both sides: {len(reference)} reference "
                         f"shares, {len(current)} current shares")
    reference = np.maximum(reference, epsilon)
    current = np.maximum(current, epsilon)
    return float(np.sum((current - reference) * np.log(current / reference)))


def psi_band(psi: float, watch: float = 0.1, drift: float = 0.25) -> PsiBand:
    """The usual reading: below ``watch`` stable, up to ``drift`` watch, above it drift."""
    if psi < watch:
        return "stable"
    return "watch" if psi <= drift else "drift"


def quantile_edges(values: pd.Series, bins: int) -> np.ndarray:
    """The ``bins - 1`` inner quantile edges of the present values (duplicates merged, so
    fewer for a column with few distinct values); empty when no value is present."""
    numbers = pd.to_numeric(values, errors="coerce").to_numpy(dtype=float)
    present = numbers[~np.isnan(numbers)]
    if not len(present):
        return np.array([])
    return np.unique(np.quantile(present, np.linspace(0, 1, bins + 1)[1:-1]))


def bin_counts(values: pd.Series, edges: np.ndarray) -> np.ndarray:
    """Rows per bin: ``len(edges) + 1`` bins cut at ``edges`` (a value equal to an edge falls
    in the bin above it), then one bin of missing (or non-numeric) values."""
    numbers = pd.to_numeric(values, errors="coerce").to_numpy(dtype=float)
    missing = np.isnan(numbers)
    index = np.searchsorted(edges, numbers[~missing], side="right")
    counts = np.bincount(index, minlength=len(edges) + 1)
    return np.append(counts, missing.sum()).astype(np.int64)


def value_text(values: pd.Series) -> pd.Series:
    """Values as the text PSI and the unseen-category share count (missing as ``<missing>``)."""
    return values.astype(object).where(values.notna(), MISSING).astype(str)


def psi_numeric(
    reference: pd.Series, current: pd.Series, bins: int = 10, epsilon: float = 1e-4
) -> float:
    """PSI over reference-quantile bins (+ a bin for missing values). NaN when either side
    has no rows."""
    if len(reference) == 0 or len(current) == 0:
        return float("nan")
    edges = quantile_edges(reference, bins)
    return psi_from_shares(bin_counts(reference, edges) / len(reference),
                           bin_counts(current, edges) / len(current), epsilon)


def psi_categorical(reference: pd.Series, current: pd.Series, epsilon: float = 1e-4) -> float:
    """PSI with one bin per category seen in either sample (+ missing); new ones get epsilon.
    NaN when either side has no rows."""
    if len(reference) == 0 or len(current) == 0:
        return float("nan")
    ref, cur = value_text(reference), value_text(current)
    categories = sorted(set(ref) | set(cur))
    ref_shares = ref.value_counts(normalize=True).reindex(categories, fill_value=0.0)
    cur_shares = cur.value_counts(normalize=True).reindex(categories, fill_value=0.0)
    return psi_from_shares(ref_shares.to_numpy(), cur_shares.to_numpy(), epsilon)
