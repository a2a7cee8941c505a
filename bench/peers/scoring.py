"""What a peer server does per batch, with the service's own code: the same pydantic model of
the contract validates each customer, ``service.scoring.Scorer`` (the compiled path, checked
against sklearn) scores the batch, and each answer has the service's fields. Imports only what
the peers' virtualenvs hold (no BentoML, no Arrow)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from types import SimpleNamespace

import joblib
import numpy as np

from kernel.contract import DataContract
from kernel.store import EntryMetadata
from service.schema import customer_model, example_customer
from service.scoring import Scorer


class PeerScorer:
    def __init__(self, bundle: str | None = None):
        spec = json.loads(Path(bundle or os.environ["CHURN_PEER_MODEL"]).read_text())
        contract = DataContract.from_yaml(spec["contract"])
        entry = SimpleNamespace(contract=contract, model=joblib.load(spec["model"]),
                                metadata=EntryMetadata.model_validate(spec["metadata"]),
                                tag=spec["tag"], version=spec["version"])
        self.contract = contract
        self.version = entry.version
        self.customer = customer_model(contract, example_customer(contract, None))
        self.scorer = Scorer(entry)

    def validate(self, body: dict | str | bytes) -> object:
        """One customer, or pydantic's ValidationError."""
        if isinstance(body, dict):
            return self.customer.model_validate(body)
        return self.customer.model_validate_json(body)

    def answer(self, customers: list) -> list[dict]:
        features = {name: np.array([getattr(c, name) for c in customers],
                                   dtype=object if spec.type == "categorical" else float)
                    for name, spec in self.contract.features.items()}
        scores = self.scorer.score(features)
        ids = ([getattr(c, self.contract.id) for c in customers] if self.contract.id
               else ["0"] * len(customers))
        return [{"customer_id": cid, "churn_probability": p, "will_churn": w, "risk_level": r,
                 "model_version": self.version, "unseen_categories": list(u)}
                for cid, p, w, r, u in zip(ids, scores.probability.tolist(),
                                           scores.will_churn.tolist(),
                                           scores.risk_level.tolist(), scores.unseen,
                                           strict=True)]
