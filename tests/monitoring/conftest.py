"""Fixtures of the monitoring job tests: a real Pushgateway, and an inference log written by the
service's own writer (so the jobs read exactly what the service writes)."""

from __future__ import annotations

import shutil
import sys
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest

from kernel.processes import free_port, http_ok, start_process

REPO = Path(__file__).resolve().parents[2]
PUSHGATEWAY_BINARIES = ("prometheus-pushgateway", "pushgateway")


@pytest.fixture(scope="session")
def pushgateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """URL of a real Pushgateway on a free loopback port (in-memory), stopped by its PID."""
    binary = next((shutil.which(b) for b in PUSHGATEWAY_BINARIES if shutil.which(b)), None)
    if binary is None:
        pytest.fail("prometheus-pushgateway is not installed: "
                    "apt-get install -y prometheus-pushgateway")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    # An empty persistence file keeps metrics in memory; the Debian binary's default is
    # /var/lib/prometheus/pushgateway.data, which would carry pushes across test sessions.
    process = start_process(
        [binary, f"--web.listen-address=127.0.0.1:{port}", "--persistence.file="],
        name="pushgateway", log_path=tmp_path_factory.mktemp("pushgateway") / "pushgateway.log",
        ready=lambda: http_ok(f"{url}/-/ready"), timeout=20)
    with process:
        yield url


def pushed_samples(url: str, name: str) -> list[tuple[dict[str, str], float]]:
    """(labels, value) of every sample of metric ``name`` on the Pushgateway's /metrics."""
    from prometheus_client.parser import text_string_to_metric_families

    text = httpx.get(f"{url}/metrics", timeout=5).text
    return [(dict(s.labels), s.value) for family in text_string_to_metric_families(text)
            for s in family.samples if s.name == name]


def log_predictions(
    directory: Path, entry, customers: pd.DataFrame, timestamp: datetime,
    model_version: str | None = None,
) -> pd.DataFrame:
    """Score ``customers`` with the entry's model and write them with the service's
    InferenceLogWriter, stamped ``timestamp``. Returns the rows with their probability."""
    from kernel.contract import coerce_features
    from service.inference_log import InferenceLogWriter, LogBlock

    contract = entry.contract
    features, _, bad = coerce_features(customers, contract)
    assert not bad.any(), "test customers must keep the contract"
    probability = entry.model.predict_proba(features)
    cutoffs = entry.metadata.risk_cutoffs
    risk = np.where(probability >= cutoffs.high, "HIGH",
                    np.where(probability >= cutoffs.medium, "MEDIUM", "LOW"))
    unseen = [tuple(c for c in contract.categorical
                    if row[c] is not None and row[c] not in entry.metadata.categories[c])
              for row in features[contract.categorical].to_dict("records")]
    writer = InferenceLogWriter(directory, model_tag=entry.tag,
                                model_version=model_version or entry.version,
                                boolean_features=contract.boolean, seed=0)
    ids = customers[contract.id].astype(str).tolist()
    writer.log(LogBlock(
        timestamp=timestamp.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        request_ids=[f"req-{i}" for i in range(len(ids))], customer_ids=ids,
        features={c: features[c].to_numpy() for c in contract.features},
        probability=probability, will_churn=probability >= entry.metadata.threshold,
        risk_level=risk, unseen=unseen,
    ))
    writer.close()
    return customers.assign(churn_probability=probability)


def run_churn(args: list[str], monkeypatch: pytest.MonkeyPatch) -> int:
    """Run ``churn <args>`` in this process (saves the seconds of importing Evidently and
    BentoML again); returns the exit code. Output goes to capsys."""
    import churn_cli

    monkeypatch.chdir(REPO)
    monkeypatch.setattr(sys, "argv", ["churn", *args])
    try:
        churn_cli.main()
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0


@pytest.fixture
def churn(monkeypatch: pytest.MonkeyPatch) -> Callable[[list[str]], int]:
    return lambda args: run_churn(args, monkeypatch)
