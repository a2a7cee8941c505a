"""The verdict table and the reasons a decision records (the queries themselves run against a
real Prometheus in test_e2e.py and against promtool in rules.test.yml)."""

from __future__ import annotations

from datetime import UTC, datetime

from rollout.analysis import checks
from rollout.config import AnalysisSettings
from rollout.measure import Report, Row, single, table


def report(values: dict[str, float | None]) -> Report:
    rows = []
    for check in checks(AnalysisSettings()):
        value = values.get(check.name, check.threshold if check.kind == "gate" else 0.0)
        rows.append(Row(check, 1.0, 2.0, value, check.judge(value),
                        "" if value is not None else "no data on one track"))
    return Report("10m", datetime(2026, 11, 30, tzinfo=UTC), rows,
                  {"stable": ["streaming_churn:a (2 instances)"],
                   "canary": ["streaming_churn:b (1 instance)"]})


def test_the_table_shows_every_check_with_its_limit_and_verdict() -> None:
    shown = table(report({"probability_psi": 0.18, "will_churn_share": 11.0}))
    lines = shown.splitlines()
    assert lines[0].endswith(": FAIL")
    assert lines[1] == ("canary serves streaming_churn:b (1 instance); stable serves "
                        "streaming_churn:a (2 instances)")
    assert lines[3].split() == ["check", "stable", "canary", "compared", "limit", "verdict"]
    psi = next(line for line in lines if line.startswith("probability PSI"))
    assert psi.split()[-4:] == ["0.1800", "<=", "0.1", "fail"]
    assert "11.00 pp" in shown and "+11.00" not in shown  # a distance has no sign
    assert len(lines) == 4 + len(checks(AnalysisSettings()))


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
