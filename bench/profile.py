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
from bench.serving import REPO, Server, customer_bodies, service_server

# The innermost frame that names a stage decides; libraries several stages use (logging,
# prometheus_client, numpy) count for their caller. Checked in this order for each frame.
STAGES = [
    ("model", r"kernel/model\.py|xgboost/|sklearn/"),
    ("features: matrix, unseen check", r"MatrixBuilder|Vocabulary|Scorer\.unseen|"
     r"kernel/features\.py"),
    ("our middleware: ids, limits, access log, request metrics",
     r"service/middleware\.py|request_done|install_request_handling"),
    ("service code: columns, scores, metrics, log, answers",
     r"ChurnService\.|service/(served|scoring|metrics|inference_log|json_columns)\.py"),
    ("response", r"to_http_response|starlette/responses\.py"),
    ("request parsing and validation", r"from_http_request|service/validation\.py|"
     r"pydantic/main\.py"),
    ("batching: BentoML's dispatcher, thread hand-off", r"marshal/dispatcher\.py|"
     r"runner/container\.py|batch_infer|anyio/|bentoml_internals\.py"),
    ("BentoML: metrics and tracing middleware, context, endpoint plumbing",
     r"http/instruments\.py|opentelemetry/|simple_di/|_bentoml_impl/server/app\.py|"
     r"_bentoml_sdk/|bentoml/_internal/"),
    ("HTTP server and event loop: uvicorn, starlette, asyncio",
     r"uvicorn/|starlette/|asyncio/|uvloop|httptools"),
]


def stage_of(stack: list[str]) -> str:
    for frame in reversed(stack):
        for stage, pattern in STAGES:
            if re.search(pattern, frame):
                return stage
    return "other"


def py_spy() -> Path:
    python = peers.python_of("py-spy")
    return python.parent / "py-spy"


def measure(args, scratch: Path) -> dict:
    import orjson

    spy = py_spy()
    bodies = [orjson.dumps(b) for b in customer_bodies(500)]
    code = Path(args.code).resolve() if args.code else REPO
    server: Server = service_server("profile", scratch, {}, code)
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
    out = {"code": str(code), "clients": args.clients, "load": loaded,
           "cpu_ms_per_request": round(cpu_ms, 3), "samples": total, "stages": {}}
    print(f"{code}: /predict at {args.clients} clients: {loaded['req_s']} req/s, server CPU "
          f"{cpu_ms:.3f} ms per request; py-spy --gil, {total} samples of one worker")
    for stage, n in samples.most_common():
        share = n / total
        out["stages"][stage] = {"share": round(share, 3),
                                "ms_per_request": round(share * cpu_ms, 3)}
        print(f"  {share:6.1%}  {share * cpu_ms:6.3f} ms  {stage}")
    return out


def arguments(parser) -> None:
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--code", help="serve another checkout of the project (e.g. the "
                        "commit before a change) instead of this one")
    parser.add_argument("--seconds", type=int, default=15, help="sampling time (default 15)")


if __name__ == "__main__":
    run_benchmark("profile", __doc__, arguments, measure)
