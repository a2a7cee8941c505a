"""What a scenario is and what it records.

A scenario injects one failure into the real system and records, in a ``Finding``: checks that
the expected guard caught it (``caught``), checks that nothing was lost or wrongly changed
(``intact``), the evidence (exit codes, HTTP statuses, alert states, log lines, counts) and the
time from injection to detection. A scenario passes only when every check of both kinds
passed, so a missing guard fails its scenario: each check is written to be able to fail.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, Field

if TYPE_CHECKING:
    from drill.system import DrillSystem

Group = Literal["training", "serving", "monitoring", "canary"]


class Check(BaseModel):
    """One assertion about the outcome, with what was seen."""

    kind: Literal["caught", "intact"]
    what: str
    passed: bool
    seen: str = ""


class ScenarioResult(BaseModel):
    """The record of one scenario run (the JSON report holds a list of these)."""

    name: str
    group: Group
    failure: str
    guard: str
    passed: bool
    detection_seconds: float | None = Field(
        None, description="from injecting the failure to the guard's signal")
    duration_seconds: float
    checks: list[Check] = []
    evidence: dict[str, Any] = {}
    error: str | None = Field(None, description="the scenario itself could not run")

    def failed_checks(self) -> list[Check]:
        return [check for check in self.checks if not check.passed]


class Finding:
    """What a running scenario records: checks, evidence, and the moment of detection."""

    def __init__(self) -> None:
        self.checks: list[Check] = []
        self.evidence: dict[str, Any] = {}
        self.injected_at: float | None = None
        self.detection_seconds: float | None = None

    def injected(self) -> None:
        """The failure is in: detection time counts from now."""
        self.injected_at = time.monotonic()

    def detected(self, at: float | None = None) -> None:
        """The guard signalled (at ``at``, a ``time.monotonic()`` value, or now); the first
        call counts."""
        if self.detection_seconds is None and self.injected_at is not None:
            self.detection_seconds = round((at or time.monotonic()) - self.injected_at, 3)

    def took(self, seconds: float) -> None:
        """For a scenario of several injections: detection time is the slowest one's."""
        self.detection_seconds = round(max(self.detection_seconds or 0.0, seconds), 3)

    def caught(self, what: str, passed: bool, seen: object = "") -> bool:
        """A check that the guard caught the failure as it should."""
        self.checks.append(Check(kind="caught", what=what, passed=bool(passed), seen=str(seen)))
        return bool(passed)

    def intact(self, what: str, passed: bool, seen: object = "") -> bool:
        """A check that nothing was lost or wrongly changed."""
        self.checks.append(Check(kind="intact", what=what, passed=bool(passed), seen=str(seen)))
        return bool(passed)

    def note(self, key: str, value: Any) -> None:
        self.evidence[key] = value


@dataclass(frozen=True)
class Scenario:
    """A failure to inject and the guard expected to catch it."""

    name: str
    group: Group
    failure: str
    guard: str
    run: Callable[[DrillSystem, Finding], None]

    def result(self, finding: Finding, duration: float, error: str | None = None
               ) -> ScenarioResult:
        passed = (error is None and bool(finding.checks)
                  and all(check.passed for check in finding.checks)
                  and any(check.kind == "caught" for check in finding.checks))
        return ScenarioResult(
            name=self.name, group=self.group, failure=self.failure, guard=self.guard,
            # A time to detection means something only when the guard did detect it.
            passed=passed, detection_seconds=finding.detection_seconds if passed else None,
            duration_seconds=round(duration, 3), checks=finding.checks,
            evidence=finding.evidence, error=error)
