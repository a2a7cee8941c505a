"""Run the analysis against a Prometheus and judge it: the verdict table of
``churn canary analyze`` and of every step of ``churn canary run``.

Only the comparison queries decide (the same text Argo Rollouts runs); the per-track queries
fill the stable and canary columns of the table.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import httpx

from rollout.analysis import (
    TRACKS,
    Check,
    Verdict,
    checks,
    number,
    overall,
    served_versions_query,
    serving_since_query,
)
from rollout.config import AnalysisSettings, duration_seconds

EXIT_CODES: dict[Verdict, int] = {"pass": 0, "fail": 1, "inconclusive": 3}


class PrometheusError(RuntimeError):
    """Prometheus could not be reached or refused a query."""


def query(url: str, expr: str, timeout: float = 15.0) -> list[tuple[dict[str, str], float]]:
    """(labels, value) of every series of an instant query. POST: the queries are long.
    Raises PrometheusError naming the server and its message."""
    try:
        answer = httpx.post(f"{url.rstrip('/')}/api/v1/query", data={"query": expr},
                            timeout=timeout)
    except httpx.HTTPError as exc:
        raise PrometheusError(f"Prometheus at {url} is unreachable: {exc}") from exc
    try:
        body = answer.json()
    except ValueError as exc:
        raise PrometheusError(f"Prometheus at {url} answered {answer.status_code} without "
                              "JSON: is it a Prometheus?") from exc
    if body.get("status") != "success":
        raise PrometheusError(f"Prometheus at {url} refused a query: {body.get('error')}")
    if body["data"]["resultType"] not in ("vector", "scalar"):
        raise PrometheusError(f"expected an instant vector, got {body['data']['resultType']}")
    result = body["data"]["result"]
    if body["data"]["resultType"] == "scalar":
        return [({}, float(result[1]))]
    return [(series["metric"], float(series["value"][1])) for series in result]


def single(result: list[tuple[dict[str, str], float]], expr: str) -> float | None:
    """The one value of a comparison; None when there is none (or it is NaN)."""
    if not result:
        return None
    if len(result) > 1:  # the queries sum every label away: more means a broken selector
        raise PrometheusError(f"expected one value, got {len(result)} series from {expr}")
    value = result[0][1]
    return None if math.isnan(value) else value


@dataclass(frozen=True)
class Row:
    check: Check
    stable: float | None
    canary: float | None
    value: float | None
    verdict: Verdict
    note: str = ""


@dataclass(frozen=True)
class Served:
    """A version one track serves now, on how many instances, and since when its data counts
    (its first sample in the window; None when Prometheus cannot say)."""

    track: str
    model_tag: str
    model_version: str
    instances: int
    since: datetime | None = None

    def describe(self) -> str:
        instances = f"{self.instances} instance{'s' if self.instances != 1 else ''}"
        return f"{self.model_tag or self.model_version} ({instances})"


@dataclass
class Report:
    window: str
    at: datetime
    rows: list[Row]
    # What each track serves now; None: not measured (a dry run's stand-in report).
    versions: list[Served] | None = None

    @property
    def window_start(self) -> datetime:
        return self.at - timedelta(seconds=duration_seconds(self.window))

    @property
    def served(self) -> dict[str, list[str]]:
        """track -> "tag (n instances)" of each version it serves now."""
        out: dict[str, list[str]] = {}
        for version in self.versions or []:
            out.setdefault(version.track, []).append(version.describe())
        return out

    def covered_from(self, track: str) -> datetime | None:
        """Where the track's compared data begins: the window's start, or later when what it
        serves now began serving inside the window."""
        starts = [v.since for v in self.versions or [] if v.track == track and v.since is not None]
        if not starts:
            return None
        return max(self.window_start, min(starts))

    def problems(self) -> list[str]:
        """What makes the comparison itself unsound now, whatever the numbers say: a track
        that serves no version, or several (a rollout in progress mixes them)."""
        if self.versions is None:
            return []
        out = []
        for track in TRACKS:
            versions = sorted({v.model_version for v in self.versions if v.track == track})
            if not versions:
                out.append(f"{track}: no instance reports a model (not scraped, or no ready "
                           "pod)")
            elif len(versions) > 1:
                out.append(f"{track}: serves {len(versions)} versions now ({', '.join(versions)})"
                           ": a rollout in progress; analyse when one version serves")
        return out

    @property
    def verdict(self) -> Verdict:
        problems = ["inconclusive"] if self.problems() else []
        return overall([row.verdict for row in self.rows] + problems)

    @property
    def exit_code(self) -> int:
        return EXIT_CODES[self.verdict]

    def reasons(self) -> list[str]:
        """One phrase per check that did not pass: what a decision records."""
        out = list(self.problems())
        for row in self.rows:
            if row.verdict == "fail":
                out.append(f"{row.check.name} {format_value(row.value, row.check, True)} "
                           f"(limit {format_limit(row.check).removeprefix('<= ')})")
            elif row.verdict == "inconclusive":
                out.append(f"{row.check.name}: {row.note or 'no data'}")
        return out

    def summary(self) -> str:
        reasons = self.reasons()
        return self.verdict + (": " + "; ".join(reasons) if reasons else "")

    def to_dict(self) -> dict:
        def when(moment: datetime | None) -> str | None:
            return moment.isoformat(timespec="seconds") if moment else None

        return {"verdict": self.verdict, "window": self.window, "at": self.at.isoformat(),
                "served": self.served,
                "versions": [{"track": v.track, "model_tag": v.model_tag,
                              "model_version": v.model_version, "instances": v.instances,
                              "since": when(v.since)} for v in self.versions or []],
                "covered_from": {track: when(self.covered_from(track)) for track in TRACKS},
                "problems": self.problems(),
                "checks": [{"check": r.check.name, "stable": r.stable, "canary": r.canary,
                            "value": r.value, "threshold": r.check.threshold,
                            "kind": r.check.kind, "verdict": r.verdict, "note": r.note}
                           for r in self.rows]}


def measure(prometheus_url: str, settings: AnalysisSettings, window: str | None = None,
            timeout: float = 15.0) -> Report:
    """Query every check and judge it. Raises PrometheusError when Prometheus fails (that is
    an error, exit 2, not a verdict)."""
    window = window or settings.window
    rows: list[Row] = []
    gates: dict[str, Verdict] = {}
    for check in checks(settings, window):
        sides = {track: single(query(prometheus_url, expr, timeout), expr)
                 for track, expr in (check.per_track or {}).items()}
        value = single(query(prometheus_url, check.compare, timeout), check.compare)
        verdict = check.judge(value)
        note = ""
        if check.kind == "gate":
            gates[check.name] = verdict
            if verdict != "pass":
                note = "too little traffic on one track" if value is not None else "no data"
        elif verdict == "inconclusive":
            note = (f"too few {check.gate}" if gates.get(check.gate) != "pass"
                    else "no data on one track")
        rows.append(Row(check, sides.get("stable"), sides.get("canary"), value, verdict, note))
    return Report(window, datetime.now(UTC), rows,
                  served_versions(prometheus_url, settings, window, timeout))


def served_versions(prometheus_url: str, settings: AnalysisSettings, window: str,
                    timeout: float = 15.0) -> list[Served]:
    """Which version each track serves now, on how many instances, and since when."""
    since = {(labels.get("track", ""), labels.get("model_version", "")):
             datetime.fromtimestamp(value, UTC)
             for labels, value in query(prometheus_url, serving_since_query(settings, window),
                                        timeout) if not math.isnan(value)}
    versions = []
    for labels, count in query(prometheus_url, served_versions_query(settings), timeout):
        track, version = labels.get("track", ""), labels.get("model_version", "")
        versions.append(Served(track, labels.get("model_tag", ""), version, int(count),
                               since.get((track, version))))
    return sorted(versions, key=lambda v: (v.track, v.model_tag))


# ------------------------------------------------------------------ the table


def format_value(value: float | None, check: Check, compared: bool = False) -> str:
    """A number as the table shows it, by the check's unit (compared: the judged value)."""
    if value is None:
        return "-"
    unit = check.unit
    if check.kind == "gate":
        return f"{value:,.0f}"
    sign = "+" if compared and check.signed else ""
    if unit == "pp":
        return f"{value:{sign}.2f} pp" if compared else f"{value:.2f}%"
    if unit == "x":
        return f"{value:.2f}x" if compared else f"{value * 1000:.1f} ms"
    return f"{value:{sign}.4f}"


def format_limit(check: Check) -> str:
    unit = {"pp": " pp", "x": "x"}.get(check.unit, "")
    sign = ">=" if check.kind == "gate" else "<="
    return f"{sign} {number(check.threshold)}{unit}"


def table(report: Report) -> str:
    """The verdict table: metric, stable, canary, compared value, limit, verdict."""
    header = ("check", "stable", "canary", "compared", "limit", "verdict")
    lines = [header] + [
        (row.check.title, format_value(row.stable, row.check), format_value(row.canary, row.check),
         format_value(row.value, row.check, True), format_limit(row.check),
         row.verdict + (f" ({row.note})" if row.note else ""))
        for row in report.rows]
    widths = [max(len(line[i]) for line in lines) for i in range(len(header) - 1)]
    text = ["  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=False))
            + "  " + line[-1] for line in lines]
    head = [f"canary analysis over the last {report.window} "
            f"({report.at.isoformat(timespec='seconds')}): {report.verdict.upper()}",
            *(_serving_line(report, track) for track in sorted(TRACKS)),
            *(f"not comparable: {problem}" for problem in report.problems()), ""]
    return "\n".join(head + text)


def _serving_line(report: Report, track: str) -> str:
    """What a track serves now and where its compared data begins."""
    tags = report.served.get(track)
    if not tags:
        return f"{track} serves nothing that reports a model"
    start = report.covered_from(track)
    if start is None:
        covered = "since: unknown"
    elif start <= report.window_start:
        covered = "data over the whole window"
    else:
        seconds = int((report.at - start).total_seconds())
        covered = (f"compared from {start.strftime('%H:%M:%S')}, the first sample of what it "
                   f"serves now ({seconds // 60}m {seconds % 60:02d}s of the {report.window} "
                   "window)")
    return f"{track} serves {', '.join(tags)}; {covered}"
