"""The service Deployment's container, run as its pod would run it (without the container: the
image itself is tested where podman builds it): the rendered command, env and config volume,
the model named by CHURN_MODEL_TAG from the store volume, the probe and scrape paths answered
by the real service, the start-up and shutdown budgets. Stand-ins, each because the real one
cannot exist here: the repository for the Bento's source folder, loopback and a free port for
the pod's address, local folders for the volumes."""

from __future__ import annotations

import os
import signal
import time

import httpx
import psutil
import pytest

from kernel.inference_log import read_inference_log
from kernel.processes import free_port, http_ok, start_process
from tests.k8s.conftest import REPO
from tests.servers import request_bodies

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]
POD_NAME = "churn-serve-7d9c-x2k4p"


def test_the_rendered_service_container_serves_its_pinned_model_and_stops_cleanly(
    rendered, trained_entry, tmp_path
):
    manifests = rendered["prod"]
    pod = manifests.get("Deployment", "churn-serve")["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["workingDir"] == "/home/bentoml/bento/src"  # the Bento's copy of the repo

    port = free_port()
    # The pod's file system under one folder, so nested mounts nest here too; the store volume
    # is the session's model store (read-only in the pod, only read here).
    root = tmp_path / "pod"

    def local(value: str) -> str:
        return str(root) + value if value.startswith(("/var/lib/churn", "/etc/churn",
                                                      "/tmp")) else value

    for mount in container["volumeMounts"]:
        path = root / mount["mountPath"].lstrip("/")
        path.parent.mkdir(parents=True, exist_ok=True)
        if mount["name"] == "model-store":
            path.symlink_to(os.environ["BENTOML_HOME"])
        else:
            path.mkdir(exist_ok=True)
    config = root / "etc/churn"
    for name, text in manifests.generated("ConfigMap", "churn-config")["data"].items():
        (config / name).write_text(text)

    env = {}
    for item in container["env"]:
        if "value" in item:
            env[item["name"]] = local(item["value"])
        elif "fieldRef" in item["valueFrom"]:
            env[item["name"]] = POD_NAME
        else:
            ref = item["valueFrom"]["configMapKeyRef"]
            env[item["name"]] = manifests.get("ConfigMap", ref["name"])["data"][ref["key"]]
    env["CHURN_MODEL_TAG"] = trained_entry.tag  # the version this cluster would pin
    command = list(container["command"])
    command[command.index("--port") + 1] = str(port)
    command[command.index("--host") + 1] = "127.0.0.1"
    command[0] = str(REPO / ".venv" / "bin" / command[0])

    startup = container["startupProbe"]
    budget = startup["periodSeconds"] * startup["failureThreshold"]
    url = f"http://127.0.0.1:{port}"
    started = time.monotonic()
    server = start_process(
        command, name="service pod", log_path=tmp_path / "pod.log", cwd=REPO,
        env={"PATH": os.environ["PATH"], "HOME": str(tmp_path), "LANG": "C.UTF-8", **env},
        ready=lambda: http_ok(url + startup["httpGet"]["path"]), timeout=budget)
    with server:
        print(f"ready after {time.monotonic() - started:.1f} s (budget {budget} s)")
        ready = httpx.get(url + container["readinessProbe"]["httpGet"]["path"]).json()
        assert ready["model_tag"] == trained_entry.tag
        assert "$CHURN_MODEL_TAG" in ready["resolved_by"]
        assert httpx.get(url + container["livenessProbe"]["httpGet"]["path"]).status_code == 200
        assert httpx.get(url + "/readyz-typo").status_code == 404  # the probe checks can fail
        scrape = manifests.get("ServiceMonitor", "churn-serve")["spec"]["endpoints"][0]["path"]
        metrics = httpx.get(url + scrape)
        assert metrics.status_code == 200 and "churn_model_info{" in metrics.text
        workers = [p for p in psutil.Process(server.pid).children(recursive=True)
                   if "_bentoml_impl.worker.service" in " ".join(p.cmdline())]
        assert len(workers) == 1, "one worker per pod (BENTOML_CONFIG_OPTIONS)"
        bodies = request_bodies(trained_entry, 30, prefix="K")
        with httpx.Client(base_url=url, timeout=30) as client:
            for body in bodies:
                assert client.post("/predict", json=body).status_code == 200

        grace = pod["terminationGracePeriodSeconds"]
        pause = container["lifecycle"]["preStop"]["sleep"]["seconds"]
        stopping = time.monotonic()
        server.send_signal(signal.SIGTERM)  # what the kubelet sends after the preStop pause
        server.popen.wait(grace - pause)
        print(f"stopped {time.monotonic() - stopping:.1f} s after SIGTERM "
              f"(budget {grace - pause} s)")

    records = read_inference_log(root / "var/lib/churn/inference_log")
    assert sorted(records["customer_id"]) == sorted(b["customer_id"] for b in bodies)
