"""`churn lifecycle` as a user types it: the options declared once reach the engine, and a
pause and a resume are recorded with their reasons (the real CLI in a subprocess, a file state
in its own CHURN_HOME, no cluster: recording the state on one fails and only warns)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO

LIFECYCLE = [sys.executable, "-m", "churn_cli", "lifecycle"]


def churn(home: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "CHURN_HOME": str(home), "BENTOML_HOME": str(home / "bentoml"),
           "PYTHONPATH": str(REPO), "COLUMNS": "200"}
    return subprocess.run([*LIFECYCLE, *args], capture_output=True, text=True, timeout=120,
                          env=env, cwd=home)


def test_pause_and_resume_are_recorded_with_their_reasons(tmp_path: Path) -> None:
    for args in (["pause", "--reason", "quarter-end freeze"], ["resume", "--reason", "over"]):
        done = churn(tmp_path, *args, "--state", "file", "--no-push")
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout.splitlines()[-1])["paused"] is (args[0] == "pause")
    status = churn(tmp_path, "status", "--json", "--state", "file")
    assert status.returncode == 0, status.stderr
    history = json.loads(status.stdout)["history"]
    assert [(t["from"], t["to"], t["reason"]) for t in history] == [
        ("idle", "idle", "paused: quarter-end freeze"), ("idle", "idle", "resumed: over")]


def test_step_and_run_declare_the_loop_options_once_with_help(tmp_path: Path) -> None:
    """Both loop commands take every loop option (one declaration: rollout.lifecycle.cli
    loop_command) and the shared cluster options."""
    loop = ["--inference-log", "--judge-config", "--pushgateway", "--no-push",
            "--lifecycle-config", "--monitoring-config", "--train-config", "--state",
            "--config", "--kubectl", "--context", "--namespace", "--prometheus"]
    for command in ("step", "run"):
        done = churn(tmp_path, command, "--help")
        assert done.returncode == 0, done.stderr
        missing = [option for option in loop if option not in done.stdout]
        assert not missing, (command, missing)
