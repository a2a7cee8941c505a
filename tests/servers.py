"""What the service and monitoring tests share: valid request bodies and a real `bentoml serve`
subprocess on a free port, stopped by process group."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pandas as pd
import yaml

from monitoring.stack import free_port
from service.schema import customer_body

REPO = Path(__file__).resolve().parents[1]
BENTOML = str(Path(sys.executable).with_name("bentoml"))
SERVICE = "service.service:ChurnService"


def customer_bodies(rows: pd.DataFrame, contract) -> list[dict]:
    """One /predict body per row (id and contract features), with the JSON types it accepts."""
    return [customer_body(contract, row) for row in rows.to_dict("records")]


def request_bodies(entry, n: int, prefix: str = "C") -> list[dict]:
    """n valid /predict bodies built from the model's reference (training) rows, fresh ids."""
    contract = entry.contract
    rows = entry.reference[list(contract.features)].head(n).copy()
    rows[contract.id] = [f"{prefix}{i:05d}" for i in range(len(rows))]
    return customer_bodies(rows, contract)


def frame_of(bodies: list[dict], contract) -> pd.DataFrame:
    """The same customers as the DataFrame ChurnModel.predict_proba takes."""
    frame = pd.DataFrame(bodies)[list(contract.features)]
    for name in contract.numeric + contract.boolean:
        frame[name] = frame[name].astype(float)
    return frame


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
                 flush_seconds: float = 60, timeout: float = 120) -> Server:
    """`bentoml serve <target>` on a free port with a config of our own (inference log in
    ``tmp/inference_log``, ``extra`` keys on top); waits for /readyz."""
    log_dir = tmp / "inference_log"
    config = {"workers": workers, "inference_log": {"directory": str(log_dir),
                                                     "flush_seconds": flush_seconds},
              **(extra or {})}
    config_path = tmp / "service.yaml"
    config_path.write_text(yaml.safe_dump(config))
    port = free_port()
    output = tmp / "server.log"
    env = {**os.environ, "CHURN_SERVICE_CONFIG": str(config_path)}
    with output.open("wb") as log_file:
        process = subprocess.Popen(
            [BENTOML, "serve", target, "--host", "127.0.0.1", "--port", str(port)],
            cwd=REPO, env=env, stdout=log_file, stderr=subprocess.STDOUT,
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
