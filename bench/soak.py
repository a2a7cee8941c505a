"""Soak benchmark: ``python -m bench.soak`` (BENTOML_HOME must hold a model).

One `bentoml serve` (2 workers, inference log on) takes ``/predict`` at a fixed rate for
``--minutes`` while every worker's RSS and open file descriptors are sampled every
``--sample-seconds``. Reported: throughput, p50/p99 (from the schedule: no coordinated
omission), errors, and per worker the RSS at start, after warm-up and at the end, the slope after
warm-up (MB per minute, least squares) and whether it plateaus (the slope of the last third
against the slope of the first third after warm-up). Results: bench/results/soak-*.json.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import numpy as np
import orjson

from bench.harness import run_benchmark
from bench.loadgen import encode_post, run_load
from bench.serving import customer_bodies, service_server


def worker_processes(server_pid: int) -> list:
    """The service's worker processes (children of the circus arbiter that serve requests)."""
    import psutil

    children = psutil.Process(server_pid).children(recursive=True)
    return [p for p in children if "worker" in " ".join(p.cmdline()).lower()
            or "_bentoml_impl.worker" in " ".join(p.cmdline())] or children


def slope(minutes: np.ndarray, values: np.ndarray) -> float:
    """Least-squares slope (units per minute); 0 for fewer than 3 samples."""
    if len(minutes) < 3:
        return 0.0
    return float(np.polyfit(minutes, values, 1)[0])


def summarise(samples: list[dict], warmup_minutes: float) -> dict:
    out = {}
    for pid in sorted({s["pid"] for s in samples}):
        rows = [s for s in samples if s["pid"] == pid]
        t = np.array([r["minute"] for r in rows])
        rss = np.array([r["rss_mb"] for r in rows])
        fds = np.array([r["fds"] for r in rows])
        after = t >= warmup_minutes
        steady_t, steady_rss = t[after], rss[after]
        third = max(len(steady_t) // 3, 3)
        out[str(pid)] = {
            "rss_start_mb": round(float(rss[0]), 1),
            "rss_after_warmup_mb": round(float(steady_rss[0]), 1) if len(steady_rss) else None,
            "rss_end_mb": round(float(rss[-1]), 1),
            "slope_mb_per_min": round(slope(steady_t, steady_rss), 3),
            "slope_first_third": round(slope(steady_t[:third], steady_rss[:third]), 3),
            "slope_last_third": round(slope(steady_t[-third:], steady_rss[-third:]), 3),
            "fds_min": int(fds.min()), "fds_max": int(fds.max()),
        }
    return out


def arguments(parser) -> None:
    parser.add_argument("--minutes", type=float, default=10.0,
                        help="how long the fixed-rate load runs (default 10)")
    parser.add_argument("--rate", type=float, default=1500.0,
                        help="requests per second over all clients (default 1500)")
    parser.add_argument("--clients", type=int, default=16,
                        help="keep-alive connections (default 16)")
    parser.add_argument("--sample-seconds", type=float, default=10.0,
                        help="RSS / open-fd sampling interval (default 10)")
    parser.add_argument("--warmup-minutes", type=float, default=2.0,
                        help="left out of the slope (default 2)")


def run(args, scratch: Path) -> dict:
    requests = [encode_post("/predict", orjson.dumps(b)) for b in customer_bodies(500)]
    server = service_server("soak", scratch, {})
    try:
        workers = worker_processes(server.process.pid)
        samples: list[dict] = []
        done = threading.Event()
        started = time.monotonic()

        def sample() -> None:
            while not done.is_set():
                minute = (time.monotonic() - started) / 60
                for proc in workers:
                    try:
                        samples.append({"pid": proc.pid, "minute": round(minute, 3),
                                        "rss_mb": proc.memory_info().rss / 2**20,
                                        "fds": proc.num_fds()})
                    except Exception:  # noqa: BLE001 - a worker that died shows as a gap
                        continue
                done.wait(args.sample_seconds)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        result = run_load(server.port, requests, args.clients, seconds=args.minutes * 60,
                          warmup=0.0, rate=args.rate).summary()
        done.set()
        sampler.join()
        log_dir = scratch / "soak" / "inference_log"
        log_bytes = sum(p.stat().st_size for p in log_dir.glob("*") if p.is_file())
    finally:
        server.stop()
    report = {"load": result, "workers": summarise(samples, args.warmup_minutes),
              "inference_log_bytes": log_bytes}
    print(json.dumps(report, indent=2))
    return {**report, "samples": samples}


if __name__ == "__main__":
    run_benchmark("soak", __doc__, arguments, run)
