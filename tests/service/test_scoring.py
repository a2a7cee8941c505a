"""The scorer answers exactly what the stored model answers, with the stored decision rules."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from service.scoring import MatrixBuilder, Scorer, score_chunks
from tests.servers import frame_of, request_bodies


@pytest.fixture(scope="module")
def scorer(trained_entry) -> Scorer:
    return Scorer(trained_entry, {"HIGH": "call"})


def _awkward(entry, n=300) -> pd.DataFrame:
    """Reference rows plus nulls in every nullable feature and unseen categories."""
    frame = frame_of(request_bodies(entry, n), entry.contract)
    contract = entry.contract
    for name, spec in contract.features.items():
        if spec.nullable:
            frame.loc[frame.index[::7], name] = np.nan if spec.type != "categorical" else None
        if spec.type == "categorical" and spec.values is None:
            frame.loc[frame.index[::11], name] = "never_seen_" + name
    frame.loc[frame.index[::13], "days_since_last_login"] = 30.0  # a derived division by 0
    return frame


def test_compiled_preprocessor_is_exact(trained_entry, scorer):
    assert scorer.builder is not None, "the demo pipeline must take the fast path"
    frame = _awkward(trained_entry)
    expected = trained_entry.model.preprocessor.transform(frame)
    got = scorer.builder.matrix({c: frame[c].to_numpy() for c in frame.columns})
    np.testing.assert_array_equal(got, expected)


def test_probabilities_equal_the_stored_model(trained_entry, scorer):
    frame = _awkward(trained_entry)
    np.testing.assert_allclose(scorer.probabilities(frame),
                               trained_entry.model.predict_proba(frame), rtol=0, atol=1e-12)
    assert scorer.verify(frame) <= 1e-12 and scorer.builder is not None


def test_decision_rules_come_from_the_entry(trained_entry, scorer):
    meta = trained_entry.metadata
    scores = scorer.score(_awkward(trained_entry))
    p = scores.probability
    assert (scores.will_churn == (p >= meta.threshold)).all()
    expected = np.where(p >= meta.risk_cutoffs.high, "HIGH",
                        np.where(p >= meta.risk_cutoffs.medium, "MEDIUM", "LOW"))
    assert (scores.risk_level == expected).all()
    assert set(scores.risk_level) >= {"LOW", "HIGH"}
    # Flagged to churn exactly when not LOW: no sliver between the threshold and MEDIUM.
    assert ((scores.risk_level != "LOW") == scores.will_churn).all()
    assert meta.risk_cutoffs.medium == meta.threshold


def test_unseen_categories_are_flagged_per_feature(trained_entry, scorer):
    frame = _awkward(trained_entry, 30)
    flagged = scorer.unseen(frame, len(frame))
    open_set = [c for c, s in trained_entry.contract.features.items()
                if s.type == "categorical" and s.values is None]
    assert set(flagged[0]) == set(open_set)  # row 0 got every unseen value
    assert flagged[1] == ()


def test_unknown_pipeline_falls_back_to_sklearn(trained_entry):
    assert MatrixBuilder.compile(object(), trained_entry.contract) is None


def test_score_chunks_rejects_with_reasons_and_keeps_the_rest(trained_entry, scorer):
    contract = trained_entry.contract
    raw = pd.DataFrame(request_bodies(trained_entry, 20)).astype(str)
    raw.loc[3, "tenure_days"] = "-4"
    raw.loc[5, "plan"] = "platinum"
    raw.loc[8, contract.id] = None
    (scored, rejects), = list(score_chunks(iter([raw]), scorer))
    assert len(scored) == 17 and len(rejects) == 3
    reasons = dict(zip(rejects.index, rejects["reject_reason"], strict=True))
    assert "tenure_days: below min 0" in reasons[3]
    assert "plan: outside the allowed values" in reasons[5]
    assert "missing id" in reasons[8]
    assert (scored["model_version"] == trained_entry.version).all()
