"""Where a loaded server's CPU goes, per /predict request: ``python -m bench.profile``.

Starts ``bentoml serve`` (2 workers, this checkout or ``--code DIR``), loads ``/predict`` with
wrk (32 clients), measures the server's CPU per request from /proc and samples one worker with
py-spy (``--gil``: the thread holding the GIL, i.e. Python work; installed on first use into
``.venv-peers/py-spy``). Each sample is charged to the innermost stage its stack is in, and
the shares times the CPU per request give milliseconds per request per stage. Native work that
releases the GIL (XGBoost's trees, most numpy) is not sampled: ``bench/request_path.py``
measures the scoring stages themselves.
"""

from __future__ import annotations

import re
import subprocess
import time
from collections import Counter
from pathlib import Path

from bench import peers, wrk
from bench.harness import run_benchmark
from bench.serving import Server, customer_bodies, service_server

# Innermost match wins: (stage, pattern over "function (file)").
STAGES = [
    ("model (Python side)", r"predict_proba_matrix|LogOddsBlend|XGB|xgboost/"),
    ("features: matrix, unseen check", r"MatrixBuilder|Scorer\.unseen|Vocabulary|\(pandas/"),
    ("service code: columns, metrics, log, answers", r"ChurnService\.|served\.py|"
     r"ServiceMetrics|InferenceLog|inference_log\.py"),
    ("request parsing and validation", r"from_http_request|model_validate"),
    ("response", r"to_http_response|Response\.__init__|JSONResponse"),
    ("batching (BentoML dispatcher, thread hand-off)", r"CorkDispatcher|batch_infer|"
     r"AutoContainer|DataContainer|anyio|run_in_threadpool|watch_dispatcher|_on_batch|"
     r"_ObservedServiceAppFactory"),
    ("our middleware: ids, limits, access log, request metrics",
     r"RequestContextMiddleware|write_access_line|request_done|new_request_id|"
     r"install_request_handling|logging/__init__|JsonFormatter"),
    ("BentoML middleware: metrics, tracing, timeout, context, routing",
     r"RunnerTrafficMetrics|OpenTelemetry|opentelemetry|trace/|Timeout|ContextMiddleware|"
     r"ServiceAppFactory|APIMethod|simple_di|prometheus_client|_bentoml"),
]


def stage_of(stack: list[str]) -> str:
    for frame in reversed(stack):
        for stage, pattern in STAGES:
            if re.search(pattern, frame):
                return stage
    return "HTTP server and event loop (uvicorn, starlette, asyncio)"


def py_spy() -> Path:
    python = peers.python_of("py-spy")
    return python.parent / "py-spy"


def measure(args, scratch: Path) -> dict:
    import orjson

    spy = py_spy()
    bodies = [orjson.dumps(b) for b in customer_bodies(500)]
    server: Server = service_server("profile", scratch, {})
    try:
        pid = server.process.pid
        worker = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True,
                                text=True).stdout.split()[0]
        wrk.run_wrk(server.port, "/predict", bodies, args.clients, 3, scratch, warmup=0)
        cpu = wrk.server_cpu(pid)
        load = subprocess.Popen(wrk.command(server.port, "/predict", bodies, args.clients,
                                            args.seconds + 4, scratch),
                                stdout=subprocess.PIPE, text=True)
        time.sleep(2)
        raw = scratch / "profile.txt"
        subprocess.run([str(spy), "record", "-p", worker, "-d", str(args.seconds), "-r", "200",
                        "--gil", "--format", "raw", "-o", str(raw)], capture_output=True,
                       check=True)
        loaded = wrk.parse(load.communicate()[0], args.clients)
        cpu_ms = 1000 * (wrk.server_cpu(pid) - cpu) / max(1, loaded["requests"])
    finally:
        server.stop()
    samples: Counter = Counter()
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        samples[stage_of(stack.split(";"))] += int(count)
    total = sum(samples.values())
    out = {"clients": args.clients, "load": loaded, "cpu_ms_per_request": round(cpu_ms, 3),
           "samples": total, "stages": {}}
    print(f"/predict at {args.clients} clients: {loaded['req_s']} req/s, server CPU "
          f"{cpu_ms:.3f} ms per request; py-spy --gil, {total} samples of one worker")
    for stage, n in samples.most_common():
        share = n / total
        out["stages"][stage] = {"share": round(share, 3),
                                "ms_per_request": round(share * cpu_ms, 3)}
        print(f"  {share:6.1%}  {share * cpu_ms:6.3f} ms  {stage}")
    return out


def arguments(parser) -> None:
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--seconds", type=int, default=15, help="sampling time (default 15)")


if __name__ == "__main__":
    run_benchmark("profile", __doc__, arguments, measure)
