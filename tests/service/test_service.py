"""Tiers 1 and 2: the service class called directly, and its ASGI app in-process."""

from __future__ import annotations

import numpy as np
import orjson
import pytest

from tests.servers import frame_of


@pytest.fixture(scope="module")
def service(service_module):
    instance = service_module.ChurnService()
    yield instance
    instance.close_inference_log()


# --- tier 1: the class ---------------------------------------------------------------------

def test_predict_equals_the_stored_model(service, service_module, trained_entry, bodies):
    from service.http_io import Row

    rows = [Row(f"r{i}", service_module.served.customer.model_validate(b))
            for i, b in enumerate(bodies)]
    answers = service.predict(rows)
    expected = trained_entry.model.predict_proba(frame_of(bodies, trained_entry.contract))
    np.testing.assert_allclose([a["churn_probability"] for a in answers], expected,
                               rtol=0, atol=1e-12)
    assert [a["customer_id"] for a in answers] == [b["customer_id"] for b in bodies]
    assert {a["model_version"] for a in answers} == {trained_entry.version}
    assert service.__is_ready__()


def test_predict_batch_summarises(service, service_module, trained_entry, bodies):
    from service.validation import BatchDecoder

    # A batch of known make-up: 3 copies of the riskiest customer (above the HIGH cut-off, the
    # top 10% of training scores) and 5 of the safest (below the business threshold).
    probability = trained_entry.model.predict_proba(frame_of(bodies, trained_entry.contract))
    riskiest, safest = bodies[int(np.argmax(probability))], bodies[int(np.argmin(probability))]
    assert probability.max() >= trained_entry.metadata.risk_cutoffs.high
    assert probability.min() < trained_entry.metadata.threshold
    batch = [riskiest] * 3 + [safest] * 5
    columns = BatchDecoder(trained_entry.contract, service_module.served.batch,
                           10_000).decode(orjson.dumps({"customers": batch}))
    payload = orjson.loads(service.predict_batch(columns).body)
    assert payload["summary"] == {
        "count": 8, "high_risk": 3, "will_churn": 3,
        "mean_probability": pytest.approx((3 * probability.max() + 5 * probability.min()) / 8,
                                          abs=1e-12)}
    assert [p["risk_level"] for p in payload["predictions"]] == ["HIGH"] * 3 + ["LOW"] * 5


# --- tier 2: the ASGI app -----------------------------------------------------------------

def test_asgi_predict_returns_one_object_and_the_request_id(client, bodies, trained_entry):
    response = client.post("/predict", json=bodies[0], headers={"X-Request-ID": "abc-123"})
    assert response.status_code == 200, response.text
    assert response.headers["x-request-id"] == "abc-123"
    answer = response.json()
    expected = trained_entry.model.predict_proba(frame_of(bodies[:1], trained_entry.contract))
    assert answer["churn_probability"] == pytest.approx(float(expected[0]), abs=1e-12)
    assert answer["risk_level"] in {"LOW", "MEDIUM", "HIGH"} and answer["recommendation"]
    generated = client.post("/predict", json=bodies[1]).headers["x-request-id"]
    assert len(generated) == 32


def test_asgi_unseen_category_is_accepted_and_flagged(client, bodies):
    body = {**bodies[0], "region": "antarctica"}
    response = client.post("/predict", json=body)
    assert response.status_code == 200
    assert response.json()["unseen_categories"] == ["region"]


@pytest.mark.parametrize("change, field, rule", [
    ({"tenure_days": -1}, "tenure_days", "greater_than_equal"),
    ({"plan": "platinum"}, "plan", "literal_error"),
    ({"monthly_charge": "twelve"}, "monthly_charge", "float_parsing"),
    ({"monthly_charge": "3e3"}, "monthly_charge", "less_than_equal"),  # text keeps the bounds
    ({"discount_applied": "maybe"}, "discount_applied", "bool_parsing"),
    ({"discount_applied": 2}, "discount_applied", "bool_parsing"),
    ({"region": True}, "region", "string_type"),
    ({"profiles": None}, "profiles", "float_type"),
    ({"profiles": " N/A "}, "profiles", "float_type"),  # null-like text is null
    ({"surprise": 1}, "surprise", "extra_forbidden"),
])
def test_asgi_bad_fields_are_400_naming_field_and_rule(client, bodies, change, field, rule):
    for path, body, loc in [
        ("/predict", {**bodies[0], **change}, [field]),
        ("/predict_batch", {"customers": [bodies[0], {**bodies[1], **change}]},
         ["customers", 1, field]),
    ]:
        response = client.post(path, json=body)
        assert response.status_code == 400, (path, response.text)
        detail = response.json()["detail"]
        assert any(d["loc"] == loc and d["type"] == rule for d in detail), detail
        assert "Traceback" not in response.text


def test_asgi_text_spellings_answer_as_their_json_values(client, bodies):
    """A row as a CSV export holds it (every value text) is scored as its JSON values."""
    typed = bodies[2]
    text = {name: ("Yes" if value else "no") if isinstance(value, bool)
            else "" if value is None else f" {value} " for name, value in typed.items()}
    text["customer_id"] = typed["customer_id"]
    text["auto_renew_enabled"] = 1 if typed["auto_renew_enabled"] else 0
    expected = client.post("/predict", json=typed).json()
    assert client.post("/predict", json=text).json() == expected
    batch = client.post("/predict_batch", json={"customers": [text, typed]}).json()
    assert batch["predictions"] == [expected, expected]


def test_asgi_missing_field_empty_list_over_max_malformed_oversized(client, bodies,
                                                                    service_module):
    missing = {k: v for k, v in bodies[0].items() if k != "tenure_days"}
    assert client.post("/predict", json=missing).json()["detail"][0]["type"] == "missing"
    assert client.post("/predict_batch", json={"customers": []}).status_code == 400
    too_many = {"customers": [bodies[0]] * (service_module.config.max_batch_rows + 1)}
    response = client.post("/predict_batch", json=too_many)
    assert response.status_code == 400 and response.json()["detail"][0]["type"] == "too_long"
    for raw in (b"{", b"null", b"[1, 2]", b"\xff\xfe"):
        assert client.post("/predict", content=raw).status_code == 400
        assert client.post("/predict_batch", content=raw).status_code == 400
    huge = b" " * (service_module.config.max_body_bytes + 1)
    response = client.post("/predict_batch", content=huge)
    assert response.status_code == 413 and response.json()["detail"][0]["loc"] == ["body"]


def test_asgi_docs_show_the_contract_fields(client, trained_entry):
    spec = client.get("/docs.json").json()
    body = spec["paths"]["/predict"]["post"]["requestBody"]["content"]["application/json"]
    assert body["schema"] == {"$ref": "#/components/schemas/Customer"}
    schema = spec["components"]["schemas"]["Customer"]
    contract = trained_entry.contract
    assert set(schema["properties"]) == {contract.id, *contract.features}
    number, text = schema["properties"]["tenure_days"]["oneOf"]
    assert number["minimum"] == contract.features["tenure_days"].min
    assert text["type"] == "string" and "pattern" in text  # numbers stored as text
    assert schema["properties"]["plan"]["oneOf"][0]["enum"] == contract.features["plan"].values
    assert schema["properties"]["satisfaction_score"]["oneOf"][0]["nullable"] is True
    assert set(schema["example"]) == set(schema["properties"])
    answer = spec["paths"]["/predict"]["post"]["responses"]["200"]["content"][
        "application/json"]["schema"]
    assert "churn_probability" in spec["components"]["schemas"][answer["$ref"].split("/")[-1]][
        "properties"]
    assert client.get("/livez").status_code == 200


def test_asgi_every_answer_names_the_served_model(client, bodies, trained_entry):
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json() == {"status": "ready", "model_tag": trained_entry.tag,
                            "model_version": trained_entry.version,
                            "resolved_by": f"{trained_entry.tag} ($CHURN_MODEL_TAG)"}
    for response in (ready, client.post("/predict", json=bodies[0]),
                     client.post("/predict", json={**bodies[0], "tenure_days": -1})):
        assert response.headers["x-model-version"] == trained_entry.version


def test_asgi_batches_are_counted_with_their_wait_and_reason(client, bodies, trained_entry):
    from prometheus_client import REGISTRY

    from kernel.adapters.bentoml_internals import BATCH_REASONS

    labels = {"endpoint": "predict", "model_version": trained_entry.version}

    def value(name: str, **extra: str) -> float:
        return REGISTRY.get_sample_value(name, {**labels, **extra}) or 0.0

    def batches() -> float:
        return sum(value("churn_batches_total", reason=r) for r in BATCH_REASONS)

    before = (batches(), value("churn_batch_size_sum"), value("churn_batch_wait_seconds_count"))
    for body in bodies[:5]:  # one at a time: batches of one
        assert client.post("/predict", json=body).status_code == 200
    after = (batches(), value("churn_batch_size_sum"), value("churn_batch_wait_seconds_count"))
    assert [b - a for a, b in zip(before, after, strict=True)] == [5, 5, 5]
    assert value("churn_batch_wait_seconds_sum") > 0
