"""PSI: the arithmetic, the bins, the reading; and its one home (monitoring.psi), which the
row-based and the count-based paths both import, one way."""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from monitoring.psi import (
    MISSING,
    bin_counts,
    psi_band,
    psi_categorical,
    psi_from_shares,
    psi_numeric,
    quantile_edges,
    value_text,
)

MONITORING = Path(__file__).resolve().parents[2] / "monitoring"


def test_psi_from_shares_is_the_textbook_sum() -> None:
    reference, current = np.array([0.5, 0.3, 0.2]), np.array([0.4, 0.4, 0.2])
    expected = (0.4 - 0.5) * np.log(0.4 / 0.5) + (0.4 - 0.3) * np.log(0.4 / 0.3)
    assert psi_from_shares(reference, current, 1e-4) == pytest.approx(expected, rel=1e-12)
    assert psi_from_shares(reference, reference, 1e-4) == 0.0
    assert psi_from_shares(current, reference, 1e-4) == pytest.approx(expected, rel=1e-12)


def test_an_empty_bin_counts_as_epsilon_so_psi_stays_finite() -> None:
    reference, current = np.array([1.0, 0.0]), np.array([0.9, 0.1])
    expected = (0.9 - 1.0) * np.log(0.9) + (0.1 - 0.01) * np.log(0.1 / 0.01)
    assert psi_from_shares(reference, current, 0.01) == pytest.approx(expected, rel=1e-12)
    assert np.isfinite(psi_from_shares(reference, current, 1e-4))


def test_psi_from_shares_refuses_different_bins() -> None:
    with pytest.raises(ValueError, match="same bins on both sides: 2 reference shares, 3"):
        psi_from_shares(np.array([0.5, 0.5]), np.array([0.2, 0.3, 0.5]), 1e-4)


@pytest.mark.parametrize(("psi", "band"), [
    (0.0, "stable"), (0.099, "stable"), (0.1, "watch"), (0.25, "watch"), (0.2501, "drift"),
    (3.0, "drift"),
])
def test_psi_reading_bands(psi: float, band: str) -> None:
    assert psi_band(psi) == band


def test_quantile_edges_are_the_inner_quantiles_of_the_present_values() -> None:
    values = pd.Series([*range(1, 101), None], dtype=float)
    assert quantile_edges(values, 4).tolist() == pytest.approx([25.75, 50.5, 75.25])
    assert quantile_edges(pd.Series([1, 1, 1, 2]), 10).tolist() == pytest.approx(
        [1.0, 1.1, 1.4, 1.7])
    assert quantile_edges(pd.Series([3.0] * 5), 10).tolist() == [3.0]  # duplicates merged
    assert quantile_edges(pd.Series([None, None], dtype=float), 10).size == 0


def test_bin_counts_put_an_edge_value_above_it_and_missing_last() -> None:
    edges = np.array([1.0, 2.0])
    values = pd.Series([0.5, 1.0, 1.5, 2.0, 9.0, None, "n/a"], dtype=object)
    assert bin_counts(values, edges).tolist() == [1, 2, 2, 2]
    assert bin_counts(pd.Series([4.0, None]), np.array([])).tolist() == [1, 1]


def test_value_text_names_missing_values() -> None:
    assert value_text(pd.Series(["a", None, True])).tolist() == ["a", MISSING, "True"]


def test_psi_numeric_is_small_for_the_same_distribution_and_large_for_a_shift() -> None:
    rng = np.random.default_rng(0)
    reference = pd.Series(rng.normal(0, 1, 5000))
    same = psi_numeric(reference, pd.Series(rng.normal(0, 1, 2000)))
    small_shift = psi_numeric(reference, pd.Series(rng.normal(0.3, 1, 2000)))
    shifted = psi_numeric(reference, pd.Series(rng.normal(1.0, 1, 2000)))
    assert psi_band(same) == "stable"
    assert psi_band(small_shift) == "watch"
    assert psi_band(shifted) == "drift"
    assert same < small_shift < shifted


def test_psi_numeric_is_psi_from_shares_over_the_reference_bins() -> None:
    reference, current = pd.Series([1.0, 2, 3, 4, 5, 6, 7, 8]), pd.Series([7.0, 8, 8, None])
    edges = quantile_edges(reference, 4)
    expected = psi_from_shares(bin_counts(reference, edges) / 8, bin_counts(current, edges) / 4,
                               1e-4)
    assert psi_numeric(reference, current, bins=4) == expected
    assert np.isnan(psi_numeric(reference, current.iloc[:0]))


def test_psi_counts_missing_values_as_their_own_bin() -> None:
    rng = np.random.default_rng(1)
    reference = pd.Series(rng.normal(0, 1, 5000))
    current = pd.Series(rng.normal(0, 1, 2000))
    current[:600] = np.nan
    assert psi_band(psi_numeric(reference, current)) == "drift"


def test_psi_categorical_weighs_a_new_category_by_its_share() -> None:
    reference = pd.Series(["a"] * 500 + ["b"] * 500)
    rare_new = pd.Series(["a"] * 495 + ["b"] * 495 + ["new"] * 10)
    common_new = pd.Series(["a"] * 450 + ["b"] * 450 + ["new"] * 100)
    assert psi_categorical(reference, reference) == pytest.approx(0.0)
    # The epsilon keeps PSI finite; 1% in an unseen category is stable, 10% is drift.
    assert np.isfinite(psi_categorical(reference, common_new))
    assert psi_band(psi_categorical(reference, rare_new)) == "stable"
    assert psi_band(psi_categorical(reference, common_new)) == "drift"
    assert np.isnan(psi_categorical(reference, reference.iloc[:0]))


def _imported_modules(path: Path) -> set[str]:
    """Every module ``path`` imports, at the top or inside a function."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
    return found


def test_psi_is_imported_one_way_without_a_cycle() -> None:
    """drift -> drift_statistics -> psi, and drift -> psi; never back (no lazy import either)."""
    assert not {m for m in _imported_modules(MONITORING / "psi.py") if m.startswith("monitoring")}
    assert "monitoring.drift" not in _imported_modules(MONITORING / "drift_statistics.py")
    assert "monitoring.psi" in _imported_modules(MONITORING / "drift_statistics.py")
    assert "monitoring.psi" in _imported_modules(MONITORING / "drift.py")
