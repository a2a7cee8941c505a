"""Inference-log benchmark: ``python -m bench.inference_log`` (``--serve 30`` for a real log).

What a record costs on disk as the writer writes it (an Arrow stream, uncompressed) and after
compaction to Parquet (zstd, what ``churn log compact`` writes), next to the alternatives weighed
(Parquet snappy/gzip, the Arrow stream with lz4 or zstd); compaction CPU (records per CPU second);
reading a window back as written and as Parquet (time, peak RSS of a fresh process); and what a
day costs at 100 and 2,000 req/s.

The log is written by the service's own ``InferenceLogWriter``: by default with records shaped
like ``/predict`` traffic (adaptive batches of 1-8 rows sharing a timestamp, a fresh request id
each, generated customers), or, with ``--serve SECONDS``, by a real ``bentoml serve`` under
32 closed-loop ``/predict`` clients (BENTOML_HOME must hold a champion, as for bench.serving).
Results: bench/results/inference_log-*.json.
"""

from __future__ import annotations

import io
import shutil
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np

from bench.harness import run_benchmark

REPO = Path(__file__).resolve().parents[1]
RATES = (100, 2000)  # requests per second, one record each (sample_rate 1)
DAY = 86_400


def synthetic_log(directory: Path, records: int) -> None:
    """``records`` records written by the service's writer, shaped like /predict traffic."""
    from kernel.contract import DataContract
    from service.inference_log import InferenceLogWriter, LogBlock
    from training.generate import GeneratorConfig, generate_customers

    contract = DataContract.from_yaml(REPO / "configs" / "streaming_churn.contract.yaml")
    customers = generate_customers(GeneratorConfig(rows=records, seed=11))
    features = {name: customers[name].to_numpy().astype(
        object if spec.type == "categorical" else float)
        for name, spec in contract.features.items()}
    rng = np.random.default_rng(0)
    probability = rng.beta(1.5, 6, records)  # full-precision doubles, like a model's
    writer = InferenceLogWriter(directory, model_tag="streaming_churn:gq2hkxrmy6prgax4",
                                model_version="gq2hkxrmy6prgax4",
                                boolean_features=contract.boolean, flush_seconds=60)
    started = datetime.now(UTC)
    start = 0
    while start < records:
        end = min(records, start + int(rng.integers(1, 9)))
        p = probability[start:end]
        stamp = started + timedelta(milliseconds=start / 2)  # ~2,000 records/s
        writer.log(LogBlock(
            timestamp=stamp.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            request_ids=[uuid.uuid4().hex for _ in range(end - start)],
            customer_ids=customers["customer_id"].iloc[start:end].tolist(),
            features={name: values[start:end] for name, values in features.items()},
            probability=p, will_churn=p >= 0.3,
            risk_level=np.where(p >= 0.5, "HIGH", np.where(p >= 0.25, "MEDIUM", "LOW")),
            unseen=[()] * (end - start)))
        start = end
    writer.close()


def served_log(directory: Path, seconds: float) -> dict:
    """A log written by a real `bentoml serve` under /predict load; returns the load figures."""
    import orjson

    from bench.loadgen import encode_post, run_load
    from bench.serving import customer_bodies, service_server

    # Distinct customers, as in real traffic: a few hundred bodies cycled compress far better.
    requests = [encode_post("/predict", orjson.dumps(b)) for b in customer_bodies(20_000)]
    server = service_server("log", directory.parent, {
        "inference_log": {"directory": str(directory)}})
    try:
        load = run_load(server.port, requests, 32, seconds=seconds).summary()
    finally:
        server.stop()  # SIGTERM: the writers drain and seal their files
    print(f"bentoml serve, 32 clients for {seconds:g} s: {load['req_s']} req/s", flush=True)
    return load


def alternatives(directory: Path, records: int) -> dict:
    """Bytes per record of the forms weighed against Parquet zstd, and their CPU."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from kernel.inference_log import list_log_files, read_log_file

    table = pa.concat_tables([read_log_file(f) for f in list_log_files(directory)])
    out = {}
    for codec in ("snappy", "gzip", "zstd"):
        sink = io.BytesIO()
        started = time.process_time()
        pq.write_table(table, sink, compression=codec)
        out[f"parquet_{codec}"] = {"bytes_per_record": round(sink.tell() / records, 1),
                                   "cpu_seconds": round(time.process_time() - started, 2)}
    for codec in ("lz4", "zstd"):
        sink = pa.BufferOutputStream()
        started = time.process_time()
        options = pa.ipc.IpcWriteOptions(compression=codec)
        with pa.ipc.new_stream(sink, table.schema, options=options) as stream:
            for batch in table.to_batches(max_chunksize=10_000):
                stream.write_batch(batch)
        out[f"arrows_{codec}"] = {
            "bytes_per_record": round(sink.getvalue().size / records, 1),
            "cpu_seconds": round(time.process_time() - started, 2)}
    return out


def read_back(directory: Path) -> dict:
    """``read_inference_log`` of the whole folder in a fresh process: seconds, peak RSS."""
    probe = ("import resource, sys, time; from kernel.inference_log import read_inference_log; "
             "t = time.perf_counter(); n = len(read_inference_log(sys.argv[1])); "
             "print(n, time.perf_counter() - t, "
             "resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)")
    done = subprocess.run([sys.executable, "-c", probe, str(directory)], cwd=REPO,
                          capture_output=True, text=True, check=True)
    rows, seconds, peak_kib = done.stdout.split()
    return {"records": int(rows), "seconds": round(float(seconds), 2),
            "peak_rss_mib": round(int(peak_kib) / 1024)}


def measure(directory: Path) -> dict:
    from kernel.inference_log import list_log_files, read_inference_log
    from monitoring.log_retention import compact

    files = list_log_files(directory)
    records = len(read_inference_log(directory, columns=["customer_id"]))
    written_bytes = sum(f.size for f in files)
    out: dict = {"records": records, "files": len(files),
                 "written_bytes_per_record": round(written_bytes / records, 1)}
    out["alternatives"] = alternatives(directory, records)
    out["read_written"] = read_back(directory)
    started = time.process_time()
    done = [compact(f) for f in files]
    cpu = time.process_time() - started
    assert sum(c.records for c in done) == records
    parquet_bytes = sum(f.size for f in list_log_files(directory))
    out["parquet_zstd_bytes_per_record"] = round(parquet_bytes / records, 1)
    out["compaction"] = {"cpu_seconds": round(cpu, 2), "records_per_cpu_second": round(
        records / cpu), "ratio": round(written_bytes / parquet_bytes, 1)}
    out["read_parquet"] = read_back(directory)
    out["per_day"] = {
        f"{rate}_req_s": {"records": rate * DAY,
                          "written_gb": round(rate * DAY * written_bytes / records / 1e9, 2),
                          "parquet_gb": round(rate * DAY * parquet_bytes / records / 1e9, 2)}
        for rate in RATES}
    return out


def report(results: dict) -> None:
    print(f"{results['records']:,} records in {results['files']} files")
    print(f"as written (Arrow stream): {results['written_bytes_per_record']} B/record; "
          "Parquet zstd: "
          f"{results['parquet_zstd_bytes_per_record']} B/record "
          f"({results['compaction']['ratio']}x smaller)")
    for name, alt in results["alternatives"].items():
        print(f"  {name:<15} {alt['bytes_per_record']:>6} B/record  {alt['cpu_seconds']} s CPU")
    print(f"compaction: {results['compaction']['records_per_cpu_second']:,} records per CPU "
          f"second")
    for form in ("written", "parquet"):
        r = results[f"read_{form}"]
        print(f"read back as {form}: {r['seconds']} s, peak RSS {r['peak_rss_mib']} MiB")
    for rate, day in results["per_day"].items():
        print(f"a day at {rate.replace('_', ' ').replace('req s', 'req/s')}: "
              f"{day['records']:,} records, {day['written_gb']} GB as written, "
              f"{day['parquet_gb']} GB as Parquet")


def arguments(parser) -> None:
    parser.add_argument("--records", type=int, default=200_000,
                        help="records of the synthetic log (default 200,000)")
    parser.add_argument("--serve", type=float, default=0, metavar="SECONDS",
                        help="measure the log a real `bentoml serve` writes under this many "
                        "seconds of /predict load instead (needs a champion)")


def run(args, scratch: Path) -> dict:
    directory = scratch / "inference_log"
    results: dict = {}
    if args.serve:
        results["source"] = "bentoml serve"
        results["load"] = served_log(directory, args.serve)
    else:
        results["source"] = "synthetic /predict-shaped records"
        synthetic_log(directory, args.records)
    results.update(measure(directory))
    shutil.rmtree(directory)
    report(results)
    return results


if __name__ == "__main__":
    run_benchmark("inference_log", __doc__, arguments, run)
