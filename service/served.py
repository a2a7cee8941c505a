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
from pydantic import BaseModel

from kernel.contract import DataContract
from kernel.store import ModelEntry, resolve_entry
from service.config import ServiceConfig
from service.schema import batch_request_model, customer_model, example_customer
from service.scoring import Scores
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


