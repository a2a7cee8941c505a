"""`churn drill` end to end on a fast subset (what CI runs): real `churn train` refusals, a real
`bentoml serve` taking bad inputs and a SIGTERM under load, and a challenger broken on one
segment in shadow (the path of a model class with its own scoring, which a change once broke
unseen). Each scenario must be reported caught, with its evidence, and the three report files
written."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import CHURN, REPO

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]
FAST_SUBSET = ["schema-change", "leakage", "label-collapse", "bad-inputs", "sigterm",
               "shadow-segment"]


def test_fast_subset_is_caught_and_reported(tmp_path: Path) -> None:
    reports = tmp_path / "report"
    # The drill isolates its own model store; the session's BENTOML_HOME must not leak in.
    env = {k: v for k, v in os.environ.items() if k not in ("BENTOML_HOME", "CHURN_HOME")}
    env["CHURN_HOME"] = str(tmp_path / "home")
    started = time.monotonic()
    done = subprocess.run([CHURN, "drill", *FAST_SUBSET, "--report-dir", str(reports),
                           "--workdir", str(tmp_path / "work")], capture_output=True,
                          text=True, timeout=580, cwd=REPO, env=env, check=False)
    seconds = time.monotonic() - started
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    progress = [line for line in done.stdout.splitlines() if line.startswith("[")]
    for index, name in enumerate(FAST_SUBSET, 1):
        assert any(line.startswith(f"[{index}/{len(FAST_SUBSET)}] {name}: CAUGHT")
                   for line in progress), progress
    assert f"{len(FAST_SUBSET)} of {len(FAST_SUBSET)} failures caught" in done.stdout

    assert sorted(p.name for p in reports.iterdir()) == ["drill.html", "drill.json", "drill.md"]
    report = json.loads((reports / "drill.json").read_text())
    assert [s["name"] for s in report["scenarios"]] == FAST_SUBSET
    by_name = {s["name"]: s for s in report["scenarios"]}
    for scenario in report["scenarios"]:
        assert scenario["passed"] and scenario["error"] is None, scenario
        assert scenario["detection_seconds"] is not None, scenario["name"]
        assert {c["kind"] for c in scenario["checks"]} == {"caught", "intact"}, scenario["name"]
    assert by_name["leakage"]["evidence"]["exit_code"] == 2
    assert "LeakageSuspected" in by_name["leakage"]["evidence"]["error"]
    assert by_name["sigterm"]["evidence"]["answered"] == by_name["sigterm"]["evidence"]["logged"]
    assert by_name["sigterm"]["evidence"]["answered"] > 0
    assert report["champion"] and report["seconds"] <= seconds
    assert "| [bad-inputs](#bad-inputs) |" in (reports / "drill.md").read_text()
    # Nothing of the drill's state leaks into the user's home.
    assert not (tmp_path / "home" / "bentoml").exists()
