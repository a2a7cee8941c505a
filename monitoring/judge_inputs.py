"""What the judges read from the inference log: the shadow's pairs and each track's predictions.

The records are the evidence (``kernel.inference_log``): every prediction the service made,
with the shadow's answer for the same customer beside the champion's when a shadow ran, and the
track of the pod that made it. Selection is by version and time, never by position in the log:

- **pairs**: records of ``champion_version`` that carry ``shadow_version``'s answer, since the
  shadow started (skipped batches have no shadow answer and are left out, counted);
- **a track's predictions**: records of that track (``track`` field; a log without it, such as
  two local servers, is told apart by version) made by the version the track serves now, since
  that version began serving: a replaced canary's predictions never count.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import pandas as pd

from kernel.inference_log import SHADOW_FIELDS, TRACK_FIELD, read_inference_log

PREDICTION_FIELDS = ("churn_probability", "will_churn", "risk_level")


@dataclass(frozen=True)
class Pairs:
    """The shadow's evidence: one row per customer both models scored."""

    frame: pd.DataFrame
    champion_version: str
    shadow_version: str
    skipped: int  # records of the champion in the window the shadow did not score
    since: datetime | None


def shadow_pairs(directory: Path, *, since: datetime | None, until: datetime | None = None,
                 shadow_version: str | None = None, champion_version: str | None = None,
                 features: list[str] | None = None) -> Pairs:
    """The pairs in ``[since, until)``. Without versions: the shadow version that scored most
    of the window's records, and the champion version those records came from. Raises
    LookupError when the window holds no shadow answers (no shadow ran, or none was logged)."""
    columns = ["model_version", "model_tag", *PREDICTION_FIELDS, *SHADOW_FIELDS, TRACK_FIELD,
               "customer_id", *(features or [])]
    records = read_inference_log(directory, since, until, columns=columns)
    if records.empty or "shadow_model_version" not in records.columns:
        raise LookupError(f"no shadow answers in {directory} since {since}: is a shadow "
                          "running (churn shadow status), and is the inference log on?")
    answered = records[records["shadow_model_version"].notna()]
    if answered.empty:
        raise LookupError(f"no shadow answers in {directory} since {since}: every batch was "
                          "skipped (churn_shadow_skipped_total says why)")
    shadow_version = shadow_version or answered["shadow_model_version"].mode().iloc[0]
    answered = answered[answered["shadow_model_version"] == shadow_version]
    champion_version = champion_version or answered["model_version"].mode().iloc[0]
    champion = records[records["model_version"] == champion_version]
    pairs = champion[(champion["shadow_model_version"] == shadow_version)
                     & champion["shadow_churn_probability"].notna()]
    return Pairs(pairs.reset_index(drop=True), str(champion_version), str(shadow_version),
                 skipped=len(champion) - len(pairs), since=since)


@dataclass(frozen=True)
class ShadowEvidence:
    """The pairs with the champion's categorical features (the judge's segments), and the
    champion's contract they were validated by."""

    pairs: Pairs
    segments: list[str]
    contract: object | None  # kernel.contract.DataContract; None when no pair was found


def shadow_evidence(directory: Path, *, since: datetime | None, until: datetime | None = None,
                    shadow_version: str | None = None,
                    champion_version: str | None = None) -> ShadowEvidence:
    """``shadow_pairs`` with the segment columns: the champion (named by the pairs' model tag)
    says which features are categorical, and the pairs are read again with them, so the judge
    can see a challenger that differs on one segment only. Raises LookupError as
    ``shadow_pairs``."""
    from kernel.store import load_entry

    pairs = shadow_pairs(directory, since=since, until=until, shadow_version=shadow_version,
                         champion_version=champion_version)
    if pairs.frame.empty:
        return ShadowEvidence(pairs, [], None)
    contract = load_entry(str(pairs.frame["model_tag"].iloc[0])).contract
    segments = list(contract.categorical)
    if segments:
        pairs = shadow_pairs(directory, since=since, until=until,
                             shadow_version=pairs.shadow_version,
                             champion_version=pairs.champion_version, features=segments)
        segments = [c for c in segments if c in pairs.frame.columns]
    return ShadowEvidence(pairs, segments, contract)


def track_predictions(directory: Path, *, track: str, version: str, since: datetime | None,
                      until: datetime | None = None) -> pd.DataFrame:
    """A track's predictions by ``version`` in ``[since, until)`` (see the module docstring)."""
    records = read_inference_log(directory, since, until,
                                 columns=["model_version", TRACK_FIELD, *PREDICTION_FIELDS])
    if records.empty:
        return pd.DataFrame(columns=list(PREDICTION_FIELDS))
    chosen = records["model_version"] == version
    if TRACK_FIELD in records.columns:
        # A record without a track (a local server) is told apart by its version alone.
        chosen &= records[TRACK_FIELD].isna() | (records[TRACK_FIELD] == track)
    return records.loc[chosen, list(PREDICTION_FIELDS)].reset_index(drop=True)


def with_labels(pairs: pd.DataFrame, labels: pd.DataFrame, id_column: str,
                target_column: str, observed_at_column: str = "observed_at",
                horizon_days: float = 30) -> pd.DataFrame:
    """``pairs`` with a 0/1 ``label`` where a late label for the customer was observed after
    the prediction, within ``horizon_days`` (``churn performance``'s join); missing elsewhere."""
    from datetime import timedelta

    from monitoring.performance import join_labels, parse_labels

    parsed = parse_labels(labels, id_column, target_column, observed_at_column)
    keyed = pairs.rename(columns={"customer_id": id_column}) if id_column not in pairs else pairs
    joined = join_labels(keyed.assign(_row=range(len(keyed))), parsed, id_column,
                         observed_at_column, timedelta(days=horizon_days))
    label = pd.Series(pd.NA, index=range(len(pairs)), dtype="Float64")
    label.iloc[joined["_row"].to_numpy()] = joined[target_column].to_numpy(dtype=float)
    return pairs.assign(label=label.to_numpy(dtype=float, na_value=float("nan")))
