"""Shadow scoring end to end (issue 18), with real `bentoml serve` processes: each serves the
session's champion and shadows another model (CHURN_SHADOW_MODEL_TAG, as the pod reads it from
the churn-model ConfigMap), and `churn shadow analyze` judges the pairs the inference log holds.

- the same model as shadow: 2,000 requests, every record holds both probabilities, the answers
  are the champion's own (what the service answers without a shadow), and the judge passes;
- a model trained on drifted data as shadow: the answers are still the champion's, and the
  judge fails it;
- a shadow that raises on every batch: no answer changes, every prediction is logged without a
  shadow answer, and the skips are counted by reason."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest

from kernel.inference_log import read_inference_log
from tests.servers import REPO, analysis_report, customer_bodies, frame_of, serve_model

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]
REQUESTS = 2000


@pytest.fixture(scope="module")
def shadow_models(trained_entry, canary_models: dict[str, str]) -> Iterator[dict[str, str]]:
    """Shadow tags: the champion's copy ("same"), the model trained on drifted data, and the
    champion's model broken to raise on every batch."""
    from kernel.store import delete_entry, save_entry
    from tests.rollout.broken_model import broken_copy

    broken = save_entry(broken_copy(trained_entry.model), trained_entry.contract.model_copy(
        update={"name": "shadow_broken"}), trained_entry.metadata.model_copy(
        update={"dataset": "shadow_broken"}), trained_entry.reference, "challenger").tag
    yield {"same": canary_models["same"], "drifted": canary_models["drifted"],
           "broken": broken}
    delete_entry(broken)


@pytest.fixture(scope="module")
def shadowed(trained_entry, shadow_models: dict[str, str],
             tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    """One server per shadow, each serving the champion with its own inference log, started
    together."""
    root = tmp_path_factory.mktemp("shadow-servers")
    with ThreadPoolExecutor(3) as pool:
        futures = {name: pool.submit(
            serve_model, trained_entry.tag, root / name, "stable", root / name / "log",
            env={"CHURN_SHADOW_MODEL_TAG": tag}) for name, tag in shadow_models.items()}
    started = {name: f.result() for name, f in futures.items() if f.exception() is None}
    try:
        failed = [f"{name}: {f.exception()}" for name, f in futures.items() if f.exception()]
        assert not failed, failed
        yield started
    finally:
        for server in started.values():
            server.stop(timeout=30)


@pytest.fixture(scope="module")
def customers(contract) -> list[dict]:
    from training.generate import GeneratorConfig, generate_customers

    rows = generate_customers(GeneratorConfig(rows=REQUESTS + 200, seed=57))
    return customer_bodies(rows.drop_duplicates(contract.id).head(REQUESTS), contract)


def send(url: str, bodies: list[dict]) -> list[dict]:
    """POST every body to /predict (6 at a time); the answers, in order."""
    with httpx.Client(timeout=60) as client, ThreadPoolExecutor(6) as pool:
        answers = list(pool.map(lambda body: client.post(f"{url}/predict", json=body), bodies))
    assert {a.status_code for a in answers} == {200}, [a.text for a in answers[:3]]
    return [a.json() for a in answers]


def logged(server, expected: int, timeout: float = 60) -> pd.DataFrame:
    """The server's inference log once it holds ``expected`` records (shadow answers are
    logged with their batch, after the shadow scored it)."""
    import time

    deadline = time.monotonic() + timeout
    while True:
        records = read_inference_log(server.log_dir / "log")
        if len(records) >= expected or time.monotonic() > deadline:
            return records
        time.sleep(0.3)


def analyze(log_dir: Path) -> tuple[int, dict, str]:
    """`churn shadow analyze` as an operator runs it: exit code, JSON report, the table."""
    return analysis_report(["shadow", "analyze", "--inference-log", str(log_dir), "--window",
                            "1h", "--no-push"], timeout=300)


def champion_probabilities(entry, contract, bodies: list[dict]) -> np.ndarray:
    """What the service answers without a shadow: the champion model on the same customers."""
    return entry.model.predict_proba(frame_of(bodies, contract))


@pytest.fixture(scope="module")
def same_run(shadowed, customers):
    answers = send(shadowed["same"].url, customers)
    return answers, logged(shadowed["same"], len(customers))


def test_a_same_model_shadow_logs_both_answers_changes_none_and_passes(
        same_run, shadowed, customers, trained_entry, contract, shadow_models) -> None:
    answers, records = same_run
    expected = champion_probabilities(trained_entry, contract, customers)
    served = np.array([a["churn_probability"] for a in answers])
    np.testing.assert_allclose(served, expected, atol=1e-6)
    assert {a["model_version"] for a in answers} == {trained_entry.version}
    # Every record: the champion's answer and the shadow's, side by side.
    assert len(records) == REQUESTS
    assert records["shadow_churn_probability"].notna().all()
    shadow_version = shadow_models["same"].partition(":")[2]
    assert set(records["shadow_model_version"]) == {shadow_version}
    by_id = records.set_index("customer_id")
    np.testing.assert_allclose(
        by_id.loc[[c[contract.id] for c in customers], "churn_probability"], served, atol=1e-6)
    # The same model gives the same probabilities: the pairs agree exactly.
    np.testing.assert_allclose(records["shadow_churn_probability"], records["churn_probability"],
                               atol=1e-9)
    code, report, table = analyze(shadowed["same"].log_dir / "log")
    assert code == 0 and report["judgement"]["verdict"] == "pass", table
    assert report["pairs"] == REQUESTS, report
    # The segments (the champion's categorical features) are judged, not left out.
    segment_checks = [c for c in report["judgement"]["checks"] if "segment" in c["name"]]
    assert segment_checks and all(c["classification"] == "Pass" for c in segment_checks), table


def test_a_drifted_shadow_fails_and_no_answer_moves(shadowed, customers, trained_entry,
                                                    contract) -> None:
    answers = send(shadowed["drifted"].url, customers)
    expected = champion_probabilities(trained_entry, contract, customers)
    np.testing.assert_allclose([a["churn_probability"] for a in answers], expected, atol=1e-6)
    records = logged(shadowed["drifted"], len(customers))
    assert records["shadow_churn_probability"].notna().all()
    assert not np.allclose(records["shadow_churn_probability"], records["churn_probability"])
    code, report, table = analyze(shadowed["drifted"].log_dir / "log")
    assert code == 1 and report["judgement"]["verdict"] == "fail", table
    assert report["judgement"]["failing_checks"], table


def test_a_shadow_raising_on_every_batch_changes_nothing_and_is_counted(
        shadowed, customers, trained_entry, contract) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    bodies = customers[:300]
    answers = send(shadowed["broken"].url, bodies)
    expected = champion_probabilities(trained_entry, contract, bodies)
    np.testing.assert_allclose([a["churn_probability"] for a in answers], expected, atol=1e-6)
    records = logged(shadowed["broken"], len(bodies))
    assert len(records) == len(bodies)  # every prediction still logged, without a shadow answer
    assert "shadow_churn_probability" not in records or \
        records["shadow_churn_probability"].isna().all()
    text = httpx.get(f"{shadowed['broken'].url}/metrics", timeout=30).text
    skipped = {sample.labels["reason"]: sample.value
               for family in text_string_to_metric_families(text)
               for sample in family.samples if sample.name == "churn_shadow_skipped_total"}
    assert skipped["error"] == len(bodies), skipped
    assert sum(skipped.values()) == len(bodies), skipped
    done = subprocess.run([sys.executable, "-m", "churn_cli", "shadow", "analyze",
                           "--inference-log", str(shadowed["broken"].log_dir / "log"),
                           "--window", "1h", "--no-push"], cwd=REPO, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 2, done.stdout + done.stderr  # nothing to judge: never a pass
    assert "every batch was skipped" in done.stderr.splitlines()[-1], done.stderr
