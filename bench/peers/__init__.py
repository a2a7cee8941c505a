"""Other model servers serving the same model object, for ``bench/serving.py --peers``.

Each peer (LitServe, MLServer) lives in its own virtualenv under ``.venv-peers/<name>``,
created on first use with uv (or venv + pip): they pin web stacks that conflict with ours.
The ML stack inside is pinned to the versions this environment runs (numpy, pandas,
scikit-learn, xgboost, joblib), so the peer unpickles the champion's ``model.joblib`` from the
model store, the very file the service loads. Both peers score with the service's own code
(``bench/peers/scoring.py``): what differs is only the server around it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
VENVS = REPO / ".venv-peers"
# What the service's scoring code imports, at the versions this environment runs.
SHARED = ("numpy", "pandas", "scikit-learn", "scipy", "xgboost-cpu", "joblib", "pydantic",
          "pyyaml", "pyarrow")
PEERS = {
    "litserve": ["litserve>=0.2,<0.3"],
    # MLServer 1.7's workers call asyncio.get_event_loop() outside a loop: uvloop 0.22 raises.
    "mlserver": ["mlserver>=1.6,<1.8", "uvloop<0.22"],
}
TOOLS = {"py-spy": ["py-spy>=0.3,<0.5"]}  # bench/profile.py's sampling profiler


def python_of(peer: str) -> Path:
    """The peer's (or tool's) virtualenv interpreter, created and filled on first use."""
    venv = VENVS / peer
    python = venv / "bin" / "python"
    stamp = venv / ".installed"
    wanted = TOOLS[peer] if peer in TOOLS else [
        *PEERS[peer], *(f"{name}=={version(name)}" for name in SHARED)]
    if stamp.exists() and json.loads(stamp.read_text()) == wanted:
        return python
    print(f"installing {peer} into {venv} (once): {' '.join(wanted)}", flush=True)
    shutil.rmtree(venv, ignore_errors=True)
    uv = shutil.which("uv")
    if uv:
        subprocess.run([uv, "venv", "-q", str(venv), "--python", sys.executable], check=True)
        subprocess.run([uv, "pip", "install", "-q", "--python", str(python), *wanted],
                       check=True)
    else:
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", *wanted], check=True)
    stamp.write_text(json.dumps(wanted))
    return python


def export_model(entry: object, scratch: Path) -> Path:
    """Where a peer finds the served model: the store entry's own files and metadata."""
    bundle = scratch / "peer_model.json"
    bundle.write_text(json.dumps({
        "model": str(entry.path / "model.joblib"), "contract": str(entry.path / "contract.yaml"),
        "metadata": entry.metadata.model_dump(mode="json"), "tag": entry.tag,
        "version": entry.version}))
    return bundle


def peer_env(bundle: Path) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO), "CHURN_PEER_MODEL": str(bundle)}


def mlserver_settings(folder: Path, http_port: int, grpc_port: int, metrics_port: int,
                      workers: int, max_batch_size: int, max_batch_time: float) -> Path:
    """The folder ``mlserver start`` serves: server settings and the model's."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "settings.json").write_text(json.dumps({
        "host": "127.0.0.1", "http_port": http_port, "grpc_port": grpc_port,
        "metrics_port": metrics_port, "parallel_workers": workers}))
    (folder / "model-settings.json").write_text(json.dumps({
        "name": "churn", "implementation": "bench.peers.mlserver_runtime.ChurnRuntime",
        "max_batch_size": max_batch_size, "max_batch_time": max_batch_time}))
    return folder


def v2_request(customer: dict) -> bytes:
    """One customer as an MLServer (V2 inference protocol) request: a JSON string input."""
    return json.dumps({"inputs": [{"name": "customer", "shape": [1], "datatype": "BYTES",
                                   "data": [json.dumps(customer)]}]}).encode()
