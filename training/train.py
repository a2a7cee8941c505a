"""Model selection: candidates x imbalance strategies, tuned by cross-validation on the
training split only, then out-of-fold calibration and threshold, then one final fit.

The test split is never seen here: ``fit_model`` receives only training rows.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from sklearn.base import clone
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold
from sklearn.pipeline import Pipeline

from kernel.contract import DataContract
from kernel.features import FeatureLayout, build_preprocessor, frequent_categories
from kernel.model import ChurnModel, PlattCalibration
from kernel.store import RiskCutoffs
from training.config import Algorithm, Imbalance, TrainConfig
from training.evaluate import best_threshold, risk_cutoffs, selection_score

log = logging.getLogger("churn.train")

Params = dict[str, float | int | str | bool | None]

DEFAULT_PARAMS: dict[str, Params] = {
    "logistic": {"C": 0.5},
    "random_forest": {"n_estimators": 120, "max_depth": 10, "min_samples_leaf": 5,
                      "max_features": 0.4},
    "xgboost": {"n_estimators": 250, "learning_rate": 0.05, "max_depth": 3,
                "min_child_weight": 5, "subsample": 0.8, "colsample_bytree": 0.8,
                "reg_lambda": 1.0},
}


@dataclass(frozen=True)
class Candidate:
    algorithm: Algorithm
    imbalance: Imbalance
    params: Params
    cv_score: float

    @property
    def name(self) -> str:
        return f"{self.algorithm}+{self.imbalance}"


@dataclass
class FittedModel:
    model: ChurnModel
    candidate: Candidate
    threshold: float
    risk_cutoffs: RiskCutoffs
    oof_probability: np.ndarray
    categories: dict[str, list[str]]
    leaderboard: list[Candidate] = field(default_factory=list)


def suggest_params(trial: object, algorithm: Algorithm) -> Params:
    """Optuna search space per algorithm."""
    if algorithm == "logistic":
        return {"C": trial.suggest_float("C", 1e-3, 10.0, log=True)}
    if algorithm == "random_forest":
        return {
            "n_estimators": trial.suggest_int("n_estimators", 100, 400, step=50),
            "max_depth": trial.suggest_int("max_depth", 4, 16),
            "min_samples_leaf": trial.suggest_int("min_samples_leaf", 1, 40, log=True),
            "max_features": trial.suggest_float("max_features", 0.15, 0.7),
        }
    return {
        "n_estimators": trial.suggest_int("n_estimators", 100, 600, step=50),
        "learning_rate": trial.suggest_float("learning_rate", 0.01, 0.2, log=True),
        "max_depth": trial.suggest_int("max_depth", 2, 7),
        "min_child_weight": trial.suggest_float("min_child_weight", 1.0, 30.0, log=True),
        "subsample": trial.suggest_float("subsample", 0.6, 1.0),
        "colsample_bytree": trial.suggest_float("colsample_bytree", 0.4, 1.0),
        "reg_lambda": trial.suggest_float("reg_lambda", 1e-3, 10.0, log=True),
    }


def make_classifier(
    algorithm: Algorithm, imbalance: Imbalance, params: Params, layout: FeatureLayout,
    positive_share: float, seed: int,
) -> object:
    """A classifier honouring the contract's monotone features (trees) and the imbalance choice."""
    weighted = imbalance == "class_weight"  # "none" and "smote" leave the classes unweighted
    if algorithm == "logistic":
        return LogisticRegression(
            C=float(params["C"]), max_iter=2000, class_weight="balanced" if weighted else None
        )
    monotone = layout.monotone_constraints()
    if algorithm == "random_forest":
        return RandomForestClassifier(
            **params, class_weight="balanced_subsample" if weighted else None,
            monotonic_cst=monotone, n_jobs=-1, random_state=seed,
        )
    from xgboost import XGBClassifier

    return XGBClassifier(
        **params, monotone_constraints=tuple(monotone), tree_method="hist",
        scale_pos_weight=(1 - positive_share) / positive_share if weighted else 1.0,
        eval_metric="logloss", n_jobs=2, random_state=seed, verbosity=0,
    )


def make_pipeline(preprocessor: Pipeline, classifier: object, imbalance: Imbalance, seed: int):
    """The fit-time pipeline. SMOTE sits between features and classifier and acts only on
    fit, so it only ever resamples training folds (imblearn skips samplers at predict time)."""
    if imbalance == "smote":
        from imblearn.over_sampling import SMOTE
        from imblearn.pipeline import Pipeline as ImbPipeline

        return ImbPipeline([*preprocessor.steps, ("smote", SMOTE(random_state=seed)),
                            ("classifier", classifier)])
    return Pipeline([*preprocessor.steps, ("classifier", classifier)])


def served_pipeline(fitted: Pipeline) -> Pipeline:
    """The same fitted steps without samplers: what the service runs (no imblearn needed)."""
    return Pipeline([(name, step) for name, step in fitted.steps if name != "smote"])


class _Searcher:
    def __init__(self, X: pd.DataFrame, y: np.ndarray, contract: DataContract,
                 categories: dict[str, list[str]], config: TrainConfig):
        self.X, self.y, self.config = X, y, config
        self.contract, self.categories = contract, categories
        self.layout = FeatureLayout(contract, categories)
        self.positive_share = float(y.mean())
        self.folds = list(StratifiedKFold(config.cv_folds, shuffle=True,
                                          random_state=config.seed).split(X, y))

    def pipeline(self, algorithm: Algorithm, imbalance: Imbalance, params: Params):
        classifier = make_classifier(algorithm, imbalance, params, self.layout,
                                     self.positive_share, self.config.seed)
        return make_pipeline(build_preprocessor(self.contract, self.categories), classifier,
                             imbalance, self.config.seed)

    def out_of_fold(self, algorithm: Algorithm, imbalance: Imbalance, params: Params,
                    stop_below: float | None = None) -> np.ndarray | None:
        """Raw out-of-fold scores; None when pruned (first fold far below ``stop_below``)."""
        scores = np.zeros(len(self.y))
        template = self.pipeline(algorithm, imbalance, params)
        for i, (fit_rows, val_rows) in enumerate(self.folds):
            model = clone(template).fit(self.X.iloc[fit_rows], self.y[fit_rows])
            scores[val_rows] = model.predict_proba(self.X.iloc[val_rows])[:, 1]
            if i == 0 and stop_below is not None:
                first = selection_score(self.config.selection_metric, self.y[val_rows],
                                        scores[val_rows])
                if first < stop_below - 0.02:
                    return None
        return scores

    def score(self, algorithm: Algorithm, imbalance: Imbalance, params: Params,
              stop_below: float | None = None) -> tuple[float, np.ndarray | None]:
        oof = self.out_of_fold(algorithm, imbalance, params, stop_below)
        if oof is None:
            return float("-inf"), None
        return selection_score(self.config.selection_metric, self.y, oof), oof


def select_model(
    X: pd.DataFrame, y: np.ndarray, contract: DataContract, config: TrainConfig
) -> FittedModel:
    """Search, calibrate, choose the threshold, and fit the final model on all of ``X``."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    categories = frequent_categories(X, contract)
    searcher = _Searcher(X, y, contract, categories, config)
    metric = config.selection_metric
    started = time.monotonic()

    # Round 1: every candidate once with sensible defaults, so none is starved by the budget.
    results: list[tuple[Candidate, np.ndarray]] = []
    for algorithm in config.algorithms:
        for imbalance in config.imbalance:
            params = dict(DEFAULT_PARAMS[algorithm])
            cv, oof = searcher.score(algorithm, imbalance, params)
            results.append((Candidate(algorithm, imbalance, params, cv), oof))
            log.info("round 1  %-26s cv %s %.4f  (%.0fs)", f"{algorithm}+{imbalance}", metric,
                     cv, time.monotonic() - started)
    results.sort(key=lambda r: r[0].cv_score, reverse=True)

    # Round 2: tune the finalists with the remaining budget (TPE).
    deadline = started + config.search_budget_seconds
    finalists = results[: config.finalists]
    trials_left = config.max_trials
    for rank, (candidate, _) in enumerate(finalists):
        remaining = deadline - time.monotonic()
        share = remaining / (len(finalists) - rank)
        if share <= 1 or trials_left <= 0:
            break
        best = {"score": candidate.cv_score}
        study = optuna.create_study(direction="maximize",
                                    sampler=optuna.samplers.TPESampler(seed=config.seed))

        def objective(trial: optuna.Trial, c: Candidate = candidate, best: dict = best) -> float:
            params = suggest_params(trial, c.algorithm)
            cv, oof = searcher.score(c.algorithm, c.imbalance, params, stop_below=best["score"])
            log.info("round 2  %-26s trial %d cv %s %s (best %.4f, %.0fs of %.0fs)", c.name,
                     trial.number, metric, f"{cv:.4f}" if oof is not None else "pruned",
                     max(best["score"], cv), time.monotonic() - started,
                     config.search_budget_seconds)
            if oof is None:
                raise optuna.TrialPruned()
            results.append((Candidate(c.algorithm, c.imbalance, params, cv), oof))
            best["score"] = max(best["score"], cv)
            return cv

        n_trials = max(1, trials_left // (len(finalists) - rank))
        study.optimize(objective, n_trials=n_trials, timeout=share)
        trials_left -= len(study.trials)

    results.sort(key=lambda r: r[0].cv_score, reverse=True)
    winner, raw_oof = results[0]
    log.info("selected %s with cv %s %.4f", winner.name, metric, winner.cv_score)

    # Calibration, threshold and risk cut-offs all come from out-of-fold predictions.
    calibration = PlattCalibration.fit(raw_oof, y)
    oof_probability = calibration.apply(raw_oof)
    threshold = best_threshold(y, oof_probability, contract.costs)
    cutoffs = risk_cutoffs(oof_probability, threshold, config.high_risk_share)

    final = searcher.pipeline(winner.algorithm, winner.imbalance, winner.params).fit(X, y)
    model = ChurnModel(served_pipeline(final), calibration)
    leaderboard = [c for c, _ in results]
    return FittedModel(model, winner, threshold, cutoffs, oof_probability, categories,
                       leaderboard)


def leakage_suspects(X: pd.DataFrame, y: np.ndarray, limit: float) -> dict[str, float]:
    """Features that alone separate the classes almost perfectly: usually post-outcome data.

    Each feature's ROC-AUC as a one-variable score (numeric: the value, missing as lowest or
    highest; categorical: the class rate of its group), folded so 0.5 is uninformative.
    """
    from sklearn.metrics import roc_auc_score

    suspects = {}
    for column in X.columns:
        values = X[column]
        if values.dtype == object:
            key = values.fillna("__missing__")
            candidates = [key.map(pd.Series(y, index=X.index).groupby(key).mean())]
        elif values.notna().any():
            # Missingness can leak too ("days until cancellation" exists only for churners).
            low, high = values.min() - 1, values.max() + 1
            candidates = [values.fillna(low), values.fillna(high)]
        else:
            continue
        aucs = []
        for score in candidates:
            score = score.to_numpy(float)
            if np.unique(score).size > 1:
                auc = roc_auc_score(y, score)
                aucs.append(max(auc, 1 - auc))
        if aucs and max(aucs) >= limit:
            suspects[column] = round(float(max(aucs)), 4)
    return suspects
