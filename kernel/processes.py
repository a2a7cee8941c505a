"""Start a process, wait until it is ready, stop it by process group: the one way churn-serve
runs other programs (`bentoml serve`, Prometheus, the Pushgateway, PostgreSQL, MLflow) for
`churn monitor`, the benchmark, the drill and the tests.

Every process gets a session (process group) of its own, so ``stop()`` reaches the workers a
server forks too, and a terminal's Ctrl-C reaches only the parent, which stops them in order.
Not packed into the Bento: serving never starts processes.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType, TracebackType
from typing import Protocol

log = logging.getLogger("churn.processes")


class ProcessError(OSError):
    """A process could not start, exited early or never became ready."""


def free_port(host: str = "127.0.0.1") -> int:
    """A port nobody listens on right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def port_in_use(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        return sock.connect_ex((host, port)) == 0


def http_ok(url: str, timeout: float = 2.0) -> bool:
    """True when ``url`` answers 200 (any error, including a refused connection, is False)."""
    import httpx

    try:
        return httpx.get(url, timeout=timeout).status_code == 200
    except httpx.HTTPError:
        return False


@dataclass
class ManagedProcess:
    """A running child in its own process group, with its output in ``log_path``."""

    name: str
    popen: subprocess.Popen
    log_path: Path

    @property
    def pid(self) -> int:
        return self.popen.pid

    def running(self) -> bool:
        return self.popen.poll() is None

    def log_tail(self, chars: int = 3000) -> str:
        if not self.log_path.exists():
            return "(no output)"
        return self.log_path.read_text(errors="replace")[-chars:]

    def check_alive(self) -> None:
        """Raise ProcessError (with the end of its output) if it has exited on its own."""
        if not self.running():
            raise ProcessError(f"{self.name} exited with code {self.popen.returncode}: "
                               f"{self.log_tail(1500)}")

    def send_signal(self, sig: int) -> None:
        """Send ``sig`` to the whole process group (the server and the workers it forked)."""
        if self.running():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.popen.pid, sig)

    def processes(self) -> list:
        """The child and every process under it. BentoML starts its workers in sessions of
        their own, so the child's process group does not hold them."""
        import psutil

        try:
            root = psutil.Process(self.pid)
            return [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []

    def kill(self) -> None:
        """SIGKILL to every process under the child at once, as a container runtime kills a
        pod's cgroup: a SIGKILL to the server alone would leave its workers serving."""
        for process in self.processes():
            with contextlib.suppress(Exception):
                process.kill()

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60.0) -> int:
        """Send ``sig`` to the group, wait up to ``timeout`` s, then kill everything under it.
        Returns the code. Any descendant still running after that is killed as well."""
        survivors = self.processes()[1:]
        if self.running():
            self.send_signal(sig)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                log.warning("%s (pid %d) still running %.0f s after signal %d: killing it",
                            self.name, self.pid, timeout, sig)
                self.kill()
                self.popen.wait(10)
        for process in survivors:
            with contextlib.suppress(Exception):
                process.kill()
        return self.popen.returncode

    def __enter__(self) -> ManagedProcess:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


def start_process(
    command: Sequence[str],
    *,
    name: str,
    log_path: Path,
    ready: Callable[[], bool] | None = None,
    timeout: float = 60.0,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    user: str | None = None,
    poll_seconds: float = 0.2,
) -> ManagedProcess:
    """Start ``command`` (output appended to ``log_path``) and return once ``ready()`` is true.

    ``ready`` is polled until ``timeout``; the process must also still be running then (a server
    that lost a port race exits while another one answers the probe). ``user`` runs it as that
    user (PostgreSQL refuses root). Raises ProcessError, after stopping the process, when it
    exits early or is not ready in time.
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as output:
        popen = subprocess.Popen(
            list(command), stdout=output, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env=dict(env) if env is not None else None, cwd=cwd, user=user,
            start_new_session=True,
        )
    process = ManagedProcess(name, popen, log_path)
    log.info("started %s (pid %d), output in %s", name, popen.pid, log_path)
    if ready is None:
        return process
    deadline = time.monotonic() + timeout
    try:
        while True:
            process.check_alive()
            if ready():
                time.sleep(poll_seconds)
                process.check_alive()
                return process
            if time.monotonic() > deadline:
                raise ProcessError(f"{name} was not ready after {timeout:.0f} s: "
                                   f"{process.log_tail(1500)}")
            time.sleep(poll_seconds)
    except BaseException:
        process.stop(timeout=10)
        raise


class Supervised(Protocol):
    """What ``run_until_stopped`` watches: processes that can say they died, and stop."""

    def check_alive(self) -> None: ...

    def stop(self) -> object: ...


def run_until_stopped(running: Supervised, what: str, poll_seconds: float = 1.0) -> None:
    """Block until Ctrl-C or SIGTERM (then stop ``running``, logging "stopping <what>"), or
    until one of its processes dies (its ProcessError propagates, after the stop)."""

    def _terminate(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        while True:
            running.check_alive()
            time.sleep(poll_seconds)
    except KeyboardInterrupt:
        log.info("stopping %s", what)
    finally:
        running.stop()
        signal.signal(signal.SIGTERM, previous)
