"""The canary report: what each track serves, where its data begins, the judge's verdict and
table (the queries run against a real Prometheus in test_e2e.py and against promtool in
rules.test.yml; the judge is tested in tests/monitoring/test_judge.py)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd

from monitoring.judge import TrackTraffic, judge_unpaired
from rollout.measure import Report, Served, single, table

AT = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
SERVED = [Served("stable", "streaming_churn:a", "a", 2, AT - timedelta(hours=3)),
          Served("canary", "streaming_churn:b", "b", 1, AT - timedelta(minutes=4, seconds=5))]


def records(n: int, scale: float, seed: int) -> pd.DataFrame:
    probability = np.clip(np.random.default_rng(seed).beta(1.2, 6, n) * scale, 0, 0.999)
    return pd.DataFrame({"churn_probability": probability, "will_churn": probability >= 0.2,
                         "risk_level": np.where(probability >= 0.5, "HIGH",
                                                np.where(probability >= 0.2, "MEDIUM", "LOW"))})


def report(canary_scale: float = 1.0, versions: list[Served] | None = None) -> Report:
    traffic = TrackTraffic(requests=5000, failed=0, rejected=10, latency_p95=0.02,
                           latency_p99=0.03)
    judgement = judge_unpaired(records(5000, 1.0, 1), records(5000, canary_scale, 2),
                               stable_traffic=traffic, canary_traffic=traffic)
    return Report("10m", AT, judgement, SERVED if versions is None else versions,
                  predictions={"stable": 5000, "canary": 5000})


def test_the_table_names_what_each_track_serves_and_the_judges_rows() -> None:
    failing = report(canary_scale=2.0)
    assert failing.verdict == "fail" and failing.exit_code == 1
    lines = table(failing).splitlines()
    assert lines[0].endswith(": FAIL")
    assert lines[1] == ("canary serves streaming_churn:b (1 instance); compared from 11:55:55, "
                        "when what it serves now began serving (4m 05s of the 10m window)")
    assert lines[2] == "stable serves streaming_churn:a (2 instances); data over the whole window"
    assert lines[3] == "judged on canary 5,000 predictions, 0 requests, stable 5,000 " \
        "predictions, 0 requests"
    assert failing.judgement.table() in table(failing)
    assert "mean_probability" in failing.summary()


def test_a_track_serving_two_versions_or_none_is_never_a_pass() -> None:
    """Passing numbers do not make a pass while a track is mid-rollout (two versions mix) or
    reports no model at all; the table says why."""
    mixed = [*SERVED, Served("canary", "streaming_churn:c", "c", 1, AT - timedelta(minutes=1))]
    shown = report(versions=mixed)
    assert shown.verdict == "inconclusive" and shown.exit_code == 3
    assert shown.reasons()[0] == ("canary: serves 2 versions now (b, c): a rollout in progress; "
                                  "analyse when one version serves")
    assert "not comparable: canary: serves 2 versions" in table(shown)
    alone = report(versions=SERVED[:1])
    assert alone.verdict == "inconclusive"
    assert alone.problems()[0].startswith("canary: no instance reports a model")
    assert report().problems() == []
    # The covered window starts at the earliest instance of what the track serves now.
    assert report().covered_from("canary") == AT - timedelta(minutes=4, seconds=5)
    assert report().covered_from("stable") == AT - timedelta(minutes=10)
    assert report().to_dict()["covered_from"]["canary"] == "2026-11-30T11:55:55+00:00"


def test_an_unmeasured_dry_run_report_passes_and_a_missing_judgement_does_not() -> None:
    assert Report("10m", AT, None).verdict == "pass"  # `churn canary run --dry-run`
    assert Report("10m", AT, None, SERVED).verdict == "inconclusive"


def test_a_nan_value_is_no_value() -> None:
    assert single([({}, float("nan"))], "q") is None
    assert single([], "q") is None
    assert single([({}, 0.5)], "q") == 0.5
