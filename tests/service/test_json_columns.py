"""Column-wise JSON reads back as what orjson writes for the same values: same value, same type.
(Only the spelling of some large numbers differs: ``1e+16`` for ``10000000000000000.0``.)"""

from __future__ import annotations

import numpy as np
import orjson
import pyarrow as pa
from hypothesis import given
from hypothesis import strategies as st

from service.json_columns import (
    few_texts,
    float_texts_with_commas,
    json_objects,
    json_rows,
    json_texts,
    needs_escape,
    string_texts,
)


def _orjson_texts(values: list) -> list[str]:
    return [orjson.dumps(v, option=orjson.OPT_SERIALIZE_NUMPY).decode() for v in values]


def _read(texts: list[str]) -> list[tuple[type, object]]:
    return [(type(v), v) for v in map(orjson.loads, texts)]


@given(st.lists(st.floats(allow_nan=True, allow_infinity=True), min_size=1, max_size=50))
def test_floats_are_written_like_orjson(values):
    array = np.array(values, dtype=float)
    assert _read(json_texts(array).to_pylist()) == _read(_orjson_texts(values))  # inf -> null


@given(st.lists(st.floats(width=32, allow_nan=False, allow_infinity=False), min_size=1))
def test_float32_is_written_as_its_float64_value(values):
    array = np.array(values, dtype=np.float32)
    assert _read(json_texts(array).to_pylist()) == _read(_orjson_texts(array.tolist()))


@given(st.lists(st.one_of(st.none(), st.text(max_size=12)), min_size=1, max_size=50))
def test_strings_are_quoted_and_escaped_like_orjson(values):
    array = np.array(values, dtype=object)
    assert json_texts(array).to_pylist() == _orjson_texts(values)
    assert json_texts(values).to_pylist() == _orjson_texts(values)


def test_booleans_integers_tuples_and_numpy_strings():
    assert json_texts(np.array([1.0, 0.0, np.nan]), boolean=True).to_pylist() == [
        "true", "false", "null"]
    assert json_texts(np.array([True, False])).to_pylist() == ["true", "false"]
    assert json_texts(np.array([3, -7])).to_pylist() == ["3", "-7"]
    assert json_texts([(), ("region", "plan")]).to_pylist() == ["[]", '["region","plan"]']
    assert json_texts(np.array(["LOW", "HIGH"])).to_pylist() == ['"LOW"', '"HIGH"']
    assert json_texts([None, None]).to_pylist() == ["null", "null"]


def test_objects_are_the_rows_of_the_columns_in_field_order():
    text = json_objects({"version": '"v1"', "id": json_texts(["a", 'b"']),
                         "p": json_texts(np.array([0.5, 1.0])), "tag": "null"}, "\n")
    lines = text.decode().splitlines()
    assert lines == ['{"version":"v1","id":"a","p":0.5,"tag":null}',
                     '{"version":"v1","id":"b\\"","p":1.0,"tag":null}']
    assert json_objects({"id": json_texts(np.array([], dtype=object))}, "\n") == b""


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
