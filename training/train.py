"""Model selection on the training split only, by out-of-fold scores on stratified folds:

1. every algorithm x imbalance treatment once with defaults (none is starved by the budget);
2. Optuna TPE on the best configuration of the best algorithms, for a trial budget that scales
   with the table (``trial_budget``) under a wall-clock cap;
3. a stacked ensemble of the best model of each algorithm (its nested out-of-fold score);
4. the choice (``training.selection``): the simplest candidate within noise of the best, among
   those that respect the declared monotone features and the scoring budget. Each candidate is
   fitted once on all training rows to measure its size and scoring cost (``training.cost``);
   the chosen one's fit is the served model;

then Platt calibration, threshold and risk cut-offs from out-of-fold scores. The test split is
never seen here: ``select_model`` gets training rows.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field, replace
from itertools import combinations
from typing import Literal

import numpy as np
import pandas as pd
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold
from sklearn.pipeline import Pipeline

from kernel.contract import DataContract
from kernel.features import FeatureLayout, build_preprocessor, frequent_categories
from kernel.model import ChurnModel, LogOddsBlend, PlattCalibration, log_odds
from kernel.store import RiskCutoffs, ScoringCost
from training.config import Algorithm, Imbalance, TrainConfig
from training.cost import measure_scoring_cost, model_size
from training.evaluate import best_threshold, risk_cutoffs, selection_score
from training.selection import Entrant, SelectionRow, choose_candidate

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
    """A leaderboard row: one configuration and its out-of-fold score. An ensemble's row has
    ``algorithm`` "ensemble" and its weighted members (one per algorithm); its params are the
    members' weights, imbalance treatments and params, keyed "<algorithm>.<name>"."""

    algorithm: Algorithm | Literal["ensemble"]
    imbalance: str
    params: Params
    cv_score: float
    members: tuple[tuple[Candidate, float], ...] = ()
    # Filled in for the leaderboard's rows (``_Searcher.described``): the selection metric on
    # each fold, fitted parameters and scoring cost of its fit on all training rows.
    fold_scores: tuple[float, ...] = ()
    size: int = 0
    cost: ScoringCost | None = None

    @property
    def name(self) -> str:
        if self.members:
            return "ensemble(" + ", ".join(m.name for m, _ in self.members) + ")"
        return f"{self.algorithm}+{self.imbalance}"

    @property
    def key(self) -> tuple[str, str, str]:
        """Identifies a configuration whatever else is filled in."""
        return self.algorithm, self.imbalance, repr(sorted(self.params.items()))


@dataclass
class FittedModel:
    model: ChurnModel
    candidate: Candidate
    threshold: float
    risk_cutoffs: RiskCutoffs
    oof_probability: np.ndarray
    categories: dict[str, list[str]]
    # One row per algorithm+imbalance (its best configuration) and the ensemble's, best first.
    leaderboard: list[Candidate] = field(default_factory=list)
    # Why the candidate was chosen: one row per leaderboard candidate, in leaderboard order.
    selection: list[SelectionRow] = field(default_factory=list)


# Trials a search space can use: TPE covers logistic regression's one parameter in a few.
TRIAL_CAP: dict[str, int] = {"logistic": 8}


def suggest_params(trial: object, algorithm: Algorithm) -> Params:
    """Optuna search space per algorithm."""
    if algorithm == "logistic":
        return {"C": trial.suggest_float("C", 1e-3, 10.0, log=True)}
    if algorithm == "random_forest":
        # A forest trial costs about five XGBoost trials (measured): its space stays where
        # forests do well on tables of this size rather than reaching for 400 deep trees.
        return {
            "n_estimators": trial.suggest_int("n_estimators", 100, 300, step=50),
            "max_depth": trial.suggest_int("max_depth", 4, 14),
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
        # One thread: on a shared 2-core machine XGBoost's second OpenMP thread spin-waits for a
        # busy core and a fit took 15-30x longer (measured); one thread also keeps it exact.
        eval_metric="logloss", n_jobs=1, random_state=seed, verbosity=0,
    )


PRUNE_MARGIN = 0.02  # a trial this far behind on the first fold is not worth the others


class _Searcher:
    """Out-of-fold scores of candidates on fixed stratified folds of the training split.

    The preprocessor does not depend on the candidate, so each fold's matrices are built once
    and every candidate and trial fits only its classifier on them (the pandas typing and
    encoding would otherwise cost a fifth of a second per fit, a large share of a small table's
    search)."""

    def __init__(self, X: pd.DataFrame, y: np.ndarray, contract: DataContract,
                 categories: dict[str, list[str]], config: TrainConfig):
        self.X, self.y, self.config = X, y, config
        self.contract, self.categories = contract, categories
        self.layout = FeatureLayout(contract, categories)
        self.positive_share = float(y.mean())
        self.folds = list(StratifiedKFold(config.cv_folds, shuffle=True,
                                          random_state=config.seed).split(X, y))
        self._full: tuple[Pipeline, np.ndarray] | None = None
        self._fitted: dict[tuple[str, str, str], object] = {}
        self.matrices = []
        for fit_rows, val_rows in self.folds:
            preprocessor = build_preprocessor(contract, categories).fit(X.iloc[fit_rows])
            self.matrices.append((preprocessor.transform(X.iloc[fit_rows]),
                                  preprocessor.transform(X.iloc[val_rows])))

    @property
    def full(self) -> tuple[Pipeline, np.ndarray]:
        """The preprocessor fitted on all training rows, and their feature matrix."""
        if self._full is None:
            preprocessor = build_preprocessor(self.contract, self.categories).fit(self.X)
            self._full = preprocessor, preprocessor.transform(self.X)
        return self._full

    def fitted_on_all_rows(self, candidate: Candidate) -> object:
        """The candidate's classifier fitted on every training row (once per configuration):
        what is sized, timed, checked for monotonicity and, if chosen, served. A blend's
        members are those fits, with the blend's weights."""
        if candidate.members:
            return LogOddsBlend([(m.name, self.fitted_on_all_rows(m)) for m, _ in
                                 candidate.members], [w for _, w in candidate.members])
        if candidate.key not in self._fitted:
            self._fitted[candidate.key] = fit_classifier(
                self.classifier(candidate.algorithm, candidate.imbalance, candidate.params),
                candidate.imbalance, self.full[1], self.y, self.config.seed)
        return self._fitted[candidate.key]

    def served_pipeline(self, candidate: Candidate) -> Pipeline:
        """Raw columns in, raw score out: the shared preprocessor and the candidate's fit."""
        return Pipeline([*self.full[0].steps,
                         ("classifier", self.fitted_on_all_rows(candidate))])

    def described(self, candidate: Candidate, oof: np.ndarray) -> Candidate:
        """The candidate with its per-fold scores, size and scoring cost filled in."""
        classifier = self.fitted_on_all_rows(candidate)
        return replace(candidate, fold_scores=self.fold_scores(oof),
                       size=model_size(classifier),
                       cost=measure_scoring_cost(classifier, self.full[1],
                                                 self.config.scoring_batch_rows))

    def fold_scores(self, oof: np.ndarray) -> tuple[float, ...]:
        """The selection metric on each fold's rows: paired between candidates (same rows)."""
        return tuple(selection_score(self.config.selection_metric, self.y[rows], oof[rows])
                     for _, rows in self.folds)

    def respects_monotone(self, candidate: Candidate) -> bool:
        """Trees are constrained when fitted; a linear model respects a declared monotone
        feature only when its coefficient, fitted on all rows, has the declared sign (the
        scaling before it is increasing)."""
        signs = np.array(self.layout.monotone_constraints())
        if candidate.algorithm != "logistic" or not signs.any():
            return True
        return bool((self.fitted_on_all_rows(candidate).coef_[0] * signs >= 0).all())

    def classifier(self, algorithm: Algorithm, imbalance: Imbalance, params: Params):
        return make_classifier(algorithm, imbalance, params, self.layout, self.positive_share,
                               self.config.seed)

    def first_fold_score(self, oof: np.ndarray) -> float:
        rows = self.folds[0][1]
        return selection_score(self.config.selection_metric, self.y[rows], oof[rows])

    def out_of_fold(self, algorithm: Algorithm, imbalance: Imbalance, params: Params,
                    stop_below: float | None = None) -> np.ndarray | None:
        """Raw out-of-fold scores; None when pruned: the first fold scores ``PRUNE_MARGIN``
        below ``stop_below``, the best candidate's score on that same fold (the same rows, so
        the comparison is not blurred by how hard a fold happens to be)."""
        scores = np.zeros(len(self.y))
        for i, ((fit_rows, val_rows), (fit_matrix, val_matrix)) in enumerate(
                zip(self.folds, self.matrices, strict=True)):
            model = fit_classifier(self.classifier(algorithm, imbalance, params), imbalance,
                                   fit_matrix, self.y[fit_rows], self.config.seed)
            scores[val_rows] = model.predict_proba(val_matrix)[:, 1]
            if i == 0 and stop_below is not None:
                first = selection_score(self.config.selection_metric, self.y[val_rows],
                                        scores[val_rows])
                if first < stop_below - PRUNE_MARGIN:
                    return None
        return scores

    def score(self, algorithm: Algorithm, imbalance: Imbalance, params: Params,
              stop_below: float | None = None) -> tuple[float, np.ndarray | None]:
        oof = self.out_of_fold(algorithm, imbalance, params, stop_below)
        if oof is None:
            return float("-inf"), None
        return selection_score(self.config.selection_metric, self.y, oof), oof


def fit_classifier(classifier: object, imbalance: Imbalance, matrix: np.ndarray,
                   y: np.ndarray, seed: int) -> object:
    """Fit on a feature matrix; SMOTE resamples only these (fitting) rows."""
    if imbalance == "smote":
        from imblearn.over_sampling import SMOTE

        matrix, y = SMOTE(random_state=seed).fit_resample(matrix, y)
    return classifier.fit(matrix, y)


def trial_budget(config: TrainConfig, rows: int) -> int:
    """Tuning trials for a table: ``trial_rows`` / rows, within [finalists, max_trials].

    A trial's cost grows with the rows, so a budget in trials x rows is a fixed amount of
    work whatever the table: a small table gets more trials, and the selected model does not
    depend on how busy the machine was (the wall-clock cap only guards against a slow one)."""
    if config.max_trials == 0:
        return 0
    return int(min(config.max_trials, max(config.finalists, config.trial_rows // max(rows, 1))))


def _best_per_candidate(results: list[tuple[Candidate, np.ndarray]]
                        ) -> list[tuple[Candidate, np.ndarray]]:
    """One row per algorithm+imbalance (its best configuration), best first."""
    best: dict[str, tuple[Candidate, np.ndarray]] = {}
    for candidate, oof in results:
        if candidate.name not in best or candidate.cv_score > best[candidate.name][0].cv_score:
            best[candidate.name] = (candidate, oof)
    return sorted(best.values(), key=lambda r: r[0].cv_score, reverse=True)


def _finalists(results: list[tuple[Candidate, np.ndarray]], count: int) -> list[Candidate]:
    """The best candidate of each of the ``count`` best algorithms: tuning distinct algorithms
    gives the ensemble different models to combine (two imbalance variants of one algorithm
    rank customers almost identically)."""
    finalists: list[Candidate] = []
    for candidate, _ in _best_per_candidate(results):
        if candidate.algorithm not in {f.algorithm for f in finalists}:
            finalists.append(candidate)
    return finalists[:count]


def _tune(searcher: _Searcher, results: list[tuple[Candidate, np.ndarray]],
          config: TrainConfig, started: float) -> None:
    """Round 2: Optuna TPE on the finalists, the trial budget shared equally between them."""
    import optuna

    metric = config.selection_metric
    # Capped spaces first, so the trials they leave go to the finalists that can use them.
    finalists = sorted(_finalists(results, config.finalists),
                       key=lambda c: c.algorithm not in TRIAL_CAP)
    trials_left = trial_budget(config, len(searcher.y))
    deadline = started + config.search_budget_seconds
    if trials_left:
        log.info("round 2  tuning %s: %d trials for %d rows (time cap %.0fs)",
                 ", ".join(f.name for f in finalists), trials_left, len(searcher.y),
                 config.search_budget_seconds)
    for rank, candidate in enumerate(finalists):
        n_trials = min(trials_left // (len(finalists) - rank),
                       TRIAL_CAP.get(candidate.algorithm, trials_left))
        remaining = deadline - time.monotonic()
        if n_trials <= 0 or remaining <= 1:
            if n_trials > 0:
                log.info("round 2  time cap reached: %s not tuned", candidate.name)
            continue
        start_oof = next(oof for c, oof in results if c is candidate)
        best = {"score": candidate.cv_score, "first": searcher.first_fold_score(start_oof)}
        study = optuna.create_study(direction="maximize",
                                    sampler=optuna.samplers.TPESampler(seed=config.seed))

        def objective(trial: optuna.Trial, c: Candidate = candidate, best: dict = best) -> float:
            params = suggest_params(trial, c.algorithm)
            cv, oof = searcher.score(c.algorithm, c.imbalance, params, stop_below=best["first"])
            log.info("round 2  %-26s trial %d cv %s %s (best %.4f, %.0fs)", c.name,
                     trial.number, metric, f"{cv:.4f}" if oof is not None else "pruned",
                     max(best["score"], cv), time.monotonic() - started)
            if oof is None:
                raise optuna.TrialPruned()
            results.append((Candidate(c.algorithm, c.imbalance, params, cv), oof))
            if cv > best["score"]:
                best.update(score=cv, first=searcher.first_fold_score(oof))
            return cv

        # The timeout only bites on a machine far slower than the trial budget assumes.
        study.optimize(objective, n_trials=n_trials, timeout=remaining / (len(finalists) - rank))
        trials_left -= len(study.trials)
        if len(study.trials) < n_trials:
            log.info("round 2  time cap reached after %d of %d trials of %s",
                     len(study.trials), n_trials, candidate.name)


MIN_MEMBER_WEIGHT = 0.05  # a member this light changes few rankings but costs a full predict


def stacking_weights(log_odds_matrix: np.ndarray, y: np.ndarray) -> tuple[list[int], np.ndarray]:
    """(kept columns, their weights summing to 1): a logistic regression on the members'
    out-of-fold log-odds, refitted without any member whose weight is not clearly positive.
    Positive weights keep the blend increasing in every member (and so monotone)."""
    keep = list(range(log_odds_matrix.shape[1]))
    while keep:
        stacker = LogisticRegression(C=1.0, max_iter=1000)
        weights = stacker.fit(log_odds_matrix[:, keep], y).coef_[0]
        share = weights / np.abs(weights).sum()
        if (share >= MIN_MEMBER_WEIGHT).all():
            return keep, share
        keep.pop(int(np.argmin(share)))
    return [], np.array([])


def stack_ensemble(searcher: _Searcher, leaderboard: list[tuple[Candidate, np.ndarray]]
                   ) -> tuple[Candidate, np.ndarray] | None:
    """The stack of the best model with others, with an honest score, or None when no
    combination gives two members a weight.

    The best configuration of each algorithm is a possible member (a linear model against a
    declared monotone feature is not). The best model is stacked with every combination of the
    others; a stack's score is nested: its weights are refitted inside each fold of the search
    and scored on the fold they did not see. Of the combinations, the one with the fewest
    members within noise of the best is returned (``training.selection``, without the budget),
    so a member stays only when the blend without it scores clearly lower: each member is a
    full predict at serving. Returns the blend (described, its fold scores nested) and its raw
    out-of-fold scores with the final weights (for calibration)."""
    pool: list[tuple[Candidate, np.ndarray]] = []
    for candidate, oof in leaderboard:
        if candidate.algorithm not in {c.algorithm for c, _ in pool} \
                and searcher.respects_monotone(candidate):
            pool.append((candidate, oof))
    if len(pool) < 2:
        return None
    scores = np.column_stack([log_odds(oof) for _, oof in pool])
    y, config = searcher.y, searcher.config
    blends: dict[tuple[int, ...], tuple[Candidate, np.ndarray, np.ndarray]] = {}
    for size in range(1, len(pool)):
        # Always with the best single model: a blend without it would have to beat it.
        for others in combinations(range(1, len(pool)), size):
            combination = (0, *others)
            columns = scores[:, list(combination)]
            keep, weights = stacking_weights(columns, y)
            kept = tuple(combination[i] for i in keep)
            if len(kept) < 2 or kept in blends:
                continue
            nested = np.zeros(len(y))
            for fit_rows, val_rows in searcher.folds:
                fold_keep, fold_weights = stacking_weights(columns[fit_rows], y[fit_rows])
                nested[val_rows] = columns[np.ix_(val_rows, fold_keep)] @ fold_weights
            blend = _blend([pool[i][0] for i in kept], weights,
                           selection_score(config.selection_metric, y, nested))
            raw_oof = 1.0 / (1.0 + np.exp(-(scores[:, list(kept)] @ weights)))
            blends[kept] = (blend, nested, raw_oof)
    if not blends:
        return None
    options = list(blends.values())
    choice = choose_candidate(
        [Entrant(b.name, b.cv_score, searcher.fold_scores(nested), len(b.members),
                 sum(m.size for m, _ in b.members) + len(b.members))
         for b, nested, _ in options], config.gain_standard_errors, config.min_gain)
    blend, nested, raw_oof = options[choice.chosen]
    if len(options) > 1:
        log.info("round 3  of %d stacks, %s", len(options), choice.note)
    return searcher.described(blend, nested), raw_oof


def _blend(members: list[Candidate], weights: np.ndarray, score: float) -> Candidate:
    """A leaderboard row for a stack: its params are the members' weights, imbalance
    treatments and params, keyed "<algorithm>.<name>" (one member per algorithm)."""
    params: Params = {}
    for member, weight in zip(members, weights, strict=True):
        params[f"{member.algorithm}.weight"] = round(float(weight), 4)
        params[f"{member.algorithm}.imbalance"] = member.imbalance
        params.update({f"{member.algorithm}.{k}": v for k, v in member.params.items()})
    imbalances = sorted({m.imbalance for m in members})
    return Candidate("ensemble", imbalances[0] if len(imbalances) == 1 else "mixed", params,
                     score, tuple((m, float(w)) for m, w in zip(members, weights, strict=True)))


MONOTONE_EXCLUSION = "its risk moves against a declared monotone feature"


def select_model(
    X: pd.DataFrame, y: np.ndarray, contract: DataContract, config: TrainConfig
) -> FittedModel:
    """Search, choose, calibrate, choose the threshold; the served model is the chosen
    candidate's fit on all of ``X``."""
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

    # Round 2: tune the best configuration of the best algorithms.
    _tune(searcher, results, config, started)
    # Each row fitted once on all training rows: its size and scoring cost.
    leaderboard = [(searcher.described(c, oof), oof) for c, oof in _best_per_candidate(results)]
    budget = config.max_scoring_ms_per_row

    # Round 3: a stacked ensemble of the best model of each algorithm within the budget.
    if config.ensemble:
        affordable = [row for row in leaderboard
                      if budget is None or row[0].cost.ms_per_row_batch <= budget]
        ensemble = stack_ensemble(searcher, affordable)
        if ensemble is None:
            log.info("round 3  no ensemble: no other algorithm earns %.0f%% of the weight",
                     100 * MIN_MEMBER_WEIGHT)
        else:
            blend = ensemble[0]
            log.info("round 3  ensemble %s: cv %s %.4f", " + ".join(
                f"{m.name} x{w:.2f}" for m, w in blend.members), metric, blend.cv_score)
            leaderboard.append(ensemble)
            leaderboard.sort(key=lambda r: r[0].cv_score, reverse=True)

    # The choice: the simplest candidate within noise of the best. The gate rejects a model
    # whose risk moves against a declared monotone feature, so such a candidate (only a linear
    # one can be) is ranked but not chosen while another can be.
    choice = choose_candidate(
        [Entrant(c.name, c.cv_score, c.fold_scores, len(c.members) or 1, c.size, c.cost,
                 None if searcher.respects_monotone(c) else MONOTONE_EXCLUSION)
         for c, _ in leaderboard], config.gain_standard_errors, config.min_gain, budget)
    for row in choice.rows:
        log.info("choose   %-44s cv %.4f  %s  %s: %s", row.candidate, row.cv_score,
                 _gap_text(row), _cost_text(row), row.reason)
    if choice.warning:
        log.warning("choose   %s", choice.warning)
    winner, raw_oof = leaderboard[choice.chosen]
    log.info("selected %s with cv %s %.4f: %s (%.0fs)", winner.name, metric, winner.cv_score,
             choice.note, time.monotonic() - started)

    # Calibration, threshold and risk cut-offs all come from out-of-fold predictions.
    calibration = PlattCalibration.fit(raw_oof, y)
    oof_probability = calibration.apply(raw_oof)
    threshold = best_threshold(y, oof_probability, contract.costs)
    cutoffs = risk_cutoffs(oof_probability, threshold, config.high_risk_share)

    model = ChurnModel(searcher.served_pipeline(winner), calibration)
    return FittedModel(model, winner, threshold, cutoffs, oof_probability, categories,
                       [c for c, _ in leaderboard], choice.rows)


def _gap_text(row: SelectionRow) -> str:
    if row.gap_to_best is None:
        return "not compared"
    return (f"gap {row.gap_to_best:+.4f} (se {row.standard_error:.4f}, margin "
            f"{row.margin:.4f})")


def _cost_text(row: SelectionRow) -> str:
    if row.ms_per_row_batch is None:
        return "cost not measured"
    return (f"{row.ms_per_row_batch_1:.4f} ms/row at batch 1, {row.ms_per_row_batch:.4f} at "
            f"{row.batch_rows}")


def fit_candidate(candidate: Candidate, X: pd.DataFrame, y: np.ndarray, contract: DataContract,
                  categories: dict[str, list[str]], config: TrainConfig) -> Pipeline:
    """The served pipeline of a leaderboard row, fitted on all of ``X`` (raw columns in, raw
    score out). An ensemble's members share one preprocessor: it does not depend on them."""
    preprocessor = build_preprocessor(contract, categories).fit(X)
    matrix = preprocessor.transform(X)
    layout = FeatureLayout(contract, categories)
    members = candidate.members or ((candidate, 1.0),)
    fitted = [
        (m.name, fit_classifier(make_classifier(m.algorithm, m.imbalance, m.params, layout,
                                                float(y.mean()), config.seed),
                                m.imbalance, matrix, y, config.seed))
        for m, _ in members
    ]
    classifier = fitted[0][1] if not candidate.members else LogOddsBlend(
        fitted, [w for _, w in members])
    return Pipeline([*preprocessor.steps, ("classifier", classifier)])


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
