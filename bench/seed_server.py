"""The baseline: a seed-style FastAPI server (pydantic body -> one-row DataFrame -> predict_proba).

Run by ``bench/serving.py`` as ``uvicorn bench.seed_server:app``; the model tag comes from
``CHURN_BENCH_MODEL`` (default: the champion). Deliberately naive, like the project's seed.
"""

from __future__ import annotations

import os

import pandas as pd
from fastapi import FastAPI

from kernel.store import resolve_entry
from service.schema import customer_model, example_customer

entry = resolve_entry(os.environ.get("CHURN_BENCH_MODEL"))
contract = entry.contract
Customer = customer_model(contract, example_customer(contract, None))
app = FastAPI(title="seed-style churn server")


@app.post("/predict")
def predict(customer: Customer) -> dict:  # type: ignore[valid-type]
    frame = pd.DataFrame([customer.model_dump()])
    probability = float(entry.model.predict_proba(frame)[0])
    return {"customer_id": getattr(customer, contract.id) if contract.id else "0",
            "churn_probability": probability,
            "will_churn": probability >= entry.metadata.threshold,
            "model_version": entry.version}


@app.get("/readyz")
def ready() -> dict:
    return {"ok": True}
