"""The drill's time-scaled alert rules: a transformation of the project's rules.yml that divides
`for:` durations and staleness thresholds, and nothing else (checked on the real file). Unit
tier (conftest assigns it: no process, no model) except the promtool check."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from drill.rules import (
    RulesError,
    duration_seconds,
    format_duration,
    scale_rules,
    write_scaled_rules,
)

RULES = Path(__file__).resolve().parents[2] / "monitoring" / "prometheus" / "rules.yml"


def _rules_by_key(document: dict) -> dict[tuple[str, str, int], dict]:
    """Every rule keyed by (group, name, position among rules of that name)."""
    keyed = {}
    for group in document["groups"]:
        seen: dict[str, int] = {}
        for rule in group["rules"]:
            name = rule.get("alert") or rule["record"]
            seen[name] = seen.get(name, -1) + 1
            keyed[(group["name"], name, seen[name])] = rule
    return keyed


@pytest.mark.parametrize(("text", "seconds"), [
    ("90s", 90), ("5m", 300), ("2h", 7200), ("1h30m", 5400), ("250ms", 0.25), ("1d", 86400)])
def test_duration_seconds(text: str, seconds: float) -> None:
    assert duration_seconds(text) == seconds


@pytest.mark.parametrize("text", ["", "5", "5 m", "m5", "1h 30m", "5min"])
def test_duration_seconds_rejects(text: str) -> None:
    with pytest.raises(RulesError, match="not a Prometheus duration"):
        duration_seconds(text)


def test_format_duration_whole_milliseconds() -> None:
    assert format_duration(20) == "20s"
    assert format_duration(0.8333) == "833ms"
    assert duration_seconds(format_duration(7200 / 360)) == 20


def test_scale_rules_changes_only_for_and_staleness() -> None:
    source = yaml.safe_load(RULES.read_text())
    scaled, changes = scale_rules(source, 360)
    before, after = _rules_by_key(source), _rules_by_key(scaled)
    assert before.keys() == after.keys()
    assert source == yaml.safe_load(RULES.read_text()), "the source document was modified"
    fors = staleness = 0
    for key, rule in before.items():
        new = after[key]
        # Labels, annotations, names: untouched.
        assert {k: v for k, v in new.items() if k not in ("for", "expr")} == \
            {k: v for k, v in rule.items() if k not in ("for", "expr")}, key
        assert ("for" in new) == ("for" in rule), key
        if "for" in rule:
            fors += 1
            assert duration_seconds(new["for"]) == pytest.approx(
                duration_seconds(rule["for"]) / 360, abs=0.001), key
        old_numbers = re.findall(r"\d+(?:\.\d+)?", rule["expr"])
        new_numbers = re.findall(r"\d+(?:\.\d+)?", new["expr"])
        assert len(old_numbers) == len(new_numbers), key
        for old, new_number in zip(old_numbers, new_numbers, strict=True):
            if old != new_number:  # only an age compared with a limit may change
                staleness += 1
                assert float(new_number) == pytest.approx(float(old) / 360), key
                assert "time()" in rule["expr"], key
        # Range windows of rates ([5m]) stay: a rate needs several scrapes.
        assert re.findall(r"\[\w+\]", new["expr"]) == re.findall(r"\[\w+\]", rule["expr"]), key
    assert fors == sum(1 for change in changes if ": for " in change) > 0
    assert staleness == sum(1 for change in changes if "staleness" in change) >= 1


def test_stale_drift_job_threshold_is_scaled() -> None:
    scaled, changes = scale_rules(yaml.safe_load(RULES.read_text()), 360)
    stale = [rule for group in scaled["groups"] for rule in group["rules"]
             if rule.get("alert") == "ChurnDriftJobStale" and "time()" in rule["expr"]]
    assert stale and all(re.search(r"> 20\s", rule["expr"]) for rule in stale), stale
    assert "ChurnDriftJobStale: staleness threshold 7200 s -> 20 s" in changes
    assert "ChurnDriftJobStale: for 2h -> 20s" in changes


def test_factor_one_is_identity() -> None:
    source = yaml.safe_load(RULES.read_text())
    scaled, _ = scale_rules(source, 1)
    after = _rules_by_key(scaled)
    for key, rule in _rules_by_key(source).items():
        new = after[key]
        assert new["expr"] == rule["expr"], key
        if "for" in rule:
            assert duration_seconds(new["for"]) == duration_seconds(rule["for"])


def test_factor_below_one_refused() -> None:
    with pytest.raises(RulesError, match="slow time down"):
        scale_rules({"groups": []}, 0.5)


def test_malformed_for_named() -> None:
    bad = {"groups": [{"name": "g", "rules": [{"alert": "A", "expr": "up == 0",
                                               "for": "five minutes"}]}]}
    with pytest.raises(RulesError, match="five minutes"):
        scale_rules(bad, 10)


def test_written_file_says_where_it_comes_from(tmp_path: Path) -> None:
    target = tmp_path / "rules.yml"
    changes = write_scaled_rules(RULES, target, 360)
    text = target.read_text()
    assert text.startswith(f"# Generated by churn drill from {RULES}")
    assert yaml.safe_load(text) == scale_rules(yaml.safe_load(RULES.read_text()), 360)[0]
    assert changes


def test_unreadable_source_named(tmp_path: Path) -> None:
    with pytest.raises(RulesError, match="cannot read alert rules"):
        write_scaled_rules(tmp_path / "missing.yml", tmp_path / "out.yml", 10)


@pytest.mark.integration
def test_promtool_accepts_scaled_rules(tmp_path: Path) -> None:
    promtool = shutil.which("promtool")
    assert promtool, "promtool not found: make monitor-deps"
    target = tmp_path / "rules.yml"
    write_scaled_rules(RULES, target, 360)
    done = subprocess.run([promtool, "check", "rules", str(target)], capture_output=True,
                          text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
