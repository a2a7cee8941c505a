"""Every CronJob's command line, run as the pod would run it, against the real `churn` CLI.

The container's command, env and mounts come from the rendered manifests: each mount path is
mapped to a local folder (the config volume holds the rendered ConfigMap's files), ConfigMap
references are read from the render, `$(VAR)` is expanded as the kubelet does, and the process
runs in an empty folder so nothing resolves against the repository by accident. What cannot
exist here is stood in for, each said where: a real local Pushgateway for the in-cluster one, a
copy of the session's model store for the volume, SQLite/CSV sources for the Secrets' URLs.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml

from tests.k8s.conftest import REPO
from tests.monitoring.conftest import log_predictions, pushed_samples

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]

BIN = Path(sys.executable).parent
VARIABLE = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_]*)\)")


def expand(value: str, env: dict[str, str]) -> str:
    """The kubelet's `$(VAR)` expansion in command and args: unknown names stay as written,
    `$$` is a literal `$`."""
    def replace(match: re.Match) -> str:
        if match.group(0) == "$$":
            return "$"
        return env.get(match.group(1), match.group(0))

    return VARIABLE.sub(replace, value)


def test_expand_follows_the_kubelet_rules():
    env = {"A": "1"}
    assert expand("x$(A)y $(B) $$(A) $A", env) == "x1y $(B) $(A) $A"


# The volumes a job pod mounts, and where: each is laid out under a local folder at the same
# path, so nested mounts (/var/lib/churn/reports inside /var/lib/churn) nest here too.
MOUNTS = {"config": "/etc/churn", "home": "/var/lib/churn", "tmp": "/tmp",
          "model-store": "/var/lib/churn/bentoml", "inference-log": "/var/lib/churn/inference_log",
          "reports": "/var/lib/churn/reports"}


@dataclass
class Pod:
    """A local stand-in for a job pod's file system, and the services it talks to."""

    root: Path
    pushgateway: str
    mlflow_uri: str
    model_tag: str
    secrets: dict[tuple[str, str], str]

    def volume(self, name: str) -> Path:
        return self.root / MOUNTS[name].lstrip("/")

    def run(self, manifests, cronjob_name: str, timeout: float = 600):
        """Run the CronJob's container as its pod would; returns the CompletedProcess."""
        cronjob = manifests.get("CronJob", cronjob_name)
        pod = cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]
        (container,) = pod["containers"]
        mounts = {}
        for mount in container["volumeMounts"]:
            assert MOUNTS.get(mount["name"]) == mount["mountPath"], (
                f"{cronjob_name}: no stand-in for volume {mount['name']} at {mount['mountPath']}")
            mounts[mount["mountPath"]] = str(self.volume(mount["name"]))
        # One pass, longest mount path first (/var/lib/churn/bentoml before /var/lib/churn),
        # so a local folder that itself lies under /tmp is not rewritten again.
        pattern = re.compile("(?<![\\w/.-])(" + "|".join(
            re.escape(p) for p in sorted(mounts, key=len, reverse=True)) + ")(?![\\w.-])")

        def local(text: str) -> str:
            return pattern.sub(lambda match: mounts[match.group(1)], text)

        env: dict[str, str] = {}
        for item in container.get("env", []):
            source = item.get("valueFrom")
            if source is None:
                env[item["name"]] = expand(local(item["value"]), env)
            elif "configMapKeyRef" in source:
                ref = source["configMapKeyRef"]
                env[item["name"]] = manifests.get("ConfigMap", ref["name"])["data"][ref["key"]]
            elif "secretKeyRef" in source:
                ref = source["secretKeyRef"]
                env[item["name"]] = self.secrets[(ref["name"], ref["key"])]
        rendered_tag = env["CHURN_MODEL_TAG"]
        assert rendered_tag.partition(":")[0] == self.model_tag.partition(":")[0]
        # Stand-ins: the session's model version for the pinned one, real local services for
        # the in-cluster Service names.
        env.update(CHURN_MODEL_TAG=self.model_tag, CHURN_PUSHGATEWAY_URL=self.pushgateway,
                   MLFLOW_TRACKING_URI=self.mlflow_uri)
        command = [expand(local(part), env) for part in container["command"]]
        if command[0] == "churn":
            command[0] = str(BIN / "churn")
        workdir = self.root / "workdir"
        workdir.mkdir(exist_ok=True)
        process_env = {"PATH": f"{BIN}:{os.environ['PATH']}", "HOME": str(workdir),
                       "LANG": "C.UTF-8", **env}
        return subprocess.run(command, cwd=workdir, env=process_env, capture_output=True,
                              text=True, timeout=timeout)


def config_files(manifests) -> dict[str, str]:
    return manifests.generated("ConfigMap", "churn-config")["data"]


@pytest.fixture(scope="module")
def make_pod(rendered, trained_entry, pushgateway, tmp_path_factory):  # noqa: F811
    """A fresh pod file system: the rendered config volume and a copy of the model store."""
    from kernel.ingest import write_table
    from training.generate import GeneratorConfig, generate_customers

    data = tmp_path_factory.mktemp("job-sources")
    training_db = data / "training.db"
    write_table(generate_customers(GeneratorConfig(rows=2000, seed=17)),
                f"sqlite:///{training_db}#customers")

    def make() -> Pod:
        root = tmp_path_factory.mktemp("job-pod")
        pod = Pod(root=root, pushgateway=pushgateway,
                  mlflow_uri=f"sqlite:///{root / 'mlflow.db'}", model_tag=trained_entry.tag,
                  secrets={("churn-training-data", "url"): f"sqlite:///{training_db}#customers",
                           ("churn-labels", "url"): str(root / "labels.csv")})
        for name in MOUNTS:
            if name != "model-store":
                pod.volume(name).mkdir(parents=True, exist_ok=True)
        for name, text in config_files(rendered["prod"]).items():
            (pod.volume("config") / name).write_text(text)
        # The ConfigMap's training config searches for minutes; the command line is what is
        # under test here, so the pod gets a one-candidate config under the same file name.
        (pod.volume("config") / "train.yaml").write_text(yaml.safe_dump({
            "algorithms": ["logistic"], "imbalance": ["class_weight"],
            "search_budget_seconds": 0, "max_trials": 0, "cv_folds": 3,
            "reference_rows": 500}))
        # A copy of the session's store: the train Jobs write into theirs; others read this one.
        shutil.copytree(os.environ["BENTOML_HOME"], pod.volume("model-store"))
        return pod

    return make


@pytest.fixture(scope="module")
def pod(make_pod) -> Pod:
    return make_pod()


@pytest.fixture(scope="module")
def drift_run(pod, rendered, trained_entry):
    """The drift CronJob over an inference log of drifted customers from the last hour."""
    from training.generate import GeneratorConfig, generate_customers

    customers = generate_customers(GeneratorConfig(rows=800, seed=411, drifted=True))
    log_predictions(pod.volume("inference-log"), trained_entry, customers,
                    datetime.now(UTC) - timedelta(hours=1))
    return pod.run(rendered["prod"], "churn-drift")


def store_entries(store: Path) -> dict[str, str]:
    """version -> stage of every entry in a model store folder."""
    entries = {}
    for model_yaml in store.glob("models/*/*/model.yaml"):
        entries[model_yaml.parent.name] = yaml.safe_load(model_yaml.read_text())["labels"].get(
            "stage")
    return entries


def test_every_overlay_runs_the_same_job_commands(rendered):
    commands = {overlay: {c["metadata"]["name"]: c["spec"]["jobTemplate"]["spec"]["template"][
        "spec"]["containers"][0]["command"] for c in m.of_kind("CronJob")}
        for overlay, m in rendered.items()}
    assert commands["dev"] == commands["prod"]
    assert set(commands["prod"]) == {"churn-drift", "churn-performance", "churn-retrain",
                                     "churn-train", "churn-log-compact", "churn-lifecycle"}


def test_drift_cronjob_reads_the_log_writes_a_report_and_pushes(drift_run, pod,
                                                                trained_entry):
    assert drift_run.returncode == 0, drift_run.stdout + drift_run.stderr
    assert f"{trained_entry.tag}: 800 current rows" in drift_run.stdout
    assert "DRIFT DETECTED" in drift_run.stdout
    reports = list(pod.volume("reports").glob(f"drift-{trained_entry.version}-*.json"))
    assert len(reports) == 1
    shares = [value for labels, value in pushed_samples(pod.pushgateway, "churn_drift_share")
              if labels["model_version"] == trained_entry.version]
    assert shares and shares[0] > 0
    rows = [value for labels, value in pushed_samples(pod.pushgateway,
                                                      "churn_drift_current_rows")
            if labels["model_version"] == trained_entry.version]
    assert rows == [800.0]


def test_retrain_cronjob_checks_then_trains_a_challenger_the_service_does_not_serve(
    drift_run, pod, rendered, trained_entry
):
    assert drift_run.returncode == 0, drift_run.stderr
    before = store_entries(pod.volume("model-store"))
    done = pod.run(rendered["prod"], "churn-retrain")
    assert done.returncode == 0, done.stdout + done.stderr
    recommended = [value for labels, value in pushed_samples(
        pod.pushgateway, "churn_retrain_recommended")
        if labels["model_version"] == trained_entry.version]
    assert recommended == [1.0]
    after = store_entries(pod.volume("model-store"))
    new = set(after) - set(before)
    assert len(new) == 1, (before, after)
    assert trained_entry.version in after  # still there for the pods that serve it
    # Pods serve CHURN_MODEL_TAG, which only a rollout changes: the new model is not served.
    tag = rendered["prod"].generated("ConfigMap", "churn-model")["data"]["CHURN_MODEL_TAG"]
    assert tag.partition(":")[2] not in new


def test_retrain_cronjob_ends_the_job_with_the_checks_code_when_no_retrain_is_needed(
    make_pod, rendered
):
    """Exit 0 (nothing to do) must succeed without training; only 10 trains."""
    quiet = make_pod()  # a fresh model, no drift report: nothing recommends retraining
    done = quiet.run(rendered["prod"], "churn-retrain")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "churn.train" not in done.stderr  # no training started


def test_performance_cronjob_joins_labels_and_pushes_measured_metrics(pod, rendered,
                                                                      trained_entry):
    from training.generate import GeneratorConfig, generate_customers

    scored_at = datetime.now(UTC) - timedelta(days=10)
    customers = generate_customers(GeneratorConfig(rows=400, seed=412))
    customers["customer_id"] = "P" + customers["customer_id"].astype(str)
    log_predictions(pod.volume("inference-log"), trained_entry, customers, scored_at)
    customers[["customer_id", "churned"]].assign(
        observed_at=(scored_at + timedelta(days=5)).isoformat()).to_csv(
        pod.secrets[("churn-labels", "url")], index=False)
    done = pod.run(rendered["prod"], "churn-performance")
    assert done.returncode == 0, done.stdout + done.stderr
    measured = [value for labels, value in pushed_samples(pod.pushgateway,
                                                          "churn_measured_roc_auc")
                if labels["model_version"] == trained_entry.version]
    assert len(measured) == 1 and 0.5 < measured[0] <= 1


def test_train_cronjob_template_trains_from_the_secret_source(pod, rendered):
    before = store_entries(pod.volume("model-store"))
    done = pod.run(rendered["prod"], "churn-train")
    assert done.returncode == 0, done.stdout + done.stderr
    assert len(set(store_entries(pod.volume("model-store"))) - set(before)) == 1


def test_a_job_without_its_secret_source_fails_with_one_line(pod, rendered, tmp_path):
    """A wrong Secret value must end the Job with a readable error, not a traceback."""
    broken = Pod(**{**pod.__dict__, "secrets": {
        **pod.secrets, ("churn-labels", "url"): str(tmp_path / "missing.csv")}})
    done = broken.run(rendered["prod"], "churn-performance")
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1].startswith("error:")
    assert "Traceback" not in done.stderr


def test_the_repo_configs_are_what_the_job_pods_read(rendered):
    """The stand-in config volume holds the rendered ConfigMap, which equals configs/."""
    for name, text in config_files(rendered["prod"]).items():
        assert text == (REPO / "configs" / name).read_text()


def test_log_compaction_cronjob_runs_on_the_shared_log(make_pod, rendered, trained_entry):
    from training.generate import GeneratorConfig, generate_customers

    pod = make_pod()
    log_predictions(pod.volume("inference-log"), trained_entry,
                    generate_customers(GeneratorConfig(rows=200, seed=413)),
                    datetime.now(UTC) - timedelta(hours=2))
    done = pod.run(rendered["prod"], "churn-log-compact")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "compacted" in done.stdout
