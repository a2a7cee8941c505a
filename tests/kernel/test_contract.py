"""Data tests: the contract rejects each kind of bad data with a message naming column, count
and rule, and reports every problem together; training reads values by the same rule as the API."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from kernel.contract import (
    FALSE_SPELLINGS,
    NULL_SPELLINGS,
    NUMBER_PATTERN,
    TRUE_SPELLINGS,
    WHITESPACE,
    ContractError,
    ContractViolation,
    DataContract,
    boolean_value,
    categorical_value,
    numeric_value,
    parse_boolean,
    parse_categorical,
    parse_numeric,
    split_valid_rows,
    validate_training_data,
)
from training.generate import GeneratorConfig, generate_customers


@pytest.fixture(scope="module")
def customers() -> pd.DataFrame:
    return generate_customers(GeneratorConfig(rows=600, seed=3))


def problems_of(frame: pd.DataFrame, contract: DataContract) -> list[str]:
    with pytest.raises(ContractViolation) as info:
        validate_training_data(frame, contract)
    return [str(p) for p in info.value.problems]


def test_clean_generated_data_passes(customers, contract):
    result = validate_training_data(customers, contract)
    assert list(result.features.columns) == list(contract.features)
    assert set(result.target.unique()) == {0, 1}
    # Leakage and id columns never reach the features.
    assert not {"cancellation_reason", "days_until_cancellation", "customer_id"} & set(
        result.features.columns)


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (lambda f: f.drop(columns=["tenure_days"]),
         'column "tenure_days": 600 rows missing: declared feature not in the data'),
        (lambda f: f.assign(tenure_days=f["tenure_days"].astype(object).where(
            f.index >= 5, "abc")), 'column "tenure_days": 5 rows not numeric'),
        (lambda f: f.assign(satisfaction_score=f["satisfaction_score"].where(
            f.index >= 7, 9.0)), 'column "satisfaction_score": 7 rows above max 5'),
        (lambda f: f.assign(tenure_days=f["tenure_days"].where(f.index >= 3, -1)),
         'column "tenure_days": 3 rows below min 0'),
        (lambda f: f.assign(plan=f["plan"].where(f.index >= 4, "gold")),
         'column "plan": 4 rows outside the allowed values'),
        (lambda f: f.assign(monthly_charge=f["monthly_charge"].where(f.index >= 2)),
         'column "monthly_charge": 2 rows null but the contract says not nullable'),
        (lambda f: f.assign(auto_renew_enabled=f["auto_renew_enabled"].astype(object).where(
            f.index >= 6, "maybe")), 'column "auto_renew_enabled": 6 rows not a boolean'),
        (lambda f: f.assign(churned=f["churned"].astype(float).where(f.index >= 8)),
         'column "churned": 8 rows missing target'),
        (lambda f: f.assign(churned=0), 'column "churned": 600 rows single class'),
        (lambda f: f.drop(columns=["churned"]),
         "column \"churned\": 600 rows missing: the contract's target column"),
        (lambda f: f.assign(customer_id=f["customer_id"].where(f.index >= 2, "C1")),
         'column "customer_id": 2 rows duplicate id'),
        (lambda f: f.head(50), 'column "<table>": 50 rows present, fewer than min_rows 200'),
        (lambda f: f.assign(snapshot_date=f["snapshot_date"].where(f.index >= 3, "soon")),
         'column "snapshot_date": 3 rows not a date/time'),
    ],
    ids=["missing-column", "wrong-type", "above-max", "below-min", "closed-category", "null",
         "boolean", "missing-target", "single-class", "no-target", "duplicate-id", "too-few-rows",
         "bad-event-time"],
)
def test_each_kind_of_bad_data_is_named(customers, contract, mutate, expected):
    found = problems_of(mutate(customers.copy()), contract)
    assert any(p.startswith(expected) for p in found), found


def test_all_problems_are_reported_together(customers, contract):
    bad = customers.copy()
    bad.loc[:2, "tenure_days"] = -5
    bad.loc[:9, "plan"] = "platinum"
    bad = bad.drop(columns=["age"])
    with pytest.raises(ContractViolation) as info:
        validate_training_data(bad, contract)
    columns = {p.column for p in info.value.problems}
    assert columns == {"tenure_days", "plan", "age"}
    assert "(of 600 rows)" in str(info.value)


def test_numbers_stored_as_text_with_blanks_are_parsed(customers, contract):
    text = customers.astype(str)
    text.loc[:19, "satisfaction_score"] = " "  # blank = missing, and the column is nullable
    text.loc[:4, "auto_renew_enabled"] = ["yes", "No", "1", "FALSE", "t"]
    result = validate_training_data(text, contract)
    assert result.features["satisfaction_score"].iloc[:20].isna().all()
    assert result.features["auto_renew_enabled"].iloc[:5].tolist() == [1.0, 0.0, 1.0, 0.0, 1.0]
    assert result.features["tenure_days"].dtype == float


def test_target_with_text_labels(customers, contract):
    relabelled = customers.assign(churned=np.where(customers["churned"] == 1, "Yes", "No"))
    spec = contract.model_copy(update={"target": contract.target.model_copy(
        update={"positive": "Yes"})})
    result = validate_training_data(relabelled, spec)
    assert result.target.sum() == customers["churned"].sum()


def test_undeclared_columns_are_reported_and_ignored(customers, contract):
    result = validate_training_data(customers.assign(favourite_colour="red"), contract)
    assert result.ignored_columns == ["favourite_colour"]


def test_scoring_splits_rejects_with_reasons(customers, contract):
    bad = customers.copy()
    bad.loc[0, "tenure_days"] = -1
    bad.loc[1, "plan"] = "gold"
    valid, rejects, ids = split_valid_rows(bad, contract)
    assert len(valid) == len(bad) - 2 and len(ids) == len(valid)
    assert rejects["reject_reason"].tolist() == [
        "tenure_days: below min 0", "plan: outside the allowed values"]


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"name": "x", "target": {"column": "y"}, "id": "i", "features": {}}, "at least one"),
        ({"name": "x", "target": {"column": "y"}, "id": "i",
          "features": {"y": {"type": "numeric"}}}, "cannot be features"),
        ({"name": "x", "target": {"column": "y"}, "id": "i",
          "features": {"a": {"type": "wrong"}}}, "features.a.type"),
        ({"name": "x", "target": {"column": "y"}, "id": "i",
          "features": {"a": {"type": "numeric", "monotone": "increasing"}},
          "derived": {"b": "a * 2"}}, "monotone guarantee"),
    ],
)
def test_inconsistent_contracts_are_refused(raw, message):
    with pytest.raises(ContractError, match=message):
        DataContract.from_dict(raw)


def test_collapsed_labels_are_refused_with_the_rate(contract):
    import numpy as np
    import pandas as pd

    from kernel.contract import ContractViolation, validate_training_data
    from training.generate import GeneratorConfig, generate_customers

    frame = generate_customers(GeneratorConfig(rows=10_000, seed=1))
    positives = np.flatnonzero(frame["churned"].to_numpy() == 1)
    frame.loc[positives[30:], "churned"] = 0  # 30 churners left of 10,000: 0.30%
    with pytest.raises(ContractViolation) as raised:
        validate_training_data(pd.DataFrame(frame), contract)
    assert 'column "churned": 30 rows positive (1), a rate of 0.30%, below ' \
           "min_positive_rate 0.50%" in str(raised.value)


# --- One parsing rule: the value parsers (API) read what the column parsers (training) read ---

SPELLINGS = sorted(TRUE_SPELLINGS | FALSE_SPELLINGS | NULL_SPELLINGS)


@st.composite
def written(draw, words):
    """A word as a spreadsheet might hold it: any case, padded with any whitespace."""
    word = "".join(c.upper() if draw(st.booleans()) else c for c in draw(words))
    pad = st.text(st.sampled_from(WHITESPACE), max_size=2)
    return draw(pad) + word + draw(pad)


CELL_TEXT = st.one_of(
    written(st.sampled_from(SPELLINGS)),
    written(st.from_regex(NUMBER_PATTERN, fullmatch=True)),
    written(st.sampled_from(["inf", "-Infinity", "1_000", "1,000", "0x10", "1e400", "١٢", "- 5",
                             "maybe", "yes please", "1.00", "-0", "+1", "N/A", "\u212a"])),
    st.text(max_size=8),
)


def _read_each(read, values):
    """The value parser over each value: its result, or "error"."""
    out = []
    for value in values:
        try:
            out.append(read(value))
        except ValueError:
            out.append("error")
    return out


def _as_column(values, unreadable):
    return ["error" if bad else (None if v != v else v) for v, bad in
            zip(values.tolist(), unreadable, strict=True)]


@settings(max_examples=200, deadline=None)
@given(st.lists(CELL_TEXT, min_size=1, max_size=30))
def test_value_parsers_read_text_as_the_column_parsers_do(cells):
    column = pd.Series(cells, dtype=object)
    values, unreadable = parse_numeric(column)
    assert _as_column(values, unreadable) == _read_each(numeric_value, cells)
    values, unreadable = parse_boolean(column)
    expected = [v if v in ("error", None) else float(v) for v in _read_each(boolean_value, cells)]
    assert _as_column(values, unreadable) == expected
    assert parse_categorical(column).tolist() == _read_each(categorical_value, cells)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(allow_nan=False, allow_infinity=False)
                | st.sampled_from([0.0, -0.0, 1.0, 2.0, 0.5, 1e20, 3.0]), min_size=1,
                max_size=20),
       st.lists(st.integers(-2**62, 2**62) | st.sampled_from([0, 1, 2]), min_size=1,
                max_size=20))
def test_value_parsers_read_numbers_as_the_column_parsers_do(floats, integers):
    for numbers, dtype in ((floats, float), (integers, "int64")):
        column = pd.Series(numbers, dtype=dtype)
        values, unreadable = parse_numeric(column)
        assert _as_column(values, unreadable) == [float(n) for n in numbers]
        values, unreadable = parse_boolean(column)
        expected = _read_each(boolean_value, numbers)
        assert _as_column(values, unreadable) == [
            v if v == "error" else float(v) for v in expected]
        assert parse_categorical(column).tolist() == _read_each(categorical_value, numbers)


@pytest.mark.parametrize(("text", "number"), [
    ("3168", 3168.0), (" 3168 ", 3168.0), ("\t-1.5e3\n", -1500.0), (".5", 0.5), ("5.", 5.0),
    ("+7", 7.0), ("0005", 5.0), ("1E-3", 0.001), ("", None), (" N/A ", None), ("null", None),
    ("0.000008631789223499", 0.000008631789223499),  # pandas' to_numeric reads 8.6317892234e-06
    ("29.9711890537384775", 29.9711890537384775),
])
def test_numbers_stored_as_text_read_as_float_reads_them(text, number):
    assert numeric_value(text) == number
    values, unreadable = parse_numeric(pd.Series([text], dtype=object))
    assert not unreadable.any()
    assert (values.iloc[0] == number) if number is not None else values.isna().all()


@pytest.mark.parametrize("text", ["inf", "-Infinity", "NaN?", "1e400", "1_000", "1,000", "0x10",
                                  "١٢", "- 5", "twelve", "1.5.2", "e5", "."])
def test_text_that_is_no_finite_number_is_refused_by_both(text):
    with pytest.raises(ValueError):
        numeric_value(text)
    assert parse_numeric(pd.Series([text], dtype=object))[1].all()


@pytest.mark.parametrize(("value", "expected"), [
    (True, True), (False, False), (1, True), (0, False), (1.0, True), (0.0, False),
    ("Yes", True), (" no ", False), ("TRUE", True), ("f", False), ("On", True), ("1.0", True),
    ("0", False), ("", None), ("NA", None), ("none", None),
])
def test_booleans_take_every_spelling_of_the_contract(value, expected):
    assert boolean_value(value) is expected


@pytest.mark.parametrize("value", [2, -1, 0.5, "maybe", "1.00", "yess", "T R U E"])
def test_other_booleans_are_refused(value):
    with pytest.raises(ValueError):
        boolean_value(value)


@pytest.mark.parametrize(("value", "expected"), [
    (" premium ", "premium"), ("N/A", None), ("", None), (1, "1"), (1.0, "1"), (2.5, "2.5"),
    (-0.0, "0"), (10**20, str(10**20)),
])
def test_categories_are_stripped_text_and_numbers_their_digits(value, expected):
    assert categorical_value(value) == expected


def test_true_false_is_neither_a_number_nor_a_category():
    for read in (numeric_value, categorical_value):
        with pytest.raises(ValueError):
            read(True)


def test_spellings_compare_alike_under_ascii_and_unicode_lower_casing():
    # The column parsers lower-case with Arrow's ascii_lower, the value parsers with str.lower:
    # equal on spellings only if no non-ASCII character lower-cases into their alphabet.
    alphabet = set("".join(SPELLINGS))
    clashes = [hex(c) for c in range(0x80, 0x110000) if set(chr(c).lower()) & alphabet]
    assert clashes == []


def test_whitespace_is_exactly_what_str_strip_removes():
    assert all(not chr(c).isspace() for c in range(0x3001, 0x110000))
    padded = WHITESPACE + "x" + WHITESPACE
    assert padded.strip() == "x"
    assert parse_categorical(pd.Series([padded], dtype=object)).tolist() == ["x"]


def test_strict_is_an_api_option_training_reads_the_column_as_usual(customers, contract):
    strict = DataContract.from_dict({**contract.model_dump(), "features": {
        **contract.model_dump()["features"],
        "auto_renew_enabled": {"type": "boolean", "strict": True}}})
    assert strict.features["auto_renew_enabled"].strict
    assert not contract.features["auto_renew_enabled"].strict  # lenient unless it says so
    # Stored with the model; written only where set, so older releases still read the entry.
    assert strict.to_yaml().count("strict:") == 1
    assert DataContract.from_dict(yaml.safe_load(strict.to_yaml())) == strict
    text = customers.assign(auto_renew_enabled=np.where(customers["auto_renew_enabled"] == 1,
                                                        "Yes", "No"))
    result = validate_training_data(text, strict)
    assert result.features["auto_renew_enabled"].tolist() == \
        customers["auto_renew_enabled"].astype(float).tolist()
