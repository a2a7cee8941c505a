"""What a shadow costs: /predict throughput and p99 at 32 clients with the shadow off, with the
champion as its own shadow, and with a different challenger as the shadow (service/shadow.py).

`python -m bench.shadow [--seconds 20] [--clients 32]`. Needs a champion in the store; trains
the challenger itself (the fast configuration, on another sample of the embedded data) unless
``--challenger`` names one. Each configuration runs on the same 2-worker `bentoml serve` with
the inference log on (the shadow's pairs go there), one after the other, with the same bodies.
The shadow scores off the request path, so what it costs is CPU the answers then lack: the
target is at least 75% of the shadow-off throughput.
"""

from __future__ import annotations

import os
from pathlib import Path

import orjson

from bench.harness import run_benchmark
from bench.loadgen import encode_post, run_load
from bench.serving import customer_bodies, service_server


def arguments(parser) -> None:
    parser.add_argument("--seconds", type=float, default=20.0,
                        help="measured time per configuration (default 20)")
    parser.add_argument("--clients", type=int, default=32,
                        help="keep-alive clients, closed loop (default 32)")
    parser.add_argument("--challenger", default=None,
                        help="model tag of the different shadow; default: train one")


def train_challenger(scratch: Path) -> str:
    """A challenger on another sample of the embedded data (the fast test configuration)."""
    from kernel.store import resolve_entry
    from training.config import TrainConfig
    from training.generate import GeneratorConfig, generate_customers
    from training.run import evaluate_challenger, register_challenger

    contract = resolve_entry().contract
    source = scratch / "challenger.csv"
    generate_customers(GeneratorConfig(rows=4000, seed=77)).to_csv(source, index=False)
    config = TrainConfig(algorithms=["logistic", "xgboost"], imbalance=["class_weight"],
                         search_budget_seconds=0, max_trials=0, cv_folds=3)
    home = Path(os.environ.get("CHURN_HOME", ".churn")).resolve()
    challenger = evaluate_challenger(str(source), contract, config)
    return register_challenger(challenger, contract, config, home).model_tag


def run(args, scratch: Path) -> dict:
    from kernel.store import resolve_entry

    champion = resolve_entry()
    challenger = args.challenger or train_challenger(scratch)
    requests = [encode_post("/predict", orjson.dumps(b)) for b in customer_bodies(500)]
    configurations = {"shadow off": "", "same model as shadow": champion.tag,
                      "different challenger as shadow": challenger}
    results = {}
    for name, shadow in configurations.items():
        os.environ["CHURN_SHADOW_MODEL_TAG"] = shadow
        server = service_server(name.replace(" ", "-"), scratch, {})
        try:
            result = run_load(server.port, requests, args.clients,
                              seconds=args.seconds).summary()
        finally:
            server.stop()
        results[name] = result
        print(f"{name:<32} {result['req_s']:>8.1f} req/s  p99 {result['p99_ms']:>7.2f} ms  "
              f"errors {result['errors']}", flush=True)
    os.environ.pop("CHURN_SHADOW_MODEL_TAG", None)
    off = results["shadow off"]["req_s"]
    for name in list(configurations)[1:]:
        results[name]["share_of_shadow_off"] = round(results[name]["req_s"] / off, 3)
        print(f"{name}: {results[name]['share_of_shadow_off']:.0%} of shadow-off throughput")
    return {"champion": champion.tag, "challenger": challenger, "clients": args.clients,
            "runs": results}


if __name__ == "__main__":
    run_benchmark("shadow", __doc__, arguments, run)
