"""The selection rule on synthetic fold scores: a more complex candidate is chosen over a simpler
one only when its gain is larger than the noise of their paired comparison and than min_gain;
a scoring budget excludes candidates, and when every one is over it the cheapest is kept."""

from __future__ import annotations

import numpy as np
import pytest

from kernel.store import ScoringCost
from training.selection import Entrant, choose_candidate, paired_standard_error

LOGISTIC_SIZE, XGBOOST_SIZE, FOREST_SIZE = 31, 3_500, 90_000


def entrant(name: str, folds: list[float], members: int = 1, size: int = XGBOOST_SIZE,
            ms: float | None = None, excluded: str | None = None) -> Entrant:
    cost = None if ms is None else ScoringCost(ms_per_row_batch_1=ms * 20, ms_per_row_batch=ms,
                                               batch_rows=64)
    return Entrant(name, float(np.mean(folds)), tuple(folds), members, size, cost, excluded)


def chosen(entrants: list[Entrant], k: float = 1.0, min_gain: float = 0.002,
           budget: float | None = None) -> str:
    return entrants[choose_candidate(entrants, k, min_gain, budget).chosen].name


SINGLE = [0.8990, 0.8970, 0.9010, 0.8950]


def test_the_paired_standard_error_is_corrected_for_overlapping_folds():
    # sd 1.291 of [1, 2, 3, 4]; x sqrt(1/4 + 1/3) for 4 folds (Nadeau and Bengio).
    assert paired_standard_error([1, 2, 3, 4]) == pytest.approx(1.2910 * 0.76376, rel=1e-4)
    assert paired_standard_error([0.002] * 5) == 0.0
    assert paired_standard_error([0.3]) == 0.0


def test_an_ensemble_whose_gain_is_within_noise_loses_to_the_single_model():
    # The case: the ensemble leads on every fold, but by about 0.0015 < min_gain.
    ensemble = entrant("ensemble", [s + g for s, g in zip(SINGLE, [0.0012, 0.0018, 0.0015,
                                                                   0.0016], strict=True)],
                       members=2, size=XGBOOST_SIZE + LOGISTIC_SIZE + 2)
    single = entrant("xgboost", SINGLE)
    choice = choose_candidate([ensemble, single], 1.0, 0.002)
    assert choice.chosen == 1
    rows = {row.candidate: row for row in choice.rows}
    assert rows["xgboost"].chosen and rows["xgboost"].gap_to_best == pytest.approx(0.001525)
    assert rows["xgboost"].margin == pytest.approx(0.002)
    assert "chosen: the simplest within noise of the best (ensemble" in rows["xgboost"].reason
    assert rows["ensemble"].reason.startswith("best, but its gain over xgboost (+0.0015) is "
                                              "within the noise")
    assert "xgboost is within noise of the best, ensemble (+0.0015" in choice.note
    # Without the floor, a gain this steady is beyond its (tiny) noise: the ensemble is kept.
    assert chosen([ensemble, single], min_gain=0.0) == "ensemble"


def test_a_gain_above_min_gain_but_inside_the_folds_noise_is_not_kept():
    # +0.006 on average, but the folds disagree: two worse, two better.
    ensemble = entrant("ensemble", [0.9190, 0.8870, 0.9210, 0.8950], members=2)
    single = entrant("xgboost", SINGLE)
    gap = np.subtract(ensemble.fold_scores, single.fold_scores)
    assert gap.mean() > 0.002 and paired_standard_error(gap) > gap.mean()
    assert chosen([ensemble, single]) == "xgboost"
    assert chosen([ensemble, single], k=0.0) == "ensemble"  # min_gain alone would keep it


def test_an_ensemble_that_wins_by_a_real_margin_is_kept():
    ensemble = entrant("ensemble", [s + g for s, g in zip(SINGLE, [0.009, 0.011, 0.008, 0.010],
                                                          strict=True)], members=2)
    choice = choose_candidate([entrant("xgboost", SINGLE), ensemble], 1.0, 0.002)
    assert choice.chosen == 1
    assert choice.rows[1].reason == "chosen: the best, and nothing simpler is within noise of it"
    assert choice.rows[0].reason.startswith("behind the best by 0.0095 > margin 0.00")


def test_among_single_models_the_smallest_within_noise_is_chosen():
    forest = entrant("random_forest", [0.9000, 0.8985, 0.9020, 0.8960], size=FOREST_SIZE)
    xgboost = entrant("xgboost", SINGLE)  # 0.0011 behind the forest: within noise
    logistic = entrant("logistic", [0.8900, 0.8880, 0.8930, 0.8860], size=LOGISTIC_SIZE)
    choice = choose_candidate([forest, xgboost, logistic], 1.0, 0.002)
    assert choice.chosen == 1
    assert [row.reason.split(":")[0].split(" by")[0] for row in choice.rows] == [
        "best, but its gain over xgboost (+0.0011) is within the noise (margin 0.0020)",
        "chosen", "behind the best"]
    # With no tolerance at all the rule is "the best score wins".
    assert chosen([forest, xgboost, logistic], k=0.0, min_gain=0.0) == "random_forest"
    # Members count before size: a small blend is still more complex than any single model.
    tiny_blend = entrant("ensemble", [0.9001, 0.8986, 0.9021, 0.8961], members=2, size=100)
    assert chosen([tiny_blend, forest, xgboost]) == "xgboost"


def test_the_best_is_the_leaderboards_first_and_a_tie_in_size_goes_to_the_better_score():
    # Two variants of one model, as large as each other: the pooled score ranks them (as the
    # leaderboard does), though the other has the higher fold mean by a hair.
    plain = Entrant("logistic+none", 0.76097, (0.7689, 0.7536, 0.7747, 0.7494), 1, 45)
    weighted = Entrant("logistic+class_weight", 0.76091, (0.7687, 0.7548, 0.7731, 0.7503), 1, 45)
    choice = choose_candidate([weighted, plain], 1.0, 0.002)
    assert choice.chosen == 1
    assert choice.rows[0].gap_to_best == pytest.approx(-0.000075)
    assert choice.rows[0].reason == ("within noise of the best, but logistic+none is as simple "
                                     "and scores higher")


def test_an_excluded_candidate_is_never_chosen_unless_all_are():
    wrong_sign = entrant("logistic", [0.95, 0.95, 0.95, 0.95], size=LOGISTIC_SIZE,
                         excluded="its risk moves against a declared monotone feature")
    choice = choose_candidate([wrong_sign, entrant("xgboost", SINGLE)], 1.0, 0.002)
    assert choice.chosen == 1 and choice.warning is None
    assert choice.rows[0].reason == "its risk moves against a declared monotone feature"
    assert choice.rows[0].gap_to_best is None
    alone = choose_candidate([wrong_sign], 1.0, 0.002)
    assert alone.chosen == 0 and "every candidate is excluded" in alone.warning


def test_a_scoring_budget_excludes_costly_candidates_and_keeps_the_cheapest_if_all_are_over():
    forest = entrant("random_forest", [0.92, 0.92, 0.92, 0.92], size=FOREST_SIZE, ms=0.1)
    xgboost = entrant("xgboost", SINGLE, ms=0.012)
    logistic = entrant("logistic", [0.85, 0.85, 0.85, 0.85], size=LOGISTIC_SIZE, ms=0.001)
    assert chosen([forest, xgboost, logistic]) == "random_forest"
    choice = choose_candidate([forest, xgboost, logistic], 1.0, 0.002, max_ms_per_row=0.05)
    assert choice.chosen == 1 and choice.warning is None
    assert choice.rows[0].reason == ("over the scoring budget: 0.1000 ms/row > "
                                     "max_scoring_ms_per_row 0.05")
    assert choice.rows[1].ms_per_row_batch == 0.012 and choice.rows[1].batch_rows == 64

    broke = choose_candidate([forest, xgboost], 1.0, 0.002, max_ms_per_row=0.005)
    assert broke.chosen == 1
    assert broke.warning == ("every candidate is over the scoring budget (0.005 ms/row): the "
                             "cheapest is kept, 0.0120 ms/row")
    assert broke.rows[0].reason.startswith("over the scoring budget")


def test_no_candidate_is_an_error():
    with pytest.raises(ValueError, match="no candidate"):
        choose_candidate([], 1.0, 0.002)
