"""The drill's report: ``drill.json`` (everything recorded), ``drill.md`` (a table, then each
scenario's checks and evidence) and ``drill.html`` (the same, with time to detection per
scenario drawn on a log scale: from milliseconds for a 4xx to a minute for an alert)."""

from __future__ import annotations

import html
import json
import math
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from drill.scenario import ScenarioResult

JSON_NAME, MARKDOWN_NAME, HTML_NAME = "drill.json", "drill.md", "drill.html"


class DrillReport(BaseModel):
    started_at: str
    finished_at: str
    seconds: float
    command: str
    revision: str | None = None
    machine: dict[str, Any] = {}
    champion: str | None = None
    time_scale: float
    rule_changes: list[str] = []
    scenarios: list[ScenarioResult]

    @property
    def caught(self) -> int:
        return sum(1 for s in self.scenarios if s.passed)

    @property
    def all_caught(self) -> bool:
        return bool(self.scenarios) and self.caught == len(self.scenarios)

    def headline(self) -> str:
        return f"{self.caught} of {len(self.scenarios)} failures caught"


def _seconds(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value * 1000:.0f} ms" if value < 1 else f"{value:.1f} s"


def _duration(seconds: float) -> str:
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes} min {rest} s" if minutes else f"{rest} s"


def _cell(text: str) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


def _evidence_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value, default=str, ensure_ascii=False)


def _intact(result: ScenarioResult) -> str:
    kept = [c for c in result.checks if c.kind == "intact"]
    if not kept:
        return "-"
    ok = sum(1 for c in kept if c.passed)
    return f"{'yes' if ok == len(kept) else 'NO'} ({ok}/{len(kept)} checks)"


def _run_line(report: DrillReport) -> str:
    machine = report.machine
    load = ""
    if machine.get("load_average_before"):
        load = (f" (load average {machine['load_average_before'][0]:.1f} before, "
                f"{machine.get('load_average_after', ['?'])[0]:.1f} after)")
    revision = f", revision `{report.revision}`" if report.revision else ""
    return (f"`{report.command}` started {report.started_at}, took "
            f"{_duration(report.seconds)}{revision}, on {machine.get('cpus', '?')} CPUs{load}. "
            f"Champion under test: `{report.champion or '-'}`. Alert time runs "
            f"{report.time_scale:g}x faster in the drill's Prometheus.")


def markdown(report: DrillReport) -> str:
    lines = [f"# churn drill: {report.headline()}", "", _run_line(report), "",
             "| scenario | failure injected | caught by | caught | detected after | "
             "nothing lost or wrongly changed |", "| --- | --- | --- | --- | --- | --- |"]
    for s in report.scenarios:
        lines.append(f"| [{s.name}](#{s.name}) | {_cell(s.failure)} | {_cell(s.guard)} | "
                     f"{'yes' if s.passed else '**NO**'} | {_seconds(s.detection_seconds)} | "
                     f"{_intact(s)} |")
    if report.rule_changes:
        lines += ["", "Alert rules: `monitoring/prometheus/rules.yml`, with only these numbers "
                  f"divided by {report.time_scale:g} (drill/rules.py):", ""]
        lines += [f"- {change}" for change in report.rule_changes]
    for s in report.scenarios:
        lines += ["", f"## {s.name}", "", f"- failure: {s.failure}", f"- guard: {s.guard}",
                  f"- result: {'caught' if s.passed else '**not caught**'}"
                  + (f", detected after {_seconds(s.detection_seconds)}"
                     if s.detection_seconds is not None else "")
                  + f" (scenario ran {_seconds(s.duration_seconds)})"]
        if s.error:
            lines.append(f"- error: `{_cell(s.error)}`")
        lines += ["", "| | check | seen |", "| --- | --- | --- |"]
        for c in s.checks:
            mark = "pass" if c.passed else "**FAIL**"
            kind = "caught" if c.kind == "caught" else "intact"
            lines.append(f"| {mark} | {kind}: {_cell(c.what)} | {_cell(c.seen)[:300]} |")
        if s.evidence:
            lines += ["", "Evidence:", ""]
            lines += [f"- {key}: `{_cell(_evidence_text(value))[:600]}`"
                      for key, value in s.evidence.items()]
    return "\n".join(lines) + "\n"


def detection_chart(report: DrillReport, width: int = 560, row: int = 24) -> str:
    """An SVG bar per scenario: time to detection on a log scale (red: not caught)."""
    timed = [s for s in report.scenarios if s.detection_seconds is not None]
    low = 0.01
    high = max([low * 10] + [s.detection_seconds for s in timed]) * 1.5
    span = math.log10(high) - math.log10(low)
    label_width, top = 150, 20
    height = top + row * len(report.scenarios) + 30

    def x(seconds: float) -> float:
        return label_width + width * (math.log10(max(seconds, low)) - math.log10(low)) / span

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{label_width + width + 60}" '
             f'height="{height}" font-family="sans-serif" font-size="12">',
             f'<text x="{label_width}" y="14">time to detection (log scale)</text>']
    tick = low
    while tick <= high:
        parts.append(f'<line x1="{x(tick):.1f}" y1="{top}" x2="{x(tick):.1f}" '
                     f'y2="{height - 25}" stroke="#ddd"/><text x="{x(tick):.1f}" '
                     f'y="{height - 10}" text-anchor="middle">{_seconds(tick)}</text>')
        tick *= 10
    for i, s in enumerate(report.scenarios):
        y = top + i * row
        parts.append(f'<text x="{label_width - 6}" y="{y + 16}" text-anchor="end">'
                     f'{html.escape(s.name)}</text>')
        if s.detection_seconds is None:
            parts.append(f'<text x="{label_width + 4}" y="{y + 16}" fill="#b00">'
                         f'{"not timed" if s.passed else "not caught"}</text>')
            continue
        colour = "#2e7d32" if s.passed else "#c62828"
        end = x(s.detection_seconds)
        parts.append(f'<rect x="{label_width}" y="{y + 4}" width="{max(end - label_width, 2):.1f}"'
                     f' height="{row - 8}" fill="{colour}"/><text x="{end + 4:.1f}" '
                     f'y="{y + 16}">{_seconds(s.detection_seconds)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def html_page(report: DrillReport) -> str:
    rows = "".join(
        f"<tr><td><a href='#{s.name}'>{html.escape(s.name)}</a></td>"
        f"<td>{html.escape(s.failure)}</td><td>{html.escape(s.guard)}</td>"
        f"<td class='{'ok' if s.passed else 'bad'}'>{'yes' if s.passed else 'NO'}</td>"
        f"<td>{_seconds(s.detection_seconds)}</td><td>{html.escape(_intact(s))}</td></tr>"
        for s in report.scenarios)
    sections = []
    for s in report.scenarios:
        checks = "".join(
            f"<tr><td class='{'ok' if c.passed else 'bad'}'>{'pass' if c.passed else 'FAIL'}"
            f"</td><td>{c.kind}: {html.escape(c.what)}</td><td>{html.escape(c.seen[:300])}"
            "</td></tr>" for c in s.checks)
        evidence = "".join(f"<li><b>{html.escape(k)}</b>: <code>"
                           f"{html.escape(_evidence_text(v)[:600])}</code></li>"
                           for k, v in s.evidence.items())
        error = f"<p class='bad'>error: {html.escape(s.error)}</p>" if s.error else ""
        sections.append(
            f"<h2 id='{s.name}'>{html.escape(s.name)}</h2><p>failure: {html.escape(s.failure)}"
            f"<br>guard: {html.escape(s.guard)}</p>{error}<table><tr><th></th><th>check</th>"
            f"<th>seen</th></tr>{checks}</table><ul>{evidence}</ul>")
    changes = "".join(f"<li>{html.escape(c)}</li>" for c in report.rule_changes)
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>churn drill</title><style>"
        "body{font-family:sans-serif;max-width:1100px;margin:2em auto}td,th{border:1px solid "
        "#ccc;padding:4px;vertical-align:top}table{border-collapse:collapse}.ok{color:#2e7d32}"
        ".bad{color:#c62828;font-weight:bold}code{font-size:90%}</style></head><body>"
        f"<h1>churn drill: {html.escape(report.headline())}</h1>"
        f"<p>{html.escape(_run_line(report))}</p>{detection_chart(report)}"
        "<table><tr><th>scenario</th><th>failure injected</th><th>caught by</th><th>caught</th>"
        f"<th>detected after</th><th>nothing lost or wrongly changed</th></tr>{rows}</table>"
        f"<p>Alert rules scaled (drill/rules.py):</p><ul>{changes}</ul>"
        + "".join(sections) + "</body></html>\n")


def write_report(report: DrillReport, folder: Path) -> list[Path]:
    """Write the three files into ``folder`` (created); returns their paths."""
    folder.mkdir(parents=True, exist_ok=True)
    files = {JSON_NAME: report.model_dump_json(indent=2) + "\n",
             MARKDOWN_NAME: markdown(report), HTML_NAME: html_page(report)}
    paths = []
    for name, text in files.items():
        path = folder / name
        partial = path.with_name(f".{name}.partial")
        partial.write_text(text)
        partial.replace(path)  # a reader never sees half a report
        paths.append(path)
    return paths
