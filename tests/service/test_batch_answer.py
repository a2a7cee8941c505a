"""The /predict_batch body built a column at a time (``service.served.batch_body``) is the text
orjson writes of the answer dicts: the same bytes, so a client reads the same values of the
same types in the same order, whatever the ids, probabilities and unseen categories."""

from __future__ import annotations

import numpy as np
import orjson
import pytest

from service.config import ServiceConfig
from service.schema import batch_request_model, customer_model, example_customer
from service.scoring import NO_UNSEEN, RISK_LEVELS, Scorer, Scores
from service.served import COLUMNWISE_ROWS, answers, batch_body, batch_summary
from service.validation import BatchDecoder, CustomerColumns
from tests.servers import request_bodies

ADVICE = ServiceConfig().recommendations
# Ids whose JSON text is not the id between quotes, and some that are, unusual as they look.
ODD_IDS = ['say "hi"', "back\\slash", "tab\there", "line\nbreak", "\x01", "naïve-客户-🙂",
           "</script>", "\u2028", "{},[]"]


def orjson_body(scores: Scores, ids, version: str) -> bytes:
    """What /predict_batch wrote before: orjson over the answer dicts."""
    return orjson.dumps({"model_version": version, "summary": batch_summary(scores),
                         "predictions": answers(scores, list(ids), version, ADVICE)},
                        option=orjson.OPT_SERIALIZE_NUMPY)


def assert_same_body(scores: Scores, ids: list[str], version: str = "v1") -> dict:
    body = batch_body(scores, CustomerColumns(ids=ids, features={}), version, ADVICE)
    expected = orjson_body(scores, ids, version)
    assert body == expected
    payload = orjson.loads(body)
    assert payload == orjson.loads(expected)
    return payload


def synthetic_scores(probability: np.ndarray, unseen: list[tuple[str, ...]] | None = None,
                     risk_level: np.ndarray | None = None) -> Scores:
    level = np.searchsorted([0.3, 0.7], probability, side="right")
    return Scores(probability=probability, will_churn=probability >= 0.3,
                  risk_level=RISK_LEVELS[level] if risk_level is None else risk_level,
                  unseen=unseen if unseen is not None else [NO_UNSEEN] * len(probability))


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_probabilities_read_back_as_the_same_floats(dtype):
    rng = np.random.default_rng(7)
    edges = [0.0, 1.0, 0.5, 1e-7, 0.1 + 0.2, 1 / 3, 5e-324, np.nan, 0.9999999999999999]
    probability = np.concatenate([edges, rng.random(COLUMNWISE_ROWS)]).astype(dtype)
    ids = [f"C{i}" for i in range(len(probability))]
    payload = assert_same_body(synthetic_scores(probability), ids)
    first = payload["predictions"][0]
    assert type(first["churn_probability"]) is float and first["churn_probability"] == 0.0
    assert list(first) == ["customer_id", "churn_probability", "will_churn", "risk_level",
                           "recommendation", "model_version", "unseen_categories"]
    assert list(payload) == ["model_version", "summary", "predictions"]


def test_ids_that_need_escaping_and_mixed_unseen_categories():
    n = COLUMNWISE_ROWS + 3
    probability = np.random.default_rng(8).random(n)
    ids = [f"C{i}" for i in range(n)]
    for i, odd in enumerate(ODD_IDS):
        ids[5 * i] = odd
    unseen = [NO_UNSEEN] * n
    unseen[1], unseen[9], unseen[-1] = ("region",), ("region", "payment_method"), ("region",)
    payload = assert_same_body(synthetic_scores(probability, unseen), ids)
    assert [p["customer_id"] for p in payload["predictions"]] == ids
    assert payload["predictions"][9]["unseen_categories"] == ["region", "payment_method"]


def test_unusual_ids_without_escapes_and_every_row_unseen():
    n = COLUMNWISE_ROWS
    ids = [f"naïve-{i}-🙂" for i in range(n)]
    unseen = [("region",) for _ in range(n)]  # equal, not one shared tuple
    assert_same_body(synthetic_scores(np.linspace(0, 1, n), unseen), ids)


def test_small_batches_and_unknown_risk_levels_are_answered_alike():
    assert_same_body(synthetic_scores(np.array([0.2, 0.9])), ["a", 'b"'])
    n = COLUMNWISE_ROWS
    probability = np.linspace(0, 1, n)
    levels = np.array(["LOW", "UNHEARD"] * (n // 2), dtype=object)
    assert_same_body(synthetic_scores(probability, risk_level=levels), [str(i) for i in range(n)])


def test_a_scored_batch_decoded_by_arrow_answers_as_before(trained_entry):
    """The real path: a compact body through the Arrow decoder (its ids kept as Arrow
    strings), scored by the model, with odd ids and unseen categories."""
    contract = trained_entry.contract
    bodies = request_bodies(trained_entry, COLUMNWISE_ROWS + 88)
    for i, odd in enumerate(ODD_IDS):
        bodies[7 * i][contract.id] = odd
    bodies[3]["region"] = bodies[11]["region"] = "antarctica"
    bodies[11]["payment_method"] = "barter"
    customer = customer_model(contract, example_customer(contract, None))
    decoder = BatchDecoder(contract, batch_request_model(customer, len(bodies)), len(bodies))
    columns = decoder.decode(orjson.dumps({"customers": bodies}))
    assert columns.arrow_ids is not None and columns.arrow_ids.to_pylist() == list(columns.ids)
    scores = Scorer(trained_entry, ADVICE).score(columns.features)
    body = batch_body(scores, columns, trained_entry.version, ADVICE)
    assert body == orjson_body(scores, columns.ids, trained_entry.version)
    predictions = orjson.loads(body)["predictions"]
    assert [p["customer_id"] for p in predictions] == [b[contract.id] for b in bodies]
    assert predictions[11]["unseen_categories"] == ["region", "payment_method"]


def test_asgi_predict_batch_answers_a_large_batch_as_the_answer_dicts(client, service_module,
                                                                     trained_entry):
    contract = trained_entry.contract
    bodies = request_bodies(trained_entry, COLUMNWISE_ROWS + 10, prefix="big")
    bodies[0][contract.id], bodies[1]["region"] = 'quote " and \\', "antarctica"
    response = client.post("/predict_batch", json={"customers": bodies})
    assert response.status_code == 200, response.text
    customer = customer_model(contract, example_customer(contract, None))
    columns = BatchDecoder(contract, batch_request_model(customer, len(bodies)),
                           len(bodies)).decode(orjson.dumps({"customers": bodies}))
    scores = Scorer(trained_entry, service_module.config.recommendations).score(
        columns.features)
    expected = {"model_version": service_module.VERSION, "summary": batch_summary(scores),
                "predictions": answers(scores, columns.ids, service_module.VERSION,
                                       service_module.config.recommendations)}
    assert orjson.loads(response.content) == orjson.loads(orjson.dumps(expected))
