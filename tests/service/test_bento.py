"""`bentoml build` makes a Bento with only serving dependencies, and it serves the champion."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.servers import BENTOML, REPO, frame_of, start_server

pytestmark = pytest.mark.integration
NOT_IN_IMAGE = ("mlflow", "imbalanced-learn", "optuna", "evidently")


def test_build_then_serve_the_bento(trained_entry, bodies, tmp_path):
    built = subprocess.run([BENTOML, "build", "--output", "tag"], cwd=REPO, env=os.environ,
                           capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stdout + built.stderr
    tag = built.stdout.strip().splitlines()[-1].removeprefix("__tag__:")
    name, version = tag.split(":")
    bento = Path(os.environ["BENTOML_HOME"]) / "bentos" / name / version
    requirements = (bento / "env" / "python" / "requirements.txt").read_text().lower()
    assert "xgboost" in requirements and "scikit-learn" in requirements
    for package in NOT_IN_IMAGE:
        assert f"\n{package}==" not in f"\n{requirements}", package
    assert "python:3.11" in (bento / "env" / "docker" / "Dockerfile").read_text()
    assert trained_entry.tag in (bento / "bento.yaml").read_text()  # the champion is packed

    server = start_server(tag, tmp_path, workers=1)
    try:
        # Series exist at 0 before the first prediction, so rate() counts it.
        text = httpx.get(f"{server.url}/metrics", timeout=10).text
        counts = {s.labels["risk_level"]: s.value
                  for family in text_string_to_metric_families(text) for s in family.samples
                  if s.name == "churn_predictions_total"
                  and s.labels["model_version"] == trained_entry.version}
        assert counts == {"LOW": 0, "MEDIUM": 0, "HIGH": 0}
        response = httpx.post(f"{server.url}/predict", json=bodies[0], timeout=30)
        assert response.status_code == 200, response.text
        expected = trained_entry.model.predict_proba(frame_of(bodies[:1], trained_entry.contract))
        assert response.json()["churn_probability"] == pytest.approx(float(expected[0]),
                                                                     abs=1e-12)
        assert response.json()["model_version"] == trained_entry.version
    finally:
        server.stop()
