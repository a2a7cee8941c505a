"""Training on a stratified sample of a table read in chunks (tables larger than memory)."""

from __future__ import annotations

import pandas as pd
import pytest

from kernel.ingest import IngestError
from training.generate import GeneratorConfig, generate_customers
from training.sample import sample_training_rows


@pytest.fixture(scope="module")
def table(tmp_path_factory) -> tuple[str, pd.DataFrame]:
    path = tmp_path_factory.mktemp("sample") / "customers.csv"
    frame = generate_customers(GeneratorConfig(rows=5000, seed=21))
    frame.to_csv(path, index=False)
    return str(path), pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[""])


def test_sample_keeps_the_class_balance_and_the_table_order(table):
    path, whole = table
    sample, how = sample_training_rows(path, "churned", 1000, seed=3, chunk_rows=700)
    assert len(sample) == how.rows == 1000 and how.source_rows == 5000
    assert how.strata == whole["churned"].value_counts().sort_index().to_dict()
    expected = whole["churned"].value_counts(normalize=True) * 1000
    got = sample["churned"].value_counts()
    assert (got - expected).abs().max() <= 1  # largest remainders
    # A subset of the table's rows, in the table's order, and the same for the same seed.
    positions = whole.reset_index().merge(sample, on=list(whole.columns))["index"]
    assert len(positions) == 1000 and positions.is_monotonic_increasing
    again, _ = sample_training_rows(path, "churned", 1000, seed=3, chunk_rows=2000)
    pd.testing.assert_frame_equal(again, sample)
    other, _ = sample_training_rows(path, "churned", 1000, seed=4, chunk_rows=700)
    assert not other["customer_id"].equals(sample["customer_id"])


def test_a_table_smaller_than_the_sample_is_read_whole(table):
    path, whole = table
    sample, how = sample_training_rows(path, "churned", 8000, seed=3, chunk_rows=900)
    pd.testing.assert_frame_equal(sample, whole)
    assert how.rows == how.source_rows == 5000


def test_no_target_column_is_a_clear_error(table):
    with pytest.raises(IngestError, match="target column 'left'"):
        sample_training_rows(table[0], "left", 100, seed=0)


@pytest.mark.e2e
def test_train_on_a_sample_says_so_in_the_summary(table, contract, fast_config, churn_home):
    from training.run import train_and_register

    # A dataset of its own: the session's champion stays what the other tests expect.
    sampled = contract.model_copy(update={"name": "sampled_churn"})
    summary = train_and_register(table[0], sampled,
                                 fast_config.model_copy(update={"sample_rows": 1500}),
                                 churn_home)
    assert summary.sample is not None and summary.sample.source_rows == 5000
    assert summary.train_rows + summary.test_rows == summary.sample.rows == 1500
    assert "stratified sample of 1,500 of 5,000 rows" in str(summary.sample)
