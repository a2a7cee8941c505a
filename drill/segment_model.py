"""A challenger broken on one segment only: the champion everywhere, except that in one segment
(``column == value``) each customer gets a probability drawn, by a hash of their own score, from
that segment's own distribution. The segment's share flagged and mean stay put and so does the
overall distribution; its ranking is gone, as when a feature join breaks for one region. Only
pairs (the shadow) can see it. A real model in the store: the server unpickles this class from
the repository, its working directory."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from kernel.features import FeatureLayout
from kernel.model import ChurnModel


@dataclass
class SegmentScrambled(ChurnModel):
    column: str = ""
    value: str = ""
    index: int = -1  # the one-hot column of column=value in the model matrix
    pool: tuple[float, ...] = ()  # the champion's probabilities of the segment's customers

    def _scramble(self, probability: np.ndarray, inside: np.ndarray) -> np.ndarray:
        out = np.array(probability, dtype=float)
        pool = np.asarray(self.pool)
        out[inside] = pool[(out[inside] * 1e9).astype(np.int64) % len(pool)]
        return out

    def predict_proba(self, features: pd.DataFrame) -> np.ndarray:
        inside = features[self.column].astype(str).to_numpy() == self.value
        return self._scramble(super().predict_proba(features), inside)

    def predict_proba_matrix(self, matrix: np.ndarray) -> np.ndarray:
        return self._scramble(super().predict_proba_matrix(matrix), matrix[:, self.index] > 0.5)


def scrambled_on_a_segment(entry) -> SegmentScrambled:
    """``entry``'s model scrambled on the categorical value nearest a quarter of its reference
    customers (big enough for the judge's per-segment checks, small enough to hide overall)."""
    contract, reference = entry.contract, entry.reference
    categories = entry.metadata.categories
    shares = [(abs(share - 0.25), column, str(value))
              for column in contract.categorical
              for value, share in reference[column].astype(str).value_counts(
                  normalize=True).items() if str(value) in categories.get(column, [])]
    _, column, value = min(shares)
    names = FeatureLayout(contract, categories).names
    model = entry.model
    segment = reference[reference[column].astype(str) == value][list(contract.features)]
    pool = tuple(float(p) for p in np.sort(model.predict_proba(segment)))
    return SegmentScrambled(model.pipeline, model.calibration, column, value,
                            names.index(f"{column}={value}"), pool)
