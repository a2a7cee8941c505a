"""The shadow in-process, with the session's real model: it scores what the champion scored
and writes the pairs to the inference log; its errors, its lag and a full queue skip batches
(counted), never touching what was answered."""

from __future__ import annotations

import time

import numpy as np
import pytest

from kernel.inference_log import SHADOW_FIELDS, read_inference_log
from service.config import ShadowConfig
from service.inference_log import InferenceLogWriter, LogBlock, utc_timestamp
from service.scoring import Scorer
from service.shadow import SKIP_REASONS, ShadowScorer, incompatibility, shadow_tag


def blocks_of(entry, sizes: list[int]) -> list[tuple[LogBlock, np.ndarray]]:
    """Blocks of reference customers scored by the champion, with the champion's scores."""
    scorer = Scorer(entry)
    features = entry.reference[list(entry.contract.features)]
    out, start = [], 0
    for n in sizes:
        rows = features.iloc[start:start + n]
        start += n
        columns = {c: rows[c].to_numpy() for c in rows.columns}
        scores = scorer.score(columns)
        out.append((LogBlock(timestamp=utc_timestamp(), request_ids=["r"] * n,
                             customer_ids=[f"c{start + i}" for i in range(n)],
                             features=columns, probability=scores.probability,
                             will_churn=scores.will_churn, risk_level=scores.risk_level,
                             unseen=scores.unseen), scores.probability))
    return out


def run_shadow(entry, blocks, settings=None, champion=None, before_close=None):
    forwarded: list[LogBlock] = []
    skipped: dict[str, int] = {}
    shadow = ShadowScorer(entry, (champion or entry).contract, forwarded.append,
                          settings or ShadowConfig(),
                          on_skipped=lambda reason, rows: skipped.__setitem__(
                              reason, skipped.get(reason, 0) + rows))
    for block, _ in blocks:
        shadow.submit(block)
    if before_close:
        before_close(shadow)
    shadow.close()
    return shadow, forwarded, skipped


def test_the_same_model_as_shadow_gives_every_row_the_champions_answer(trained_entry) -> None:
    blocks = blocks_of(trained_entry, [1, 7, 64, 3])
    shadow, forwarded, skipped = run_shadow(trained_entry, blocks)
    assert [len(b) for b in forwarded] == [1, 7, 64, 3] and skipped == {}
    for (block, champion), out in zip(blocks, forwarded, strict=True):
        assert out is block and out.shadow is not None
        assert out.shadow.version == trained_entry.version
        np.testing.assert_allclose(out.shadow.probability, champion, rtol=0, atol=1e-12)
        assert (out.shadow.will_churn == block.will_churn).all()
    assert shadow.scored == 75


def test_a_shadow_that_raises_skips_every_batch_and_changes_nothing(trained_entry,
                                                                      monkeypatch) -> None:
    blocks = blocks_of(trained_entry, [5, 5, 5])
    answered = [b.probability.copy() for b, _ in blocks]

    def broken(*args, **kwargs):
        raise ValueError("a shadow model that cannot score")

    monkeypatch.setattr(Scorer, "score", broken)
    shadow, forwarded, skipped = run_shadow(trained_entry, blocks)
    assert skipped == {"error": 15} and shadow.scored == 0
    assert all(b.shadow is None for b in forwarded) and len(forwarded) == 3
    for (block, _), before in zip(blocks, answered, strict=True):
        np.testing.assert_array_equal(block.probability, before)


def test_a_shadow_that_falls_behind_or_overflows_skips_and_counts(trained_entry) -> None:
    blocks = blocks_of(trained_entry, [10] * 4)
    _, forwarded, skipped = run_shadow(
        trained_entry, blocks, ShadowConfig(max_lag_seconds=0.05),
        before_close=lambda shadow: time.sleep(0.2))
    # The thread may take the first block in time; whatever waited past the lag is skipped.
    assert len(forwarded) == 4 and sum(skipped.values()) == skipped.get("lag", 0)
    full_blocks = blocks_of(trained_entry, [60, 60, 60])
    _, forwarded, skipped = run_shadow(trained_entry, full_blocks,
                                       ShadowConfig(queue_rows=100))
    assert skipped.get("queue_full", 0) >= 60 and len(forwarded) == 3


def test_a_shadow_needing_other_features_is_refused_at_start(trained_entry) -> None:
    raw = trained_entry.contract.model_dump()
    first = next(iter(raw["features"]))
    raw["features"][first]["type"] = (
        "categorical" if raw["features"][first]["type"] != "categorical" else "numeric")
    raw["features"][first].pop("min", None), raw["features"][first].pop("max", None)
    raw["features"][first].pop("monotone", None), raw["features"][first].pop("values", None)
    from kernel.contract import DataContract

    other = DataContract.model_validate(raw)
    assert "typed differently" in incompatibility(other, trained_entry.contract)
    blocks = blocks_of(trained_entry, [4])
    shadow = ShadowScorer(trained_entry, other, lambda block: None, ShadowConfig())
    shadow.submit(blocks[0][0])
    shadow.close()
    assert shadow.skipped["incompatible"] == 4 and set(shadow.skipped) == set(SKIP_REASONS)


def test_the_log_holds_both_answers_side_by_side(trained_entry, tmp_path) -> None:
    writer = InferenceLogWriter(tmp_path, model_tag=trained_entry.tag,
                                model_version=trained_entry.version,
                                boolean_features=trained_entry.contract.boolean, shadow=True,
                                track="stable")
    blocks = blocks_of(trained_entry, [20, 30])
    shadow = ShadowScorer(trained_entry, trained_entry.contract, writer.log, ShadowConfig())
    shadow.submit(blocks[0][0])
    shadow.close()  # the second block bypasses the closed shadow: logged without its fields
    shadow.submit(blocks[1][0])
    writer.close()
    frame = read_inference_log(tmp_path)
    assert len(frame) == 50 and set(SHADOW_FIELDS) <= set(frame.columns)
    assert (frame["track"] == "stable").all()
    paired = frame[frame["shadow_churn_probability"].notna()]
    assert len(paired) == 20
    np.testing.assert_allclose(paired["shadow_churn_probability"], paired["churn_probability"],
                               atol=1e-12)
    assert (paired["shadow_model_version"] == trained_entry.version).all()
    assert (paired["shadow_will_churn"] == paired["will_churn"]).all()
    assert frame["shadow_model_version"].isna().sum() == 30


@pytest.mark.parametrize(("env", "configured", "expected"), [
    (None, None, None), (None, "m:v2", "m:v2"), ("m:v3", "m:v2", "m:v3"), ("", "m:v2", None),
    ("  ", None, None)])
def test_the_environment_names_the_shadow_and_empty_turns_it_off(monkeypatch, env, configured,
                                                                 expected) -> None:
    if env is None:
        monkeypatch.delenv("CHURN_SHADOW_MODEL_TAG", raising=False)
    else:
        monkeypatch.setenv("CHURN_SHADOW_MODEL_TAG", env)
    assert shadow_tag(configured) == expected
