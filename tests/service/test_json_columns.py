"""Column-wise JSON texts are exactly what orjson writes for the same values."""

from __future__ import annotations

import numpy as np
import orjson
import pyarrow as pa
from hypothesis import given
from hypothesis import strategies as st

from service.json_columns import (
    few_texts,
    float_texts_with_commas,
    json_rows,
    needs_escape,
    string_texts,
)


def _orjson_texts(values: list) -> list[str]:
    return [orjson.dumps(v, option=orjson.OPT_SERIALIZE_NUMPY).decode() for v in values]


def _read(texts: list[str]) -> list[tuple[type, object]]:
    return [(type(v), v) for v in map(orjson.loads, texts)]


@given(st.lists(st.floats(allow_nan=True, allow_infinity=True), max_size=50))
def test_float_texts_are_orjsons_texts_of_the_python_floats(values):
    array = np.array(values, dtype=float)
    assert float_texts_with_commas(array).to_pylist() == [
        t + "," for t in _orjson_texts(array.tolist())]


@given(st.lists(st.floats(width=32), min_size=1, max_size=50))
def test_float32_texts_are_those_of_their_float64_values(values):
    array = np.array(values, dtype=np.float32)
    assert float_texts_with_commas(array).to_pylist() == [
        t + "," for t in _orjson_texts(array.tolist())]


@given(st.lists(st.text(max_size=6), max_size=20), st.integers(0, 3))
def test_a_string_needs_escaping_exactly_when_orjson_escapes_it(values, start):
    strings = pa.array(values, pa.string()).slice(min(start, len(values)))
    kept = values[min(start, len(values)):]
    assert needs_escape(strings) == any(orjson.dumps(v).decode() != f'"{v}"' for v in kept)


@given(st.lists(st.text(max_size=6), max_size=20), st.integers(0, 3))
def test_arrow_strings_are_quoted_and_escaped_like_orjson(values, start):
    strings = pa.array(values, pa.string()).slice(min(start, len(values)))
    assert string_texts(strings).to_pylist() == _orjson_texts(values[min(start, len(values)):])


@given(st.lists(st.sampled_from([(), ("region",), ("region", 'pl"an'), ("é",)]), max_size=30))
def test_few_texts_are_orjsons_texts(values):
    assert few_texts(values).to_pylist() == _orjson_texts(values)


def test_rows_are_their_pieces_joined_and_concatenated():
    rows = json_rows(["<", pa.array(["a", "bc"]), ">", pa.array(["1", ""])])
    assert isinstance(rows, memoryview) and rows.tobytes() == b"<a>1<bc>"
    assert json_rows([pa.array([], pa.string()), "x"]).tobytes() == b""
