"""The shadow judge: the champion and the shadow scored the same customers.

Pairs remove the customers' own variation from every comparison, so the same tolerance is
decided with far fewer predictions than two tracks need. Scored checks (defaults in
configs/judge.yaml, why in docs/judge.md):

- **share will_churn**, **share HIGH**: the shadow's share minus the champion's, with McNemar's
  exact test on the customers only one of them flags;
- **mean probability**: the shadow's mean / the champion's - 1 (the mean paired difference
  relative to the champion's mean), with Wilcoxon's signed-rank test;
- **will_churn disagreement**: the share of customers whose decision would change;
- **segment disagreement**: for each value of the contract's categorical features (a segment),
  its disagreement minus the other customers'; the worst segment decides (alpha split over
  the segments);
- **ROC-AUC** (when labels are given): the shadow's minus the champion's on the same customers,
  DeLong's paired test; it may fail the shadow (worse by more than the tolerance) or count as a
  pass, but while undecided it does not hold the verdict back: labels arrive late.

Shown, not scored: the share of customers whose probability moved by more than ``moved_by``,
the share jumping between LOW and HIGH, the risk-level transition matrix and the segments with
the largest changes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd

from monitoring.judge.config import JudgeConfig, PairedSettings
from monitoring.judge.decision import (
    CheckResult,
    Judgement,
    SegmentRow,
    Tolerance,
    classify,
    judged,
    no_data,
    score_and_verdict,
)
from monitoring.judge.effects import (
    Boundary,
    Estimate,
    delong_paired,
    paired_proportions,
    paired_ratio_of_means,
    proportion,
    rank_agreement_difference,
    rank_correlation,
    two_proportions,
)
from monitoring.judge.records import (
    RISK_LEVELS,
    SHADOW_PREFIX,
    JudgeInputError,
    Predictions,
    predictions,
    scored_rows,
)
from monitoring.judge.sequential import sample_alpha

HIGH, LOW = 2, 0
LABEL = "label"


def judge_paired(pairs: pd.DataFrame, config: JudgeConfig | None = None, *,
                 segments: Sequence[str] = (), label: str | None = LABEL, sample: int = 1,
                 champion_prefix: str = "", shadow_prefix: str = SHADOW_PREFIX) -> Judgement:
    """Judge the shadow against the champion on the customers both scored.

    ``pairs`` holds one row per customer: the champion's ``churn_probability``, ``will_churn``,
    ``risk_level`` and the shadow's under ``shadow_prefix``; rows without a shadow probability
    (a skipped batch) are left out and counted. ``segments``: categorical columns (the
    contract's) whose values are the segments. ``label``: a 0/1 column, missing where the
    outcome is not known yet. ``sample``: see ``judge_unpaired``; the shadow's pairs are one
    growing sample (1). Raises JudgeInputError for unreadable records, SampleBudgetSpent
    beyond the planned samples."""
    config = config or JudgeConfig()
    settings = config.paired
    alpha = sample_alpha(config.alpha, sample, settings.planned_samples)
    boundary = Boundary(alpha, config.tightest_at)
    usable = scored_rows(scored_rows(pairs, champion_prefix), shadow_prefix)
    a = predictions(usable, champion_prefix, "champion columns")
    b = predictions(usable, shadow_prefix, "shadow columns")
    n = len(a)
    sizes = {"pairs": n, "without_shadow": len(pairs) - n}
    missing = [s for s in segments if s not in usable.columns]
    if missing:
        raise JudgeInputError(f"segment column(s) {missing} are not in the pairs")
    labels = _labels(usable, label)
    if labels is not None:
        sizes["labelled"] = int((~np.isnan(labels)).sum())

    if n < settings.min_pairs:
        rows = _too_few(n, settings)
        segment_rows: tuple[SegmentRow, ...] = ()
        transitions = _transitions(a, b)
    else:
        rows = _core_checks(a, b, boundary, settings, config.max_needed)
        segment_checks, segment_rows = _segments(usable, segments, a, b, boundary, settings,
                                                 config.max_needed)
        rows[4:4] = segment_checks
        rows.append(_roc_auc(labels, a, b, boundary, settings, config.max_needed))
        transitions = _transitions(a, b)
    score, verdict = score_and_verdict(rows, config.score)
    undecided = [r.needed for r in rows if r.scored and not r.passing and not r.failing
                 and r.needed is not None]
    return Judgement("paired", tuple(rows), score, verdict, sizes, sample, alpha,
                     max(undecided) if undecided else None, None, transitions, segment_rows)


def _labels(frame: pd.DataFrame, label: str | None) -> np.ndarray | None:
    if not label or label not in frame.columns:
        return None
    values = pd.to_numeric(frame[label], errors="coerce").to_numpy(float)
    known = values[~np.isnan(values)]
    if not np.isin(known, (0.0, 1.0)).all():
        raise JudgeInputError(f"label column {label!r} holds values other than 0, 1 and empty")
    return values


_SPECS = {
    # name: (title, test, unit, statistic name)
    "flagged_share": ("share will_churn", "McNemar exact", "pp", "chi2"),
    "high_share": ("share HIGH", "McNemar exact", "pp", "chi2"),
    "mean_probability": ("mean probability (ratio)", "Wilcoxon signed-rank", "ratio", "W"),
    "disagreement": ("will_churn disagreement", "Wilson interval", "pp", "n"),
    "segment_disagreement": ("segment disagreement (worst)", "two-proportion z", "pp", "z"),
    "segment_ranking": ("segment rank agreement (worst)", "Fisher z of Spearman's r",
                        "correlation", "z"),
    "moved_share": ("probability moved", "Wilson interval", "pp", "n"),
    "risk_jumps": ("LOW <-> HIGH jumps", "Wilson interval", "pp", "n"),
    "roc_auc": ("ROC-AUC (labelled)", "DeLong paired", "auc", "z"),
}


def _tolerances(settings: PairedSettings) -> dict[str, tuple[Tolerance, str]]:
    c = settings.checks
    return {
        "flagged_share": (Tolerance.symmetric(c.flagged_share.tolerance), "both"),
        "high_share": (Tolerance.symmetric(c.high_share.tolerance), "both"),
        "mean_probability": (Tolerance.ratio(c.mean_probability.tolerance), "both"),
        "disagreement": (Tolerance.at_most(c.disagreement.tolerance), "high"),
        "segment_disagreement": (Tolerance.at_most(c.segment_disagreement.tolerance), "high"),
        "segment_ranking": (Tolerance.at_least(-c.segment_ranking.tolerance), "low"),
        "moved_share": (Tolerance.at_most(c.moved_share.tolerance), "high"),
        "risk_jumps": (Tolerance.at_most(c.risk_jumps.tolerance), "high"),
        "roc_auc": (Tolerance.at_least(-c.roc_auc.tolerance), "low"),
    }


def _row(name: str, estimate: Estimate, settings: PairedSettings, cap: int,
         note: str = "") -> CheckResult:
    title, test, unit, statistic = _SPECS[name]
    tolerance, side = _tolerances(settings)[name]
    return judged(name, title, test, unit, estimate, tolerance, side,
                  getattr(settings.checks, name), cap, statistic, note)


def _missing(name: str, settings: PairedSettings, note: str, needed: int | None = None,
             n: int | None = None, scored: bool = True) -> CheckResult:
    title, test, unit, _ = _SPECS[name]
    tolerance, side = _tolerances(settings)[name]
    return no_data(name, title, test, unit, tolerance, side, getattr(settings.checks, name),
                   note, needed, n, scored)


def _too_few(n: int, settings: PairedSettings) -> list[CheckResult]:
    note = f"{n} pairs; the checks start at {settings.min_pairs}"
    return [_missing(name, settings, note, settings.min_pairs, n, scored=name != "roc_auc")
            for name in _SPECS]


def _core_checks(a: Predictions, b: Predictions, boundary: Boundary,
                 settings: PairedSettings, cap: int) -> list[CheckResult]:
    n = len(a)
    only_a, only_b = int((a.flagged & ~b.flagged).sum()), int((b.flagged & ~a.flagged).sum())
    a_high, b_high = a.risk == HIGH, b.risk == HIGH
    rows = [
        _row("flagged_share", paired_proportions(only_a, only_b, n, boundary), settings, cap,
             f"{only_b} customers flagged by the shadow only, {only_a} by the champion only"),
        _row("high_share", paired_proportions(int((a_high & ~b_high).sum()),
                                              int((b_high & ~a_high).sum()), n, boundary),
             settings, cap),
    ]
    if a.probability.mean() > 0 and b.probability.mean() > 0:
        rows.append(_row("mean_probability",
                         paired_ratio_of_means(a.probability, b.probability, boundary),
                         settings, cap))
    else:
        rows.append(_missing("mean_probability", settings,
                             "a model's probabilities are all 0: no ratio"))
    rows.append(_row("disagreement", proportion(only_a + only_b, n, boundary), settings, cap))
    moved = int((np.abs(b.probability - a.probability) > settings.moved_by).sum())
    rows.append(_row("moved_share", proportion(moved, n, boundary), settings, cap,
                     f"moved: probability changed by more than {settings.moved_by:g}"))
    jumps = int(((a.risk == LOW) & (b.risk == HIGH)).sum() + ((a.risk == HIGH)
                                                              & (b.risk == LOW)).sum())
    rows.append(_row("risk_jumps", proportion(jumps, n, boundary), settings, cap))
    return rows


@dataclass
class _Segment:
    feature: str
    value: str
    rows: np.ndarray  # positions of its pairs


def _segments(frame: pd.DataFrame, columns: Sequence[str], a: Predictions, b: Predictions,
              boundary: Boundary, settings: PairedSettings, cap: int
              ) -> tuple[list[CheckResult], tuple[SegmentRow, ...]]:
    """Every value of every segment column: how much more often its decisions change than
    the other customers', and how much less the two models agree on its ranking than on all
    customers'. Alpha is split over every segment seen (Bonferroni), tested or not."""
    names = ("segment_disagreement", "segment_ranking")
    if not columns:
        return [_missing(name, settings, "no segment columns given", scored=False)
                for name in names], ()
    n = len(a)
    found: list[_Segment] = []
    for column in columns:
        codes, values = pd.factorize(frame[column], sort=True, use_na_sentinel=False)
        order = np.argsort(codes, kind="stable")
        bounds = np.searchsorted(codes[order], np.arange(len(values) + 1))
        for i, value in enumerate(values):
            label = "<missing>" if pd.isna(value) else str(value)
            found.append(_Segment(column, label, order[bounds[i]:bounds[i + 1]]))
    per_segment = Boundary(boundary.alpha / max(len(found), 1), boundary.tightest_at)
    changed = a.flagged != b.flagged
    moved = np.abs(b.probability - a.probability) > settings.moved_by
    shift = b.probability - a.probability
    total_changed = int(changed.sum())
    overall_agreement = rank_correlation(a.probability, b.probability)
    disagreement_band, _ = _tolerances(settings)["segment_disagreement"]
    ranking_band, _ = _tolerances(settings)["segment_ranking"]
    tested: dict[str, list[tuple[SegmentRow, Estimate]]] = {name: [] for name in names}
    listed: list[SegmentRow] = []
    for segment in found:
        rows, size = segment.rows, len(segment.rows)
        rest_size = n - size
        changes = int(changed[rows].sum())
        rest_rate = (total_changed - changes) / rest_size if rest_size else 0.0
        row = SegmentRow(segment.feature, segment.value, size, changes / size, rest_rate,
                         changes / size - rest_rate, excess_low=None, excess_high=None,
                         disagreement_class="NoData", rank_agreement=None, rank_low=None,
                         rank_high=None, ranking_class="NoData",
                         moved_share=float(moved[rows].mean()),
                         mean_shift=float(shift[rows].mean()))
        if min(size, rest_size) >= settings.min_segment_pairs:
            excess = two_proportions(total_changed - changes, rest_size, changes, size,
                                     per_segment)
            row = replace(row, excess_low=excess.low, excess_high=excess.high,
                          disagreement_class=classify(excess.low, excess.high,
                                                      disagreement_band))
        if min(size, rest_size) >= settings.min_ranking_pairs:
            ranking = rank_agreement_difference(a.probability[rows], b.probability[rows],
                                                overall_agreement, n, per_segment)
            row = replace(row, rank_agreement=ranking.effect, rank_low=ranking.low,
                          rank_high=ranking.high,
                          ranking_class=classify(ranking.low, ranking.high, ranking_band))
            tested["segment_ranking"].append((row, ranking))
        if row.excess_low is not None:
            tested["segment_disagreement"].append((row, excess))
        listed.append(row)
    listed.sort(key=_concern)
    top = tuple(listed[:settings.top_segments])
    largest = max((len(s.rows) for s in found), default=0)
    checks = []
    for name in names:
        if not tested[name]:
            minimum = (settings.min_segment_pairs if name == "segment_disagreement"
                       else settings.min_ranking_pairs)
            needed = int(np.ceil(minimum * n / largest)) if largest else None
            checks.append(_missing(name, settings, f"no segment has {minimum} pairs yet",
                                   needed=needed, n=0))
            continue
        row, estimate = _worst(tested[name], name)
        if name == "segment_disagreement":
            note = (f"{row.feature}={row.value}: {100 * row.disagreement:.1f}% of its "
                    f"{row.pairs} customers change decision, {100 * row.rest_disagreement:.1f}%"
                    " of the rest")
        else:
            note = (f"{row.feature}={row.value}: rank agreement (Spearman's r) "
                    f"{overall_agreement + row.rank_agreement:.3f}, all customers "
                    f"{overall_agreement:.3f}")
        result = _row(name, estimate, settings, cap,
                      f"{note}; {len(tested[name])} of {len(found)} segments tested")
        if result.classification == "Undecided" and result.needed is not None:
            result = replace(result, needed=int(np.ceil(result.needed * n / row.pairs)))
        checks.append(result)
    return checks, top


def _concern(row: SegmentRow) -> tuple:
    """Failing segments first, then the largest changes."""
    failing = row.disagreement_class == "High" or row.ranking_class == "Low"
    return (not failing, -(abs(row.excess) + abs(row.rank_agreement or 0.0)), row.feature,
            row.value)


def _worst(tested: list[tuple[SegmentRow, Estimate]], name: str
           ) -> tuple[SegmentRow, Estimate]:
    """The segment that decides a check: one beyond the band (the furthest), else one not yet
    decided, else the one closest to the band's edge; "furthest" and "closest" measured by
    the interval's bound on the failing side (ranking fails low, disagreement high)."""
    ranking = name == "segment_ranking"

    def klass(item: tuple[SegmentRow, Estimate]) -> str:
        return item[0].ranking_class if ranking else item[0].disagreement_class

    def badness(item: tuple[SegmentRow, Estimate]) -> float:
        estimate, beyond = item[1], klass(item) in ("High", "Low")
        if ranking:
            return -estimate.high if beyond else -estimate.low
        return estimate.low if beyond else estimate.high

    for wanted in (("High", "Low"), ("Undecided",)):
        chosen = [t for t in tested if klass(t) in wanted]
        if chosen:
            return max(chosen, key=badness)
    return max(tested, key=badness)


def _roc_auc(labels: np.ndarray | None, a: Predictions, b: Predictions, boundary: Boundary,
             settings: PairedSettings, cap: int) -> CheckResult:
    if labels is None:
        return _missing("roc_auc", settings, "no labels given", scored=False)
    known = ~np.isnan(labels)
    y = labels[known]
    positives, negatives = int(y.sum()), int(len(y) - y.sum())
    if len(y) < settings.min_labelled or min(positives, negatives) < 2:
        return _missing("roc_auc", settings,
                        f"{len(y)} labelled pairs ({positives} churned); ROC-AUC is compared "
                        f"from {settings.min_labelled} with both outcomes", scored=False,
                        n=len(y))
    estimate = delong_paired(y, a.probability[known], b.probability[known], boundary)
    row = _row("roc_auc", estimate, settings, cap,
               f"{len(y)} labelled pairs, {positives} churned")
    if row.classification == "Undecided":
        # Labels arrive late: their absence of a verdict must not hold the shadow back.
        return replace(row, scored=False, note=row.note + "; not scored until decided")
    return row


def _transitions(a: Predictions, b: Predictions) -> dict[str, dict[str, int]]:
    """Champion's risk level -> shadow's -> customers."""
    matrix = np.zeros((3, 3), dtype=np.int64)
    np.add.at(matrix, (a.risk.astype(np.int64), b.risk.astype(np.int64)), 1)
    return {level: {other: int(matrix[i, j]) for j, other in enumerate(RISK_LEVELS)}
            for i, level in enumerate(RISK_LEVELS)}
