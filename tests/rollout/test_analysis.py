"""rollout.analysis (the canary's per-track inputs) and its renderings: the selectors, the
Argo Rollouts template that runs the judge itself, the config."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import typer

from rollout.analysis import PSI_BIN_EDGES, bin_recording_rules, track_queries
from rollout.config import AnalysisSettings, CanaryConfig, CanaryConfigError
from rollout.render import analysis_template, judge_command, template_command

REPO = Path(__file__).resolve().parents[2]


def test_window_extra_matchers_and_identity_reach_every_selector() -> None:
    settings = AnalysisSettings(match={"namespace": "churn-prod"})
    for name, per_track in track_queries(settings, "90s").items():
        for track, expr in per_track.items():
            assert "[10m]" not in expr and "[90s]" in expr, name
            selectors = re.findall(r"\{[^{}]*\}", expr)
            assert selectors and all('namespace="churn-prod"' in s and f'track="{track}"' in s
                                     for s in selectors), (name, track)
            # Only what the track serves now: every sum is joined with churn_model_info.
            assert "and on (instance, pod, model_version) churn_model_info{" in expr, name
    predictions = track_queries(settings)["predictions"]["canary"]
    assert 'role!="shadow"' in predictions  # a shadow's predictions never answered anyone


def test_psi_bins_are_service_buckets_and_cover_every_prediction() -> None:
    from prometheus_client.utils import floatToGoString

    from service.metrics import PROBABILITY_BUCKETS

    assert set(PSI_BIN_EDGES) <= set(PROBABILITY_BUCKETS)
    rules = bin_recording_rules()
    assert len(rules) == len(PSI_BIN_EDGES) + 1
    assert rules[0]["expr"].endswith(f'{{le="{floatToGoString(PSI_BIN_EDGES[0])}"}})')
    assert '{le="+Inf"}' in rules[-1]["expr"]
    assert [r["labels"]["bin"] for r in rules][:2] == ["0-0.05", "0.05-0.1"]


def test_the_argo_template_runs_the_cli_judge_as_an_operator_would() -> None:
    """The job's command is `churn canary analyze` with options the CLI takes (click parses
    it here without running it), waiting for a verdict, with the step as a template argument."""
    import churn_cli

    config = CanaryConfig.from_yaml(REPO / "configs" / "canary.yaml")
    template = analysis_template(config)
    command = template_command(template)
    assert command == judge_command(config) and command[:3] == ["churn", "canary", "analyze"]
    # Argo puts the template's arguments in first.
    arguments = {f"{{{{args.{a['name']}}}}}": a["value"] for a in template["spec"]["args"]}
    assert set(arguments) == {"{{args.prometheus-address}}", "{{args.step}}"}
    substituted = [arguments.get(part, part) for part in command[3:]]
    group = typer.main.get_command(churn_cli.app).commands["canary"]
    context = group.commands["analyze"].make_context("analyze", substituted)
    assert context.params["wait"] is True and context.params["step"] == 1
    assert context.params["prometheus"] == config.kubernetes.prometheus_address
    assert str(context.params["inference_log"]) == "/var/lib/churn/inference_log"
    (metric,) = template["spec"]["metrics"]
    assert metric["failureLimit"] == 0 and metric["provider"]["job"]["spec"]["backoffLimit"] == 0


@pytest.mark.parametrize(("raw", "message"), [
    ({"analysis": {"window": "10 minutes"}}, "analysis.window"),
    ({"analysis": {"match": {"track": "x"}}}, "cannot be used"),
    ({"analysis": {"identity_labels": ["instance"]}}, "must include model_version"),
    ({"run": {"steps": [50, 25]}}, "increasing"),
    ({"run": {"pause": "1m"}}, "shorter than analysis.window"),
    ({"analysis": {"max_p95_latency_ratio": 1.5}}, "max_p95_latency_ratio"),
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
