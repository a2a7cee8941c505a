"""Keep only real gains: which scored candidate to serve.

A more complex candidate (a bigger tree model, a stacked ensemble) is chosen over a simpler one
only when its cross-validated gain is larger than the noise of the comparison. Among the
candidates that may be chosen, the best is the one with the highest cross-validated score (the
leaderboard's order); every candidate whose gap to the best, the mean over folds of their
paired per-fold differences, is within

    max(gain_standard_errors x standard error of the paired per-fold differences, min_gain)

is as good as the best as far as the folds can tell, and the simplest of those is chosen
(complexity: members first, then fitted parameters). A scoring budget excludes candidates that
cost more per row than allowed; when every candidate does, the cheapest is kept and says so.

Pure: fold scores, complexity and cost in, the choice and one evidence row per candidate out.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from pydantic import BaseModel

from kernel.store import ScoringCost


@dataclass(frozen=True)
class Entrant:
    """A candidate as the rule sees it."""

    name: str
    cv_score: float  # the selection metric on the pooled out-of-fold scores: ranks candidates
    fold_scores: tuple[float, ...]  # the selection metric on each fold's rows, same folds for all
    members: int  # models behind it: 1, or an ensemble's member count
    size: int  # fitted parameters: coefficients, tree nodes, or the members' sum
    cost: ScoringCost | None = None
    excluded: str | None = None  # why it may not be chosen whatever its score

    @property
    def complexity(self) -> tuple[int, int]:
        return self.members, self.size


class SelectionRow(BaseModel):
    """One candidate's evidence: its scores, how far behind the best it is and how noisy that
    comparison is, what it costs, and why it was or was not chosen."""

    candidate: str
    cv_score: float
    fold_mean: float
    gap_to_best: float | None  # mean of best's fold scores minus this one's; None: not compared
    standard_error: float | None  # of that gap, from the paired per-fold differences
    margin: float | None  # the gap the rule tolerates: max(k x standard_error, min_gain)
    members: int
    size: int
    ms_per_row_batch_1: float | None
    ms_per_row_batch: float | None
    batch_rows: int | None
    chosen: bool
    reason: str


def paired_standard_error(differences: Sequence[float]) -> float:
    """Standard error of the mean of per-fold differences between two candidates scored on the
    same folds, corrected for the overlap of the folds' training rows (Nadeau and Bengio 2003:
    variance x (1/k + n_validation/n_fit), n_validation/n_fit = 1/(k-1) for k folds). The naive
    sd/sqrt(k) ignores that the k fits share most of their rows and is too small."""
    d = np.asarray(differences, dtype=float)
    k = len(d)
    if k < 2:
        return 0.0
    return float(np.std(d, ddof=1) * np.sqrt(1 / k + 1 / (k - 1)))


@dataclass(frozen=True)
class Choice:
    chosen: int  # index into the entrants
    rows: list[SelectionRow]  # one per entrant, in their order
    note: str  # one line for the log: how the choice was made
    warning: str | None = None  # the rule could not be followed: why, and what was kept


def choose_candidate(entrants: Sequence[Entrant], gain_standard_errors: float, min_gain: float,
                     max_ms_per_row: float | None = None) -> Choice:
    """The simplest entrant within noise of the best, among those not excluded and within the
    scoring budget (``max_ms_per_row`` at the measured batch). When every entrant is excluded
    the best of them is kept (the gate says why it is rejected); when every remaining entrant
    is over the budget, the cheapest is kept. Raises ValueError without entrants."""
    if not entrants:
        raise ValueError("no candidate to choose from")
    reasons: dict[int, str] = {i: e.excluded for i, e in enumerate(entrants) if e.excluded}
    allowed = [i for i in range(len(entrants)) if i not in reasons]
    warning = None
    if not allowed:
        allowed = list(range(len(entrants)))
        reasons = {}
        warning = ("every candidate is excluded (" + "; ".join(
            sorted({e.excluded for e in entrants})) + "): chosen among them anyway")
    if max_ms_per_row is not None:
        over = [i for i in allowed if _ms(entrants[i]) > max_ms_per_row]
        within = [i for i in allowed if i not in over]
        for i in over:
            reasons[i] = (f"over the scoring budget: {_ms(entrants[i]):.4f} ms/row > "
                          f"max_scoring_ms_per_row {max_ms_per_row:g}")
        if not within:
            cheapest = min(allowed, key=lambda i: (_ms(entrants[i]), entrants[i].complexity))
            reasons[cheapest] = (f"every candidate is over the scoring budget "
                                 f"({max_ms_per_row:g} ms/row): the cheapest is kept, "
                                 f"{_ms(entrants[cheapest]):.4f} ms/row")
            rows = [_row(e, None, None, None, i == cheapest, reasons[i])
                    for i, e in enumerate(entrants)]
            return Choice(cheapest, rows, f"{entrants[cheapest].name} is the cheapest",
                          reasons[cheapest])
        allowed = within

    means = {i: float(np.mean(entrants[i].fold_scores)) for i in allowed}
    best = min(allowed, key=lambda i: (-entrants[i].cv_score, entrants[i].complexity))
    gaps: dict[int, tuple[float, float, float]] = {}
    for i in allowed:
        differences = np.subtract(entrants[best].fold_scores, entrants[i].fold_scores)
        error = paired_standard_error(differences) if i != best else 0.0
        gaps[i] = (means[best] - means[i], error, max(gain_standard_errors * error, min_gain))
    near = [i for i in allowed if gaps[i][0] <= gaps[i][2]]
    chosen = min(near, key=lambda i: (entrants[i].complexity, -entrants[i].cv_score,
                                      entrants[i].name))
    chosen_name = entrants[chosen].name
    for i in allowed:
        gap, error, margin = gaps[i]
        if i == chosen:
            reasons[i] = ("chosen: the best, and nothing simpler is within noise of it"
                          if i == best else
                          f"chosen: the simplest within noise of the best "
                          f"({entrants[best].name}, {gap:+.4f} <= margin {margin:.4f})")
        elif i == best:
            gain = means[best] - means[chosen]
            reasons[i] = (f"best, but its gain over {chosen_name} ({gain:+.4f}) is within "
                          f"the noise (margin {gaps[chosen][2]:.4f})")
        elif gap <= margin:
            simpler = entrants[chosen].complexity < entrants[i].complexity
            reasons[i] = (f"within noise of the best, but {chosen_name} is "
                          + ("simpler" if simpler else "as simple and scores higher"))
        else:
            reasons[i] = f"behind the best by {gap:.4f} > margin {margin:.4f}"
    rows = [_row(e, *(gaps.get(i) or (None, None, None)), i == chosen, reasons[i])
            for i, e in enumerate(entrants)]
    if chosen == best:
        note = f"{chosen_name} is the best and nothing simpler is within noise of it"
    else:
        note = (f"{chosen_name} is within noise of the best, {entrants[best].name} "
                f"({means[best] - means[chosen]:+.4f}, margin {gaps[chosen][2]:.4f}), "
                "and simpler")
    return Choice(chosen, rows, note, warning)


def _ms(entrant: Entrant) -> float:
    """Cost per row at the measured batch; an unmeasured entrant counts as free (it is never
    excluded by a budget it could not be measured against)."""
    return entrant.cost.ms_per_row_batch if entrant.cost else 0.0


def _row(entrant: Entrant, gap: float | None, error: float | None, margin: float | None,
         chosen: bool, reason: str) -> SelectionRow:
    cost = entrant.cost
    return SelectionRow(
        candidate=entrant.name, cv_score=entrant.cv_score,
        fold_mean=float(np.mean(entrant.fold_scores)), gap_to_best=gap,
        standard_error=error, margin=margin, members=entrant.members, size=entrant.size,
        ms_per_row_batch_1=cost.ms_per_row_batch_1 if cost else None,
        ms_per_row_batch=cost.ms_per_row_batch if cost else None,
        batch_rows=cost.batch_rows if cost else None, chosen=chosen, reason=reason)
