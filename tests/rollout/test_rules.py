"""The canary inside Prometheus: the generated group of rules.yml is what rollout.render makes
of the config, and the promtool tests of rules.test.yml run exactly the CLI's per-track queries
and find the counts the input series hold: whole windows, a canary swapped on its instance
(only the new version counts), too little traffic and no canary (promtool itself runs them in
tests/monitoring/test_prometheus_rules.py)."""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest
import yaml

from rollout.analysis import track_queries
from rollout.config import CanaryConfig, duration_seconds
from rollout.render import replace_generated, rules_group_text

REPO = Path(__file__).resolve().parents[2]
RULES = REPO / "monitoring" / "prometheus" / "rules.yml"
RULE_TESTS = REPO / "monitoring" / "prometheus" / "rules.test.yml"
CONFIG = CanaryConfig.from_yaml(REPO / "configs" / "canary.yaml")
QUERIES = {expr: (name, track) for name, per_track in track_queries(CONFIG.analysis).items()
           for track, expr in per_track.items()}
WHOLE_WINDOW = ["canary analysis: every check passes", "canary analysis: every check fails",
                "canary analysis: too little canary traffic", "canary analysis: no canary"]
SWAPPED = "canary analysis: a canary swapped inside the window"
# The statuses each count reads, as a predicate on the series' code.
CODES = {"requests": lambda code: True, "failed": lambda code: code[0] == "5" or code == "429",
         "rejected": lambda code: code[0] == "4" and code != "429"}


def canary_groups() -> dict[str, dict]:
    tests = yaml.safe_load(RULE_TESTS.read_text())["tests"]
    return {group["name"]: group for group in tests if group["name"].startswith("canary analysis")}


def cases(group: dict) -> dict[tuple[str, str, str], float | None]:
    """(query name, track, eval time) -> the value the promtool test expects."""
    out = {}
    for case in group["promql_expr_test"]:
        name, track = QUERIES[case["expr"].strip()]
        samples = case["exp_samples"]
        assert len(samples) <= 1 and all(s["labels"] == "{}" for s in samples)
        out[(name, track, case["eval_time"])] = float(samples[0]["value"]) if samples else None
    return out


def per_minute(group: dict, track: str, name: str, version: str | None = None) -> float:
    """What the group's input series add per minute for one count of one track."""
    total = 0.0
    for series in group["input_series"]:
        selector = series["series"]
        if f'track="{track}"' not in selector or (version and f'"{version}"' not in selector):
            continue
        if name == "predictions":
            if not selector.startswith("churn_predictions_total{"):
                continue
        elif not (selector.startswith("churn_requests_total{") and 'endpoint="other"'
                  not in selector and CODES[name](re.search(r'code="(\d+)"', selector)[1])):
            continue
        total += float(re.search(r"0\+([\d.]+)x\d+", series["values"])[1])
    return total


def test_the_generated_rules_group_is_current() -> None:
    text = RULES.read_text()
    assert replace_generated(text, rules_group_text(CONFIG)) == text, \
        "rules.yml is out of date: run `churn canary render`"


def test_every_promtool_query_is_a_query_of_the_cli() -> None:
    for name, group in canary_groups().items():
        for case in group["promql_expr_test"]:
            assert case["expr"].strip() in QUERIES, f"{name}: not a query of rollout.analysis"


@pytest.mark.parametrize("scenario", WHOLE_WINDOW)
def test_the_counts_are_exactly_what_the_series_hold_over_the_window(scenario: str) -> None:
    """Ten minutes of each series' increments: no extrapolation, no more, no less."""
    group = canary_groups()[scenario]
    for (name, track, at), value in cases(group).items():
        if name.startswith("latency"):
            continue
        expected = 10 * per_minute(group, track, name)
        if track == "canary" and scenario.endswith("no canary"):
            assert value is None, (scenario, name)  # nothing served: no data, not zero
        else:
            assert value == expected, (scenario, name, track, at)


def test_a_swapped_canary_counts_only_what_its_new_version_served() -> None:
    """The canary's instance served v2 until 14m and v3 from 15m: one minute of v3 at 16m,
    six at 21m, ten at 25m, whatever v2 left in the window."""
    group = canary_groups()[SWAPPED]
    values = cases(group)
    for name in ("requests", "failed", "rejected", "predictions"):
        rate = per_minute(group, "canary", name, version="v3")
        for at, minutes in (("16m", 1), ("21m", 6), ("25m", 10)):
            assert values[(name, "canary", at)] == minutes * rate, (name, at)
        assert values[(name, "stable", "25m")] == 10 * per_minute(group, "stable", name)
    # The latency of v3 alone equals the failing canary's, which always served v3.
    failing = cases(canary_groups()["canary analysis: every check fails"])
    for quantile in ("latency_p95", "latency_p99"):
        assert values[(quantile, "canary", "25m")] == failing[(quantile, "canary", "15m")]
        assert math.isclose(values[(quantile, "canary", "21m")],
                            failing[(quantile, "canary", "15m")], rel_tol=1e-9)


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
