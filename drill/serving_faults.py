"""Failures that reach the running service: bad inputs, a graceful stop and a kill under load,
more load than it can take. Each runs against a real `bentoml serve` and reads the service's own
/metrics and its inference log, so a check fails when the service and its records disagree."""

from __future__ import annotations

import contextlib
import signal
import time
from collections import Counter

import httpx

from drill.scenario import Finding, Scenario
from drill.system import DrillSystem, Service
from drill.traffic import (
    Load,
    bodies_of,
    by_label,
    difference,
    histogram_increase,
    percentile_ms,
    scrape,
    statuses,
    total,
    upper_quantile,
)


def _logged(service: Service, prefix: str):
    """Records of the inference log whose customer id starts with ``prefix``."""
    from kernel.inference_log import read_inference_log

    records = read_inference_log(service.log_dir)
    if records.empty:
        return records
    return records[records["customer_id"].astype(str).str.startswith(prefix)]


def _counts_by(samples: dict, metric: str, version: str, labels: tuple[str, str]
               ) -> dict[str, float]:
    """``metric`` of one model version summed per "<label 1> <label 2>" (e.g. "endpoint code")."""
    out: dict[str, float] = {}
    for (name, sample_labels), value in samples.items():
        have = dict(sample_labels)
        if name == metric and have.get("model_version") == version:
            key = f"{have[labels[0]]} {have[labels[1]]}"
            out[key] = out.get(key, 0.0) + value
    return out


def _request_counts(samples: dict, version: str) -> dict[str, float]:
    """churn_requests_total per "endpoint code" of one model version."""
    return _counts_by(samples, "churn_requests_total", version, ("endpoint", "code"))


def _failure_counts(samples: dict, version: str) -> dict[str, float]:
    """churn_validation_failures_total per "endpoint reason" of one model version."""
    return _counts_by(samples, "churn_validation_failures_total", version,
                      ("endpoint", "reason"))


def bad_inputs(system: DrillSystem, finding: Finding) -> None:
    champion = system.champion()
    service = system.champion_service()
    contract = champion.contract
    max_body = _service_setting(system, "max_body_bytes")
    max_rows = _service_setting(system, "max_batch_rows")
    rows = champion.reference[list(contract.features)].head(60)
    valid = bodies_of(rows, contract, "BAD-")
    body = valid[0]

    def customer(n: int, **changes: object) -> dict:
        return {**body, contract.id: f"BAD-{n:03d}", **changes}

    without_plan = {k: v for k, v in customer(5).items() if k != "plan"}
    bad_batch = [dict(b) for b in valid[10:60]]
    bad_batch[17]["age"] = 300.0
    oversized = b'{"customer_id": "BAD-big", "pad": "' + b"x" * max_body + b'"}'
    cases: list[tuple[str, str, object, int, str | None]] = [
        ("out of range: tenure_days -5", "/predict", customer(1, tenure_days=-5.0), 400,
         "tenure_days"),
        ("out of range: satisfaction_score 9", "/predict", customer(2, satisfaction_score=9.0),
         400, "satisfaction_score"),
        ("wrong type: monthly_charge \"cheap\"", "/predict", customer(3, monthly_charge="cheap"),
         400, "monthly_charge"),
        ("wrong type: auto_renew_enabled \"maybe\"", "/predict",
         customer(4, auto_renew_enabled="maybe"), 400, "auto_renew_enabled"),
        ("missing field: plan", "/predict", without_plan, 400, "plan"),
        ("closed set: plan \"platinum\"", "/predict", customer(6, plan="platinum"), 400, "plan"),
        ("unknown field: promo_code", "/predict", customer(7, promo_code="X"), 400,
         "promo_code"),
        ("malformed JSON", "/predict", b'{"customer_id": "BAD-008", "plan": ', 400, None),
        ("batch: row 17 of 50 out of range (age 300)", "/predict_batch",
         {"customers": bad_batch}, 400, "age"),
        (f"batch: {max_rows + 1:,} rows (limit {max_rows:,})", "/predict_batch",
         {"customers": [customer(9)] * (max_rows + 1)}, 400, "customers"),
        (f"oversized body ({len(oversized):,} bytes, limit {max_body:,})", "/predict", oversized,
         413, "body"),
    ]
    unseen = customer(10, region="antarctica")

    version = champion.version
    before = scrape(service.url)
    rejected_reasons: Counter = Counter()
    answers = []
    slowest = 0.0
    finding.injected()
    with httpx.Client(base_url=service.url, timeout=60) as client:
        for label, path, payload, expected, field_name in cases:
            started = time.monotonic()
            if isinstance(payload, bytes):
                response = client.post(path, content=payload,
                                       headers={"content-type": "application/json"})
            else:
                response = client.post(path, json=payload)
            slowest = max(slowest, time.monotonic() - started)
            try:
                detail = response.json().get("detail", [])
            except ValueError:
                detail = []
            locs = [[str(part) for part in d.get("loc", [])] for d in detail]
            endpoint = path.strip("/")
            for reason in sorted({d.get("type", "") for d in detail}):
                rejected_reasons[f"{endpoint} {reason}"] += 1
            named = (any(field_name in loc for loc in locs) if field_name
                     else any("JSON" in d.get("msg", "") for d in detail))
            answers.append({"case": label, "status": response.status_code, "loc": locs[:3],
                            "msg": [d.get("msg", "") for d in detail][:2]})
            finding.caught(f"{label}: {expected}" + (f" naming {field_name!r}" if field_name
                                                     else " saying the JSON is invalid"),
                           response.status_code == expected and named,
                           f"{response.status_code} {locs[:2]}")
        started = time.monotonic()
        flagged = client.post("/predict", json=unseen)
        slowest = max(slowest, time.monotonic() - started)
    finding.took(slowest)
    flagged_answer = flagged.json() if flagged.status_code == 200 else {}
    answers.append({"case": "unseen category: region \"antarctica\" (open set)",
                    "status": flagged.status_code,
                    "unseen_categories": flagged_answer.get("unseen_categories")})
    finding.note("answers", answers)
    finding.caught("unseen category (open set): 200 with the prediction flagged",
                   flagged.status_code == 200
                   and flagged_answer.get("unseen_categories") == ["region"],
                   f"{flagged.status_code} {flagged_answer.get('unseen_categories')}")
    statuses_seen = [a["status"] for a in answers]
    finding.caught("never a 5xx", all(status < 500 for status in statuses_seen),
                   f"statuses {sorted(set(statuses_seen))}")

    after = scrape(service.url)
    requests_moved = difference(_request_counts(after, version), _request_counts(before, version))
    expected_requests = Counter(f"{path.strip('/')} {a['status']}"
                                for (_, path, *_), a in zip(cases, answers, strict=False))
    expected_requests["predict 200"] += 1
    finding.note("churn_requests_total increase", requests_moved)
    finding.caught("churn_requests_total rose by each status answered",
                   requests_moved == {k: float(v) for k, v in expected_requests.items()},
                   f"moved {requests_moved}, answered {dict(expected_requests)}")
    failures_moved = difference(_failure_counts(after, version), _failure_counts(before, version))
    finding.note("churn_validation_failures_total increase", failures_moved)
    finding.caught("churn_validation_failures_total rose by each rejected request's rules",
                   failures_moved == {k: float(v) for k, v in rejected_reasons.items()},
                   f"moved {failures_moved}, expected {dict(rejected_reasons)}")
    unseen_moved = (total(after, "churn_unseen_categories_total", feature="region",
                          model_version=version)
                    - total(before, "churn_unseen_categories_total", feature="region",
                            model_version=version))
    finding.caught("churn_unseen_categories_total{feature=region} rose by 1", unseen_moved == 1,
                   unseen_moved)
    rejected_line = next((line for line in service.log_tail(200_000).splitlines()
                          if '"rejected"' in line), "")
    finding.note("service log line", rejected_line[:400])

    # The flagged prediction is logged like any other; nothing rejected is.
    flush = _service_setting(system, "inference_log")["flush_seconds"]
    time.sleep(flush + 1.0)
    logged = _logged(service, "BAD-")
    ids = set(logged["customer_id"]) if len(logged) else set()
    finding.intact("the flagged prediction is in the inference log, flagged",
                   "BAD-010" in ids and list(logged.loc[logged["customer_id"] == "BAD-010",
                                                        "unseen_categories"].iloc[0]) == ["region"],
                   f"logged ids {sorted(ids)}")
    finding.intact("no rejected input reached the inference log", ids == {"BAD-010"},
                   f"logged ids {sorted(ids)}")


def _service_setting(system: DrillSystem, key: str):
    from service.config import ServiceConfig

    source = system.path(system.settings.project.service)
    config = ServiceConfig.from_yaml(source if source.exists() else None).model_dump(mode="json")
    return config[key]


def _alive(process) -> bool:
    """A psutil process still running (a zombie waiting for its parent is not)."""
    import psutil

    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _steady_load(system: DrillSystem, service: Service, prefix: str) -> Load:
    champion = system.champion()
    contract = champion.contract
    bodies = bodies_of(champion.reference[list(contract.features)].head(500), contract, prefix)
    load = system.settings.serving
    return Load(service.url, bodies, contract.id, prefix, load.clients, rate=load.rate)


def sigterm(system: DrillSystem, finding: Finding) -> None:
    settings = system.settings.serving
    service = system.serve("sigterm", {"workers": settings.workers})
    load = _steady_load(system, service, "TERM-").start()
    time.sleep(settings.seconds_before_signal)
    workers = service.processes()[1:]
    finding.injected()
    signalled = time.monotonic()
    service.send_signal(signal.SIGTERM)  # as Kubernetes signals a pod: the server's group
    try:
        code = service.popen.wait(60)
    except Exception:  # noqa: BLE001 - still running after 60 s: the drain did not finish
        code = None
    stopped = time.monotonic()
    answers = load.stop()
    finding.detected(stopped)
    left = [w.pid for w in workers if _alive(w)]
    system.stop_service(service, timeout=5)
    for worker in workers:  # a worker the server left behind must not outlive the drill
        with contextlib.suppress(Exception):
            worker.kill()

    answered = {a.customer_id for a in answers if a.status == 200}
    after_signal = sum(1 for a in answers if a.status == 200 and a.answered > signalled)
    logged = _logged(service, "TERM-")
    ids = list(logged["customer_id"]) if len(logged) else []
    missing = answered - set(ids)
    finding.note("statuses", statuses(answers))
    finding.note("answered_after_sigterm", after_signal)
    finding.note("stop_seconds", round(stopped - signalled, 2))
    finding.note("exit_code", code)
    finding.note("answered", len(answered))
    finding.note("logged", len(ids))
    finding.caught("the server drains and exits on SIGTERM by itself (no SIGKILL needed)",
                   code is not None, f"exit code {code} after {stopped - signalled:.1f} s")
    finding.intact(f"every worker exited with it ({len(workers)})", workers and not left,
                   f"still running: {left}" if left else f"{len(workers)} workers gone")
    finding.intact("every answered prediction is in the inference log", not missing and answered,
                   f"{len(answered)} answered, {len(missing)} missing from the log")
    finding.intact("no record written twice", len(ids) == len(set(ids)),
                   f"{len(ids)} records, {len(set(ids))} customers")
    from kernel.inference_log import list_log_files

    files = list_log_files(service.log_dir)
    sealed = sum(1 for f in files if f.sealed)
    finding.note("log_files", {"files": len(files), "sealed": sealed})
    finding.intact("every log file closed and sealed (ready for compaction)",
                   files and sealed == len(files), f"{sealed} of {len(files)} sealed")


def sigkill(system: DrillSystem, finding: Finding) -> None:
    settings = system.settings.serving
    flush = float(_service_setting(system, "inference_log")["flush_seconds"])
    service = system.serve("sigkill", {"workers": settings.workers})
    load = _steady_load(system, service, "KILL-").start()
    time.sleep(settings.seconds_before_signal)
    finding.injected()
    killed = time.monotonic()
    workers = service.processes()[1:]
    service.kill()
    service.popen.wait(30)
    time.sleep(0.5)  # requests in flight fail now
    answers = load.stop()
    system.stop_service(service)  # killed already: only forgotten

    answered = [a for a in answers if a.status == 200]
    window = 2.0
    recent = [a for a in answered if killed - window <= a.answered <= killed]
    rate = len(recent) / window
    try:
        logged = _logged(service, "KILL-")
        readable = True
    except Exception as exc:  # noqa: BLE001 - the check below reports it
        logged, readable = None, False
        finding.note("read_error", str(exc))
    finding.detected()
    finding.caught("the log of the killed server reads (a torn last batch is skipped)",
                   readable, "read" if readable else "unreadable")
    ids = set(logged["customer_id"]) if readable and len(logged) else set()
    lost = [a for a in answered if a.customer_id not in ids]
    bound = rate * flush
    oldest_lost = max((killed - a.answered for a in lost), default=0.0)
    from kernel.inference_log import list_log_files

    files = list_log_files(service.log_dir)
    finding.note("answered", len(answered))
    finding.note("logged", len(ids))
    finding.note("lost", len(lost))
    finding.note("rate_per_second_before_kill", round(rate, 1))
    finding.note("flush_seconds", flush)
    finding.note("bound_rate_x_flush", round(bound, 1))
    finding.note("oldest_lost_seconds_before_kill", round(oldest_lost, 3))
    finding.note("unsealed_files", sum(1 for f in files if not f.sealed))
    left = [w.pid for w in workers if _alive(w)]
    finding.intact(f"the server and its {len(workers)} workers are gone (nothing answers "
                   "after the kill)", workers and not left
                   and not any(a.status == 200 and a.sent > killed + 0.1 for a in answers),
                   f"still running: {left}" if left else "all gone")
    finding.caught(f"loss reported: answered {len(answered)} - logged {len(ids)}",
                   bool(answered), f"lost {len(lost)} (bound {bound:.0f})")
    # What a flush interval bounds is the age of what can be lost: nothing answered more than
    # flush_seconds (plus the one write in progress, allowed 0.5 s) before the kill.
    finding.intact(f"nothing answered more than flush_seconds ({flush:g} s) before the kill "
                   "was lost", oldest_lost <= flush + 0.5,
                   f"oldest lost answer {oldest_lost:.2f} s before the kill")
    finding.intact("loss within rate x flush_seconds", len(lost) <= max(bound * 1.5, 1),
                   f"{len(lost)} lost, rate {rate:.0f}/s x {flush:g} s = {bound:.0f} "
                   "(x1.5 for the write in progress)")


def overload(system: DrillSystem, finding: Finding) -> None:
    settings = system.settings.serving
    project_limit = _service_setting(system, "max_in_flight")
    limit = None if project_limit is None else min(project_limit,
                                                   settings.overload_max_in_flight)
    service = system.serve("overload", {"workers": 1, "max_in_flight": limit})
    champion = system.champion()
    contract = champion.contract
    version = champion.version
    bodies = bodies_of(champion.reference[list(contract.features)].head(500), contract, "OVER-")
    before = scrape(service.url)
    load = Load(service.url, bodies, contract.id, "OVER-", settings.overload_clients,
                pause_after=settings.overload_retry_seconds)
    finding.injected()
    load.start()
    time.sleep(settings.overload_seconds)
    answers = load.stop()
    shed = sorted((a for a in answers if a.status == 429), key=lambda a: a.answered)
    if shed:
        finding.detected(shed[0].answered)
    ok = [a for a in answers if a.status == 200]
    server_errors = [a for a in answers if a.status is not None and a.status >= 500]
    no_answer = [a for a in answers if a.status is None]
    after = scrape(service.url)
    counted_429 = (total(after, "churn_requests_total", code="429", model_version=version)
                   - total(before, "churn_requests_total", code="429", model_version=version))
    counted_overloaded = (
        total(after, "churn_validation_failures_total", reason="overloaded",
              model_version=version)
        - total(before, "churn_validation_failures_total", reason="overloaded",
                model_version=version))
    p99 = percentile_ms(ok, 99)
    # The service's own histogram (what its latency alert watches) counts from the moment the
    # request reaches it; the client's view adds the load generator's own queueing on the
    # same two cores. Both are bounded; the server's bound is the one the service promises.
    measured = histogram_increase(before, after, "churn_request_duration_seconds",
                                  endpoint="predict", model_version=version)
    server_p99 = upper_quantile(measured, 0.99, fastest_excluded=len(shed))
    server_p99_ms = None if server_p99 is None else round(server_p99 * 1000, 1)
    finding.note("max_in_flight", {"project": project_limit, "drill": limit})
    finding.note("clients", settings.overload_clients)
    finding.note("statuses", statuses(answers))
    finding.note("answered_per_second", round(len(ok) / settings.overload_seconds, 1))
    finding.note("p50_ms", percentile_ms(ok, 50))
    finding.note("p99_ms", p99)
    finding.note("server_p99_ms_at_most", server_p99_ms)
    finding.caught("requests beyond capacity are shed with 429", bool(shed),
                   f"{len(shed)} shed of {len(answers)}")
    finding.caught("every 429 counted in churn_requests_total{code=\"429\"}",
                   counted_429 == len(shed), f"counted {counted_429:g}, seen {len(shed)}")
    finding.caught("and in churn_validation_failures_total{reason=\"overloaded\"}",
                   counted_overloaded == len(shed),
                   f"counted {counted_overloaded:g}, seen {len(shed)}")
    finding.intact("no 5xx and no dropped connection",
                   not server_errors and not no_answer,
                   f"{len(server_errors)} 5xx, {len(no_answer)} without an answer")
    finding.intact(f"p99 of answered requests, as the service measures it, within "
                   f"{settings.overload_p99_ms:g} ms", server_p99_ms is not None
                   and server_p99_ms <= settings.overload_p99_ms,
                   f"p99 at most {server_p99_ms} ms (histogram bucket bound, the "
                   f"{len(shed)} shed requests left out)")
    finding.intact(f"p99 of answered requests, as clients saw it, within "
                   f"{settings.overload_client_p99_ms:g} ms", p99 is not None
                   and p99 <= settings.overload_client_p99_ms, f"p99 {p99} ms")

    # Recovery: once the load stops, single requests are answered at once.
    recovered_at = None
    recovery = []
    with httpx.Client(base_url=service.url, timeout=30) as client:
        stop = time.monotonic()
        for i in range(settings.recovery_requests):
            started = time.monotonic()
            response = client.post("/predict", json={**bodies[i], contract.id: f"OVER-R{i:03d}"})
            recovery.append((response.status_code, time.monotonic() - started))
        recovered_at = time.monotonic() - stop
    finding.note("recovery", {"requests": len(recovery), "statuses": dict(Counter(
        s for s, _ in recovery)), "max_ms": round(max(t for _, t in recovery) * 1000, 1),
        "seconds": round(recovered_at, 2)})
    finding.intact("recovers: every request after the load answered 200",
                   all(s == 200 for s, _ in recovery), dict(Counter(s for s, _ in recovery)))
    dropped = (total(after, "churn_inference_log_dropped_total", model_version=version)
               - total(before, "churn_inference_log_dropped_total", model_version=version))
    finding.intact("no prediction dropped from the inference log queue", dropped == 0,
                   f"{dropped:g} dropped")
    by_code = by_label(after, "churn_requests_total", "code", model_version=version)
    finding.note("churn_requests_total by code", by_code)


SCENARIOS = [
    Scenario("bad-inputs", "serving",
             "requests out of range, of the wrong type, missing or unknown fields, outside a "
             "closed set, malformed, too many rows, oversized; an unseen open-set category",
             "request schema from the contract (service/schema.py, validation.py) and the "
             "body limit (middleware.py): 4xx naming the field, counted; unseen categories "
             "scored and flagged", bad_inputs),
    Scenario("sigterm", "serving",
             "SIGTERM to a 2-worker `bentoml serve` under steady load",
             "graceful shutdown: each worker drains its inference-log queue and seals its "
             "files (service/inference_log.py)", sigterm),
    Scenario("sigkill", "serving",
             "SIGKILL to a 2-worker `bentoml serve` under steady load",
             "bounded loss: the writer flushes every flush_seconds; the reader skips a torn "
             "last batch", sigkill),
    Scenario("overload", "serving",
             "many more concurrent clients than the service can take",
             "load shedding: requests beyond max_in_flight per worker answered 429 and counted "
             "(middleware.py)", overload),
]
