"""`churn drift --dask`: the statistics counted per partition on a real 2-worker Dask cluster
equal the ones counted over all rows at once; Evidently on a bounded sample; an unreachable
scheduler is one error line and no report."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from functools import reduce

import numpy as np
import orjson
import pytest

from kernel.contract import coerce_features
from kernel.processes import free_port
from kernel.store import PROBABILITY_COLUMN
from monitoring.config import MonitoringConfig
from monitoring.drift_statistics import DriftStatistics, psi_from_statistics, reference_edges
from monitoring.estimate import estimate_performance
from monitoring.psi import psi_categorical, psi_numeric
from tests.monitoring.conftest import log_predictions
from training.generate import GeneratorConfig, generate_customers


def _typed(contract, rows: int, seed: int, drifted: bool = False):
    frame = coerce_features(generate_customers(GeneratorConfig(rows=rows, seed=seed,
                                                               drifted=drifted)), contract)[0]
    rng = np.random.default_rng(seed)
    frame[PROBABILITY_COLUMN] = rng.beta(1.5, 6 if not drifted else 4, len(frame))
    return frame


def test_counts_of_parts_merge_into_the_counts_of_the_whole(contract):
    reference, current = _typed(contract, 2000, 1), _typed(contract, 3000, 2, drifted=True)
    edges = reference_edges(reference, contract, 10)
    whole = DriftStatistics.of(current, contract, edges, threshold=0.3)
    cuts = [0, 1, 700, 701, 2500, 3000]  # uneven parts, one of a single row
    merged = reduce(DriftStatistics.merge, [
        DriftStatistics.of(current.iloc[a:b], contract, edges, threshold=0.3)
        for a, b in zip(cuts, cuts[1:], strict=False)])
    assert merged.rows == whole.rows == 3000 and merged.missing == whole.missing
    assert merged.values == whole.values
    assert all((merged.bins[c] == whole.bins[c]).all() for c in whole.bins)
    assert merged.probability_sum == pytest.approx(whole.probability_sum, rel=1e-12)

    counted_reference = DriftStatistics.of(reference, contract, edges)
    for column, spec in contract.features.items():
        direct = (psi_numeric(reference[column], current[column], 10, 1e-4)
                  if spec.type == "numeric"
                  else psi_categorical(reference[column], current[column], 1e-4))
        assert psi_from_statistics(counted_reference, merged, column, 1e-4) == pytest.approx(
            direct, abs=1e-12), column
    share, values = merged.unseen("region", ["europe", "north_america"])
    unseen = current["region"].dropna()
    unseen = unseen[~unseen.isin(["europe", "north_america"])]
    assert share == len(unseen) / len(current) and values == sorted(unseen.unique())[:20]

    exact = estimate_performance(current[PROBABILITY_COLUMN].to_numpy(), 0.3)
    counted = merged.histogram.estimate()
    for name in ("precision", "recall", "expected_positive_rate", "flagged_rate"):
        assert getattr(counted, name) == pytest.approx(getattr(exact, name), rel=1e-12), name
    bound = merged.histogram.roc_auc_error_bound()
    assert bound < 1e-3 and abs(counted.roc_auc - exact.roc_auc) <= bound + 1e-12


@pytest.fixture(scope="module")
def inference_log(trained_entry, tmp_path_factory):
    """Four files of the last day: drifted and undrifted customers, one file scored by an older
    model version (rescored by the job), one compacted to Parquet, one record that breaks the
    contract; and one file from two days ago (outside the window)."""
    from kernel.inference_log import list_log_files, read_log_file
    from monitoring.log_retention import compact

    directory = tmp_path_factory.mktemp("inference_log")
    now = datetime.now(UTC)
    for i, drifted in enumerate([True, False, True]):
        customers = generate_customers(GeneratorConfig(rows=700, seed=610 + i, drifted=drifted))
        log_predictions(directory, trained_entry, customers, now - timedelta(hours=i + 1),
                        model_version="older" if i == 1 else None)
    compact(list_log_files(directory)[0])
    old = generate_customers(GeneratorConfig(rows=300, seed=619))
    log_predictions(directory, trained_entry, old, now - timedelta(days=2))
    newest = max(list_log_files(directory), key=lambda f: f.modified)
    record = read_log_file(newest).slice(0, 1).to_pylist()[0]
    record["plan"] = "platinum"  # outside the contract's closed set
    opened = now - timedelta(minutes=5)
    record["timestamp"] = opened.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    stamp = opened.strftime("%Y%m%dT%H%M%S")
    # A JSON-lines file, as older writers wrote: a folder may hold both forms.
    (directory / f"inferences-{stamp}-manual-1-1.jsonl").write_bytes(orjson.dumps(record) + b"\n")
    return directory


def _drift(settings, log_dir, report_dir, now, **options):
    from monitoring.jobs import drift_job

    return drift_job(settings, log_dir=log_dir, report_dir=report_dir, window="24h",
                     push=False, now=now, **options).result


def test_drift_on_dask_equals_drift_in_one_process(trained_entry, inference_log,
                                                   dask_scheduler, tmp_path):
    settings, now = MonitoringConfig(), datetime.now(UTC)
    alone = _drift(settings, inference_log, tmp_path / "alone", now)
    on_dask = _drift(settings, inference_log, tmp_path / "dask", now, dask=dask_scheduler)

    assert (on_dask.rejected_rows, on_dask.rescored_rows) == (alone.rejected_rows,
                                                                alone.rescored_rows) == (1, 700)
    a, b = alone.drift, on_dask.drift
    assert b.current_rows == a.current_rows == 2100 and b.evidently_rows is None
    assert b.drifted_features == a.drifted_features and b.drift_detected == a.drift_detected
    for fa, fb in zip(a.features, b.features, strict=True):
        assert (fb.feature, fb.method, fb.detected, fb.unseen_values) == (
            fa.feature, fa.method, fa.detected, fa.unseen_values)
        for name in ("psi", "missing_share", "unseen_share", "reference_missing_share"):
            assert getattr(fb, name) == pytest.approx(getattr(fa, name), abs=1e-12), name
        # Evidently on the same rows in another order: equal up to float summation order.
        assert fb.score == pytest.approx(fa.score, rel=1e-9)
    assert b.prediction.psi == pytest.approx(a.prediction.psi, abs=1e-12)
    assert b.prediction.current_mean == pytest.approx(a.prediction.current_mean, rel=1e-12)
    assert on_dask.estimate.precision == pytest.approx(alone.estimate.precision, rel=1e-12)
    assert on_dask.estimate.roc_auc == pytest.approx(alone.estimate.roc_auc, abs=1e-4)


def test_churn_drift_dask_alone_samples_evidently_and_counts_every_row(
    trained_entry, inference_log, tmp_path, churn, capsys
):
    config = tmp_path / "monitoring.yaml"
    config.write_text("drift: {evidently_sample_rows: 1000}\n")
    code = churn(["drift", "--dask", "--window", "24h", "--inference-log", str(inference_log),
                  "--report-dir", str(tmp_path), "--config", str(config), "--no-push"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "Evidently tests on a uniform sample of 1000 of 2100 current rows" in out
    (report,) = tmp_path.glob("drift-*.json")
    drift = json.loads(report.read_text())["drift"]
    assert (drift["current_rows"], drift["evidently_rows"]) == (2100, 1000)
    assert drift["drift_detected"] is True


def test_unreachable_scheduler_is_one_error_and_no_report(trained_entry, inference_log,
                                                          tmp_path, churn, capsys):
    address = f"tcp://127.0.0.1:{free_port()}"
    code = churn(["drift", "--dask", address, "--dask-timeout", "1", "--inference-log",
                  str(inference_log), "--report-dir", str(tmp_path / "reports"), "--no-push"])
    err = capsys.readouterr().err
    assert code == 2
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and address in errors[0] and "did not answer" in errors[0]
    assert not (tmp_path / "reports").exists()
