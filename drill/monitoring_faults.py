"""Failures only monitoring can see: the live population drifts, the relation between features
and churn changes, the Pushgateway is down when the drift job runs. Traffic goes through the
champion's real server into its inference log; the real `churn drift` and `churn performance`
read it and push; the project's alert rules (time-scaled) fire in a real Prometheus."""

from __future__ import annotations

import math
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx
import numpy as np
import pandas as pd

from drill.scenario import Finding, Scenario
from drill.system import DrillSystem, wait_until
from drill.traffic import bodies_of, send_batches

# ------------------------------------------------------------------ Prometheus


def alerts(prometheus_url: str, name: str, **labels: str) -> list[dict]:
    """Alerts named ``name`` (pending or firing) whose labels include ``labels``."""
    found = httpx.get(f"{prometheus_url}/api/v1/alerts", timeout=10).json()["data"]["alerts"]
    return [a for a in found if a["labels"].get("alertname") == name
            and all(a["labels"].get(k) == v for k, v in labels.items())]


def firing(prometheus_url: str, name: str, **labels: str) -> list[dict]:
    return [a for a in alerts(prometheus_url, name, **labels) if a["state"] == "firing"]


def wait_for_firing(system: DrillSystem, name: str, **labels: str) -> tuple[dict | None, float]:
    """(the first firing alert, time.monotonic() when seen), or (None, now) after the drill's
    alert timeout."""
    url = system.stack().prometheus_url
    try:
        found = wait_until(lambda: firing(url, name, **labels),
                           system.settings.alert_timeout_seconds, every=0.25, what=name)
    except TimeoutError:
        return None, time.monotonic()
    return found[0], time.monotonic()


def alert_evidence(alert: dict | None) -> dict:
    if alert is None:
        return {"state": "not firing"}
    return {"labels": alert["labels"], "state": alert["state"], "active_at": alert["activeAt"],
            "value": alert.get("value"), "summary": alert["annotations"].get("summary", "")}


def _scraped(system: DrillSystem) -> None:
    """Until Prometheus scrapes the champion's server and the Pushgateway."""
    from rollout.measure import query

    url = system.stack().prometheus_url
    wait_until(lambda: len(query(url, "up == 1")) >= 2, 60, what="both scrape targets up")


# ------------------------------------------------------------------ traffic and jobs


def _serve_and_wait(system: DrillSystem, bodies: list[dict], prefix: str) -> None:
    """Send ``bodies`` (batches, and some single requests) to the champion's server and wait
    until the inference log holds each of them."""
    from kernel.inference_log import read_inference_log

    service = system.champion_service()
    singles = min(40, len(bodies) // 10)
    codes = send_batches(service.url, bodies[singles:], rows=100)
    with httpx.Client(base_url=service.url, timeout=30) as client:
        for body in bodies[:singles]:
            codes[client.post("/predict", json=body).status_code] += 1
    if set(codes) != {200}:
        raise RuntimeError(f"the champion's server refused drill traffic: {dict(codes)}")

    def logged() -> bool:
        records = read_inference_log(service.log_dir)
        return not records.empty and int(
            records["customer_id"].astype(str).str.startswith(prefix).sum()) >= len(bodies)

    wait_until(logged, 60, every=0.3, what=f"{len(bodies)} {prefix} records in the log")


def _window(started: datetime) -> tuple[str, datetime]:
    """(window, now) for a job that must read exactly what was logged since ``started``: the
    job functions take ``now``, so earlier scenarios' traffic stays out of the window."""
    now = datetime.now(UTC)
    return f"{math.ceil((now - started).total_seconds()) + 1}s", now


def _report(output: str) -> Path | None:
    """The JSON report path a monitoring command printed."""
    for line in output.splitlines():
        if line.startswith("report: "):
            return Path(line.removeprefix("report: ").split(" (+")[0])
    return None


def _drift_cli(system: DrillSystem, *args: str, reports: Path):
    stack = system.stack()
    return system.churn("drift", "--model", system.champion().tag, *args,
                        "--pushgateway", stack.pushgateway_url, "--report-dir", str(reports),
                        "--config", str(system.monitoring_config_file(stack.pushgateway_url)))


def _drift_job(system: DrillSystem, started: datetime, reports: Path):
    """The drift job (what `churn drift` runs) over the champion's log since ``started``."""
    from monitoring.jobs import drift_job

    window, now = _window(started)
    return drift_job(system.monitoring_config(system.stack().pushgateway_url),
                     model=system.champion().tag, window=window, now=now,
                     log_dir=system.champion_service().log_dir, report_dir=reports)


# ------------------------------------------------------------------ scenarios


def covariate_drift(system: DrillSystem, finding: Finding) -> None:
    champion = system.champion()
    version = champion.version
    stack = system.stack()
    _scraped(system)
    finding.intact("ChurnDriftDetected not firing before the drift",
                   not firing(stack.prometheus_url, "ChurnDriftDetected",
                              model_version=version), "not firing")
    rows = system.settings.monitoring.rows
    # Lower engagement, a price rise, a new region, more gift cards; churn given the features
    # unchanged (a pure covariate shift).
    frame = system.customers(rows, 31, drifted=True, keep_churn_rate=False)
    bodies = bodies_of(frame[list(champion.contract.features)], champion.contract, "COV-")
    started = datetime.now(UTC)
    finding.injected()
    _serve_and_wait(system, bodies, "COV-")
    outcome = _drift_job(system, started, system.workdir / "reports" / "covariate-drift")
    drift = outcome.result.drift
    finding.note("drift_job", outcome.lines[:12])
    finding.note("report", outcome.report.json_path.name)
    finding.note("drifted_features", drift.drifted_features)
    finding.note("drift_share", round(drift.drift_share, 3))
    finding.caught("the drift job reports DRIFT DETECTED and pushes it",
                   drift.drift_detected and outcome.pushed_to is not None,
                   f"{outcome.lines[1] if len(outcome.lines) > 1 else outcome.lines}; pushed to "
                   f"{outcome.pushed_to or outcome.push_error}")
    finding.intact(f"the job read every prediction sent ({rows})", drift.current_rows == rows,
                   f"{drift.current_rows} rows in the window")
    alert, seen = wait_for_firing(system, "ChurnDriftDetected", model_version=version)
    finding.note("alert", alert_evidence(alert))
    finding.caught("ChurnDriftDetected fires in Prometheus for the served version",
                   alert is not None, alert_evidence(alert).get("summary", "not firing"))
    finding.detected(seen)


def _concept_drift_traffic(system: DrillSystem) -> tuple[pd.DataFrame, np.ndarray]:
    """Customers and their late labels after a rival's launch: traffic shifts to premium
    customers who watch little (the rival's target, retargeted by marketing), and among them
    churn no longer follows what the model sees: it follows the rival's offer, unseen."""
    settings = system.settings.monitoring
    target = system.contract().target.column
    pool = system.customers(settings.rows * 8, 41, drifted=True)
    segment = (pool["plan"] == "premium") & (pool["watch_hours_last_30d"] < 8)
    hit = int(settings.rows * settings.concept_segment_share)
    rng = np.random.default_rng(41)
    frame = pd.concat([pool[segment].sample(hit, random_state=41),
                       pool[~segment].sample(settings.rows - hit, random_state=41)])
    labels = frame[target].to_numpy().copy()
    labels[:hit] = rng.random(hit) < frame[target].to_numpy()[:hit].mean()
    return frame.reset_index(drop=True), labels.astype(int)


def concept_drift(system: DrillSystem, finding: Finding) -> None:
    from monitoring.jobs import performance_job

    champion = system.champion()
    contract = champion.contract
    version = champion.version
    stack = system.stack()
    reference = champion.metadata.metrics.roc_auc
    margin = 0.05  # ChurnPerformanceDrop's margin in rules.yml
    _scraped(system)
    finding.intact("ChurnPerformanceDrop not firing before the change",
                   not firing(stack.prometheus_url, "ChurnPerformanceDrop",
                              model_version=version), "not firing")
    frame, labels = _concept_drift_traffic(system)
    bodies = bodies_of(frame[list(contract.features)], contract, "CON-")
    started = datetime.now(UTC)
    finding.injected()
    injected = time.monotonic()
    _serve_and_wait(system, bodies, "CON-")
    reports = system.workdir / "reports" / "concept-drift"

    # Before any label: the drift job's label-free estimate.
    outcome = _drift_job(system, started, reports)
    estimated_at = time.monotonic()
    estimate = outcome.result.estimate.roc_auc if outcome.result.estimate else None
    finding.note("test_roc_auc", round(reference, 4))
    finding.note("estimated_roc_auc_before_labels", estimate and round(estimate, 4))
    finding.note("estimate_seconds_after_injection", round(estimated_at - injected, 1))
    least = system.settings.monitoring.min_estimate_drop
    finding.caught(f"before labels: the label-free ROC-AUC estimate drops >= {least:g} below "
                   "the test ROC-AUC, and is pushed", estimate is not None
                   and reference - estimate >= least and outcome.pushed_to is not None,
                   f"estimated {estimate} vs test {reference:.4f}")
    time.sleep(3)  # a few evaluations of the pushed estimate
    early = firing(stack.prometheus_url, "ChurnPerformanceDrop", model_version=version,
                   source="estimated")
    finding.note("estimated_alert", "firing" if early else
                 f"not firing: the drop is within the alert's {margin} margin")

    # Weeks later in real life: the labels arrive.
    labels_path = system.workdir / "data" / "concept-drift-labels.csv"
    pd.DataFrame({contract.id: [b[contract.id] for b in bodies],
                  contract.target.column: labels,
                  "observed_at": datetime.now(UTC).isoformat(timespec="seconds")}
                 ).to_csv(labels_path, index=False)
    labels_at = time.monotonic()
    window, now = _window(started)
    measured = performance_job(
        system.monitoring_config(stack.pushgateway_url), labels=str(labels_path),
        model=champion.tag, window=window, now=now, log_dir=system.champion_service().log_dir,
        report_dir=reports)
    finding.note("performance_job", measured.lines)
    mine = next((v for v in measured.result.versions if v.model_version == version), None)
    roc_auc = mine.roc_auc if mine else None
    finding.note("measured_roc_auc", roc_auc and round(roc_auc, 4))
    finding.caught(f"on late labels the measured ROC-AUC is more than {margin} below the test "
                   "ROC-AUC, and is pushed", roc_auc is not None
                   and roc_auc < reference - margin and measured.pushed_to is not None,
                   f"measured {roc_auc} vs test {reference:.4f}")
    finding.intact(f"every label joined to its logged prediction ({len(bodies)})",
                   measured.result.labelled_predictions == len(bodies),
                   f"{measured.result.labelled_predictions} joined")
    alert, seen = wait_for_firing(system, "ChurnPerformanceDrop", model_version=version,
                                  source="measured")
    finding.note("alert", alert_evidence(alert))
    finding.caught("ChurnPerformanceDrop (measured, critical) fires in Prometheus",
                   alert is not None, alert_evidence(alert).get("summary", "not firing"))
    finding.caught("the estimate had dropped before the labels arrived",
                   estimated_at < labels_at and estimate is not None
                   and reference - estimate >= least,
                   f"estimate {estimated_at - injected:.0f} s, labels "
                   f"{labels_at - injected:.0f} s after the change")
    finding.detected(seen)


def pushgateway_down(system: DrillSystem, finding: Finding) -> None:
    from kernel.processes import http_ok, start_process
    from monitoring.drift import DriftJobResult
    from monitoring.jobs import drift_job

    champion = system.champion()
    version = champion.version
    stack = system.stack()
    _scraped(system)
    current = system.write_table(
        system.customers(system.settings.monitoring.rows, 51), "pushgateway-down-current.csv")
    threshold = 7200 / system.settings.time_scale  # ChurnDriftJobStale's age, time-scaled

    # The last good run: its push is what ages.
    good = drift_job(system.monitoring_config(stack.pushgateway_url), model=champion.tag,
                     current=str(current), log_dir=system.champion_service().log_dir,
                     report_dir=system.workdir / "reports" / "pushgateway-up")
    pushed = time.monotonic()
    finding.intact("the run before the outage pushed", good.pushed_to is not None,
                   good.pushed_to or str(good.push_error))
    finding.intact("ChurnDriftJobStale not firing right after a push",
                   not firing(stack.prometheus_url, "ChurnDriftJobStale",
                              model_version=version), "not firing")

    gateway = stack.processes["pushgateway"]
    command, log_path = list(gateway.popen.args), gateway.log_path
    gateway.stop()
    finding.injected()
    reports = system.workdir / "reports" / "pushgateway-down"
    done = _drift_cli(system, "--current", str(current), reports=reports)
    failed = time.monotonic()
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    finding.note("exit_code", done.returncode)
    finding.note("error", errors[-1] if errors else done.stderr.strip()[-300:])
    finding.caught("`churn drift` exits 2 and names the Pushgateway",
                   done.returncode == 2 and any("Pushgateway" in e for e in errors),
                   f"exit {done.returncode}: {errors[-1] if errors else ''}")
    report = _report(done.stdout)
    kept = report is not None and report.exists() and report.with_suffix(".html").exists()
    try:
        result = DriftJobResult.model_validate_json(report.read_text()) if kept else None
    except ValueError:
        result = None
    finding.note("report_kept", report.name if kept else None)
    finding.intact("the run's reports are kept (JSON and HTML, complete)",
                   result is not None and result.drift.current_rows > 0,
                   f"{report.name if kept else 'missing'}: "
                   f"{result.drift.current_rows if result else '?'} rows")

    # The Pushgateway comes back (its Deployment restarts it), with the last good push.
    restarted = start_process(command, name="pushgateway", log_path=log_path,
                              ready=lambda: http_ok(f"{stack.pushgateway_url}/-/ready"))
    stack.processes["pushgateway"] = restarted
    alert, seen = wait_for_firing(system, "ChurnDriftJobStale", model_version=version)
    finding.note("alert", alert_evidence(alert))
    finding.note("stale_threshold_seconds", threshold)
    finding.caught("ChurnDriftJobStale fires once the last push is older than the threshold",
                   alert is not None and seen - pushed >= threshold,
                   f"{alert_evidence(alert).get('summary', 'not firing')}, "
                   f"{seen - pushed:.1f} s after the last push (threshold {threshold:g} s)")
    finding.detected(seen)
    finding.note("seconds_from_failed_run_to_alert", round(seen - failed, 1))


SCENARIOS = [
    Scenario("covariate-drift", "monitoring",
             "live traffic from a shifted population: lower engagement, a price rise, a new "
             "region, more gift cards",
             "`churn drift` (Evidently + PSI on the inference log) and ChurnDriftDetected in "
             "Prometheus", covariate_drift),
    Scenario("concept-drift", "monitoring",
             "a rival's launch: traffic shifts to its target segment, where churn stops "
             "following the features; labels arrive late",
             "label-free estimate in `churn drift` (early), then `churn performance` on late "
             "labels and ChurnPerformanceDrop (measured)", concept_drift),
    Scenario("pushgateway-down", "monitoring",
             "the Pushgateway is down while the drift job runs",
             "reports written before the push, exit 2 (monitoring/jobs.py); "
             "ChurnDriftJobStale when the last push ages", pushgateway_down),
]
