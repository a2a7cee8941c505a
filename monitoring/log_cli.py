"""`churn log compact`: thin wiring around monitoring/log_retention.py, run by a CronJob."""

from __future__ import annotations

import logging
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer

log_app = typer.Typer(no_args_is_help=True, help="Look after the inference log's files.")


@log_app.command("compact")
def compact(
    inference_log: Annotated[Path | None, typer.Option(
        "--inference-log", help="Inference log folder written by the service; default "
        "inference_log_dir from the config, else $CHURN_HOME/inference_log.")] = None,
    dry_run: Annotated[bool, typer.Option(
        "--dry-run", help="Say what would be compacted and removed; change nothing, push "
        "nothing.")] = False,
    pushgateway: Annotated[str | None, typer.Option(
        "--pushgateway", help="Pushgateway URL; default pushgateway.url from the config.")
    ] = None,
    no_push: Annotated[bool, typer.Option("--no-push", help="Push no metrics.")] = False,
    config: Annotated[Path | None, typer.Option(
        "--config", help="Monitoring config YAML (its log_retention section); default "
        "configs/monitoring.yaml of the working directory, else of the project, else built-in "
        "defaults (the first log line says which).")] = None,
) -> None:
    """Compact closed inference-log files to Parquet, then remove files by age and by total
    size, never one holding records of the drift window (log_retention in the config).
    Safe to run twice at once. Prints one summary line; pushes churn_inference_log_* gauges
    (job churn_log_retention). Exit 0 after a run, also when the folder stays over its size
    limit (then said loudly, and churn_inference_log_over_limit=1); 2 on errors: a bad config,
    a file that could not be compacted (kept as it is), the Pushgateway unreachable."""
    from kernel import paths
    from monitoring.config import MonitoringConfig
    from monitoring.log_retention import (
        JOB,
        RetentionPolicy,
        maintain_log,
        maintenance_registry,
        summary_line,
    )

    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s",
                        datefmt="%H:%M:%S", stream=sys.stderr)
    logging.getLogger("churn.config").setLevel(logging.INFO)
    settings = MonitoringConfig.locate(config)
    if pushgateway:
        settings.pushgateway.url = pushgateway
    directory = inference_log or settings.inference_log_dir or paths.inference_log_dir()
    result = maintain_log(directory, RetentionPolicy.from_config(settings), datetime.now(UTC),
                          dry_run=dry_run)
    typer.echo(summary_line(result))
    for failure in result.failures:
        typer.echo(f"could not compact {failure}", err=True)
    if not (dry_run or no_push):
        from monitoring.push import push_metrics

        # One group for the whole folder: the log is shared by every model version.
        push_metrics(maintenance_registry(result, time.time()), JOB, "all",
                     settings.pushgateway)
    if result.failures:
        raise typer.Exit(2)


def register(app: typer.Typer) -> None:
    """Add `churn log ...` to the root app."""
    app.add_typer(log_app, name="log")
