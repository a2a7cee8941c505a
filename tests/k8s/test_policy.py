"""Policies the rendered manifests must keep, in every overlay (and, for the policies that do not
depend on a component, in every documented overlay + component combination: `renderings`). Each
assertion names the rendering and object, so a regression reads as what broke, not as a diff."""

from __future__ import annotations

import copy
import re
from pathlib import Path

import pytest
import yaml

from tests.k8s.conftest import REPO

pytestmark = pytest.mark.integration  # renders with the kubectl binary

# Volume types the Pod Security "restricted" profile allows.
RESTRICTED_VOLUMES = {"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral",
                      "persistentVolumeClaim", "projected", "secret"}
# Secrets the cluster operator creates (credentials never live in the repository).
EXTERNAL_SECRETS = {"churn-training-data", "churn-labels", "churn-mlflow-db"}
OUR_IMAGES = ("churn-serve:", "churn-jobs:")


def containers(template: dict) -> list[dict]:
    spec = template["spec"]
    return spec.get("initContainers", []) + spec["containers"]


def name_of(overlay: str, owner: dict, container: dict | None = None) -> str:
    where = f"{overlay}: {owner['kind']} {owner['metadata']['name']}"
    return f"{where} container {container['name']}" if container else where


def matches(selector: dict, labels: dict) -> bool:
    """Whether a label selector (matchLabels / matchExpressions) selects ``labels``."""
    if not all(labels.get(k) == v for k, v in selector.get("matchLabels", {}).items()):
        return False
    for expression in selector.get("matchExpressions", []):
        value, values = labels.get(expression["key"]), expression.get("values", [])
        if not {"In": value in values, "NotIn": value not in values,
                "Exists": value is not None, "DoesNotExist": value is None
                }[expression["operator"]]:
            return False
    return True


def service_pods(manifests) -> dict:
    """The service's pod template; under Argo Rollouts (a Rollout, no Deployment) with the
    labels Argo adds to stable pods (stableMetadata)."""
    if not [d for d in manifests.of_kind("Deployment") if d["metadata"]["name"] == "churn-serve"]:
        rollout = manifests.get("Rollout", "churn-serve")
        template = copy.deepcopy(rollout["spec"]["template"])
        stable = rollout["spec"]["strategy"]["canary"]["stableMetadata"]["labels"]
        template["metadata"]["labels"].update(stable)
        return template
    return manifests.get("Deployment", "churn-serve")["spec"]["template"]


def test_every_container_meets_the_restricted_profile_with_a_read_only_root(renderings):
    problems = []
    for overlay, manifests in renderings.items():
        for owner, template in manifests.pod_templates():
            pod = template["spec"]
            pod_context = pod.get("securityContext", {})
            where = name_of(overlay, owner)
            for key in ("hostNetwork", "hostPID", "hostIPC"):
                if pod.get(key):
                    problems.append(f"{where}: {key}")
            for volume in pod.get("volumes", []):
                kind = next(k for k in volume if k != "name")
                if kind not in RESTRICTED_VOLUMES:
                    problems.append(f"{where}: volume {volume['name']} is {kind}")
            for container in containers(template):
                context = {**pod_context, **container.get("securityContext", {})}
                at = name_of(overlay, owner, container)
                if context.get("runAsNonRoot") is not True:
                    problems.append(f"{at}: runAsNonRoot is not true")
                if not isinstance(context.get("runAsUser"), int) or context["runAsUser"] == 0:
                    problems.append(f"{at}: no fixed non-root runAsUser")
                if context.get("seccompProfile", {}).get("type") != "RuntimeDefault":
                    problems.append(f"{at}: seccompProfile is not RuntimeDefault")
                own = container.get("securityContext", {})
                if own.get("allowPrivilegeEscalation") is not False:
                    problems.append(f"{at}: allowPrivilegeEscalation is not false")
                if own.get("privileged"):
                    problems.append(f"{at}: privileged")
                if own.get("capabilities", {}).get("drop") != ["ALL"]:
                    problems.append(f"{at}: capabilities not dropped (drop: [ALL])")
                if set(own.get("capabilities", {}).get("add", [])) - {"NET_BIND_SERVICE"}:
                    problems.append(f"{at}: adds capabilities")
                if own.get("readOnlyRootFilesystem") is not True:
                    problems.append(f"{at}: root filesystem is writable")
                if any("hostPort" in p for p in container.get("ports", [])):
                    problems.append(f"{at}: hostPort")
    assert not problems, "\n".join(problems)


def test_every_container_has_requests_a_memory_limit_and_a_pinned_image(renderings):
    problems = []
    for overlay, manifests in renderings.items():
        for owner, template in manifests.pod_templates():
            for container in containers(template):
                at = name_of(overlay, owner, container)
                resources = container.get("resources", {})
                for key in ("cpu", "memory"):
                    if key not in resources.get("requests", {}):
                        problems.append(f"{at}: no {key} request")
                if "memory" not in resources.get("limits", {}):
                    problems.append(f"{at}: no memory limit")
                image = container["image"]
                tag = image.rpartition(":")[2] if ":" in image.rpartition("/")[2] else ""
                if not tag or tag == "latest":
                    problems.append(f"{at}: image {image} has no pinned tag")
    assert not problems, "\n".join(problems)


def test_our_two_images_are_each_named_once_by_an_images_entry():
    """`kustomize edit set image churn-serve=...` must reach every container of the service."""
    base = yaml.safe_load((REPO / "k8s/base/kustomization.yaml").read_text())
    assert sorted(i["name"] for i in base["images"]) == ["churn-jobs", "churn-serve"]


def test_service_image_runs_in_service_pods_and_jobs_image_in_job_pods(renderings):
    for overlay, manifests in renderings.items():
        for owner, template in manifests.pod_templates():
            images = {c["image"] for c in containers(template)}
            if owner["kind"] in {"Deployment", "Rollout"} and owner["metadata"]["name"] == \
                    "churn-serve":
                assert all(i.startswith("churn-serve:") for i in images), (overlay, images)
            if owner["kind"] == "CronJob":
                assert all(i.startswith("churn-jobs:") for i in images), (overlay, images)


def test_the_service_selects_the_service_pods_and_no_other_pod(rendered):
    for overlay, manifests in rendered.items():
        service = manifests.get("Service", "churn-serve")
        selector = {"matchLabels": service["spec"]["selector"]}
        assert "track" not in service["spec"]["selector"], "a canary gets traffic by pod count"
        for owner, template in manifests.pod_templates():
            selected = matches(selector, template["metadata"].get("labels", {}))
            is_service = owner["kind"] in {"Deployment", "Rollout"} and owner["metadata"][
                "name"].startswith("churn-serve")
            assert selected == is_service, f"{name_of(overlay, owner)}: selected={selected}"
        ports = {p["name"] for p in service_pods(manifests)["spec"]["containers"][0]["ports"]}
        assert {p["targetPort"] for p in service["spec"]["ports"]} <= ports


def test_job_pods_never_carry_the_service_selector_label(renderings):
    for overlay, manifests in renderings.items():
        for cronjob in manifests.of_kind("CronJob"):
            labels = cronjob["spec"]["jobTemplate"]["spec"]["template"]["metadata"]["labels"]
            assert "app" not in labels and "track" not in labels, (overlay, labels)


def test_hpa_and_pdb_target_the_stable_service_deployment(rendered):
    prod = rendered["prod"]
    hpa = prod.get("HorizontalPodAutoscaler", "churn-serve")
    target = hpa["spec"]["scaleTargetRef"]
    deployment = prod.get(target["kind"], target["name"])
    assert target["apiVersion"] == deployment["apiVersion"]
    assert "replicas" not in deployment["spec"], "the HPA owns the replica count"
    assert hpa["spec"]["behavior"]["scaleDown"]["stabilizationWindowSeconds"] >= 60
    assert [m["resource"]["name"] for m in hpa["spec"]["metrics"]] == ["cpu"]
    assert hpa["spec"]["minReplicas"] >= 2, "one pod cannot be drained without an outage"
    pdb = prod.get("PodDisruptionBudget", "churn-serve")
    for owner, template in prod.pod_templates():
        selected = matches(pdb["spec"]["selector"], template["metadata"]["labels"])
        assert selected == (owner is deployment), name_of("prod", owner)
    spread = deployment["spec"]["template"]["spec"]["topologySpreadConstraints"]
    assert {c["topologyKey"] for c in spread} >= {"kubernetes.io/hostname"}
    for overlay, manifests in rendered.items():
        for kind in ("HorizontalPodAutoscaler", "PodDisruptionBudget"):
            for obj in manifests.of_kind(kind):
                ref = obj["spec"].get("scaleTargetRef")
                if ref:
                    manifests.get(ref["kind"], ref["name"])
                else:
                    assert any(matches(obj["spec"]["selector"], t["metadata"]["labels"])
                               for _, t in manifests.pod_templates()), (overlay, obj)


def test_every_reference_resolves_to_an_object_or_an_operator_secret(renderings):
    problems = []
    for overlay, manifests in renderings.items():
        names = {(o["kind"], o["metadata"]["name"]) for o in manifests.objects}
        claims = {n for k, n in names if k == "PersistentVolumeClaim"}
        for owner, template in manifests.pod_templates():
            pod = template["spec"]
            owned_claims = {t["metadata"]["name"]
                            for t in owner["spec"].get("volumeClaimTemplates", [])}
            refs = []
            for volume in pod.get("volumes", []):
                if "configMap" in volume:
                    refs.append(("ConfigMap", volume["configMap"]["name"]))
                if "secret" in volume:
                    refs.append(("Secret", volume["secret"]["secretName"]))
                if "persistentVolumeClaim" in volume:
                    claim = volume["persistentVolumeClaim"]["claimName"]
                    if claim not in claims:
                        problems.append(f"{name_of(overlay, owner)}: no PVC {claim}")
            for container in containers(template):
                mounted = {v["name"] for v in pod.get("volumes", [])} | owned_claims
                for mount in container.get("volumeMounts", []):
                    if mount["name"] not in mounted:
                        problems.append(f"{name_of(overlay, owner, container)}: mounts "
                                        f"undefined volume {mount['name']}")
                for env in container.get("env", []):
                    source = env.get("valueFrom", {})
                    if "configMapKeyRef" in source:
                        refs.append(("ConfigMap", source["configMapKeyRef"]["name"],
                                     source["configMapKeyRef"]["key"]))
                    if "secretKeyRef" in source:
                        refs.append(("Secret", source["secretKeyRef"]["name"],
                                     source["secretKeyRef"]["key"]))
            for kind, name, *key in refs:
                if (kind, name) not in names:
                    if not (kind == "Secret" and name in EXTERNAL_SECRETS):
                        problems.append(f"{name_of(overlay, owner)}: no {kind} {name}")
                    continue
                if key:
                    obj = manifests.get(kind, name)
                    if key[0] not in {**obj.get("data", {}), **obj.get("stringData", {})}:
                        problems.append(f"{name_of(overlay, owner)}: {kind} {name} has no "
                                        f"key {key[0]}")
    assert not problems, "\n".join(problems)


def test_the_job_configs_in_the_configmap_equal_configs(rendered):
    for overlay, manifests in rendered.items():
        data = manifests.generated("ConfigMap", "churn-config")["data"]
        assert set(data) == {"service.yaml", "monitoring.yaml", "train.yaml", "canary.yaml",
                             "judge.yaml", "lifecycle.yaml",
                             "streaming_churn.contract.yaml"}, overlay
        for name, text in data.items():
            assert text == (REPO / "configs" / name).read_text(), f"{overlay}: {name}"


def test_the_prometheusrule_equals_rules_yml(rendered):
    rules = yaml.safe_load((REPO / "monitoring/prometheus/rules.yml").read_text())
    for overlay, manifests in rendered.items():
        rule = manifests.get("PrometheusRule", "churn-serve")
        assert rule["spec"] == {"groups": rules["groups"]}, overlay


def test_the_dashboard_configmaps_equal_grafana_dashboards(rendered):
    sources = {p.name: p.read_text() for p in (REPO / "grafana/dashboards").glob("*.json")}
    for overlay, manifests in rendered.items():
        dashboards = {}
        for config_map in manifests.of_kind("ConfigMap"):
            if config_map["metadata"].get("labels", {}).get("grafana_dashboard") == "1":
                dashboards.update(config_map["data"])
        assert dashboards == sources, f"{overlay}: {sorted(dashboards)} vs {sorted(sources)}"


def cron_interval_seconds(schedule: str) -> int:
    """Seconds between runs of the regular schedules used here (every N minutes or hours)."""
    minute, hour, day, month, weekday = schedule.split()
    assert (day, month, weekday) == ("*", "*", "*"), f"not a sub-daily schedule: {schedule}"
    if re.fullmatch(r"\*/\d+", minute) and hour == "*":
        return 60 * int(minute[2:])
    if minute.isdigit() and hour == "*":
        return 3600
    if minute.isdigit() and re.fullmatch(r"\*/\d+", hour):
        return 3600 * int(hour[2:])
    raise AssertionError(f"cannot tell the interval of {schedule!r}")


def test_the_drift_schedule_and_the_stale_alert_agree(rendered):
    """ChurnDriftJobStale fires after two missed runs of the drift CronJob."""
    rules = yaml.safe_load((REPO / "monitoring/prometheus/rules.yml").read_text())
    stale = [r for g in rules["groups"] for r in g["rules"]
             if r.get("alert") == "ChurnDriftJobStale" and "time()" in r["expr"]]
    threshold = int(re.search(r">\s*(\d+)", stale[0]["expr"]).group(1))
    for overlay, manifests in rendered.items():
        drift = manifests.get("CronJob", "churn-drift")
        assert not drift["spec"].get("suspend"), overlay
        assert threshold == 2 * cron_interval_seconds(drift["spec"]["schedule"]), overlay


def test_cron_interval_reads_the_schedules_it_claims_to():
    assert cron_interval_seconds("0 * * * *") == 3600
    assert cron_interval_seconds("*/30 * * * *") == 1800
    assert cron_interval_seconds("15 */2 * * *") == 7200
    with pytest.raises(AssertionError):
        cron_interval_seconds("0 3 * * *")


def test_every_cronjob_runs_alone_with_deadlines_and_bounded_history(renderings):
    for overlay, manifests in renderings.items():
        for cronjob in manifests.of_kind("CronJob"):
            spec, job = cronjob["spec"], cronjob["spec"]["jobTemplate"]["spec"]
            at = name_of(overlay, cronjob)
            assert spec["concurrencyPolicy"] == "Forbid", at
            assert 0 < spec["successfulJobsHistoryLimit"] <= 5, at
            assert 0 < spec["failedJobsHistoryLimit"] <= 5, at
            assert job["activeDeadlineSeconds"] > 0 and "backoffLimit" in job, at
            assert job["template"]["spec"]["restartPolicy"] == "Never", at


def test_every_pod_and_job_names_its_model_from_the_one_configmap(rendered):
    for overlay, manifests in rendered.items():
        tag = manifests.generated("ConfigMap", "churn-model")["data"]["CHURN_MODEL_TAG"]
        name, _, version = tag.partition(":")
        assert name and version, f"{overlay}: CHURN_MODEL_TAG {tag!r} is not name:version"
        for owner, template in manifests.pod_templates():
            for container in containers(template):
                env = {e["name"]: e for e in container.get("env", [])}
                if owner["kind"] == "CronJob" or owner["metadata"]["name"] == "churn-serve":
                    ref = env["CHURN_MODEL_TAG"]["valueFrom"]["configMapKeyRef"]
                    assert ref["name"].startswith("churn-model-"), name_of(overlay, owner)
        labels = service_pods(manifests)["metadata"]["labels"]
        assert labels["model_version"] == version, overlay


def test_the_service_monitor_scrapes_the_service_as_the_rules_expect(rendered):
    rules_text = (REPO / "monitoring/prometheus/rules.yml").read_text()
    job = re.search(r'up\{job="([^"]+)"\}', rules_text).group(1)
    for overlay, manifests in rendered.items():
        monitor = manifests.get("ServiceMonitor", "churn-serve")
        service = manifests.get("Service", "churn-serve")
        assert matches(monitor["spec"]["selector"], service["metadata"]["labels"]), overlay
        endpoint = monitor["spec"]["endpoints"][0]
        assert endpoint["port"] in {p["name"] for p in service["spec"]["ports"]}
        assert {"targetLabel": "job", "replacement": job} in endpoint["relabelings"]
        pod_labels = service_pods(manifests)["metadata"]["labels"]
        assert set(monitor["spec"]["podTargetLabels"]) == {"track", "model_version"}
        # ... without overriding the version the service itself reports on its churn_* series.
        assert all(e.get("honorLabels") for e in monitor["spec"]["endpoints"])
        assert set(monitor["spec"]["podTargetLabels"]) <= set(pod_labels), overlay
        gateway = manifests.get("ServiceMonitor", "churn-pushgateway")
        assert gateway["spec"]["endpoints"][0]["honorLabels"] is True
        assert matches(gateway["spec"]["selector"],
                       manifests.get("Service", "churn-pushgateway")["metadata"]["labels"])


def test_the_release_label_is_one_value_on_every_prometheus_operator_object(rendered):
    for overlay, manifests in rendered.items():
        releases = {o["metadata"]["labels"].get("release") for o in manifests.objects
                    if o["kind"] in {"ServiceMonitor", "PrometheusRule", "PodMonitor"}}
        assert len(releases) == 1 and None not in releases, (overlay, releases)


def test_only_clients_and_prometheus_reach_the_service(rendered):
    for overlay, manifests in rendered.items():
        policy = manifests.get("NetworkPolicy", "churn-serve")
        assert matches(policy["spec"]["podSelector"], service_pods(manifests)["metadata"][
            "labels"])
        peers = [peer for rule in policy["spec"]["ingress"] for peer in rule["from"]]
        assert [p["podSelector"]["matchLabels"] for p in peers] == [
            {"churn-serve/client": "true"}, {"app.kubernetes.io/name": "prometheus"}]
        jobs = manifests.get("NetworkPolicy", "churn-jobs")
        for cronjob in manifests.of_kind("CronJob"):
            labels = cronjob["spec"]["jobTemplate"]["spec"]["template"]["metadata"]["labels"]
            assert matches(jobs["spec"]["podSelector"], labels), (overlay, cronjob)
        ports = {p["port"] for rule in jobs["spec"]["egress"] for p in rule["ports"]}
        assert ports == {53, 9091, 5000}, overlay  # outside the namespace: churn-jobs-egress


def test_volumes_are_shared_in_prod_and_the_service_cannot_write_models(rendered):
    for overlay, manifests in rendered.items():
        modes = {c["metadata"]["name"]: c["spec"]["accessModes"]
                 for c in manifests.of_kind("PersistentVolumeClaim")}
        shared = ["churn-inference-log", "churn-model-store", "churn-reports"]
        expected = ["ReadWriteMany"] if overlay == "prod" else ["ReadWriteOnce"]
        if overlay in {"dev", "prod"}:
            assert all(modes[name] == expected for name in shared), (overlay, modes)
        mounts = {m["mountPath"]: m for m in service_pods(manifests)["spec"]["containers"][0][
            "volumeMounts"]}
        assert mounts["/var/lib/churn/bentoml"].get("readOnly") is True, overlay
        retrain = manifests.get("CronJob", "churn-retrain")["spec"]["jobTemplate"]["spec"][
            "template"]["spec"]["containers"][0]
        retrain_mounts = {m["mountPath"]: m for m in retrain["volumeMounts"]}
        assert not retrain_mounts["/var/lib/churn/bentoml"].get("readOnly"), overlay


def test_shutdown_leaves_time_for_endpoints_to_drop_and_the_log_to_drain(rendered):
    for overlay, manifests in rendered.items():
        pod = service_pods(manifests)["spec"]
        container = pod["containers"][0]
        pause = container["lifecycle"]["preStop"]["sleep"]["seconds"]
        assert pause >= 5, overlay
        assert pod["terminationGracePeriodSeconds"] >= pause + 20, overlay


def test_probes_use_the_service_routes_for_their_purpose(rendered):
    """Start-up ends when the model is loaded (/readyz), readiness is /readyz, liveness /livez;
    tests/k8s/test_service_pod.py checks that the real service answers each of them."""
    for overlay, manifests in rendered.items():
        container = service_pods(manifests)["spec"]["containers"][0]
        ports = {p["name"] for p in container["ports"]}
        paths = {}
        for kind in ("startupProbe", "readinessProbe", "livenessProbe"):
            assert container[kind]["httpGet"]["port"] in ports, (overlay, kind)
            paths[kind] = container[kind]["httpGet"]["path"]
        assert paths == {"startupProbe": "/readyz", "readinessProbe": "/readyz",
                         "livenessProbe": "/livez"}, overlay


def test_k8s_paths_in_docs_exist():
    """docs/kubernetes.md names files a reader will open: they must exist."""
    text = (REPO / "docs/kubernetes.md").read_text()
    for path in sorted(set(re.findall(r"`(k8s/[\w./-]+)`", text))):
        assert (REPO / Path(path)).exists(), path


def test_every_workload_selects_its_own_pods(renderings):
    """A selector that misses its template is rejected by the API server, not by the schema."""
    for overlay, manifests in renderings.items():
        for owner, template in manifests.pod_templates():
            if owner["kind"] in {"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet",
                                 "Rollout"}:
                assert matches(owner["spec"]["selector"], template["metadata"]["labels"]), \
                    name_of(overlay, owner)
        for service in manifests.of_kind("Service"):
            selector = {"matchLabels": service["spec"]["selector"]}
            assert any(matches(selector, t["metadata"]["labels"])
                       for _, t in manifests.pod_templates()), name_of(overlay, service)
