"""The verdict table and the reasons a decision records (the queries themselves run against a
real Prometheus in test_e2e.py and against promtool in rules.test.yml)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from rollout.analysis import checks
from rollout.config import AnalysisSettings
from rollout.measure import Report, Row, Served, single, table

AT = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
SERVED = [Served("stable", "streaming_churn:a", "a", 2, AT - timedelta(hours=3)),
          Served("canary", "streaming_churn:b", "b", 1, AT - timedelta(minutes=4, seconds=5))]


def report(values: dict[str, float | None], versions: list[Served] | None = None) -> Report:
    rows = []
    for check in checks(AnalysisSettings()):
        value = values.get(check.name, check.threshold if check.kind == "gate" else 0.0)
        rows.append(Row(check, 1.0, 2.0, value, check.judge(value),
                        "" if value is not None else "no data on one track"))
    return Report("10m", AT, rows, SERVED if versions is None else versions)


def test_the_table_shows_every_check_with_its_limit_and_verdict() -> None:
    shown = table(report({"probability_psi": 0.18, "will_churn_share": 11.0}))
    lines = shown.splitlines()
    assert lines[0].endswith(": FAIL")
    assert lines[1] == ("canary serves streaming_churn:b (1 instance); compared from 11:55:55, "
                        "the first sample of what it serves now (4m 05s of the 10m window)")
    assert lines[2] == "stable serves streaming_churn:a (2 instances); data over the whole window"
    assert lines[4].split() == ["check", "stable", "canary", "compared", "limit", "verdict"]
    psi = next(line for line in lines if line.startswith("probability PSI"))
    assert psi.split()[-4:] == ["0.1800", "<=", "0.1", "fail"]
    assert "11.00 pp" in shown and "+11.00" not in shown  # a distance has no sign
    assert len(lines) == 5 + len(checks(AnalysisSettings()))


def test_reasons_name_what_failed_and_what_had_no_data() -> None:
    failed = report({"probability_psi": 0.18, "latency_p99": None})
    assert failed.verdict == "fail" and failed.exit_code == 1
    assert failed.reasons() == ["latency_p99: no data on one track",
                                "probability_psi 0.1800 (limit 0.1)"]
    assert failed.summary().startswith("fail: latency_p99")
    passed = report({})
    assert (passed.verdict, passed.exit_code, passed.summary()) == ("pass", 0, "pass")
    waiting = report({"predictions": 20.0})
    assert waiting.verdict == "inconclusive" and waiting.exit_code == 3
    assert waiting.to_dict()["checks"][5]["verdict"] == "inconclusive"


def test_a_nan_value_is_no_value() -> None:
    assert single([({}, float("nan"))], "q") is None
    assert single([], "q") is None
    assert single([({}, 0.5)], "q") == 0.5


def test_a_track_serving_two_versions_or_none_is_never_a_pass() -> None:
    """Passing numbers do not make a pass while a track is mid-rollout (two versions mix) or
    reports no model at all; the table says why."""
    mixed = [*SERVED, Served("canary", "streaming_churn:c", "c", 1, AT - timedelta(minutes=1))]
    shown = report({}, mixed)
    assert shown.verdict == "inconclusive" and shown.exit_code == 3
    assert shown.reasons() == ["canary: serves 2 versions now (b, c): a rollout in progress; "
                               "analyse when one version serves"]
    assert "not comparable: canary: serves 2 versions" in table(shown)
    alone = report({}, SERVED[:1])
    assert alone.verdict == "inconclusive"
    assert alone.problems()[0].startswith("canary: no instance reports a model")
    assert report({}).verdict == "pass"
    # The covered window starts at the earliest instance of what the track serves now.
    assert report({}).covered_from("canary") == AT - timedelta(minutes=4, seconds=5)
    assert report({}).covered_from("stable") == AT - timedelta(minutes=10)
    assert report({}).to_dict()["covered_from"]["canary"] == "2026-11-30T11:55:55+00:00"
