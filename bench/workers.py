"""Pod shape: how keep-alive connections spread over a server's BentoML workers.
``python -m bench.workers`` (= ``make bench-workers``; BENTOML_HOME must hold a champion).

BentoML 1.4 serves through one listening socket that circus opens and hands to every worker
(``--fd``): the workers share one accept queue. Each worker's event loop waits on it; a new
connection wakes them, and the first to run accepts in a loop until the queue is empty (uvloop
and asyncio both do), so a burst of connections can land on one worker, and keep-alive keeps
it there. This bench measures, one server at a time, at ``--clients`` keep-alive clients on
``/predict``: 1 worker; 2 workers with every client connecting at once (what a load balancer
or a client pool opening its connections does); 2 workers with the connections spread over
``--ramp`` seconds. Per worker it counts the open connections (sampled during the run) and the
requests answered (inference-log records, whose file names carry the worker's pid).
Results: bench/results/workers-*.json, with the load average (the machine is shared).
"""

from __future__ import annotations

import os
import threading
import time
from collections import Counter
from pathlib import Path

import orjson
import psutil

from bench.harness import run_benchmark
from bench.loadgen import encode_post, run_load
from bench.serving import customer_bodies, service_server
from kernel.inference_log import list_log_files, read_log_file


def connections_per_worker(server_pid: int, port: int) -> dict[int, int]:
    """Established connections on ``port`` held by each process under ``server_pid``."""
    counts = {}
    for process in psutil.Process(server_pid).children(recursive=True):
        try:
            held = process.net_connections(kind="tcp")
        except psutil.Error:
            continue
        counts[process.pid] = sum(1 for c in held if c.status == psutil.CONN_ESTABLISHED
                                  and c.laddr and c.laddr.port == port)
    return {pid: n for pid, n in counts.items() if n}


def records_per_worker(log_dir: Path) -> dict[int, int]:
    """Inference-log records written by each worker pid (one per answered /predict)."""
    counts: Counter[int] = Counter()
    for log_file in list_log_files(log_dir):
        counts[log_file.name.pid] += len(read_log_file(log_file) or [])
    return dict(counts)


def measure_shape(tmp: Path, name: str, workers: int, requests: list[bytes], clients: int,
                  seconds: float, ramp: float) -> dict:
    server = service_server(name, tmp, {"workers": workers})
    log_dir = tmp / name / "inference_log"
    samples: list[dict[int, int]] = []
    stop = threading.Event()

    def sample() -> None:
        time.sleep(2.5)  # after the warm-up, when every client has connected
        while not stop.wait(1.0):
            samples.append(connections_per_worker(server.process.pid, server.port))

    sampler = threading.Thread(target=sample, daemon=True)
    load_before = os.getloadavg()[0]
    try:
        sampler.start()
        result = run_load(server.port, requests, clients, seconds=seconds, warmup=2.5,
                          ramp=ramp).summary()
        stop.set()
        sampler.join()
    finally:
        server.stop()  # SIGTERM: the workers drain their inference log before exiting
    per_worker = records_per_worker(log_dir)
    connections = max(samples, key=len) if samples else {}
    total = sum(per_worker.values()) or 1
    row = {"shape": name, "workers": workers, "clients": clients, "ramp_s": ramp,
           "req_s": result["req_s"], "p50_ms": result["p50_ms"], "p99_ms": result["p99_ms"],
           "errors": result["errors"],
           "connections_per_worker": sorted(connections.values(), reverse=True),
           "request_share_per_worker": sorted((round(n / total, 3) for n in per_worker.values()),
                                              reverse=True),
           "load_avg_1m": round(load_before, 2)}
    print(f"  {name:<22} {row['req_s']:>7.1f} req/s  p50 {row['p50_ms']:>6.2f} ms  "
          f"p99 {row['p99_ms']:>7.2f} ms  connections/worker {row['connections_per_worker']}  "
          f"requests/worker {row['request_share_per_worker']}  load {row['load_avg_1m']}",
          flush=True)
    return row


def arguments(parser) -> None:
    parser.add_argument("--clients", type=int, default=16, help="keep-alive clients (16)")
    parser.add_argument("--seconds", type=float, default=20.0, help="measured time per shape")
    parser.add_argument("--ramp", type=float, default=2.0,
                        help="seconds over which the staggered run opens its connections")
    parser.add_argument("--repeat", type=int, default=1, help="runs of each shape")


def run(args, scratch: Path) -> list[dict]:
    requests = [encode_post("/predict", orjson.dumps(b)) for b in customer_bodies(500)]
    shapes = [("1 worker", 1, 0.0), ("2 workers, burst", 2, 0.0),
              ("2 workers, staggered", 2, args.ramp)]
    rows = []
    print(f"/predict, {args.clients} keep-alive clients, {args.seconds:.0f} s per run", flush=True)
    for repeat in range(args.repeat):
        for name, workers, ramp in shapes:
            key = f"{name.replace(' ', '').replace(',', '-')}-{repeat}"
            row = measure_shape(scratch, key, workers, requests, args.clients, args.seconds,
                                ramp)
            rows.append({**row, "shape": name, "run": repeat})
    return rows


if __name__ == "__main__":
    run_benchmark("workers", __doc__, arguments, run)
