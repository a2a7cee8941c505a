"""Serving benchmark: ``python -m bench.serving`` (BENTOML_HOME must hold a champion).

In one run, on this machine, one server at a time so they never share the CPU:
1. the seed-style FastAPI server (baseline), the service with adaptive batching off, and the
   service as configured: ``/predict`` at 1, 8, 32 and 64 closed-loop clients;
2. ``/predict_batch`` with 10,000 customers (1 and 2 clients), and in-process decoding of the
   same body by stock pydantic vs the column-wise fast path;
3. ``churn score`` of 1,000,000 rows (wall time, peak memory);
then prints ratios, since absolute figures on a shared machine drift from run to run.
``--sweep`` also measures batching settings at 32 clients. Results: bench/results/*.json.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import orjson
import yaml

from bench.harness import run_benchmark
from bench.loadgen import encode_post, run_load
from kernel.processes import free_port, http_ok, start_process

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
LEVELS = (1, 8, 32, 64)
def service_workers() -> int:
    """Workers the benchmarked service runs (the config default); the baseline gets as many."""
    from service.config import ServiceConfig

    return ServiceConfig().workers


class Server:
    """A server subprocess in its own process group (kernel.processes), with its port."""

    def __init__(self, name: str, command: list[str], port: int, env: dict[str, str],
                 log: Path, ready_path: str = "/readyz"):
        self.name, self.port = name, port
        self.process = start_process(
            command, name=name, log_path=log, env=env, cwd=REPO, timeout=180,
            ready=lambda: http_ok(f"http://127.0.0.1:{port}{ready_path}"))

    def stop(self) -> None:
        self.process.stop()


def customer_bodies(n: int) -> list[dict]:
    """Request bodies of generated customers (the demo contract's fields, JSON types)."""
    from kernel.store import resolve_entry
    from service.schema import customer_body
    from training.generate import GeneratorConfig, generate_customers

    contract = resolve_entry().contract
    frame = generate_customers(GeneratorConfig(rows=n, seed=123))
    return [customer_body(contract, row) for row in frame.to_dict("records")]


def service_server(name: str, tmp: Path, overrides: dict) -> Server:
    config = {"inference_log": {"directory": str(tmp / name / "inference_log")}, **overrides}
    (tmp / name).mkdir(parents=True, exist_ok=True)
    path = tmp / name / "service.yaml"
    path.write_text(yaml.safe_dump(config))
    port = free_port()
    env = {**os.environ, "CHURN_SERVICE_CONFIG": str(path)}
    return Server(name, [str(BIN / "bentoml"), "serve", "service.service:ChurnService",
                         "--host", "127.0.0.1", "--port", str(port)], port, env,
                  tmp / name / "server.log")


def seed_server(tmp: Path, workers: int) -> Server:
    """The baseline with as many worker processes as the service (a fair comparison)."""
    port = free_port()
    (tmp / "seed").mkdir(parents=True, exist_ok=True)
    return Server("seed", [str(BIN / "uvicorn"), "bench.seed_server:app", "--host",
                           "127.0.0.1", "--port", str(port), "--log-level", "warning",
                           "--workers", str(workers)],
                  port, dict(os.environ), tmp / "seed" / "server.log")


def measure_predict(server: Server, requests: list[bytes], seconds: float,
                    levels: tuple[int, ...] = LEVELS) -> list[dict]:
    rows = []
    for clients in levels:
        result = run_load(server.port, requests, clients, seconds=seconds).summary()
        print(f"  {server.name:<14} {clients:>3} clients: {result['req_s']:>8.1f} req/s  "
              f"p50 {result['p50_ms']:>7.2f} ms  p99 {result['p99_ms']:>7.2f} ms  "
              f"errors {result['errors']} {result['statuses']}", flush=True)
        rows.append(result)
    return rows


def bench_predict(tmp: Path, bodies: list[dict], seconds: float, sweep: bool) -> dict:
    requests = [encode_post("/predict", orjson.dumps(b)) for b in bodies]
    out: dict = {}
    print("/predict, closed loop", flush=True)
    candidates = [("seed", None), ("batching_off", {"batching": {"enabled": False}}),
                  ("service", {})]
    for name, overrides in candidates:
        server = (seed_server(tmp, service_workers()) if overrides is None
                  else service_server(name, tmp, overrides))
        try:
            out[name] = measure_predict(server, requests, seconds)
        finally:
            server.stop()
    if sweep:
        out["sweep"] = {}
        print("batching settings at 32 clients", flush=True)
        for workers, size, latency in [(2, 16, 1000), (2, 64, 1000), (2, 256, 1000),
                                       (2, 64, 100), (2, 64, 20), (1, 64, 1000)]:
            key = f"workers={workers},max_batch_size={size},max_latency_ms={latency}"
            server = service_server(f"sweep-{workers}-{size}-{latency}", tmp, {
                "workers": workers,
                "batching": {"max_batch_size": size, "max_latency_ms": latency}})
            try:
                server.name = key
                out["sweep"][key] = measure_predict(server, requests, seconds, (32,))[0]
            finally:
                server.stop()
    return out


def bench_batch(tmp: Path, bodies: list[dict], seconds: float) -> dict:
    from kernel.store import resolve_entry
    from service.schema import batch_request_model, customer_model, example_customer
    from service.validation import BatchDecoder

    rows = (bodies * (10_000 // len(bodies) + 1))[:10_000]
    body = orjson.dumps({"customers": rows})
    contract = resolve_entry().contract
    batch_model = batch_request_model(customer_model(contract, example_customer(contract, None)),
                                      10_000)
    decoder = BatchDecoder(contract, batch_model, 10_000)

    def best(fn, repeat=5):
        times = []
        for _ in range(repeat):
            started = time.perf_counter()
            fn()
            times.append(time.perf_counter() - started)
        return min(times)

    stock = best(lambda: batch_model.model_validate_json(body))
    fast = best(lambda: decoder.decode(body))
    out = {"decode_rows_s": {"stock_pydantic": round(10_000 / stock),
                             "column_wise": round(10_000 / fast)}}
    print(f"/predict_batch body of 10,000 customers ({len(body) / 2**20:.1f} MiB): decoding "
          f"stock pydantic {out['decode_rows_s']['stock_pydantic']:,} rows/s, column-wise "
          f"{out['decode_rows_s']['column_wise']:,} rows/s", flush=True)
    request = [encode_post("/predict_batch", body)]
    server = service_server("batch", tmp, {})
    try:
        for clients in (1, 2):
            result = run_load(server.port, request, clients, seconds=seconds,
                              rows_per_request=10_000).summary()
            out[f"clients_{clients}"] = result
            print(f"  /predict_batch {clients} client(s): {result['rows_s']:>9,} rows/s  "
                  f"p50 {result['p50_ms']:.0f} ms  p99 {result['p99_ms']:.0f} ms  "
                  f"errors {result['errors']}", flush=True)
    finally:
        server.stop()
    return out


def bench_score(tmp: Path, rows: int, chunk_rows: int) -> dict:
    from training.generate import GeneratorConfig, generate_customers

    source = tmp / f"customers_{rows}.csv"
    if not source.exists():
        generate_customers(GeneratorConfig(rows=rows, seed=5)).to_csv(source, index=False)
    output = tmp / "scores.parquet"
    # A fresh parent whose only child is `churn score`, so its peak RSS is the command's own.
    probe = ("import resource, subprocess, sys, time; t = time.perf_counter(); "
             "r = subprocess.run(sys.argv[1:], capture_output=True, text=True); "
             "print(time.perf_counter() - t, "
             "resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, r.returncode); "
             "print(r.stderr[-2000:], file=sys.stderr)")
    done = subprocess.run([sys.executable, "-c", probe, str(BIN / "churn"), "score", "--input",
                           str(source), "--output", str(output), "--chunk-rows",
                           str(chunk_rows)], cwd=REPO, capture_output=True, text=True)
    seconds_text, peak_kib, code = done.stdout.split()
    if code != "0":
        raise RuntimeError(done.stderr[-2000:])
    seconds = float(seconds_text)
    peak = int(peak_kib)
    out = {"rows": rows, "chunk_rows": chunk_rows, "seconds": round(seconds, 1),
           "rows_s": round(rows / seconds), "peak_rss_mib": round(peak / 1024)}
    print(f"churn score {rows:,} rows (CSV, chunks of {chunk_rows:,}): {seconds:.1f} s, "
          f"{out['rows_s']:,} rows/s, peak RSS {out['peak_rss_mib']} MiB", flush=True)
    return out


def ratios(predict: dict) -> dict:
    def at(name, clients):
        return next(r for r in predict[name] if r["clients"] == clients)

    out = {}
    for clients in LEVELS:
        seed, off, on = at("seed", clients), at("batching_off", clients), at("service",
                                                                               clients)
        out[clients] = {"service_vs_seed": round(on["req_s"] / seed["req_s"], 2),
                        "batching_on_vs_off": round(on["req_s"] / off["req_s"], 2)}
    return out


def arguments(parser) -> None:
    parser.add_argument("--seconds", type=float, default=10.0,
                        help="measured time per concurrency level (default 10)")
    parser.add_argument("--score-rows", type=int, default=1_000_000,
                        help="rows of the generated table `churn score` scores (default 1M)")
    parser.add_argument("--chunk-rows", type=int, default=100_000,
                        help="`churn score --chunk-rows` (default 100,000)")
    parser.add_argument("--sweep", action="store_true",
                        help="also compare batching settings (max_latency_ms, max_batch_size, "
                        "workers) at 32 clients")
    parser.add_argument("--skip", nargs="*", default=[], choices=["predict", "batch", "score"],
                        help="parts to leave out: /predict levels, /predict_batch, churn score")


def run(args, scratch: Path) -> dict:
    results: dict = {}
    bodies = customer_bodies(500)
    if "predict" not in args.skip:
        results["predict"] = bench_predict(scratch, bodies, args.seconds, args.sweep)
        results["ratios"] = ratios(results["predict"])
        for clients, r in results["ratios"].items():
            print(f"  {clients:>3} clients: service {r['service_vs_seed']}x seed-style, "
                  f"batching on {r['batching_on_vs_off']}x off", flush=True)
    if "batch" not in args.skip:
        results["predict_batch"] = bench_batch(scratch, bodies, args.seconds)
    if "score" not in args.skip:  # two chunk sizes: memory follows the chunk, not the table
        results["score"] = [bench_score(scratch, args.score_rows, chunk)
                            for chunk in (args.chunk_rows // 4, args.chunk_rows)]
    return results


if __name__ == "__main__":
    run_benchmark("serving", __doc__, arguments, run)
