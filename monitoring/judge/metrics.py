"""A judgement as Prometheus gauges, for the Pushgateway (``monitoring.push.push_metrics``).

Push the registry under the judge's job (``SHADOW_JOB`` or ``CANARY_JOB``) grouped by the
judged model's version, so a shadow and a canary judgement of the same version do not replace
each other. Every series carries ``judge`` (paired | unpaired); per-check series carry
``check`` (the row's name). A value the judgement does not have (no p-value, no data) is left
out rather than pushed as NaN, so a dashboard shows a gap, not a number.

Codes: ``churn_judge_check_class`` 0 Pass, 1 High, -1 Low, 2 Undecided, 3 NoData;
``churn_judge_verdict`` the exit code (0 pass, 1 fail, 3 inconclusive).
"""

from __future__ import annotations

import math

from prometheus_client import CollectorRegistry, Gauge

from monitoring.judge.decision import CLASS_CODES, Judgement

SHADOW_JOB = "churn_shadow_judge"
CANARY_JOB = "churn_canary_judge"

_CHECK_GAUGES = {
    "churn_judge_check_statistic": "the check's test statistic (see the table's test column)",
    "churn_judge_check_effect": "the check's effect: a difference of shares (fraction), a "
    "relative change of the mean (fraction), a ratio (latency) or a distance",
    "churn_judge_check_effect_low": "lower bound of the effect's confidence sequence",
    "churn_judge_check_effect_high": "upper bound of the effect's confidence sequence",
    "churn_judge_check_tolerance_low": "lower edge of the check's tolerance band",
    "churn_judge_check_tolerance_high": "upper edge of the check's tolerance band",
    "churn_judge_check_p_value": "p-value of the check's test (shown, not decided on)",
    "churn_judge_check_class": "0 Pass, 1 High, -1 Low, 2 Undecided, 3 NoData",
    "churn_judge_check_failing": "1 when the check fails the judgement",
    "churn_judge_check_scored": "1 when the check counts in the score (0: shown only)",
    "churn_judge_check_needed": "sample size at which an undecided check would decide",
}


def judgement_registry(judgement: Judgement, now: float,
                       labels: dict[str, str] | None = None) -> CollectorRegistry:
    """Gauges of every check and of the verdict. ``labels`` are added to every series (e.g.
    ``{"baseline_version": ..., "candidate_version": ...}``); ``now`` is the run's time."""
    extra = dict(labels or {})
    registry = CollectorRegistry()
    check_labels = ["judge", "check", *extra]
    gauges = {name: Gauge(name, text, check_labels, registry=registry)
              for name, text in _CHECK_GAUGES.items()}

    def put(name: str, value: float | None, **label_values: str) -> None:
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return
        gauges[name].labels(**label_values, **extra).set(float(value))

    for row in judgement.checks:
        key = {"judge": judgement.judge, "check": row.name}
        put("churn_judge_check_statistic", row.statistic, **key)
        put("churn_judge_check_effect", row.effect, **key)
        put("churn_judge_check_effect_low", row.low, **key)
        put("churn_judge_check_effect_high", row.high, **key)
        put("churn_judge_check_tolerance_low", row.tolerance.low, **key)
        put("churn_judge_check_tolerance_high", row.tolerance.high, **key)
        put("churn_judge_check_p_value", row.p_value, **key)
        put("churn_judge_check_class", CLASS_CODES[row.classification], **key)
        put("churn_judge_check_failing", float(row.scored and row.failing), **key)
        put("churn_judge_check_scored", float(row.scored), **key)
        put("churn_judge_check_needed", row.needed, **key)

    overall = ["judge", *extra]
    base = {"judge": judgement.judge, **extra}

    def single(name: str, text: str, value: float | None) -> None:
        if value is not None:
            Gauge(name, text, overall, registry=registry).labels(**base).set(float(value))

    single("churn_judge_verdict", "0 pass, 1 fail, 3 inconclusive (the exit code)",
           judgement.exit_code)
    single("churn_judge_failed", "1 when the judgement fails", float(judgement.verdict == "fail"))
    single("churn_judge_score", "weighted share of scored checks that pass, 0-100",
           judgement.score)
    single("churn_judge_alpha", "this sample's false-failure budget", judgement.alpha)
    single("churn_judge_sample", "which separate sample was judged (1 = first)",
           judgement.sample)
    single("churn_judge_needed_predictions", "predictions per side (pairs) at which the "
           "undecided checks would decide", judgement.needed_predictions)
    single("churn_judge_needed_requests", "requests per track at which the undecided HTTP "
           "checks would decide", judgement.needed_requests)
    single("churn_judge_last_run_timestamp_seconds", "end of the last judgement (unix time)",
           now)
    sizes = Gauge("churn_judge_observations", "what the judgement rests on, by kind",
                  ["judge", "kind", *extra], registry=registry)
    for kind, value in judgement.sizes.items():
        sizes.labels(judge=judgement.judge, kind=kind, **extra).set(value)
    return registry
