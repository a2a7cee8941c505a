"""Judge a canary: ``churn canary analyze`` and every step of ``churn canary run``.

The canary judge (``monitoring.judge.judge_unpaired``) decides on what each track served now:
its predictions from the inference log (``monitoring.judge_inputs``: by track, by the version
the track serves now, since that version began serving) and its requests, failures, rejected
input and latency from Prometheus (``rollout.analysis``: the same selection, exact counts).
A track that serves no version, or two (a rollout in progress), cannot be judged: inconclusive.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import httpx

from rollout.analysis import (
    TRACKS,
    served_versions_query,
    serving_since_query,
    track_queries,
)
from rollout.config import AnalysisSettings, duration_seconds

if TYPE_CHECKING:  # imported when used: `churn --help` must not import the judge
    from monitoring.config import PushgatewaySettings
    from monitoring.judge import JudgeConfig, Judgement

Verdict = Literal["pass", "fail", "inconclusive"]

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
class Served:
    """A version one track serves now, on how many instances, and since when its data counts
    (when its earliest instance loaded it; None when Prometheus cannot say)."""

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
    """A canary analysis: what each track serves, the traffic it rests on, the judgement."""

    window: str
    at: datetime
    judgement: Judgement | None
    # What each track serves now; None: not measured (a dry run's stand-in report).
    versions: list[Served] | None = None
    traffic: dict[str, dict[str, float | None]] = field(default_factory=dict)
    predictions: dict[str, int] = field(default_factory=dict)

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

    def version_of(self, track: str) -> str | None:
        found = {v.model_version for v in self.versions or [] if v.track == track}
        return found.pop() if len(found) == 1 else None

    def covered_from(self, track: str) -> datetime | None:
        """Where the track's compared data begins: the window's start, or later when what it
        serves now began serving inside the window."""
        starts = [v.since for v in self.versions or [] if v.track == track and v.since]
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
        if self.versions is None and self.judgement is None:
            return "pass"  # a dry run's stand-in: nothing was measured
        if self.problems() or self.judgement is None:
            return "inconclusive"
        return self.judgement.verdict

    @property
    def exit_code(self) -> int:
        return EXIT_CODES[self.verdict]

    def reasons(self) -> list[str]:
        """Why the verdict is not a pass: what a decision records."""
        out = list(self.problems())
        if self.judgement is not None and self.judgement.verdict != "pass":
            out.append(self.judgement.summary())
        return out

    def summary(self) -> str:
        reasons = self.reasons()
        return self.verdict + (": " + "; ".join(reasons) if reasons else "")

    def to_dict(self) -> dict:
        def when(moment: datetime | None) -> str | None:
            return moment.isoformat(timespec="seconds") if moment else None

        return {"verdict": self.verdict, "exit_code": self.exit_code, "window": self.window,
                "at": self.at.isoformat(), "served": self.served,
                "versions": [{"track": v.track, "model_tag": v.model_tag,
                              "model_version": v.model_version, "instances": v.instances,
                              "since": when(v.since)} for v in self.versions or []],
                "covered_from": {track: when(self.covered_from(track)) for track in TRACKS},
                "problems": self.problems(), "traffic": self.traffic,
                "predictions": self.predictions,
                "judgement": self.judgement.to_dict() if self.judgement else None}


def measure(prometheus_url: str, settings: AnalysisSettings, log_dir: Path,
            judge: JudgeConfig | None = None, window: str | None = None, sample: int = 1,
            timeout: float = 15.0) -> Report:
    """What each track serves, its traffic (Prometheus) and predictions (the inference log in
    ``log_dir``), judged. Raises PrometheusError when Prometheus fails (an error, exit 2, not a
    verdict)."""
    from monitoring.judge import TrackTraffic, judge_unpaired
    from monitoring.judge_inputs import track_predictions

    window = window or settings.window
    versions = served_versions(prometheus_url, settings, window, timeout)
    report = Report(window, datetime.now(UTC), None, versions)
    if report.problems():
        return report
    values = {name: {track: single(query(prometheus_url, expr, timeout), expr)
                     for track, expr in per_track.items()}
              for name, per_track in track_queries(settings, window).items()}
    report.traffic = {track: {name: values[name][track] for name in values} for track in TRACKS}
    traffic = {}
    for track in TRACKS:
        counts = report.traffic[track]
        if counts["requests"] is None:
            traffic[track] = None
            continue
        traffic[track] = TrackTraffic(
            requests=round(counts["requests"]), failed=round(counts["failed"] or 0),
            rejected=round(counts["rejected"] or 0), latency_p95=counts["latency_p95"],
            latency_p99=counts["latency_p99"])
    records = {track: track_predictions(log_dir, track=track, version=report.version_of(track),
                                        since=report.covered_from(track) or report.window_start)
               for track in TRACKS}
    report.predictions = {track: len(frame) for track, frame in records.items()}
    report.judgement = judge_unpaired(records["stable"], records["canary"], judge,
                                      stable_traffic=traffic["stable"],
                                      canary_traffic=traffic["canary"], sample=sample)
    return report


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


def push(report: Report, settings: PushgatewaySettings) -> None:
    """The judgement's gauges to the Pushgateway, grouped by the canary's version (the
    ChurnCanaryAnalysisFailing alert and the dashboards read them). Raises PushError."""
    import time

    from monitoring.judge import CANARY_JOB, judgement_registry
    from monitoring.push import push_metrics

    canary = report.version_of("canary")
    if report.judgement is None or canary is None:
        return
    # model_version (the canary's) is the push's grouping key: every series carries it.
    labels = {"stable_version": report.version_of("stable") or ""}
    push_metrics(judgement_registry(report.judgement, time.time(), labels), CANARY_JOB, canary,
                 settings)


# ------------------------------------------------------------------ the table


def table(report: Report) -> str:
    """What each track serves and where its data begins, then the judge's table."""
    head = [f"canary analysis over the last {report.window} "
            f"({report.at.isoformat(timespec='seconds')}): {report.verdict.upper()}",
            *(_serving_line(report, track) for track in sorted(TRACKS)),
            *(f"not comparable: {problem}" for problem in report.problems())]
    if report.predictions:
        head.append("judged on " + ", ".join(
            f"{track} {report.predictions[track]:,} predictions, "
            f"{int(report.traffic.get(track, {}).get('requests') or 0):,} requests"
            for track in sorted(TRACKS)))
    body = [report.judgement.table()] if report.judgement is not None else []
    return "\n".join([*head, "", *body]).rstrip() + "\n"


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
        covered = (f"compared from {start.strftime('%H:%M:%S')}, when what it serves now "
                   f"began serving ({seconds // 60}m {seconds % 60:02d}s of the "
                   f"{report.window} window)")
    return f"{track} serves {', '.join(tags)}; {covered}"
