"""The fast column-wise batch validation agrees with the pydantic model built from the contract:
same accepted values, same rejected (row, field, rule) pairs."""

from __future__ import annotations

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from service.schema import batch_request_model, customer_model, example_customer
from service.validation import MAX_REPORTED_ERRORS, BatchDecoder


@pytest.fixture(scope="module")
def models(contract):
    customer = customer_model(contract, example_customer(contract, None))
    return customer, batch_request_model(customer, max_rows=10)


def decode_batch(body, contract, max_rows):
    customer = customer_model(contract, example_customer(contract, None))
    return BatchDecoder(contract, batch_request_model(customer, max_rows), max_rows).decode(body)


def _value_strategy(spec):
    junk = st.sampled_from([None, "12", "", "x" * 101, True, 1, 2.5, -1e9, [1], {"a": 1}])
    if spec.type == "numeric":
        good = st.floats(spec.min, spec.max, allow_nan=False) | st.integers(
            int(spec.min), int(spec.max))
    elif spec.type == "boolean":
        good = st.booleans()
    elif spec.values:
        good = st.sampled_from(spec.values)
    else:
        good = st.sampled_from(["europe", "apac", "africa", "tv", "gift_card"])
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


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_fast_validation_agrees_with_pydantic(data, contract, models):
    _, batch_model = models
    payload = data.draw(batches(contract))
    body = orjson.dumps(payload)
    try:
        expected = batch_model.model_validate_json(body)
        expected_errors = None
    except ValidationError as exc:
        expected_errors = _errors(exc)
    try:
        columns = decode_batch(body, contract, max_rows=10)
        got_errors = None
    except ValidationError as exc:
        got_errors = _errors(exc)
    assert (got_errors is None) == (expected_errors is None)
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
    assert schema["additionalProperties"] is False
    assert "example" in schema
    customer.model_validate(schema["example"])  # the documented example is valid


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
    assert fast.ids == slow.ids
    for name in contract.features:
        a, b = fast.features[name], slow.features[name]
        assert all(x == y or (x != x and y != y) or (x is None and y is None)
                   for x, y in zip(a, b, strict=True)), name
