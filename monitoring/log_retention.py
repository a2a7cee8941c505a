"""Compaction and retention of the inference log: what ``churn log compact`` does.

**Compaction**: a closed written file (an Arrow stream, or JSON lines from older writers;
``LogFile.closed``: sealed by its writer, or older than any writer keeps a file open) becomes a
Parquet twin with the same stem, in steps that a crash at any point leaves readable, with every
record counted once:

1. write the Parquet file under a hidden temporary name (``.inferences-...tmp``, which no
   reader lists), fsync it, and give it the written file's modification time;
2. hard-link it to its final name: a link never replaces a file, so of two runs compacting the
   same file at once exactly one succeeds and counts it; the other drops its copy;
3. fsync the folder, delete the written file, fsync the folder again.

A crash before 2 leaves the written file (compacted again next run) and a temporary file
(removed once older than ``STALE_TEMP_AGE``); after 2, both forms (readers take the Parquet
twin, the next run deletes the written file).

**Retention** (``plan_retention``, pure): remove closed files whose last record is older than
``max_age``; then, while the folder is over ``max_bytes``, the oldest closed files, but never
one that holds records of the protected window (the drift window, optionally the performance
window). When that is not enough, everything else is kept and the run says so (log line and
``churn_inference_log_over_limit``). A file's last record is bounded by its modification time
(copied onto the Parquet twin), plus ``CLOCK_MARGIN`` for skew between the writers' clocks and
the volume's. Why these rules: docs/monitoring.md.
"""

from __future__ import annotations

import errno
import logging
import os
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Literal

from prometheus_client import CollectorRegistry, Gauge

from kernel.inference_log import (
    CLOCK_MARGIN,
    PARQUET_SUFFIX,
    PREFIX,
    LogFile,
    LogFileName,
    list_log_files,
    writer_host,
    written_table,
)
from monitoring.config import MonitoringConfig, parse_window

log = logging.getLogger("churn.monitoring.log_retention")

JOB = "churn_log_retention"
TEMP_PREFIX = f".{PREFIX}"
TEMP_SUFFIX = ".tmp"
STALE_TEMP_AGE = timedelta(hours=1)  # a compaction takes seconds: an older one has crashed
COMPRESSION = "zstd"  # 44 B/record vs 64 snappy, 46 gzip at 12x its CPU (bench/inference_log.py)
_NO_HARD_LINKS = {errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK, errno.ENOSYS}


@dataclass(frozen=True)
class RetentionPolicy:
    """Retention rules in absolute terms, resolved from ``configs/monitoring.yaml``."""

    max_age: timedelta
    max_bytes: int
    protected: timedelta  # records this recent are never removed

    @classmethod
    def from_config(cls, config: MonitoringConfig) -> RetentionPolicy:
        settings = config.log_retention
        drift = parse_window(config.drift.window)
        performance = parse_window(config.performance.window)
        max_age = parse_window(settings.max_age) if settings.max_age else performance
        protected = max(drift, performance) if settings.protect_performance_window else drift
        return cls(max_age=max(max_age, drift), max_bytes=settings.max_bytes,
                   protected=protected)


# -- compaction -------------------------------------------------------------------------------
@dataclass(frozen=True)
class Compaction:
    """What compacting one file did. ``outcome``: ``compacted`` (by this run), ``finished`` (an
    interrupted run had made the twin; the written file is now deleted), ``empty`` (no record:
    deleted), ``raced`` (another run compacted or removed it first)."""

    stem: str
    outcome: Literal["compacted", "finished", "empty", "raced"]
    records: int = 0
    written_bytes: int = 0
    parquet_bytes: int = 0


def compact(log_file: LogFile) -> Compaction:
    """Turn a closed written file into its Parquet twin (steps: module docstring).

    Raises OSError when the disk fails (the written file is then kept), InferenceLogError when
    its records cannot form one table.
    """
    import pyarrow.parquet as pq

    source = log_file.written_path
    if source is None:
        raise ValueError(f"{log_file.stem} has no written form to compact")
    twin = source.with_suffix(PARQUET_SUFFIX)
    folder = source.parent
    if twin.exists():
        return Compaction(log_file.stem, "finished" if _unlink(source) else "raced")
    try:
        info = source.stat()
        table = written_table(source)
    except FileNotFoundError:
        return Compaction(log_file.stem, "raced")
    if table is None:
        return Compaction(log_file.stem, "empty" if _unlink(source) else "raced",
                          written_bytes=info.st_size)
    # Unique per attempt: runs in other pods, processes or threads never share one.
    temp = folder / (f"{TEMP_PREFIX}{log_file.stem.removeprefix(PREFIX)}{PARQUET_SUFFIX}."
                     f"{writer_host()}-{os.getpid()}-{secrets.token_hex(4)}{TEMP_SUFFIX}")
    try:
        with open(temp, "wb") as out:
            pq.write_table(table, out, compression=COMPRESSION)
            out.flush()
            os.fsync(out.fileno())
            parquet_bytes = os.fstat(out.fileno()).st_size
        # The twin keeps the written file's time: retention and the reader bound records by it.
        os.utime(temp, ns=(info.st_atime_ns, info.st_mtime_ns))
        won = _link(temp, twin)
    finally:
        _unlink(temp)
    _fsync(folder)
    _unlink(source)
    _fsync(folder)
    if not won:
        return Compaction(log_file.stem, "raced")
    return Compaction(log_file.stem, "compacted", records=table.num_rows,
                      written_bytes=info.st_size, parquet_bytes=parquet_bytes)


def _link(temp: Path, final: Path) -> bool:
    """Give ``temp`` its final name unless it exists; False when another run was first."""
    try:
        os.link(temp, final)
    except FileExistsError:
        return False
    except OSError as exc:
        if exc.errno not in _NO_HARD_LINKS:
            raise
        os.replace(temp, final)  # no hard links on this volume: a twin is replaced by its equal
    return True


def _unlink(path: Path) -> bool:
    try:
        path.unlink()
    except FileNotFoundError:
        return False
    return True


def _fsync(folder: Path) -> None:
    """Make renames and deletions in ``folder`` durable (a no-op where folders cannot be
    fsynced)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


# -- retention --------------------------------------------------------------------------------
@dataclass(frozen=True)
class Removal:
    log_file: LogFile
    reason: Literal["age", "size"]


@dataclass(frozen=True)
class RetentionPlan:
    """Files to remove, and the folder as it will be after."""

    removals: list[Removal]
    kept_bytes: int  # log files and other bytes (temporary files) left
    protected_bytes: int  # held by files the protected window needs
    max_bytes: int
    oldest_kept: datetime | None  # the name stamp of the oldest file left

    @property
    def over_limit(self) -> bool:
        return self.kept_bytes > self.max_bytes

    def removed(self, reason: str) -> list[LogFile]:
        return [r.log_file for r in self.removals if r.reason == reason]


def latest_record_bound(log_file: LogFile) -> datetime:
    """No record of the file is stamped later than this."""
    return log_file.modified + CLOCK_MARGIN


def plan_retention(files: Sequence[LogFile], other_bytes: int, policy: RetentionPolicy,
                   now: datetime) -> RetentionPlan:
    """Which files to remove (module docstring). Files still open are never removed."""
    expired_before = now - policy.max_age
    protected_from = now - policy.protected
    by_age = sorted(files, key=lambda f: (latest_record_bound(f), f.stem))
    removals = [Removal(f, "age") for f in by_age
                if f.closed(now) and latest_record_bound(f) < expired_before]
    gone = {r.log_file.stem for r in removals}
    total = other_bytes + sum(f.size for f in files if f.stem not in gone)
    for f in by_age:
        if total <= policy.max_bytes or latest_record_bound(f) >= protected_from:
            break
        if f.stem not in gone and f.closed(now):
            removals.append(Removal(f, "size"))
            gone.add(f.stem)
            total -= f.size
    kept = [f for f in files if f.stem not in gone]
    protected = sum(f.size for f in kept if latest_record_bound(f) >= protected_from)
    return RetentionPlan(removals=removals, kept_bytes=total, protected_bytes=protected,
                         max_bytes=policy.max_bytes,
                         oldest_kept=min((f.name.opened for f in kept), default=None))


def remove_log_file(log_file: LogFile) -> bool:
    """Delete both forms; False when another run had already deleted them."""
    removed = [_unlink(p) for p in (log_file.parquet_path, log_file.written_path) if p]
    return any(removed)


def stale_temp_files(directory: Path, now: datetime) -> list[tuple[Path, int, bool]]:
    """Temporary files of compactions: (path, bytes, stale) for each."""
    found = []
    for path in Path(directory).glob(f"{TEMP_PREFIX}*{TEMP_SUFFIX}"):
        try:
            info = path.stat()
        except FileNotFoundError:
            continue
        # ctime, not mtime: the temporary file is given the (older) written file's mtime.
        age = now - datetime.fromtimestamp(info.st_ctime, now.tzinfo)
        found.append((path, info.st_size, age > STALE_TEMP_AGE))
    return found


# -- one run ------------------------------------------------------------------------------------
@dataclass
class MaintenanceResult:
    """What one ``churn log compact`` run did, and the folder after it."""

    dry_run: bool
    compactions: list[Compaction] = field(default_factory=list)
    to_compact: list[str] = field(default_factory=list)  # dry run: stems that would be
    failures: list[str] = field(default_factory=list)  # "stem: reason"
    plan: RetentionPlan | None = None
    removed: dict[str, list[LogFile]] = field(default_factory=dict)  # reason -> files
    removed_temp_bytes: int = 0
    removed_temp_files: int = 0
    files_after: dict[str, int] = field(default_factory=dict)  # form -> count
    bytes_after: dict[str, int] = field(default_factory=dict)  # form -> bytes

    def compacted(self) -> list[Compaction]:
        return [c for c in self.compactions if c.outcome == "compacted"]


def maintain_log(directory: Path, policy: RetentionPolicy, now: datetime,
                 dry_run: bool = False) -> MaintenanceResult:
    """Compact every closed written file, then apply retention. A file that cannot be
    compacted is kept as it is and named in ``failures``; the others go on."""
    directory = Path(directory)
    result = MaintenanceResult(dry_run=dry_run)
    for log_file in list_log_files(directory):
        if log_file.written_path is None or not log_file.closed(now):
            continue
        if dry_run:
            result.to_compact.append(log_file.stem)
            continue
        try:
            result.compactions.append(compact(log_file))
        except Exception as exc:  # noqa: BLE001 - one bad file must not stop the others
            log.error("could not compact %s: %s", log_file.written_path, exc)
            result.failures.append(f"{log_file.stem}: {type(exc).__name__}: {exc}")

    temps = stale_temp_files(directory, now)
    stale = [(path, size) for path, size, is_stale in temps if is_stale]
    files = list_log_files(directory)
    live_temp_bytes = sum(size for _, size, is_stale in temps if not is_stale)
    result.plan = plan_retention(files, live_temp_bytes, policy, now)
    result.removed = {"age": result.plan.removed("age"), "size": result.plan.removed("size")}
    if not dry_run:
        for path, size in stale:
            if _unlink(path):
                result.removed_temp_files += 1
                result.removed_temp_bytes += size
        for reason, removed in result.removed.items():
            result.removed[reason] = [f for f in removed if remove_log_file(f)]
        files = list_log_files(directory)
    for form in ("arrows", "jsonl", "parquet"):
        sizes = [_form_size(f, form) for f in files]
        result.files_after[form] = sum(1 for s in sizes if s is not None)
        result.bytes_after[form] = sum(s for s in sizes if s is not None)
    if result.plan.over_limit:
        log.error("inference log over its size limit: %s kept > max_bytes %s, because "
                  "%s hold records of the protected window (%s); nothing of it was removed. "
                  "Grow the volume, lower service sample_rate, or raise max_bytes",
                  _size(result.plan.kept_bytes), _size(policy.max_bytes),
                  _size(result.plan.protected_bytes), _duration(policy.protected))
    return result


def _form_size(log_file: LogFile, form: str) -> int | None:
    path = log_file.parquet_path if form == "parquet" else log_file.written_path
    if path is not None and form != "parquet" and LogFileName.parse(path.name).form != form:
        return None
    try:
        return path.stat().st_size if path is not None else None
    except FileNotFoundError:
        return None


def summary_line(result: MaintenanceResult) -> str:
    """One line for the job's log: what was compacted and removed, and the folder after."""
    plan = result.plan
    verb = "would remove" if result.dry_run else "removed"
    if result.dry_run:
        head = f"would compact {len(result.to_compact)} files"
    else:
        done = result.compacted()
        head = (f"compacted {len(done)} files ({sum(c.records for c in done):,} records, "
                f"{_size(sum(c.written_bytes for c in done))} -> "
                f"{_size(sum(c.parquet_bytes for c in done))})")
    removed = "; ".join(
        f"{verb} {len(files)} by {reason} ({_size(sum(f.size for f in files))})"
        for reason, files in result.removed.items())
    total = sum(result.bytes_after.values())
    files = sum(result.files_after.values())
    line = (f"{head}; {removed}; log {_size(total)} in {files} files "
            f"(limit {_size(plan.max_bytes)})")
    if result.removed_temp_files:
        line += f"; removed {result.removed_temp_files} stale temporary files"
    if plan.over_limit:
        line += (f"; OVER LIMIT: {_size(plan.protected_bytes)} hold records of the protected "
                 "window and are kept")
    if result.failures:
        line += f"; {len(result.failures)} files could not be compacted"
    return line


def _duration(span: timedelta) -> str:
    hours = span / timedelta(hours=1)
    return f"{hours / 24:g}d" if hours % 24 == 0 else f"{hours:g}h"


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def maintenance_registry(result: MaintenanceResult, now: float) -> CollectorRegistry:
    """The ``churn_log_retention`` group: this run's counts and the folder after it."""
    registry = CollectorRegistry()

    def gauge(name: str, help_text: str, labels: Sequence[str] = ()) -> Gauge:
        return Gauge(name, help_text, list(labels), registry=registry)

    done = result.compacted()
    gauge("churn_inference_log_compacted_files",
          "files compacted to Parquet by the last run").set(len(done))
    gauge("churn_inference_log_compacted_records",
          "records in the files compacted by the last run").set(sum(c.records for c in done))
    gauge("churn_inference_log_compaction_failures",
          "closed files the last run could not compact (kept as written)").set(
              len(result.failures))
    files = gauge("churn_inference_log_removed_files", "files removed by the last run",
                  ["reason"])
    size = gauge("churn_inference_log_removed_bytes", "bytes removed by the last run",
                 ["reason"])
    for reason, removed in result.removed.items():
        files.labels(reason=reason).set(len(removed))
        size.labels(reason=reason).set(sum(f.size for f in removed))
    files.labels(reason="stale_temp").set(result.removed_temp_files)
    size.labels(reason="stale_temp").set(result.removed_temp_bytes)
    count = gauge("churn_inference_log_files", "log files after the last run", ["form"])
    total = gauge("churn_inference_log_bytes", "bytes of log files after the last run",
                  ["form"])
    for form in result.files_after:
        count.labels(form=form).set(result.files_after[form])
        total.labels(form=form).set(result.bytes_after[form])
    plan = result.plan
    gauge("churn_inference_log_limit_bytes", "log_retention.max_bytes").set(plan.max_bytes)
    gauge("churn_inference_log_protected_bytes",
          "bytes holding records of the protected window").set(plan.protected_bytes)
    gauge("churn_inference_log_over_limit", "1 when the folder stays over max_bytes because "
          "the protected window needs it").set(plan.over_limit)
    if plan.oldest_kept is not None:
        gauge("churn_inference_log_oldest_file_timestamp_seconds",
              "when the oldest file left was opened (unix time): how far back the jobs can "
              "read").set(plan.oldest_kept.timestamp())
    gauge("churn_log_retention_last_run_timestamp_seconds",
          "end of the last run (unix time)").set(now)
    return registry
