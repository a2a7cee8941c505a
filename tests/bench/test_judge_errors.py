"""The judge's simulation harness (bench/judge_errors.py) on synthetic models: its cases are
what they claim, the fixed limits the judge replaced are computed as they were stated, and a cell
counts verdicts correctly. (The real run trains models: minutes; docs/judge.md.)"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from bench import judge_errors
from bench.judge_errors import CASES, Scored, Table, challengers, markdown, run_cell, todays_limits


def synthetic_table(rows: int = 20_000) -> Table:
    rng = np.random.default_rng(0)
    region = rng.choice(["north", "south", "east", "west"], rows, p=[0.4, 0.27, 0.2, 0.13])
    probability = np.clip(rng.beta(1.2, 6.0, rows) + 0.1 * (region == "south"), 0, 1)
    logit = np.log(probability / (1 - probability))
    champion = Scored(probability, 0.3, 0.5)
    retrained = [Scored(1 / (1 + np.exp(-(logit + rng.normal(0, 0.2, rows)))), 0.3, 0.5)
                 for _ in range(2)]
    drifted = Scored(probability * 0.5, 0.3, 0.5)
    segments = {"region": pd.Categorical(region)}
    table = Table("synthetic", 0.15, segments, (rng.random(rows) < probability).astype(int),
                  champion)
    table.challengers, table.segment = challengers(champion, retrained, drifted, segments)
    return table


def test_the_cases_change_what_they_say() -> None:
    table = synthetic_table()
    c = table.challengers
    champion = table.champion
    assert c["A/A"] == [champion]
    moved = c["threshold +5pp"][0]
    assert moved.flagged.mean() - champion.flagged.mean() == pytest.approx(0.05, abs=0.001)
    assert np.array_equal(moved.probability, champion.probability)
    scaled = c["scaled x1.5"][0].probability
    assert scaled.max() <= 0.99
    assert np.allclose(scaled[champion.probability < 0.6], 1.5 * champion.probability[
        champion.probability < 0.6])
    # The scrambled segment: the value nearest a quarter; same values overall, moved inside it.
    assert table.segment.startswith("region=south")
    segment = c["segment"][0].probability
    base = c["retrained"][0].probability
    inside = np.asarray(table.segments["region"] == "south")
    assert np.array_equal(np.sort(segment), np.sort(base))
    assert np.array_equal(segment[~inside], base[~inside])
    assert not np.array_equal(segment[inside], base[inside])


def test_todays_limits_as_configs_canary_states_them() -> None:
    table = synthetic_table()
    model = table.champion
    rows = np.arange(1000)
    assert todays_limits(rows, model, rows, model) == "pass"
    assert todays_limits(rows[:499], model, rows[:499], model) == "inconclusive"  # gate 500
    # Mean probability 0.04 apart (and nothing else much): today's limit is |diff| <= 0.04.
    shifted = Scored(np.clip(model.probability + 0.045, 0, 1), 0.3 + 0.045, 0.5 + 0.045)
    assert todays_limits(rows, model, rows, shifted) == "fail"
    # PSI by hand: two bins' worth of customers swapped between 0.02 and 0.12.
    low, high = np.full(1000, 0.02), np.full(1000, 0.12)
    a = Scored(np.r_[low[:800], high[:200]], 0.9, 0.95)
    b = Scored(np.r_[low[:500], high[:500]], 0.9, 0.95)
    psi = (0.5 - 0.8) * np.log(0.5 / 0.8) + (0.5 - 0.2) * np.log(0.5 / 0.2)
    assert psi > 0.1
    assert np.mean(b.probability) - np.mean(a.probability) == pytest.approx(0.03)  # under 0.04
    assert todays_limits(np.arange(1000), a, np.arange(1000), b) == "fail"


def test_a_cell_counts_verdicts_and_repeated_looks(monkeypatch: pytest.MonkeyPatch) -> None:
    table = synthetic_table()
    monkeypatch.setitem(judge_errors.TABLES, table.name, table)
    cells = run_cell((table.name, "A/A", 1200, 2, 0))
    by_judge = {(c["judge"], c.get("looks")): c for c in cells}
    assert set(by_judge) == {("paired", None), ("unpaired", None),
                             ("paired", "1/4, 1/2, 3/4, 1"), ("unpaired", "3 steps x (1/2, 1)")}
    paired = by_judge[("paired", None)]
    assert paired["runs"] == 2 and paired["pass"] == 100.0 and paired["today"] == {"pass": 100.0}
    assert by_judge[("paired", "1/4, 1/2, 3/4, 1")]["fail"] == 0.0
    scaled = run_cell((table.name, "scaled x1.5", 1000, 2, 1))
    assert next(c for c in scaled if c["judge"] == "paired")["fail"] == 100.0
    assert "mean_probability" in next(c for c in scaled if c["judge"] == "paired")[
        "failing_checks"]
    text = markdown(cells + scaled, [table.name], "paired")
    assert "| A/A | 1,200 | 0/100/0 · 0 |" in text
    assert "| A/A (repeated looks) | 1,200 |" in text
    assert len(text.splitlines()) == 2 + 2 * len(CASES) + 2 * 2  # sizes x (cases + looks)
