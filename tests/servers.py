"""What the service and monitoring tests share: valid request bodies and a real `bentoml serve`
subprocess on a free port, stopped by process group."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import yaml

from kernel.processes import ManagedProcess, free_port, http_ok, start_process
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


@dataclass
class Server(ManagedProcess):
    """A `bentoml serve` process with its URL and inference-log folder."""

    url: str = ""
    log_dir: Path = field(default_factory=Path)

    @property
    def output(self) -> Path:
        return self.log_path


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
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "CHURN_SERVICE_CONFIG": str(config_path)}
    process = start_process(
        [BENTOML, "serve", target, "--host", "127.0.0.1", "--port", str(port)],
        name=f"bentoml serve {target}", log_path=tmp / "server.log", cwd=REPO, env=env,
        ready=lambda: http_ok(f"{url}/readyz"), timeout=timeout)
    return Server(process.name, process.popen, process.log_path, url, log_dir)


def serve_model(tag: str, folder: Path, track: str, log_dir: Path, port: int | None = None,
                env: dict[str, str] | None = None, store: Path | None = None) -> Server:
    """`bentoml serve` of one model named by CHURN_MODEL_TAG, as a pod names it (one worker:
    CPU is scarce), writing its inference log to the shared ``log_dir`` with its track;
    ``env`` on top (e.g. CHURN_SHADOW_MODEL_TAG); ``store``: another BentoML home's models."""
    folder.mkdir(parents=True, exist_ok=True)
    config = folder / "service.yaml"
    config.write_text(yaml.safe_dump({"workers": 1, "inference_log": {
        "directory": str(log_dir), "flush_seconds": 0.2}}))
    port = port or free_port()
    url = f"http://127.0.0.1:{port}"
    # `bentoml serve` keeps its metrics in $BENTOML_HOME/prometheus_multiproc_dir and empties
    # it when it starts: servers sharing a home would wipe and mix each other's counters (a pod
    # has a home of its own). So each gets a home whose models/ is the session's model store.
    home = folder / "bentoml_home"
    home.mkdir()
    (home / "models").symlink_to((store or Path(os.environ["BENTOML_HOME"])) / "models")
    env = {**os.environ, "CHURN_SERVICE_CONFIG": str(config), "CHURN_MODEL_TAG": tag,
           "BENTOML_HOME": str(home), "CHURN_TRACK": track, **(env or {})}
    process = start_process(
        [BENTOML, "serve", SERVICE, "--host", "127.0.0.1", "--port", str(port)],
        name=f"bentoml serve {tag}", log_path=folder / "server.log", cwd=REPO, env=env,
        ready=lambda: http_ok(f"{url}/readyz"), timeout=300)
    return Server(process.name, process.popen, process.log_path, url, folder)


def analysis_report(args: list[str], timeout: float) -> tuple[int, dict, str]:
    """``churn <args>`` (an analysis: `canary analyze`, `shadow analyze`) as an operator runs
    it, once with --json and once as the table: the exit code (the same both times, a
    verdict's), the JSON report and the table (printed: pytest -rP shows it)."""
    command = [sys.executable, "-m", "churn_cli", *args]
    as_json = subprocess.run([*command, "--json"], cwd=REPO, capture_output=True, text=True,
                             timeout=timeout)
    shown = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=timeout)
    print(shown.stdout)
    assert as_json.returncode == shown.returncode, shown.stdout + shown.stderr
    assert as_json.returncode in (0, 1, 3), as_json.stdout + as_json.stderr
    return as_json.returncode, json.loads(as_json.stdout), shown.stdout
