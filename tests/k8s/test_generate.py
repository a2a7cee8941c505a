"""`churn k8s generate`: the files k8s/ holds for kustomize equal their single sources, and the
check fails as soon as one of them drifts."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

import churn_cli
from monitoring.k8s_assets import PROMETHEUS_RULE, prometheus_rule
from tests.k8s.conftest import REPO
from tests.monitoring.conftest import run_churn

SOURCES = ("configs", "grafana/dashboards", "monitoring/prometheus", "k8s")


def churn(*args: str):
    return CliRunner().invoke(churn_cli.app, list(args))


@pytest.fixture
def repo_copy(tmp_path: Path) -> Path:
    """The parts of the repository the command reads and writes."""
    for part in SOURCES:
        shutil.copytree(REPO / part, tmp_path / part)
    return tmp_path


def test_the_committed_generated_files_are_up_to_date():
    result = churn("k8s", "generate", "--check", "--root", str(REPO))
    assert result.exit_code == 0, result.output
    assert "up to date" in result.output


def test_an_edited_rule_fails_the_check_until_generated_again(repo_copy: Path):
    rules = repo_copy / "monitoring/prometheus/rules.yml"
    rules.write_text(rules.read_text().replace("> 0.01", "> 0.02"))
    result = churn("k8s", "generate", "--check", "--root", str(repo_copy))
    assert result.exit_code == 1
    assert f"{PROMETHEUS_RULE}: differs from monitoring/prometheus/rules.yml" in result.output

    result = churn("k8s", "generate", "--root", str(repo_copy))
    assert result.exit_code == 0 and f"wrote {PROMETHEUS_RULE}" in result.output
    assert churn("k8s", "generate", "--check", "--root", str(repo_copy)).exit_code == 0
    generated = yaml.safe_load((repo_copy / PROMETHEUS_RULE).read_text())
    assert generated["spec"]["groups"] == yaml.safe_load(rules.read_text())["groups"]
    assert "> 0.02" in yaml.safe_dump(generated)


def test_edited_config_and_dashboard_and_a_removed_dashboard_are_all_named(repo_copy: Path):
    (repo_copy / "configs/service.yaml").write_text("workers: 3\n")
    dashboard = repo_copy / "grafana/dashboards/model.json"
    dashboard.write_text(dashboard.read_text().replace("Churn", "Attrition", 1))
    (repo_copy / "grafana/dashboards/drift.json").unlink()
    result = churn("k8s", "generate", "--check", "--root", str(repo_copy))
    assert result.exit_code == 1
    for line in ("k8s/base/config/service.yaml: differs from configs/service.yaml",
                 "k8s/components/monitoring/dashboards/model.json: differs from "
                 "grafana/dashboards/model.json",
                 "k8s/components/monitoring/dashboards/drift.json: left over (no source)"):
        assert line in result.output

    assert churn("k8s", "generate", "--root", str(repo_copy)).exit_code == 0
    assert (repo_copy / "k8s/base/config/service.yaml").read_text() == "workers: 3\n"
    assert not (repo_copy / "k8s/components/monitoring/dashboards/drift.json").exists()
    assert churn("k8s", "generate", "--check", "--root", str(repo_copy)).exit_code == 0


def test_a_folder_without_k8s_is_one_clear_line_and_exit_2(tmp_path: Path, monkeypatch, capsys):
    assert run_churn(["k8s", "generate", "--root", str(tmp_path)], monkeypatch) == 2
    assert capsys.readouterr().err.strip() == (
        f"error: FileNotFoundError: {tmp_path} has no k8s/ folder: run from the repository "
        "root or pass --root")


def test_a_file_without_groups_is_not_turned_into_a_rule():
    with pytest.raises(ValueError, match="not a Prometheus rules file"):
        prometheus_rule({"rules": []})
