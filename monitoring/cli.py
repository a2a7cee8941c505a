"""`churn drift | performance | retrain-check`: thin wrappers around ``monitoring.jobs``.

Each command reads configs/monitoring.yaml, runs its job (which writes the reports before it
pushes, so an unreachable gateway loses no result), prints what it found and exits with the
job's code: 2 on errors, including a failed push. Exit codes: docs/monitoring.md.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Annotated

import typer

from kernel.cluster import DEFAULT_CONNECT_TIMEOUT, SCHEDULER_ENV
from monitoring.k8s_assets import k8s_app

CONFIG_HELP = ("Monitoring config YAML; default configs/monitoring.yaml of the working directory, "
               "else of the project, else built-in defaults (the first log line says which).")
MODEL_HELP = ("Model tag name:version (or name for its champion); default $CHURN_MODEL_TAG, else "
              "the champion of the config's dataset, else of the only dataset in the store.")
PUSH_HELP = "Pushgateway URL; default pushgateway.url from the config."
NO_PUSH_HELP = "Write the reports only; push nothing."
REPORT_HELP = "Folder for the HTML/JSON reports; default report_dir, else $CHURN_HOME/reports."
LOG_HELP = ("Inference log folder written by the service; default inference_log_dir, else "
            "$CHURN_HOME/inference_log.")


def _logging() -> None:
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s",
                        datefmt="%H:%M:%S", stream=sys.stderr)
    logging.getLogger("churn").setLevel(logging.INFO)


def _settings(config: Path | None, pushgateway: str | None):
    from monitoring.config import MonitoringConfig

    settings = MonitoringConfig.locate(config)
    if pushgateway:
        settings.pushgateway.url = pushgateway
    return settings


def _report_dir(settings, report_dir: Path | None) -> Path:
    from kernel import paths

    return report_dir or settings.report_dir or paths.report_dir()


def _log_dir(settings, inference_log: Path | None) -> Path:
    from kernel import paths

    return inference_log or settings.inference_log_dir or paths.inference_log_dir()


def _finish(outcome) -> None:
    """Print the job's findings, then fail (exit 2) if the push failed, else exit its code."""
    for warning in outcome.warnings:
        typer.echo(warning, err=True)
    for line in outcome.lines:
        typer.echo(line)
    typer.echo(f"report: {outcome.report.json_path} (+ .html)")
    if outcome.push_error is not None:
        raise outcome.push_error
    if outcome.pushed_to:
        typer.echo(f"pushed metrics to {outcome.pushed_to}")
    if outcome.exit_code:
        raise typer.Exit(outcome.exit_code)


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
    config: Annotated[Path | None, typer.Option("--config", help=CONFIG_HELP)] = None,
    dask: Annotated[str | None, typer.Option(
        "--dask", envvar=SCHEDULER_ENV, metavar="[ADDRESS]",
        help="Count the current rows on Dask, one task per inference-log file (or per piece "
        "of --current files): PSI, missing and unseen shares and the prediction distribution "
        "over every row, Evidently on a uniform sample of drift.evidently_sample_rows. "
        "--dask alone (or 'local'): a LocalCluster sized to this machine; --dask "
        "tcp://host:8786: a running scheduler whose workers see the log folder. "
        "docs/scale.md.")] = None,
    dask_timeout: Annotated[float, typer.Option(
        "--dask-timeout", min=0.1, help="Seconds to wait for the Dask scheduler to answer; "
        "then exit 2 with no report written.")] = DEFAULT_CONNECT_TIMEOUT,
) -> None:
    """Compare current data with the model's reference sample (Evidently + PSI), estimate
    performance without labels, write the reports and push churn_drift_* gauges.
    Exit 0 after a run (drift or not, or insufficient data); 2 on errors (also when the
    Pushgateway stays unreachable: the reports are written first)."""
    from monitoring.jobs import drift_job

    _logging()
    settings = _settings(config, pushgateway)
    if min_rows is not None:
        settings.drift.min_rows = min_rows
    if current and window:
        raise typer.BadParameter("give either --window or --current, not both")
    _finish(drift_job(settings, model=model, window=window, current=current,
                      log_dir=_log_dir(settings, inference_log),
                      report_dir=_report_dir(settings, report_dir), push=not no_push,
                      dask=dask, dask_timeout=dask_timeout))


def performance(
    labels: Annotated[str, typer.Option(
        "--labels", envvar="CHURN_LABELS", help="Ground truth: CSV/Parquet/SQL with the "
        "contract's id and target columns and observed_at. A URL with a password belongs in "
        "the environment variable, not on the command line, where other users of the machine "
        "can read it.")],
    model: Annotated[str | None, typer.Option(
        "--model", help="Model whose contract names the id and target columns (every logged "
        "version of its dataset is measured). " + MODEL_HELP)] = None,
    window: Annotated[str | None, typer.Option(
        help="Judge predictions logged in this last period; default performance.window.")] = None,
    breakdown: Annotated[str | None, typer.Option(
        help="Per-window table in the report (e.g. 1d, 7d); default performance.breakdown.")
    ] = None,
    inference_log: Annotated[Path | None, typer.Option("--inference-log", help=LOG_HELP)] = None,
    pushgateway: Annotated[str | None, typer.Option("--pushgateway", help=PUSH_HELP)] = None,
    no_push: Annotated[bool, typer.Option("--no-push", help=NO_PUSH_HELP)] = False,
    report_dir: Annotated[Path | None, typer.Option("--report-dir", help=REPORT_HELP)] = None,
    config: Annotated[Path | None, typer.Option("--config", help=CONFIG_HELP)] = None,
) -> None:
    """Join late labels to the logged predictions; measure ROC-AUC, precision, recall and
    calibration per model version and window; compare with the stored test metrics; write the
    reports and push churn_measured_* gauges. Exit 0 after a run, 2 on errors."""
    from monitoring.jobs import performance_job

    _logging()
    settings = _settings(config, pushgateway)
    _finish(performance_job(settings, labels=labels, model=model, window=window,
                            breakdown=breakdown, log_dir=_log_dir(settings, inference_log),
                            report_dir=_report_dir(settings, report_dir), push=not no_push))


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
    config: Annotated[Path | None, typer.Option("--config", help=CONFIG_HELP)] = None,
) -> None:
    """Recommend retraining from the newest drift and performance reports and the model's
    age. Exit 0: no retrain; 10: retrain recommended (reasons printed, pushed as
    churn_retrain_*); 2: error. A CronJob runs `churn train` on exit code 10."""
    from monitoring.jobs import retrain_check_job

    _logging()
    settings = _settings(config, pushgateway)
    _finish(retrain_check_job(settings, model=model, margin=margin, max_age_days=max_age_days,
                              report_dir=_report_dir(settings, report_dir), push=not no_push))


def register(app: typer.Typer) -> None:
    """Add this package's commands to the root app."""
    app.command("drift")(drift)
    app.command("performance")(performance)
    app.command("retrain-check")(retrain_check)
    from monitoring.stack import monitor  # `make monitor`: local Prometheus + Pushgateway

    app.command("monitor")(monitor)
    from monitoring.log_cli import register as register_log_commands  # `churn log compact`
    register_log_commands(app)
    app.add_typer(k8s_app, name="k8s")  # `churn k8s generate`: what k8s/ needs from elsewhere
