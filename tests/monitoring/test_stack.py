"""`churn monitor` / monitoring.stack: real Prometheus and Pushgateway, started and stopped."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import yaml

from monitoring.stack import (
    PROMETHEUS_CONFIG,
    ScrapeTarget,
    render_prometheus_config,
    start_stack,
)

REPO = Path(__file__).resolve().parents[2]


def listening(url: str) -> bool:
    host, port = url.removeprefix("http://").split(":")
    with socket.socket() as sock:
        return sock.connect_ex((host, int(port))) == 0


def test_render_points_jobs_at_local_targets_and_keeps_the_rest() -> None:
    config = yaml.safe_load(PROMETHEUS_CONFIG.read_text())
    rendered = render_prometheus_config(
        config, targets={"churn-service": "localhost:3000", "pushgateway": "127.0.0.1:9999"},
        rules_dir=PROMETHEUS_CONFIG.parent, scrape_interval="1s", evaluation_interval="2s")
    jobs = {job["job_name"]: job for job in rendered["scrape_configs"]}
    assert jobs["churn-service"]["static_configs"] == [{"targets": ["localhost:3000"]}]
    assert jobs["pushgateway"]["static_configs"] == [{"targets": ["127.0.0.1:9999"]}]
    assert jobs["pushgateway"]["honor_labels"] is True
    assert rendered["rule_files"] == [str(PROMETHEUS_CONFIG.parent / "rules.yml")]
    assert rendered["global"]["evaluation_interval"] == "2s"
    assert config["scrape_configs"][0]["static_configs"][0]["targets"] == ["churn-service:3000"]
    with pytest.raises(ValueError, match="no scrape job 'nope'"):
        render_prometheus_config(config, targets={"nope": "x:1"}, rules_dir=Path("."))


def test_render_labels_several_service_targets_by_track() -> None:
    """Stable and canary scraped with the label Kubernetes would copy from the pods."""
    config = yaml.safe_load(PROMETHEUS_CONFIG.read_text())
    rendered = render_prometheus_config(
        config, rules_dir=PROMETHEUS_CONFIG.parent, targets={"churn-service": [
            ScrapeTarget("127.0.0.1:3000", {"track": "stable"}),
            ScrapeTarget("127.0.0.1:3001", {"track": "canary"})]})
    jobs = {job["job_name"]: job for job in rendered["scrape_configs"]}
    assert jobs["churn-service"]["static_configs"] == [
        {"targets": ["127.0.0.1:3000"], "labels": {"track": "stable"}},
        {"targets": ["127.0.0.1:3001"], "labels": {"track": "canary"}}]
    with pytest.raises(ValueError, match="at least one target"):
        render_prometheus_config(config, targets={"churn-service": []}, rules_dir=Path("."))


@pytest.mark.integration
def test_stack_loads_the_project_rules_and_stops_what_it_started(tmp_path: Path) -> None:
    stack = start_stack(tmp_path, prometheus_port=0, pushgateway_port=0,
                        service_target="127.0.0.1:9", evaluation_interval="1s")
    try:
        processes = list(stack.processes.values())
        groups = httpx.get(f"{stack.prometheus_url}/api/v1/rules").json()["data"]["groups"]
        loaded = {rule["name"] for group in groups for rule in group["rules"]}
        assert {"ChurnDriftDetected", "churn:service_errors:ratio_rate5m"} <= loaded
        assert httpx.get(f"{stack.pushgateway_url}/-/ready").status_code == 200
    finally:
        stack.stop()
    assert not any(process.running() for process in processes)
    assert not listening(stack.prometheus_url) and not listening(stack.pushgateway_url)


@pytest.mark.integration
def test_monitor_command_prints_urls_and_stops_on_sigterm(tmp_path: Path) -> None:
    command = [sys.executable, "-m", "churn_cli", "monitor", "--prometheus-port", "0",
               "--pushgateway-port", "0", "--workdir", str(tmp_path)]
    process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True, env=os.environ.copy())
    try:
        lines = []
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and "Ctrl-C" not in "".join(lines):
            line = process.stdout.readline()
            if not line:
                break
            lines.append(line)
        urls = {line.split()[0]: line.split()[1] for line in lines if "http://" in line}
        assert {"Prometheus", "Pushgateway"} <= urls.keys(), "".join(lines)
        for url in (urls["Prometheus"], urls["Pushgateway"]):
            assert httpx.get(f"{url}/-/ready").status_code == 200
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
    finally:
        if process.poll() is None:
            process.kill()
    assert not listening(urls["Prometheus"]) and not listening(urls["Pushgateway"])
