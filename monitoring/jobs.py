"""The monitoring jobs, end to end: what a CronJob, a test and the CLI all run.

Each job resolves the model (``kernel.store.choose_model``), computes, writes its report files,
then pushes its gauges. Reports are written before the push, so an unreachable Pushgateway
loses no result: the outcome then carries the push error and the CLI exits 2 after printing.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from pydantic import BaseModel

from kernel.cluster import DEFAULT_CONNECT_TIMEOUT
from kernel.store import PROBABILITY_COLUMN, StoreError, load_entry, resolve_entry
from monitoring.config import MonitoringConfig, parse_window
from monitoring.push import PushError
from monitoring.reports import ReportFiles, prune_reports, write_report


@dataclass
class JobOutcome:
    """What a job found (``result``, the JSON report), said (``lines``) and wrote."""

    result: BaseModel
    lines: list[str]
    report: ReportFiles
    exit_code: int = 0
    pushed_to: str | None = None
    push_error: PushError | None = None
    warnings: list[str] = field(default_factory=list)


def _fmt(value: float | None, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def _push(outcome: JobOutcome, groups: list[tuple[object, str]], job: str,
          settings: MonitoringConfig) -> JobOutcome:
    from monitoring.push import push_metrics

    try:
        for registry, version in groups:
            push_metrics(registry, job, version, settings.pushgateway)
    except PushError as exc:
        outcome.push_error = exc
        return outcome
    if groups:
        outcome.pushed_to = settings.pushgateway.url
    return outcome


def drift_job(
    settings: MonitoringConfig, *, log_dir: Path, report_dir: Path, model: str | None = None,
    window: str | None = None, current: str | None = None, push: bool = True,
    now: datetime | None = None, dask: str | None = None,
    dask_timeout: float = DEFAULT_CONNECT_TIMEOUT,
) -> JobOutcome:
    """Compare current data (logged inferences of ``window``, or the table ``current``) with the
    model's reference sample; estimate performance without labels; report and push.
    ``dask``: count the current rows on Dask ("local" or a scheduler address) and run
    Evidently on a uniform sample of ``drift.evidently_sample_rows`` (monitoring.dask_drift)."""
    from monitoring.drift import DriftJobResult, detect_drift
    from monitoring.estimate import check_calibration, estimate_performance
    from monitoring.push import DRIFT_JOB, drift_registry

    if current and window:
        raise ValueError("give either a window or a current table, not both")
    now = now or datetime.now(UTC)
    entry = resolve_entry(model, dataset=settings.dataset)
    contract = entry.contract
    span = parse_window(window or settings.drift.window)
    source = str(current) if current else \
        f"{log_dir} from {(now - span).isoformat(timespec='seconds')}"
    current_rows = _current_on_dask if dask else _current_in_process
    frame, statistics, rejected, rescored = current_rows(
        entry, settings, log_dir=log_dir, start=now - span, end=now, current=current,
        address=dask, timeout=dask_timeout)
    warnings = []
    if rejected:
        warnings.append(f"ignored {rejected} current rows that break the contract")

    reference = entry.reference
    run = detect_drift(reference[[*contract.features, PROBABILITY_COLUMN]], frame,
                       contract, entry.metadata.categories, settings.drift, statistics)
    calibration = check_calibration(
        reference[contract.target.column].to_numpy(), reference[PROBABILITY_COLUMN].to_numpy(),
        settings.estimate.max_reference_calibration_error, settings.estimate.calibration_bins)
    estimate = None
    if not run.result.insufficient_data:
        if calibration.calibrated and statistics is not None and statistics.histogram:
            estimate = statistics.histogram.estimate()
            logging.getLogger("churn.monitoring").info(
                "estimated ROC-AUC from a histogram of all %d probabilities: within %.1e of "
                "the exact value", statistics.rows,
                statistics.histogram.roc_auc_error_bound())
        elif calibration.calibrated:
            estimate = estimate_performance(frame[PROBABILITY_COLUMN].to_numpy(),
                                            entry.metadata.threshold)
        else:
            warnings.append(f"no performance estimate: the reference probabilities are not "
                            f"calibrated (error {calibration.calibration_error:.3f} > "
                            f"{calibration.max_calibration_error:.3f})")
    result = DriftJobResult(
        run_at=now.isoformat(timespec="seconds"), model_tag=entry.tag,
        model_version=entry.version, current_source=source,
        rejected_rows=rejected, rescored_rows=rescored,
        drift=run.result, reference_roc_auc=entry.metadata.metrics.roc_auc,
        reference_calibration=calibration, estimate=estimate,
    )
    lines = drift_lines(result)
    files = write_report(report_dir, "drift", entry.version, result, now, run.snapshot, lines)
    prune_reports(report_dir, settings.reports.retention_days, now)
    outcome = JobOutcome(result, lines, files, warnings=warnings)
    if not push:
        return outcome
    return _push(outcome, [(drift_registry(result, time.time()), entry.version)], DRIFT_JOB,
                 settings)


def _current_in_process(entry, settings: MonitoringConfig, *, log_dir: Path, start: datetime,
                        end: datetime, current: str | None, **_: object):
    """All current rows in this process: (typed frame, None, rejected, rescored)."""
    from monitoring.drift import prepare_current

    if current:
        from kernel.ingest import read_table

        raw = read_table(current)
    else:
        from kernel.inference_log import read_inference_log

        raw = read_inference_log(log_dir, start=start, end=end)
    prepared = prepare_current(raw, entry.contract, entry.model, entry.version)
    return prepared.frame, None, prepared.rejected_rows, prepared.rescored_rows


def _current_on_dask(entry, settings: MonitoringConfig, *, log_dir: Path, start: datetime,
                     end: datetime, current: str | None, address: str, timeout: float):
    """Counted on Dask: (uniform sample, statistics of every row, rejected, rescored)."""
    from kernel.cluster import dask_client, describe
    from monitoring.dask_drift import current_on_dask, log_partitions, table_partitions

    drift = settings.drift
    log = logging.getLogger("churn.monitoring")
    with dask_client(address, timeout=timeout) as client:
        partitions = (table_partitions(current, drift.partition_rows, drift.partition_bytes,
                                       drift.chunk_rows) if current
                      else log_partitions(log_dir, start, end))
        log.info("counting %d partitions on %s", len(partitions), describe(address))
        found = current_on_dask(client, entry, partitions, psi_bins=drift.psi_bins,
                                sample_rows=drift.evidently_sample_rows, seed=drift.sample_seed)
    peak = max(found.worker_peak_rss.values(), default=0)
    log.info("%d current rows in %d partitions; peak memory per worker %.0f MiB (max of %d "
             "workers); Evidently on a uniform sample of %d rows", found.statistics.rows,
             found.partitions, peak / 2**20, len(found.worker_peak_rss), len(found.sample))
    return found.sample, found.statistics, found.rejected, found.rescored


def drift_lines(result) -> list[str]:
    """The drift job's verdict in a few readable lines (also the HTML report's headline)."""
    drift = result.drift
    head = f"{result.model_tag}: {drift.current_rows} current rows vs {drift.reference_rows} " \
           "reference rows"
    if drift.insufficient_data:
        return [head, f"insufficient data: fewer than min_rows {drift.min_rows} current rows; "
                "no drift verdict (churn_drift_insufficient_data=1)"]
    verdict = "DRIFT DETECTED" if drift.drift_detected else "no dataset drift"
    lines = [head, f"{verdict}: {len(drift.drifted_features)} of {len(drift.features)} "
             f"features drifted (share {drift.drift_share:.2f}, threshold "
             f"{drift.drift_share_threshold:.2f})"]
    if drift.evidently_rows is not None:
        lines.append(f"Evidently tests on a uniform sample of {drift.evidently_rows} of "
                     f"{drift.current_rows} current rows; PSI, shares and means over all rows")
    for f in drift.features:
        if f.detected or f.psi_band != "stable" or f.unseen_share > 0:
            unseen = f", unseen {f.unseen_share:.1%} {f.unseen_values}" if f.unseen_share else ""
            lines.append(f"  {f.feature:<24} {'drift' if f.detected else 'ok':<5} "
                         f"score {_fmt(f.score)} ({f.method})  PSI {f.psi:.3f} {f.psi_band}  "
                         f"missing {f.missing_share:.1%}{unseen}")
    if drift.prediction:
        p = drift.prediction
        lines.append(f"prediction drift: {'yes' if p.detected else 'no'}, score {_fmt(p.score)}, "
                     f"PSI {p.psi:.3f} {p.psi_band}, mean probability {p.reference_mean:.3f} -> "
                     f"{p.current_mean:.3f}")
    if result.estimate:
        e = result.estimate
        lines.append(f"estimated (no labels): ROC-AUC {_fmt(e.roc_auc)} (test "
                     f"{result.reference_roc_auc:.3f}), precision {_fmt(e.precision)}, "
                     f"recall {_fmt(e.recall)}")
    return lines


def performance_job(
    settings: MonitoringConfig, *, labels: str, log_dir: Path, report_dir: Path,
    model: str | None = None, window: str | None = None, breakdown: str | None = None,
    push: bool = True, now: datetime | None = None,
) -> JobOutcome:
    """Join late labels to the logged predictions and measure each model version."""
    from kernel.inference_log import read_inference_log
    from kernel.ingest import read_table
    from monitoring.performance import (
        LabelError,
        PerformanceJobResult,
        join_labels,
        measure_performance,
        parse_labels,
    )
    from monitoring.push import PERFORMANCE_JOB, performance_registry

    now = now or datetime.now(UTC)
    entry = resolve_entry(model, dataset=settings.dataset)
    contract, name = entry.contract, entry.metadata.dataset
    if contract.id is None:
        raise LabelError(f"the contract of {name!r} has no id column: late labels cannot be "
                         "joined to logged predictions (add `id:` to the contract)")
    span = parse_window(window or settings.performance.window)
    step = parse_window(breakdown or settings.performance.breakdown)
    observed_at = settings.performance.observed_at_column
    truth = parse_labels(read_table(labels), contract.id, contract.target.column, observed_at)
    predictions = read_inference_log(log_dir, start=now - span, end=now)
    joined = join_labels(predictions, truth, contract.id, observed_at,
                         timedelta(days=settings.performance.label_horizon_days))

    thresholds, references = {}, {}
    versions = sorted(joined["model_version"].astype(str).unique()) if len(joined) else []
    for version in versions:
        try:
            stored = load_entry(f"{name}:{version}").metadata
        except StoreError:
            continue
        thresholds[version] = stored.threshold
        references[version] = stored.metrics
    measured = measure_performance(joined, contract.target.column, thresholds, now - span, step,
                                   settings.performance.min_labelled_rows)
    for version in measured:
        stored = references.get(version.model_version)
        if stored is not None:
            version.reference_roc_auc = stored.roc_auc
            version.reference_precision = stored.precision
            version.reference_recall = stored.recall
    result = PerformanceJobResult(
        run_at=now.isoformat(timespec="seconds"), labels_source=str(labels),
        window_start=(now - span).isoformat(timespec="seconds"),
        window_end=now.isoformat(timespec="seconds"), predictions=len(predictions),
        labels=len(truth), labelled_predictions=len(joined), versions=measured,
    )
    lines = [f"{len(joined)} of {len(predictions)} logged predictions have a label "
             f"({len(truth)} labels)"]
    for v in measured:
        enough = "" if v.sufficient else (f"  (fewer than {settings.performance.min_labelled_rows}"
                                          " rows: not pushed)")
        lines.append(f"model version {v.model_version}: {v.rows} rows, ROC-AUC {_fmt(v.roc_auc)} "
                     f"(test {_fmt(v.reference_roc_auc)}), precision {_fmt(v.precision)} "
                     f"(test {_fmt(v.reference_precision)}), recall {_fmt(v.recall)} "
                     f"(test {_fmt(v.reference_recall)}), calibration error "
                     f"{_fmt(v.calibration_error)}{enough}")
    files = write_report(report_dir, "performance", "all", result, now, headline=lines)
    prune_reports(report_dir, settings.reports.retention_days, now)
    outcome = JobOutcome(result, lines, files)
    if not push:
        return outcome
    stamp = time.time()
    return _push(outcome, [(performance_registry(v, stamp), v.model_version) for v in measured],
                 PERFORMANCE_JOB, settings)


def retrain_check_job(
    settings: MonitoringConfig, *, report_dir: Path, model: str | None = None,
    margin: float | None = None, max_age_days: float | None = None, push: bool = True,
    now: datetime | None = None,
) -> JobOutcome:
    """Recommend retraining from the newest drift and performance reports and the model's age.
    ``exit_code``: 0 no retrain, 10 retrain recommended (``monitoring.retrain``)."""
    from monitoring.drift import DriftJobResult
    from monitoring.performance import PerformanceJobResult
    from monitoring.push import RETRAIN_JOB, retrain_registry
    from monitoring.reports import latest_report
    from monitoring.retrain import RetrainEvidence, decide_retrain

    now = now or datetime.now(UTC)
    entry = resolve_entry(model, dataset=settings.dataset)
    not_before = now - timedelta(hours=settings.retrain.max_report_age_hours)
    evidence = RetrainEvidence(model_tag=entry.tag, model_version=entry.version,
                               trained_at=entry.metadata.trained_at,
                               reference_roc_auc=entry.metadata.metrics.roc_auc)

    drift_path = latest_report(report_dir, "drift", entry.version, not_before)
    if drift_path is not None:
        found = DriftJobResult.model_validate_json(drift_path.read_text())
        if not found.drift.insufficient_data:
            evidence.drift_detected = found.drift.drift_detected
            evidence.drift_report = drift_path.name
        if found.estimate is not None:
            evidence.estimated_roc_auc = found.estimate.roc_auc
    performance_path = latest_report(report_dir, "performance", "all", not_before)
    if performance_path is not None:
        found_perf = PerformanceJobResult.model_validate_json(performance_path.read_text())
        for version in found_perf.versions:
            if version.model_version == entry.version and version.sufficient:
                evidence.measured_roc_auc = version.roc_auc
                evidence.performance_report = performance_path.name

    decision = decide_retrain(
        evidence, now,
        settings.retrain.performance_margin if margin is None else margin,
        settings.retrain.max_age_days if max_age_days is None else max_age_days,
    )
    lines = [f"{entry.tag}: {'RETRAIN RECOMMENDED' if decision.recommended else 'no retrain'} "
             f"(model age {decision.model_age_days:.1f} days)"]
    lines += [f"  - {why}" for why in decision.explanations]
    if drift_path is None and performance_path is None:
        lines.append(f"  (no drift or performance report newer than "
                     f"{settings.retrain.max_report_age_hours:g}h in {report_dir}: "
                     "only the model's age was checked)")
    files = write_report(report_dir, "retrain", entry.version, decision, now, headline=lines)
    prune_reports(report_dir, settings.reports.retention_days, now)
    outcome = JobOutcome(decision, lines, files, exit_code=decision.exit_code)
    if not push:
        return outcome
    return _push(outcome, [(retrain_registry(decision, time.time()), entry.version)],
                 RETRAIN_JOB, settings)
