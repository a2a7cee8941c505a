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
from dataclasses import replace

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
        segment_check, segment_rows = _segments(usable, segments, a, b, boundary, settings,
                                                config.max_needed)
        rows.insert(4, segment_check)
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


def _segments(frame: pd.DataFrame, columns: Sequence[str], a: Predictions, b: Predictions,
              boundary: Boundary, settings: PairedSettings, cap: int
              ) -> tuple[CheckResult, tuple[SegmentRow, ...]]:
    """Every value of every segment column: its disagreement against the other customers'.
    Alpha is split over every segment seen (Bonferroni), tested or not."""
    if not columns:
        return _missing("segment_disagreement", settings, "no segment columns given",
                        scored=False), ()
    n = len(a)
    changed = (a.flagged != b.flagged).astype(np.int64)
    moved = (np.abs(b.probability - a.probability) > settings.moved_by).astype(np.int64)
    shift = b.probability - a.probability
    found = []
    for column in columns:
        codes, values = pd.factorize(frame[column], sort=True, use_na_sentinel=False)
        values = ["<missing>" if pd.isna(v) else v for v in values]
        counts = np.bincount(codes, minlength=len(values))
        changes = np.bincount(codes, weights=changed, minlength=len(values))
        moves = np.bincount(codes, weights=moved, minlength=len(values))
        shifts = np.bincount(codes, weights=shift, minlength=len(values))
        for i, value in enumerate(values):
            found.append((column, str(value), int(counts[i]), int(changes[i]), int(moves[i]),
                          float(shifts[i])))
    segment_boundary = Boundary(boundary.alpha / max(len(found), 1), boundary.tightest_at)
    tolerance, _ = _tolerances(settings)["segment_disagreement"]
    total_changed = int(changed.sum())
    tested: list[tuple[SegmentRow, Estimate]] = []
    listed: list[SegmentRow] = []
    for column, value, size, changes, moves, shifts in found:
        rest, rest_changes = n - size, total_changed - changes
        excess = changes / size - (rest_changes / rest if rest else 0.0)
        row = SegmentRow(column, value, size, changes / size,
                         rest_changes / rest if rest else 0.0, excess, None, None,
                         moves / size, shifts / size, "NoData")
        if size >= settings.min_segment_pairs and rest >= settings.min_segment_pairs:
            estimate = two_proportions(rest_changes, rest, changes, size, segment_boundary)
            row = replace(row, low=estimate.low, high=estimate.high,
                          classification=classify(estimate.low, estimate.high, tolerance))
            tested.append((row, estimate))
        listed.append(row)
    listed.sort(key=lambda r: (-abs(r.excess), r.feature, r.value))
    top = tuple(listed[:settings.top_segments])
    if not tested:
        largest = max((size for _, _, size, *_ in found), default=0)
        needed = (int(np.ceil(settings.min_segment_pairs * n / largest)) if largest else None)
        return _missing("segment_disagreement", settings,
                        f"no segment has {settings.min_segment_pairs} pairs yet",
                        needed=needed, n=0), top
    worst = _worst(tested)
    row, estimate = worst
    share = row.pairs / n
    result = _row("segment_disagreement", estimate, settings, cap,
                  f"{row.feature}={row.value}: {100 * row.disagreement:.1f}% of its {row.pairs} "
                  f"customers change decision, {100 * row.rest_disagreement:.1f}% of the rest; "
                  f"{len(tested)} of {len(found)} segments tested")
    if result.classification == "Undecided" and result.needed is not None:
        result = replace(result, needed=int(np.ceil(result.needed / share)))
    return result, top


def _worst(tested: list[tuple[SegmentRow, Estimate]]) -> tuple[SegmentRow, Estimate]:
    """The segment that decides the check: any above the band (the clearest), else any not yet
    decided (the one furthest from deciding), else the one closest to the band's edge."""
    above = [t for t in tested if t[0].classification == "High"]
    if above:
        return max(above, key=lambda t: t[1].low)
    open_ = [t for t in tested if t[0].classification == "Undecided"]
    if open_:
        return max(open_, key=lambda t: t[1].high)
    return max(tested, key=lambda t: t[1].high)


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
