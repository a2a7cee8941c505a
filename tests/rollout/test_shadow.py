"""`churn shadow start|stop|status` against the stand-in API server (the real kubectl makes
every edit): the shadow's tag goes where stable's pods read it, stable restarts once, nothing
else changes, and every decision is recorded."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from rollout import kubectl as k
from rollout.config import CanaryConfig
from rollout.plan import PlanError
from rollout.shadow import DECISION, REASON, SHADOW_ENV, Shadow
from tests.rollout.manifests import STABLE_TAG

pytestmark = pytest.mark.integration  # every call runs kubectl (and the stand-in server)
REPO = Path(__file__).resolve().parents[2]
CHALLENGER = "streaming_churn:v2challenger"


def obj(state: Path, kind: str, name: str) -> dict:
    return json.loads((state / f"{kind}-{name}.json").read_text())


def shadow_for(state: Path, tmp_path: Path, dry_run: bool = False) -> Shadow:
    config = CanaryConfig()
    config.kubernetes.kubectl = str(state.parent / "kubectl")
    return Shadow(config.kubernetes, k.Kubectl(config.kubernetes, dry_run=dry_run),
                  tmp_path / "decisions.jsonl")


def test_start_and_stop_write_the_key_restart_stable_and_record_why(cluster: Path,
                                                                     tmp_path: Path) -> None:
    shadow = shadow_for(cluster, tmp_path)
    before = obj(cluster, "deployment", "churn-serve")
    canary_before = obj(cluster, "deployment", "churn-serve-canary")
    shadow.start(CHALLENGER)
    config = obj(cluster, "configmap", "churn-model")["data"]
    assert config == {"CHURN_MODEL_TAG": STABLE_TAG, SHADOW_ENV: CHALLENGER}
    after = obj(cluster, "deployment", "churn-serve")
    assert k.RESTARTED_AT in after["spec"]["template"]["metadata"]["annotations"]
    # The champion is untouched: same model, same image, same replicas, same env.
    assert after["spec"]["replicas"] == before["spec"]["replicas"]
    assert after["spec"]["template"]["spec"] == before["spec"]["template"]["spec"]
    assert obj(cluster, "deployment", "churn-serve-canary") == canary_before
    notes = after["metadata"]["annotations"]
    assert notes[DECISION] == "started" and CHALLENGER in notes[REASON]
    assert f"shadow  {CHALLENGER}" in shadow.status()
    shadow.stop("judged: fail")
    assert obj(cluster, "configmap", "churn-model")["data"][SHADOW_ENV] == ""
    notes = obj(cluster, "deployment", "churn-serve")["metadata"]["annotations"]
    assert notes[DECISION] == "stopped" and "judged: fail" in notes[REASON]
    logged = [json.loads(line) for line in (tmp_path / "decisions.jsonl").read_text()
              .splitlines()]
    assert [e["decision"] for e in logged] == ["started", "stopped"]
    assert logged[0]["model"] == CHALLENGER and logged[0]["champion"] == STABLE_TAG
    with pytest.raises(PlanError, match="runs no shadow"):
        shadow.stop("again")


def test_the_cli_dry_run_shows_the_argument_lists_and_changes_nothing(cluster: Path,
                                                                       tmp_path: Path) -> None:
    before = {p.name: p.read_text() for p in cluster.glob("*.json")}
    done = subprocess.run(
        [sys.executable, "-m", "churn_cli", "shadow", "start", "--model", CHALLENGER,
         "--kubectl", str(cluster.parent / "kubectl"), "--dry-run"], cwd=REPO,
        capture_output=True, text=True, timeout=120,
        env={**os.environ, "CHURN_HOME": str(tmp_path / "home")})
    assert done.returncode == 0, done.stderr
    shown = [line.split()[3:5] for line in done.stdout.splitlines()
             if line.startswith("(dry run)")]
    assert shown == [["patch", "configmap"], ["patch", "deployment/churn-serve"],
                     ["annotate", "deployment/churn-serve"], ["rollout", "status"]]
    assert {p.name: p.read_text() for p in cluster.glob("*.json")} == before
    assert not (tmp_path / "home" / "shadow").exists()
