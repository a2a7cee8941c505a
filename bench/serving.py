"""Serving benchmark: ``python -m bench.serving`` (BENTOML_HOME must hold a champion).

In one run, on this machine, one server at a time so they never share the CPU:
1. the seed-style FastAPI server (baseline), the service with adaptive batching off, and the
   service as configured: ``/predict`` at 1, 8, 32 and 64 closed-loop clients, then the same
   service's ``GET /livez`` at 64 clients (BentoML's floor: an empty answer);
2. peers (``--skip peers`` leaves them out): LitServe and MLServer serving the same model file
   with the service's scoring code and the same batching limits, at 32 and 64 clients, each
   installed on first use in its own virtualenv (``bench/peers``);
3. ``/predict_batch`` with 10,000 customers (1 and 2 clients; then 1 client with the
   inference log off: what logging every row costs), and in-process decoding of the same body
   by stock pydantic vs the column-wise fast path (one thread);
4. ``churn score`` of 1,000,000 rows (wall time, peak memory);
then prints ratios and the issue-20 targets, met or not. The load generator is wrk when
installed (``make bench-deps``), else ``bench/loadgen.py``; every cell also records the server's
CPU milliseconds per request, which stay comparable when other jobs share the machine.
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

from bench import peers, wrk
from bench.harness import run_benchmark
from bench.loadgen import encode_post, run_load
from kernel.processes import free_port, http_ok, start_process

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
LEVELS = (1, 8, 32, 64)
PEER_LEVELS = (32, 64)
TARGETS = {"p99_ms_at_32": 30.0, "share_of_livez_at_64": 0.5, "times_each_peer": 2.0,
           "batch_rows_s_1_client": 200_000}


def service_workers() -> int:
    """Workers the benchmarked service runs (the config default); the baseline gets as many."""
    from service.config import ServiceConfig

    return ServiceConfig().workers


class Server:
    """A server subprocess in its own process group (kernel.processes), with its port."""

    def __init__(self, name: str, command: list[str], port: int, env: dict[str, str],
                 log: Path, ready_path: str = "/readyz", path: str = "/predict",
                 cwd: Path = REPO):
        self.name, self.port, self.path = name, port, path
        self.process = start_process(
            command, name=name, log_path=log, env=env, cwd=cwd, timeout=300,
            ready=lambda: http_ok(f"http://127.0.0.1:{port}{ready_path}"))

    def stop(self) -> None:
        self.process.stop()


class Load:
    """The load generator of this run: wrk when installed (``--generator``), else Python's;
    each cell also records the server's CPU per request."""

    def __init__(self, generator: str, scratch: Path):
        self.wrk = generator == "wrk" or (generator == "auto" and wrk.available())
        self.name = wrk.generator_name() if self.wrk else "bench/loadgen.py (Python, asyncio)"
        self.scratch = scratch

    def run(self, server: Server, bodies: list[bytes], clients: int, seconds: float,
            path: str | None = None, rows_per_request: int = 1) -> dict:
        path = path or server.path
        if self.wrk:
            def load(duration: float) -> dict:
                return wrk.run_wrk(server.port, path, bodies, clients, duration, self.scratch,
                                   warmup=0, rows_per_request=rows_per_request)
        else:
            requests = ([encode_post(path, body) for body in bodies] if bodies else
                        [f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode()])

            def load(duration: float) -> dict:
                loaded = run_load(server.port, requests, clients, seconds=duration, warmup=0,
                                  rows_per_request=rows_per_request)
                return {**loaded.summary(), "requests": len(loaded.latencies)}
        load(2.0)  # warm-up: connections, BentoML's batching optimizer
        cpu = wrk.server_cpu(server.process.pid)
        result = load(seconds)
        cpu = wrk.server_cpu(server.process.pid) - cpu
        result["cpu_ms_per_request"] = round(1000 * cpu / max(1, result.get("requests", 0)), 3)
        return result


def customer_bodies(n: int) -> list[dict]:
    """Request bodies of generated customers (the demo contract's fields, JSON types)."""
    from kernel.store import resolve_entry
    from service.schema import customer_body
    from training.generate import GeneratorConfig, generate_customers

    contract = resolve_entry().contract
    frame = generate_customers(GeneratorConfig(rows=n, seed=123))
    return [customer_body(contract, row) for row in frame.to_dict("records")]


def service_server(name: str, tmp: Path, overrides: dict, code: Path = REPO) -> Server:
    """``bentoml serve`` of this checkout (or of ``code``, another one) with ``overrides``."""
    config = {"inference_log": {"directory": str(tmp / name / "inference_log")}, **overrides}
    (tmp / name).mkdir(parents=True, exist_ok=True)
    path = tmp / name / "service.yaml"
    path.write_text(yaml.safe_dump(config))
    port = free_port()
    env = {**os.environ, "CHURN_SERVICE_CONFIG": str(path)}
    if code != REPO:
        env["PYTHONPATH"] = str(code)
    return Server(name, [str(BIN / "bentoml"), "serve", "service.service:ChurnService",
                         "--host", "127.0.0.1", "--port", str(port)], port, env,
                  tmp / name / "server.log", cwd=code)


def seed_server(tmp: Path, workers: int) -> Server:
    """The baseline with as many worker processes as the service (a fair comparison)."""
    port = free_port()
    (tmp / "seed").mkdir(parents=True, exist_ok=True)
    return Server("seed", [str(BIN / "uvicorn"), "bench.seed_server:app", "--host",
                           "127.0.0.1", "--port", str(port), "--log-level", "warning",
                           "--workers", str(workers)],
                  port, dict(os.environ), tmp / "seed" / "server.log")


def measure_predict(load: Load, server: Server, bodies: list[bytes], seconds: float,
                    levels: tuple[int, ...] = LEVELS, path: str | None = None) -> list[dict]:
    rows = []
    for clients in levels:
        result = load.run(server, bodies, clients, seconds, path=path)
        print(f"  {server.name:<14} {path or server.path:<8} {clients:>3} clients: "
              f"{result['req_s']:>8.1f} req/s  p50 {result['p50_ms']:>7.2f} ms  "
              f"p99 {result['p99_ms']:>7.2f} ms  cpu {result['cpu_ms_per_request']:.2f} ms/req  "
              f"errors {result['errors']}", flush=True)
        rows.append(result)
    return rows


def bench_predict(load: Load, tmp: Path, bodies: list[dict], seconds: float,
                  sweep: bool) -> dict:
    requests = [orjson.dumps(b) for b in bodies]
    out: dict = {}
    print("/predict, closed loop", flush=True)
    candidates = [("seed", None), ("batching_off", {"batching": {"enabled": False}}),
                  ("service", {})]
    for name, overrides in candidates:
        server = (seed_server(tmp, service_workers()) if overrides is None
                  else service_server(name, tmp, overrides))
        try:
            out[name] = measure_predict(load, server, requests, seconds)
            if name == "service":  # the framework's floor, on the same server
                out["livez"] = measure_predict(load, server, [], seconds, (64,), "/livez")
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
                out["sweep"][key] = measure_predict(load, server, requests, seconds, (32,))[0]
            finally:
                server.stop()
    return out


def peer_server(peer: str, tmp: Path, bundle: Path, max_wait_ms: float) -> Server:
    """LitServe or MLServer with the service's workers and max_batch_size (bench/peers)."""
    from service.config import ServiceConfig

    config = ServiceConfig()
    python = peers.python_of(peer)
    port = free_port()
    folder = tmp / peer
    folder.mkdir(parents=True, exist_ok=True)
    env = peers.peer_env(bundle)
    if peer == "litserve":
        return Server(peer, [str(python), "-m", "bench.peers.litserve_server", str(port),
                             str(config.workers), str(config.batching.max_batch_size),
                             str(max_wait_ms / 1000)], port, env, folder / "server.log",
                      ready_path="/health")
    peers.mlserver_settings(folder, port, free_port(), free_port(), config.workers,
                            config.batching.max_batch_size, max_wait_ms / 1000)
    return Server(peer, [str(python.parent / "mlserver"), "start", str(folder)], port, env,
                  folder / "server.log", ready_path="/v2/models/churn/ready",
                  path="/v2/models/churn/infer")


def bench_peers(load: Load, tmp: Path, bodies: list[dict], seconds: float,
                max_waits_ms: list[float]) -> dict:
    """Each peer at each batching wait; the targets compare with each peer's best."""
    from kernel.store import resolve_entry

    bundle = peers.export_model(resolve_entry(), tmp)
    out: dict = {}
    print("peers: the same model file and scoring code, max_batch_size and workers as the "
          f"service, waiting at most {max_waits_ms} ms to fill a batch", flush=True)
    for peer in peers.PEERS:
        requests = [orjson.dumps(b) if peer == "litserve" else peers.v2_request(b)
                    for b in bodies]
        out[peer] = {}
        for wait in max_waits_ms:
            server = peer_server(peer, tmp, bundle, wait)
            server.name = f"{peer} {wait:g} ms"
            try:
                out[peer][f"{wait:g}"] = measure_predict(load, server, requests, seconds,
                                                         PEER_LEVELS)
            finally:
                server.stop()
    return out


def best_of(settings: dict[str, list[dict]]) -> list[dict]:
    """Per client count, the peer's best throughput over its batching settings."""
    cells = [row for rows in settings.values() for row in rows]
    return [max((r for r in cells if r["clients"] == clients), key=lambda r: r["req_s"])
            for clients in sorted({r["clients"] for r in cells})]


def bench_batch(load: Load, tmp: Path, bodies: list[dict], seconds: float) -> dict:
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
    # The service as configured, then with its inference log off: what logging every row costs.
    for name, overrides, levels in (("", {}, (1, 2)),
                                    ("_log_off", {"inference_log": {"enabled": False}}, (1,))):
        server = service_server(f"batch{name}", tmp, overrides)
        server.path = "/predict_batch"
        try:
            for clients in levels:
                result = load.run(server, [body], clients, seconds, rows_per_request=10_000)
                out[f"clients_{clients}{name}"] = result
                print(f"  /predict_batch {clients} client(s){name.replace('_', ' ')}: "
                      f"{result['rows_s']:>9,} rows/s  p50 {result['p50_ms']:.0f} ms  "
                      f"p99 {result['p99_ms']:.0f} ms  cpu {result['cpu_ms_per_request']:.0f} "
                      f"ms/req  errors {result['errors']}", flush=True)
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


def targets(results: dict) -> dict:
    """Issue 20's serving targets, each with the measured figure and whether it is met."""
    out: dict = {}
    predict = results.get("predict")
    if predict:
        service = {r["clients"]: r for r in predict["service"]}
        livez = predict["livez"][0]
        out["p99_ms_at_32"] = {"measured": service[32]["p99_ms"],
                               "met": service[32]["p99_ms"] < TARGETS["p99_ms_at_32"]}
        share = service[64]["req_s"] / livez["req_s"]
        out["share_of_livez_at_64"] = {"measured": round(share, 2),
                                       "met": share >= TARGETS["share_of_livez_at_64"]}
        for peer, settings in (results.get("peers") or {}).items():
            times = min(service[r["clients"]]["req_s"] / max(r["req_s"], 1e-9)
                        for r in best_of(settings))
            out[f"times_{peer}"] = {"measured": round(times, 2),
                                    "met": times >= TARGETS["times_each_peer"]}
    if results.get("predict_batch"):
        rows_s = results["predict_batch"]["clients_1"]["rows_s"]
        out["batch_rows_s_1_client"] = {"measured": rows_s,
                                        "met": rows_s >= TARGETS["batch_rows_s_1_client"]}
    cells = [r for rows in (results.get("predict") or {}).values() if isinstance(rows, list)
             for r in rows]
    cells += [r for settings in (results.get("peers") or {}).values()
              for rows in settings.values() for r in rows]
    cells += [v for k, v in (results.get("predict_batch") or {}).items()
              if k.startswith("clients_")]
    errors = sum(c["errors"] for c in cells)
    out["zero_errors"] = {"measured": errors, "met": errors == 0}
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
    parser.add_argument("--generator", choices=["auto", "wrk", "python"], default="auto",
                        help="load generator: wrk when installed (auto), or bench/loadgen.py")
    parser.add_argument("--peer-max-wait-ms", type=float, nargs="+", default=[1.0, 10.0],
                        help="how long LitServe and MLServer may wait to fill a batch "
                        "(batch_timeout, max_batch_time), each measured; the targets take "
                        "each peer's best (default 1 10)")
    parser.add_argument("--skip", nargs="*", default=[],
                        choices=["predict", "peers", "batch", "score"],
                        help="parts to leave out: /predict levels (and /livez), the peer "
                        "servers, /predict_batch, churn score")


def run(args, scratch: Path) -> dict:
    load = Load(args.generator, scratch)
    results: dict = {"generator": load.name}
    print(f"load generator: {load.name}; load average {os.getloadavg()}", flush=True)
    bodies = customer_bodies(500)
    if "predict" not in args.skip:
        results["predict"] = bench_predict(load, scratch, bodies, args.seconds, args.sweep)
        results["ratios"] = ratios(results["predict"])
        for clients, r in results["ratios"].items():
            print(f"  {clients:>3} clients: service {r['service_vs_seed']}x seed-style, "
                  f"batching on {r['batching_on_vs_off']}x off", flush=True)
    if "peers" not in args.skip:
        results["peers"] = bench_peers(load, scratch, bodies, args.seconds,
                                       args.peer_max_wait_ms)
    if "batch" not in args.skip:
        results["predict_batch"] = bench_batch(load, scratch, bodies, args.seconds)
    results["targets"] = targets(results)
    for name, target in results["targets"].items():
        print(f"  target {name}: {target['measured']} ({'met' if target['met'] else 'NOT met'})",
              flush=True)
    if "score" not in args.skip:  # two chunk sizes: memory follows the chunk, not the table
        results["score"] = [bench_score(scratch, args.score_rows, chunk)
                            for chunk in (args.chunk_rows // 4, args.chunk_rows)]
    return results


if __name__ == "__main__":
    run_benchmark("serving", __doc__, arguments, run)
