"""The canary commands against a stand-in API server (tests/rollout/fake_kubectl.py: the real
kubectl makes every edit; only the server is simulated, because none can run here): what
start, step, promote, abort and run change, what they record, and the way back when a
promotion does not roll out."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from monitoring.judge import Judgement
from rollout import kubectl as k
from rollout.canary import Canary, CanaryError, PromotionFailed
from rollout.config import CanaryConfig
from rollout.measure import Report, Served
from tests.rollout.manifests import STABLE_TAG

pytestmark = pytest.mark.integration  # every call runs kubectl (and the stand-in server)
NEW_TAG = "streaming_churn:v2canary"


def obj(state: Path, kind: str, name: str) -> dict:
    return json.loads((state / f"{kind}-{name}.json").read_text())


def canary_for(state: Path, tmp_path: Path, dry_run: bool = False) -> Canary:
    config = CanaryConfig()
    config.kubernetes.kubectl = str(state.parent / "kubectl")
    config.kubernetes.context = "test-context"
    config.kubernetes.namespace = "churn"
    config.run.pause = "10m"
    return Canary(config, k.Kubectl(config.kubernetes, dry_run=dry_run),
                  tmp_path / "decisions.jsonl")


def decisions(tmp_path: Path) -> list[dict]:
    path = tmp_path / "decisions.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def env_of(deployment: dict) -> dict:
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container.get("env", [])}


def test_start_points_only_the_canary_at_the_new_model(cluster: Path, tmp_path: Path) -> None:
    canary = canary_for(cluster, tmp_path)
    stable_before = obj(cluster, "deployment", "churn-serve")
    label = canary.start(NEW_TAG, None)
    assert label == "5% -> 1 canary of 4 pods (25%)"  # stable has 3 ready pods
    new = obj(cluster, "deployment", "churn-serve-canary")
    assert env_of(new)["CHURN_MODEL_TAG"] == NEW_TAG
    assert new["spec"]["replicas"] == 1 and new["status"]["readyReplicas"] == 1
    assert new["spec"]["template"]["spec"]["containers"][0]["image"] == \
        stable_before["spec"]["template"]["spec"]["containers"][0]["image"]
    notes = new["metadata"]["annotations"]
    assert notes[k.DECISION] == "started" and NEW_TAG in notes[k.REASON]
    assert obj(cluster, "deployment", "churn-serve") == stable_before
    assert obj(cluster, "configmap", "churn-model")["data"]["CHURN_MODEL_TAG"] == STABLE_TAG
    (entry,) = decisions(tmp_path)
    assert entry["decision"] == "started" and entry["step"] == label
    calls = [json.loads(line) for line in (cluster / "calls.jsonl").read_text().splitlines()]
    assert all(call[:4] == ["--context", "test-context", "--namespace", "churn"]
               for call in calls)
    with pytest.raises(CanaryError, match="already running"):
        canary.start("streaming_churn:other", None)


def test_dry_run_shows_every_edit_as_an_argument_list_and_changes_nothing(
        cluster: Path, tmp_path: Path) -> None:
    shown: list[str] = []
    canary = canary_for(cluster, tmp_path, dry_run=True)
    canary.kubectl.echo = shown.append
    before = {p.name: p.read_text() for p in cluster.glob("*.json")}
    canary.start(None, "registry.example/churn-serve:2.0")
    assert {p.name: p.read_text() for p in cluster.glob("*.json")} == before
    assert decisions(tmp_path) == []
    wrapper = str(cluster.parent / "kubectl")
    prefix = f"(dry run) {wrapper} --context test-context --namespace churn "
    assert shown == [
        prefix + "set image deployment/churn-serve-canary "
                 "churn-serve=registry.example/churn-serve:2.0",
        prefix + "set env deployment/churn-serve-canary -c churn-serve "
                 f"CHURN_MODEL_TAG={STABLE_TAG} CHURN_SHADOW_MODEL_TAG=",
        *[line for line in shown if line.startswith(prefix + "annotate")],
        prefix + "scale deployment/churn-serve-canary --replicas=1",
        prefix + "rollout status deployment/churn-serve-canary --timeout=10m",
    ]
    assert len(shown) == 5


def test_a_dry_run_of_run_shows_the_whole_plan_and_changes_nothing(cluster: Path,
                                                                   tmp_path: Path) -> None:
    shown: list[str] = []
    canary = canary_for(cluster, tmp_path, dry_run=True)
    canary.kubectl.echo = shown.append
    before = {p.name: p.read_text() for p in cluster.glob("*.json")}
    analyses = []
    code = canary.run(NEW_TAG, None, lambda step: analyses.append(step) or report("pass"),
                      lambda seconds: pytest.fail("a dry run does not wait"), lambda r: None)
    assert code == 0 and analyses == [1, 2, 3]  # each step its own sample
    assert {p.name: p.read_text() for p in cluster.glob("*.json")} == before
    verbs = [line.split(" churn ", 1)[1].split()[0] for line in shown]
    assert verbs.count("scale") == 3 + 1  # start, two steps, the canary leaving after promotion
    edits = [line for line in shown if "patch configmap churn-model" in line]
    assert len(edits) == 1 and NEW_TAG in edits[0]
    assert decisions(tmp_path) == []


def test_promote_writes_the_model_where_stable_reads_it_and_retires_the_canary(
        cluster: Path, tmp_path: Path) -> None:
    canary = canary_for(cluster, tmp_path)
    canary.start(NEW_TAG, None)
    summary = canary.promote("looked good")
    assert NEW_TAG in summary
    # The ConfigMap the stable pods and the CronJobs read now names the new model, and the
    # stable pods were replaced to read it.
    assert obj(cluster, "configmap", "churn-model")["data"]["CHURN_MODEL_TAG"] == NEW_TAG
    stable = obj(cluster, "deployment", "churn-serve")
    assert k.RESTARTED_AT in stable["spec"]["template"]["metadata"]["annotations"]
    assert "configMapKeyRef" in env_of(stable)["CHURN_MODEL_TAG"]  # still reads the ConfigMap
    gone = obj(cluster, "deployment", "churn-serve-canary")
    assert gone["spec"]["replicas"] == 0
    assert gone["metadata"]["annotations"][k.DECISION] == "promoted"
    assert [d["decision"] for d in decisions(tmp_path)] == ["started", "promoted"]


def test_a_promotion_that_does_not_roll_out_is_rolled_back(cluster: Path,
                                                            tmp_path: Path) -> None:
    canary = canary_for(cluster, tmp_path)
    canary.start(NEW_TAG, "registry.example/churn-serve:2.0")
    # Fault injection: stable pods with the new model never become ready (the canary's one
    # pod did; say the model needs more memory than the stable pods' limits).
    (cluster / "broken.json").write_text(json.dumps([NEW_TAG]))
    stable_before = obj(cluster, "deployment", "churn-serve")
    with pytest.raises(PromotionFailed, match="stable rolled back"):
        canary.promote("looked good")
    stable = obj(cluster, "deployment", "churn-serve")
    assert stable["spec"]["template"] == stable_before["spec"]["template"]
    assert obj(cluster, "configmap", "churn-model")["data"]["CHURN_MODEL_TAG"] == STABLE_TAG
    gone = obj(cluster, "deployment", "churn-serve-canary")
    assert gone["spec"]["replicas"] == 0
    assert gone["metadata"]["annotations"][k.DECISION] == "promote-failed"
    last = decisions(tmp_path)[-1]
    assert last["decision"] == "promote-failed" and "progress deadline" in last["reason"]


def report(verdict: str) -> Report:
    """An analysis result as `measure` returns it (the real one is tested end to end)."""
    judgement = Judgement("unpaired", (), {"pass": 100.0, "fail": 0.0}.get(verdict, 50.0),
                          verdict, {}, 1, 0.05)
    return Report("10m", datetime.now(UTC), judgement,
                  [Served("stable", "m:v1", "v1", 3), Served("canary", "m:v2", "v2", 1)])


@pytest.mark.parametrize(("verdicts", "code", "sizes", "samples", "decision"), [
    (["pass", "pass", "pass"], 0, [1, 1, 3], [1, 2, 3], "promoted"),  # 5, 25, 50% of 3 pods
    (["pass", "fail"], 1, [1, 1], [1, 2], "aborted"),
    (["inconclusive"] * 3, 3, [1, 1, 1], [1, 1, 1], "aborted"),  # two retries, then give up
    (["inconclusive", "pass", "pass", "pass"], 0, [1, 1, 1, 3], [1, 1, 2, 3], "promoted"),
])
def test_run_steps_through_the_shares_and_stops_on_the_first_bad_analysis(
        cluster: Path, tmp_path: Path, verdicts: list[str], code: int, sizes: list[int],
        samples: list[int], decision: str) -> None:
    canary = canary_for(cluster, tmp_path)
    answers = iter(verdicts)
    seen: list[int] = []
    steps: list[int] = []
    slept: list[float] = []

    def analyze(step: int) -> Report:
        seen.append(obj(cluster, "deployment", "churn-serve-canary")["spec"]["replicas"])
        steps.append(step)
        return report(next(answers))

    assert canary.run(NEW_TAG, None, analyze, slept.append, lambda r: None) == code
    assert seen == sizes  # the canary's size when each analysis ran
    # Each step is a sample of its own for the judge; a retry of a step keeps its number.
    assert steps == samples
    assert slept == [600.0] * len(sizes)  # a pause before every analysis
    assert next(answers, None) is None  # no analysis after the decision
    final = obj(cluster, "deployment", "churn-serve-canary")
    assert final["spec"]["replicas"] == 0
    assert final["metadata"]["annotations"][k.DECISION] == decision
    model = obj(cluster, "configmap", "churn-model")["data"]["CHURN_MODEL_TAG"]
    assert model == (NEW_TAG if decision == "promoted" else STABLE_TAG)
    recorded = [d["decision"] for d in decisions(tmp_path)]
    assert recorded[0] == "started" and recorded[-1] == decision
    assert recorded.count("analysis-" + verdicts[0]) >= 1
