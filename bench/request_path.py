"""Per-batch CPU of each stage of the service's scoring path, in process: ``python -m
bench.request_path`` (BENTOML_HOME must hold a champion).

For batches of 1, 8, 32, 64 (what adaptive batching forms for /predict) and 10,000 rows (a
/predict_batch call), the CPU time (``time.thread_time``, best of several rounds) of: turning
validated /predict bodies into columns, the feature matrix (derived features, impute, scale,
one-hot), the model, the unseen-category check, decisions, the prediction metrics, and the
answers; and the stages of one 10,000-customer /predict_batch request as the service runs them:
decoding the body (wall time: it runs on ``large_request_threads`` threads), scoring, the
response body, and writing its inference-log records (the writer thread's work, process
CPU). CPU time of one thread stays meaningful when other jobs share the machine, where wall
time does not. ``--code DIR`` measures another checkout of the
project (say, the commit before a change) with this same script: before and after in one run.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

SIZES = (1, 8, 32, 64, 10_000)


def _best(fn, rounds: int, calls: int) -> float:
    """Milliseconds of thread CPU per call, the best of ``rounds`` rounds of ``calls`` calls."""
    fn()
    best = float("inf")
    for _ in range(rounds):
        started = time.thread_time()
        for _ in range(calls):
            fn()
        best = min(best, (time.thread_time() - started) / calls)
    return round(best * 1000, 4)


def _best_wall(fn, rounds: int) -> float:
    """Milliseconds of wall time per call, the best of ``rounds`` (work on several threads)."""
    fn()
    best = float("inf")
    for _ in range(rounds):
        started = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - started)
    return round(best * 1000, 4)


def stages(n: int, bodies: list[dict], served, scorer, metrics, version: str) -> dict:
    """Per-call CPU milliseconds of each stage for a batch of the first ``n`` bodies."""
    import numpy as np

    from service.scoring import RISK_LEVELS
    from service.served import answers

    customers = [served.customer.model_validate(b) for b in bodies[:n]]
    columns = served.columns(customers)
    features = columns.features
    matrix = scorer.builder.matrix(features)
    scores = scorer.score(features)
    calls, rounds = max(1, 512 // n), (7 if n < 10_000 else 5)
    work = {
        "columns": lambda: served.columns(customers),
        "matrix": lambda: scorer.builder.matrix(features),
        "model": lambda: scorer.model.predict_proba_matrix(matrix),
        "unseen": lambda: scorer.unseen(features, n),
        "decisions": lambda: (RISK_LEVELS[np.searchsorted(scorer.cutoffs, scores.probability,
                                                          side="right")],
                              scores.probability >= scorer.threshold),
        "score (matrix, model, unseen, decisions)": lambda: scorer.score(features),
        "metrics": lambda: metrics.observe(version, scores.probability, scores.risk_level,
                                           scores.unseen),
        "answers": lambda: answers(scores, columns.ids, version, scorer.recommendations),
    }
    return {name: _best(fn, rounds, calls) for name, fn in work.items()}


def batch_request(bodies: list[dict], served, scorer, metrics, entry, scratch: Path) -> dict:
    """CPU milliseconds of the stages of one /predict_batch request of ``len(bodies)`` rows, as
    the service runs them: decoding on ``large_request_threads`` threads (wall time), scoring
    with the Arrow text the decoder keeps, the response body, and the inference-log records."""
    import orjson

    from service.config import InferenceLogConfig, ServiceConfig
    from service.inference_log import LogBlock, start_inference_log, utc_timestamp
    from service.served import batch_body
    from service.validation import BatchDecoder

    threads = ServiceConfig().large_request_threads
    body = orjson.dumps({"customers": bodies})
    decoder = BatchDecoder(entry.contract, served.batch, len(bodies), threads)
    columns = decoder.decode(body)
    scores = scorer.score(columns.features, columns.texts)
    out = {
        f"decode (wall, {threads} threads)": _best_wall(lambda: decoder.decode(body), 5),
        "score": _best(lambda: scorer.score(columns.features, columns.texts), 5, 1),
        "response body": _best(lambda: batch_body(scores, columns, entry.version,
                                                  scorer.recommendations), 5, 1),
    }
    log = start_inference_log(InferenceLogConfig(directory=scratch / "log"), entry, metrics,
                              shadow=False)
    block = LogBlock(timestamp=utc_timestamp(), request_ids="r", customer_ids=columns.ids,
                     features=columns.features, probability=scores.probability,
                     will_churn=scores.will_churn, risk_level=scores.risk_level,
                     unseen=scores.unseen,
                     texts=columns.held_texts())
    started = time.process_time()
    for _ in range(5):
        log.log(block)
    log.close()  # drains the queue: every record written
    out["inference log (writer thread)"] = round((time.process_time() - started) / 5 * 1000, 3)
    return out


def measure(args, scratch: Path) -> dict:
    if args.code:
        sys.path.insert(0, str(Path(args.code).resolve()))
    from kernel.store import resolve_entry
    from service.config import ServiceConfig
    from service.metrics import service_metrics
    from service.schema import (
        batch_request_model,
        customer_body,
        customer_model,
        example_customer,
    )
    from service.scoring import Scorer
    from service.served import ServedModel

    entry = resolve_entry()
    contract = entry.contract
    scorer = Scorer(entry, ServiceConfig().recommendations)
    customer = customer_model(contract, example_customer(contract, None))
    served = ServedModel(entry, customer, batch_request_model(customer, 10_000))
    reference = entry.reference.sample(10_000, replace=True, random_state=1)
    reference[contract.id or "customer_id"] = [f"C{i}" for i in range(len(reference))]
    bodies = [customer_body(contract, row) for row in reference.to_dict("records")]
    code = Path(sys.modules["service.scoring"].__file__).parents[1]
    out: dict = {"code": str(code), "model": entry.tag, "stages_ms": {}}
    print(f"code: {code}; model {entry.tag}", flush=True)
    for n in SIZES:
        out["stages_ms"][n] = found = stages(n, bodies, served, scorer, service_metrics(),
                                             entry.version)
        print(f"  {n:>6} rows: " + "  ".join(f"{k.split(' ')[0]} {v:.3f}"
                                             for k, v in found.items()), flush=True)
    out["predict_batch_ms"] = found = batch_request(bodies, served, scorer, service_metrics(),
                                                    entry, scratch)
    print("  /predict_batch of 10,000: " + "  ".join(f"{k} {v:.1f}" for k, v in found.items()),
          flush=True)
    return out


def arguments(parser) -> None:
    parser.add_argument("--code", help="a checkout of the project to measure instead of this "
                        "one (e.g. a git worktree of the commit before a change)")


if __name__ == "__main__":
    from bench.harness import run_benchmark

    run_benchmark("request_path", __doc__, arguments, measure)
