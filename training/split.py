"""Train/test split: by time when the contract has an event time, else stratified."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.model_selection import train_test_split

from kernel.contract import ValidatedData


@dataclass(frozen=True)
class Split:
    train: np.ndarray  # row positions
    test: np.ndarray
    kind: str


def split_rows(data: ValidatedData, test_size: float, seed: int) -> Split:
    """With an event time, the newest ``test_size`` of rows is the test set, so no future
    information reaches training; rows sharing the cut-off time all go to the same side.
    Without one, a stratified split with a fixed seed."""
    n = len(data.target)
    positions = np.arange(n)
    if data.event_time is not None:
        times = data.event_time.to_numpy()
        order = np.argsort(times, kind="stable")
        cutoff = times[order[int(np.floor(n * (1 - test_size)))]]
        test = positions[times >= cutoff]
        train = positions[times < cutoff]
        if len(train) == 0 or data.target.iloc[test].nunique() < 2:
            raise ValueError(
                f"time split at {cutoff} leaves {len(train)} training rows and a test set "
                "without both classes: too few distinct event times"
            )
        return Split(train, test, f"time: test = event time >= {str(cutoff)[:19]}")
    train, test = train_test_split(
        positions, test_size=test_size, stratify=data.target.to_numpy(), random_state=seed
    )
    return Split(np.sort(train), np.sort(test), f"stratified random, seed {seed}")
