"""What a first `kubectl apply -k` on a real cluster would trip on and schema validation cannot
see, checked on the rendered objects of every overlay and every documented overlay + component
combination (`renderings`). What the cluster itself must provide is `churn k8s check`'s
(rollout/preflight.py, tests/rollout/test_preflight.py)."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
import yaml

from monitoring.k8s_render import render_all
from tests.k8s.conftest import KUBECTL, REPO, Manifests

pytestmark = pytest.mark.integration  # renders with the kubectl binary

BASE = REPO / "k8s" / "base" / "kustomization.yaml"


def containers(template: dict) -> list[dict]:
    spec = template["spec"]
    return spec.get("initContainers", []) + spec["containers"]


def render_copy(root: Path, only: set[str]) -> dict[str, Manifests]:
    texts = render_all(root, KUBECTL, only=only)
    return {name: Manifests(name, [o for o in yaml.safe_load_all(text) if o])
            for name, text in texts.items()}


@pytest.fixture
def k8s_copy(tmp_path: Path) -> Path:
    """A copy of the repository's k8s/ to edit a setting in, as a user would."""
    shutil.copytree(REPO / "k8s", tmp_path / "k8s", ignore=shutil.ignore_patterns("rendered"))
    return tmp_path


# Defect: the Dask component's pods ran `churn-jobs` untagged (the base's `images:` entries do
# not reach a component's objects): `latest` from the default registry, maybe another version
# than the drift job that submits to them.

def test_our_images_are_the_base_entries_in_every_object_of_every_rendering(renderings):
    entries = {i["name"]: f"{i['newName']}:{i['newTag']}"
               for i in yaml.safe_load(BASE.read_text())["images"]}
    seen = set()
    for name, manifests in renderings.items():
        for owner, template in manifests.pod_templates():
            for container in containers(template):
                image = container["image"]
                repository = image.rpartition(":")[0] if ":" in image.rpartition("/")[2] \
                    else image
                at = f"{name}: {owner['kind']} {owner['metadata']['name']} {container['name']}"
                if repository.rpartition("/")[2] in entries:
                    assert image == entries[repository.rpartition("/")[2]], f"{at}: {image}"
                    seen.add(image)
    assert seen == set(entries.values())


def test_one_images_entry_sets_registry_and_tag_for_components_too(k8s_copy):
    base = k8s_copy / "k8s" / "base" / "kustomization.yaml"
    kustomization = yaml.safe_load(base.read_text())
    for entry in kustomization["images"]:
        entry.update(newName=f"registry.example/team/{entry['name']}", newTag="2.4.6")
    base.write_text(yaml.safe_dump(kustomization))
    for name, manifests in render_copy(k8s_copy, {"prod+dask", "dev+dask",
                                                  "argo-rollouts"}).items():
        images = {c["image"] for _, t in manifests.pod_templates() for c in containers(t)}
        ours = {i for i in images if "churn-" in i}
        assert ours == {"registry.example/team/churn-serve:2.4.6",
                        "registry.example/team/churn-jobs:2.4.6"}, (name, images)
        dask = manifests.get("DaskCluster", "churn-dask") if "dask" in name else None
        if dask:
            assert {c["image"] for part in ("scheduler", "worker")
                    for c in dask["spec"][part]["spec"]["containers"]} == {
                "registry.example/team/churn-jobs:2.4.6"}, name


# Defect: prod's ReadWriteMany claims named no storage class. On the default class (usually
# disk-backed, ReadWriteOnce only) they never bind, which blocks every service pod and most jobs.

STORAGE_SETTING = REPO / "k8s" / "overlays" / "prod" / "storage-class.yaml"


def built_on(rendering: str) -> str:
    """The overlay a rendering starts from: the canary overlays build on prod."""
    return "dev" if rendering.startswith("dev") else "prod"


def storage_class_setting(path: Path = STORAGE_SETTING) -> str:
    setting = yaml.safe_load(path.read_text())
    assert setting["metadata"]["annotations"]["config.kubernetes.io/local-config"] == "true"
    return setting["data"]["storageClassName"]


def claims(manifests: Manifests) -> dict[str, dict]:
    return {c["metadata"]["name"]: c["spec"] for c in manifests.of_kind("PersistentVolumeClaim")}


def test_shared_claims_in_production_name_the_one_storage_class_setting(renderings):
    value = storage_class_setting()
    assert value
    for name, manifests in renderings.items():
        specs = claims(manifests)
        shared = {n for n, s in specs.items() if "ReadWriteMany" in s["accessModes"]}
        if built_on(name) == "dev":
            assert not shared, f"{name}: one node, every claim ReadWriteOnce: {shared}"
            continue
        expected = {"churn-inference-log", "churn-model-store", "churn-reports"}
        if "dask" in name:
            expected.add("churn-batch")
        assert shared == expected, name
        for claim, spec in specs.items():
            wanted = value if claim in shared else None  # RWO claims: the default class
            assert spec.get("storageClassName") == wanted, f"{name}: {claim}"
        # The setting itself is never applied.
        assert not [c for c in manifests.of_kind("ConfigMap")
                    if c["metadata"]["name"].startswith("churn-storage-class")], name


def test_the_storage_class_setting_reaches_the_shared_claims_of_every_production_rendering(
    k8s_copy
):
    setting = k8s_copy / "k8s" / "overlays" / "prod" / "storage-class.yaml"
    setting.write_text(setting.read_text().replace(
        f"storageClassName: {storage_class_setting()}", "storageClassName: cephfs-shared"))
    assert storage_class_setting(setting) == "cephfs-shared"
    for name, manifests in render_copy(k8s_copy, {"prod+dask", "canary"}).items():
        classes = {n: s.get("storageClassName") for n, s in claims(manifests).items()
                   if "ReadWriteMany" in s["accessModes"]}
        assert len(classes) >= 3 and set(classes.values()) == {"cephfs-shared"}, (name, classes)


# Defect: the Dask NetworkPolicy admitted only Dask pods and the two client jobs, so the Dask
# operator (in its own namespace) could not ask the scheduler for a worker count and the
# DaskAutoscaler never scaled.

OPERATOR_NAMESPACE = {"kubernetes.io/metadata.name": "dask-operator"}
OPERATOR_POD = {"app.kubernetes.io/name": "dask-kubernetes-operator"}


def selects(selector: dict | None, labels: dict) -> bool:
    """A label selector (matchLabels / matchExpressions In, Exists) against labels."""
    if selector is None:
        return False
    if not all(labels.get(k) == v for k, v in selector.get("matchLabels", {}).items()):
        return False
    for expression in selector.get("matchExpressions", []):
        value = labels.get(expression["key"])
        if expression["operator"] == "In" and value not in expression["values"]:
            return False
        if expression["operator"] == "Exists" and value is None:
            return False
    return True


def ingress_admits(policies: list[dict], pod: dict, *, namespace: dict, source: dict,
                   port: int, same_namespace: bool) -> bool:
    """Whether the NetworkPolicies (of the pod's namespace) let a connection from a pod labelled
    ``source`` in a namespace labelled ``namespace`` reach ``pod`` (labels) on ``port``."""
    applying = [p for p in policies if selects(p["spec"]["podSelector"], pod)
                and "Ingress" in p["spec"]["policyTypes"]]
    if not applying:
        return True
    for policy in applying:
        for rule in policy["spec"].get("ingress", []):
            ports = {p.get("port") for p in rule.get("ports", [])}
            if ports and port not in ports:
                continue
            for peer in rule.get("from", [{}]):
                if "ipBlock" in peer:
                    continue
                in_namespace = (selects(peer["namespaceSelector"], namespace)
                                if "namespaceSelector" in peer else same_namespace)
                in_pods = selects(peer.get("podSelector", {}), source)
                if in_namespace and in_pods:
                    return True
    return False


def test_the_dask_operator_reaches_the_scheduler_for_the_autoscaler(renderings):
    dask_renderings = [n for n in renderings if "dask" in n]
    assert dask_renderings
    for name in dask_renderings:
        manifests = renderings[name]
        policies = manifests.of_kind("NetworkPolicy")
        cluster = manifests.get("DaskCluster", "churn-dask")
        scheduler = {**cluster["spec"]["scheduler"]["metadata"]["labels"],
                     "dask.org/cluster-name": "churn-dask", "dask.org/component": "scheduler"}
        ports = {p["name"]: p["port"] for p in cluster["spec"]["scheduler"]["service"]["ports"]}
        for port in (ports["http-dashboard"], ports["tcp-comm"]):
            assert ingress_admits(policies, scheduler, namespace=OPERATOR_NAMESPACE,
                                  source=OPERATOR_POD, port=port, same_namespace=False), (
                f"{name}: the operator cannot reach the scheduler on {port}")
        # ... and nothing else from outside the namespace gets in.
        assert not ingress_admits(policies, scheduler, namespace={
            "kubernetes.io/metadata.name": "other"}, source=OPERATOR_POD, port=8787,
            same_namespace=False), name
        assert not ingress_admits(policies, scheduler, namespace=OPERATOR_NAMESPACE,
                                  source={"app": "other"}, port=8787, same_namespace=False), name


# Defect: no CronJob set timeZone, so every schedule ran on the controller manager's clock.

def test_every_cronjob_names_one_valid_time_zone(renderings):
    from zoneinfo import ZoneInfo

    zones = set()
    for name, manifests in renderings.items():
        for cronjob in manifests.of_kind("CronJob"):
            zone = cronjob["spec"].get("timeZone")
            assert zone, f"{name}: CronJob {cronjob['metadata']['name']} has no timeZone"
            ZoneInfo(zone)  # raises for a name the tz database does not know
            zones.add(zone)
    assert len(zones) == 1, zones  # one setting (k8s/base/jobs-pod.yaml) for all of them
    assert any("churn-score" in [c["metadata"]["name"] for c in m.of_kind("CronJob")]
               for m in renderings.values())


# Defect: the monitoring component's `release` label (what kube-prometheus-stack selects its
# ServiceMonitors and rules by) landed on every object of the overlay, the Namespace included.

RELEASE_SETTING = REPO / "k8s" / "components" / "monitoring" / "release-label.yaml"
OPERATOR_KINDS = {"ServiceMonitor", "PodMonitor", "PrometheusRule"}


def test_the_release_label_is_on_the_prometheus_operator_objects_only(renderings):
    release = yaml.safe_load(RELEASE_SETTING.read_text())["labels"]["release"]
    for name, manifests in renderings.items():
        labelled = {(o["kind"], o["metadata"]["name"]) for o in manifests.objects
                    if "release" in o["metadata"].get("labels", {})}
        operator_objects = {(o["kind"], o["metadata"]["name"]) for o in manifests.objects
                            if o["kind"] in OPERATOR_KINDS}
        assert labelled == operator_objects, f"{name}: {sorted(labelled - operator_objects)}"
        assert bool(operator_objects) == ("-monitoring" not in name), name
        for kind, object_name in operator_objects:
            assert manifests.get(kind, object_name)["metadata"]["labels"]["release"] == release
        for namespace in manifests.of_kind("Namespace"):
            assert "release" not in namespace["metadata"].get("labels", {}), name


# Defect: the train and retrain CronJobs passed the training source URL to `churn train --data`,
# the performance CronJob `--labels`, MLflow `--backend-store-uri`, each from a Secret: the
# password was then in the node's process list, which every user of the node can read.

def variable_pattern(name: str):
    """`$(NAME)` (the kubelet's expansion), `$NAME` and `${NAME}` (a shell's)."""
    import re

    return re.compile(r"\$(?:\(|\{)?" + re.escape(name) + r"\b")


def secret_variables(container: dict) -> set[str]:
    return {e["name"] for e in container.get("env", [])
            if "secretKeyRef" in e.get("valueFrom", {})}


def test_no_command_line_carries_a_secret(renderings):
    problems, readers = [], set()
    for name, manifests in renderings.items():
        for owner, template in manifests.pod_templates():
            for container in containers(template):
                argv = [*container.get("command", []), *container.get("args", [])]
                for variable in secret_variables(container):
                    readers.add((tuple(argv[:2]), variable))
                    pattern = variable_pattern(variable)
                    if any(pattern.search(part) for part in argv):
                        problems.append(f"{name}: {owner['kind']} {owner['metadata']['name']}"
                                        f": {variable} on the command line")
    assert not problems, "\n".join(problems)
    # The commands read those variables themselves.
    assert {v for _, v in readers} == {"CHURN_TRAINING_DATA", "CHURN_LABELS",
                                       "MLFLOW_BACKEND_STORE_URI"}, readers


def test_the_pattern_finds_each_way_a_variable_reaches_a_command():
    pattern = variable_pattern("CHURN_LABELS")
    for text in ("$(CHURN_LABELS)", "--labels=$CHURN_LABELS", 'x "${CHURN_LABELS}"'):
        assert pattern.search(text), text
    assert not pattern.search("$CHURN_LABELS_FILE and CHURN_LABELS")


def test_churn_reads_its_secrets_from_the_variables_the_pods_set():
    """`churn train --data` and `churn performance --labels` take the value from the variable
    the manifests set from the Secret (tests/k8s/test_cronjobs.py runs the commands so)."""
    import typer.main

    import churn_cli

    group = typer.main.get_command(churn_cli.app)
    for command, variable in (("train", "CHURN_TRAINING_DATA"), ("performance", "CHURN_LABELS")):
        assert variable in {p.envvar for p in group.commands[command].params}, command


def test_mlflow_server_reads_its_backend_store_from_the_variable_the_pod_sets():
    from mlflow.cli import server  # seconds to import: on its own, so the cost shows

    options = {p.envvar: p.opts for p in server.params}
    assert options["MLFLOW_BACKEND_STORE_URI"] == ["--backend-store-uri"]


# Defect: the jobs' NetworkPolicy allowed only the in-namespace Pushgateway and port 5432, while
# the docs tell users without kube-prometheus-stack to point CHURN_PUSHGATEWAY_URL at their own
# Pushgateway, and a labels source may be HTTPS or another database. The destinations outside
# the namespace are now one setting, k8s/base/egress.yaml, with documented examples.

EGRESS_SETTING = "churn-jobs-egress"
JOB_POD = {"app.kubernetes.io/component": "performance-job"}


def egress_admits(policies: list[dict], pod: dict, address: str, port: int) -> bool:
    """Whether the NetworkPolicies let ``pod`` (labels) connect to an address outside the
    cluster's pods (an IP) on ``port``."""
    import ipaddress

    applying = [p for p in policies if selects(p["spec"]["podSelector"], pod)
                and "Egress" in p["spec"]["policyTypes"]]
    if not applying:
        return True
    for policy in applying:
        for rule in policy["spec"].get("egress", []):
            ports = {p.get("port") for p in rule.get("ports", [])}
            if ports and port not in ports:
                continue
            for peer in rule.get("to", [{"ipBlock": {"cidr": "0.0.0.0/0"}}]):
                block = peer.get("ipBlock")
                if block and ipaddress.ip_address(address) in ipaddress.ip_network(
                        block["cidr"]) and not any(
                        ipaddress.ip_address(address) in ipaddress.ip_network(e)
                        for e in block.get("except", [])):
                    return True
    return False


def test_jobs_leave_the_namespace_only_where_the_egress_setting_says(renderings):
    for name, manifests in renderings.items():
        policies = manifests.of_kind("NetworkPolicy")
        jobs = manifests.get("NetworkPolicy", "churn-jobs")
        setting = manifests.get("NetworkPolicy", EGRESS_SETTING)
        assert setting["spec"]["policyTypes"] == ["Egress"], name
        assert setting["spec"]["podSelector"] == jobs["spec"]["podSelector"], name
        # The base policy: peers inside the namespace, and the cluster's DNS.
        for rule in jobs["spec"]["egress"]:
            for peer in rule["to"]:
                assert "ipBlock" not in peer, name
                if "namespaceSelector" in peer:
                    assert peer["podSelector"]["matchLabels"] == {"k8s-app": "kube-dns"}, name
        # The default setting: PostgreSQL anywhere, nothing else outside.
        assert egress_admits(policies, JOB_POD, "192.0.2.10", 5432), name
        assert not egress_admits(policies, JOB_POD, "192.0.2.10", 443), name


def documented_egress_example() -> str:
    """The example egress.yaml of docs/kubernetes.md's "Job egress" section."""
    import re

    text = (REPO / "docs" / "kubernetes.md").read_text()
    section = text.split("## Job egress", 1)[1].split("\n## ", 1)[0]
    return re.search(r"```yaml\n(.*?)```", section, re.S).group(1)


def test_the_documented_egress_example_admits_what_it_says(k8s_copy):
    from tests.k8s.test_validate import validate

    (k8s_copy / "k8s" / "base" / "egress.yaml").write_text(documented_egress_example())
    manifests = render_copy(k8s_copy, {"prod-monitoring"})["prod-monitoring"]
    setting = manifests.get("NetworkPolicy", EGRESS_SETTING)
    validate(setting)
    policies = manifests.of_kind("NetworkPolicy")
    for component in ("drift-job", "log-job", "performance-job", "retrain-job"):
        pod = {"app.kubernetes.io/component": component}
        assert egress_admits(policies, pod, "10.20.0.5", 9091), component  # your Pushgateway
        assert egress_admits(policies, pod, "198.51.100.7", 443), component  # HTTPS labels
        assert egress_admits(policies, pod, "198.51.100.8", 5432), component  # PostgreSQL
        assert not egress_admits(policies, pod, "10.20.0.6", 9091), component
        assert not egress_admits(policies, pod, "198.51.100.7", 22), component


# Defect: the production spread counted a rollout's pods by pod-template-hash, the label the
# Deployment controller adds; under Argo Rollouts pods carry rollouts-pod-template-hash, and a
# matchLabelKeys key a pod lacks is ignored.

CONTROLLER_LABELS = {"Deployment": {"pod-template-hash"},
                     "Rollout": {"rollouts-pod-template-hash"},
                     "StatefulSet": {"controller-revision-hash", "apps.kubernetes.io/pod-index",
                                     "statefulset.kubernetes.io/pod-name"}}


def test_spread_constraints_key_on_labels_the_pods_carry(renderings):
    checked = set()
    for name, manifests in renderings.items():
        for owner, template in manifests.pod_templates():
            carried = set(template["metadata"].get("labels", {})) | CONTROLLER_LABELS.get(
                owner["kind"], set())
            for constraint in template["spec"].get("topologySpreadConstraints", []):
                missing = set(constraint.get("matchLabelKeys", [])) - carried
                assert not missing, (f"{name}: {owner['kind']} {owner['metadata']['name']}: "
                                     f"its pods never carry {missing}")
                assert selects(constraint["labelSelector"], template["metadata"]["labels"]), \
                    f"{name}: {owner['kind']} {owner['metadata']['name']}"
                checked.add(owner["kind"])
    assert checked == {"Deployment", "Rollout"}


# The docs say what the cluster must provide, which overlay needs it, and how `churn k8s check`
# verifies it; then the first apply, in order.

def docs_section(title: str) -> str:
    text = (REPO / "docs" / "kubernetes.md").read_text()
    assert f"\n## {title}\n" in text, f"docs/kubernetes.md has no section {title!r}"
    return text.split(f"\n## {title}\n", 1)[1].split("\n## ", 1)[0]


def test_the_docs_list_what_the_cluster_needs_and_how_each_is_checked():
    rows = [line for line in docs_section("What your cluster needs").splitlines()
            if line.startswith("| ") and not line.startswith(("| prerequisite", "| ---"))]
    cells = [[c.strip() for c in row.strip("|").split(" | ")] for row in rows]
    assert all(len(c) == 4 and all(c) for c in cells), [c for c in cells if len(c) != 4]
    table = "\n".join(rows)
    for needed in ("Kubernetes 1.30", "default StorageClass", "ReadWriteMany StorageClass",
                   "UID/GID 1034", "metrics-server", "ServiceMonitor, PrometheusRule",
                   "release-label.yaml", "Argo Rollouts", "kubernetes.prometheus_address",
                   "Dask operator", "Pod Security", "churn-training-data", "images",
                   "churn canary", "egress.yaml", "storage-class.yaml"):
        assert needed in table, needed
    # Each setting the table names is a file (or a config key) that exists.
    for path in re.findall(r"`((?:k8s|configs)/[\w./-]+)`", table):
        assert (REPO / path).exists(), path


def test_the_first_apply_walkthrough_checks_before_it_applies():
    steps = re.findall(r"^(\d+)\. \*\*([^*]+)\*\*", docs_section("First apply"), re.M)
    titles = [title.rstrip(".:") for _, title in steps]
    assert [int(n) for n, _ in steps] == list(range(1, len(steps) + 1))
    assert titles.index("Check") < titles.index("Apply") < titles.index("The first model")
    assert titles.index("The namespace and the Secrets") < titles.index("Check")
    assert "churn k8s check" in docs_section("First apply")
