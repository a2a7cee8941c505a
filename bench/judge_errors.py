"""Error rates of the model judge: ``python -m bench.judge_errors`` (``--quick``: a minute).

No servers. For each table (generated streaming customers with 5%, 15% and 30% churn, and a
look-alike of the classic telecom table) real models are trained with the test suite's fast
configuration (logistic regression + XGBoost, no tuning): the champion, three models retrained
on other samples of the same population, and one trained on a shifted population. Each scores
the same 40,000 held-out customers. Then predictions are sampled many times and both judges
run at their default settings (configs/judge.yaml) on 500, 2,000 and 10,000 predictions per
side; the same samples are judged by the fixed limits the canary used before the judge
(``FixedLimits``: share will_churn within 8 pp, share HIGH within 6 pp, mean probability within
0.04, probability PSI at most 0.1 on rollout/analysis.py's bins, at least 500 predictions per
track), called "today's" in the tables.

Cases (the challenger, against the champion):

- ``A/A``: the champion itself;
- ``retrained``: a model trained on another sample of the same population (one of three);
- ``drifted``: trained on a shifted population (streaming: ``drifted=True``; telecom-like:
  churn rate 14.5% -> 30%), scoring the same customers;
- ``threshold +5pp``: the champion with a threshold lowered until 5 pp more customers are
  flagged;
- ``scaled x1.5``: the champion's probabilities times 1.5 (capped at 0.99), same threshold;
- ``segment``: a retrained model whose probabilities are shuffled among the customers of one
  segment (the categorical value nearest a quarter of the customers): a feature-join bug for
  one region, useless there, unchanged elsewhere, same overall distribution.

The paired judge (shadow) sees both models on the same customers; the unpaired judge (canary)
sees the champion on one sample and the challenger on another. Under "repeated looks" (A/A and
retrained) the shadow is judged at a quarter, half, three quarters and all of the sample (one
growing sample), and the canary as a rollout: three separate samples (steps 1-3), each judged
at half and at all of its size (a retry over a longer window); a failure at any look counts.

Prints one Markdown table per judge (fail / pass / inconclusive %, and today's limits' fail
%), and writes everything (per check, per cell) to bench/results/judge_errors-*.json.
"""

from __future__ import annotations

import argparse
import multiprocessing
import pickle
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from bench.harness import run_benchmark

REPO = Path(__file__).resolve().parents[1]
SIZES = (500, 2000, 10_000)
CASES = ("A/A", "retrained", "drifted", "threshold +5pp", "scaled x1.5", "segment")
REPEATED = ("A/A", "retrained")
POOL_ROWS = 40_000
TRAIN_ROWS = 8_000
RETRAIN_SEEDS = (8, 9, 10)
RISK_NAMES = np.array(["LOW", "MEDIUM", "HIGH"], dtype=object)


@dataclass
class Scored:
    """One model's view of the pool: probabilities, decision threshold, HIGH cut-off."""

    probability: np.ndarray
    threshold: float
    high: float

    @property
    def flagged(self) -> np.ndarray:
        return self.probability >= self.threshold

    @property
    def risk(self) -> np.ndarray:
        return ((self.probability >= self.threshold).astype(np.int8)
                + (self.probability >= max(self.high, self.threshold)).astype(np.int8))


@dataclass
class Table:
    name: str
    churn_rate: float
    segments: dict[str, pd.Categorical]  # the pool's categorical features
    labels: np.ndarray
    champion: Scored
    challengers: dict[str, list[Scored]] = field(default_factory=dict)
    segment: str = ""
    cpu_seconds: float = 0.0  # training and scoring its models


# ------------------------------------------------------------------ models


def fast_config():
    """tests/conftest.py's ``fast_config``: two candidates, no tuning round."""
    from training.config import TrainConfig

    return TrainConfig(algorithms=["logistic", "xgboost"], imbalance=["class_weight"],
                       search_budget_seconds=0, max_trials=0, cv_folds=3, reference_rows=2000)


def _train(frame: pd.DataFrame, contract) -> object:
    from kernel.contract import validate_training_data
    from training.train import select_model

    data = validate_training_data(frame, contract)
    return select_model(data.features, data.target.to_numpy(), contract, fast_config())


def _generators(name: str):
    """(contract, sample(seed, rows, shifted)) of a table."""
    from kernel.contract import DataContract

    if name.startswith("streaming"):
        from training.generate import GeneratorConfig, generate_customers

        rate = int(name.split()[-1].rstrip("%")) / 100
        contract = DataContract.from_yaml(REPO / "configs" / "streaming_churn.contract.yaml")

        def sample(seed: int, rows: int, shifted: bool = False) -> pd.DataFrame:
            return generate_customers(GeneratorConfig(rows=rows, seed=seed, churn_rate=rate,
                                                      drifted=shifted))
        return contract, sample, rate
    from tests.training.lookalikes import telecom_like

    contract = DataContract.from_yaml(REPO / "configs" / "examples" / "telecom.contract.yaml")

    def sample(seed: int, rows: int, shifted: bool = False) -> pd.DataFrame:
        return telecom_like(rows, np.random.default_rng(seed), churn_rate=0.30 if shifted
                            else 0.145)
    return contract, sample, 0.145


def build_table(name: str) -> Table:
    """Train the table's models and score its pool of held-out customers."""
    from kernel.contract import validate_training_data

    cpu_started = time.process_time()
    contract, sample, rate = _generators(name)
    pool = validate_training_data(sample(1000, POOL_ROWS), contract)

    def scored(frame: pd.DataFrame) -> Scored:
        fitted = _train(frame, contract)
        return Scored(fitted.model.predict_proba(pool.features).astype(float),
                      float(fitted.threshold), float(fitted.risk_cutoffs.high))

    champion = scored(sample(7, TRAIN_ROWS))
    retrained = [scored(sample(seed, TRAIN_ROWS)) for seed in RETRAIN_SEEDS]
    drifted = scored(sample(7, TRAIN_ROWS, shifted=True))
    segments = {c: pd.Categorical(pool.features[c].astype(str)) for c in contract.categorical}
    table = Table(name, rate, segments, pool.target.to_numpy(), champion)
    table.challengers, table.segment = challengers(champion, retrained, drifted, segments)
    table.cpu_seconds = round(time.process_time() - cpu_started, 1)
    return table


def challengers(champion: Scored, retrained: list[Scored], drifted: Scored,
                segments: dict[str, pd.Categorical]) -> tuple[dict[str, list[Scored]], str]:
    """The six cases' challengers, and the segment the "segment" case scrambles."""
    # A threshold moved so that 5 pp more of the pool is flagged; HIGH stays where it was.
    flagged = champion.flagged.mean()
    lowered = float(np.quantile(champion.probability, 1 - (flagged + 0.05)))
    scaled = np.minimum(champion.probability * 1.5, 0.99)
    # One segment scrambled: the categorical value nearest a quarter of the customers.
    feature, value = min(((c, v) for c, cat in segments.items() for v in cat.categories),
                         key=lambda cv: abs((segments[cv[0]] == cv[1]).mean() - 0.25))
    rows = np.flatnonzero(np.asarray(segments[feature] == value))
    shuffled = retrained[0].probability.copy()
    shuffled[rows] = np.random.default_rng(0).permutation(shuffled[rows])
    share = 100 * len(rows) / len(champion.probability)
    return {
        "A/A": [champion],
        "retrained": retrained,
        "drifted": [drifted],
        "threshold +5pp": [Scored(champion.probability, lowered, max(champion.high, lowered))],
        "scaled x1.5": [Scored(scaled, champion.threshold, champion.high)],
        "segment": [Scored(shuffled, retrained[0].threshold, retrained[0].high)],
    }, f"{feature}={value} ({share:.0f}%)"


def population_effects(table: Table) -> dict[str, list[dict[str, float]]]:
    """What each challenger changes on the whole pool (no sampling), per model: the truth the
    judges estimate, and what the shown-only checks (Hodges-Lehmann, KS) would see."""
    from scipy import stats

    c = table.champion
    rng = np.random.default_rng(0)
    i, j = rng.integers(0, len(c.probability), (2, 2000))

    def logit(p: np.ndarray) -> np.ndarray:
        p = np.clip(p, 1e-6, 1 - 1e-6)
        return np.log(p / (1 - p))

    out = {}
    for case, models in table.challengers.items():
        out[case] = [{
            "share_will_churn_pp": 100 * (m.flagged.mean() - c.flagged.mean()),
            "share_high_pp": 100 * ((m.risk == 2).mean() - (c.risk == 2).mean()),
            "mean_ratio": float(m.probability.mean() / c.probability.mean()),
            "disagreement_pp": 100 * float((m.flagged != c.flagged).mean()),
            "hodges_lehmann": float(np.median(m.probability[i][:, None]
                                              - c.probability[j][None, :])),
            "hodges_lehmann_log_odds": float(np.median(logit(m.probability[i])[:, None]
                                                       - logit(c.probability[j])[None, :])),
            "ks_distance": float(stats.ks_2samp(m.probability, c.probability).statistic),
        } for m in models]
    return out


# ------------------------------------------------------------------ the judges, today's limits


def _records(model: Scored, rows: np.ndarray, prefix: str = "") -> dict[str, np.ndarray]:
    p = model.probability[rows]
    return {f"{prefix}churn_probability": p, f"{prefix}will_churn": p >= model.threshold,
            f"{prefix}risk_level": RISK_NAMES[model.risk[rows]]}


@dataclass(frozen=True)
class FixedLimits:
    """The fixed prediction limits the canary applied before the judge replaced them
    (configs/canary.yaml up to commit d74d074): the baseline the tables compare with."""

    min_predictions: int = 500
    max_will_churn_share_diff_pp: float = 8.0
    max_high_share_diff_pp: float = 6.0
    max_mean_probability_diff: float = 0.04
    max_probability_psi: float = 0.1
    psi_epsilon: float = 1e-4


def todays_limits(a: np.ndarray, a_model: Scored, b: np.ndarray, b_model: Scored) -> str:
    """The fixed prediction limits (``FixedLimits``) on two samples (rows of the pool)."""
    from rollout.analysis import PSI_BIN_EDGES

    limits = FixedLimits()
    if min(len(a), len(b)) < limits.min_predictions:
        return "inconclusive"
    pa, pb = a_model.probability[a], b_model.probability[b]
    flagged = 100 * abs((pb >= b_model.threshold).mean() - (pa >= a_model.threshold).mean())
    high = 100 * abs((b_model.risk[b] == 2).mean() - (a_model.risk[a] == 2).mean())
    mean = abs(pb.mean() - pa.mean())
    edges = np.array([-np.inf, *PSI_BIN_EDGES, np.inf])
    share_a = np.maximum(np.histogram(pa, edges)[0] / len(pa), limits.psi_epsilon)
    share_b = np.maximum(np.histogram(pb, edges)[0] / len(pb), limits.psi_epsilon)
    psi = float(((share_b - share_a) * np.log(share_b / share_a)).sum())
    failed = (flagged > limits.max_will_churn_share_diff_pp
              or high > limits.max_high_share_diff_pp
              or mean > limits.max_mean_probability_diff or psi > limits.max_probability_psi)
    return "fail" if failed else "pass"


def _paired(table: Table, model: Scored, rows: np.ndarray, config, labels: bool = False,
            rng: np.random.Generator | None = None):
    from monitoring.judge import judge_paired

    frame = pd.DataFrame({**_records(table.champion, rows),
                          **_records(model, rows, "shadow_"),
                          **{c: cat[rows] for c, cat in table.segments.items()}})
    if labels:
        known = rng.random(len(rows)) < 0.5
        frame["label"] = np.where(known, table.labels[rows], np.nan)
    return judge_paired(frame, config, segments=list(table.segments))


def _unpaired(table: Table, model: Scored, stable: np.ndarray, canary: np.ndarray, config,
              sample: int = 1):
    from monitoring.judge import judge_unpaired

    return judge_unpaired(pd.DataFrame(_records(table.champion, stable)),
                          pd.DataFrame(_records(model, canary)), config, sample=sample)


# ------------------------------------------------------------------ one cell


@dataclass
class Tally:
    verdicts: Counter = field(default_factory=Counter)
    today: Counter = field(default_factory=Counter)
    failing: Counter = field(default_factory=Counter)  # per check: runs where it failed
    shown_failing: Counter = field(default_factory=Counter)  # weight-0 checks beyond the band
    needed: list = field(default_factory=list)
    runs: int = 0

    def add(self, judgement, today: str | None) -> None:
        self.runs += 1
        self.verdicts[judgement.verdict] += 1
        if today:
            self.today[today] += 1
        for row in judgement.checks:
            if row.failing:
                (self.failing if row.scored else self.shown_failing)[row.name] += 1
        if judgement.verdict == "inconclusive" and judgement.needed_predictions:
            self.needed.append(judgement.needed_predictions)

    def summary(self) -> dict:
        share = {k: round(100 * v / self.runs, 1) for k, v in self.verdicts.items()}
        return {"runs": self.runs,
                **{v: share.get(v, 0.0) for v in ("fail", "pass", "inconclusive")},
                "today": {k: round(100 * v / self.runs, 1) for k, v in self.today.items()},
                "failing_checks": {k: round(100 * v / self.runs, 1)
                                   for k, v in sorted(self.failing.items())},
                "shown_checks_beyond_band": {k: round(100 * v / self.runs, 1)
                                             for k, v in sorted(self.shown_failing.items())},
                "median_needed": int(np.median(self.needed)) if self.needed else None}


TABLES: dict[str, Table] = {}  # filled before the workers fork


def run_cell(task: tuple[str, str, int, int, int]) -> list[dict]:
    """Every judgement of one table x case x size: ``repeats`` draws, plus repeated looks."""
    from monitoring.judge import JudgeConfig

    table_name, case, size, repeats, seed = task
    cpu_started = time.process_time()
    table = TABLES[table_name]
    config = JudgeConfig()
    rng = np.random.default_rng(seed)
    models = table.challengers[case]
    pool = len(table.labels)
    paired, unpaired = Tally(), Tally()
    labelled = Tally() if case in ("retrained", "segment", "drifted") else None
    looks_paired = Tally() if case in REPEATED else None
    looks_unpaired = Tally() if case in REPEATED else None
    looks_today, looks_paired_today = Counter(), Counter()
    for r in range(repeats):
        model = models[r % len(models)]
        rows = rng.integers(0, pool, size)
        judgement = _paired(table, model, rows, config)
        paired.add(judgement, todays_limits(rows, table.champion, rows, model))
        if labelled is not None:
            labelled.add(_paired(table, model, rows, config, labels=True, rng=rng), None)
        stable, canary = rng.integers(0, pool, size), rng.integers(0, pool, size)
        unpaired.add(_unpaired(table, model, stable, canary, config),
                     todays_limits(stable, table.champion, canary, model))
        if looks_paired is None:
            continue
        # The shadow: one growing sample judged at 1/4, 1/2, 3/4 and all of it.
        verdicts = [_paired(table, model, rows[: size * k // 4], config).verdict
                    for k in (1, 2, 3)] + [judgement.verdict]
        looks_paired.verdicts["fail" if "fail" in verdicts else verdicts[-1]] += 1
        looks_paired.runs += 1
        today = [todays_limits(rows[: size * k // 4], table.champion, rows[: size * k // 4],
                               model) for k in (1, 2, 3, 4)]
        looks_paired_today["fail" if "fail" in today else today[-1]] += 1
        # The canary: three steps (separate samples), each judged at half and all of it.
        verdicts, today = [], []
        for step in (1, 2, 3):
            s, c = rng.integers(0, pool, size), rng.integers(0, pool, size)
            for part in (size // 2, size):
                verdicts.append(_unpaired(table, model, s[:part], c[:part], config,
                                          sample=step).verdict)
                today.append(todays_limits(s[:part], table.champion, c[:part], model))
        looks_unpaired.verdicts["fail" if "fail" in verdicts else verdicts[-1]] += 1
        looks_unpaired.runs += 1
        looks_today["fail" if "fail" in today else today[-1]] += 1
    base = {"table": table_name, "case": case, "n": size,
            "cpu_seconds": round(time.process_time() - cpu_started, 1)}
    out = [{**base, "judge": "paired", **paired.summary()},
           {**base, "judge": "unpaired", **unpaired.summary()}]
    if labelled is not None:
        out.append({**base, "judge": "paired+labels", **labelled.summary()})
    if looks_paired is not None:
        paired_looks = looks_paired.summary()
        paired_looks["today"] = {k: round(100 * v / repeats, 1)
                                 for k, v in looks_paired_today.items()}
        out.append({**base, "judge": "paired", "looks": "1/4, 1/2, 3/4, 1", **paired_looks})
        unpaired_looks = looks_unpaired.summary()
        unpaired_looks["today"] = {k: round(100 * v / repeats, 1) for k, v in looks_today.items()}
        out.append({**base, "judge": "unpaired", "looks": "3 steps x (1/2, 1)", **unpaired_looks})
    return out


# ------------------------------------------------------------------ report


def markdown(cells: list[dict], tables: list[str], judge: str) -> str:
    """case x n rows, one column per table: "fail / pass / inconclusive · today's fail"."""
    head = ["case", "n per side"] + [f"{t}: F/P/I · today F" for t in tables]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    keyed = {(c["table"], c["case"], c["n"], c.get("looks")): c for c in cells
             if c["judge"] == judge}
    sizes = sorted({c["n"] for c in cells})
    for case in CASES:
        for looks in (None, "any"):
            if looks and case not in REPEATED:
                continue
            for size in sizes:
                row = [case + (" (repeated looks)" if looks else ""), f"{size:,}"]
                for t in tables:
                    cell = next((c for (tt, cc, nn, lk), c in keyed.items() if tt == t
                                 and cc == case and nn == size and bool(lk) == bool(looks)),
                                None)
                    if cell is None:
                        row.append("-")
                        continue
                    row.append(f"{cell['fail']:.0f}/{cell['pass']:.0f}/"
                               f"{cell['inconclusive']:.0f} · {cell['today'].get('fail', 0):.0f}"
                               if cell["today"] else
                               f"{cell['fail']:.0f}/{cell['pass']:.0f}/"
                               f"{cell['inconclusive']:.0f}")
                lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--quick", action="store_true",
                        help="two tables, 500 and 2,000 per side, 40 draws: about a minute")
    parser.add_argument("--repeats", type=int, default=None,
                        help="draws per cell (default 200, --quick 40)")
    parser.add_argument("--workers", type=int, default=2, help="processes (default 2)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tables-cache", type=Path, default=None,
                        help="keep the trained and scored tables in this pickle and reuse "
                        "them next time (to rerun the sampling only)")


def measure(args: argparse.Namespace, scratch: Path) -> dict:
    started = time.monotonic()
    names = (["streaming 5%", "streaming 30%"] if args.quick else
             ["streaming 5%", "streaming 15%", "streaming 30%", "telecom-like 14.5%"])
    sizes = (500, 2000) if args.quick else SIZES
    repeats = args.repeats or (40 if args.quick else 200)
    context = multiprocessing.get_context("fork")
    cache = args.tables_cache
    if cache and cache.exists():
        built = [t for t in pickle.loads(cache.read_bytes()) if t.name in names]
    else:
        with context.Pool(args.workers) as pool:
            built = pool.map(build_table, names)
        if cache:
            cache.write_bytes(pickle.dumps(built))
    TABLES.update({t.name: t for t in built})
    trained = time.monotonic() - started
    print(f"trained and scored {len(names)} tables in {trained:.0f}s", flush=True)
    tasks = [(name, case, size, repeats if case in REPEATED else repeats // 2,
              args.seed + 1000 * i)
             for i, (name, case, size) in enumerate(
                 (n, c, s) for n in names for c in CASES for s in sizes)]
    # Largest first, so the two workers finish together.
    tasks.sort(key=lambda t: -(t[2] * t[3] * (4 if t[1] in REPEATED else 1)))
    cells = []
    with context.Pool(args.workers) as pool:
        for done, result in enumerate(pool.imap_unordered(run_cell, tasks), 1):
            cells += result
            first = result[0]
            print(f"[{done}/{len(tasks)}] {first['table']}, {first['case']}, {first['n']:,} per "
                  f"side ({time.monotonic() - started:.0f}s)", flush=True)
    report = {judge: markdown(cells, names, judge)
              for judge in ("paired", "unpaired", "paired+labels")}
    for judge, text in report.items():
        print(f"\n{judge} judge (fail / pass / inconclusive %, today's limits' fail %)\n{text}")
    return {"tables": {t.name: {"segment": t.segment,
                                "population_effects": population_effects(t)} for t in built},
            "sizes": list(sizes), "repeats": repeats,
            "repeats_detection_cases": repeats // 2,
            "seconds": {"training": round(trained), "total": round(time.monotonic() - started),
                        "training_cpu": round(sum(t.cpu_seconds for t in built)),
                        # What the sampling costs on free cores, whatever else ran meanwhile
                        # (counted once per cell: its first row).
                        "sampling_cpu": round(sum(c["cpu_seconds"] for c in cells
                                                  if c["judge"] == "paired"
                                                  and "looks" not in c))},
            "markdown": report, "cells": cells}


if __name__ == "__main__":
    # Through the module's own name, so pickled tables (--tables-cache) and the workers' global
    # refer to bench.judge_errors, not __main__.
    from bench import judge_errors

    run_benchmark("judge_errors", __doc__, judge_errors.arguments, judge_errors.measure)
