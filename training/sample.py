"""Training rows for tables larger than memory: a stratified uniform sample, drawn while the
table streams past in chunks, so memory holds the sample and one chunk, never the table.

Every row draws a random key; per target value (the stratum, as written in the table) the rows
with the ``rows`` smallest keys are kept. At the end each stratum gets its share of ``rows`` in
proportion to its size (largest remainders), taken from its smallest keys: a uniform sample
without replacement inside each stratum, with the class balance of the whole table. Rows keep
the table's order (the time split and the fingerprint read them in it).
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
from pydantic import BaseModel

from kernel.ingest import IngestError, iter_table

log = logging.getLogger("churn.train")
KEY, POSITION = "__sample_key", "__position"
MISSING = "<missing>"
CHUNK_ROWS = 200_000


class TrainingSample(BaseModel):
    """How the training rows were chosen (in the training summary)."""

    source_rows: int
    rows: int
    stratified_by: str
    strata: dict[str, int]  # rows per target value in the whole table
    seed: int

    def __str__(self) -> str:
        return (f"a stratified sample of {self.rows:,} of {self.source_rows:,} rows (by "
                f"{self.stratified_by}, seed {self.seed})")


def sample_training_rows(source: str, target: str, rows: int, seed: int,
                         chunk_rows: int = CHUNK_ROWS) -> tuple[pd.DataFrame, TrainingSample]:
    """Read ``source`` in chunks and keep a stratified sample of ``rows`` rows (all of them
    when the table is not larger). Raises IngestError when the target column is absent."""
    rng = np.random.default_rng(seed)
    kept: dict[str, pd.DataFrame] = {}
    sizes: dict[str, int] = {}
    seen = 0
    for chunk in iter_table(source, chunk_rows):
        if target not in chunk.columns:
            raise IngestError(f"cannot stratify the sample: target column {target!r} is not "
                              f"in {source}")
        chunk = chunk.assign(**{KEY: rng.random(len(chunk)),
                                POSITION: np.arange(seen, seen + len(chunk))})
        seen += len(chunk)
        strata = chunk[target].astype(object).where(chunk[target].notna(), MISSING).astype(str)
        for value, part in chunk.groupby(strata.to_numpy(), sort=False):
            sizes[value] = sizes.get(value, 0) + len(part)
            both = part if value not in kept else pd.concat([kept[value], part])
            kept[value] = both.nsmallest(rows, KEY) if len(both) > rows else both
    quotas = _quotas(sizes, min(rows, seen))
    picked = [kept[value].nsmallest(quota, KEY) for value, quota in quotas.items() if quota]
    frame = pd.concat(picked).sort_values(POSITION).drop(columns=[KEY, POSITION])
    sample = TrainingSample(source_rows=seen, rows=len(frame), stratified_by=target,
                            strata=dict(sorted(sizes.items())), seed=seed)
    if len(frame) < seen:
        log.warning("training on %s", sample)
    return frame.reset_index(drop=True), sample


def _quotas(sizes: dict[str, int], total: int) -> dict[str, int]:
    """``total`` shared out in proportion to ``sizes`` (largest remainders; never more than a
    stratum has)."""
    seen = sum(sizes.values())
    exact = {value: total * size / seen for value, size in sizes.items()}
    quotas = {value: int(share) for value, share in exact.items()}
    short = total - sum(quotas.values())
    for value in sorted(exact, key=lambda v: exact[v] - quotas[v], reverse=True)[:short]:
        quotas[value] += 1
    return {value: min(quota, sizes[value]) for value, quota in quotas.items()}
