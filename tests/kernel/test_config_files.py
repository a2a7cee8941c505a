"""The one rule every command follows to find its config file."""

from __future__ import annotations

from pathlib import Path

import pytest

from kernel.config_files import ConfigNotFound, find_config, project_root


def test_the_order_is_given_path_then_working_directory_then_project_then_defaults(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("CHURN_TEST_CONFIG", raising=False)
    project = find_config("monitoring.yaml")
    assert (project.path, project.reason) == (project_root() / "configs" / "monitoring.yaml",
                                              "the project's file")
    (tmp_path / "configs").mkdir()
    own = tmp_path / "configs" / "monitoring.yaml"
    own.write_text("{}\n")
    local = find_config("monitoring.yaml")
    assert (local.path, local.reason) == (own, "found in the working directory")
    other = tmp_path / "other.yaml"
    other.write_text("{}\n")
    monkeypatch.setenv("CHURN_TEST_CONFIG", str(other))
    from_env = find_config("monitoring.yaml", env_var="CHURN_TEST_CONFIG")
    assert (from_env.path, from_env.reason) == (other, "from $CHURN_TEST_CONFIG")
    explicit = find_config("monitoring.yaml", own, env_var="CHURN_TEST_CONFIG")
    assert (explicit.path, explicit.reason) == (own, "from --config")
    nothing = find_config("no-such-file.yaml")
    assert nothing.path is None
    assert nothing.describe().startswith("config no-such-file.yaml: built-in defaults (no "
                                         "configs/no-such-file.yaml in ")


def test_a_named_file_must_exist_and_a_required_one_must_be_found(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigNotFound, match="--config names .*absent.yaml, which does not"):
        find_config("monitoring.yaml", tmp_path / "absent.yaml")
    monkeypatch.setenv("CHURN_TEST_CONFIG", str(tmp_path / "gone.yaml"))
    with pytest.raises(ConfigNotFound, match=r"\$CHURN_TEST_CONFIG names"):
        find_config("service.yaml", env_var="CHURN_TEST_CONFIG")
    with pytest.raises(ConfigNotFound, match="no configs/x.contract.yaml in .*: give its path"):
        find_config("x.contract.yaml", required=True)
