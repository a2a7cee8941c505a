"""Which model this service serves, and everything built from it before the first request.

The model is chosen by the one identity rule (``kernel.store.choose_model``): a pod names it with
``CHURN_MODEL_TAG`` (or the config's ``model_tag``); the champion of the only dataset in the store
is only the local default. The request schema, the OpenAPI example and the answers are then built
from the contract stored *with that model*, and every answer, log line, metric and inference-log
record carries its version.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import orjson
import pyarrow as pa
from pydantic import BaseModel

from kernel.contract import DataContract
from kernel.store import ModelEntry, resolve_entry
from service.config import ServiceConfig
from service.json_columns import (
    few_texts,
    float_texts_with_commas,
    json_rows,
    needs_escape,
    string_texts,
)
from service.schema import batch_request_model, customer_model, example_customer
from service.scoring import RISK_LEVELS, Scores, all_alike
from service.validation import CustomerColumns


@dataclass(frozen=True)
class ServedModel:
    entry: ModelEntry
    customer: type[BaseModel]  # one /predict body
    batch: type[BaseModel]  # one /predict_batch body

    @property
    def contract(self) -> DataContract:
        return self.entry.contract

    @property
    def identity(self) -> dict[str, str]:
        """What /readyz answers and every log line names."""
        return {"model_tag": self.entry.tag, "model_version": self.entry.version,
                "resolved_by": self.entry.resolved_by}

    def columns(self, customers: list[BaseModel]) -> CustomerColumns:
        """Validated /predict bodies (one per request of a batch) as scorer columns."""
        contract = self.contract
        features = {
            name: np.array([getattr(c, name) for c in customers],
                           dtype=object if spec.type == "categorical" else float)
            for name, spec in contract.features.items()}
        # Without an id column a /predict customer is row 0 of its own request.
        ids = ([getattr(c, contract.id) for c in customers] if contract.id
               else ["0"] * len(customers))
        return CustomerColumns(ids=ids, features=features)


def serve_model(config: ServiceConfig) -> ServedModel:
    """Resolve the model and build its request models. Raises StoreError naming what is
    missing (no model, or several datasets and nothing says which)."""
    entry = resolve_entry(None, configured_tag=config.model_tag, dataset=config.model_name)
    contract = entry.contract
    reference = entry.reference
    example = example_customer(
        contract, reference.head(1).to_dict("records")[0] if len(reference) else None)
    customer = customer_model(contract, example)
    return ServedModel(entry, customer, batch_request_model(customer, config.max_batch_rows))


# Below this many answers, building and writing the dicts costs less than Arrow's fixed
# ~0.16 ms (both cost about 0.27 ms at 350 to 400 answers).
COLUMNWISE_ROWS = 400


def answers(scores: Scores, ids: list[str], version: str,
            advice: dict[str, str]) -> list[dict]:
    """One JSON-ready answer per scored customer, in request order."""
    return [
        {"customer_id": cid, "churn_probability": p, "will_churn": w, "risk_level": r,
         "recommendation": advice.get(r, ""), "model_version": version,
         "unseen_categories": list(u)}
        for cid, p, w, r, u in zip(ids, scores.probability.tolist(),
                                   scores.will_churn.tolist(), scores.risk_level.tolist(),
                                   scores.unseen, strict=True)
    ]


def batch_summary(scores: Scores) -> dict:
    return {
        "count": len(scores.probability),
        "high_risk": int(np.sum(scores.risk_level == "HIGH")),
        "will_churn": int(np.sum(scores.will_churn)),
        "mean_probability": float(scores.probability.mean()),
    }


def batch_body(scores: Scores, columns: CustomerColumns, version: str,
               advice: dict[str, str]) -> bytes:
    """The JSON body of a /predict_batch answer for the scored ``columns``: ``{"model_version",
    "summary", "predictions": answers(...)}``, the same text orjson writes of it. From
    COLUMNWISE_ROWS answers, their text is built a column at a time (``answer_rows``) and
    copied once into the body: 2 ms for 10,000 answers, where building and writing the dicts
    costs 7."""
    head = {"model_version": version, "summary": batch_summary(scores)}
    rows = (answer_rows(scores, columns.id_strings(), version, advice)
            if len(columns) >= COLUMNWISE_ROWS else None)
    if rows is None:
        return orjson.dumps({**head, "predictions": answers(scores, columns.ids, version,
                                                           advice)})
    return b"".join((orjson.dumps(head)[:-1], b',"predictions":[', rows[:-1], b"]}"))


def answer_rows(scores: Scores, ids: pa.StringArray, version: str,
                advice: dict[str, str]) -> memoryview | None:
    """The JSON text of each of ``answers(...)``, each followed by a comma, concatenated (a
    view of Arrow's buffer); None if a risk level is not one the scorer answers.

    The fields after the probability depend only on the row's decision and risk level (and on
    its unseen categories, when some row has one): their text is one of six, written once by
    orjson and taken for each row."""
    n = len(scores.probability)
    level = np.full(n, -1, dtype=np.intp)
    for i, name in enumerate(RISK_LEVELS):
        level[scores.risk_level == name] = i
    if n == 0 or (level < 0).any():
        return None
    # Usually no row has an unseen category: every row then shares the text "[]".
    shared = all_alike(scores.unseen)
    unseen = orjson.dumps(scores.unseen[0]).decode() + "}," if shared else ""
    rests = []  # the same fields, in the same order, as answers()
    for name in RISK_LEVELS:
        for will in (False, True):
            fields = orjson.dumps({"will_churn": will, "risk_level": name,
                                   "recommendation": advice.get(name, ""),
                                   "model_version": version}).decode()
            rests.append(fields[1:-1] + ',"unseen_categories":' + unseen)
    rest = pa.array(rests, pa.string()).take(2 * level + scores.will_churn)
    if needs_escape(ids):  # orjson's texts of the ids, quotes included
        pieces = ['{"customer_id":', string_texts(ids), ',"churn_probability":']
    else:  # an id without a character to escape is its own JSON text between quotes
        pieces = ['{"customer_id":"', ids, '","churn_probability":']
    pieces += [float_texts_with_commas(scores.probability), rest]
    if not shared:
        pieces += [few_texts(scores.unseen), "},"]
    return json_rows(pieces)
