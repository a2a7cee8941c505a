"""The data contract: what a churn dataset must look like, and the checks that enforce it.

A contract is a small YAML file (see ``configs/streaming_churn.contract.yaml``). Training,
batch scoring and the service all validate through this module, so they cannot disagree.
This module imports only pandas, numpy, pyarrow, pydantic and yaml: it is packed into the Bento.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

from kernel.yaml_model import load_yaml_model, validate_mapping

ROW_COLUMN = "row"  # a row's position, for tables without an id column

# --- The parsing rule of training and serving (docs/contract.md, "How values are read") ------
# The column parsers (parse_numeric, parse_boolean, parse_categorical) read the cells of training
# and scoring tables; the value parsers (numeric_value, boolean_value, categorical_value) read one
# JSON value of an API request. Both strip text (str.strip), compare it lower-cased with these
# spellings and match numbers with NUMBER_PATTERN; tests/kernel/test_contract.py proves they
# give the same answer for every spelling.
TRUE_SPELLINGS = frozenset({"1", "1.0", "true", "t", "yes", "y", "on"})
FALSE_SPELLINGS = frozenset({"0", "0.0", "false", "f", "no", "n", "off"})
# Text that means "no value" (as written by spreadsheets, pandas and databases).
NULL_SPELLINGS = frozenset({"", "nan", "na", "n/a", "null", "none", "<na>", "nat"})
# A number written as text, once stripped: decimal digits with optional sign, point and exponent
# ("3168", "-1.5e3", ".5"); not "inf", "1,000", "1_000" or non-ASCII digits. One pattern for
# Python's re, Arrow's RE2 and the ECMAScript regular expressions of the OpenAPI document.
NUMBER_PATTERN = r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?"
_NUMBER = re.compile(NUMBER_PATTERN)
# What str.strip() removes (no code point above U+3000 is whitespace).
WHITESPACE = "".join(c for c in map(chr, range(0x3001)) if c.isspace())


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FeatureSpec(_Strict):
    type: Literal["numeric", "categorical", "boolean"]
    min: float | None = None
    max: float | None = None
    nullable: bool = False
    # A listed set of values is closed: anything else breaks the contract.
    # Without it the set is open and unseen values are tolerated (and flagged when served).
    values: list[str] | None = None
    # Declared business knowledge, enforced on tree models: more of an "increasing" feature
    # never lowers the predicted risk, all else equal.
    monotone: Literal["increasing", "decreasing"] | None = None
    # The API takes only the JSON type (a number, true/false, a string) and answers any other
    # spelling with a 400 naming the JSON value to send. Training reads the column as usual.
    strict: bool = False
    description: str = ""

    @model_validator(mode="after")
    def _consistent(self) -> FeatureSpec:
        if self.type != "numeric" and (self.min is not None or self.max is not None):
            raise ValueError("min/max only apply to numeric features")
        if self.type != "categorical" and self.values is not None:
            raise ValueError("values only apply to categorical features")
        if self.type == "categorical" and self.monotone is not None:
            raise ValueError("monotone does not apply to categorical features")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min {self.min} is above max {self.max}")
        return self


class TargetSpec(_Strict):
    column: str
    positive: str | int | bool = 1


class Costs(_Strict):
    """Economics of a retention offer, used to pick the decision threshold."""

    saved_customer_value: float = Field(600.0, gt=0, description="value kept when a churner stays")
    offer_cost: float = Field(10.0, ge=0, description="cost of one retention offer")
    offer_success_rate: float = Field(
        1.0, gt=0, le=1, description="share of targeted churners the offer actually keeps"
    )


class QualityFloor(_Strict):
    roc_auc: float = Field(0.5, ge=0, le=1)
    pr_auc: float = Field(0.0, ge=0, le=1)


class DataContract(_Strict):
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_\-]*$")
    target: TargetSpec
    # Without an id column rows are identified by their position (from 0) in the table,
    # the rejects file and batch output (column ``row``), and within their request.
    id: str | None = None
    event_time: str | None = None
    drop: list[str] = []
    features: dict[str, FeatureSpec]
    # Extra numeric features as pandas expressions over declared features, e.g.
    # ``charge_per_profile: monthly_charge / profiles``. Computed inside the served pipeline.
    derived: dict[str, str] = {}
    costs: Costs = Costs()
    quality_floor: QualityFloor = QualityFloor()
    min_rows: int = Field(200, ge=10)
    min_positives: int = Field(20, ge=2)
    # A churn rate this low is almost always a broken label pipeline, not a business.
    min_positive_rate: float = Field(0.005, ge=0, lt=1)

    @model_validator(mode="after")
    def _no_forbidden_features(self) -> DataContract:
        if not self.features:
            raise ValueError("a contract declares at least one feature")
        forbidden = {self.target.column, *self.drop}
        if self.id:
            forbidden.add(self.id)
        if self.event_time:
            forbidden.add(self.event_time)
        clash = sorted(forbidden & set(self.features))
        if clash:
            raise ValueError(f"target, id, event_time and drop columns cannot be features: {clash}")
        for name, expression in self.derived.items():
            if name in self.features:
                raise ValueError(f"derived feature {name!r} shadows a declared feature")
            used = set(re.findall(r"[A-Za-z_][A-Za-z0-9_]*", expression))
            banned = sorted(used & forbidden)
            if banned:
                raise ValueError(f"derived feature {name!r} uses non-feature columns {banned}")
            monotone = sorted(c for c in used & set(self.features) if self.features[c].monotone)
            if monotone:
                # A derived column would let the model undo the declared monotone effect.
                raise ValueError(
                    f"derived feature {name!r} uses monotone features {monotone}; "
                    "the monotone guarantee would not hold"
                )
        return self

    @classmethod
    def from_yaml(cls, path: Path) -> DataContract:
        """Read a contract file; raises ContractError with a readable message."""
        return load_yaml_model(cls, path, "contract", ContractError)

    @classmethod
    def from_dict(cls, raw: object, source: str = "contract") -> DataContract:
        return validate_mapping(cls, raw, source, ContractError)

    def to_yaml(self) -> str:
        raw = self.model_dump(mode="json", exclude_defaults=False)
        for spec in raw["features"].values():
            if not spec["strict"]:  # written only when set: a stored contract stays readable
                del spec["strict"]  # by releases before the option (extra keys are refused)
        return yaml.safe_dump(raw, sort_keys=False)

    @property
    def row_key(self) -> str:
        """The column that identifies a row in outputs: the id, else ``row`` (its position)."""
        return self.id or ROW_COLUMN

    @property
    def numeric(self) -> list[str]:
        return [c for c, f in self.features.items() if f.type == "numeric"]

    @property
    def categorical(self) -> list[str]:
        return [c for c, f in self.features.items() if f.type == "categorical"]

    @property
    def boolean(self) -> list[str]:
        return [c for c, f in self.features.items() if f.type == "boolean"]


class ContractError(ValueError):
    """The contract file itself is unreadable or inconsistent."""


@dataclass(frozen=True)
class RuleBreak:
    """One broken rule: which column, which rule, how many rows (and which)."""

    column: str
    rule: str
    rows: int
    examples: tuple[str, ...] = ()

    def __str__(self) -> str:
        sample = f" (e.g. {', '.join(self.examples)})" if self.examples else ""
        noun = "row" if self.rows == 1 else "rows"
        return f'column "{self.column}": {self.rows} {noun} {self.rule}{sample}'


class ContractViolation(ValueError):
    """Data breaks its contract. ``problems`` lists every broken rule, not just the first."""

    def __init__(self, problems: Iterable[RuleBreak], total_rows: int | None = None) -> None:
        self.problems = list(problems)
        self.total_rows = total_rows
        of = f" (of {total_rows} rows)" if total_rows is not None else ""
        super().__init__(
            f"{len(self.problems)} contract rule(s) broken{of}: "
            + "; ".join(str(p) for p in self.problems)
        )


@dataclass(frozen=True)
class ValidatedData:
    """Training data that passed its contract: typed features, 0/1 target, ids, times."""

    features: pd.DataFrame
    target: pd.Series
    ids: pd.Series
    event_time: pd.Series | None
    ignored_columns: list[str]


def _examples(values: pd.Series, limit: int = 3) -> tuple[str, ...]:
    return tuple(repr(v) if isinstance(v, str) else str(v) for v in pd.unique(values)[:limit])


_NULL_TEXT = pa.array(sorted(NULL_SPELLINGS), pa.string())
_TRUE_TEXT = pa.array(sorted(TRUE_SPELLINGS), pa.string())
_FALSE_TEXT = pa.array(sorted(FALSE_SPELLINGS), pa.string())


def read_text(text: pa.Array | pa.ChunkedArray) -> pa.Array | pa.ChunkedArray:
    """Text as the parsers read it: stripped as ``str.strip`` strips, null where null-like.

    Spellings are compared with ASCII lower-casing: no other character lower-cases into one of
    their letters, so this is what ``str.lower`` gives (a test checks every code point)."""
    text = pc.utf8_trim(text, characters=WHITESPACE)
    return pc.if_else(pc.is_in(pc.ascii_lower(text), value_set=_NULL_TEXT), None, text)


def _text_cells(raw: pd.Series) -> pa.Array:
    """Each cell as text (a number as pandas writes it), read by ``read_text``."""
    try:
        text = pa.array(raw.to_numpy(dtype=object), pa.string(), from_pandas=True)
    except (pa.ArrowInvalid, pa.ArrowTypeError):  # numbers or other objects among the text
        text = pa.array(raw.astype("string"))
    return read_text(text)


def parse_numeric(raw: pd.Series) -> tuple[pd.Series, np.ndarray]:
    """Numbers, or numbers stored as text (``NUMBER_PATTERN``, read exactly as Python's
    ``float`` reads it). Blank and null-like text is missing; infinities are not numbers.
    Returns (values, not_numeric)."""
    if pd.api.types.is_bool_dtype(raw):
        return raw.astype(float), np.zeros(len(raw), dtype=bool)
    if pd.api.types.is_numeric_dtype(raw):
        values = raw.astype(float)
        infinite = np.isinf(values.to_numpy())
        return values.mask(infinite), infinite
    text = _text_cells(raw)
    is_number = pc.match_substring_regex(text, f"^{NUMBER_PATTERN}$")
    # Arrow's cast rounds correctly, as float() does (pandas' to_numeric does not).
    numbers = pc.cast(pc.if_else(is_number, text, None), pa.float64())
    values = numbers.to_numpy(zero_copy_only=False, writable=True)
    finite = np.isfinite(values)
    values[~finite] = np.nan  # "1e400" overflows: not a number
    not_numeric = text.is_valid().to_numpy(zero_copy_only=False) & ~finite
    return pd.Series(values, index=raw.index), not_numeric


def parse_boolean(raw: pd.Series) -> tuple[pd.Series, np.ndarray]:
    """0/1, true/false, yes/no (any case, ``TRUE_SPELLINGS``/``FALSE_SPELLINGS``).
    Returns (float 0/1 with NaN, not_boolean mask)."""
    if pd.api.types.is_bool_dtype(raw):
        return raw.astype(float), np.zeros(len(raw), dtype=bool)
    if pd.api.types.is_numeric_dtype(raw):
        numbers = raw.to_numpy(dtype=float, na_value=np.nan)
        values = np.where(numbers == 1, 1.0, np.where(numbers == 0, 0.0, np.nan))
        return pd.Series(values, index=raw.index), np.isnan(values) & ~np.isnan(numbers)
    text = pc.ascii_lower(_text_cells(raw))
    values = pc.if_else(pc.is_in(text, value_set=_TRUE_TEXT), 1.0,
                        pc.if_else(pc.is_in(text, value_set=_FALSE_TEXT), 0.0, None))
    values = values.to_numpy(zero_copy_only=False, writable=True)
    not_boolean = text.is_valid().to_numpy(zero_copy_only=False) & np.isnan(values)
    return pd.Series(values, index=raw.index), not_boolean


def parse_categorical(raw: pd.Series) -> pd.Series:
    """Strings, stripped; blanks are missing. A whole number becomes its digits ("1", not
    "1.0"), any other number its shortest text ("2.5")."""
    if pd.api.types.is_float_dtype(raw):
        numbers = raw.to_numpy(dtype=float)
        small_whole = (numbers == np.trunc(numbers)) & (np.abs(numbers) < 2**53)
        text = np.full(len(numbers), None, dtype=object)
        text[small_whole] = numbers[small_whole].astype(np.int64).astype(str)
        rest = ~small_whole & ~np.isnan(numbers)
        text[rest] = [category_of_number(x) for x in numbers[rest]]
        raw = pd.Series(text, index=raw.index, dtype=object)
    text = _text_cells(raw).to_numpy(zero_copy_only=False, writable=True)
    return pd.Series(text, index=raw.index, dtype=object)


def category_of_number(number: float) -> str:
    """The category a number stands for: its digits when whole, else its shortest text."""
    return str(int(number)) if float(number).is_integer() else repr(float(number))


def numeric_value(value: str | float) -> float | None:
    """One JSON value as ``parse_numeric`` reads a cell: a finite number, or text holding one;
    None for blank or null-like text. Raises ValueError for anything else (true/false too)."""
    if isinstance(value, str):
        text = value.strip()
        if text.lower() in NULL_SPELLINGS:
            return None
        if _NUMBER.fullmatch(text) is None:
            raise ValueError(f"{value!r} is not a number")
        number = float(text)
    elif isinstance(value, int | float) and not isinstance(value, bool):
        try:
            number = float(value)
        except OverflowError:
            raise ValueError(f"{value!r} is too large") from None
    else:
        raise ValueError(f"{value!r} is not a number")
    if not math.isfinite(number):
        raise ValueError(f"{value!r} is not a finite number")
    return number


def boolean_value(value: str | bool | float) -> bool | None:
    """One JSON value as ``parse_boolean`` reads a cell: true/false, the numbers 0/1, or a text
    spelling of the contract (any case); None for blank or null-like text. Raises ValueError."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        text = value.strip().lower()
        if text in NULL_SPELLINGS:
            return None
        if text in TRUE_SPELLINGS:
            return True
        if text in FALSE_SPELLINGS:
            return False
    elif isinstance(value, int | float):
        if value == 1:
            return True
        if value == 0:
            return False
    raise ValueError(f"{value!r} is not a boolean")


def categorical_value(value: str | float) -> str | None:
    """One JSON value as ``parse_categorical`` reads a cell: text stripped, a finite number as
    its category text; None for blank or null-like text. Raises ValueError (true/false too)."""
    if isinstance(value, str):
        text = value.strip()
        return None if text.lower() in NULL_SPELLINGS else text
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if isinstance(value, float) and math.isfinite(value):
        return category_of_number(value)
    raise ValueError(f"{value!r} is not text")


def coerce_features(
    frame: pd.DataFrame, contract: DataContract
) -> tuple[pd.DataFrame, list[RuleBreak], np.ndarray]:
    """Type every declared feature per the contract and check each value against its rules.

    Returns the typed features (float for numeric and boolean, object for categorical),
    the rule breaks, and a per-row boolean mask of rows that break any rule.
    Columns that are missing entirely are reported, not raised.
    """
    n = len(frame)
    problems: list[RuleBreak] = []
    bad_rows = np.zeros(n, dtype=bool)
    typed: dict[str, pd.Series] = {}

    def record(column: str, rule: str, mask: np.ndarray, values: pd.Series) -> None:
        count = int(mask.sum())
        if count:
            nonlocal bad_rows
            bad_rows |= mask
            problems.append(RuleBreak(column, rule, count, _examples(values[mask])))

    for column, spec in contract.features.items():
        if column not in frame.columns:
            problems.append(RuleBreak(column, "missing: declared feature not in the data", n))
            bad_rows[:] = True
            continue
        raw = frame[column]
        wrong = np.zeros(n, dtype=bool)
        if spec.type == "numeric":
            values, wrong = parse_numeric(raw)
            record(column, "not numeric", wrong, raw)
            if spec.min is not None:
                record(column, f"below min {spec.min:g}", (values < spec.min).to_numpy(), raw)
            if spec.max is not None:
                record(column, f"above max {spec.max:g}", (values > spec.max).to_numpy(), raw)
        elif spec.type == "boolean":
            values, wrong = parse_boolean(raw)
            record(column, "not a boolean (expected 0/1, true/false, yes/no)", wrong, raw)
        else:
            values = parse_categorical(raw)
            if spec.values is not None:
                outside = (~values.isin(spec.values) & values.notna()).to_numpy()
                record(column, f"outside the allowed values {spec.values}", outside, values)
        if not spec.nullable:
            # Unparseable values were reported above; here only genuinely empty cells count.
            missing = values.isna().to_numpy() & ~wrong
            record(column, "null but the contract says not nullable", missing, raw)
        typed[column] = values
    features = pd.DataFrame(typed, index=frame.index)
    return features, problems, bad_rows


def validate_training_data(frame: pd.DataFrame, contract: DataContract) -> ValidatedData:
    """Check a whole training table against its contract before any training happens.

    Raises ContractViolation listing every problem together (missing columns, types, ranges,
    category sets, nulls, target, row count, duplicate ids, event times).
    """
    n = len(frame)
    problems: list[RuleBreak] = []
    required = [c for c in (contract.target.column, contract.id, contract.event_time) if c]
    for column in required:
        if column not in frame.columns:
            role = (
                "target"
                if column == contract.target.column
                else "id"
                if column == contract.id
                else "event_time"
            )
            problems.append(RuleBreak(column, f"missing: the contract's {role} column", n))

    features, feature_problems, _ = coerce_features(frame, contract)
    problems += feature_problems

    target = pd.Series(dtype=float)
    if contract.target.column in frame.columns:
        target, target_problems = _parse_target(frame[contract.target.column], contract)
        problems += target_problems

    if contract.id is None:
        ids = pd.Series(np.arange(n).astype(str), index=frame.index)
    elif contract.id in frame.columns:
        ids = frame[contract.id]
    else:
        ids = pd.Series(dtype=object)
    if contract.id is not None and contract.id in frame.columns:
        dup = ids.duplicated(keep=False).to_numpy() & ids.notna().to_numpy()
        if dup.any():
            problems.append(
                RuleBreak(contract.id, "duplicate id", int(dup.sum()), _examples(ids[dup]))
            )
        if ids.isna().any():
            problems.append(RuleBreak(contract.id, "missing id", int(ids.isna().sum())))

    event_time = None
    if contract.event_time and contract.event_time in frame.columns:
        raw_time = frame[contract.event_time]
        event_time = pd.to_datetime(raw_time, errors="coerce", utc=True,
                                    format="mixed")
        bad = event_time.isna().to_numpy()
        if bad.any():
            problems.append(
                RuleBreak(contract.event_time, "not a date/time", int(bad.sum()),
                          _examples(raw_time[bad]))
            )

    if n < contract.min_rows:
        problems.append(
            RuleBreak("<table>", f"present, fewer than min_rows {contract.min_rows}", n)
        )

    if problems:
        raise ContractViolation(problems, total_rows=n)

    declared = set(contract.features) | set(required) | set(contract.drop)
    ignored = [c for c in frame.columns if c not in declared]
    return ValidatedData(
        features=features,
        target=target.astype(int),
        ids=ids.astype(str),
        event_time=event_time,
        ignored_columns=ignored,
    )


def _parse_target(raw: pd.Series, contract: DataContract) -> tuple[pd.Series, list[RuleBreak]]:
    column = contract.target.column
    problems: list[RuleBreak] = []
    missing = raw.isna() | (raw.astype("string").str.strip() == "")
    if missing.any():
        problems.append(RuleBreak(column, "missing target", int(missing.sum())))
    positive = str(contract.target.positive).strip().lower()
    text = raw.astype("string").str.strip().str.lower()
    if pd.api.types.is_numeric_dtype(raw) or pd.api.types.is_bool_dtype(raw):
        text = raw.astype(float).map(lambda v: f"{v:g}").astype("string")
        text = text.replace({"1": "1", "0": "0"})
        positive = {"true": "1", "false": "0"}.get(positive, positive)
    target = (text == positive).fillna(False).astype(int)
    classes = text[~missing].nunique()
    if classes > 2:
        problems.append(RuleBreak(column, f"has {classes} distinct values; a target has two",
                                  int((~missing).sum()), _examples(raw[~missing], 4)))
    positives = int(target[~missing].sum())
    negatives = int((~missing).sum()) - positives
    if positives == 0 or negatives == 0:
        problems.append(
            RuleBreak(column, f"single class: {positives} positive ({contract.target.positive!r}) "
                      f"and {negatives} negative", int((~missing).sum()))
        )
    elif positives < contract.min_positives:
        problems.append(
            RuleBreak(column, f"too few positives: fewer than min_positives "
                      f"{contract.min_positives}", positives)
        )
    elif positives < contract.min_positive_rate * (positives + negatives):
        problems.append(
            RuleBreak(column, f"positive ({contract.target.positive!r}), a rate of "
                      f"{positives / (positives + negatives):.2%}, below min_positive_rate "
                      f"{contract.min_positive_rate:.2%}: have the labels collapsed?", positives)
        )
    return target, problems


def split_valid_rows(
    frame: pd.DataFrame, contract: DataContract, first_row: int = 0
) -> tuple[pd.DataFrame, pd.DataFrame, pd.Series]:
    """For scoring: typed features of rows that keep the contract, and the rejects.

    Returns (features of valid rows, rejected raw rows with a ``reject_reason`` column, and the
    ids of the valid rows). Without an id column, a row's id is its position in the whole table
    (``first_row`` is the position of this chunk's first row), and the rejects carry it in a
    ``row`` column. A missing feature column rejects every row.
    """
    features, problems, bad = coerce_features(frame, contract)
    positions = pd.Series(np.arange(first_row, first_row + len(frame)).astype(str),
                          index=frame.index)
    if contract.id is None:
        ids = positions
    elif contract.id in frame.columns:
        ids = frame[contract.id]
        missing_id = ids.isna().to_numpy()
        if missing_id.any():
            problems.append(RuleBreak(contract.id, "missing id", int(missing_id.sum())))
            bad = bad | missing_id
    else:
        ids = positions
    reasons = row_reasons(frame, features, contract, bad)
    rejects = frame.loc[bad].copy()
    if contract.id is None:
        rejects[ROW_COLUMN] = positions[bad].to_numpy()
    rejects["reject_reason"] = reasons
    return features.loc[~bad], rejects, ids[~bad].astype(str)


def row_reasons(
    frame: pd.DataFrame, features: pd.DataFrame, contract: DataContract, bad: np.ndarray
) -> list[str]:
    """One readable reason per bad row, naming every broken column and rule."""
    parts: list[list[str]] = [[] for _ in range(int(bad.sum()))]
    positions = np.flatnonzero(bad)
    for column, spec in contract.features.items():
        if column not in frame.columns:
            for p in parts:
                p.append(f"{column}: missing column")
            continue
        raw = frame[column].iloc[positions]
        values = features[column].iloc[positions]
        msgs = np.full(len(positions), "", dtype=object)
        if spec.type == "numeric":
            _, wrong = parse_numeric(raw)
            msgs[wrong] = f"{column}: not numeric"
            if spec.min is not None:
                msgs[(values < spec.min).to_numpy()] = f"{column}: below min {spec.min:g}"
            if spec.max is not None:
                msgs[(values > spec.max).to_numpy()] = f"{column}: above max {spec.max:g}"
        elif spec.type == "boolean":
            _, wrong = parse_boolean(raw)
            msgs[wrong] = f"{column}: not a boolean"
        elif spec.values is not None:
            outside = (~values.isin(spec.values) & values.notna()).to_numpy()
            msgs[outside] = f"{column}: outside the allowed values"
        if not spec.nullable:
            msgs[(values.isna() & (msgs == "")).to_numpy()] = f"{column}: null, not nullable"
        for i, msg in enumerate(msgs):
            if msg:
                parts[i].append(msg)
    if contract.id is not None and contract.id in frame.columns:
        missing_id = frame[contract.id].iloc[positions].isna().to_numpy()
        for i in np.flatnonzero(missing_id):
            parts[i].append(f"{contract.id}: missing id")
    return ["; ".join(p) for p in parts]
