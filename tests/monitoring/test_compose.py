"""docker-compose.yml agrees with the Prometheus and Grafana config it mounts (no Docker here,
so this checks what can be checked without it: files, host names, ports, paths)."""

from __future__ import annotations

from pathlib import Path, PurePosixPath

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((REPO / "docker-compose.yml").read_text())


def bind_mounts(service: dict) -> dict[PurePosixPath, Path]:
    """Container path -> host path of the service's bind mounts (named volumes left out)."""
    mounts = {}
    for volume in service.get("volumes", []):
        source, target = volume.split(":")[:2]
        if source.startswith("."):
            mounts[PurePosixPath(target)] = (REPO / source).resolve()
    return mounts


def host_path(service: dict, container_path: str) -> Path:
    """Where a path inside the container comes from on the host; fails if not bind-mounted."""
    path = PurePosixPath(container_path)
    for target, source in bind_mounts(service).items():
        if path == target or target in path.parents:
            return source / path.relative_to(target)
    raise AssertionError(f"{container_path} is not inside a bind mount")


def published(service: dict) -> dict[int, int]:
    """Container port -> host port."""
    return {int(p.split(":")[-1]): int(p.split(":")[-2]) for p in service.get("ports", [])}


def flag(service: dict, name: str) -> str:
    return next(arg.split("=", 1)[1] for arg in service["command"] if arg.startswith(name + "="))


def test_config_mounts_exist(compose: dict) -> None:
    for name, service in compose["services"].items():
        for target, source in bind_mounts(service).items():
            if REPO / ".churn" in source.parents:
                continue  # runtime state (the inference log): Docker creates it
            assert source.exists(), f"{name}: {source} (mounted at {target}) does not exist"


def test_prometheus_scrapes_the_compose_services(compose: dict) -> None:
    services = compose["services"]
    prometheus = services["prometheus"]
    config_path = host_path(prometheus, flag(prometheus, "--config.file"))
    config = yaml.safe_load(config_path.read_text())
    for rule_file in config["rule_files"]:
        assert (config_path.parent / rule_file).exists(), rule_file
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert jobs["pushgateway"]["honor_labels"] is True
    for job_name, service_name, port in [("churn-service", "churn-service", 3000),
                                         ("pushgateway", "pushgateway", 9091)]:
        targets = [t for sc in jobs[job_name]["static_configs"] for t in sc["targets"]]
        assert targets == [f"{service_name}:{port}"]
        assert service_name in services
        assert port in published(services[service_name]), f"{service_name} does not expose {port}"
    assert 9090 in published(prometheus)


def test_grafana_reads_the_provisioned_datasource_and_dashboards(compose: dict) -> None:
    grafana = compose["services"]["grafana"]
    provisioning = host_path(grafana, "/etc/grafana/provisioning")
    datasources = yaml.safe_load((provisioning / "datasources" / "prometheus.yaml").read_text())
    (datasource,) = datasources["datasources"]
    assert datasource["url"] == "http://prometheus:9090"
    assert "prometheus" in compose["services"]

    providers = yaml.safe_load((provisioning / "dashboards" / "churn.yaml").read_text())
    (provider,) = providers["providers"]
    dashboards = host_path(grafana, provider["options"]["path"])
    assert dashboards == REPO / "grafana" / "dashboards"
    assert sorted(p.name for p in dashboards.glob("*.json")) == [
        "drift.json", "model.json", "rollout.json", "service.json"]
    home = grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert host_path(grafana, home).exists()
    # Grafana's own port 3000 must not collide with the service's on the host.
    assert published(grafana)[3000] != published(compose["services"]["churn-service"])[3000]


def test_the_service_writes_its_inference_log_to_the_host(compose: dict) -> None:
    """The log lands in ./.churn/inference_log, where `churn drift` on the host reads it."""
    bento_env = {e["name"]: e["value"]
                 for e in yaml.safe_load((REPO / "bentofile.yaml").read_text())["envs"]}
    service = compose["services"]["churn-service"]
    churn_home = service.get("environment", {}).get("CHURN_HOME", bento_env["CHURN_HOME"])
    assert bind_mounts(service)[PurePosixPath(churn_home) / "inference_log"] == (
        REPO / ".churn" / "inference_log")
