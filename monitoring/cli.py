"""`churn drift | performance | retrain-check`: thin wiring around the monitoring stages.

Each command reads configs/monitoring.yaml, loads the model entry, computes, writes its
report files, then pushes to the Pushgateway. Reports are written before the push, so an
unreachable gateway loses no result. Exit codes: docs/monitoring.md.
"""

from __future__ import annotations

import logging
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer

DEFAULT_CONFIG = Path("configs/monitoring.yaml")

CONFIG_HELP = "Monitoring config YAML (defaults apply when the default file does not exist)."
MODEL_HELP = "Model tag name:version; default <dataset>:champion (dataset from the config)."
PUSH_HELP = "Pushgateway URL; default pushgateway.url from the config."
NO_PUSH_HELP = "Write the reports only; push nothing."
REPORT_HELP = "Folder for the HTML/JSON reports; default report_dir, else $CHURN_HOME/reports."
LOG_HELP = ("Inference log folder written by the service; default inference_log_dir, else "
            "$CHURN_HOME/inference_log.")


def _logging() -> None:
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s",
                        datefmt="%H:%M:%S", stream=sys.stderr)
    logging.getLogger("churn").setLevel(logging.INFO)


def _settings(config: Path, pushgateway: str | None):
    from monitoring.config import MonitoringConfig

    path = None if config == DEFAULT_CONFIG and not config.exists() else config
    settings = MonitoringConfig.from_yaml(path)
    if pushgateway:
        settings.pushgateway.url = pushgateway
    return settings


def _report_dir(settings, report_dir: Path | None) -> Path:
    from kernel import paths

    return report_dir or settings.report_dir or paths.report_dir()


def _log_dir(settings, inference_log: Path | None) -> Path:
    from kernel import paths

    return inference_log or settings.inference_log_dir or paths.inference_log_dir()


def _fmt(value: float | None, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def drift(
    model: Annotated[str | None, typer.Option("--model", help=MODEL_HELP)] = None,
    window: Annotated[str | None, typer.Option(
        help="Current data = logged inferences of this last period (30m, 24h, 7d); "
        "default drift.window from the config.")] = None,
    current: Annotated[str | None, typer.Option(
        "--current", help="Current data from a CSV/Parquet file or SQLAlchemy URL#table "
        "instead of the inference log; rows without churn_probability are scored by the "
        "model.")] = None,
    inference_log: Annotated[Path | None, typer.Option("--inference-log", help=LOG_HELP)] = None,
    min_rows: Annotated[int | None, typer.Option(
        "--min-rows", min=1, help="Fewer current rows give 'insufficient data'; default "
        "drift.min_rows.")] = None,
    pushgateway: Annotated[str | None, typer.Option("--pushgateway", help=PUSH_HELP)] = None,
    no_push: Annotated[bool, typer.Option("--no-push", help=NO_PUSH_HELP)] = False,
    report_dir: Annotated[Path | None, typer.Option("--report-dir", help=REPORT_HELP)] = None,
    config: Annotated[Path, typer.Option("--config", help=CONFIG_HELP)] = DEFAULT_CONFIG,
) -> None:
    """Compare current data with the model's reference sample (Evidently + PSI), estimate
    performance without labels, write the reports and push churn_drift_* gauges.
    Exit 0 after a run (drift or not, or insufficient data); 2 on errors (also when the
    Pushgateway stays unreachable: the reports are written first)."""
    from kernel.store import PROBABILITY_COLUMN, load_entry
    from monitoring.config import parse_window
    from monitoring.drift import DriftJobResult, detect_drift, prepare_current
    from monitoring.estimate import check_calibration, estimate_performance
    from monitoring.push import DRIFT_JOB, drift_registry, push_metrics
    from monitoring.reports import prune_reports, write_report

    _logging()
    settings = _settings(config, pushgateway)
    if min_rows is not None:
        settings.drift.min_rows = min_rows
    if current and window:
        raise typer.BadParameter("give either --window or --current, not both")
    now = datetime.now(UTC)
    entry = load_entry(model or f"{settings.dataset}:champion")
    contract = entry.contract

    if current:
        from kernel.ingest import read_table

        raw = read_table(current)
        source = str(current)
    else:
        from service.inference_log import read_inference_log

        span = parse_window(window or settings.drift.window)
        log_dir = _log_dir(settings, inference_log)
        raw = read_inference_log(log_dir, start=now - span, end=now)
        source = f"{log_dir} from {(now - span).isoformat(timespec='seconds')}"
    prepared = prepare_current(raw, contract, entry.model, entry.version)
    if prepared.rejected_rows:
        typer.echo(f"ignored {prepared.rejected_rows} current rows that break the contract",
                   err=True)

    columns = [*contract.features, PROBABILITY_COLUMN]
    reference = entry.reference
    run = detect_drift(reference[columns], prepared.frame, contract,
                       entry.metadata.categories, settings.drift)
    calibration = check_calibration(
        reference[contract.target.column].to_numpy(), reference[PROBABILITY_COLUMN].to_numpy(),
        settings.estimate.max_reference_calibration_error, settings.estimate.calibration_bins)
    estimate = None
    if not run.result.insufficient_data:
        if calibration.calibrated:
            estimate = estimate_performance(prepared.frame[PROBABILITY_COLUMN].to_numpy(),
                                            entry.metadata.threshold)
        else:
            typer.echo(f"no performance estimate: the reference probabilities are not "
                       f"calibrated (error {calibration.calibration_error:.3f} > "
                       f"{calibration.max_calibration_error:.3f})", err=True)
    result = DriftJobResult(
        run_at=now.isoformat(timespec="seconds"), model_tag=entry.tag,
        model_version=entry.version, current_source=source,
        rejected_rows=prepared.rejected_rows, rescored_rows=prepared.rescored_rows,
        drift=run.result, reference_roc_auc=entry.metadata.metrics.roc_auc,
        reference_calibration=calibration, estimate=estimate,
    )
    lines = _drift_lines(result)
    directory = _report_dir(settings, report_dir)
    files = write_report(directory, "drift", entry.version, result, now, run.snapshot, lines)
    prune_reports(directory, settings.reports.retention_days, now)
    for line in lines:
        typer.echo(line)
    typer.echo(f"report: {files.html_path} (+ .json)")
    if not no_push:
        push_metrics(drift_registry(result, time.time()), DRIFT_JOB, entry.version,
                     settings.pushgateway)
        typer.echo(f"pushed {DRIFT_JOB} metrics to {settings.pushgateway.url}")


def _drift_lines(result) -> list[str]:
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


def performance(
    labels: Annotated[str, typer.Option(
        "--labels", help="Ground truth: CSV/Parquet/SQL with the contract's id and target "
        "columns and observed_at.")],
    window: Annotated[str | None, typer.Option(
        help="Judge predictions logged in this last period; default performance.window.")] = None,
    breakdown: Annotated[str | None, typer.Option(
        help="Per-window table in the report (e.g. 1d, 7d); default performance.breakdown.")
    ] = None,
    inference_log: Annotated[Path | None, typer.Option("--inference-log", help=LOG_HELP)] = None,
    dataset: Annotated[str | None, typer.Option(
        help="Dataset (model name) whose contract names the id and target columns; default "
        "from the config.")] = None,
    pushgateway: Annotated[str | None, typer.Option("--pushgateway", help=PUSH_HELP)] = None,
    no_push: Annotated[bool, typer.Option("--no-push", help=NO_PUSH_HELP)] = False,
    report_dir: Annotated[Path | None, typer.Option("--report-dir", help=REPORT_HELP)] = None,
    config: Annotated[Path, typer.Option("--config", help=CONFIG_HELP)] = DEFAULT_CONFIG,
) -> None:
    """Join late labels to the logged predictions; measure ROC-AUC, precision, recall and
    calibration per model version and window; compare with the stored test metrics; write the
    reports and push churn_measured_* gauges. Exit 0 after a run, 2 on errors."""
    from datetime import timedelta

    from kernel.ingest import read_table
    from kernel.store import StoreError, load_entry
    from monitoring.config import parse_window
    from monitoring.performance import (
        PerformanceJobResult,
        join_labels,
        measure_performance,
        parse_labels,
    )
    from monitoring.push import PERFORMANCE_JOB, performance_registry, push_metrics
    from monitoring.reports import prune_reports, write_report
    from service.inference_log import read_inference_log

    _logging()
    settings = _settings(config, pushgateway)
    name = dataset or settings.dataset
    contract = load_entry(f"{name}:champion").contract
    now = datetime.now(UTC)
    span = parse_window(window or settings.performance.window)
    step = parse_window(breakdown or settings.performance.breakdown)
    observed_at = settings.performance.observed_at_column
    truth = parse_labels(read_table(labels), contract.id, contract.target.column, observed_at)
    predictions = read_inference_log(_log_dir(settings, inference_log), start=now - span, end=now)
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
    directory = _report_dir(settings, report_dir)
    files = write_report(directory, "performance", "all", result, now, headline=lines)
    prune_reports(directory, settings.reports.retention_days, now)
    for line in lines:
        typer.echo(line)
    typer.echo(f"report: {files.json_path} (+ .html)")
    if not no_push:
        for v in measured:
            push_metrics(performance_registry(v, time.time()), PERFORMANCE_JOB, v.model_version,
                         settings.pushgateway)
        if measured:
            typer.echo(f"pushed {PERFORMANCE_JOB} metrics to {settings.pushgateway.url}")


def retrain_check(
    model: Annotated[str | None, typer.Option("--model", help=MODEL_HELP)] = None,
    margin: Annotated[float | None, typer.Option(
        "--margin", help="ROC-AUC drop below the stored test ROC-AUC that triggers; default "
        "retrain.performance_margin (0.05).")] = None,
    max_age_days: Annotated[float | None, typer.Option(
        "--max-age-days", help="Older models are retrained; default retrain.max_age_days "
        "(30).")] = None,
    pushgateway: Annotated[str | None, typer.Option("--pushgateway", help=PUSH_HELP)] = None,
    no_push: Annotated[bool, typer.Option("--no-push", help=NO_PUSH_HELP)] = False,
    report_dir: Annotated[Path | None, typer.Option(
        "--report-dir", help="Folder of the drift and performance reports (read) and of this "
        "check's report (written); default as for `churn drift`.")] = None,
    config: Annotated[Path, typer.Option("--config", help=CONFIG_HELP)] = DEFAULT_CONFIG,
) -> None:
    """Recommend retraining from the newest drift and performance reports and the model's
    age. Exit 0: no retrain; 10: retrain recommended (reasons printed, pushed as
    churn_retrain_*); 2: error. A CronJob runs `churn train` on exit code 10."""
    from datetime import timedelta

    from kernel.store import load_entry
    from monitoring.drift import DriftJobResult
    from monitoring.performance import PerformanceJobResult
    from monitoring.push import RETRAIN_JOB, push_metrics, retrain_registry
    from monitoring.reports import latest_report, prune_reports, write_report
    from monitoring.retrain import RetrainEvidence, decide_retrain

    _logging()
    settings = _settings(config, pushgateway)
    now = datetime.now(UTC)
    entry = load_entry(model or f"{settings.dataset}:champion")
    directory = _report_dir(settings, report_dir)
    not_before = now - timedelta(hours=settings.retrain.max_report_age_hours)
    evidence = RetrainEvidence(model_tag=entry.tag, model_version=entry.version,
                               trained_at=entry.metadata.trained_at,
                               reference_roc_auc=entry.metadata.metrics.roc_auc)

    drift_path = latest_report(directory, "drift", entry.version, not_before)
    if drift_path is not None:
        found = DriftJobResult.model_validate_json(drift_path.read_text())
        if not found.drift.insufficient_data:
            evidence.drift_detected = found.drift.drift_detected
            evidence.drift_report = drift_path.name
        if found.estimate is not None:
            evidence.estimated_roc_auc = found.estimate.roc_auc
    performance_path = latest_report(directory, "performance", "all", not_before)
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
                     f"{settings.retrain.max_report_age_hours:g}h in {directory}: "
                     "only the model's age was checked)")
    write_report(directory, "retrain", entry.version, decision, now, headline=lines)
    prune_reports(directory, settings.reports.retention_days, now)
    for line in lines:
        typer.echo(line)
    if not no_push:
        push_metrics(retrain_registry(decision, time.time()), RETRAIN_JOB, entry.version,
                     settings.pushgateway)
        typer.echo(f"pushed {RETRAIN_JOB} metrics to {settings.pushgateway.url}")
    raise typer.Exit(decision.exit_code)


def register(app: typer.Typer) -> None:
    """Add this package's commands to the root app."""
    app.command("drift")(drift)
    app.command("performance")(performance)
    app.command("retrain-check")(retrain_check)
    from monitoring.stack import monitor  # `make monitor`: local Prometheus + Pushgateway

    app.command("monitor")(monitor)
    from monitoring.log_cli import register as register_log_commands  # `churn log compact`
    register_log_commands(app)
