"""Where the lifecycle changes what serves: a cluster, or servers on this machine.

``KubernetesPlatform`` makes exactly the calls `churn shadow` and `churn canary` make (it drives
``rollout.shadow.Shadow`` and ``rollout.canary.Canary``: the same kubectl argument lists, the
same recorded decisions), plus one annotation per transition on stable
(``churn-serve/lifecycle-decision`` holding the phase, ``-reason``, ``-updated``).
``LocalPlatform`` runs the same
loop against `bentoml serve` processes on this machine, as the drill does: stable on one port
(restarted with ``CHURN_SHADOW_MODEL_TAG`` for a shadow, with the new model on promotion), a
canary on another; the share of traffic is the clients' to split (there is no load balancer).
"""

from __future__ import annotations

import logging
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

from rollout import kubectl as k
from rollout.lifecycle.state import LifecycleState, stamp

log = logging.getLogger("churn.lifecycle")
SUBJECT = "lifecycle"


@dataclass
class KubernetesPlatform:
    canary: object  # rollout.canary.Canary
    shadow: object  # rollout.shadow.Shadow

    def champion(self) -> str | None:
        stable, _ = self.shadow.read()
        return stable.model.tag

    def start_shadow(self, tag: str) -> None:
        _, current = self.shadow.read()
        if current.tag == tag:  # a resumed step: already done
            return
        self.shadow.start(tag)

    def stop_shadow(self, reason: str) -> None:
        _, current = self.shadow.read()
        if current.tag:
            self.shadow.stop(reason)

    def start_canary(self, tag: str, weight: int) -> None:
        _, canary = self.canary.read()
        if canary.replicas > 0 and canary.model.tag == tag:
            self.canary.step(weight, "resumed: the canary already runs")
            return
        self.canary.start(tag, None, weight)

    def step_canary(self, weight: int, reason: str) -> None:
        self.canary.step(weight, reason)

    def abort_canary(self, reason: str) -> None:
        self.canary.abort(reason)

    def promote_canary(self, reason: str) -> None:
        stable, canary = self.canary.read()
        if canary.replicas < 1 and stable.model.tag == canary.model.tag:
            return  # a resumed step: stable already serves it and the canary has left
        self.canary.promote(reason)

    def record(self, state: LifecycleState) -> None:
        last = state.history[-1].reason if state.history else ""
        self.canary.kubectl.run(k.annotate(self.canary.settings.stable, k.decision_annotations(
            state.phase.value, last[:500], at=stamp(), subject=SUBJECT)))


@dataclass
class LocalServer:
    """One `bentoml serve` on a fixed port, restarted with a new environment when told."""

    name: str
    port: int
    folder: Path
    config: Path | None = None
    process: object | None = None  # kernel.processes.ManagedProcess
    env: dict[str, str] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def serve(self, **env: str) -> None:
        from kernel.processes import http_ok, start_process

        self.stop()
        self.env = env
        self.folder.mkdir(parents=True, exist_ok=True)
        # A BentoML home of its own (its metrics folder is emptied at start) over the store.
        home = self.folder / f"bentoml-{stamp().replace(':', '')}"
        home.mkdir()
        store = Path(os.environ.get("BENTOML_HOME", ".churn/bentoml")).resolve() / "models"
        (home / "models").symlink_to(store)
        full = {**os.environ, **env, "BENTOML_HOME": str(home)}
        if self.config:
            full["CHURN_SERVICE_CONFIG"] = str(self.config)
        bentoml = str(Path(sys.executable).with_name("bentoml"))
        log.info("serving %s on port %d with %s", self.name, self.port, env)
        self.process = start_process(
            [bentoml, "serve", "service.service:ChurnService", "--host", "127.0.0.1",
             "--port", str(self.port)], name=f"bentoml serve ({self.name})",
            log_path=self.folder / "server.log", env=full,
            ready=lambda: http_ok(f"{self.url}/readyz"), timeout=300)

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop(timeout=30)
            self.process = None


@dataclass
class LocalPlatform:
    """Stable and canary as local servers (`churn lifecycle run --local`, the tests)."""

    stable: LocalServer
    canary: LocalServer
    champion_tag: str | None = None
    shadow_tag: str = ""

    def champion(self) -> str | None:
        return self.champion_tag

    def start(self) -> None:
        """Serve stable (the champion, no shadow) before the first step."""
        self._serve_stable()

    def _serve_stable(self) -> None:
        self.stable.serve(CHURN_MODEL_TAG=self.champion_tag or "",
                          CHURN_SHADOW_MODEL_TAG=self.shadow_tag, CHURN_TRACK="stable")

    def start_shadow(self, tag: str) -> None:
        if self.shadow_tag == tag and self.stable.process is not None:
            return
        self.shadow_tag = tag
        self._serve_stable()

    def stop_shadow(self, reason: str) -> None:
        if self.shadow_tag:
            self.shadow_tag = ""
            self._serve_stable()

    def start_canary(self, tag: str, weight: int) -> None:
        if self.canary.process is not None and self.canary.env.get("CHURN_MODEL_TAG") == tag:
            return
        self.canary.serve(CHURN_MODEL_TAG=tag, CHURN_SHADOW_MODEL_TAG="",
                          CHURN_TRACK="canary")

    def step_canary(self, weight: int, reason: str) -> None:
        log.info("canary step %d%%: split the traffic accordingly (%s)", weight, reason)

    def abort_canary(self, reason: str) -> None:
        self.canary.stop()

    def promote_canary(self, reason: str) -> None:
        tag = self.canary.env.get("CHURN_MODEL_TAG")
        if tag and tag != self.champion_tag:
            self.champion_tag = tag
            self._serve_stable()
        self.canary.stop()

    def record(self, state: LifecycleState) -> None:
        return None
