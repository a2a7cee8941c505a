"""Timestamped report files of the monitoring jobs, and their retention.

``<kind>-<model version>-<UTC yyyymmddTHHMMSSZ>.json`` (+ ``.html``) in the report folder.
The JSON is the job's result model (what was pushed, and more); the drift job's HTML is the
Evidently report, the others a short summary. ``churn retrain-check`` reads the newest JSON.
"""

from __future__ import annotations

import html
import json
import logging
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from pydantic import BaseModel

log = logging.getLogger("churn.monitoring")

_NAME = re.compile(r"^(?P<kind>[a-z_]+)-(?P<version>[A-Za-z0-9_.]+)-(?P<stamp>\d{8}T\d{6}Z)"
                   r"(?:-(?P<n>\d+))?\.(?:json|html)$")
STAMP = "%Y%m%dT%H%M%SZ"


@dataclass(frozen=True)
class ReportFiles:
    json_path: Path
    html_path: Path


def _stamp_of(path: Path) -> datetime | None:
    match = _NAME.match(path.name)
    if not match:
        return None
    return datetime.strptime(match.group("stamp"), STAMP).replace(tzinfo=UTC)


def write_report(
    directory: Path, kind: str, model_version: str, result: BaseModel, now: datetime,
    evidently_snapshot: Any | None = None, headline: list[str] | None = None,
) -> ReportFiles:
    """Write ``result`` as JSON and an HTML view next to it; never overwrites an earlier run."""
    directory.mkdir(parents=True, exist_ok=True)
    stem = f"{kind}-{model_version}-{now.astimezone(UTC).strftime(STAMP)}"
    n = 0
    while (directory / f"{stem}.json").exists():
        n += 1
        stem = f"{kind}-{model_version}-{now.astimezone(UTC).strftime(STAMP)}-{n}"
    files = ReportFiles(directory / f"{stem}.json", directory / f"{stem}.html")
    payload = result.model_dump_json(indent=2)
    files.json_path.write_text(payload)
    if evidently_snapshot is not None:
        evidently_snapshot.save_html(str(files.html_path))
    else:
        files.html_path.write_text(_summary_html(f"{kind} report: {model_version}",
                                                 headline or [], payload))
    return files


def _summary_html(title: str, headline: list[str], payload: str) -> str:
    items = "".join(f"<li>{html.escape(line)}</li>" for line in headline)
    body = html.escape(json.dumps(json.loads(payload), indent=2))
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}"
            f"</title></head><body><h1>{html.escape(title)}</h1><ul>{items}</ul>"
            f"<pre>{body}</pre></body></html>\n")


def latest_report(
    directory: Path, kind: str, model_version: str, not_before: datetime | None = None
) -> Path | None:
    """The newest ``kind`` JSON report of ``model_version`` (None if none, or all too old)."""
    if not directory.is_dir():
        return None
    best: tuple[datetime, int, Path] | None = None
    for path in directory.glob(f"{kind}-{model_version}-*.json"):
        match = _NAME.match(path.name)
        if not match or match.group("kind") != kind or match.group("version") != model_version:
            continue
        stamp = _stamp_of(path)
        if stamp is None or (not_before is not None and stamp < not_before):
            continue
        key = (stamp, int(match.group("n") or 0), path)  # -<n>: a later run, same second
        if best is None or key[:2] > best[:2]:
            best = key
    return best[2] if best else None


def prune_reports(directory: Path, retention_days: float, now: datetime) -> list[Path]:
    """Delete report files older than the retention, keeping the newest run of each kind and
    model version whatever its age. Returns the deleted paths."""
    if not directory.is_dir():
        return []
    newest: dict[tuple[str, str], datetime] = {}
    files = []
    for path in directory.iterdir():
        match = _NAME.match(path.name)
        stamp = _stamp_of(path)
        if not match or stamp is None:
            continue
        key = (match.group("kind"), match.group("version"))
        newest[key] = max(newest.get(key, stamp), stamp)
        files.append((path, key, stamp))
    cutoff = now - timedelta(days=retention_days)
    deleted = []
    for path, key, stamp in files:
        if stamp < cutoff and stamp < newest[key]:
            path.unlink(missing_ok=True)
            deleted.append(path)
    if deleted:
        log.info("deleted %d report files older than %g days", len(deleted), retention_days)
    return deleted
