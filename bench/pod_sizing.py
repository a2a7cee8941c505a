"""Pod sizing: memory, CPU per request and inference-log bytes per record of a real `bentoml serve`.

The numbers in k8s/ (requests, limits, replicas, the inference-log volume) come from this run:

    .venv/bin/python -m bench.pod_sizing [--workers 1 2] [--clients 16] [--seconds 20]

For each worker count it starts the service (the store's champion, or $CHURN_MODEL_TAG) with
its inference log on, then: idle memory after start-up; /predict under a closed loop of
keep-alive clients (CPU seconds per request, cores used, peak memory); /predict_batch with
10,000 customers from 2 clients (the memory peak of the largest body a client may send); and the
inference log's bytes per JSON-lines record. Memory is the process tree's PSS (what a cgroup
charges, shared pages split) and RSS (an upper bound). CPU per request is measured from the
server's own CPU time, so it holds on a shared machine where wall-clock throughput does not.
"""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

import orjson
import psutil

from bench.harness import run_benchmark
from bench.loadgen import encode_post, run_load
from bench.serving import customer_bodies, service_server
from kernel.inference_log import list_log_files, read_log_file

MIB = 1024 * 1024


class TreeSampler:
    """Peak PSS/RSS of a process and its children, sampled every ``interval`` seconds."""

    def __init__(self, pid: int, interval: float = 0.25):
        self.root = psutil.Process(pid)
        self.interval = interval
        self.peak_pss = self.peak_rss = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def processes(self) -> list[psutil.Process]:
        return [self.root, *self.root.children(recursive=True)]

    def memory(self) -> tuple[int, int]:
        pss = rss = 0
        for process in self.processes():
            try:
                info = process.memory_full_info()
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
            pss, rss = pss + info.pss, rss + info.rss
        return pss, rss

    def cpu_seconds(self) -> float:
        total = 0.0
        for process in self.processes():
            try:
                times = process.cpu_times()
            except psutil.NoSuchProcess:
                continue
            total += times.user + times.system
        return total

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            pss, rss = self.memory()
            self.peak_pss, self.peak_rss = max(self.peak_pss, pss), max(self.peak_rss, rss)

    def __enter__(self) -> TreeSampler:
        self.peak_pss, self.peak_rss = self.memory()
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *_) -> None:
        self._stop.set()
        self._thread.join()


def log_bytes_per_record(directory: Path) -> dict:
    files = list_log_files(directory)
    size = sum(f.size for f in files)
    records = sum(len(read_log_file(f) or []) for f in files)
    return {"files": len(files), "records": records, "bytes": size,
            "bytes_per_record": round(size / records, 1) if records else None}


def measure(workers: int, bodies: list[dict], clients: int, seconds: float, tmp: Path) -> dict:
    name = f"workers-{workers}"
    server = service_server(name, tmp, {"workers": workers})
    try:
        pid = server.process.popen.pid
        time.sleep(3)  # let every worker finish its warm-up after /readyz answered
        sampler = TreeSampler(pid)
        idle_pss, idle_rss = sampler.memory()
        predict = [encode_post("/predict", orjson.dumps(b)) for b in bodies]
        run_load(server.port, predict, clients, seconds=3, warmup=0)  # JIT/allocator warm-up
        with sampler:
            cpu_before = sampler.cpu_seconds()
            result = run_load(server.port, predict, clients, seconds=seconds, warmup=0)
            cpu = sampler.cpu_seconds() - cpu_before
        summary = result.summary()
        predict_peak = sampler.peak_pss, sampler.peak_rss
        batch_body = encode_post("/predict_batch", orjson.dumps({"customers": bodies[:10_000]}))
        with sampler:
            batch = run_load(server.port, [batch_body], 2, seconds=seconds / 2, warmup=0,
                             rows_per_request=10_000).summary()
        batch_peak = sampler.peak_pss, sampler.peak_rss
    finally:
        server.stop()
    requests = result.ok + result.errors
    return {
        "workers": workers, "clients": clients, "seconds": seconds,
        "load_average_1m": round(os.getloadavg()[0], 2),
        "idle_pss_mib": round(idle_pss / MIB), "idle_rss_mib": round(idle_rss / MIB),
        "predict": summary,
        "predict_cpu_ms_per_request": round(1000 * cpu / max(requests, 1), 3),
        "predict_cores_used": round(cpu / seconds, 2),
        "predict_peak_pss_mib": round(predict_peak[0] / MIB),
        "predict_peak_rss_mib": round(predict_peak[1] / MIB),
        "batch_10000": batch,
        "batch_peak_pss_mib": round(batch_peak[0] / MIB),
        "batch_peak_rss_mib": round(batch_peak[1] / MIB),
        "inference_log": log_bytes_per_record(tmp / name / "inference_log"),
    }


def arguments(parser) -> None:
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2],
                        help="BentoML workers per pod, one run each (default 1 2)")
    parser.add_argument("--clients", type=int, default=16, help="keep-alive clients (16)")
    parser.add_argument("--seconds", type=float, default=20.0, help="measured time per run")


def run(args, scratch: Path) -> list[dict]:
    bodies = customer_bodies(10_000)
    results = []
    for workers in args.workers:
        row = measure(workers, bodies, args.clients, args.seconds, scratch)
        print(json.dumps(row), flush=True)
        results.append(row)
    return results


if __name__ == "__main__":
    run_benchmark("pod_sizing", __doc__, arguments, run)
