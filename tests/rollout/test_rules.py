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
HTTP_CHECKS = ("failed_requests", "rejected_input", "latency_p95", "latency_p99")
# Group name -> eval time -> (verdict of every limit check, of every gate), or per check.
SCENARIOS = {
    "canary analysis: every check passes": {"15m": ("pass", "pass")},
    "canary analysis: every check fails": {"15m": ("fail", "pass")},
    "canary analysis: too little canary traffic": {"15m": ("inconclusive", "inconclusive")},
    "canary analysis: no canary": {"15m": ("inconclusive", "inconclusive")},
    # The canary's instance swapped a good model (v2) for a failing one (v3) at 15m.
    "canary analysis: a canary swapped inside the window": {
        "16m": ("inconclusive", "inconclusive"),  # v3's first minute: v2's data never counts
        "21m": {"requests": "pass", **dict.fromkeys(HTTP_CHECKS, "fail")},  # else inconclusive
        "25m": ("fail", "pass"),
    },
}


def expected_verdict(scenario: str, at: str, check) -> str:
    expected = SCENARIOS[scenario][at]
    if isinstance(expected, dict):
        return expected.get(check.name, "inconclusive")
    limit_verdict, gate_verdict = expected
    return gate_verdict if check.kind == "gate" else limit_verdict


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
    by_query = {check.compare: check for check in checks(CONFIG.analysis)}
    seen: dict[str, set[str]] = {}
    for case in group["promql_expr_test"]:
        check = by_query.get(case["expr"].strip())
        assert check is not None, f"{scenario}: not a query of rollout.analysis:\n{case['expr']}"
        samples = case["exp_samples"]
        assert len(samples) <= 1 and all(s["labels"] == "{}" for s in samples)
        value = float(samples[0]["value"]) if samples else None
        at = case["eval_time"]
        assert check.judge(value) == expected_verdict(scenario, at, check), \
            (scenario, at, check.name, value)
        seen.setdefault(at, set()).add(check.name)
    assert set(seen) == set(SCENARIOS[scenario]), scenario
    for at, names in seen.items():
        assert names == {check.name for check in checks(CONFIG.analysis)}, (scenario, at)


def values_at(group: dict, at: str) -> dict[str, float | None]:
    by_query = {check.compare: check.name for check in checks(CONFIG.analysis)}
    return {by_query[case["expr"].strip()]: (float(case["exp_samples"][0]["value"])
                                             if case["exp_samples"] else None)
            for case in group["promql_expr_test"] if case["eval_time"] == at}


def test_a_swapped_canary_is_judged_on_its_own_data_only() -> None:
    """The canary judged after a swap shows the failing model's own values (those of the
    failing group, whose canary serves the same series all along), never a mix with its
    predecessor's, however much of the predecessor's data the window still holds."""
    groups = canary_groups()
    own = values_at(groups["canary analysis: every check fails"], "15m")
    swapped = groups["canary analysis: a canary swapped inside the window"]
    assert values_at(swapped, "25m") == own
    six_minutes = values_at(swapped, "21m")
    assert {name: six_minutes[name] for name in HTTP_CHECKS} == \
        {name: own[name] for name in HTTP_CHECKS}
    # Gates count what the new version served: one minute, then six, of 60 per minute.
    assert values_at(swapped, "16m")["requests"] == 60
    assert six_minutes["requests"] == six_minutes["predictions"] == 360


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
