"""The alert rules, checked and unit-tested by the real promtool (firing and not firing)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

PROMETHEUS_DIR = Path(__file__).resolve().parents[2] / "monitoring" / "prometheus"
RULES = PROMETHEUS_DIR / "rules.yml"
RULE_TESTS = PROMETHEUS_DIR / "rules.test.yml"
REQUIRED_ALERTS = {
    "ChurnDriftDetected", "ChurnFeaturePSIHigh", "ChurnDriftJobStale", "ChurnPerformanceDrop",
    "ChurnServiceErrorRate", "ChurnServiceLatencyP99", "ChurnNoPredictions",
    "ChurnRetrainRecommended", "ChurnShadowSkipping", "ChurnChallengerAwaitingApproval",
    "ChurnLifecycleStuck",
}


def promtool(*args: str) -> subprocess.CompletedProcess:
    binary = shutil.which("promtool")
    assert binary, "promtool not found: apt-get install -y prometheus"
    return subprocess.run([binary, *args], cwd=PROMETHEUS_DIR, capture_output=True, text=True,
                          timeout=60)


def alert_rules() -> list[dict]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"] if "alert" in rule]


@pytest.mark.parametrize("args", [
    ("check", "config", "prometheus.yml"),  # also checks the rule files it names
    ("check", "rules", "rules.yml"),
    ("test", "rules", "rules.test.yml"),
], ids=" ".join)
@pytest.mark.integration
def test_promtool_accepts(args: tuple[str, ...]) -> None:
    result = promtool(*args)
    assert result.returncode == 0, result.stdout + result.stderr


def test_required_alerts_exist_with_severity_and_valued_annotations() -> None:
    rules = alert_rules()
    assert {rule["alert"] for rule in rules} >= REQUIRED_ALERTS
    for rule in rules:
        assert rule["labels"]["severity"] in {"critical", "warning", "info"}, rule["alert"]
        assert rule["annotations"]["summary"].strip(), rule["alert"]
        # Descriptions carry the values and labels that fired, not just prose.
        assert "{{" in rule["annotations"]["description"], rule["alert"]


def test_every_alert_is_unit_tested_firing_and_not_firing() -> None:
    cases = [case for test in yaml.safe_load(RULE_TESTS.read_text())["tests"]
             for case in test.get("alert_rule_test", [])]
    fired = {case["alertname"] for case in cases if case.get("exp_alerts")}
    silent = {case["alertname"] for case in cases if not case.get("exp_alerts")}
    names = {rule["alert"] for rule in alert_rules()}
    assert names - fired == set(), "alerts never shown firing"
    assert names - silent == set(), "alerts never shown staying silent"
    # Alerts defined by several rules (e.g. measured and estimated drop): each rule fires.
    for rule in alert_rules():
        variant = {k: v for k, v in rule["labels"].items() if k != "severity"}
        shown = [alert for case in cases if case["alertname"] == rule["alert"]
                 for alert in case.get("exp_alerts") or []
                 if variant.items() <= alert["exp_labels"].items()
                 and alert["exp_labels"]["severity"] == rule["labels"]["severity"]]
        assert shown, f"{rule['alert']} {variant} never fires in rules.test.yml"


def test_alert_thresholds_match_the_monitoring_config() -> None:
    """rules.yml repeats two numbers of configs/monitoring.yaml (Prometheus cannot read it):
    a change to one without the other would make alerts and the retrain check disagree."""
    from monitoring.config import MonitoringConfig

    settings = MonitoringConfig.from_yaml(PROMETHEUS_DIR.parents[1] / "configs" / "monitoring.yaml")
    expressions = {rule["alert"]: rule["expr"] for rule in alert_rules()}
    assert f"> {settings.drift.psi_drift}" in expressions["ChurnFeaturePSIHigh"]
    assert f"- {settings.retrain.performance_margin})" in expressions["ChurnPerformanceDrop"]


def test_a_lifecycle_phase_is_stuck_only_after_the_longest_it_may_last() -> None:
    """A shadow still undecided after shadow.max_hours (configs/lifecycle.yaml) is rejected at
    the next step, 15 minutes later: ChurnLifecycleStuck must wait longer than that."""
    from rollout.config import duration_seconds
    from rollout.lifecycle.state import LifecycleConfig

    settings = LifecycleConfig.from_yaml(PROMETHEUS_DIR.parents[1] / "configs" / "lifecycle.yaml")
    (phase_rule,) = [rule for rule in alert_rules() if rule["alert"] == "ChurnLifecycleStuck"
                     and rule["labels"]["cause"] == "phase"]
    step_seconds = 15 * 60  # k8s/base/cronjob-lifecycle.yaml: */15
    assert duration_seconds(phase_rule["for"]) > settings.shadow.max_hours * 3600 + step_seconds
