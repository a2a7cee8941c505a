"""From effects to a verdict: classify each check against its tolerance, score, decide.

A check is classified as Kayenta classifies a metric, with one more class for "not yet":

- **Pass**: the effect's confidence sequence lies inside the tolerance band;
- **High** / **Low**: it lies entirely above / below the band;
- **Undecided**: it straddles an edge of the band (more data will decide);
- **NoData**: too little data to compute it, or its input was not given.

A one-sided check (failed requests may fall, not rise) has no lower edge: a significant fall
is a Pass. Kayenta's blind spot (spinnaker #6278: a canary whose values were mostly 100x
higher passed) came from calling "not significant" a pass; here an interval that straddles
the edge is never a pass, and an effect far beyond the edge fails as soon as its interval
clears the edge, whatever any p-value says.

The score is the weighted share of scored checks that pass (0-100). The judgement **fails**
when the score could not reach ``marginal_threshold`` even if every undecided check passed,
**passes** when the score is at least ``pass_threshold``, and is **inconclusive** otherwise,
with the sample size at which the undecided checks would be decided.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Literal

from monitoring.judge.config import CheckSettings, ScoreSettings
from monitoring.judge.effects import Estimate
from monitoring.judge.sequential import smallest_size

Classification = Literal["Pass", "High", "Low", "Undecided", "NoData"]
Verdict = Literal["pass", "fail", "inconclusive"]
Side = Literal["both", "high", "low"]
Unit = Literal["pp", "ratio", "probability", "distance", "auc", "correlation", "x"]

EXIT_CODES: dict[Verdict, int] = {"pass": 0, "fail": 1, "inconclusive": 3}
# As gauges: 0 pass, +1 above the band, -1 below it, 2 not yet decided, 3 no data.
CLASS_CODES: dict[Classification, int] = {"Pass": 0, "High": 1, "Low": -1, "Undecided": 2,
                                          "NoData": 3}


@dataclass(frozen=True)
class Tolerance:
    """The band an effect may lie in; None: no limit on that side."""

    low: float | None
    high: float | None

    @classmethod
    def symmetric(cls, width: float) -> Tolerance:
        return cls(-width, width)

    @classmethod
    def ratio(cls, relative: float) -> Tolerance:
        """A relative change of at most ``relative`` either way on the log scale:
        ratio between 1 / (1 + relative) and 1 + relative."""
        return cls(1.0 / (1.0 + relative) - 1.0, relative)

    @classmethod
    def at_most(cls, limit: float) -> Tolerance:
        return cls(None, limit)

    @classmethod
    def at_least(cls, limit: float) -> Tolerance:
        return cls(limit, None)


@dataclass(frozen=True)
class CheckResult:
    """One row of the judgement."""

    name: str
    title: str
    test: str  # the classical test whose statistic and p-value are shown
    unit: Unit
    effect: float | None
    low: float | None  # the confidence sequence's bounds at this look
    high: float | None
    tolerance: Tolerance
    statistic: float | None
    statistic_name: str
    p_value: float | None
    classification: Classification
    weight: float
    scored: bool  # counts in the score (False: shown only)
    fails_on: Side
    n: int | None  # the observations the interval rests on (pairs, smaller track, requests)
    needed: int | None = None  # at that size the interval would decide (Undecided, NoData)
    note: str = ""

    @property
    def failing(self) -> bool:
        """Outside the band on a side that fails it."""
        return ((self.classification == "High" and self.fails_on in ("both", "high"))
                or (self.classification == "Low" and self.fails_on in ("both", "low")))

    @property
    def passing(self) -> bool:
        return self.classification == "Pass" or (
            self.classification in ("High", "Low") and not self.failing)


def classify(low: float, high: float, tolerance: Tolerance) -> Classification:
    """Pass when [low, high] lies inside the band; High / Low when it lies entirely beyond
    one edge; Undecided when it straddles one."""
    if tolerance.high is not None and low > tolerance.high:
        return "High"
    if tolerance.low is not None and high < tolerance.low:
        return "Low"
    inside_low = tolerance.low is None or low >= tolerance.low
    inside_high = tolerance.high is None or high <= tolerance.high
    return "Pass" if inside_low and inside_high else "Undecided"


def distance_to_decision(estimate: Estimate, tolerance: Tolerance) -> float:
    """How narrow (half-width, on the interval's working scale) the interval must become to
    decide where its centre now lies: inside the band, the distance to the nearer edge;
    beyond an edge, the distance past it."""
    w = estimate.working
    centre = (w(estimate.low) + w(estimate.high)) / 2
    edges_low = w(tolerance.low) if tolerance.low is not None else -math.inf
    edges_high = w(tolerance.high) if tolerance.high is not None else math.inf
    if centre > edges_high:
        return centre - edges_high
    if centre < edges_low:
        return edges_low - centre
    return min(edges_high - centre, centre - edges_low)


def judged(name: str, title: str, test: str, unit: Unit, estimate: Estimate,
           tolerance: Tolerance, fails_on: Side, settings: CheckSettings, cap: int,
           statistic_name: str, note: str = "",
           size_per_t: Callable[[int], int] = lambda t: t) -> CheckResult:
    """A check classified from its estimate. ``size_per_t`` turns the interval's size unit
    into what the caller counts (a segment's pairs into all pairs)."""
    classification = classify(estimate.low, estimate.high, tolerance)
    needed = None
    if classification == "Undecided" and estimate.half_width_at is not None:
        size = smallest_size(estimate.half_width_at, distance_to_decision(estimate, tolerance),
                             cap)
        needed = None if size is None else size_per_t(size)
    return CheckResult(name, title, test, unit, estimate.effect, estimate.low, estimate.high,
                       tolerance, estimate.statistic, statistic_name, estimate.p_value,
                       classification, settings.weight, settings.weight > 0, fails_on,
                       int(estimate.t), needed, note)


def no_data(name: str, title: str, test: str, unit: Unit, tolerance: Tolerance,
            fails_on: Side, settings: CheckSettings, note: str, needed: int | None = None,
            n: int | None = None, scored: bool = True) -> CheckResult:
    """A check that could not be computed. ``scored`` False: its input was not given at all
    (no labels, no latency), so it neither passes nor holds the verdict back."""
    return CheckResult(name, title, test, unit, None, None, None, tolerance, None, "", None,
                       "NoData", settings.weight, scored and settings.weight > 0, fails_on, n,
                       needed, note)


def score_and_verdict(checks: list[CheckResult], settings: ScoreSettings
                      ) -> tuple[float, Verdict]:
    """Score = 100 x passing weight / scored weight. Fail when even every undecided check
    passing could not lift the score to the marginal threshold; pass at the pass threshold;
    otherwise inconclusive. No scored check at all is inconclusive."""
    scored = [c for c in checks if c.scored]
    total = sum(c.weight for c in scored)
    if total <= 0:
        return 0.0, "inconclusive"
    passing = sum(c.weight for c in scored if c.passing)
    failing = sum(c.weight for c in scored if c.failing)
    score = 100.0 * passing / total
    if 100.0 * (total - failing) / total < settings.marginal_threshold:
        return score, "fail"
    if score >= settings.pass_threshold:
        return score, "pass"
    return score, "inconclusive"


@dataclass(frozen=True)
class SegmentRow:
    """One segment (a value of a categorical feature) of the paired judgement. Bounds and
    classes only for segments with enough pairs to be tested."""

    feature: str
    value: str
    pairs: int
    disagreement: float  # share of its customers whose decision changed
    rest_disagreement: float  # the same share among all other customers
    excess: float  # disagreement - rest_disagreement
    excess_low: float | None
    excess_high: float | None
    disagreement_class: Classification
    rank_agreement: float | None  # Spearman's r inside minus on all customers (0: alike)
    rank_low: float | None
    rank_high: float | None
    ranking_class: Classification
    moved_share: float  # share whose probability moved by more than moved_by
    mean_shift: float  # mean paired probability difference (shadow - champion)


@dataclass(frozen=True)
class Judgement:
    """The judge's answer: one row per check, the score, the verdict and how to act on it."""

    judge: Literal["paired", "unpaired"]
    checks: tuple[CheckResult, ...]
    score: float
    verdict: Verdict
    sizes: dict[str, int]  # pairs and labelled (paired); predictions and requests per track
    sample: int  # which separate sample this is (1 = the first; a growing sample keeps 1)
    alpha: float  # this sample's share of the false-failure budget
    needed_predictions: int | None = None  # per side (pairs): where the undecided decide
    needed_requests: int | None = None  # per track, for the HTTP checks (unpaired)
    transitions: dict[str, dict[str, int]] | None = None  # champion level -> shadow level -> n
    segments: tuple[SegmentRow, ...] = field(default_factory=tuple)

    @property
    def exit_code(self) -> int:
        """0 pass, 1 fail, 3 inconclusive: as ``churn canary analyze``."""
        return EXIT_CODES[self.verdict]

    @property
    def predictions(self) -> int:
        """Pairs (paired), or the smaller track's predictions (unpaired)."""
        if self.judge == "paired":
            return self.sizes["pairs"]
        return min(self.sizes["stable_predictions"], self.sizes["canary_predictions"])

    @property
    def more_predictions_needed(self) -> int | None:
        """How many more predictions per side (pairs) the undecided checks need; None when
        nothing is waiting for predictions or it is out of reach."""
        if self.needed_predictions is None:
            return None
        return max(self.needed_predictions - self.predictions, 0)

    @property
    def failing_checks(self) -> list[str]:
        return [c.name for c in self.checks if c.scored and c.failing]

    def check(self, name: str) -> CheckResult:
        """The row named ``name``. Raises KeyError naming the rows there are."""
        for row in self.checks:
            if row.name == name:
                return row
        raise KeyError(f"no check {name!r}; checks: {[c.name for c in self.checks]}")

    def summary(self) -> str:
        """One line: the verdict, the score, and what it rests on or waits for."""
        sizes = ", ".join(f"{k} {v:,}" for k, v in self.sizes.items())
        line = f"{self.judge} judgement: {self.verdict.upper()} (score {self.score:.0f}; {sizes})"
        if self.verdict == "fail":
            return f"{line}; failing: {', '.join(self.failing_checks)}"
        if self.verdict == "inconclusive":
            waits = []
            if self.needed_predictions is not None:
                side = "pairs" if self.judge == "paired" else "predictions per track"
                more = self.needed_predictions - self.predictions
                waits.append(f"about {self.needed_predictions:,} {side} ({max(more, 0):,} more)")
            if self.needed_requests is not None:
                more = self.needed_requests - min(self.sizes.get("stable_requests", 0),
                                                  self.sizes.get("canary_requests", 0))
                waits.append(f"about {self.needed_requests:,} requests per track "
                             f"({max(more, 0):,} more)")
            undecided = [c for c in self.checks if c.scored and not (c.passing or c.failing)]
            if undecided and any(c.needed is None for c in undecided):
                waits.append("some checks sit on their tolerance: more data alone may not "
                             "decide them soon")
            if waits:
                return f"{line}; decides at {'; '.join(waits)}"
        return line

    def to_dict(self) -> dict:
        """JSON-ready: every field, tolerances as {low, high}."""
        data = asdict(self)
        data["exit_code"] = self.exit_code
        data["failing_checks"] = self.failing_checks
        data["more_predictions_needed"] = self.more_predictions_needed
        return data

    def table(self) -> str:
        """The plain-text table: check, statistic, effect [interval], tolerance, p-value,
        class; the summary line above it, notes below."""
        header = ("check", "statistic", "effect [interval]", "tolerance", "p-value", "class")
        lines = [header]
        notes = []
        for c in self.checks:
            klass = c.classification + ("" if c.scored else " (shown)")
            lines.append((c.title, _statistic(c), _effect(c), _tolerance(c), _p(c.p_value),
                          klass))
            if c.note:
                notes.append(f"  {c.title}: {c.note}")
        widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
        body = ["  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True))
                .rstrip() for line in lines]
        return "\n".join([self.summary(), "", *body, *([""] + notes if notes else [])])


def _number(value: float, unit: Unit, signed: bool = True) -> str:
    sign = "+" if signed else ""
    if unit == "pp":
        return f"{100 * value:{sign}.2f}"
    if unit == "ratio":
        return f"{100 * value:{sign}.1f}%"
    if unit == "x":
        return f"{value:.2f}x"
    if unit in ("distance",):
        return f"{value:.3f}"
    return f"{value:{sign}.4f}"


def _suffix(unit: Unit) -> str:
    return " pp" if unit == "pp" else ""


def _effect(c: CheckResult) -> str:
    if c.effect is None:
        return "-"
    signed = c.unit not in ("distance", "x")
    text = _number(c.effect, c.unit, signed) + _suffix(c.unit)
    if c.low is not None and c.high is not None and c.unit != "x":
        text += f" [{_number(c.low, c.unit, signed)}, {_number(c.high, c.unit, signed)}]"
    return text


def _tolerance(c: CheckResult) -> str:
    low, high = c.tolerance.low, c.tolerance.high
    signed = c.unit not in ("distance", "x")
    if low is not None and high is not None:
        if c.unit != "ratio" and math.isclose(-low, high):
            return f"±{_number(high, c.unit, False)}{_suffix(c.unit)}"
        return f"{_number(low, c.unit, signed)} .. {_number(high, c.unit, signed)}"
    if high is not None:
        return f"<= {_number(high, c.unit, signed)}{_suffix(c.unit)}"
    return f">= {_number(low, c.unit, signed)}{_suffix(c.unit)}"


def _statistic(c: CheckResult) -> str:
    if c.statistic is None:
        return "-"
    value = c.statistic
    shown = f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.3g}"
    return f"{c.statistic_name}={shown}" if c.statistic_name else shown


def _p(value: float | None) -> str:
    if value is None or math.isnan(value):
        return "-"
    return "<0.0001" if value < 1e-4 else f"{value:.4f}"
