"""The fast column-wise batch validation agrees with the pydantic model built from the contract:
same accepted values, same rejected (row, field, rule) pairs, for JSON-native values and for
text spellings, lenient and strict; the OpenAPI schema of a feature says what it accepts."""

from __future__ import annotations

import functools
import json
import re

import jsonschema
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from kernel.contract import (
    FALSE_SPELLINGS,
    NULL_SPELLINGS,
    TRUE_SPELLINGS,
    WHITESPACE,
    DataContract,
    FeatureSpec,
    categorical_value,
)
from service.feature_values import CATEGORY_MAX_LENGTH, feature_json_schema
from service.schema import batch_request_model, customer_model, example_customer
from service.validation import MAX_REPORTED_ERRORS, BatchDecoder


def strict_copy(contract: DataContract) -> DataContract:
    """The same contract with every feature strict."""
    raw = contract.model_dump()
    for spec in raw["features"].values():
        spec["strict"] = True
    return DataContract.from_dict(raw)


@pytest.fixture(scope="module", params=["lenient", "strict"])
def rules(request, contract):
    """(contract, customer model, batch model of 10 rows, its decoder), lenient or strict."""
    chosen = contract if request.param == "lenient" else strict_copy(contract)
    customer = customer_model(chosen, example_customer(chosen, None))
    batch = batch_request_model(customer, max_rows=10)
    return chosen, customer, batch, BatchDecoder(chosen, batch, 10)


@pytest.fixture(scope="module")
def models(contract):
    customer = customer_model(contract, example_customer(contract, None))
    return customer, batch_request_model(customer, max_rows=10)


def decode_batch(body, contract, max_rows):
    customer = customer_model(contract, example_customer(contract, None))
    return BatchDecoder(contract, batch_request_model(customer, max_rows), max_rows).decode(body)


@st.composite
def _spelled(draw, words):
    """Text as a CSV export may hold it: any case, maybe padded with any whitespace."""
    word = "".join(c.upper() if draw(st.booleans()) else c for c in draw(words))
    pad = st.text(st.sampled_from(WHITESPACE), max_size=2)
    return draw(pad) + word + draw(pad)


NULL_TEXT = _spelled(st.sampled_from(sorted(NULL_SPELLINGS)))


def _value_strategy(spec):
    # One strategy per feature: building them on every draw is what makes the test slow.
    return _strategy_of(spec.model_dump_json())


@functools.cache
def _strategy_of(spec_json: str):
    spec = FeatureSpec.model_validate_json(spec_json)
    junk = st.sampled_from([None, "12", "", "x" * 101, " " + "x" * 100, True, 1, 2.5, -1e9,
                            [1], {"a": 1}, "inf", "1e400", "1_000", "maybe", 10**400])
    if spec.type == "numeric":
        number = st.floats(spec.min, spec.max, allow_nan=False) | st.integers(
            int(spec.min), int(spec.max))
        good = number | _spelled(number.map(repr)) | NULL_TEXT
    elif spec.type == "boolean":
        good = st.booleans() | st.sampled_from([0, 1, 0.0, 1.0, -0.0, 2]) | _spelled(
            st.sampled_from(["yes", "no", "true", "false", "1", "0", "1.0", "y", "off"])
        ) | NULL_TEXT
    elif spec.values:
        good = st.sampled_from(spec.values) | _spelled(st.sampled_from(spec.values)) | NULL_TEXT
    else:
        good = st.sampled_from(["europe", "apac", "africa", "tv", "gift_card"]) | _spelled(
            st.sampled_from(["tv", "Europe"])) | NULL_TEXT | st.sampled_from([7, 2.5, 1.0, -0.0])
    return st.one_of(good, good, good, junk)


@st.composite
def batches(draw, contract):
    rows = []
    for i in range(draw(st.integers(1, 4))):
        row = {contract.id: draw(st.sampled_from([f"C{i}", "", 7, None]) | st.just(f"C{i}"))}
        for name, spec in contract.features.items():
            if draw(st.integers(0, 30)) == 0:
                continue  # omitted field
            row[name] = draw(_value_strategy(spec))
        if draw(st.integers(0, 30)) == 0:
            row["unexpected"] = 1
        rows.append(row)
    return {"customers": rows}


def _errors(exc: ValidationError) -> set[tuple]:
    return {(tuple(e["loc"]), e["type"]) for e in exc.errors()}


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_fast_validation_agrees_with_pydantic(data, rules):
    contract, _, batch_model, decoder = rules
    payload = data.draw(batches(contract))
    body = json.dumps(payload, separators=(",", ":")).encode()  # compact, as orjson writes
    try:
        expected = batch_model.model_validate_json(body)
        expected_errors = None
    except ValidationError as exc:
        expected_errors = _errors(exc)
    try:
        columns = decoder.decode(body)
        got_errors = None
    except ValidationError as exc:
        got_errors = _errors(exc)
    assert (got_errors is None) == (expected_errors is None)
    if expected_errors is None:  # taken column-wise, not by the pydantic fallback
        assert decoder._arrow(body) is not None or decoder._fast(body) is not None
    if expected_errors is not None:
        assert got_errors - {(("customers",), "too_many_errors")} <= expected_errors
        if len(expected_errors) <= MAX_REPORTED_ERRORS:
            assert got_errors == expected_errors
    else:
        for i, customer in enumerate(expected.customers):
            assert columns.ids[i] == getattr(customer, contract.id)
            for name, spec in contract.features.items():
                want, got = getattr(customer, name), columns.features[name][i]
                if want is None:
                    assert got is None or got != got  # None or NaN
                elif spec.type == "categorical":
                    assert got == want
                else:
                    assert got == float(want)


@pytest.mark.parametrize("body, loc, kind", [
    (b"{not json", (), "json_invalid"),
    (b"[]", (), "model_type"),
    (b"{}", ("customers",), "missing"),
    (b'{"customers": {}}', ("customers",), "list_type"),
    (b'{"customers": []}', ("customers",), "too_short"),
    (b'{"customers": [1]}', ("customers", 0), "model_type"),
    (b'{"customers": [], "extra": 1}', ("extra",), "extra_forbidden"),
])
def test_malformed_bodies_name_the_place_and_rule(body, loc, kind, contract):
    with pytest.raises(ValidationError) as caught:
        decode_batch(body, contract, max_rows=10)
    assert (loc, kind) in _errors(caught.value)


def test_too_many_rows_is_one_error(contract):
    body = orjson.dumps({"customers": [{}] * 11})
    with pytest.raises(ValidationError) as caught:
        decode_batch(body, contract, max_rows=10)
    assert (("customers",), "too_long") in _errors(caught.value)


def test_error_list_is_capped_with_a_count_of_the_rest(contract):
    body = orjson.dumps({"customers": [{"customer_id": "x"}] * 40})
    with pytest.raises(ValidationError) as caught:
        decode_batch(body, contract, max_rows=100)
    errors = caught.value.errors()
    assert len(errors) == MAX_REPORTED_ERRORS + 1
    assert errors[-1]["type"] == "too_many_errors"
    assert "more errors not shown" in errors[-1]["msg"]


def test_schema_carries_contract_bounds_sets_and_nullability(contract, models):
    customer, _ = models
    schema = customer.model_json_schema()
    props = schema["properties"]
    assert set(props) == {contract.id, *contract.features}
    for name, spec in contract.features.items():
        text = orjson.dumps(props[name]).decode()
        if spec.min is not None:
            assert f'"minimum":{spec.min}' in text
        if spec.values:
            assert all(v in text for v in spec.values)
        assert (name in schema["required"]) != spec.nullable
        assert "anyOf" not in props[name]  # BentoML would keep only its first member
    assert schema["additionalProperties"] is False
    assert "example" in schema
    customer.model_validate(schema["example"])  # the documented example is valid


def _json_schema(openapi: dict) -> dict:
    """An OpenAPI 3.0 schema as JSON Schema: ``nullable`` becomes a null type."""
    if isinstance(openapi, list):
        return [_json_schema(s) for s in openapi]
    if not isinstance(openapi, dict):
        return openapi
    out = {k: _json_schema(v) for k, v in openapi.items() if k != "nullable"}
    if openapi.get("nullable"):
        out["type"] = [openapi["type"], "null"]
        if "enum" in out:
            out["enum"] = [*out["enum"], None]
    return out


@functools.cache
def _any_value(values: tuple[str, ...] | None):
    """JSON values a client might send for a feature, valid or not."""
    listed = values or ("tv", "europe")
    return st.one_of(
        st.none(), st.booleans(), st.integers(-3, 30_000), st.floats(allow_nan=False,
                                                                     allow_infinity=False),
        st.sampled_from([0, 1, 0.0, 1.0, -0.0, 2.5, 10**20]),
        _spelled(st.sampled_from(sorted(TRUE_SPELLINGS | FALSE_SPELLINGS | NULL_SPELLINGS))),
        _spelled(st.sampled_from(["1.00", "maybe", *listed, "3168", "-1.5e3", ".5", "1e400",
                                  "inf", "1_000", "x" * 99])),
        st.text(max_size=6))


def _accepts(model, name, value) -> bool:
    try:
        model.__pydantic_validator__.validate_assignment(
            model.model_construct(), name, value)
    except ValidationError:
        return False
    return True


@pytest.fixture(scope="module", params=["lenient", "strict"])
def customer_rules(request, contract):
    chosen = contract if request.param == "lenient" else strict_copy(contract)
    return chosen, customer_model(chosen, example_customer(chosen, None))


@pytest.mark.parametrize("feature", ["tenure_days", "satisfaction_score", "plan", "region",
                                     "discount_applied"])
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                  HealthCheck.data_too_large])
@given(data=st.data())
def test_openapi_schema_of_a_feature_says_what_it_accepts(data, customer_rules, feature):
    contract, model = customer_rules
    spec = contract.features[feature]
    value = data.draw(_any_value(tuple(spec.values) if spec.values else None))
    _documented_iff_accepted(model, feature, spec, value)


@pytest.mark.parametrize("feature", ["satisfaction_score", "profiles", "plan", "region",
                                     "discount_applied"])
def test_openapi_schema_documents_every_spelling(customer_rules, feature):
    contract, model = customer_rules
    spec = contract.features[feature]
    words = sorted(TRUE_SPELLINGS | FALSE_SPELLINGS | NULL_SPELLINGS | set(spec.values or []))
    for word in words:
        for value in (word, word.upper(), f" {word.title()}\u3000"):
            _documented_iff_accepted(model, feature, spec, value)


@pytest.mark.parametrize("value", ["0\n", "x\n", "\nx", "x \n"])
def test_a_trailing_newline_is_padding_in_the_schema_too(customer_rules, value):
    """Python's "$" matches before a final newline, ECMAScript's does not: a strict category's
    pattern must refuse "0\n" in both (hypothesis found the first)."""
    contract, model = customer_rules
    _documented_iff_accepted(model, "region", contract.features["region"], value)


def _documented_iff_accepted(model, feature, spec, value) -> None:
    schema = _json_schema(feature_json_schema(spec))
    documented = jsonschema.Draft7Validator(schema).is_valid(value)
    accepted = _accepts(model, feature, value)
    if documented and not accepted:
        # What the schema cannot say: the bounds of a number given as text, text overflowing a
        # float ("1e400"), and a number whose text is over 100 characters (1e100) as a category.
        long_number = isinstance(value, int | float) and not isinstance(value, bool) and \
            len(categorical_value(value)) > CATEGORY_MAX_LENGTH
        assert isinstance(value, str) if spec.type == "numeric" else long_number, value
    else:
        assert documented == accepted, (feature, value, documented, schema)


def test_patterns_are_ecmascript_and_python_alike(contract):
    """Only syntax both read the same way: no Python-only escapes, flags or classes."""
    for name, spec in {**contract.features, **strict_copy(contract).features}.items():
        text = orjson.dumps(feature_json_schema(spec)).decode()
        for pattern in re.findall(r'"pattern":"((?:[^"\\]|\\.)*)"', text):
            pattern = json.loads(f'"{pattern}"')
            re.compile(pattern)
            assert not re.search(r"\\[AZbBdDsSwW]|\(\?[aiLmsux]|\\x", pattern.replace(
                "[\\s\\S]", "")), (name, pattern)


def test_compact_and_pretty_bodies_give_the_same_columns(contract, trained_entry):
    import json

    from tests.servers import request_bodies

    customer = customer_model(contract, example_customer(contract, None))
    decoder = BatchDecoder(contract, batch_request_model(customer, 100), 100)
    payload = {"customers": request_bodies(trained_entry, 60)}
    compact = orjson.dumps(payload)
    assert decoder._arrow(compact) is not None  # the Arrow path takes what JSON libraries write
    pretty = json.dumps(payload, indent=2).encode()
    assert decoder._arrow(pretty) is None
    fast, slow = decoder.decode(compact), decoder.decode(pretty)
    assert list(fast.ids) == list(slow.ids)
    for name in contract.features:
        a, b = fast.features[name], slow.features[name]
        assert all(x == y or (x != x and y != y) or (x is None and y is None)
                   for x, y in zip(a, b, strict=True)), name


@pytest.mark.parametrize("field, sent, send", [
    ("discount_applied", "Yes", "true"),
    ("discount_applied", 0, "false"),
    ("tenure_days", "3168", "3168"),
    ("satisfaction_score", " N/A ", "null"),
    ("plan", " basic ", '"basic"'),
    ("region", 7, '"7"'),
    ("discount_applied", "maybe", "true or false"),
    ("profiles", "", "a number"),  # null, and profiles is not nullable
])
def test_a_strict_field_answers_with_the_json_value_to_send(contract, field, sent, send):
    import asyncio

    from starlette.requests import Request

    from service.http_io import single_customer_spec

    strict = strict_copy(contract)
    customer = customer_model(strict, example_customer(strict, None))
    body = {**example_customer(strict, None), field: sent}
    message = f"send {send}, not {json.dumps(sent)}"
    kinds = {"numeric": "float_type", "boolean": "bool_type", "categorical": "string_type"}
    rule = kinds[contract.features[field].type]

    # /predict: its input spec, as BentoML calls it (a ValidationError answers 400).
    rejected: list = []
    spec = single_customer_spec(customer, lambda endpoint, reasons: rejected.append(
        (endpoint, reasons)))
    payload = orjson.dumps(body)

    async def receive():
        return {"type": "http.request", "body": payload, "more_body": False}

    request = Request({"type": "http", "method": "POST", "path": "/predict", "headers": [],
                       "query_string": b""}, receive)
    with pytest.raises(ValidationError) as caught:
        asyncio.run(spec.from_http_request(request, None))
    (error,) = caught.value.errors()
    assert (error["loc"], error["type"]) == ((field,), rule)
    assert message in error["msg"] and "strict" in error["msg"]
    assert rejected == [("predict", [rule])]  # counted in the rejected-input metric

    # /predict_batch: the column-wise decoder gives the same error for the same row.
    decoder = BatchDecoder(strict, batch_request_model(customer, 10), 10)
    with pytest.raises(ValidationError) as caught:
        decoder.decode(orjson.dumps({"customers": [example_customer(strict, None), body]}))
    (error,) = caught.value.errors()
    assert (error["loc"], error["type"]) == (("customers", 1, field), rule)
    assert message in error["msg"]

    # Lenient, the field reads the value (unless it is unreadable, or null where refused).
    lenient = customer_model(contract, example_customer(contract, None))
    if send not in ("true or false", "a number"):
        lenient.model_validate_json(payload)


def test_a_large_body_parses_on_threads_into_the_same_columns(contract, trained_entry):
    """From PARALLEL_BODY_BYTES Arrow parses the body in one block per thread: the columns
    (values, order, ids) are those of one block."""
    import numpy as np

    from service.validation import PARALLEL_BODY_BYTES
    from tests.servers import request_bodies

    customer = customer_model(contract, example_customer(contract, None))
    some = request_bodies(trained_entry, 1_000)
    rows = [{**r, contract.id: f"c{i}"} for i, r in enumerate(some * 15)]
    body = orjson.dumps({"customers": rows})
    assert len(body) > 2 * PARALLEL_BODY_BYTES  # two blocks at least, with 2 threads
    model = batch_request_model(customer, len(rows))
    one, two = (BatchDecoder(contract, model, len(rows), threads)._arrow(body)
                for threads in (1, 2))
    assert one is not None and two is not None
    assert list(two.ids) == list(one.ids) == [r[contract.id] for r in rows]
    for name in contract.features:
        a, b = one.features[name], two.features[name]
        assert a.dtype == b.dtype, name
        if a.dtype == object:
            assert list(a) == list(b), name
        else:
            np.testing.assert_array_equal(a, b, err_msg=name)


# Text that looks like the boundary between two customers, as it may appear inside strings.
_TRICKY = st.text(st.sampled_from('},{"\\ax\n'), max_size=12)


@given(st.lists(st.dictionaries(st.sampled_from(["a", "b}", '"c"']),
                                st.one_of(_TRICKY, st.integers(-(2**63), 2**63 - 1), st.none()),
                                min_size=1, max_size=3),
                min_size=1, max_size=5))
def test_a_compact_body_splits_into_lines_as_bytes_replace_would(customers):
    from service.validation import _COMPACT_HEAD, _COMPACT_TAIL, _json_lines

    body = orjson.dumps({"customers": customers})
    expected = body[len(_COMPACT_HEAD) - 1:-len(_COMPACT_TAIL) + 1].replace(b'},{"', b'}\n{"')
    assert _json_lines(body).to_pybytes() == expected


def test_a_body_full_of_braces_splits_alike_without_listing_them():
    from service.validation import _json_lines

    rows = [{"customer_id": "}" * 90, "region": "},{" * 30}, {"customer_id": "a"}]
    body = orjson.dumps({"customers": rows * 50})
    assert _json_lines(body).to_pybytes() == body[14:-2].replace(b'},{"', b'}\n{"')


def test_text_ending_in_the_boundary_between_customers_is_read_by_the_slower_path(contract):
    """`},{"` is also where a string ends in `},{`: the newline put there breaks the string,
    Arrow refuses the body, and the slower path reads it as sent."""
    customer = customer_model(contract, example_customer(contract, None))
    decoder = BatchDecoder(contract, batch_request_model(customer, 10), 10)
    rows = [{**example_customer(contract, None), contract.id: cid, "region": region}
            for cid, region in [("a},{", "x},{"), ("b", "europe"), ("c},{", "europe")]]
    body = orjson.dumps({"customers": rows})
    assert b'"a},{","' in body
    assert decoder._arrow(body) is None
    columns = decoder.decode(body)
    assert list(columns.ids) == ["a},{", "b", "c},{"]
    assert list(columns.features["region"]) == ["x},{", "europe", "europe"]


@pytest.mark.parametrize("field", ["customer_id", "region", "plan"])
def test_text_that_is_not_utf8_is_a_400_not_a_crash(contract, field):
    customer = customer_model(contract, example_customer(contract, None))
    decoder = BatchDecoder(contract, batch_request_model(customer, 10), 10)
    good = orjson.dumps({"customers": [example_customer(contract, None)] * 2})
    value = orjson.dumps(example_customer(contract, None)[field])
    broken = good.replace(value, value[:-1] + b'\xff"', 1)
    assert broken != good
    with pytest.raises(ValidationError):
        decoder.decode(broken)


def test_null_categories_decode_alike_through_arrow_and_the_slower_path(contract):
    raw = contract.model_dump()
    raw["features"]["region"]["nullable"] = True
    nullable = DataContract.from_dict(raw)
    customer = customer_model(nullable, example_customer(nullable, None))
    decoder = BatchDecoder(nullable, batch_request_model(customer, 10), 10)
    rows = [{**example_customer(nullable, None), contract.id: f"c{i}"} for i in range(4)]
    rows[1]["region"], rows[2]["region"] = None, "europe"
    compact = orjson.dumps({"customers": rows})
    fast = decoder._arrow(compact)
    slow = decoder.decode(json.dumps({"customers": rows}, indent=1).encode())
    assert fast is not None and fast.features["region"].dtype == object
    assert list(fast.features["region"]) == list(slow.features["region"])
    assert fast.features["region"][1] is None
