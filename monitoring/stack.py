"""Run Prometheus and the Pushgateway locally, beside the service (`churn monitor`, tests).

The project's ``monitoring/prometheus/prometheus.yml`` names docker-compose hosts; here it is
rendered with local targets (and, for tests, short intervals) into the work folder, with the
rules file referenced in place so edits to ``rules.yml`` need only a reload. The binaries are
the Debian packages ``prometheus`` and ``prometheus-pushgateway`` (upstream names work too).
Nothing is installed as a system service: the processes are ours, stopped by ``stop()``.
"""

from __future__ import annotations

import copy
import logging
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Annotated

import typer
import yaml

from kernel.processes import (
    ManagedProcess,
    ProcessError,
    free_port,
    http_ok,
    port_in_use,
    run_until_stopped,
    start_process,
)

log = logging.getLogger(__name__)

PROMETHEUS_DIR = Path(__file__).parent / "prometheus"
PROMETHEUS_CONFIG = PROMETHEUS_DIR / "prometheus.yml"
SERVICE_JOB = "churn-service"
PUSHGATEWAY_JOB = "pushgateway"
PROMETHEUS_BINARIES = ("prometheus",)
PUSHGATEWAY_BINARIES = ("prometheus-pushgateway", "pushgateway")
INSTALL_HINT = "install them with `apt-get install -y prometheus prometheus-pushgateway`"


class StackError(ProcessError):
    """A binary is missing, a port is taken, or a process did not come up."""


@dataclass(frozen=True)
class ScrapeTarget:
    """One host:port to scrape, with labels Prometheus adds to its series: ``track`` (stable |
    canary) here plays the part of the pod label a ServiceMonitor copies in Kubernetes."""

    address: str
    labels: dict[str, str] = field(default_factory=dict)

    def static_config(self) -> dict:
        return {"targets": [self.address], **({"labels": dict(self.labels)} if self.labels
                                               else {})}


def render_prometheus_config(
    config: dict,
    *,
    targets: dict[str, str | list[ScrapeTarget]],
    rules_dir: Path,
    scrape_interval: str | None = None,
    evaluation_interval: str | None = None,
) -> dict:
    """Return a copy of ``config`` with the static targets of the named jobs replaced
    (``{"churn-service": "localhost:3000"}``, or a list of labelled ScrapeTargets), rule files
    made absolute against ``rules_dir``, and optionally other global intervals. Raises
    ValueError for a job the config lacks."""
    rendered = copy.deepcopy(config)
    jobs = {job["job_name"]: job for job in rendered.get("scrape_configs", [])}
    for job_name, target in targets.items():
        if job_name not in jobs:
            raise ValueError(f"prometheus config has no scrape job {job_name!r}")
        scraped = [ScrapeTarget(target)] if isinstance(target, str) else list(target)
        if not scraped:
            raise ValueError(f"scrape job {job_name!r} needs at least one target")
        jobs[job_name]["static_configs"] = [t.static_config() for t in scraped]
    rendered["rule_files"] = [
        str((rules_dir / rule_file).resolve()) for rule_file in rendered.get("rule_files", [])
    ]
    global_section = rendered.setdefault("global", {})
    if scrape_interval:
        global_section["scrape_interval"] = scrape_interval
        # A scrape must finish within its interval.
        global_section["scrape_timeout"] = scrape_interval
    if evaluation_interval:
        global_section["evaluation_interval"] = evaluation_interval
    return rendered


@dataclass
class RunningStack:
    """Prometheus and Pushgateway processes started by ``start_stack``."""

    prometheus_url: str
    pushgateway_url: str
    workdir: Path
    processes: dict[str, ManagedProcess] = field(default_factory=dict)

    def stop(self, timeout: float = 10.0) -> None:
        """Terminate what was started (SIGTERM, then SIGKILL after ``timeout``)."""
        for process in reversed(list(self.processes.values())):
            process.stop(timeout=timeout)
        self.processes.clear()

    def check_alive(self) -> None:
        """Raise StackError if a process has exited on its own."""
        for process in self.processes.values():
            if not process.running():
                raise StackError(f"{process.name} exited with code {process.popen.returncode}: "
                                 f"{_log_tail(process.log_path)}")

    def __enter__(self) -> RunningStack:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


def start_stack(
    workdir: Path,
    *,
    service_target: str = "localhost:3000",
    service_targets: list[ScrapeTarget] | None = None,
    host: str = "127.0.0.1",
    prometheus_port: int = 9090,
    pushgateway_port: int = 9091,
    scrape_interval: str | None = None,
    evaluation_interval: str | None = None,
    config_path: Path = PROMETHEUS_CONFIG,
    ready_timeout: float = 30.0,
) -> RunningStack:
    """Start the Pushgateway, then Prometheus scraping it and ``service_target`` (or every
    labelled target of ``service_targets``, e.g. a stable and a canary service), with state
    and logs under ``workdir``; return once both answer ``/-/ready``. Port 0 picks a free
    port. Raises StackError when a binary is missing, a port is in use or a process fails."""
    prometheus_bin = _find_binary(PROMETHEUS_BINARIES)
    pushgateway_bin = _find_binary(PUSHGATEWAY_BINARIES)
    prometheus_port = prometheus_port or free_port(host)
    pushgateway_port = pushgateway_port or free_port(host)
    for port in (prometheus_port, pushgateway_port):
        _ensure_port_free(host, port)

    workdir.mkdir(parents=True, exist_ok=True)
    config = yaml.safe_load(config_path.read_text())
    rendered = render_prometheus_config(
        config,
        targets={SERVICE_JOB: service_targets or service_target,
                 PUSHGATEWAY_JOB: f"{host}:{pushgateway_port}"},
        rules_dir=config_path.parent,
        scrape_interval=scrape_interval,
        evaluation_interval=evaluation_interval,
    )
    rendered_path = workdir / "prometheus.yml"
    rendered_path.write_text(yaml.safe_dump(rendered, sort_keys=False))

    stack = RunningStack(
        prometheus_url=f"http://{host}:{prometheus_port}",
        pushgateway_url=f"http://{host}:{pushgateway_port}",
        workdir=workdir,
    )
    try:
        stack.processes["pushgateway"] = _start(workdir, "pushgateway", [
            pushgateway_bin,
            f"--web.listen-address={host}:{pushgateway_port}",
            # Pushed results survive a restart, as a deployed Pushgateway's should.
            f"--persistence.file={workdir / 'pushgateway.db'}",
        ], stack.pushgateway_url, ready_timeout)
        stack.processes["prometheus"] = _start(workdir, "prometheus", [
            prometheus_bin,
            f"--config.file={rendered_path}",
            f"--storage.tsdb.path={workdir / 'prometheus-data'}",
            f"--web.listen-address={host}:{prometheus_port}",
            "--web.enable-lifecycle",  # POST /-/reload picks up edited rules
        ], stack.prometheus_url, ready_timeout)
    except BaseException:
        stack.stop()
        raise
    return stack


def _find_binary(candidates: tuple[str, ...]) -> str:
    for name in candidates:
        found = shutil.which(name)
        if found:
            return found
    raise StackError(f"none of {', '.join(candidates)} is on PATH: {INSTALL_HINT}")


def _ensure_port_free(host: str, port: int) -> None:
    # Otherwise the readiness check could succeed against someone else's server.
    if port_in_use(host, port):
        raise StackError(f"port {port} on {host} is already in use: choose another port")


def _start(workdir: Path, name: str, command: list[str], url: str,
           timeout: float) -> ManagedProcess:
    try:
        return start_process(command, name=name, log_path=workdir / f"{name}.log",
                             ready=lambda: http_ok(f"{url}/-/ready"), timeout=timeout)
    except ProcessError as exc:
        raise StackError(str(exc)) from exc


def _log_tail(path: Path, lines: int = 5) -> str:
    if not path.exists():
        return "(no log)"
    return " | ".join(path.read_text(errors="replace").strip().splitlines()[-lines:])


def monitor(
    service: Annotated[str, typer.Option(help="host:port of the running service whose "
                                         "/metrics Prometheus scrapes.")] = "localhost:3000",
    canary: Annotated[str | None, typer.Option(
        help="host:port of a canary service: both are then scraped with a track label "
        "(stable, canary), as in Kubernetes, for churn canary analyze.")] = None,
    prometheus_port: Annotated[int, typer.Option(help="0 = any free port.")] = 9090,
    pushgateway_port: Annotated[int, typer.Option(help="0 = any free port.")] = 9091,
    workdir: Annotated[Path | None, typer.Option(
        help="State and logs; default $CHURN_HOME/monitor.")] = None,
) -> None:
    """Run Prometheus (with the project's alert rules) and the Pushgateway until Ctrl-C."""
    from kernel.paths import churn_home

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    workdir = workdir or churn_home() / "monitor"
    targets = None
    if canary:
        targets = [ScrapeTarget(service, {"track": "stable"}),
                   ScrapeTarget(canary, {"track": "canary"})]
    stack = start_stack(workdir, service_target=service, service_targets=targets,
                        prometheus_port=prometheus_port, pushgateway_port=pushgateway_port)
    scraping = f"http://{service}/metrics"
    if canary:
        scraping += f" (track=stable) and http://{canary}/metrics (track=canary)"
    typer.echo(
        f"Prometheus   {stack.prometheus_url}  (alerts: {stack.prometheus_url}/alerts, "
        f"targets: {stack.prometheus_url}/targets)\n"
        f"Pushgateway  {stack.pushgateway_url}  (churn drift --pushgateway "
        f"{stack.pushgateway_url})\n"
        f"Scraping     {scraping}\n"
        f"State, logs  {workdir}\n"
        "Grafana needs Docker: `docker compose up` serves the dashboards on http://localhost:3001\n"
        "Ctrl-C stops both."
    )
    run_until_stopped(stack, "Prometheus and the Pushgateway")
