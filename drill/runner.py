"""Which scenarios exist, in which order they run, and the run itself: one progress line per
step, every scenario recorded even when it could not run, the system stopped at the end."""

from __future__ import annotations

import logging
import os
import platform
import subprocess
import time
import traceback
from collections.abc import Callable
from datetime import UTC, datetime

from drill import (
    canary_faults,
    lifecycle_faults,
    monitoring_faults,
    serving_faults,
    training_faults,
)
from drill.report import DrillReport
from drill.scenario import Finding, Scenario, ScenarioResult
from drill.system import REPO, DrillSystem

log = logging.getLogger("churn.drill")

# The order a failure would travel: training, serving, monitoring, rollout. Scenarios share
# the champion, its server and the monitoring stack, started by the first that needs them.
SCENARIOS: list[Scenario] = [
    *training_faults.SCENARIOS,
    *serving_faults.SCENARIOS,
    *monitoring_faults.SCENARIOS,
    *canary_faults.SCENARIOS,
    *lifecycle_faults.SCENARIOS,
]
GROUPS = ("training", "serving", "monitoring", "canary")


class UnknownScenario(ValueError):
    """A name that is neither a scenario nor a group."""


def select(names: list[str] | None) -> list[Scenario]:
    """The scenarios named (scenario or group names), in the drill's order; all when none.
    Raises UnknownScenario naming what exists."""
    if not names:
        return list(SCENARIOS)
    known = {s.name for s in SCENARIOS}
    unknown = [n for n in names if n not in known and n not in GROUPS]
    if unknown:
        raise UnknownScenario(f"no scenario or group {', '.join(map(repr, unknown))}; "
                              f"scenarios: {', '.join(s.name for s in SCENARIOS)}; groups: "
                              f"{', '.join(GROUPS)}")
    wanted = set(names)
    return [s for s in SCENARIOS if s.name in wanted or s.group in wanted]


def run_scenario(scenario: Scenario, system: DrillSystem) -> ScenarioResult:
    """Run one scenario; an exception inside it is recorded (the scenario fails), not raised."""
    finding = Finding()
    started = time.monotonic()
    error = None
    try:
        scenario.run(system, finding)
    except Exception as exc:  # noqa: BLE001 - one broken scenario must not hide the others
        error = " ".join(f"{type(exc).__name__}: {exc}".split())[:1000]
        log.debug("scenario %s failed:\n%s", scenario.name, traceback.format_exc())
        (system.workdir / f"{scenario.name}.traceback.txt").write_text(traceback.format_exc())
    return scenario.result(finding, time.monotonic() - started, error)


def _revision() -> str | None:
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO,
                              capture_output=True, text=True, timeout=10, check=True)
        dirty = subprocess.run(["git", "status", "--porcelain"], cwd=REPO, capture_output=True,
                               text=True, timeout=10, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return head.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")


def progress_line(index: int, count: int, result: ScenarioResult) -> str:
    """``[3/12] leakage: CAUGHT in 9.8 s (8 checks)``, and what failed when not."""
    verdict = "CAUGHT" if result.passed else "NOT CAUGHT"
    took = (f" in {result.detection_seconds:.1f} s" if result.detection_seconds is not None
            else "")
    line = (f"[{index}/{count}] {result.name}: {verdict}{took} ({len(result.checks)} checks, "
            f"ran {result.duration_seconds:.0f} s)")
    for check in result.failed_checks():
        line += f"\n      failed: {check.what} (seen: {check.seen[:200]})"
    if result.error:
        line += f"\n      error: {result.error[:300]}"
    return line


def run_drill(scenarios: list[Scenario], system: DrillSystem, command: str,
              say: Callable[[str], None]) -> DrillReport:
    """Run ``scenarios`` in order against ``system`` (closed at the end); the report."""
    started_at = datetime.now(UTC)
    load_before = os.getloadavg()
    started = time.monotonic()
    results: list[ScenarioResult] = []
    try:
        for index, scenario in enumerate(scenarios, 1):
            say(f"[{index}/{len(scenarios)}] {scenario.name}: {scenario.failure}")
            result = run_scenario(scenario, system)
            results.append(result)
            say(progress_line(index, len(scenarios), result))
    finally:
        say("  stopping the drill's servers and Prometheus")
        system.close()
    return DrillReport(
        started_at=started_at.isoformat(timespec="seconds"),
        finished_at=datetime.now(UTC).isoformat(timespec="seconds"),
        seconds=round(time.monotonic() - started, 1), command=command, revision=_revision(),
        machine={"cpus": os.cpu_count(), "python": platform.python_version(),
                 "load_average_before": [round(x, 2) for x in load_before],
                 "load_average_after": [round(x, 2) for x in os.getloadavg()]},
        champion=system.champion_tag, time_scale=system.settings.time_scale,
        rule_changes=system.rule_changes, scenarios=results)
