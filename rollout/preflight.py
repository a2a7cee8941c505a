"""`churn k8s check`: does this cluster have what the chosen overlays need, before anything is
applied? One row per prerequisite, with a fix for each one that fails (docs/kubernetes.md,
"What your cluster needs").

Three steps, the first and last pure:
- ``needs(objects)``: what a rendering (`kubectl kustomize OVERLAY`) asks of a cluster: custom
  resource kinds, storage classes, the metrics API, the namespace's Pod Security labels, the
  labels the Prometheus operator must select, Secrets it does not create, images, namespaces
  its NetworkPolicies admit by name, the Prometheus an Argo analysis queries, and, with the
  kubectl canary, what `churn canary` does;
- ``gather(kubectl, needs)``: reads them with kubectl (argument lists, as the canary commands
  build them), never changing anything, except with ``images``: one short-lived pod per image,
  deleted after, because only a pod shows what the cluster's nodes can pull;
- ``judge(needs, facts)``: the rows.
"""

from __future__ import annotations

import contextlib
import json
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from rollout import kubectl as k

# The oldest server the manifests run on: the preStop `sleep` action (1.30); CronJob timeZone
# and matchLabelKeys in topology spread are on by default from 1.27.
MIN_SERVER = (1, 30)
# API groups served by every Kubernetes: a kind of any other group needs a CRD.
BUILT_IN_GROUPS = {"", "apps", "batch", "policy", "autoscaling", "networking.k8s.io",
                   "rbac.authorization.k8s.io", "storage.k8s.io", "scheduling.k8s.io"}
# Provisioners of block storage (ReadWriteOnce only: a ReadWriteMany claim never binds) and of
# shared file storage (ReadWriteMany).
BLOCK_PROVISIONERS = {
    "ebs.csi.aws.com", "kubernetes.io/aws-ebs", "pd.csi.storage.gke.io", "kubernetes.io/gce-pd",
    "disk.csi.azure.com", "kubernetes.io/azure-disk", "cinder.csi.openstack.org",
    "kubernetes.io/cinder", "rancher.io/local-path", "kubernetes.io/no-provisioner",
    "rbd.csi.ceph.com", "openebs.io/local", "topolvm.io", "csi.vsphere.vmware.com"}
FILE_PROVISIONERS = {
    "nfs.csi.k8s.io", "efs.csi.aws.com", "file.csi.azure.com", "kubernetes.io/azure-file",
    "filestore.csi.storage.gke.io", "driver.longhorn.io", "cephfs.csi.ceph.com",
    "cluster.local/nfs-subdir-external-provisioner",
    "k8s-sigs.io/nfs-subdir-external-provisioner"}
# Provisioners that create every volume's directory writable by any user (mode 0777).
WORLD_WRITABLE_PROVISIONERS = {"cluster.local/nfs-subdir-external-provisioner",
                               "k8s-sigs.io/nfs-subdir-external-provisioner"}
METRICS_API = "v1beta1.metrics.k8s.io"
PROMETHEUS_ADDRESS = re.compile(r"^https?://([a-z0-9-]+)\.([a-z0-9-]+)\.svc(\.[a-z.]+)?(:\d+)?/?$")
# How long a pull may take before `--images` calls it failed.
PULL_TIMEOUT_SECONDS = 180
PULL_ERRORS = {"ErrImagePull", "ImagePullBackOff", "InvalidImageName", "ErrImageNeverPull"}
STILL_PULLING = {"ContainerCreating", "PodInitializing"}

OK, FAIL, WARN = "ok", "FAIL", "warn"


@dataclass(frozen=True)
class Check:
    """One row: a prerequisite, who needs it, what was found and, unless ok, the fix."""

    name: str
    needed_by: str
    status: str  # OK, FAIL or WARN (a warning does not fail the check)
    found: str
    fix: str = ""


@dataclass
class Needs:
    """What one rendering asks of a cluster (``needs``), each with the objects that ask."""

    namespace: str
    resources: dict[str, list[str]] = field(default_factory=dict)  # plural.group -> users
    versions: dict[str, str] = field(default_factory=dict)  # plural.group -> group/version
    shared_classes: dict[str | None, list[str]] = field(default_factory=dict)  # RWX claims
    default_class_claims: list[str] = field(default_factory=list)
    autoscalers: list[str] = field(default_factory=list)  # HPAs on CPU or memory
    namespace_labels: dict[str, str] | None = None  # the rendered Namespace's, if any
    selected: list[tuple[str, str, dict]] = field(default_factory=list)  # SM/rules + labels
    secrets: dict[str, list[str]] = field(default_factory=dict)  # name -> users
    optional_secrets: set[str] = field(default_factory=set)  # used by suspended jobs only
    images: dict[str, list[str]] = field(default_factory=dict)
    admitted_namespaces: dict[str, list[str]] = field(default_factory=dict)
    prometheus_addresses: dict[str, list[str]] = field(default_factory=dict)
    canary: bool = False  # the kubectl canary overlay: `churn canary` will run here


def _plural(kind: str) -> str:
    return kind.lower() + "s"  # true of every custom kind the overlays use


def _pod_specs(obj: dict) -> list[dict]:
    spec = obj.get("spec", {})
    if obj["kind"] == "CronJob":
        return [spec["jobTemplate"]["spec"]["template"]["spec"]]
    if obj["kind"] == "DaskCluster":
        return [spec[part]["spec"] for part in ("scheduler", "worker") if part in spec]
    if "template" in spec and "spec" in spec["template"]:
        return [spec["template"]["spec"]]
    return []


def needs(objects: list[dict], namespace: str | None = None,
          canary_deployment: str = "churn-serve-canary", fallback: str = "default") -> Needs:
    """What the rendered ``objects`` need from a cluster. ``namespace`` overrides the one the
    objects name (that of the first namespaced object, else ``fallback``)."""
    named = [o["metadata"].get("namespace") for o in objects if o["metadata"].get("namespace")]
    out = Needs(namespace=namespace or (named[0] if named else fallback))
    generated = {o["metadata"]["name"] for o in objects if o["kind"] == "Secret"}
    for obj in objects:
        kind, name = obj["kind"], obj["metadata"]["name"]
        who = f"{kind} {name}"
        group, _, version = obj["apiVersion"].rpartition("/")
        if group not in BUILT_IN_GROUPS:
            resource = f"{_plural(kind)}.{group}"
            out.resources.setdefault(resource, []).append(who)
            out.versions[resource] = obj["apiVersion"]
        if kind == "Namespace":
            out.namespace_labels = dict(obj["metadata"].get("labels", {}))
        if kind == "PersistentVolumeClaim":
            spec = obj["spec"]
            if "ReadWriteMany" in spec.get("accessModes", []):
                out.shared_classes.setdefault(spec.get("storageClassName"), []).append(name)
            elif spec.get("storageClassName") is None:
                out.default_class_claims.append(name)
        if kind == "HorizontalPodAutoscaler" and any(
                m.get("type") in ("Resource", "ContainerResource")
                for m in obj["spec"].get("metrics", [])):
            out.autoscalers.append(who)
        if kind in ("ServiceMonitor", "PodMonitor", "PrometheusRule"):
            out.selected.append((kind, name, dict(obj["metadata"].get("labels", {}))))
        if kind == "Deployment" and name == canary_deployment:
            out.canary = True
        if kind == "NetworkPolicy":
            for rule in obj["spec"].get("ingress", []) + obj["spec"].get("egress", []):
                for peer in rule.get("from", []) + rule.get("to", []):
                    target = peer.get("namespaceSelector", {}).get("matchLabels", {}).get(
                        "kubernetes.io/metadata.name")
                    if target and target != "kube-system":
                        out.admitted_namespaces.setdefault(target, []).append(who)
        if kind == "AnalysisTemplate":
            for argument in obj["spec"].get("args", []):
                if argument.get("name") == "prometheus-address" and "value" in argument:
                    out.prometheus_addresses.setdefault(argument["value"], []).append(who)
        suspended = kind == "CronJob" and obj["spec"].get("suspend", False)
        for pod in _pod_specs(obj):
            used = set()
            for container in pod.get("initContainers", []) + pod.get("containers", []):
                out.images.setdefault(container["image"], []).append(who)
                for env in container.get("env", []):
                    ref = env.get("valueFrom", {}).get("secretKeyRef")
                    if ref:
                        used.add(ref["name"])
            used |= {v["secret"]["secretName"] for v in pod.get("volumes", []) if "secret" in v}
            for secret in used - generated:
                first = secret not in out.secrets
                out.secrets.setdefault(secret, []).append(who)
                if suspended and first:
                    out.optional_secrets.add(secret)
                elif not suspended:
                    out.optional_secrets.discard(secret)
    return out


# What each kind of kubectl call the canary commands make asks the API server for:
# (verb, resource, subresource). `kubectl set|annotate|patch` read the object, then patch it.
def permissions(call: k.Call) -> set[tuple[str, str, str]]:
    """The API permissions one kubectl call of the canary commands needs."""
    args, resource = call.args, call.kind + "s"
    if args[0] == "get":
        return {("get", resource, "")}
    if args[0] == "create":
        return {("create", resource, "")}
    if args[0] in ("set", "annotate", "patch"):
        return {("get", resource, ""), ("patch", resource, "")}
    if args[0] == "scale":
        return {("get", resource, ""), ("patch", resource, "scale")}
    if args[:2] == ("rollout", "status"):
        return {("get", resource, ""), ("list", resource, ""), ("watch", resource, "")}
    if args[:2] == ("rollout", "undo"):
        return {("get", resource, ""), ("list", "replicasets", ""), ("patch", resource, "")}
    raise ValueError(f"no permissions known for `kubectl {' '.join(args[:2])}`")


def canary_permissions() -> list[tuple[str, str, str]]:
    """Every permission `churn canary start|step|promote|abort|run` needs: those of one call of
    each kind rollout.kubectl builds."""
    calls = [k.get("deployment", "x"), k.get("configmap", "x"), k.set_image("x", "c", "i"),
             k.set_env("x", "c", "V", "v"), k.patch_configmap("x", "K", "v"), k.scale("x", 1),
             k.annotate("x", {}), k.patch_deployment("x", {}, ""), k.rollout_status("x", "1m"),
             k.rollout_undo("x")]
    return sorted(set().union(*(permissions(c) for c in calls)))


def lifecycle_permissions() -> list[tuple[str, str, str]]:
    """Every permission `churn lifecycle step` needs: the canary's, the shadow's (a restart is
    a patch) and its state ConfigMap's (created once, then JSON-patched)."""
    calls = [k.restart("x", "t"), k.create_configmap("x", {}), k.json_patch_configmap("x", [], "")]
    return sorted(set(canary_permissions()).union(*(permissions(c) for c in calls)))


@dataclass
class Read:
    """What one kubectl read found: the object (None: not found), or why it could not read."""

    obj: dict | None = None
    error: str | None = None


@dataclass
class Facts:
    """What ``gather`` found in the cluster."""

    reachable: Read = field(default_factory=Read)  # `kubectl version`
    resources: set[str] = field(default_factory=set)  # plural.group served
    api_versions: set[str] = field(default_factory=set)
    storage_classes: Read = field(default_factory=Read)
    csi_drivers: Read = field(default_factory=Read)
    metrics_api: Read = field(default_factory=Read)
    namespace: Read = field(default_factory=Read)
    prometheuses: Read = field(default_factory=Read)
    secrets: Read = field(default_factory=Read)
    namespaces: dict[str, Read] = field(default_factory=dict)
    services: dict[str, Read] = field(default_factory=dict)  # address -> its Service
    allowed: dict[tuple[str, str, str], bool | str] = field(default_factory=dict)  # str: error
    images: dict[str, tuple[bool, str]] | None = None


def _last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if not line.startswith("Warning:")]
    return lines[-1] if lines else ""


def _read(kubectl: k.Kubectl, *args: str) -> Read:
    done = kubectl.probe(k.Call(args, "preflight", edits=False))
    if done.returncode == 0:
        return Read(obj=json.loads(done.stdout) if done.stdout.strip() else {})
    if "(NotFound)" in done.stderr:
        return Read()
    return Read(error=_last_line(done.stderr or done.stdout) or f"exit {done.returncode}")


def _lines(kubectl: k.Kubectl, *args: str) -> set[str]:
    # Discovery prints what it found even when one aggregated API (a metrics-server that is
    # down) makes it exit 1.
    done = kubectl.probe(k.Call(args, "preflight", edits=False))
    return set(done.stdout.split())


def _names(kubectl: k.Kubectl, *args: str) -> Read:
    """The names a `kubectl get KIND -o name` lists, as a list object (no values read)."""
    done = kubectl.probe(k.Call((*args, "-o", "name"), "preflight", edits=False))
    if done.returncode != 0:
        return Read(error=_last_line(done.stderr or done.stdout) or f"exit {done.returncode}")
    return Read(obj={"items": [{"metadata": {"name": line.split("/", 1)[-1]}}
                               for line in done.stdout.split()]})


def gather(kubectl: k.Kubectl, wanted: Needs, images: bool = False,
           pull_timeout: float = PULL_TIMEOUT_SECONDS,
           sleep: Callable[[float], None] = time.sleep) -> Facts:
    """Read what ``wanted`` depends on. Changes nothing, but for ``images``: one pod per image
    in the namespace, deleted again (KubectlError only when kubectl itself cannot run)."""
    facts = Facts(reachable=_read(kubectl, "version", "-o", "json"))
    if facts.reachable.error or not (facts.reachable.obj or {}).get("serverVersion"):
        return facts
    facts.resources = _lines(kubectl, "api-resources", "-o", "name")
    facts.api_versions = _lines(kubectl, "api-versions")
    if wanted.shared_classes or wanted.default_class_claims:
        facts.storage_classes = _read(kubectl, "get", "storageclasses", "-o", "json")
        facts.csi_drivers = _read(kubectl, "get", "csidrivers", "-o", "json")
    if wanted.autoscalers:
        facts.metrics_api = _read(kubectl, "get", "apiservices", METRICS_API, "-o", "json")
    facts.namespace = _read(kubectl, "get", "namespace", wanted.namespace, "-o", "json")
    resource = "prometheuses.monitoring.coreos.com"
    if wanted.selected and resource in facts.resources:
        facts.prometheuses = _read(kubectl, "get", resource, "--all-namespaces", "-o", "json")
    if wanted.secrets and (facts.namespace.obj is not None or facts.namespace.error):
        facts.secrets = _names(kubectl, "get", "secrets")  # names only: no value is read
    for name in wanted.admitted_namespaces:
        facts.namespaces[name] = _read(kubectl, "get", "namespace", name, "-o", "json")
    for address in wanted.prometheus_addresses:
        match = PROMETHEUS_ADDRESS.match(address)
        if match:
            facts.services[address] = _read(kubectl, "get", "service", match.group(1),
                                            "--namespace", match.group(2), "-o", "json")
    if wanted.canary:
        for verb, what, sub in canary_permissions():
            args = ["auth", "can-i", verb, what] + ([f"--subresource={sub}"] if sub else [])
            done = kubectl.probe(k.Call(tuple(args), "preflight", edits=False))
            answer = done.stdout.split(maxsplit=1)[:1]  # "yes", "no", "no - <reason>"
            facts.allowed[(verb, what, sub)] = (answer == ["yes"] if answer in (["yes"], ["no"])
                                                else _last_line(done.stderr) or "no answer")
    if images:
        facts.images = _pull(kubectl, wanted, pull_timeout, sleep)
    return facts


def pull_pod_overrides(name: str, image: str) -> dict:
    """A pod that only pulls ``image`` and exits, admitted by the "restricted" profile."""
    return {"apiVersion": "v1", "spec": {
        "restartPolicy": "Never", "automountServiceAccountToken": False,
        "activeDeadlineSeconds": PULL_TIMEOUT_SECONDS + 60,
        "securityContext": {"runAsNonRoot": True, "runAsUser": 65534,
                            "seccompProfile": {"type": "RuntimeDefault"}},
        "containers": [{
            "name": "pull", "image": image, "command": ["true"],
            "resources": {"requests": {"cpu": "10m", "memory": "16Mi"},
                          "limits": {"memory": "16Mi"}},
            "securityContext": {"allowPrivilegeEscalation": False, "runAsNonRoot": True,
                                "readOnlyRootFilesystem": True,
                                "capabilities": {"drop": ["ALL"]}}}]}}


def pull_state(pod: dict) -> tuple[bool, str] | None:
    """(pulled, why) of a pull pod, or None while the image is still being pulled."""
    for status in pod.get("status", {}).get("containerStatuses", []):
        waiting = status.get("state", {}).get("waiting")
        if waiting and waiting.get("reason") in PULL_ERRORS:
            return False, f"{waiting['reason']}: {waiting.get('message', '')}".strip(": ")
        if waiting and waiting.get("reason") in STILL_PULLING | {None}:
            return None
        return True, "pulled"  # running, terminated, or failing after the pull
    return None


def _pull(kubectl: k.Kubectl, wanted: Needs, timeout: float,
          sleep: Callable[[float], None]) -> dict[str, tuple[bool, str]]:
    result: dict[str, tuple[bool, str]] = {}
    pods: dict[str, str] = {}
    suffix = secrets.token_hex(3)
    try:
        for i, image in enumerate(sorted(wanted.images)):
            name = f"churn-preflight-{suffix}-{i}"
            run = k.Call(("run", name, f"--image={image}", "--restart=Never",
                          "--labels=app.kubernetes.io/name=churn-preflight",
                          f"--overrides={json.dumps(pull_pod_overrides(name, image))}"),
                         f"pull {image}", "pod", name)
            try:
                kubectl.run(run)
                pods[image] = name
            except k.KubectlError as exc:
                result[image] = (False, f"no pod to pull it: {str(exc).split(' failed: ')[-1]}")
        deadline = time.monotonic() + timeout
        while pods.keys() - result.keys() and time.monotonic() < deadline:
            for image, name in pods.items():
                if image not in result:
                    read = _read(kubectl, "get", "pod", name, "-o", "json")
                    state = pull_state(read.obj) if read.obj else (False, read.error or
                                                                   "pod gone")
                    if state is not None:
                        result[image] = state
            if pods.keys() - result.keys():
                sleep(2)
        for image in pods.keys() - result.keys():
            result[image] = (False, f"not pulled within {timeout:.0f} s")
    finally:
        for name in pods.values():
            with contextlib.suppress(k.KubectlError):  # activeDeadlineSeconds ends it anyway
                kubectl.run(k.Call(("delete", "pod", name, "--wait=false",
                                    "--ignore-not-found"), f"remove {name}", "pod", name))
    return result


def _version(facts: Facts) -> tuple[int, int] | None:
    server = (facts.reachable.obj or {}).get("serverVersion", {})
    digits = [re.sub(r"\D.*", "", str(server.get(p, ""))) for p in ("major", "minor")]
    return (int(digits[0]), int(digits[1])) if all(digits) else None


def _users(names: list[str], limit: int = 2) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f" (+{len(names) - limit})" if len(names) > limit else "")


def _selects(selector: dict | None, labels: dict) -> bool:
    """A label selector against labels; None selects nothing, {} everything."""
    if selector is None:
        return False
    if not all(labels.get(key) == value
               for key, value in selector.get("matchLabels", {}).items()):
        return False
    for expression in selector.get("matchExpressions", []):
        value, values = labels.get(expression["key"]), expression.get("values", [])
        if not {"In": value in values, "NotIn": value not in values,
                "Exists": value is not None, "DoesNotExist": value is None
                }[expression["operator"]]:
            return False
    return True


def judge(wanted: Needs, facts: Facts, images: bool = False) -> list[Check]:
    """The rows, in the order of docs/kubernetes.md's "What your cluster needs"."""
    if facts.reachable.error or _version(facts) is None:
        return [Check("cluster reachable", "every overlay", FAIL,
                      facts.reachable.error or "no server version",
                      "check the context (--context, KUBECONFIG) and that the API server "
                      "answers `kubectl version`")]
    rows = [_version_row(facts)]
    rows += _resource_rows(wanted, facts)
    rows += _storage_rows(wanted, facts)
    if wanted.autoscalers:
        rows.append(_metrics_row(wanted, facts))
    rows.append(_namespace_row(wanted, facts))
    if wanted.selected and "prometheuses.monitoring.coreos.com" in facts.resources:
        rows.append(_prometheus_row(wanted, facts))
    rows += _admitted_namespace_rows(wanted, facts)
    rows += _address_rows(wanted, facts)
    rows += _secret_rows(wanted, facts)
    if wanted.canary:
        rows.append(_permission_row(wanted, facts))
    if images and facts.images is not None:
        rows += [Check(f"image {image}", _users(wanted.images[image]), OK if ok else FAIL,
                       why, "" if ok else "push it, or point the images: entries of "
                       "k8s/base/kustomization.yaml at where it is; a private registry needs "
                       "imagePullSecrets on the ServiceAccounts")
                 for image, (ok, why) in sorted(facts.images.items())]
    return rows


def _version_row(facts: Facts) -> Check:
    version = _version(facts)
    shown = facts.reachable.obj["serverVersion"].get("gitVersion", f"{version}")
    ok = version >= MIN_SERVER
    return Check(f"Kubernetes >= {MIN_SERVER[0]}.{MIN_SERVER[1]}", "every overlay",
                 OK if ok else FAIL, shown, "" if ok else
                 "upgrade the cluster: the service's preStop sleep needs 1.30 (on an older one "
                 "use exec: [sleep, 10], docs/kubernetes.md#probes-and-shutdown)")


INSTALL = {
    "monitoring.coreos.com": "install kube-prometheus-stack (the Prometheus operator), or "
    "leave the monitoring component out of the overlay",
    "argoproj.io": "install Argo Rollouts (its controller and CRDs), or use the canary "
    "overlay instead",
    "kubernetes.dask.org": "install the Dask operator (helm install -n dask-operator "
    "--create-namespace ... dask-kubernetes-operator), or leave the dask component out",
}


def _resource_rows(wanted: Needs, facts: Facts) -> list[Check]:
    rows = []
    for resource, users in sorted(wanted.resources.items()):
        group = resource.split(".", 1)[1]
        version = wanted.versions[resource]
        if resource not in facts.resources:
            rows.append(Check(f"CRD {resource}", _users(users), FAIL, "not installed",
                              INSTALL.get(group, f"install the CRD of {group}")))
        elif version not in facts.api_versions:
            rows.append(Check(f"CRD {resource}", _users(users), FAIL,
                              f"{version} not served", f"upgrade {group} to serve {version}"))
        else:
            rows.append(Check(f"CRD {resource}", _users(users), OK, f"{version} served"))
    return rows


def _storage_rows(wanted: Needs, facts: Facts) -> list[Check]:
    if not (wanted.shared_classes or wanted.default_class_claims):
        return []
    if facts.storage_classes.error:
        return [Check("storage classes", "the claims", WARN,
                      f"could not read: {facts.storage_classes.error}",
                      "run with a context allowed to list storageclasses")]
    classes = {c["metadata"]["name"]: c for c in facts.storage_classes.obj.get("items", [])}
    default = [n for n, c in classes.items() if c["metadata"].get("annotations", {}).get(
        "storageclass.kubernetes.io/is-default-class") == "true"]
    drivers = {d["metadata"]["name"]: d for d in (facts.csi_drivers.obj or {}).get("items", [])}
    rows = []
    if wanted.default_class_claims:
        rows.append(Check(
            "default StorageClass", _users(wanted.default_class_claims),
            OK if default else FAIL, default[0] if default else "none marked default",
            "" if default else "mark one default: kubectl annotate storageclass NAME "
            "storageclass.kubernetes.io/is-default-class=true"))
    for name, claims in sorted(wanted.shared_classes.items(), key=lambda i: str(i[0])):
        wanted_name = name or (default[0] if default else None)
        setting = "set storageClassName in k8s/overlays/prod/storage-class.yaml"
        if wanted_name is None or wanted_name not in classes:
            rows.append(Check(f"ReadWriteMany StorageClass {name or '(default)'}",
                              _users(claims), FAIL,
                              f"not found (here: {', '.join(sorted(classes)) or 'none'})",
                              f"{setting} to a class of shared file storage, or install one "
                              "(docs/kubernetes.md#where-no-readwritemany-storage-class-exists)"))
            continue
        storage = classes[wanted_name]
        provisioner = storage.get("provisioner", "")
        kind = _provisioner_kind(provisioner)
        rows.append(Check(
            f"ReadWriteMany StorageClass {wanted_name}", _users(claims),
            {"file": OK, "block": FAIL}.get(kind, WARN),
            f"provisioner {provisioner}" + {"file": " (shared files)",
                                            "block": " (block: ReadWriteOnce only)"}.get(
                kind, ": cannot tell whether it gives ReadWriteMany"),
            "" if kind == "file" else f"{setting} to a class of shared file storage "
            "(NFS, CephFS, EFS, Azure Files, Filestore, Longhorn)"))
        if kind != "block":  # no ReadWriteMany volume to own
            rows.append(_ownership_row(wanted_name, storage, drivers.get(provisioner), claims))
    return rows


def _provisioner_kind(provisioner: str) -> str:
    if provisioner in FILE_PROVISIONERS or provisioner.endswith(".cephfs.csi.ceph.com"):
        return "file"
    if provisioner in BLOCK_PROVISIONERS or provisioner.endswith(".rbd.csi.ceph.com"):
        return "block"
    return "unknown"


def _ownership_row(name: str, storage: dict, driver: dict | None,
                   claims: list[str]) -> Check:
    """The pods run as UID/GID 1034 with fsGroup 1034: the shared volumes must let them write."""
    provisioner = storage.get("provisioner", "")
    parameters = storage.get("parameters", {})
    options = ",".join(storage.get("mountOptions", []))
    policy = (driver or {}).get("spec", {}).get("fsGroupPolicy", "ReadWriteOnceWithFSType")
    if driver and policy == "File":
        found, ok = f"CSIDriver {provisioner}: fsGroupPolicy File (fsGroup applied)", True
    elif "1034" in (parameters.get("gid"), parameters.get("uid")):
        found, ok = "the class creates volumes owned by 1034 (parameters uid/gid)", True
    elif re.search(r"\b(gid|uid)=1034\b", options):
        found, ok = "the class mounts volumes as 1034 (mountOptions uid/gid)", True
    elif provisioner in WORLD_WRITABLE_PROVISIONERS:
        found, ok = f"{provisioner} creates world-writable directories", True
    else:
        found = (f"CSIDriver {provisioner}: fsGroupPolicy {policy}: fsGroup is not applied to "
                 "ReadWriteMany volumes" if driver else
                 f"{provisioner}: no CSIDriver object, cannot tell")
        ok = False
    return Check(f"volume ownership on {name}", _users(claims), OK if ok else WARN, found,
                 "" if ok else "make the volumes writable by GID 1034: fsGroupPolicy: File on "
                 "the CSIDriver, or the class's uid/gid (docs/kubernetes.md#volume-ownership)")


def _metrics_row(wanted: Needs, facts: Facts) -> Check:
    service = facts.metrics_api
    fix = ("install metrics-server (or your platform's metrics add-on): without the metrics "
           "API the HPA shows <unknown> and never scales")
    if service.error:
        return Check("metrics API (metrics-server)", _users(wanted.autoscalers), WARN,
                     f"could not read: {service.error}", fix)
    if service.obj is None:
        return Check("metrics API (metrics-server)", _users(wanted.autoscalers), FAIL,
                     f"APIService {METRICS_API} not found", fix)
    available = [c for c in service.obj.get("status", {}).get("conditions", [])
                 if c.get("type") == "Available"]
    if available and available[0].get("status") == "True":
        return Check("metrics API (metrics-server)", _users(wanted.autoscalers), OK,
                     f"{METRICS_API} available")
    why = available[0].get("message", "not available") if available else "no status"
    return Check("metrics API (metrics-server)", _users(wanted.autoscalers), FAIL,
                 f"{METRICS_API}: {why}", fix)


def _namespace_row(wanted: Needs, facts: Facts) -> Check:
    name = f"namespace {wanted.namespace}: Pod Security"
    expected = {key: value for key, value in (wanted.namespace_labels or {}).items()
                if key.startswith("pod-security.kubernetes.io/")}
    if facts.namespace.error:
        return Check(name, "every pod", WARN, f"could not read: {facts.namespace.error}",
                     "run with a context allowed to get namespaces")
    actual = (facts.namespace.obj or {}).get("metadata", {}).get("labels", {})
    current = {key: value for key, value in actual.items()
               if key.startswith("pod-security.kubernetes.io/")}
    if facts.namespace.obj is None:
        if expected:
            return Check(name, "every pod", OK, "created by the apply with "
                         + ", ".join(f"{k.rsplit('/', 1)[1]}={v}" for k, v in expected.items()))
        return Check(name, "every pod", WARN, "does not exist; the overlay creates no Namespace",
                     f"kubectl create namespace {wanted.namespace} && kubectl label namespace "
                     f"{wanted.namespace} pod-security.kubernetes.io/enforce=restricted")
    if not expected:
        enforced = current.get("pod-security.kubernetes.io/enforce")
        return Check(name, "every pod", OK if enforced == "restricted" else WARN,
                     f"enforce={enforced or 'none'}", "" if enforced == "restricted" else
                     f"kubectl label namespace {wanted.namespace} "
                     "pod-security.kubernetes.io/enforce=restricted")
    differ = {key: (current.get(key), value) for key, value in expected.items()
              if current.get(key) not in (None, value)}
    if differ:
        shown = ", ".join(f"{k.rsplit('/', 1)[1]}={old} (overlay: {new})"
                          for k, (old, new) in differ.items())
        return Check(name, "every pod", FAIL, shown,
                     "the apply would change it for every pod in the namespace: give "
                     "churn-serve a namespace of its own (the overlay's namespace:), or "
                     f"kubectl label namespace {wanted.namespace} --overwrite "
                     + " ".join(f"{k}={v}" for k, v in expected.items()))
    return Check(name, "every pod", OK, ", ".join(
        f"{k.rsplit('/', 1)[1]}={v}" for k, v in expected.items())
        + ("" if current == expected else " (the apply adds the labels)"))


def _prometheus_row(wanted: Needs, facts: Facts) -> Check:
    users = _users([f"{kind} {name}" for kind, name, _ in wanted.selected])
    title = "Prometheus selects the monitoring objects"
    if facts.prometheuses.error:
        return Check(title, users, WARN, f"could not read: {facts.prometheuses.error}",
                     "run with a context allowed to list prometheuses")
    found = (facts.prometheuses.obj or {}).get("items", [])
    if not found:
        return Check(title, users, FAIL, "no Prometheus resource in the cluster",
                     "install kube-prometheus-stack, or leave the monitoring component out")
    namespace_labels = {**((facts.namespace.obj or {}).get("metadata", {}).get("labels", {})),
                        **(wanted.namespace_labels or {}),
                        "kubernetes.io/metadata.name": wanted.namespace}
    misses = []
    for prometheus in found:
        spec, where = prometheus.get("spec", {}), prometheus["metadata"]
        missed = []
        for kind, name, labels in wanted.selected:
            prefix = "rule" if kind == "PrometheusRule" else (
                "podMonitor" if kind == "PodMonitor" else "serviceMonitor")
            namespaces = spec.get(f"{prefix}NamespaceSelector")
            in_namespace = (_selects(namespaces, namespace_labels) if namespaces is not None
                            else where.get("namespace") == wanted.namespace)
            if not (in_namespace and _selects(spec.get(f"{prefix}Selector"), labels)):
                missed.append(f"{kind} {name}")
        label = f"{where.get('namespace')}/{where['name']}"
        if not missed:
            return Check(title, users, OK, f"Prometheus {label} selects all of them")
        wanted_release = {s.get("matchLabels", {}).get("release")
                          for s in (spec.get("serviceMonitorSelector"), spec.get("ruleSelector"))
                          if s} - {None}
        misses.append((label, missed, wanted_release))
    label, missed, releases = misses[0]
    fix = ("set `release:` in k8s/components/monitoring/release-label.yaml to "
           + " or ".join(sorted(releases)) if releases else
           "make a Prometheus select them: its serviceMonitorSelector/ruleSelector and the "
           "namespace selectors (kube-prometheus-stack: ...SelectorNilUsesHelmValues=false)")
    return Check(title, users, FAIL, f"Prometheus {label} misses {_users(missed)}", fix)


def _admitted_namespace_rows(wanted: Needs, facts: Facts) -> list[Check]:
    rows = []
    for name, users in sorted(wanted.admitted_namespaces.items()):
        read = facts.namespaces.get(name, Read(error="not read"))
        if read.error:
            rows.append(Check(f"namespace {name}", _users(users), WARN,
                              f"could not read: {read.error}", ""))
        elif read.obj is None:
            rows.append(Check(
                f"namespace {name}", _users(users), FAIL, "not found: the NetworkPolicy "
                "admits a namespace that does not exist",
                "install the operator there, or name its namespace in the policy (for Dask: "
                "k8s/components/dask/networkpolicy.yaml)"))
        else:
            rows.append(Check(f"namespace {name}", _users(users), OK, "exists"))
    return rows


def _address_rows(wanted: Needs, facts: Facts) -> list[Check]:
    rows = []
    for address, users in sorted(wanted.prometheus_addresses.items()):
        title = f"Prometheus at {address}"
        read = facts.services.get(address)
        fix = ("set kubernetes.prometheus_address in configs/canary.yaml to your Prometheus "
               "Service and run `churn canary render` (docs/canary.md#argo-rollouts)")
        if read is None:
            rows.append(Check(title, _users(users), WARN, "outside the cluster: not checked",
                              ""))
        elif read.error:
            rows.append(Check(title, _users(users), WARN, f"could not read: {read.error}", ""))
        elif read.obj is None:
            match = PROMETHEUS_ADDRESS.match(address)
            rows.append(Check(title, _users(users), FAIL,
                              f"no Service {match.group(1)} in namespace {match.group(2)}", fix))
        else:
            rows.append(Check(title, _users(users), OK, "Service exists"))
    return rows


def _secret_rows(wanted: Needs, facts: Facts) -> list[Check]:
    if not wanted.secrets:
        return []
    if facts.secrets.error:
        return [Check("Secrets", _users(sorted(wanted.secrets)), WARN,
                      f"could not read: {facts.secrets.error}", "")]
    present = {s["metadata"]["name"] for s in (facts.secrets.obj or {}).get("items", [])}
    absent = (f" (namespace {wanted.namespace} does not exist yet: apply the overlay's "
              "namespace.yaml first)" if facts.namespace.obj is None and
              not facts.namespace.error else "")
    rows = []
    for name, users in sorted(wanted.secrets.items()):
        optional = name in wanted.optional_secrets
        ok = name in present
        rows.append(Check(
            f"Secret {name}", _users(users), OK if ok else (WARN if optional else FAIL),
            "exists" if ok else "not found" + (" (its CronJob is suspended)" if optional
                                               else "") + absent,
            "" if ok else f"kubectl -n {wanted.namespace} create secret generic {name} "
            "--from-literal=url='...' (docs/kubernetes.md#first-apply)"))
    return rows


def _permission_row(wanted: Needs, facts: Facts) -> Check:
    denied = [f"{verb} {what}" + (f"/{sub}" if sub else "")
              for (verb, what, sub), allowed in sorted(facts.allowed.items())
              if allowed is not True]
    errors = {a for a in facts.allowed.values() if isinstance(a, str)}
    title = "permissions of `churn canary`"
    users = "the canary overlay"
    if not denied:
        return Check(title, users, OK, f"{len(facts.allowed)} allowed (kubectl auth can-i)")
    found = f"denied: {', '.join(denied)}" + (f" ({'; '.join(sorted(errors))})" if errors
                                                else "")
    return Check(title, users, FAIL, found,
                 f"grant them in namespace {wanted.namespace} (a Role and RoleBinding for "
                 "whoever runs churn canary)")


def table(checks: list[Check]) -> str:
    """The rows as a table, then one line per row that is not ok: its fix."""
    headers = ("check", "needed by", "result", "found")
    cells = [(c.name, c.needed_by, c.status, c.found) for c in checks]
    widths = [max(len(h), *(len(row[i]) for row in cells)) for i, h in enumerate(headers[:3])]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers[:3], widths, strict=True))
             + "  " + headers[3]]
    lines += ["  ".join(v.ljust(w) for v, w in zip(row[:3], widths, strict=True)) + "  "
              + row[3] for row in cells]
    failed = [c for c in checks if c.status == FAIL]
    warned = [c for c in checks if c.status == WARN]
    if failed or warned:
        lines += ["", f"{len(failed)} of {len(checks)} checks failed, {len(warned)} "
                  f"warning{'s' if len(warned) != 1 else ''}; to fix:"]
        lines += [f"  {c.status} {c.name}: {c.fix}" for c in failed + warned if c.fix]
    else:
        lines += ["", f"all {len(checks)} checks passed"]
    return "\n".join(lines)


def check(objects: list[dict], kubectl: k.Kubectl, images: bool = False,
          canary_deployment: str = "churn-serve-canary", fallback_namespace: str = "default",
          pull_timeout: float = PULL_TIMEOUT_SECONDS) -> list[Check]:
    """The rows for one rendering's ``objects`` on the cluster ``kubectl`` reaches. Its
    namespace, if set, overrides the one the objects name; the runner is set to the namespace
    used (``kubectl.settings.namespace``)."""
    wanted = needs(objects, kubectl.settings.namespace, canary_deployment, fallback_namespace)
    kubectl.settings = kubectl.settings.model_copy(update={"namespace": wanted.namespace})
    facts = gather(kubectl, wanted, images=images, pull_timeout=pull_timeout)
    return judge(wanted, facts, images=images)
