"""Run the analysis against a Prometheus and judge it: the verdict table of
``churn canary analyze`` and of every step of ``churn canary run``.

Only the comparison queries decide (the same text Argo Rollouts runs); the per-track queries
fill the stable and canary columns of the table.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import UTC, datetime

import httpx

from rollout.analysis import Check, Verdict, checks, number, overall, served_versions_query
from rollout.config import AnalysisSettings

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


@dataclass
class Report:
    window: str
    at: datetime
    rows: list[Row]
    served: dict[str, list[str]] = field(default_factory=dict)  # track -> "tag (n instances)"

    @property
    def verdict(self) -> Verdict:
        return overall([row.verdict for row in self.rows])

    @property
    def exit_code(self) -> int:
        return EXIT_CODES[self.verdict]

    def reasons(self) -> list[str]:
        """One phrase per check that did not pass: what a decision records."""
        out = []
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
        return {"verdict": self.verdict, "window": self.window, "at": self.at.isoformat(),
                "served": self.served,
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
    served: dict[str, list[str]] = {}
    for labels, count in query(prometheus_url, served_versions_query(settings), timeout):
        served.setdefault(labels.get("track", ""), []).append(
            f"{labels.get('model_tag', labels.get('model_version', '?'))} "
            f"({int(count)} instance{'s' if count != 1 else ''})")
    return Report(window, datetime.now(UTC), rows, served)


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
    served = "; ".join(f"{track or '(no track)'} serves {', '.join(tags)}"
                       for track, tags in sorted(report.served.items())) or "no service scraped"
    head = [f"canary analysis over the last {report.window} "
            f"({report.at.isoformat(timespec='seconds')}): {report.verdict.upper()}", served, ""]
    return "\n".join(head + text)
