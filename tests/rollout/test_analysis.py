"""rollout.analysis: the checks' PromQL and verdict rules, and their Argo Rollouts twin."""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest

from rollout.analysis import PSI_BIN_EDGES, bin_recording_rules, checks, number, overall
from rollout.config import AnalysisSettings, CanaryConfig, CanaryConfigError
from rollout.render import analysis_template, template_queries

REPO = Path(__file__).resolve().parents[2]


def argo_condition(condition: str, result: list[float]) -> bool:
    """Evaluate one of our Argo conditions the way Argo's expr language does (the subset we
    emit: len, isNaN, !, &&, comparisons, false), by translating it to Python."""
    python = (condition.replace("&&", " and ").replace("!isNaN", " not isNaN")
              .replace("false", "False"))
    assert re.fullmatch(r"[\w\s\[\]\(\)\.<>=!+-]*", python), python
    return bool(eval(python, {"len": len, "isNaN": math.isnan, "result": result}))  # noqa: S307


def argo_phase(check, result: list[float]) -> str:
    """Argo's EvaluateResult: failure wins; neither condition -> Inconclusive."""
    success, failure = check.argo_conditions()
    if argo_condition(failure, result):
        return "fail"
    return "pass" if argo_condition(success, result) else "inconclusive"


def test_argo_conditions_judge_every_value_as_the_cli_does() -> None:
    for check in checks(AnalysisSettings()):
        t = check.threshold
        for value in (None, math.nan, 0.0, t * 0.5, t, t * 1.5, t + 1, -t, math.inf):
            result = [] if value is None else [value]
            assert argo_phase(check, result) == check.judge(value), (check.name, value)


def test_gates_are_inconclusive_below_and_limits_fail_above() -> None:
    by_name = {c.name: c for c in checks(AnalysisSettings())}
    assert by_name["predictions"].judge(499) == "inconclusive"
    assert by_name["predictions"].judge(500) == "pass"
    assert by_name["probability_psi"].judge(0.1) == "pass"
    assert by_name["probability_psi"].judge(0.1001) == "fail"
    assert by_name["probability_psi"].judge(None) == "inconclusive"
    assert by_name["failed_requests"].judge(math.nan) == "inconclusive"
    assert overall(["pass", "inconclusive", "fail"]) == "fail"
    assert overall(["pass", "inconclusive"]) == "inconclusive"
    assert overall(["pass", "pass"]) == "pass"


def test_every_comparison_waits_for_its_gate_on_both_tracks() -> None:
    all_checks = checks(AnalysisSettings())
    gates = {c.name: c for c in all_checks if c.kind == "gate"}
    assert set(gates) == {"requests", "predictions"}
    for check in all_checks:
        if check.kind == "gate":
            assert 'track="canary"' in check.compare and 'track="stable"' in check.compare
            continue
        gate = gates[check.gate]
        assert check.compare.endswith(f"{_indent(gate.compare)}\n  )\n  >= "
                                      f"{number(gate.threshold)}\n)"), check.name
        assert 'track="canary"' in check.compare and 'track="stable"' in check.compare


def _indent(text: str) -> str:
    return "\n".join("    " + line for line in text.splitlines())


def test_window_and_extra_matchers_reach_every_selector() -> None:
    settings = AnalysisSettings(match={"namespace": "churn-prod"})
    for check in checks(settings, "90s"):
        for expr in [check.compare, *(check.per_track or {}).values()]:
            assert "[10m]" not in expr and "[90s]" in expr, check.name
            selectors = re.findall(r"\{[^{}]*\}\[", expr)
            assert selectors, check.name
            assert all('namespace="churn-prod"' in s and "track=" in s for s in selectors)


def test_psi_bins_are_service_buckets_and_cover_every_prediction() -> None:
    from prometheus_client.utils import floatToGoString

    from service.metrics import PROBABILITY_BUCKETS

    assert set(PSI_BIN_EDGES) <= set(PROBABILITY_BUCKETS)
    rules = bin_recording_rules()
    assert len(rules) == len(PSI_BIN_EDGES) + 1
    assert rules[0]["expr"].endswith(f'{{le="{floatToGoString(PSI_BIN_EDGES[0])}"}})')
    assert '{le="+Inf"}' in rules[-1]["expr"]
    assert [r["labels"]["bin"] for r in rules][:2] == ["0-0.05", "0.05-0.1"]


def test_rendered_template_runs_exactly_the_cli_queries_and_thresholds() -> None:
    config = CanaryConfig.from_yaml(REPO / "configs" / "canary.yaml")
    template = analysis_template(config)
    queries = template_queries(template)
    cli = {c.name.replace("_", "-"): c.compare for c in checks(config.analysis)}
    assert queries == cli
    for metric, check in zip(template["spec"]["metrics"], checks(config.analysis), strict=True):
        assert (metric["successCondition"], metric["failureCondition"]) == \
            check.argo_conditions()
        assert metric["provider"]["prometheus"]["address"] == "{{args.prometheus-address}}"


@pytest.mark.parametrize(("raw", "message"), [
    ({"analysis": {"window": "10 minutes"}}, "analysis.window"),
    ({"analysis": {"match": {"track": "x"}}}, "cannot be used"),
    ({"run": {"steps": [50, 25]}}, "increasing"),
    ({"run": {"pause": "1m"}}, "shorter than analysis.window"),
    ({"analysis": {"max_p95_latency_ratio": 0.9}}, "max_p95_latency_ratio"),
    ({"kubernetes": {"nmespace": "x"}}, "nmespace"),
])
def test_bad_config_names_the_key(tmp_path: Path, raw: dict, message: str) -> None:
    import yaml

    path = tmp_path / "canary.yaml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(CanaryConfigError, match=message):
        CanaryConfig.from_yaml(path)


def test_the_config_file_holds_the_defaults() -> None:
    """configs/canary.yaml documents the defaults: both must stay the same."""
    assert CanaryConfig.from_yaml(REPO / "configs" / "canary.yaml") == CanaryConfig()
