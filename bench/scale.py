"""Scale benchmark: ``python -m bench.scale`` (figures in docs/scale.md).

For each size (default 1M, 2M, 5M, 10M rows):

- ``churn score`` in one process vs ``churn score --dask`` (a LocalCluster sized to the
  machine) on one generated Parquet file of that many customers (100k-row groups): wall time,
  rows/s, peak RSS of the run's processes, and the peak RSS per Dask worker the command reports
  (bounded by the partition size if the design holds: the same at 1M and at 10M rows);
- ``churn drift`` on that many logged inferences, written directly as compacted Parquet
  inference-log files named as the service and ``churn log compact`` name them (100k records
  per file, the last 24 hours), with ``--dask`` for every size and in one process (today's
  path) for the sizes of ``--drift-single-sizes`` only: what it can hold on this machine.

Every command runs as a subprocess, timed by wall clock; its peak memory is the largest RSS
of its processes (read by a small wrapper process from ``getrusage``, see ``timed``).
BENTOML_HOME must hold a champion (``make train``), as for bench.serving. Data goes
to ``--work`` (default a temp folder, removed unless ``--keep``); results to
bench/results/scale-*.json and a Markdown table on stdout.

Quick check (a few minutes, mostly start-up): ``python -m bench.scale --sizes 20000,50000
--drift-single-sizes 20000,50000``. The real figures want a quiet machine: see docs/scale.md.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np

from bench.harness import run_benchmark

REPO = Path(__file__).resolve().parents[1]
CHURN = str(Path(sys.executable).with_name("churn"))
BLOCK_ROWS = 500_000  # generated and written a block at a time: the bench's own memory bound
ROW_GROUP_ROWS = 100_000
RECORDS_PER_FILE = 100_000  # about what a 64 MiB JSON-lines file holds before compaction
_WORKER_PEAK = re.compile(r"peak memory per worker:? (\d+) MiB")


@dataclass
class Run:
    command: str
    size: int
    mode: str  # "single" or "dask"
    seconds: float
    peak_rss_mib: float  # the largest process of the run (for dask: the client or a worker)
    worker_peak_mib: float | None
    rows_per_second: float
    exit_code: int


# A forked child starts with its parent's memory high-water mark (Linux keeps it across
# exec), and this process holds generated data: so a small fresh Python starts the command and
# reports the peak of the processes it waited for (the command and, through their parents, a
# LocalCluster's workers).
_MEASURE = ("import resource, subprocess, sys; code = subprocess.call(sys.argv[1:]); "
            "peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss; "
            "print(f'__peak_rss_kib {peak}', file=sys.stderr); sys.exit(code)")
_PEAK = re.compile(r"__peak_rss_kib (\d+)")


def timed(args: list[str], size: int, mode: str, what: str) -> Run:
    """Run ``churn <args>``: wall time, peak RSS of its processes, its own worker report."""
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", _MEASURE, CHURN, *args], cwd=REPO, text=True,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    seconds = time.perf_counter() - started
    output, code = done.stdout, done.returncode
    if code != 0:
        print(output[-3000:], file=sys.stderr)
    match = _WORKER_PEAK.search(output)
    peak = _PEAK.search(output)
    run = Run(command=what, size=size, mode=mode, seconds=round(seconds, 2),
              peak_rss_mib=round(int(peak.group(1)) / 1024, 1) if peak else float("nan"),
              worker_peak_mib=float(match.group(1)) if match else None,
              rows_per_second=round(size / seconds), exit_code=code)
    print(f"  {what:<6} {mode:<6} {size:>11,} rows  {seconds:8.1f} s  {run.rows_per_second:>9,} "
          f"rows/s  peak {run.peak_rss_mib:8.0f} MiB  worker {run.worker_peak_mib or '-'} MiB",
          flush=True)
    return run


def write_customers(path: Path, rows: int) -> None:
    """``rows`` generated customers in one Parquet file, written a block at a time."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from training.generate import GeneratorConfig, generate_customers

    writer = None
    for start in range(0, rows, BLOCK_ROWS):
        block = generate_customers(GeneratorConfig(rows=min(BLOCK_ROWS, rows - start),
                                                   seed=1000 + start // BLOCK_ROWS))
        block["customer_id"] = [f"C{start + i:09d}" for i in range(len(block))]
        table = pa.Table.from_pandas(block, preserve_index=False)
        if writer is None:
            writer = pq.ParquetWriter(path, table.schema)
        writer.write_table(table.cast(writer.schema), row_group_size=ROW_GROUP_ROWS)
    writer.close()


def write_inference_log(directory: Path, records: int, entry, now: datetime) -> None:
    """``records`` logged inferences of the last 24 hours as compacted Parquet files, named
    ``inferences-<opened>-<pod>-<pid>-<n>.parquet`` with the columns the service logs."""
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq

    from training.generate import GeneratorConfig, generate_customers

    directory.mkdir(parents=True, exist_ok=True)
    contract = entry.contract
    files = max(1, -(-records // RECORDS_PER_FILE))
    span = timedelta(hours=23)  # inside drift.window (24h) with room for the clock margin
    rng = np.random.default_rng(5)
    pods = ["churn-serve-7d9f8b6c4-x2k9p", "churn-serve-7d9f8b6c4-q8w3z"]
    for n in range(files):
        count = min(RECORDS_PER_FILE, records - n * RECORDS_PER_FILE)
        opened = now - span + span * n / files
        customers = generate_customers(GeneratorConfig(rows=count, seed=2000 + n,
                                                       drifted=n % 3 == 0))
        offsets = np.sort(rng.random(count)) * (span / files).total_seconds()
        stamps = pd.Timestamp(opened) + pd.to_timedelta(offsets, unit="s")
        probability = rng.beta(1.5, 6, count)
        columns = {
            "timestamp": pa.array(stamps, pa.timestamp("ns", "UTC")),
            "request_id": [f"req-{n}-{i}" for i in range(count)],
            "model_tag": [entry.tag] * count, "model_version": [entry.version] * count,
            "customer_id": customers[contract.id].astype(str).tolist(),
        }
        for name, spec in contract.features.items():
            values = customers[name]
            columns[name] = (values.astype(object).where(values.notna(), None).tolist()
                             if spec.type == "categorical" else values.astype(float).to_numpy())
        columns |= {"churn_probability": probability,
                    "will_churn": probability >= entry.metadata.threshold,
                    "risk_level": np.where(probability >= entry.metadata.threshold, "HIGH",
                                           "LOW"),
                    "unseen_categories": pa.array([[]] * count, pa.list_(pa.string()))}
        pod = pods[n % len(pods)]
        name = f"inferences-{opened:%Y%m%dT%H%M%S}-{pod}-{1 + n % 2}-{n // 2 + 1}.parquet"
        path = directory / name
        pq.write_table(pa.table(columns), path, compression="zstd")
        last = (opened + span / files).timestamp()
        os.utime(path, (last, last))  # compaction keeps the JSON file's time


def arguments(parser) -> None:
    parser.add_argument("--sizes", default="1000000,2000000,5000000,10000000",
                        help="row counts to run, comma-separated (default 1M,2M,5M,10M)")
    parser.add_argument("--drift-single-sizes", default="1000000,2000000",
                        help="sizes at which `churn drift` also runs in one process (today's "
                        "path holds every row in memory: keep these within the machine)")
    parser.add_argument("--skip", choices=["score", "drift"], action="append", default=[],
                        help="leave out the scoring or the drift part")
    parser.add_argument("--work", type=Path, default=None,
                        help="folder for the generated data (default: the scratch folder)")
    parser.add_argument("--keep", action="store_true",
                        help="keep the generated data (with --work)")


def run(args, scratch: Path) -> dict:
    sizes = [int(s) for s in args.sizes.split(",")]
    single_drift = {int(s) for s in args.drift_single_sizes.split(",") if s}

    from kernel.store import resolve_entry

    entry = resolve_entry()
    work = args.work or scratch
    work.mkdir(parents=True, exist_ok=True)
    runs: list[Run] = []
    try:
        for size in sizes:
            print(f"{size:,} rows", flush=True)
            if "score" not in args.skip:
                source = work / f"customers-{size}.parquet"
                write_customers(source, size)
                runs.append(timed(["score", "--input", str(source), "--output",
                                   str(work / "scores.parquet")], size, "single", "score"))
                runs.append(timed(["score", "--input", str(source), "--output",
                                   str(work / "scores"), "--dask"], size, "dask", "score"))
                source.unlink()
            if "drift" not in args.skip:
                log_dir = work / f"inference_log-{size}"
                write_inference_log(log_dir, size, entry, datetime.now(UTC))
                common = ["drift", "--window", "24h", "--inference-log", str(log_dir),
                          "--report-dir", str(work / "reports"), "--no-push"]
                if size in single_drift:
                    runs.append(timed(common, size, "single", "drift"))
                runs.append(timed([*common, "--dask"], size, "dask", "drift"))
                shutil.rmtree(log_dir)
    finally:
        if args.work and not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    print(f"\nload average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs\n")
    print("| command | rows | mode | seconds | rows/s | peak RSS (MiB) | peak per worker (MiB) |")
    print("| --- | ---: | --- | ---: | ---: | ---: | ---: |")
    for r in runs:
        state = "" if r.exit_code == 0 else f" (exit {r.exit_code})"
        print(f"| churn {r.command} | {r.size:,} | {r.mode}{state} | {r.seconds:.1f} | "
              f"{r.rows_per_second:,} | {r.peak_rss_mib:.0f} | "
              f"{r.worker_peak_mib if r.worker_peak_mib is not None else '-'} |")
    return {"model": entry.tag, "runs": [asdict(r) for r in runs]}


if __name__ == "__main__":
    run_benchmark("scale", __doc__, arguments, run)
