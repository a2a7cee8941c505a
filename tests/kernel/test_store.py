"""The one model identity rule (``choose_model``), against the session's real model store."""

from __future__ import annotations

import pytest

from kernel.store import (
    MODEL_TAG_ENV,
    StoreError,
    choose_model,
    datasets,
    delete_entry,
    resolve_entry,
    save_entry,
)


def test_an_explicit_tag_beats_the_environment_which_beats_the_config(monkeypatch):
    monkeypatch.setenv(MODEL_TAG_ENV, "pinned:v2")
    assert choose_model("given:v1", configured_tag="config:v3") == ("given:v1", "given")
    assert choose_model(None, configured_tag="config:v3", dataset="d") == (
        "pinned:v2", f"${MODEL_TAG_ENV}")
    monkeypatch.delenv(MODEL_TAG_ENV)
    assert choose_model(None, configured_tag="config:v3", dataset="d") == (
        "config:v3", "model_tag in the config")
    assert choose_model(None, dataset="d") == ("d:champion", "champion of the configured dataset")
    assert choose_model("telco")[0] == "telco:champion"  # a bare name means its champion


def test_with_several_datasets_and_no_name_the_error_lists_them(trained_entry, monkeypatch):
    """(One dataset and no name: tests/training/test_own_data.py, through the real CLI.)"""
    monkeypatch.delenv(MODEL_TAG_ENV, raising=False)
    name = trained_entry.metadata.dataset
    copy = trained_entry.contract.model_copy(update={"name": "zz_second"})
    meta = trained_entry.metadata.model_copy(update={"dataset": "zz_second"})
    second = save_entry(trained_entry.model, copy, meta, trained_entry.reference, "champion")
    try:
        assert {name, "zz_second"} <= set(datasets())
        with pytest.raises(StoreError, match="holds models of .* datasets") as raised:
            choose_model()
        assert name in str(raised.value) and "zz_second" in str(raised.value)
        assert "CHURN_MODEL_TAG" in str(raised.value)
        assert resolve_entry("zz_second").tag == second.tag
    finally:
        delete_entry(second.tag)
    assert "zz_second" not in datasets()
