"""The scorer answers exactly what the stored model answers, with the stored decision rules."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from kernel.features import DerivedFeatures
from service.scoring import MatrixBuilder, Scorer, Vocabulary, score_chunks
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


def test_matrix_builder_mixes_array_and_pandas_expressions_like_training():
    """An expression ArrayExpression does not compile (``//``) still goes through pandas, and
    both kinds give the training numbers, infinities turned into missing values."""
    from service.scoring import Vocabulary

    rng = np.random.default_rng(3)
    frame = pd.DataFrame({"a": rng.normal(0, 5, 400), "b": rng.integers(-2, 3, 400) * 1.0})
    frame.loc[frame.index[::9], "a"] = np.nan
    derived = {"ratio": "a / b", "whole": "a // b"}
    builder = MatrixBuilder(numeric=["a", "b"], derived=derived,
                            num_columns=["a", "b", "ratio", "whole"], fill=np.zeros(4),
                            mean=None, scale=None, indicated=[], categorical=[])
    assert [type(e).__name__ for e in builder.derived.values()] == ["ArrayExpression", "code"]
    expected = DerivedFeatures(derived).transform(frame)[["a", "b", "ratio", "whole"]]
    expected = expected.fillna(0.0).to_numpy()  # the builder imputes with fill = 0
    np.testing.assert_array_equal(
        builder.matrix({c: frame[c].to_numpy() for c in frame.columns}), expected)
    # Categories are looked up in a dict: the same positions pandas' indexer gives.
    values = np.array(["b", None, "z", "a", np.nan, "c", "b"], dtype=object)
    vocabulary = Vocabulary(["a", "b", "c"])
    np.testing.assert_array_equal(vocabulary.codes(values),
                                  pd.Index(["a", "b", "c"]).get_indexer(pd.Index(values)))


def test_unseen_ignores_missing_values_and_shared_codes_change_nothing(trained_entry, scorer):
    frame = _awkward(trained_entry, 60)
    open_set = [c for c, s in trained_entry.contract.features.items()
                if s.type == "categorical" and s.values is None]
    column = open_set[0]
    frame.loc[frame.index[1], column] = None
    flagged = scorer.unseen(frame, len(frame))
    assert column not in flagged[1]
    columns = {c: frame[c].to_numpy() for c in frame.columns}
    shared = scorer.unseen(columns, len(frame), scorer.builder.codes(columns))
    assert shared == flagged and scorer.score(frame).unseen == flagged
    assert sum(map(bool, flagged)) >= 5  # rows 0, 11, 22, ... carry unseen values


def test_categories_held_as_arrow_text_score_the_same(trained_entry, scorer):
    """A /predict_batch body decoded by Arrow hands its categorical columns over as Arrow text
    too: their codes come from Arrow's lookup, and nothing of the answer changes (nulls and
    unseen values included)."""
    frame = _awkward(trained_entry, 200)
    columns = {c: frame[c].to_numpy() for c in frame.columns}
    texts = {c: pa.array(columns[c], pa.string()) for c in trained_entry.contract.categorical}
    plain, fast = scorer.score(columns), scorer.score(columns, texts)
    for column, vocabulary in scorer.builder.categorical:
        np.testing.assert_array_equal(vocabulary.text_codes(texts[column], columns[column]),
                                      vocabulary.codes(columns[column]))
    np.testing.assert_array_equal(fast.probability, plain.probability)
    assert fast.unseen == plain.unseen and sum(map(bool, fast.unseen)) >= 5
    assert (Vocabulary([1, 2]).text_codes(pa.array(["1", None]), np.array([2, None], object))
            == [1, -1]).all()  # categories that are not text: the dict, on the objects


def test_large_batches_score_on_threads_with_the_same_answers(trained_entry, scorer):
    """A batch of ``threaded_rows`` or more goes to a copy of the classifier with more
    threads; small batches keep the one-thread classifier. Both answer the same."""
    from kernel.model import base_estimators

    threaded = Scorer(trained_entry, threads=2, threaded_rows=1_000)
    assert threaded._threaded is not None
    assert {e.get_params()["n_jobs"] for e in base_estimators(threaded._threaded.classifier)
            if "n_jobs" in e.get_params()} == {2}
    assert {e.get_params()["n_jobs"] for e in base_estimators(threaded.model.classifier)
            if "n_jobs" in e.get_params()} == {1}
    frame = frame_of(request_bodies(trained_entry, 3_000), trained_entry.contract)
    for rows in (frame.head(999), frame):  # below and above threaded_rows
        np.testing.assert_array_equal(threaded.score(rows).probability,
                                      scorer.score(rows).probability)


def test_a_model_class_with_its_own_scoring_keeps_it_on_threads(trained_entry) -> None:
    """The threaded copy is a copy of the model, not of its classifier: a model class that
    scores its own way (the drill's segment-scrambled challenger) does so for large batches
    too."""
    import copy

    from kernel.model import ChurnModel

    class Halved(ChurnModel):
        def predict_proba_matrix(self, matrix: np.ndarray) -> np.ndarray:
            return super().predict_proba_matrix(matrix) / 2

    entry = copy.copy(trained_entry)
    model = trained_entry.model
    entry.__dict__["model"] = Halved(model.pipeline, model.calibration)
    plain = Scorer(trained_entry)
    halved = Scorer(entry, threads=2, threaded_rows=100)
    assert halved._threaded is not None and type(halved._threaded) is Halved
    frame = frame_of(request_bodies(trained_entry, 300), trained_entry.contract)
    for rows in (frame.head(50), frame):  # one thread, then the threaded copy
        np.testing.assert_allclose(halved.score(rows).probability,
                                   plain.score(rows).probability / 2, rtol=0, atol=1e-12)
