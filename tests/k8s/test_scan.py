"""checkov's Kubernetes checks, with the project's config (k8s/checkov.yaml: each skipped check
justified there), on every overlay and every documented overlay + component combination, as
`make k8s-scan` runs them. checkov lives in its own environment (.venv-checkov, from
k8s/checkov-requirements.txt); the test creates it on first use and fails when it cannot."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.k8s.conftest import REPO

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]

CHECKOV_VENV = REPO / ".venv-checkov"
CHECKOV = CHECKOV_VENV / "bin" / "checkov"
REQUIREMENTS = REPO / "k8s" / "checkov-requirements.txt"


def install_checkov() -> Path:
    """The checkov binary, installed as `make k8s-scan` installs it when missing."""
    if CHECKOV.exists():
        return CHECKOV
    uv = shutil.which("uv")
    if uv is None:
        pytest.fail("checkov is not installed and uv (which installs it) is not on PATH: "
                    "run `make setup`, then `make k8s-scan`")
    steps = ([uv, "venv", "-q", str(CHECKOV_VENV), "--python", "3.11"],
             [uv, "pip", "install", "-q", "--python", str(CHECKOV_VENV / "bin" / "python"),
              "-r", str(REQUIREMENTS)])
    for step in steps:
        done = subprocess.run(step, capture_output=True, text=True, timeout=600, check=False)
        if done.returncode != 0:
            pytest.fail(f"could not install checkov ({' '.join(step)}): "
                        f"{(done.stderr or done.stdout).strip()[-2000:]}")
    return CHECKOV


def failed_checks(report: object) -> list[str]:
    """`checkov -o json`'s failed checks as "file: CHECK resource" lines (one report per
    framework, or a single one)."""
    reports = report if isinstance(report, list) else [report]
    return [f"{check['file_path'].lstrip('/')}: {check['check_id']} {check['resource']} "
            f"({check['check_name']})"
            for one in reports for check in one.get("results", {}).get("failed_checks", [])]


def test_checkov_passes_every_rendering_with_the_project_config(renderings, tmp_path):
    checkov = install_checkov()
    for name, manifests in renderings.items():
        (tmp_path / f"{name}.yaml").write_text(yaml.safe_dump_all(manifests.objects))
    done = subprocess.run([str(checkov), "--config-file", str(REPO / "k8s" / "checkov.yaml"),
                           "-d", str(tmp_path), "-o", "json"],
                          capture_output=True, text=True, timeout=600, check=False)
    assert done.stdout.strip(), f"checkov printed no report: {done.stderr[-2000:]}"
    report = json.loads(done.stdout)
    summaries = [r["summary"] for r in (report if isinstance(report, list) else [report])]
    assert sum(s["resource_count"] for s in summaries) > 100, summaries  # it scanned them all
    assert sum(s["parsing_errors"] for s in summaries) == 0, summaries
    assert failed_checks(report) == [], "\n".join(failed_checks(report))
    assert done.returncode == 0, done.stderr[-2000:]


def test_failed_checks_reads_what_checkov_reports_as_failing():
    """The parser must not read a failing report as a pass."""
    report = {"check_type": "kubernetes", "results": {"failed_checks": [
        {"check_id": "CKV_K8S_14", "check_name": "Image Tag should be fixed",
         "file_path": "/dev+dask.yaml", "resource": "CronJob.churn-dev.churn-score"}]}}
    assert failed_checks([report]) == [
        "dev+dask.yaml: CKV_K8S_14 CronJob.churn-dev.churn-score (Image Tag should be fixed)"]
    assert failed_checks({"results": {"failed_checks": []}}) == []
