"""prometheus_client internals (checked against prometheus-client 0.20-0.23).

``observe_many`` adds a whole array to a Histogram with one increment per bucket: a
10,000-row batch would otherwise make 10,000 ``observe`` calls, each writing the shared
multiprocess file. It uses the histogram's per-bucket (non-cumulative) counters ``_buckets``,
their bounds ``_upper_bounds`` and the ``_sum`` counter; without them it falls back to
``observe``, and ``fast_path_available`` tells the test which path ran.
"""

from __future__ import annotations

import numpy as np

MIN_VECTORISED = 8  # below this, observe() per value is as cheap


def fast_path_available(histogram: object) -> bool:
    return all(hasattr(histogram, name) for name in ("_upper_bounds", "_buckets", "_sum"))


def observe_many(histogram: object, values: np.ndarray) -> None:
    """``histogram.observe(v)`` for every v, as one increment per non-empty bucket."""
    values = np.asarray(values, dtype=float)
    if len(values) < MIN_VECTORISED or not fast_path_available(histogram):
        for value in values.tolist():
            histogram.observe(value)
        return
    bounds = np.asarray(histogram._upper_bounds, dtype=float)
    index = np.searchsorted(bounds, values, side="left")  # le= buckets: v <= bound
    counts = np.bincount(index, minlength=len(bounds))
    for i in np.flatnonzero(counts):
        histogram._buckets[i].inc(int(counts[i]))
    histogram._sum.inc(float(np.sum(values)))
