"""The real images, built by k8s/image/build.sh (the service: `bentoml containerize --backend
podman` of the Bento; the jobs: the project with the `churn` CLI) and run the way their pods
run them: the pod specs are taken from the rendered dev overlay (`kubectl kustomize
k8s/overlays/dev`: the Deployment `churn-serve` and the CronJob `churn-drift`), so UID 1034,
every capability dropped, no privilege escalation, read-only root, writable mounts only where
listed, the same command, env and config are the manifests' own, against a model-store volume
holding a model the image was not built with.

One build per session (the base image and podman's layer cache are reused) and one service
container run per module; the tests below each check one property of that run.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from kernel.processes import free_port
from tests.monitoring.conftest import pushed_samples, pushgateway  # noqa: F401 (fixture)
from tests.servers import REPO, frame_of, request_bodies

# The first session on a fresh machine builds the base image and installs the image's
# packages (minutes); later sessions reuse both.
pytestmark = [pytest.mark.integration, pytest.mark.timeout(1800)]

IMAGE_DIR = REPO / "k8s" / "image"
DEV_OVERLAY = REPO / "k8s" / "overlays" / "dev"
TEST_IMAGES = {"IMAGE": "localhost/churn-serve-test", "JOBS_IMAGE": "localhost/churn-jobs-test"}
SINGLE_REQUESTS = 20
BATCH_ROWS = 480
STOP_GRACE_SECONDS = 30


def podman(*args: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess:
    """podman with the project's containers.conf (runc; crun fails on this machine type)."""
    env = {**os.environ, "CONTAINERS_CONF": str(IMAGE_DIR / "containers.conf")}
    done = subprocess.run(["podman", *args], env=env, capture_output=True, text=True,
                          timeout=timeout)
    if check and done.returncode != 0:
        raise AssertionError(f"podman {' '.join(args[:3])}... failed: {done.stderr[-2000:]}")
    return done


def rendered_pod(kind: str, name: str) -> dict:
    """The pod spec of a Deployment or CronJob of the rendered dev overlay, with the pod's
    labels under ``metadata`` (the downward API reads them)."""
    from tests.k8s.conftest import render

    (owner,) = [o for o in render(DEV_OVERLAY)
                if o["kind"] == kind and o["metadata"]["name"] == name]
    template = (owner["spec"]["jobTemplate"]["spec"]["template"] if kind == "CronJob"
                else owner["spec"]["template"])
    return {**template["spec"], "metadata": template.get("metadata", {})}


def _size(limit: str) -> str:
    return limit.replace("Gi", "g").replace("Mi", "m")


def podman_run_args(pod: dict, image: str, name: str, volumes: dict[str, Path],
                    env_from: dict[str, str], options: dict[str, str]) -> list[str]:
    """`podman run` arguments that reproduce the pod spec's container: its user, security
    context, command, working folder, env and mounts. ``volumes`` gives the host folder of each
    non-emptyDir volume; an emptyDir becomes a tmpfs of its size limit; ``options`` replaces
    the values of command-line options (a free port, the test's Pushgateway). A setting this
    function does not know fails the test rather than being skipped silently."""
    (container,) = pod["containers"]
    pod_security, security = pod["securityContext"], container["securityContext"]
    assert pod_security["runAsNonRoot"] and security["capabilities"]["drop"] == ["ALL"]
    assert security["allowPrivilegeEscalation"] is False
    assert pod_security["seccompProfile"]["type"] == "RuntimeDefault"  # podman's default too
    args = ["run", "--detach", "--name", name, "--network", "host",
            "--user", f"{pod_security['runAsUser']}:{pod_security['runAsGroup']}",
            "--group-add", str(pod_security["fsGroup"]),
            "--cap-drop", "ALL", "--security-opt", "no-new-privileges"]
    if security["readOnlyRootFilesystem"]:
        # podman would mount writable /tmp, /var/tmp and /run by itself; a pod gets none.
        args += ["--read-only", "--read-only-tmpfs=false"]
    sources = {v["name"]: v for v in pod["volumes"]}
    for mount in container["volumeMounts"]:
        source = sources[mount["name"]]
        if "emptyDir" in source:
            size = _size(source["emptyDir"]["sizeLimit"])
            args += ["--tmpfs", f"{mount['mountPath']}:rw,mode=1777,size={size}"]
        else:
            mode = "ro" if mount.get("readOnly") else "rw"
            args += ["--volume", f"{volumes[mount['name']]}:{mount['mountPath']}:{mode}"]
    for variable in container["env"]:
        source = variable.get("valueFrom", {})
        if "value" in variable:
            value = variable["value"]
        elif source.get("fieldRef", {}).get("fieldPath") == "metadata.name":
            value = name  # the downward API's pod name
        elif (path := source.get("fieldRef", {}).get("fieldPath", "")).startswith(
                "metadata.labels['"):
            value = pod["metadata"]["labels"][path.removeprefix("metadata.labels['")
                                              .removesuffix("']")]
        elif variable["name"] not in env_from and any(
                ref.get("optional") for ref in source.values() if isinstance(ref, dict)):
            continue  # an optional key that is absent: Kubernetes sets nothing
        else:
            value = env_from[variable["name"]]  # a ConfigMap or Secret key: the test's value
        args += ["--env", f"{variable['name']}={value}"]
    command = list(container["command"])
    for option, value in options.items():
        command[command.index(option) + 1] = value
    if "workingDir" in container:
        args += ["--workdir", container["workingDir"]]
    return [*args, "--entrypoint", json.dumps(command), image]


@dataclass(frozen=True)
class Images:
    service: str
    jobs: str


@pytest.fixture(scope="session")
def images(trained_entry) -> Images:
    """Both images, from a Bento of the session's champion (tagged <name>:<bento version>)."""
    if shutil.which("podman") is None:
        pytest.fail("podman is not installed: make image-deps")
    if os.geteuid() != 0:
        pytest.fail("the image tests run rootful podman and chown the pod's volumes: run as root")
    started = time.perf_counter()
    built = subprocess.run([str(IMAGE_DIR / "build.sh")], cwd=REPO, capture_output=True,
                           text=True, timeout=1700, env={**os.environ, **TEST_IMAGES})
    assert built.returncode == 0, built.stderr[-4000:]
    service, jobs = built.stdout.strip().splitlines()[-2:]
    sys.stderr.write(f"\n[image] {service} and {jobs} built in "
                     f"{time.perf_counter() - started:.0f} s\n")
    yield Images(service, jobs)
    for image in (service, jobs):  # the version tags only: layers stay cached
        podman("rmi", image, check=False)


# Registers a copy of a model under a new version, as the retrain Job registers a challenger
# into the model-store volume (its own process: BentoML reads BENTOML_HOME once, at import).
REGISTER_COPY = """
import sys
from kernel.store import load_entry, save_entry
entry = load_entry(sys.argv[1])
print(save_entry(entry.model, entry.contract, entry.metadata, entry.reference, "challenger").tag)
"""


@dataclass
class PodRun:
    """What one run of the image as a pod did and left behind."""

    model_tag: str
    store: Path
    log_dir: Path
    ready: dict
    bodies: list[dict]
    single_answers: list[dict]
    batch_answer: dict
    metrics: str
    workers: int
    tmp_kib: int
    stop_seconds: float
    exit_code: int
    output: str
    sent_request_ids: list[str] = field(default_factory=list)

    @property
    def records(self) -> list[dict]:
        from kernel.inference_log import read_inference_log

        return read_inference_log(self.log_dir).to_dict("records")


def _chown_tree(root: Path, uid: int, gid: int) -> None:
    """The pod's volumes belong to its user (the retrain Job writes the store as it)."""
    for path in [root, *root.rglob("*")]:
        os.chown(path, uid, gid, follow_symlinks=False)


@pytest.fixture(scope="module")
def pod_run(images, trained_entry, tmp_path_factory) -> PodRun:
    pod = rendered_pod("Deployment", "churn-serve")
    uid, gid = pod["securityContext"]["runAsUser"], pod["securityContext"]["runAsGroup"]
    tmp = tmp_path_factory.mktemp("pod")
    store, log_dir, config = tmp / "model-store", tmp / "inference-log", tmp / "config"
    shutil.copytree(Path(os.environ["BENTOML_HOME"]) / "models", store / "models")
    registered = subprocess.run(
        [sys.executable, "-c", REGISTER_COPY, trained_entry.tag], cwd=REPO, text=True,
        capture_output=True, timeout=300, env={**os.environ, "BENTOML_HOME": str(store)})
    assert registered.returncode == 0, registered.stderr[-2000:]
    model_tag = registered.stdout.strip().splitlines()[-1]
    assert model_tag != trained_entry.tag  # so only the volume has it, not the image
    log_dir.mkdir()
    _chown_tree(store, uid, gid)
    _chown_tree(log_dir, uid, gid)
    config.mkdir(mode=0o755)
    shutil.copy(REPO / "configs" / "service.yaml", config / "service.yaml")  # the ConfigMap
    config.chmod(0o755)

    name = f"churn-pod-test-{os.getpid()}"
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    podman(*podman_run_args(pod, images.service, name,
                            {"model-store": store, "inference-log": log_dir, "config": config},
                            {"CHURN_MODEL_TAG": model_tag}, {"--port": str(port)}))
    try:
        ready = _wait_ready(name, url, timeout=300)
        bodies = request_bodies(trained_entry, SINGLE_REQUESTS + BATCH_ROWS, prefix="P")
        with httpx.Client(base_url=url, timeout=60) as client:
            single = [client.post("/predict", json=b, headers={"X-Request-ID": f"single-{i}"})
                      for i, b in enumerate(bodies[:SINGLE_REQUESTS])]
            batch = client.post("/predict_batch", json={"customers": bodies[SINGLE_REQUESTS:]},
                                headers={"X-Request-ID": "batch-0"})
            metrics = client.get("/metrics").text
        tmp_kib = int(podman("exec", name, "du", "-sk", "/tmp").stdout.split()[0])
        # Worker processes ([_] keeps this command's own command line from matching).
        workers = int(podman("exec", name, "sh", "-c", "grep -l '[_]bentoml_impl.worker.service'"
                             " /proc/[0-9]*/cmdline | wc -l").stdout)
        # SIGTERM right after the last answer, while the records still wait in the writer's
        # queue (flushed every flush_seconds): a pod's deletion does the same after preStop.
        started = time.perf_counter()
        podman("stop", "--time", str(STOP_GRACE_SECONDS), name, timeout=STOP_GRACE_SECONDS + 60)
        stop_seconds = time.perf_counter() - started
        exit_code = int(podman("inspect", "--format", "{{.State.ExitCode}}", name).stdout)
        output = podman("logs", name).stdout + podman("logs", name).stderr
    finally:
        podman("rm", "--force", name, check=False)
    for response in [*single, batch]:
        assert response.status_code == 200, response.text
    return PodRun(model_tag=model_tag, store=store, log_dir=log_dir, ready=ready, bodies=bodies,
                  single_answers=[r.json() for r in single], batch_answer=batch.json(),
                  metrics=metrics, workers=workers, tmp_kib=tmp_kib, stop_seconds=stop_seconds,
                  exit_code=exit_code, output=output,
                  sent_request_ids=[f"single-{i}" for i in range(SINGLE_REQUESTS)]
                  + ["batch-0"] * BATCH_ROWS)


def _wait_ready(name: str, url: str, timeout: float) -> dict:
    """/readyz's answer once it is 200; fails with the container's output if it exits."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = podman("inspect", "--format", "{{.State.Running}}", name).stdout.strip()
        if state != "true":
            logs = podman("logs", name, check=False)
            pytest.fail(f"exited before ready:\n{(logs.stdout + logs.stderr)[-3000:]}")
        try:
            response = httpx.get(f"{url}/readyz", timeout=2)
            if response.status_code == 200:
                return response.json()
        except httpx.HTTPError:
            pass
        time.sleep(1)
    logs = podman("logs", name, check=False)
    pytest.fail(f"not ready after {timeout:.0f} s:\n{(logs.stdout + logs.stderr)[-3000:]}")


def test_the_image_carries_the_state_folder_and_the_pods_user(images) -> None:
    """bentofile.yaml's envs reach the image (docker.env never did), and the pod's UID is the
    image's user, which owns the state folder the volumes are mounted into."""
    config = json.loads(podman("image", "inspect", images.service).stdout)[0]["Config"]
    assert "CHURN_HOME=/var/lib/churn" in config["Env"]
    pod = rendered_pod("Deployment", "churn-serve")
    owner = podman("run", "--rm", "--entrypoint", "stat", images.service, "-c", "%u:%g %U",
                   "/var/lib/churn", "/var/lib/churn/inference_log").stdout.split("\n")
    expected = f"{pod['securityContext']['runAsUser']}:{pod['securityContext']['runAsGroup']}"
    assert [line.split()[0] for line in owner if line] == [expected, expected]


def test_the_pod_serves_the_model_its_tag_names_from_the_volume(pod_run) -> None:
    assert pod_run.ready["status"] == "ready"
    assert pod_run.ready["model_tag"] == pod_run.model_tag
    assert pod_run.ready["model_version"] == pod_run.model_tag.split(":")[1]
    assert "CHURN_MODEL_TAG" in pod_run.ready["resolved_by"]
    # /metrics works with a read-only root: BentoML's multiprocess files live in /tmp.
    info = [s for family in text_string_to_metric_families(pod_run.metrics)
            for s in family.samples if s.name == "churn_model_info"]
    assert [s.labels["model_tag"] for s in info] == [pod_run.model_tag]


def test_the_pod_runs_one_worker(pod_run) -> None:
    """The pod shape (docs/kubernetes-image.md): one worker per pod, more pods."""
    assert pod_run.workers == 1


def test_the_pods_predictions_equal_the_models(pod_run, trained_entry) -> None:
    expected = trained_entry.model.predict_proba(frame_of(pod_run.bodies,
                                                          trained_entry.contract))
    answers = pod_run.single_answers + pod_run.batch_answer["predictions"]
    assert [a["customer_id"] for a in answers] == [b["customer_id"] for b in pod_run.bodies]
    assert [a["churn_probability"] for a in answers] == pytest.approx(list(expected), abs=1e-12)
    assert {a["model_version"] for a in answers} == {pod_run.model_tag.split(":")[1]}


def test_sigterm_loses_no_inference_record(pod_run) -> None:
    """Every prediction is in the log volume after `podman stop` (SIGTERM), and the server
    exited by itself well before the grace period (no SIGKILL)."""
    records = pod_run.records
    assert sorted(r["request_id"] for r in records) == sorted(pod_run.sent_request_ids)
    assert {r["model_tag"] for r in records} == {pod_run.model_tag}
    assert sorted(r["customer_id"] for r in records) == sorted(
        b["customer_id"] for b in pod_run.bodies)
    assert pod_run.stop_seconds < STOP_GRACE_SECONDS - 5, pod_run.output[-3000:]
    assert pod_run.exit_code == 0, pod_run.output[-3000:]


def test_only_the_listed_mounts_are_written(pod_run) -> None:
    """Nothing failed for want of a writable path, and /tmp stays far below its size limit."""
    assert "Read-only file system" not in pod_run.output
    pod = rendered_pod("Deployment", "churn-serve")
    (tmp,) = [v for v in pod["volumes"] if v["name"] == "tmp"]
    limit_kib = int(tmp["emptyDir"]["sizeLimit"].removesuffix("Mi")) * 1024
    assert pod_run.tmp_kib < limit_kib / 16, pod_run.tmp_kib


def test_the_drift_job_reads_the_pods_log(pod_run, images, pushgateway, tmp_path) -> None:  # noqa: F811
    """The drift CronJob's container (jobs image, its pod's settings) over the service pod's
    log volume and the model-store volume: every logged prediction is current data, the
    report lands in the reports volume and the gauges on the Pushgateway."""
    job = rendered_pod("CronJob", "churn-drift")
    uid, gid = job["securityContext"]["runAsUser"], job["securityContext"]["runAsGroup"]
    reports, config = tmp_path / "reports", tmp_path / "config"
    reports.mkdir()
    os.chown(reports, uid, gid)
    config.mkdir()
    shutil.copy(REPO / "configs" / "monitoring.yaml", config / "monitoring.yaml")  # ConfigMap
    config.chmod(0o755)
    name = f"churn-drift-test-{os.getpid()}"
    args = podman_run_args(job, images.jobs, name,
                           {"model-store": pod_run.store, "inference-log": pod_run.log_dir,
                            "reports": reports, "config": config},
                           {"CHURN_MODEL_TAG": pod_run.model_tag,
                            "CHURN_PUSHGATEWAY_URL": pushgateway},
                           {"--pushgateway": pushgateway})
    try:
        podman(*args)
        code = int(podman("wait", name, timeout=600).stdout.strip())
        logs = podman("logs", name)
    finally:
        podman("rm", "--force", name, check=False)
    assert code == 0, logs.stdout + logs.stderr
    version = pod_run.model_tag.split(":")[1]
    rows = [value for labels, value in pushed_samples(pushgateway, "churn_drift_current_rows")
            if labels.get("model_version") == version]
    assert rows == [SINGLE_REQUESTS + BATCH_ROWS]
    assert list(reports.glob(f"drift-{version}-*.json"))
