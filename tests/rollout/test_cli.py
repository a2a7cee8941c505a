"""`churn canary ...` as a user runs it: exit codes, one-line errors, --dry-run output."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def churn(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "churn_cli", "canary", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=120,
                          env={**os.environ, **(env or {})})


def test_help_explains_every_command_and_option() -> None:
    done = churn("--help")
    for command in ("start", "status", "analyze", "promote", "abort", "run", "render"):
        assert command in done.stdout
    for option in ("--prometheus", "--window", "--json", "--config"):
        assert option in churn("analyze", "--help").stdout
    for option in ("--model", "--image", "--dry-run", "--context", "--namespace", "--kubectl"):
        assert option in churn("run", "--help").stdout


def config_line_then_error(stderr: str) -> str:
    """A failed command's stderr: the log lines naming the configs it read (canary.yaml
    first), then one error line."""
    *configs, last = stderr.strip().splitlines()
    assert configs and " churn.config config canary.yaml: " in configs[0], stderr
    assert all(" churn.config config " in line for line in configs), stderr
    assert last.startswith("error: "), stderr
    return last


def test_an_unreachable_prometheus_is_an_error_not_a_verdict() -> None:
    done = churn("analyze", "--prometheus", "http://127.0.0.1:9")
    assert done.returncode == 2
    assert config_line_then_error(done.stderr) == (
        "error: PrometheusError: Prometheus at http://127.0.0.1:9 is unreachable: "
        + done.stderr.split("is unreachable: ", 1)[1].strip())


def test_a_bad_window_or_config_is_one_line(tmp_path: Path) -> None:
    done = churn("analyze", "--window", "ten minutes")
    assert done.returncode == 2 and "ten minutes" in done.stderr
    bad = tmp_path / "canary.yaml"
    bad.write_text("analysis:\n  max_probability_psi: -1\n")
    done = churn("analyze", "--config", str(bad))
    assert done.returncode == 2
    assert "analysis.max_probability_psi" in config_line_then_error(done.stderr)
    missing = churn("analyze", "--config", str(tmp_path / "absent.yaml"))
    assert missing.returncode == 2
    assert missing.stderr.strip().splitlines() == [
        f"error: ConfigNotFound: --config names {tmp_path / 'absent.yaml'}, which does not "
        "exist"]


def test_render_check_passes_on_the_repository_and_fails_on_a_stale_copy(tmp_path: Path) -> None:
    assert churn("render", "--check").returncode == 0
    stale = tmp_path / "analysistemplate.yaml"
    stale.write_text("kind: AnalysisTemplate\n")
    done = churn("render", "--check", "--template", str(stale))
    assert done.returncode == 1 and "out of date" in done.stderr
    assert "kind: AnalysisTemplate" in churn("render", "--stdout", "argo").stdout


@pytest.mark.integration
def test_dry_run_and_status_against_the_stand_in_server(cluster: Path, tmp_path: Path) -> None:
    kubectl = str(cluster.parent / "kubectl")
    env = {"CHURN_HOME": str(tmp_path / "home")}
    done = churn("start", "--model", "streaming_churn:v9", "--kubectl", kubectl, "--context",
                 "ctx", "--dry-run", env=env)
    assert done.returncode == 0, done.stderr
    shown = [line for line in done.stdout.splitlines() if line.startswith("(dry run)")]
    assert [line.split(" ctx ")[1].split()[:2] for line in shown] == [
        ["set", "image"], ["set", "env"], ["annotate", "deployment/churn-serve-canary"],
        ["scale", "deployment/churn-serve-canary"], ["rollout", "status"]]
    assert not (tmp_path / "home" / "canary").exists()  # a dry run records nothing
    done = churn("status", "--kubectl", kubectl, env=env)
    assert done.returncode == 0, done.stderr
    assert "traffic: canary 0 of 3 ready pods = 0%" in done.stdout
    done = churn("start", "--model", "streaming_churn:v9", "--kubectl", kubectl, env=env)
    assert done.returncode == 0, done.stderr
    assert "last decision: started" in churn("status", "--kubectl", kubectl, env=env).stdout
    (entry,) = [json.loads(line) for line in
                (tmp_path / "home" / "canary" / "decisions.jsonl").read_text().splitlines()]
    assert entry["decision"] == "started" and "streaming_churn:v9" in entry["reason"]
    done = churn("start", "--model", "streaming_churn:v10", "--kubectl", kubectl, env=env)
    assert done.returncode == 2 and "already running" in done.stderr
