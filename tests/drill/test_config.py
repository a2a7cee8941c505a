"""Drill settings and scenario selection (unit tier)."""

from __future__ import annotations

from pathlib import Path

import pytest

from drill.config import CONFIG_NAME, DrillConfig
from drill.runner import GROUPS, SCENARIOS, UnknownScenario, select

REPO = Path(__file__).resolve().parents[2]


def test_the_shipped_config_is_the_defaults() -> None:
    # One source for each number: the file documents the defaults, it does not change them.
    assert DrillConfig.from_yaml(REPO / "configs" / CONFIG_NAME) == DrillConfig()


def test_project_files_exist() -> None:
    for name, path in DrillConfig().project:
        assert (REPO / path).exists(), f"project.{name}: {path}"


def test_bad_key_named(tmp_path: Path) -> None:
    bad = tmp_path / "drill.yaml"
    bad.write_text("serving:\n  overload_client: 3\n")
    with pytest.raises(ValueError, match="serving.overload_client"):
        DrillConfig.from_yaml(bad)


def test_select_keeps_the_drill_order_and_expands_groups() -> None:
    assert select(None) == SCENARIOS
    assert [s.name for s in select(["sigterm", "schema-change"])] == ["schema-change", "sigterm"]
    assert {s.group for s in select(["monitoring"])} == {"monitoring"}
    assert {s.group for s in SCENARIOS} == set(GROUPS)
    assert len({s.name for s in SCENARIOS}) == len(SCENARIOS)


def test_unknown_name_lists_what_exists() -> None:
    with pytest.raises(UnknownScenario, match="'leak'.*scenarios: schema-change, leakage"):
        select(["leak"])
