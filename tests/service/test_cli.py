"""`churn score`: every row either scored (with the model version) or rejected with a reason."""

from __future__ import annotations

import pandas as pd
import pytest
from typer.testing import CliRunner

from churn_cli import app
from tests.servers import request_bodies


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_score_writes_scores_and_rejects(trained_entry, tmp_path, suffix):
    raw = pd.DataFrame(request_bodies(trained_entry, 250))
    raw["snapshot_date"] = "2026-01-01"  # undeclared columns are carried in rejects, not scored
    raw = raw.astype(str).replace("None", "")
    raw.loc[10, "monthly_charge"] = "lots"
    raw.loc[20, "plan"] = "platinum"
    raw.loc[30, "profiles"] = ""
    source = tmp_path / f"customers{suffix}"
    raw.to_csv(source, index=False) if suffix == ".csv" else raw.to_parquet(source)
    output = tmp_path / f"scores{suffix}"

    result = CliRunner().invoke(app, ["score", "--input", str(source), "--output", str(output),
                                      "--chunk-rows", "100"])
    assert result.exit_code == 0, result.output
    read = pd.read_csv if suffix == ".csv" else pd.read_parquet
    scores = read(output)
    rejects = read(tmp_path / f"scores.rejects{suffix}")
    assert len(scores) == 247 and len(rejects) == 3
    assert set(scores["model_version"].astype(str)) == {trained_entry.version}
    assert scores["churn_probability"].between(0, 1).all()
    reasons = " | ".join(rejects["reject_reason"])
    for expected in ("monthly_charge: not numeric", "plan: outside the allowed values",
                     "profiles: null, not nullable"):
        assert expected in reasons
    assert "rejected 3 rows" in result.output


def test_score_missing_model_is_one_readable_line(tmp_path):
    source = tmp_path / "c.csv"
    source.write_text("customer_id\nc1\n")
    result = CliRunner().invoke(app, ["score", "--input", str(source), "--output",
                                      str(tmp_path / "o.csv"), "--model", "nope:champion"])
    assert result.exit_code != 0
    assert "no champion for 'nope'" in str(result.exception)
