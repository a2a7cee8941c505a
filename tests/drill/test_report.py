"""The drill's report writer: JSON that reads back, Markdown and HTML that say which scenario
was not caught and why (unit tier: no process, no model)."""

from __future__ import annotations

import json
from pathlib import Path

from drill.report import DrillReport, markdown, write_report
from drill.runner import progress_line
from drill.scenario import Check, Finding, Scenario, ScenarioResult


def _result(name: str, passed: bool, detection: float | None, **extra) -> ScenarioResult:
    checks = [Check(kind="caught", what=f"{name} guard | fired", passed=passed,
                    seen="exit 2" if passed else "exit 0"),
              Check(kind="intact", what="champion untouched", passed=True, seen="v1")]
    return ScenarioResult(name=name, group="training", failure=f"{name} injected",
                          guard=f"{name} guard", passed=passed, detection_seconds=detection,
                          duration_seconds=3.0, checks=checks,
                          evidence={"exit_code": 2 if passed else 0}, **extra)


def _report(*results: ScenarioResult) -> DrillReport:
    return DrillReport(started_at="2026-11-30T12:00:00+00:00",
                       finished_at="2026-11-30T12:01:00+00:00", seconds=60.0,
                       command="churn drill", revision="abc1234", champion="churn:v1",
                       machine={"cpus": 2, "load_average_before": [1.0, 1, 1],
                                "load_average_after": [2.0, 1, 1]},
                       time_scale=360, rule_changes=["ChurnDriftJobStale: for 5m -> 833ms"],
                       scenarios=list(results))


def test_write_report_files_and_json_round_trip(tmp_path: Path) -> None:
    report = _report(_result("leakage", True, 6.6),
                     _result("label-collapse", False, None, error="RuntimeError: boom"))
    paths = write_report(report, tmp_path / "out")
    assert [p.name for p in paths] == ["drill.json", "drill.md", "drill.html"]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(
        ["drill.json", "drill.md", "drill.html"]), "a partial file was left behind"
    again = DrillReport.model_validate_json(paths[0].read_text())
    assert again == report
    raw = json.loads(paths[0].read_text())
    assert [s["passed"] for s in raw["scenarios"]] == [True, False]
    assert raw["scenarios"][1]["error"] == "RuntimeError: boom"


def test_headline_and_verdict() -> None:
    caught = _result("leakage", True, 6.6)
    missed = _result("label-collapse", False, None)
    assert _report(caught).all_caught
    assert _report(caught).headline() == "1 of 1 failures caught"
    assert not _report(caught, missed).all_caught
    assert _report(caught, missed).headline() == "1 of 2 failures caught"
    assert not _report().all_caught, "an empty drill proves nothing"


def test_markdown_names_what_was_not_caught() -> None:
    text = markdown(_report(_result("leakage", True, 0.25),
                            _result("label-collapse", False, None, error="Timeout: x")))
    assert text.startswith("# churn drill: 1 of 2 failures caught")
    table = [line for line in text.splitlines() if line.startswith("| [")]
    assert table[0].startswith("| [leakage](#leakage) |") and "| yes | 250 ms |" in table[0]
    assert "| **NO** | - |" in table[1]
    assert "| **FAIL** | caught: label-collapse guard \\| fired | exit 0 |" in text
    assert "- error: `Timeout: x`" in text
    assert "- ChurnDriftJobStale: for 5m -> 833ms" in text


def test_html_has_the_detection_chart(tmp_path: Path) -> None:
    report = _report(_result("leakage", True, 6.6), _result("bad-inputs", True, 0.02),
                     _result("label-collapse", False, None))
    html_text = write_report(report, tmp_path)[2].read_text()
    assert html_text.count("<rect ") == 2  # one bar per timed scenario
    assert "not caught" in html_text and "<svg" in html_text
    assert "<td class='bad'>NO</td>" in html_text


def test_scenario_passes_only_with_a_caught_check_and_all_checks_passed() -> None:
    scenario = Scenario("x", "training", "f", "g", run=lambda system, finding: None)
    empty = Finding()
    assert not scenario.result(empty, 1.0).passed, "no check: nothing was proven"
    only_intact = Finding()
    only_intact.intact("kept", True)
    assert not scenario.result(only_intact, 1.0).passed
    good = Finding()
    good.caught("caught", True)
    good.intact("kept", True)
    assert scenario.result(good, 1.0).passed
    assert not scenario.result(good, 1.0, error="boom").passed
    lost = Finding()
    lost.injected()
    lost.took(2.5)
    lost.caught("caught", True)
    lost.intact("kept", False, "3 records missing")
    result = scenario.result(lost, 1.0)
    assert not result.passed
    assert result.detection_seconds is None, "no time to detection for what was not caught"
    assert scenario.result(good, 1.0).detection_seconds is None, "never injected: not timed"
    assert "failed: kept (seen: 3 records missing)" in progress_line(1, 1, result)
