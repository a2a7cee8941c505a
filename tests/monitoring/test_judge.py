"""The model judge (monitoring/judge): every effect against a reference, the classification and
score rules, the confidence sequences under repeated looks, the gauges, and a reduced
simulation of its error rates on synthetic probabilities."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from prometheus_client import generate_latest
from scipy import stats
from sklearn.metrics import roc_auc_score

from monitoring.judge import (
    CLASS_CODES,
    JudgeConfig,
    JudgeConfigError,
    JudgeInputError,
    SampleBudgetSpent,
    TrackTraffic,
    judge_paired,
    judge_unpaired,
    judgement_registry,
)
from monitoring.judge.config import ScoreSettings
from monitoring.judge.decision import (
    CheckResult,
    Tolerance,
    classify,
    score_and_verdict,
)
from monitoring.judge.effects import (
    Boundary,
    _midranks,
    delong_paired,
    hodges_lehmann,
    ks_distance,
    paired_proportions,
    paired_ratio_of_means,
    proportion,
    rank_agreement_difference,
    ratio_of_means,
    two_proportions,
)
from monitoring.judge.sequential import multiplier, sample_alpha, smallest_size

REPO = Path(__file__).resolve().parents[2]
BOUNDARY = Boundary(0.05, 2000)
THRESHOLD, HIGH_CUTOFF = 0.3, 0.5


def records(p: np.ndarray, prefix: str = "", threshold: float = THRESHOLD,
            high: float = HIGH_CUTOFF) -> pd.DataFrame:
    p = np.asarray(p, dtype=float)
    risk = np.where(p >= high, "HIGH", np.where(p >= threshold, "MEDIUM", "LOW"))
    return pd.DataFrame({f"{prefix}churn_probability": p, f"{prefix}will_churn": p >= threshold,
                         f"{prefix}risk_level": risk})


def churn_probabilities(rng: np.random.Generator, n: int) -> np.ndarray:
    """Skewed like a churn model's output (mean ~0.17, a tenth above 0.4)."""
    return rng.beta(1.2, 6.0, n)


def pairs(champion: np.ndarray, shadow: np.ndarray, **columns) -> pd.DataFrame:
    frame = pd.concat([records(champion), records(shadow, "shadow_")], axis=1)
    for name, values in columns.items():
        frame[name] = values
    return frame


# ------------------------------------------------------------------ sequential


def test_the_multiplier_is_tightest_near_its_target_and_wider_than_one_look() -> None:
    at_target = multiplier(2000, 0.05, 2000)
    assert 2.9 < at_target < 3.1  # about 1.55 x 1.96: the price of looking at every n
    assert multiplier(200, 0.05, 2000) > at_target < multiplier(40_000, 0.05, 2000)
    assert all(multiplier(t, 0.05, 2000) > 1.96 for t in (10, 100, 10**4, 10**6))
    with pytest.raises(ValueError):
        multiplier(0, 0.05, 2000)


def test_a_confidence_sequence_holds_at_every_look_where_a_fixed_interval_does_not() -> None:
    """400 streams of 2,000 observations of mean 0, looked at after every one: the sequence
    misses the mean at some look in at most ~alpha of them; a 95% interval checked at every
    look misses it in far more."""
    rng = np.random.default_rng(3)
    x = rng.normal(0.0, 1.0, (400, 2000))
    t = np.arange(1, 2001)
    means = np.cumsum(x, axis=1) / t
    sd = 1.0  # known here; the judge uses the estimate
    sequence = np.array([multiplier(k, 0.05, 500) for k in t]) * sd / np.sqrt(t)
    fixed = 1.96 * sd / np.sqrt(t)
    look_from = 30  # the judge's gates start later still
    missed_sequence = (np.abs(means[:, look_from:]) > sequence[look_from:]).any(axis=1).mean()
    missed_fixed = (np.abs(means[:, look_from:]) > fixed[look_from:]).any(axis=1).mean()
    assert missed_sequence <= 0.06
    assert missed_fixed > 0.25


def test_separate_samples_share_alpha_and_the_plan_is_enforced() -> None:
    assert sample_alpha(0.05, 1, 3) == pytest.approx(0.05 / 3)
    assert sample_alpha(0.05, 3, 3) == pytest.approx(0.05 / 3)
    with pytest.raises(SampleBudgetSpent, match="planned_samples"):
        sample_alpha(0.05, 4, 3)
    with pytest.raises(ValueError):
        sample_alpha(0.05, 0, 3)


def test_smallest_size_solves_a_known_half_width() -> None:
    assert smallest_size(lambda s: 1 / math.sqrt(s), 0.1, 10**6) == 100
    assert smallest_size(lambda s: 1 / math.sqrt(s), 0.0001, 10**6) is None  # out of reach
    assert smallest_size(lambda s: 1 / math.sqrt(s), 0.0, 10**6) is None


# ------------------------------------------------------------------ effects vs references


def test_two_proportions_matches_the_pooled_z_test() -> None:
    estimate = two_proportions(120, 1000, 150, 1000, BOUNDARY)
    table = np.array([[120, 880], [150, 850]])
    chi2, p, _, _ = stats.chi2_contingency(table, correction=False)
    assert estimate.effect == pytest.approx(0.03)
    assert estimate.statistic ** 2 == pytest.approx(chi2)
    assert estimate.p_value == pytest.approx(p)
    assert estimate.low < 0.03 < estimate.high


def test_zero_counts_do_not_give_a_zero_width_interval() -> None:
    estimate = two_proportions(0, 300, 0, 300, BOUNDARY)
    assert estimate.high - estimate.low > 0.01
    wilson = proportion(0, 500, BOUNDARY)
    m = BOUNDARY.multiplier(500)
    assert wilson.high == pytest.approx(m * m / (500 + m * m))  # Wilson's upper bound at 0


def test_mcnemar_by_hand() -> None:
    """10 customers flagged by the shadow only, 2 by the champion only, 88 agree:
    chi2 = (10 - 2)^2 / 12, exact p = 2 P(X <= 2 | 12, 1/2) = 2 (1 + 12 + 66) / 4096."""
    estimate = paired_proportions(2, 10, 100, BOUNDARY)
    assert estimate.effect == pytest.approx(0.08)
    assert estimate.statistic == pytest.approx(64 / 12)
    assert estimate.p_value == pytest.approx(2 * 79 / 4096)


def test_ratio_of_means_and_welch() -> None:
    rng = np.random.default_rng(1)
    a, b = churn_probabilities(rng, 800), 1.2 * churn_probabilities(rng, 900)
    estimate = ratio_of_means(a, b, BOUNDARY)
    welch = stats.ttest_ind(b, a, equal_var=False)
    assert estimate.effect == pytest.approx(b.mean() / a.mean() - 1)
    assert estimate.statistic == pytest.approx(welch.statistic)
    assert estimate.p_value == pytest.approx(welch.pvalue)
    assert estimate.low < 0.2 < estimate.high


def test_paired_ratio_uses_the_pairs_and_wilcoxon() -> None:
    rng = np.random.default_rng(2)
    a = churn_probabilities(rng, 1000)
    b = np.clip(a * 1.05 + rng.normal(0, 0.01, 1000), 0, 1)
    paired = paired_ratio_of_means(a, b, BOUNDARY)
    unpaired = ratio_of_means(a, b, BOUNDARY)
    reference = stats.wilcoxon(b - a, zero_method="zsplit", method="approx")
    assert paired.effect == pytest.approx(b.mean() / a.mean() - 1)
    assert paired.statistic == pytest.approx(reference.statistic)
    assert paired.p_value == pytest.approx(reference.pvalue)
    # Pairs remove the customers' own variation: a far narrower interval.
    assert (paired.high - paired.low) < (unpaired.high - unpaired.low) / 5
    identical = paired_ratio_of_means(a, a.copy(), BOUNDARY)
    assert (identical.effect, identical.low, identical.high, identical.p_value) == (0, 0, 0, 1)


def test_hodges_lehmann_is_the_median_of_differences_and_mann_whitney() -> None:
    rng = np.random.default_rng(4)
    a, b = churn_probabilities(rng, 41), churn_probabilities(rng, 37) + 0.05  # odd pair count
    estimate = hodges_lehmann(a, b, BOUNDARY, resolution=1e-9)
    assert estimate.effect == pytest.approx(np.median(b[:, None] - a[None, :]), abs=1e-8)
    reference = stats.mannwhitneyu(b, a, alternative="two-sided", method="asymptotic")
    assert estimate.statistic == pytest.approx(reference.statistic)
    assert estimate.p_value == pytest.approx(reference.pvalue)
    assert estimate.low < estimate.effect < estimate.high


def test_midranks_match_scipy_with_ties() -> None:
    values = np.round(np.random.default_rng(22).random(500), 2)
    assert np.array_equal(_midranks(values), stats.rankdata(values))


def test_rank_agreement_is_spearman_inside_minus_all() -> None:
    rng = np.random.default_rng(21)
    a = rng.random(900)
    b = a + rng.normal(0, 0.1, 900)
    inside = slice(0, 300)
    scrambled = b.copy()
    scrambled[inside] = rng.permutation(b[inside])
    r_all = stats.spearmanr(a, scrambled).statistic
    estimate = rank_agreement_difference(a[inside], scrambled[inside], r_all, 900, BOUNDARY)
    expected = stats.spearmanr(a[inside], scrambled[inside]).statistic - r_all
    assert estimate.effect == pytest.approx(expected)
    assert estimate.low < expected < estimate.high
    assert estimate.high < -0.3
    r_alike = stats.spearmanr(a, b).statistic
    alike = rank_agreement_difference(a[inside], b[inside], r_alike, 900, BOUNDARY)
    assert alike.low < 0 < alike.high


def test_ks_distance_matches_scipy() -> None:
    rng = np.random.default_rng(5)
    a, b = churn_probabilities(rng, 500), churn_probabilities(rng, 700) * 1.3
    estimate = ks_distance(a, b, BOUNDARY)
    assert estimate.effect == pytest.approx(stats.ks_2samp(b, a).statistic)
    assert estimate.low < estimate.effect < estimate.high


def _delong_brute_force(y: np.ndarray, a: np.ndarray, b: np.ndarray) -> float:
    """DeLong's variance of AUC_b - AUC_a from the O(m n) kernel, written independently."""
    pos, neg = y == 1, y == 0

    def components(s):
        kernel = (s[pos][:, None] > s[neg][None, :]) + 0.5 * (s[pos][:, None] == s[neg][None, :])
        return kernel.mean(axis=1), kernel.mean(axis=0)

    v10_a, v01_a = components(a)
    v10_b, v01_b = components(b)
    return (np.var(v10_b - v10_a, ddof=1) / pos.sum()
            + np.var(v01_b - v01_a, ddof=1) / neg.sum())


def test_delong_matches_sklearn_and_the_kernel_definition() -> None:
    rng = np.random.default_rng(6)
    y = (rng.random(300) < 0.25).astype(int)
    a = y * 0.8 + rng.normal(0, 0.6, 300)
    b = y * 0.5 + rng.normal(0, 0.6, 300)
    b[:20] = a[:20]  # some ties across models, none needed within
    estimate = delong_paired(y, a, b, BOUNDARY)
    assert estimate.effect == pytest.approx(roc_auc_score(y, b) - roc_auc_score(y, a))
    se = math.sqrt(_delong_brute_force(y, a, b))
    assert estimate.statistic == pytest.approx(estimate.effect / se)
    assert estimate.high - estimate.effect == pytest.approx(BOUNDARY.multiplier(y.sum()) * se)


# ------------------------------------------------------------------ classification and score


def test_classification_against_the_band() -> None:
    band = Tolerance.symmetric(0.04)
    assert classify(-0.01, 0.03, band) == "Pass"
    assert classify(0.05, 0.09, band) == "High"
    assert classify(-0.09, -0.05, band) == "Low"
    assert classify(0.01, 0.06, band) == "Undecided"  # straddles: never a pass
    assert classify(-0.5, 0.5, band) == "Undecided"
    one_sided = Tolerance.at_most(0.01)
    assert classify(-0.2, 0.005, one_sided) == "Pass"  # a fall is fine
    assert classify(0.02, 0.03, one_sided) == "High"
    ratio = Tolerance.ratio(0.2)
    assert ratio.low == pytest.approx(1 / 1.2 - 1)


def _row(name: str, classification: str, weight: float = 1.0, scored: bool = True,
         fails_on: str = "both") -> CheckResult:
    return CheckResult(name, name, "test", "pp", 0.0, 0.0, 0.0, Tolerance.symmetric(1), None, "",
                       None, classification, weight, scored, fails_on, 100)


def test_score_rules() -> None:
    default = ScoreSettings()
    five_pass = [_row(f"c{i}", "Pass") for i in range(5)]
    assert score_and_verdict(five_pass, default) == (100.0, "pass")
    one_high = five_pass[:4] + [_row("c4", "High")]
    assert score_and_verdict(one_high, default) == (80.0, "fail")
    one_open = five_pass[:4] + [_row("c4", "Undecided")]
    assert score_and_verdict(one_open, default) == (80.0, "inconclusive")
    blocked = five_pass[:4] + [_row("c4", "NoData")]
    assert score_and_verdict(blocked, default)[1] == "inconclusive"
    shown = five_pass + [_row("shown", "High", weight=0.0, scored=False)]
    assert score_and_verdict(shown, default) == (100.0, "pass")
    # A significant fall of a one-sided check counts as a pass.
    fall = five_pass[:4] + [_row("failed_requests", "Low", fails_on="high")]
    assert score_and_verdict(fall, default) == (100.0, "pass")
    # Kayenta's defaults (95 / 75) let one metric of five fail without failing the canary.
    kayenta = ScoreSettings(pass_threshold=95, marginal_threshold=75)
    assert score_and_verdict(one_high, kayenta)[1] == "inconclusive"
    # Weights: a light check failing is marginal, a heavy one fails.
    weighted = [_row("heavy", "Pass", 9.0), _row("light", "High", 1.0)]
    assert score_and_verdict(weighted, kayenta) == (90.0, "inconclusive")
    assert score_and_verdict([], default) == (0.0, "inconclusive")


def test_config_file_documents_the_defaults_and_rejects_nonsense(tmp_path: Path) -> None:
    assert JudgeConfig.from_yaml(REPO / "configs" / "judge.yaml") == JudgeConfig()
    bad = tmp_path / "judge.yaml"
    bad.write_text("score: {pass_threshold: 80, marginal_threshold: 90}\n")
    with pytest.raises(JudgeConfigError, match="marginal_threshold"):
        JudgeConfig.from_yaml(bad)
    bad.write_text("unpaired: {checks: {latency_p95: {tolerance: 0.9}}}\n")
    with pytest.raises(JudgeConfigError, match="latency_p95"):
        JudgeConfig.from_yaml(bad)


# ------------------------------------------------------------------ the unpaired judge


def test_kayentas_blind_spot_most_values_100x_higher_fails() -> None:
    """spinnaker #6278 with probabilities: 7 of 10 canary values 100x stable's. The
    Mann-Whitney / Hodges-Lehmann row alone straddles its band (Kayenta passed it); the mean's
    row sees the effect far beyond its band, and the judgement fails."""
    config = JudgeConfig.model_validate({"unpaired": {"min_predictions": 10}})
    stable = records(np.full(10, 0.005))
    canary = records(np.array([0.5] * 7 + [0.005] * 3))
    judgement = judge_unpaired(stable, canary, config)
    assert judgement.check("probability_shift").classification == "Undecided"
    assert judgement.check("mean_probability").classification == "High"
    assert judgement.verdict == "fail" and judgement.exit_code == 1
    assert "mean_probability" in judgement.failing_checks
    # And with realistic volumes: 70% of 2,000 canary customers 100x riskier.
    rng = np.random.default_rng(7)
    base = rng.uniform(0.001, 0.009, 2000)
    boosted = np.where(rng.random(2000) < 0.7, base * 100, base)
    assert judge_unpaired(records(rng.uniform(0.001, 0.009, 2000)), records(boosted)).verdict \
        == "fail"


def test_too_few_predictions_is_no_data_and_says_how_many() -> None:
    rng = np.random.default_rng(8)
    judgement = judge_unpaired(records(churn_probabilities(rng, 150)),
                               records(churn_probabilities(rng, 900)))
    flagged = judgement.check("flagged_share")
    assert flagged.classification == "NoData" and flagged.needed == 200
    assert judgement.verdict == "inconclusive" and judgement.exit_code == 3
    assert judgement.needed_predictions == 200


def test_inconclusive_names_a_sample_size_that_then_decides() -> None:
    """The same population at 2,000 per track is inconclusive (a 4 pp band needs more); at the
    size the judge names, a fresh draw passes."""
    rng = np.random.default_rng(9)
    first = judge_unpaired(records(churn_probabilities(rng, 2000)),
                           records(churn_probabilities(rng, 2000)))
    assert first.verdict == "inconclusive"
    needed = first.needed_predictions
    assert needed is not None and 2000 < needed < 100_000
    assert first.more_predictions_needed == needed - 2000
    assert f"{needed - 2000:,} more" in first.summary()
    passes = sum(judge_unpaired(records(churn_probabilities(rng, needed)),
                                records(churn_probabilities(rng, needed))).verdict == "pass"
                 for _ in range(5))
    assert passes >= 3


def test_http_checks_fail_on_more_failures_not_on_fewer() -> None:
    rng = np.random.default_rng(10)
    stable, canary = records(churn_probabilities(rng, 3000)), records(churn_probabilities(rng,
                                                                                          3000))
    worse = judge_unpaired(stable, canary, stable_traffic=TrackTraffic(3000, 6, 30),
                           canary_traffic=TrackTraffic(3000, 150, 30))
    assert worse.check("failed_requests").classification == "High"
    assert worse.verdict == "fail"
    better = judge_unpaired(stable, canary, stable_traffic=TrackTraffic(3000, 150, 30),
                            canary_traffic=TrackTraffic(3000, 6, 30))
    assert better.check("failed_requests").passing
    untold = judge_unpaired(stable, canary)
    assert untold.check("failed_requests").classification == "NoData"
    assert not untold.check("failed_requests").scored
    with pytest.raises(ValueError, match="exceed"):
        TrackTraffic(10, 8, 5)


def test_latency_ratio_uses_the_floor() -> None:
    rng = np.random.default_rng(11)
    stable, canary = records(churn_probabilities(rng, 500)), records(churn_probabilities(rng, 500))
    fast = judge_unpaired(stable, canary,
                          stable_traffic=TrackTraffic(500, 0, 0, 0.002, 0.004),
                          canary_traffic=TrackTraffic(500, 0, 0, 0.004, 0.008))
    assert fast.check("latency_p95").effect == pytest.approx(0.004 / 0.02)
    assert fast.check("latency_p95").classification == "Pass"
    slow = judge_unpaired(stable, canary,
                          stable_traffic=TrackTraffic(500, 0, 0, 0.05, 0.1),
                          canary_traffic=TrackTraffic(500, 0, 0, 0.1, 0.15))
    assert slow.check("latency_p95").classification == "High"
    assert slow.check("latency_p99").classification == "Pass"
    assert slow.verdict == "fail"


def test_samples_beyond_the_plan_are_refused_and_later_samples_are_stricter() -> None:
    rng = np.random.default_rng(12)
    stable, canary = records(churn_probabilities(rng, 800)), records(churn_probabilities(rng, 800))
    first = judge_unpaired(stable, canary, sample=1)
    assert first.alpha == pytest.approx(0.05 / 3)
    with pytest.raises(SampleBudgetSpent):
        judge_unpaired(stable, canary, sample=4)


def test_unreadable_records_name_the_column() -> None:
    good = records(np.array([0.1, 0.2]))
    with pytest.raises(JudgeInputError, match="will_churn"):
        judge_unpaired(good, good.drop(columns="will_churn"))
    with pytest.raises(JudgeInputError, match="risk_level"):
        judge_unpaired(good, good.assign(risk_level=["LOW", "SEVERE"]))
    with pytest.raises(JudgeInputError, match="outside"):
        judge_unpaired(good, good.assign(churn_probability=[0.1, 1.5]))


# ------------------------------------------------------------------ the paired judge


def test_the_same_model_passes_once_its_segments_can_be_tested() -> None:
    """Segments are judged from 200 pairs (disagreement) and 400 (rank agreement): before a
    segment has them the judgement waits, and says for how many pairs."""
    rng = np.random.default_rng(13)
    p = churn_probabilities(rng, 500)
    thirds = rng.choice(["north", "south", "east"], 500)
    waiting = judge_paired(pairs(p, p, region=thirds), segments=["region"])
    assert waiting.check("segment_ranking").classification == "NoData"  # ~167 each
    assert waiting.verdict == "inconclusive"
    largest = max(np.unique(thirds, return_counts=True)[1])
    assert waiting.needed_predictions == math.ceil(400 * 500 / largest)  # ~1,200
    p = churn_probabilities(rng, 1300)
    region = rng.choice(["north", "south", "east"], 1300)
    judgement = judge_paired(pairs(p, p, region=region), segments=["region"])
    assert judgement.verdict == "pass" and judgement.exit_code == 0
    assert judgement.transitions["LOW"]["HIGH"] == 0
    assert judgement.transitions["HIGH"]["HIGH"] == int((p >= HIGH_CUTOFF).sum())


def test_a_moved_threshold_fails_on_the_share_flagged_with_mcnemar() -> None:
    rng = np.random.default_rng(14)
    p = churn_probabilities(rng, 4000)
    lowered = np.quantile(p, 1 - ((p >= THRESHOLD).mean() + 0.08))  # 8 pp more flagged
    frame = pd.concat([records(p), records(p, "shadow_", threshold=lowered)], axis=1)
    judgement = judge_paired(frame)
    flagged = judgement.check("flagged_share")
    assert flagged.classification == "High"
    assert flagged.effect == pytest.approx(0.08, abs=0.003)
    assert flagged.p_value < 1e-10
    assert judgement.check("mean_probability").classification == "Pass"
    assert judgement.verdict == "fail"


def test_a_scrambled_segment_is_found_and_named() -> None:
    """The shadow's probabilities are shuffled within one region (a feature-join bug): the
    overall distribution is unchanged, but that region's decisions change."""
    rng = np.random.default_rng(15)
    n = 3000
    region = rng.choice(["north", "south", "east", "west"], n, p=[0.4, 0.3, 0.2, 0.1])
    p = np.clip(churn_probabilities(rng, n) + 0.25 * (region == "south"), 0, 1)
    shadow = p.copy()
    south = np.flatnonzero(region == "south")
    shadow[south] = rng.permutation(p[south])
    judgement = judge_paired(pairs(p, shadow, region=region), segments=["region"])
    segment = judgement.check("segment_disagreement")
    assert segment.classification == "High"
    assert "region=south" in segment.note
    ranking = judgement.check("segment_ranking")
    assert ranking.classification == "Low" and "region=south" in ranking.note
    assert judgement.segments[0].value == "south"
    assert judgement.check("mean_probability").classification == "Pass"  # same distribution
    assert judgement.verdict == "fail"


def test_a_scrambled_segment_far_below_the_threshold_is_seen_in_its_ranking() -> None:
    """At a low churn rate a scrambled low-risk segment changes almost no decision: only the
    ranking inside it shows the bug."""
    rng = np.random.default_rng(20)
    n = 3000
    region = rng.choice(["north", "south", "east"], n, p=[0.5, 0.3, 0.2])
    p = np.where(region == "south", rng.uniform(0.01, 0.1, n), churn_probabilities(rng, n))
    shadow = p.copy()
    south = np.flatnonzero(region == "south")
    shadow[south] = rng.permutation(p[south])
    judgement = judge_paired(pairs(p, shadow, region=region), segments=["region"])
    assert judgement.check("segment_disagreement").classification == "Pass"
    assert judgement.check("segment_ranking").classification == "Low"
    assert judgement.verdict == "fail"
    assert judgement.segments[0].value == "south"
    assert judgement.segments[0].ranking_class == "Low"


def test_labels_give_a_paired_roc_auc_that_can_fail_but_not_hold_back() -> None:
    rng = np.random.default_rng(16)
    n = 4000
    risk = rng.normal(0, 1, n)
    label = (rng.random(n) < 1 / (1 + np.exp(-(risk * 2 - 2)))).astype(float)
    p = 1 / (1 + np.exp(-(risk * 2 - 2)))
    noisy = 1 / (1 + np.exp(-(risk * 2 - 2 + rng.normal(0, 2.5, n))))
    shuffled_noise = noisy.copy()
    # Worse ranking, same share flagged and mean: only the labels can tell.
    judgement = judge_paired(pairs(p, shuffled_noise, label=label))
    auc = judgement.check("roc_auc")
    assert auc.effect < -0.05
    assert auc.classification == "Low" and auc.scored
    assert "roc_auc" in judgement.failing_checks
    label[rng.random(n) < 0.97] = np.nan  # few outcomes known yet
    few = judge_paired(pairs(p, p, label=label))
    assert not few.check("roc_auc").scored
    assert few.verdict == "pass"


def test_rows_without_a_shadow_are_left_out_and_counted() -> None:
    rng = np.random.default_rng(17)
    p = churn_probabilities(rng, 600)
    frame = pairs(p, p).astype({"shadow_will_churn": object})
    frame.loc[:99, ["shadow_churn_probability", "shadow_will_churn", "shadow_risk_level"]] = None
    judgement = judge_paired(frame)
    assert judgement.sizes["pairs"] == 500 and judgement.sizes["without_shadow"] == 100
    with pytest.raises(JudgeInputError, match="segment"):
        judge_paired(frame, segments=["plan"])


# ------------------------------------------------------------------ output


def test_table_dict_and_gauges() -> None:
    rng = np.random.default_rng(18)
    p = churn_probabilities(rng, 1000)
    judgement = judge_paired(pairs(p, np.minimum(p * 1.5, 0.99), label=rng.integers(0, 2, 1000)))
    text = judgement.table()
    for header in ("check", "statistic", "effect [interval]", "tolerance", "p-value", "class"):
        assert header in text
    assert "FAIL" in text.splitlines()[0]
    data = json.loads(json.dumps(judgement.to_dict()))
    assert data["verdict"] == "fail" and data["exit_code"] == 1
    assert {row["name"] for row in data["checks"]} >= {"flagged_share", "roc_auc"}

    registry = judgement_registry(judgement, now=1234.0, labels={"candidate_version": "v2"})
    value = registry.get_sample_value
    key = {"judge": "paired", "check": "mean_probability", "candidate_version": "v2"}
    row = judgement.check("mean_probability")
    assert value("churn_judge_check_effect", key) == pytest.approx(row.effect)
    assert value("churn_judge_check_effect_low", key) == pytest.approx(row.low)
    assert value("churn_judge_check_tolerance_high", key) == pytest.approx(0.2)
    assert value("churn_judge_check_p_value", key) == pytest.approx(row.p_value)
    assert value("churn_judge_check_class", key) == CLASS_CODES[row.classification] == 1
    assert value("churn_judge_check_failing", key) == 1
    overall = {"judge": "paired", "candidate_version": "v2"}
    assert value("churn_judge_verdict", overall) == 1
    assert value("churn_judge_failed", overall) == 1
    assert value("churn_judge_score", overall) == pytest.approx(judgement.score)
    assert value("churn_judge_last_run_timestamp_seconds", overall) == 1234.0
    assert value("churn_judge_observations",
                 {"judge": "paired", "kind": "pairs", "candidate_version": "v2"}) == 1000
    # Values the judgement lacks are left out, not pushed as NaN.
    exposition = generate_latest(registry).decode()
    assert "NaN" not in exposition
    assert 'churn_judge_check_tolerance_low{candidate_version="v2",check="disagreement"' \
        not in exposition


# ------------------------------------------------------------------ a reduced simulation


def _rates(judge, draws: int) -> dict[str, float]:
    verdicts = [judge() for _ in range(draws)]
    return {v: verdicts.count(v) / draws for v in ("fail", "pass", "inconclusive")}


def test_reduced_simulation_false_failures_and_detection() -> None:
    """Synthetic champion scores (skewed like churn probabilities), a "retrained" model that
    differs per customer (log-odds + N(0, 0.25)) but not in distribution, and a model scaled
    up 1.5x. At 1,000 predictions per side: false failures at most 5% for A/A and retrained,
    both judges; the scaled model caught by the paired judge."""
    rng = np.random.default_rng(19)
    pool = churn_probabilities(rng, 50_000)
    logit = np.log(pool / (1 - pool))
    retrained = 1 / (1 + np.exp(-(logit + rng.normal(0, 0.25, pool.size))))
    scaled = np.minimum(pool * 1.5, 0.99)
    n, draws = 1000, 40

    def paired(model):
        rows = rng.integers(0, pool.size, n)
        return judge_paired(pairs(pool[rows], model[rows])).verdict

    def unpaired(model):
        return judge_unpaired(records(pool[rng.integers(0, pool.size, n)]),
                              records(model[rng.integers(0, pool.size, n)])).verdict

    for model in (pool, retrained):
        assert _rates(lambda m=model: paired(m), draws)["fail"] <= 0.05
        assert _rates(lambda m=model: unpaired(m), draws)["fail"] <= 0.05
    assert _rates(lambda: paired(pool), draws)["pass"] == 1.0
    assert _rates(lambda: paired(scaled), draws)["fail"] >= 0.9
