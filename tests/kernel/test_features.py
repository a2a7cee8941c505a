"""Derived features on arrays give exactly the numbers training gets from DataFrame.eval."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from kernel.features import ArrayExpression, DerivedFeatures


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    """Values that break naive arithmetic: missing values, zeros, negatives, huge numbers."""
    rng = np.random.default_rng(7)
    n = 3000
    frame = pd.DataFrame({"a": rng.normal(0, 50, n), "b": rng.integers(-3, 4, n).astype(float),
                          "c": rng.uniform(0, 40, n)})
    frame.loc[frame.index[::7], "a"] = np.nan
    frame.loc[frame.index[::11], "b"] = 0.0  # x / 0 and 0 / 0
    frame.loc[frame.index[::13], "c"] = np.nan
    frame.loc[frame.index[::17], "a"] = 0.0
    frame.loc[frame.index[::19], "c"] = 1e308  # overflows to inf when multiplied
    return frame


SUPPORTED = [
    "a / b",
    "c / (30 - c.clip(upper=29))",  # the demo contract's
    "-a * 2 + b",
    "a.abs() / b - 3.5",
    "a.clip(-1, 1)",
    "a.clip(lower=2, upper=-2)",  # reversed bounds: pandas swaps them
    "a.clip(upper=None, lower=0)",
    "(a + b) / (c - 10) * -1",
    "c * c * 10",
    "+a",
]


@pytest.mark.parametrize("expression", SUPPORTED)
def test_array_expression_equals_dataframe_eval(frame, expression):
    compiled = ArrayExpression.compile(expression, frame.columns)
    assert compiled is not None, expression
    got = compiled({c: frame[c].to_numpy() for c in frame.columns})
    expected = np.asarray(pd.to_numeric(frame.eval(expression), errors="coerce"), dtype=float)
    np.testing.assert_array_equal(got, expected)  # bit for bit, NaN and inf included


def test_derived_features_turn_division_by_zero_into_missing_on_both_paths(frame):
    compiled = ArrayExpression.compile("a / b", frame.columns)
    values = compiled({c: frame[c].to_numpy() for c in frame.columns})
    assert np.isinf(values).any()  # the caller (MatrixBuilder) replaces them, as training does
    trained = DerivedFeatures({"r": "a / b"}).transform(frame)["r"].to_numpy()
    np.testing.assert_array_equal(np.where(np.isinf(values), np.nan, values), trained)


@pytest.mark.parametrize("expression", [
    "a // b", "a % b", "a ** 2", "a > b", "a.round()", "a.clip(upper=b)", "a.clip(1, 2, 3)",
    "a.clip(other=1)", "1 / 0", "2", "d + a", "__import__('os').getcwd()", "a +", "-(1)",
])
def test_anything_else_is_left_to_pandas(frame, expression):
    assert ArrayExpression.compile(expression, frame.columns) is None
