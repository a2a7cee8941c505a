"""The canary analysis inside Prometheus' rules: the generated group of rules.yml is what
rollout.render makes of the config, and the promtool tests of rules.test.yml run exactly the
CLI's queries with values the CLI judges as each scenario says (promtool itself runs them in
tests/monitoring/test_prometheus_rules.py)."""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pytest
import yaml

from rollout.analysis import PSI_BIN_EDGES, checks
from rollout.config import CanaryConfig, duration_seconds
from rollout.render import replace_generated, rules_group_text

REPO = Path(__file__).resolve().parents[2]
RULES = REPO / "monitoring" / "prometheus" / "rules.yml"
RULE_TESTS = REPO / "monitoring" / "prometheus" / "rules.test.yml"
CONFIG = CanaryConfig.from_yaml(REPO / "configs" / "canary.yaml")
# Group name -> the verdict of every limit check (gates: what a gate says in that scenario).
SCENARIOS = {
    "canary analysis: every check passes": ("pass", "pass"),
    "canary analysis: every check fails": ("fail", "pass"),
    "canary analysis: too little canary traffic": ("inconclusive", "inconclusive"),
    "canary analysis: no canary": ("inconclusive", "inconclusive"),
}


def canary_groups() -> dict[str, dict]:
    tests = yaml.safe_load(RULE_TESTS.read_text())["tests"]
    return {group["name"]: group for group in tests if group["name"] in SCENARIOS}


def test_the_generated_rules_group_is_current() -> None:
    text = RULES.read_text()
    assert replace_generated(text, rules_group_text(CONFIG)) == text, \
        "rules.yml is out of date: run `churn canary render`"


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_promtool_scenarios_run_the_cli_queries_and_mean_what_they_say(scenario: str) -> None:
    group = canary_groups()[scenario]
    limit_verdict, gate_verdict = SCENARIOS[scenario]
    by_query = {check.compare: check for check in checks(CONFIG.analysis)}
    seen = set()
    for case in group["promql_expr_test"]:
        check = by_query.get(case["expr"].strip())
        assert check is not None, f"{scenario}: not a query of rollout.analysis:\n{case['expr']}"
        samples = case["exp_samples"]
        assert len(samples) <= 1 and all(s["labels"] == "{}" for s in samples)
        value = float(samples[0]["value"]) if samples else None
        expected = gate_verdict if check.kind == "gate" else limit_verdict
        assert check.judge(value) == expected, (scenario, check.name, value)
        seen.add(check.name)
    assert seen == {check.name for check in checks(CONFIG.analysis)}, scenario


def per_minute(group: dict, track: str, metric: str) -> dict[str, float]:
    """le -> increment per minute of a track's series in a promtool group ("0+Nx40")."""
    out = {}
    for series in group["input_series"]:
        selector = series["series"]
        if selector.startswith(metric + "{") and f'track="{track}"' in selector:
            le = re.search(r'le="([^"]+)"', selector).group(1)
            out[le] = float(re.fullmatch(r"0\+([\d.]+)x\d+", series["values"]).group(1))
    return out


def psi(expected: np.ndarray, actual: np.ndarray, epsilon: float) -> float:
    expected, actual = np.maximum(expected, epsilon), np.maximum(actual, epsilon)
    return float(np.sum((actual - expected) * np.log(actual / expected)))


@pytest.mark.parametrize("scenario", ["canary analysis: every check passes",
                                      "canary analysis: every check fails"])
def test_promql_psi_equals_psi_computed_from_the_fixture_counts(scenario: str) -> None:
    """An independent computation (numpy on the bins) of what the PromQL PSI returned."""
    group = canary_groups()[scenario]
    edges = [*(str(e) for e in PSI_BIN_EDGES), "+Inf"]
    shares = {}
    for track in ("stable", "canary"):
        cumulative = per_minute(group, track, "churn_prediction_probability_bucket")
        counts = np.diff([0.0, *(cumulative[le] for le in edges)])
        shares[track] = counts / counts.sum()
    case = next(c for c in group["promql_expr_test"] if "bin:count" in c["expr"])
    promql = float(case["exp_samples"][0]["value"])
    assert promql == pytest.approx(psi(shares["stable"], shares["canary"],
                                       CONFIG.analysis.psi_epsilon), rel=1e-12)


def test_stuck_alert_waits_longer_than_a_whole_run() -> None:
    """ChurnCanaryStuck must not fire during a healthy `churn canary run`: every step but the
    last (100 = promote) can wait one pause per analysis, retries included."""
    rule = next(rule for group in yaml.safe_load(RULES.read_text())["groups"]
                for rule in group["rules"] if rule.get("alert") == "ChurnCanaryStuck")
    waits = [s for s in CONFIG.run.steps if s < 100]
    analyses = 1 + CONFIG.run.inconclusive_retries
    longest = len(waits) * duration_seconds(CONFIG.run.pause) * analyses
    assert duration_seconds(rule["for"]) > longest
    assert math.isclose(longest, 90 * 60)  # the figure rules.yml's comment quotes
