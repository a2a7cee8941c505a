"""`churn drill`: break the system in each way churn systems fail and report where each failure
was caught. Thin wiring: read configs/drill.yaml, isolate the drill's state, run, write the
report. Exit 0 only when every scenario was caught; 1 when one was not; 2 on errors."""

from __future__ import annotations

import logging
import shutil
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, NoReturn

import typer

from drill import CONFIG_NAME


def _quiet_logging() -> None:
    # The drill prints its own progress; the libraries' INFO lines would bury it.
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s",
                        datefmt="%H:%M:%S", stream=sys.stderr)
    for noisy in ("mlflow", "alembic", "bentoml", "evidently", "httpx", "churn"):
        logging.getLogger(noisy).setLevel(logging.ERROR)


def _fail(exc: Exception) -> NoReturn:
    typer.echo(f"error: {type(exc).__name__}: {exc}", err=True)
    raise typer.Exit(2)


def drill(
    names: Annotated[list[str] | None, typer.Argument(
        help="Scenarios or groups (training, serving, monitoring, canary) to run; default: "
        "all, in the drill's order.", show_default=False)] = None,
    list_only: Annotated[bool, typer.Option(
        "--list", help="Name every scenario (group, failure, guard) and exit.")] = False,
    report_dir: Annotated[Path | None, typer.Option(
        "--report-dir", help="Where drill.json, drill.md and drill.html go; default "
        "$CHURN_HOME/drill/<UTC stamp>/.")] = None,
    workdir: Annotated[Path | None, typer.Option(
        "--workdir", help="The drill's own state (model store, MLflow database, inference "
        "logs, server and Prometheus logs); default a temporary folder. Never your "
        "$CHURN_HOME's store.")] = None,
    keep_workdir: Annotated[bool, typer.Option(
        "--keep-workdir", help="Keep the work folder even when every scenario was caught "
        "(it is always kept when one was not, to look at).")] = False,
    config: Annotated[Path | None, typer.Option(
        "--config", help=f"Drill config YAML: table sizes, traffic, time scale of the alerts; "
        f"default configs/{CONFIG_NAME} of the working directory, else of the project, else "
        "built-in defaults (the first line says which).")] = None,
) -> None:
    """Break the running system (training, serving, monitoring, canary) in each way churn
    systems fail, on real parts of this machine, and report which guard caught each failure,
    how fast, and that nothing was lost or wrongly changed. Exit 0 when every scenario was
    caught, 1 when one was not (its work folder is kept), 2 on a bad name or config."""
    from drill.runner import UnknownScenario, select

    try:
        scenarios = select(names)
    except UnknownScenario as exc:
        _fail(exc)
    if list_only:
        for scenario in scenarios:
            typer.echo(f"{scenario.name:<18} {scenario.group:<11} {scenario.failure}\n"
                       f"{'':<30}caught by: {scenario.guard}")
        return

    from drill.config import DrillConfig
    from kernel.config_files import ConfigNotFound
    from kernel.paths import churn_home

    try:
        found = DrillConfig.find(config)
        settings = DrillConfig.from_yaml(found.path)
    except (ValueError, ConfigNotFound) as exc:
        _fail(exc)
    typer.echo(found.describe())
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    report_dir = (report_dir or churn_home() / "drill" / stamp).resolve()
    temporary = workdir is None
    workdir = (workdir or Path(tempfile.mkdtemp(prefix="churn-drill-"))).resolve()

    from drill.report import write_report
    from drill.runner import run_drill
    from drill.system import DrillSetupError, DrillSystem

    _quiet_logging()
    system = DrillSystem(settings, workdir, say=typer.echo)
    try:
        system.isolate()  # before anything imports BentoML
    except DrillSetupError as exc:
        _fail(exc)
    typer.echo(f"churn drill: {len(scenarios)} scenario(s); state in {workdir}")
    command = "churn drill" + "".join(f" {name}" for name in names or [])
    report = run_drill(scenarios, system, command, typer.echo)
    paths = write_report(report, report_dir)
    typer.echo(f"{report.headline()}; report: {paths[1]} (+ .json, .html)")
    if report.all_caught and temporary and not keep_workdir:
        shutil.rmtree(workdir, ignore_errors=True)
    else:
        typer.echo(f"work folder kept: {workdir}")
    if not report.all_caught:
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    app.command("drill")(drill)
