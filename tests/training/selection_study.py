"""The study behind the selection rule's defaults (docs/training.md, "Choosing among candidates").

For each table (the embedded generator at 5%, 15% and 30% churn and the look-alikes of the
public tables) and data seed, the default search runs on the training split as ``churn train``
cuts it; every leaderboard candidate is then refitted on the training rows and scored on
30,000 fresh rows of the same population (another seed of the same generator): with that many
rows the ROC-AUC difference between two candidates is known to about +-0.001, far better than
a test split of 700-2,000 rows can tell. The rule is applied afterwards for a grid of
``gain_standard_errors`` x ``min_gain``, and each setting is compared with taking the best
cross-validated score (the rule before it): ROC-AUC given up on the fresh rows, how often a
simpler model is chosen, and what the chosen model costs to score.

    .venv/bin/python -m tests.training.selection_study --out selection_study.jsonl
    .venv/bin/python -m tests.training.selection_study --out selection_study.jsonl --report

Runs append to ``--out`` (one JSON line per table and seed) and are skipped when present, so
an interrupted study resumes. Default: 12 runs, 20-90 minutes on 2 shared cores.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import numpy as np
from sklearn.metrics import roc_auc_score

from kernel.contract import DataContract, validate_training_data
from tests.training.lookalikes import bank_like, telco_like, telecom_like
from training.config import TrainConfig
from training.generate import GeneratorConfig, generate_customers
from training.selection import Entrant, choose_candidate, paired_standard_error
from training.split import split_rows
from training.train import MONOTONE_EXCLUSION, fit_candidate, select_model

REPO = Path(__file__).resolve().parents[2]
TABLES = {"embedded_05": 2, "embedded_15": 2, "embedded_30": 2, "telco": 2, "bank": 2,
          "telecom": 2}
GAIN_STANDARD_ERRORS = (0.0, 0.5, 1.0, 1.5, 2.0)
MIN_GAINS = (0.0, 0.001, 0.002, 0.003, 0.005)


FRESH_ROWS = 30_000
SIZES = {"telco": 7043, "bank": 10_000, "telecom": 3333}  # the public tables' real sizes


def table(name: str, seed: int, rows: int | None = None):
    """(frame, contract) of a study table: 10,000 embedded rows, the look-alikes at the public
    tables' real sizes (``rows``: another size, e.g. the fresh sample)."""
    if name.startswith("embedded"):
        rate = int(name.split("_")[1]) / 100
        frame = generate_customers(GeneratorConfig(rows=rows or 10_000, seed=seed,
                                                   churn_rate=rate))
        return frame, DataContract.from_yaml(REPO / "configs" / "streaming_churn.contract.yaml")
    rng = np.random.default_rng(seed)
    frame = {"telco": telco_like, "bank": bank_like, "telecom": telecom_like}[name](
        rows or SIZES[name], rng)
    return frame, DataContract.from_yaml(REPO / "configs" / "examples" / f"{name}.contract.yaml")


def run(name: str, seed: int) -> dict:
    """The default search on one table, and every leaderboard candidate on the test rows and
    on fresh rows of the same population."""
    frame, contract = table(name, seed)
    fresh = validate_training_data(table(name, 10_000 + seed, FRESH_ROWS)[0], contract)
    data = validate_training_data(frame, contract)
    config = TrainConfig(search_budget_seconds=3600)  # the trial budget alone decides
    split = split_rows(data, config.test_size, config.seed)
    y_all = data.target.to_numpy()
    X, y = data.features.iloc[split.train], y_all[split.train]
    X_test, y_test = data.features.iloc[split.test], y_all[split.test]
    started = time.process_time()
    fitted = select_model(X, y, contract, config)
    search_cpu = time.process_time() - started
    test_scores, fresh_scores = {}, {}
    for candidate in fitted.leaderboard:
        pipeline = fit_candidate(candidate, X, y, contract, fitted.categories, config)
        test_scores[candidate.name] = pipeline.predict_proba(X_test)[:, 1]
        fresh_scores[candidate.name] = roc_auc_score(fresh.target.to_numpy(),
                                                     pipeline.predict_proba(fresh.features)[:, 1])
    excluded = {row.candidate for row in fitted.selection if row.reason == MONOTONE_EXCLUSION}
    return {
        "table": name, "seed": seed, "train_rows": len(X), "test_rows": len(X_test),
        "positive_rate": float(y.mean()), "search_cpu_s": round(search_cpu, 1),
        "chosen_by_default": fitted.candidate.name,
        "candidates": [{
            "name": c.name, "cv_score": c.cv_score, "fold_scores": list(c.fold_scores),
            "members": len(c.members) or 1, "size": c.size,
            "ms_per_row_batch_1": c.cost.ms_per_row_batch_1,
            "ms_per_row_batch": c.cost.ms_per_row_batch, "excluded": c.name in excluded,
            "test_roc_auc": float(roc_auc_score(y_test, test_scores[c.name])),
            "fresh_roc_auc": float(fresh_scores[c.name]),
        } for c in fitted.leaderboard],
    }


def choose(result: dict, k: float, min_gain: float) -> dict:
    candidates = result["candidates"]
    entrants = [Entrant(c["name"], c["cv_score"], tuple(c["fold_scores"]), c["members"],
                        c["size"], None, "excluded" if c["excluded"] else None)
                for c in candidates]
    return candidates[choose_candidate(entrants, k, min_gain).chosen]


def best_cv(result: dict) -> dict:
    """The rule before: the best pooled cross-validated score (the ensemble kept when it beat
    the best single model)."""
    allowed = [c for c in result["candidates"] if not c["excluded"]] or result["candidates"]
    return max(allowed, key=lambda c: c["cv_score"])


MATERIAL = 0.002  # the promotion margin: a difference the project counts as real


def report(results: list[dict]) -> str:
    """The grid: per setting, how often a simpler candidate than the best cross-validated one
    is chosen, the fresh ROC-AUC this changes (mean, worst, runs losing more than 0.002),
    the real gains left (a more complex candidate better than the chosen by more than 0.002 on
    the fresh rows) and the chosen models' mean scoring cost per row at batch 64 and 1."""
    lines = ["| k (SE) | min_gain | simpler chosen | fresh change: mean | worst | lost > 0.002 "
             "| gain left > 0.002 | ms/row at 64 | ms/row at 1 |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for k in GAIN_STANDARD_ERRORS:
        for min_gain in MIN_GAINS:
            changes, simpler, lost, left, cost64, cost1 = [], 0, 0, 0, [], []
            for result in results:
                old, new = best_cv(result), choose(result, k, min_gain)
                change = new["fresh_roc_auc"] - old["fresh_roc_auc"]
                changes.append(change)
                simpler += new["name"] != old["name"]
                lost += change < -MATERIAL
                left += any(c["fresh_roc_auc"] > new["fresh_roc_auc"] + MATERIAL
                            and (c["members"], c["size"]) > (new["members"], new["size"])
                            and not c["excluded"] for c in result["candidates"])
                cost64.append(new["ms_per_row_batch"])
                cost1.append(new["ms_per_row_batch_1"])
            lines.append(f"| {k:g} | {min_gain:g} | {simpler}/{len(results)} | "
                         f"{np.mean(changes):+.4f} | {min(changes):+.4f} | {lost} | {left} | "
                         f"{np.mean(cost64):.4f} | {np.mean(cost1):.3f} |")
    lines += ["", "| table (seed) | best cv | fresh | chosen (defaults) | fresh | "
              "cv gap (se) | ms/row at 64: best cv / chosen |", "|---|---|---:|---|---:|---:|---:|"]
    defaults = TrainConfig()
    for result in results:
        old = best_cv(result)
        new = choose(result, defaults.gain_standard_errors, defaults.min_gain)
        gap = np.subtract(old["fold_scores"], new["fold_scores"])
        lines.append(f"| {result['table']} ({result['seed']}) | {_short(old['name'])} | "
                     f"{old['fresh_roc_auc']:.4f} | {_short(new['name'])} | "
                     f"{new['fresh_roc_auc']:.4f} | {gap.mean():+.4f} "
                     f"({paired_standard_error(gap):.4f}) | "
                     f"{old['ms_per_row_batch']:.4f} / {new['ms_per_row_batch']:.4f} |")
    return "\n".join(lines)


def _short(name: str) -> str:
    return (name.replace("random_forest", "forest").replace("+class_weight", "+cw")
            .replace("ensemble(", "ens(").replace("+none", ""))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("selection_study.jsonl"))
    parser.add_argument("--tables", default=",".join(TABLES))
    parser.add_argument("--report", action="store_true", help="only print the tables")
    args = parser.parse_args()
    done = [json.loads(line) for line in args.out.read_text().splitlines()] \
        if args.out.exists() else []
    if not args.report:
        logging.basicConfig(level=logging.WARNING)
        seen = {(r["table"], r["seed"]) for r in done}
        for name in args.tables.split(","):
            for seed in range(1, TABLES[name] + 1):
                if (name, seed) in seen:
                    continue
                started = time.monotonic()
                result = run(name, seed)
                with args.out.open("a") as out:
                    out.write(json.dumps(result) + "\n")
                done.append(result)
                print(f"{name} seed {seed}: best cv {best_cv(result)['name']}, "  # noqa: T201
                      f"{time.monotonic() - started:.0f}s", flush=True)
    print(report(done))  # noqa: T201


if __name__ == "__main__":
    main()
