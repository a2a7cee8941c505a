"""A local PostgreSQL cluster and an MLflow tracking server on it (`churn mlflow-server`,
`make mlflow`), and the same PostgreSQL starter for the tests.

What a team runs is an MLflow tracking server several jobs share, backed by a database, with
artifacts uploaded through the server (``--serve-artifacts``), so no client needs the server's
disk. This module gives that shape on one machine: PostgreSQL from the Debian ``postgresql``
package (a cluster of our own under ``$CHURN_HOME/postgres``, not the system service) and
``mlflow server`` on it, both our child processes, stopped together.

PostgreSQL refuses to run as root, so as root (sessions and CI are) its commands run as the
``postgres`` user the package creates. The cluster trusts connections from loopback only: it is
a development server, not a place for credentials (docs/state.md).
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Annotated

import typer

from kernel.processes import (
    ManagedProcess,
    ProcessError,
    free_port,
    http_ok,
    port_in_use,
    run_until_stopped,
    start_process,
)

log = logging.getLogger("churn.mlflow_server")

POSTGRES_INSTALL_HINT = "install them with `apt-get install -y postgresql`"
POSTGRES_SUPERUSER = "postgres"
MLFLOW_DATABASE = "mlflow"


class ServerSetupError(ProcessError):
    """A binary is missing, a port is taken, or a server did not come up."""


def postgres_bin_dir() -> Path:
    """The folder holding ``initdb`` and ``postgres``: PATH first, then the newest Debian
    ``/usr/lib/postgresql/<major>/bin``. Raises ServerSetupError with the install command."""
    found = shutil.which("initdb")
    if found:
        return Path(found).resolve().parent
    versions = sorted(
        (p for p in Path("/usr/lib/postgresql").glob("*/bin") if (p / "initdb").is_file()),
        key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
    )
    if not versions:
        raise ServerSetupError(
            "PostgreSQL server binaries (initdb, postgres) not found on PATH or in "
            f"/usr/lib/postgresql/*/bin: {POSTGRES_INSTALL_HINT}"
        )
    return versions[-1]


@dataclass
class LocalPostgres:
    """A PostgreSQL cluster we started: data in ``root/data``, socket in ``root/run``."""

    root: Path
    host: str
    port: int
    process: ManagedProcess

    def url(self, database: str = "postgres") -> str:
        """SQLAlchemy URL (psycopg 3 driver) of ``database``, as the superuser, no password."""
        return f"postgresql+psycopg://{POSTGRES_SUPERUSER}@{self.host}:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        """Create ``name`` if it does not exist yet; returns its URL."""
        import psycopg

        if not re.fullmatch(r"[a-z_][a-z0-9_]*", name):
            raise ValueError(f"database name {name!r}: use lower-case letters, digits, _")
        with psycopg.connect(_libpq(self.url()), autocommit=True) as conn:
            exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s",
                                  (name,)).fetchone()
            if not exists:
                conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def stop(self, timeout: float = 30.0) -> None:
        # SIGINT is PostgreSQL's "fast" shutdown: it does not wait for clients to disconnect
        # (SIGTERM would wait for every idle pooled connection of a still-running client).
        self.process.stop(signal.SIGINT, timeout)

    def __enter__(self) -> LocalPostgres:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


def start_postgres(root: Path, *, port: int = 0, host: str = "127.0.0.1",
                   durable: bool = True, timeout: float = 60.0) -> LocalPostgres:
    """Start a PostgreSQL cluster under ``root`` (initdb on first use) on ``port`` (0: a free
    one) and return once it accepts connections. ``durable=False`` turns off fsync, for
    throwaway test clusters. Raises ServerSetupError when the binaries are missing, the port
    is taken or the server does not come up."""
    bin_dir = postgres_bin_dir()
    port = port or free_port(host)
    if port_in_use(host, port):
        raise ServerSetupError(f"port {port} on {host} is already in use: choose another port")
    root = root.resolve()
    data, run = root / "data", root / "run"
    user = POSTGRES_SUPERUSER if os.geteuid() == 0 else None
    for folder in (root, data, run):
        folder.mkdir(parents=True, exist_ok=True)
        if user:
            shutil.chown(folder, user, user)
    data.chmod(0o700)  # PostgreSQL refuses a data folder others can read
    if not (data / "PG_VERSION").exists():
        _initdb(bin_dir, data, user)
    command = [str(bin_dir / "postgres"), "-D", str(data), "-p", str(port), "-k", str(run),
               "-c", f"listen_addresses={host}"]
    if not durable:
        command += ["-c", "fsync=off", "-c", "synchronous_commit=off",
                    "-c", "full_page_writes=off"]
    url = f"postgresql://{POSTGRES_SUPERUSER}@{host}:{port}/postgres"
    try:
        process = start_process(command, name="postgres", log_path=root / "postgres.log",
                                ready=lambda: _accepts_connections(url), timeout=timeout,
                                user=user, cwd=root)
    except ProcessError as exc:
        raise ServerSetupError(f"PostgreSQL did not start{_access_hint(root, user)}: "
                               f"{exc}") from exc
    return LocalPostgres(root, host, port, process)


def _initdb(bin_dir: Path, data: Path, user: str | None) -> None:
    log.info("initdb %s (first use)", data)
    result = subprocess.run(
        [str(bin_dir / "initdb"), "-D", str(data), "-U", POSTGRES_SUPERUSER, "-A", "trust",
         "-E", "UTF8", "--no-locale"],
        capture_output=True, text=True, user=user, cwd=data.parent, check=False,
    )
    if result.returncode != 0:
        tail = " | ".join((result.stderr or result.stdout).strip().splitlines()[-3:])
        raise ServerSetupError(f"initdb {data} failed{_access_hint(data, user)}: {tail}")


def _access_hint(path: Path, user: str | None) -> str:
    if not user:
        return ""
    # The server runs as `postgres`: every folder above the cluster must let it pass.
    closed = [str(p) for p in path.parents if p.exists() and not p.stat().st_mode & 0o001]
    return f" (the {user} user cannot enter {closed[0]}: chmod o+x it)" if closed else ""


def _accepts_connections(url: str) -> bool:
    import psycopg

    try:
        with psycopg.connect(url, connect_timeout=2):
            return True
    except psycopg.OperationalError:
        return False


def _libpq(url: str) -> str:
    """libpq takes ``postgresql://``, not SQLAlchemy's ``postgresql+psycopg://``."""
    return re.sub(r"^postgresql\+\w+://", "postgresql://", url)


@dataclass
class TrackingServer:
    """``mlflow server`` on a database, serving artifacts; its PostgreSQL when we started it."""

    url: str
    backend_uri: str
    artifacts: Path
    process: ManagedProcess
    postgres: LocalPostgres | None = None
    _stopped: bool = field(default=False, repr=False)

    def check_alive(self) -> None:
        self.process.check_alive()
        if self.postgres:
            self.postgres.process.check_alive()

    def stop(self) -> None:
        """MLflow first (it holds connections), then PostgreSQL."""
        if self._stopped:
            return
        self._stopped = True
        self.process.stop(timeout=20)
        if self.postgres:
            self.postgres.stop()

    def __enter__(self) -> TrackingServer:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


def start_mlflow_server(backend_uri: str, artifacts: Path, log_path: Path, *,
                        host: str = "127.0.0.1", port: int = 5000, workers: int = 1,
                        timeout: float = 120.0) -> TrackingServer:
    """Start ``mlflow server`` on ``backend_uri`` with artifacts proxied into ``artifacts``
    (clients upload through the server: ``mlflow-artifacts:/``); returns once ``/health``
    answers. Port 0 picks a free port. Raises ServerSetupError."""
    port = port or free_port(host)
    if port_in_use(host, port):
        raise ServerSetupError(f"port {port} on {host} is already in use: choose another "
                               "port with --port")
    artifacts.mkdir(parents=True, exist_ok=True)
    url = f"http://{host}:{port}"
    command = [sys.executable, "-m", "mlflow", "server",
               "--backend-store-uri", backend_uri,
               "--serve-artifacts", "--artifacts-destination", str(artifacts.resolve()),
               "--host", host, "--port", str(port), "--workers", str(workers)]
    # No job runner: it serves GenAI jobs (judges, trace roll-ups) churn-serve does not use,
    # costs a process, and kept `mlflow server` alive 20 s after SIGTERM (measured).
    env = {**os.environ, "MLFLOW_ENABLE_TELEMETRY": "false",
           "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    try:
        process = start_process(command, name="mlflow server", log_path=log_path, env=env,
                                ready=lambda: http_ok(f"{url}/health"), timeout=timeout)
    except ProcessError as exc:
        raise ServerSetupError(str(exc)) from exc
    return TrackingServer(url, backend_uri, artifacts, process)


def start_local_tracking(home: Path, *, host: str = "127.0.0.1", port: int = 5000,
                         pg_port: int = 0, workers: int = 1,
                         durable: bool = True) -> TrackingServer:
    """PostgreSQL under ``home/postgres`` (database ``mlflow``, on 127.0.0.1) and ``mlflow
    server`` on it (on ``host``), artifacts under ``home/mlflow-artifacts``. Stops what it
    started if a step fails."""
    if port and port_in_use(host, port):  # before PostgreSQL, so nothing starts in vain
        raise ServerSetupError(f"port {port} on {host} is already in use: choose another "
                               "port with --port")
    # Loopback only, whatever --host says: the cluster trusts every local connection.
    postgres = start_postgres(home / "postgres", port=pg_port, durable=durable)
    try:
        backend = postgres.create_database(MLFLOW_DATABASE)
        server = start_mlflow_server(backend, home / "mlflow-artifacts",
                                     home / "mlflow-server.log",
                                     host=host, port=port, workers=workers)
    except BaseException:
        postgres.stop()
        raise
    server.postgres = postgres
    return server


def mlflow_server(
    port: Annotated[int, typer.Option(help="MLflow server port (0 = any free port).")] = 5000,
    host: Annotated[str, typer.Option(help="Interface to listen on. Keep 127.0.0.1 unless "
                                      "a proxy with authentication is in front.")] = "127.0.0.1",
    pg_port: Annotated[int, typer.Option(help="PostgreSQL port (0 = any free port; the "
                                         "cluster listens on 127.0.0.1 only).")] = 0,
    workers: Annotated[int, typer.Option(min=1, help="MLflow server worker processes.")] = 1,
) -> None:
    """Run a shared MLflow tracking server on a local PostgreSQL until Ctrl-C: the cluster
    lives in $CHURN_HOME/postgres (created on first use), artifacts in
    $CHURN_HOME/mlflow-artifacts. Point `churn train --mlflow-uri` (or mlflow_tracking_uri in
    configs/train.yaml) at the URL it prints."""
    from kernel.paths import churn_home

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    home = churn_home().resolve()
    server = start_local_tracking(home, host=host, port=port, pg_port=pg_port,
                                  workers=workers)
    typer.echo(
        f"MLflow       {server.url}  (churn train --mlflow-uri {server.url}; "
        f"churn models --mlflow-uri {server.url})\n"
        f"backend      {server.backend_uri}\n"
        f"artifacts    {server.artifacts}  (clients upload through the server)\n"
        f"logs         {server.process.log_path}, {home / 'postgres' / 'postgres.log'}\n"
        "Ctrl-C stops both."
    )
    run_until_stopped(server, "the MLflow server and PostgreSQL")
