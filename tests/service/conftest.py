"""Fixtures of the service tests: the service module (imported once the champion exists),
valid request bodies, and one real `bentoml serve` (2 workers) shared by the HTTP tests."""

from __future__ import annotations

import math
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
BENTOML = str(Path(sys.executable).with_name("bentoml"))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def request_bodies(entry, n: int, prefix: str = "C") -> list[dict]:
    """n valid /predict bodies built from the model's reference (training) rows."""
    contract = entry.contract
    rows = entry.reference[list(contract.features)].head(n).to_dict("records")
    bodies = []
    for i, row in enumerate(rows):
        body = {contract.id: f"{prefix}{i:05d}"}
        for name, spec in contract.features.items():
            value = row[name]
            if value is None or (isinstance(value, float) and math.isnan(value)):
                value = None
            elif spec.type == "boolean":
                value = bool(value)
            elif spec.type == "numeric":
                value = float(value)
            body[name] = value
        bodies.append(body)
    return bodies


def frame_of(bodies: list[dict], contract):
    """The same customers as the DataFrame ChurnModel.predict_proba takes."""
    import pandas as pd

    frame = pd.DataFrame(bodies)[list(contract.features)]
    for name in contract.numeric + contract.boolean:
        frame[name] = frame[name].astype(float)
    return frame


@pytest.fixture(scope="session")
def service_module(trained_entry):
    """service.service resolves the champion when imported: only import it once one exists."""
    import service.service as module

    assert module._entry.tag == trained_entry.tag
    return module


@pytest.fixture(scope="session")
def bodies(trained_entry) -> list[dict]:
    return request_bodies(trained_entry, 200)


class Server:
    def __init__(self, process: subprocess.Popen, url: str, log_dir: Path, output: Path):
        self.process, self.url, self.log_dir, self.output = process, url, log_dir, output

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60) -> int:
        if self.process.poll() is None:
            os.killpg(self.process.pid, sig)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(10)
        return self.process.returncode


def start_server(target: str, tmp: Path, workers: int = 2, extra: dict | None = None,
                 timeout: float = 120) -> Server:
    """`bentoml serve <target>` on a free port with a config of our own; waits for /readyz."""
    log_dir = tmp / "inference_log"
    config = {"workers": workers, "inference_log": {"directory": str(log_dir),
                                                     "flush_seconds": 60}, **(extra or {})}
    config_path = tmp / "service.yaml"
    config_path.write_text(yaml.safe_dump(config))
    port = free_port()
    output = tmp / "server.log"
    env = {**os.environ, "CHURN_SERVICE_CONFIG": str(config_path)}
    process = subprocess.Popen(
        [BENTOML, "serve", target, "--host", "127.0.0.1", "--port", str(port)],
        cwd=REPO, env=env, stdout=output.open("wb"), stderr=subprocess.STDOUT,
        start_new_session=True,  # its own process group: stopped by id, workers included
    )
    server = Server(process, f"http://127.0.0.1:{port}", log_dir, output)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"bentoml serve exited: {output.read_text()[-3000:]}")
        try:
            if httpx.get(f"{server.url}/readyz", timeout=2).status_code == 200:
                return server
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    server.stop(signal.SIGKILL)
    raise RuntimeError(f"bentoml serve not ready in {timeout} s: {output.read_text()[-3000:]}")


@pytest.fixture(scope="module")
def server(trained_entry, tmp_path_factory):
    """One real 2-worker server for a test module; SIGTERM (graceful) at the end."""
    running = start_server("service.service:ChurnService", tmp_path_factory.mktemp("serve"))
    yield running
    running.stop()
