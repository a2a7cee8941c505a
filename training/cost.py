"""What a candidate costs to serve: its size and its measured scoring time per row.

Every candidate shares one fitted preprocessor, and the service builds the feature matrix with
its compiled numpy path (service/scoring.py) whatever the model, so what differs between
candidates is the classifier and the calibration on that matrix: ``ChurnModel
.predict_proba_matrix``, the very call the service makes per batch. That is what is timed here,
one thread per model as the service runs it, in CPU time of this process (another process's
load on a shared machine does not inflate it), best of several rounds.
"""

from __future__ import annotations

import math
import time

import numpy as np
from sklearn.pipeline import Pipeline

from kernel.model import ChurnModel, LogOddsBlend, PlattCalibration, base_estimators
from kernel.store import ScoringCost

ROUNDS = 5
ROUND_SECONDS = 0.03  # CPU time per timed round: long enough for the clock, short for the search


def model_size(classifier: object) -> int:
    """Fitted parameters: a linear model's coefficients and intercept, a tree model's nodes,
    a blend's members plus one weight each. Deterministic for a seed, unlike a timing."""
    if isinstance(classifier, LogOddsBlend):
        return sum(model_size(m) for m in classifier.estimators) + len(classifier.weights)
    if hasattr(classifier, "coef_"):
        return int(np.size(classifier.coef_) + np.size(classifier.intercept_))
    if hasattr(classifier, "estimators_"):  # a random forest
        return int(sum(tree.tree_.node_count for tree in classifier.estimators_))
    if hasattr(classifier, "get_booster"):  # XGBoost: one dump line per node
        return int(sum(tree.count("\n") for tree in classifier.get_booster().get_dump()))
    raise TypeError(f"cannot size a {type(classifier).__name__}")


def measure_scoring_cost(classifier: object, matrix: np.ndarray, batch_rows: int) -> ScoringCost:
    """CPU milliseconds per row of ``predict_proba_matrix`` with ``classifier`` at one row per
    call and at ``batch_rows`` rows per call, rows taken from ``matrix`` (a feature matrix of
    the training rows). Thread settings are restored afterwards."""
    model = ChurnModel(Pipeline([("classifier", classifier)]), PlattCalibration())
    threads = [(m, m.get_params()["n_jobs"]) for m in base_estimators(classifier)
               if "n_jobs" in m.get_params()]
    for estimator, _ in threads:
        estimator.set_params(n_jobs=1)
    try:
        rows = np.resize(np.arange(len(matrix)), batch_rows)
        one = _ms_per_call(model, matrix[:1])
        batch = _ms_per_call(model, matrix[rows]) / batch_rows
    finally:
        for estimator, n_jobs in threads:
            estimator.set_params(n_jobs=n_jobs)
    return ScoringCost(ms_per_row_batch_1=round(one, 5), ms_per_row_batch=round(batch, 5),
                       batch_rows=batch_rows)


def _ms_per_call(model: ChurnModel, rows: np.ndarray) -> float:
    """The fastest of ``ROUNDS`` rounds of calls, each about ``ROUND_SECONDS`` of CPU."""
    model.predict_proba_matrix(rows)  # warm: first-call set-up is not the steady cost
    started = time.process_time()
    model.predict_proba_matrix(rows)
    first = max(time.process_time() - started, 1e-6)
    calls = max(1, math.ceil(ROUND_SECONDS / first))
    best = math.inf
    for _ in range(ROUNDS):
        started = time.process_time()
        for _ in range(calls):
            model.predict_proba_matrix(rows)
        best = min(best, (time.process_time() - started) / calls)
    return best * 1000
