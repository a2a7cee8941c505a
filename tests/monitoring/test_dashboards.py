"""The Grafana dashboards against real data: a real `bentoml serve` of the trained champion,
real Prometheus (the project's rules, 1 s intervals) and Pushgateway, real traffic (some of it
bad) and the real monitoring jobs on drifted data. Every target of every panel must parse and
return data, and the drift alert must fire. Static checks of the dashboard files come first."""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
import yaml

from monitoring.stack import RunningStack, ScrapeTarget, start_stack
from tests.servers import SERVICE, customer_bodies, start_server

REPO = Path(__file__).resolve().parents[2]
DASHBOARDS = sorted((REPO / "grafana" / "dashboards").glob("*.json"))
DATASOURCE = REPO / "grafana" / "provisioning" / "datasources" / "prometheus.yaml"
# Grafana's built-in variables, sized so the windows cover the whole test run.
BUILTINS = {"__rate_interval": "5m", "__interval": "15s", "__range": "10m"}


def load(path: Path) -> dict:
    return json.loads(path.read_text())


def panels(dashboard: dict) -> Iterator[dict]:
    for panel in dashboard["panels"]:
        if panel["type"] == "row":
            yield from panel.get("panels", [])
        else:
            yield panel


def substitute(expr: str, dashboard: dict) -> str:
    """Replace template variables as Grafana would with "All" (or the constant) selected."""
    values = dict(BUILTINS)
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "constant":
            values[variable["name"]] = variable["query"]
        else:
            values[variable["name"]] = variable.get("allValue") or ".*"
    for name in sorted(values, key=len, reverse=True):
        expr = re.sub(r"\$\{" + name + r"\}|\$" + name + r"\b|\[\[" + name + r"\]\]",
                      lambda _match, value=values[name]: value, expr)
    assert "$" not in expr, f"unresolved variable in {expr}"
    return expr


# ------------------------------------------------------------------ static checks


def test_dashboards_have_fixed_uids_and_use_the_provisioned_datasource() -> None:
    assert [p.name for p in DASHBOARDS] == ["drift.json", "model.json", "rollout.json",
                                            "service.json"]
    (datasource,) = yaml.safe_load(DATASOURCE.read_text())["datasources"]
    uids = [load(path)["uid"] for path in DASHBOARDS]
    assert uids == ["churn-drift", "churn-model", "churn-rollout", "churn-service"]
    for path in DASHBOARDS:
        dashboard = load(path)
        for panel in panels(dashboard):
            where = f"{path.name}: {panel['title']}"
            assert panel["datasource"]["uid"] == datasource["uid"], where
            assert panel["targets"], where
            for target in panel["targets"]:
                assert target["datasource"]["uid"] == datasource["uid"], where
                assert target["expr"].strip(), where
            assert panel["gridPos"]["x"] + panel["gridPos"]["w"] <= 24, where
        ids = [panel["id"] for panel in dashboard["panels"]]
        assert len(ids) == len(set(ids)), f"{path.name}: duplicate panel ids"


# Series the service exposes (the scrape adds track); pushed job results carry no track.
SERVED_SERIES = re.compile(r"\b(bentoml_service_\w+|churn_(?:requests_total|request_duration_\w+"
                           r"|predictions_total|prediction_probability_(?:bucket|sum|count)"
                           r"|validation_failures_total|unseen_categories_total|model_info"
                           r"|model_test_roc_auc|inference_log_\w+|batches_total|batch_\w+"
                           r"|shadow_\w+)"
                           r"|track_model_version:\S+?)"
                           r"(\{[^}]*\})?[\[)\s]")


def test_service_model_and_rollout_panels_follow_the_track_selector() -> None:
    for name in ("service.json", "model.json", "rollout.json"):
        dashboard = load(REPO / "grafana" / "dashboards" / name)
        assert "track" in [v["name"] for v in dashboard["templating"]["list"]], name
        for panel in panels(dashboard):
            for target in panel["targets"]:
                for metric, selector in SERVED_SERIES.findall(target["expr"] + " "):
                    assert 'track=~"$track"' in selector, f"{name} / {panel['title']}: {metric}"


def test_the_rollout_dashboard_names_the_lifecycle_phases_as_pushed() -> None:
    """churn_lifecycle_state is a phase's number (rollout/lifecycle/state.py, PHASE_CODES):
    the panels' value mappings must name each number as the lifecycle does."""
    from rollout.lifecycle.state import PHASE_CODES

    dashboard = load(REPO / "grafana" / "dashboards" / "rollout.json")
    phase_panels = [panel for panel in panels(dashboard)
                    if any("churn_lifecycle_state" in t["expr"] for t in panel["targets"])]
    assert phase_panels
    for panel in phase_panels:
        (mapping,) = panel["fieldConfig"]["defaults"]["mappings"]
        named = {int(code): option["text"] for code, option in mapping["options"].items()}
        assert named == {code: phase.value for phase, code in PHASE_CODES.items()}, \
            panel["title"]


# ------------------------------------------------------------------ the real stack


def churn(*args: str) -> subprocess.Popen:
    """Start a `churn` command the way a CronJob would; ``finish`` waits for it."""
    return subprocess.Popen([sys.executable, "-m", "churn_cli", *args], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=os.environ.copy())


def finish(process: subprocess.Popen, expect: int | set[int] = 0) -> None:
    output, _ = process.communicate(timeout=180)
    expected = expect if isinstance(expect, set) else {expect}
    assert process.returncode in expected, \
        f"{process.args[3:]}: exit {process.returncode}\n{output}"


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("dashboards")


@pytest.fixture(scope="module")
def service_url(trained_entry, workdir: Path) -> Iterator[str]:
    """`bentoml serve` of the trained entry (pinned, so other tests' champions don't matter),
    with the same entry as its shadow (the Rollout dashboard's role="shadow" series and the
    pairs `churn shadow analyze` judges), logging inferences to ``workdir/inference_log``."""
    server = start_server(SERVICE, workdir, extra={"model_tag": trained_entry.tag,
                                                   "shadow": {"model_tag": trained_entry.tag}},
                          flush_seconds=0.2, timeout=180)
    try:
        yield server.url
    finally:
        server.stop(timeout=30)


@pytest.fixture(scope="module")
def stack(service_url: str, workdir: Path) -> Iterator[RunningStack]:
    # Labelled as Kubernetes labels the stable pods (ServiceMonitor podTargetLabels), so the
    # track selector and the per-track panels have data.
    target = ScrapeTarget(service_url.removeprefix("http://"), {"track": "stable"})
    with start_stack(workdir / "stack", service_targets=[target], prometheus_port=0,
                     pushgateway_port=0, scrape_interval="1s",
                     evaluation_interval="1s") as running:
        yield running


def query(stack: RunningStack, expr: str) -> list[dict]:
    answer = httpx.get(f"{stack.prometheus_url}/api/v1/query", params={"query": expr},
                       timeout=10).json()
    assert answer["status"] == "success", f"{expr}: {answer.get('error')}"
    return answer["data"]["result"]


def wait_for(stack: RunningStack, exprs: list[str], timeout: float = 45) -> None:
    deadline = time.monotonic() + timeout
    missing = exprs
    while missing and time.monotonic() < deadline:
        missing = [expr for expr in missing if not query(stack, expr)]
        time.sleep(0.5)
    assert not missing, f"no data for {missing}"


@pytest.fixture(scope="module")
def monitored(trained_entry, contract, service_url: str, stack: RunningStack,
              workdir: Path) -> RunningStack:
    """Traffic through the service, then drift, performance, retrain-check and shadow-judge
    runs, and a lifecycle state pushed as `churn lifecycle step` pushes it."""
    from kernel.inference_log import read_inference_log
    from training.generate import GeneratorConfig, generate_customers

    drifted = generate_customers(GeneratorConfig(rows=1500, seed=23, drifted=True))
    drifted = drifted.drop_duplicates(contract.id)
    served, current = drifted.iloc[:460], drifted.iloc[460:]
    bodies = customer_bodies(served, contract)

    # Rates need counters seen before and after: the first scrape must precede the traffic,
    # and the traffic must span several scrapes.
    wait_for(stack, ['up{job="churn-service"} == 1', 'up{job="pushgateway"} == 1'])
    with httpx.Client(base_url=service_url, timeout=30) as client:
        for start in range(0, 400, 100):
            answer = client.post("/predict_batch", json={"customers": bodies[start:start + 100]})
            assert answer.status_code == 200, answer.text
            time.sleep(1.2)
        # Concurrent single requests, what adaptive batching merges, in waves across scrapes.
        for start in range(400, len(bodies), 20):
            with ThreadPoolExecutor(8) as pool:
                codes = list(pool.map(lambda body: client.post("/predict", json=body).status_code,
                                      bodies[start:start + 20]))
            assert codes == [200] * len(codes)
            time.sleep(1.2)
        bad = [
            ("/predict", {**bodies[0], "tenure_days": -5.0}),           # below the minimum
            ("/predict", {k: v for k, v in bodies[0].items() if k != "plan"}),  # missing
            ("/predict", {**bodies[0], "plan": "platinum"}),             # outside a closed set
            ("/predict_batch", {"customers": []}),                       # empty batch
        ]
        for path, body in bad:
            answer = client.post(path, json=body)
            assert 400 <= answer.status_code < 500, (path, answer.status_code, answer.text)

    deadline = time.monotonic() + 30
    while len(read_inference_log(workdir / "inference_log")) < len(bodies):
        assert time.monotonic() < deadline, "the inference log did not receive every prediction"
        time.sleep(0.3)

    current_csv = workdir / "current.csv"
    current.to_csv(current_csv, index=False)
    labels_csv = workdir / "labels.csv"
    labels = served[[contract.id, contract.target.column]].copy()
    labels["observed_at"] = datetime.now(UTC).isoformat(timespec="seconds")
    labels.to_csv(labels_csv, index=False)

    common = ["--pushgateway", stack.pushgateway_url, "--report-dir", str(workdir / "reports")]
    drift = churn("drift", "--model", trained_entry.tag, "--current", str(current_csv), *common)
    performance = churn("performance", "--labels", str(labels_csv), "--inference-log",
                        str(workdir / "inference_log"), *common)
    shadow = churn("shadow", "analyze", "--window", "1h", "--inference-log",
                   str(workdir / "inference_log"), "--pushgateway", stack.pushgateway_url)
    push_lifecycle_state(trained_entry.tag, stack.pushgateway_url)
    push_canary_judgement(workdir / "inference_log", stack.pushgateway_url)
    finish(drift)
    finish(performance)
    finish(shadow, expect=SHADOW_VERDICT)
    finish(churn("retrain-check", "--model", trained_entry.tag, *common), expect=10)

    wait_for(stack, ["churn_drift_share", "churn_measured_roc_auc", "churn_retrain_recommended",
                     "churn_predictions_total", "churn_validation_failures_total",
                     "churn:service_errors:ratio_rate5m",
                     "churn:predict_latency_seconds:p99_rate5m",
                     'churn_predictions_total{role="shadow"}', "churn_lifecycle_state",
                     'churn_judge_verdict{job="churn_shadow_judge"}',
                     'churn_judge_verdict{job="churn_canary_judge"}'])
    return stack


# The shadow is the champion itself: every pair agrees. Pass (0), or inconclusive (3) while no
# segment has the 400 pairs its rank check needs; the judgement is pushed either way.
SHADOW_VERDICT = {0, 3}


def push_canary_judgement(log_dir: Path, pushgateway: str) -> None:
    """A canary at its first step: the logged predictions split into two tracks of 230, too
    few to decide (inconclusive, so the predictions it needs are pushed), judged and pushed
    as `churn canary analyze` does (rollout.measure.push)."""
    import time as clock

    from kernel.inference_log import read_inference_log
    from monitoring.config import PushgatewaySettings
    from monitoring.judge import CANARY_JOB, JudgeConfig, judge_unpaired, judgement_registry
    from monitoring.push import push_metrics

    records = read_inference_log(log_dir)
    half = len(records) // 2
    judgement = judge_unpaired(records.iloc[:half], records.iloc[half:], JudgeConfig())
    assert judgement.verdict == "inconclusive" and judgement.needed_predictions, judgement
    version = str(records["model_version"].iloc[0])
    push_metrics(judgement_registry(judgement, clock.time(), {"stable_version": version}),
                 CANARY_JOB, version, PushgatewaySettings(url=pushgateway))


def push_lifecycle_state(tag: str, pushgateway: str) -> None:
    """A challenger awaiting approval, pushed by the lifecycle's own ``_push_state``."""
    from rollout.cli_options import JudgeOptions
    from rollout.lifecycle.cli import _push_state
    from rollout.lifecycle.state import LifecycleState, Phase

    state = LifecycleState(phase=Phase.AWAITING_APPROVAL, cycle=1, champion=tag,
                           challenger=tag)
    _push_state(state, JudgeOptions.resolve(None, None, pushgateway, no_push=False))


def all_targets() -> list[tuple[str, str, str, str]]:
    return [(path.name, panel["title"], target["refId"], target["expr"])
            for path in DASHBOARDS for panel in panels(load(path)) for target in panel["targets"]]


@pytest.mark.integration
def test_every_panel_query_returns_data(monitored: RunningStack) -> None:
    dashboards = {path.name: load(path) for path in DASHBOARDS}
    empty = []
    for name, title, ref, expr in all_targets():
        result = query(monitored, substitute(expr, dashboards[name]))
        # NaN (e.g. a quantile of no requests) draws nothing: as bad as no series.
        if not [s for s in result if math.isfinite(float(s["value"][1]))]:
            empty.append(f"{name} / {title} / {ref}: {expr} -> {result}")
    assert not empty, "panels without data:\n" + "\n".join(empty)
    # Template variables (label_values(metric, label)) offer at least one value.
    for name, dashboard in dashboards.items():
        for variable in dashboard["templating"]["list"]:
            if variable["type"] != "query":
                continue
            metric, label = re.fullmatch(r"label_values\((\w+), *(\w+)\)",
                                         variable["query"]["query"]).groups()
            values = httpx.get(f"{monitored.prometheus_url}/api/v1/label/{label}/values",
                               params={"match[]": metric}).json()["data"]
            assert values, f"{name}: variable {variable['name']} has no values"


@pytest.mark.integration
def test_drift_alert_fires_and_rejected_inputs_are_not_errors(monitored: RunningStack,
                                                              trained_entry) -> None:
    deadline = time.monotonic() + 30
    while True:
        alerts = httpx.get(f"{monitored.prometheus_url}/api/v1/alerts").json()["data"]["alerts"]
        firing = [a for a in alerts if a["labels"]["alertname"] == "ChurnDriftDetected"
                  and a["state"] == "firing"]
        if firing or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert [a["labels"]["model_version"] for a in firing] == [trained_entry.version], alerts
    assert "current rows" in firing[0]["annotations"]["description"]
    # The 4xx answers above must not count as service errors (not even pending).
    assert not [a for a in alerts if a["labels"]["alertname"] == "ChurnServiceErrorRate"]
    # Every rule evaluates cleanly against the real series (labels, types, no many-to-many).
    groups = httpx.get(f"{monitored.prometheus_url}/api/v1/rules").json()["data"]["groups"]
    broken = [(rule["name"], rule.get("lastError")) for group in groups
              for rule in group["rules"] if rule["health"] != "ok"]
    assert not broken
