"""What every benchmark shares: its command line (``--help`` from the module's docstring), the
machine it ran on, a scratch folder, and its results file, ``bench/results/<name>-<UTC
stamp>.json``. Each benchmark module holds only what it measures:

    def arguments(parser): parser.add_argument(...)
    def measure(args, scratch): return {...}          # JSON-ready
    if __name__ == "__main__":
        run_benchmark("serving", __doc__, arguments, measure)
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def machine() -> dict:
    """What the figures depend on: CPUs and how busy they were."""
    return {"cpus": os.cpu_count(), "load_avg": list(os.getloadavg())}


def write_results(name: str, result: object) -> Path:
    """``bench/results/<name>-<UTC stamp>.json``; prints where it went."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}.json"
    path.write_text(json.dumps(result, indent=2, default=str))
    print(f"results: {path}", flush=True)
    return path


def run_benchmark(name: str, doc: str | None,
                  arguments: Callable[[argparse.ArgumentParser], None],
                  measure: Callable[[argparse.Namespace, Path], object]) -> Path:
    """Parse the command line, run ``measure(args, scratch)`` in a temporary folder that is
    removed afterwards, and write what it returns (with the machine before and after)."""
    parser = argparse.ArgumentParser(description=(doc or name).split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    arguments(parser)
    args = parser.parse_args()
    os.environ.setdefault("BENTOML_DO_NOT_TRACK", "true")
    # The store `churn` uses (./.churn unless CHURN_HOME or BENTOML_HOME say otherwise), set
    # before anything imports bentoml, which reads it once: `make bench` and a bare
    # `python -m bench.<name>` find the same champion.
    home = Path(os.environ.get("CHURN_HOME") or Path(__file__).resolve().parents[1] / ".churn")
    os.environ.setdefault("BENTOML_HOME", str(home.resolve() / "bentoml"))
    before = machine()
    with tempfile.TemporaryDirectory(prefix=f"churn-bench-{name}-") as scratch:
        result = measure(args, Path(scratch))
    return write_results(name, {"benchmark": name, "args": vars(args), "machine_before": before,
                                "machine_after": machine(), "result": result})
