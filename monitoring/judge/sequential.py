"""Looking again and again without failing more often: confidence sequences.

Every interval the judge decides on is an *asymptotic confidence sequence* (Waudby-Smith,
Arbour, Sinha, Kennedy & Ramdas, "Time-uniform central limit theory and asymptotic confidence
sequences", 2021/2024): Robbins' normal-mixture boundary applied to an estimate and its
standard error. With probability at least 1 - alpha it holds the true effect *at every sample
size at once*, so a growing sample may be judged as often as anyone likes (the shadow's
periodic analysis, a canary retried while inconclusive) and the chance of ever failing a model
whose true effect is inside the tolerance stays at most alpha. The price is width: about 1.55
times a single-look 95% interval where the sequence is tuned to be tightest (``tightest_at``),
a little more elsewhere.

Separate samples (the canary's steps, each judged on its own window so both tracks cover the
same minutes) are different streams: they share alpha by a union bound, ``alpha / planned``
each (``sample_alpha``), whatever the overlap or independence of their data.

The boundary (Robbins 1970; Howard et al. 2021, eq. for the two-sided normal mixture): for a
mean of t observations with standard deviation sigma the half-width is

    sigma * sqrt( 2 (t rho^2 + 1) / (t^2 rho^2) * log( sqrt(t rho^2 + 1) / alpha ) )

and rho^2 = (-2 log alpha + log(1 - 2 log alpha)) / t* makes it nearly tightest at t = t*.
As a multiple of the standard error sigma / sqrt(t) that is ``multiplier`` below.
"""

from __future__ import annotations

import math
from collections.abc import Callable


class SampleBudgetSpent(ValueError):
    """A separate sample beyond the planned number: its share of alpha does not exist."""


def mixture_rho2(alpha: float, tightest_at: float) -> float:
    """The mixture's tuning parameter rho^2 that makes the boundary near-tightest at
    ``tightest_at`` observations."""
    log_inverse = -2.0 * math.log(alpha)
    return (log_inverse + math.log(1.0 + log_inverse)) / tightest_at


def multiplier(t: float, alpha: float, tightest_at: float) -> float:
    """Half-width of the two-sided (1 - alpha) confidence sequence at ``t`` observations, in
    standard errors (the role 1.96 plays for one 95% interval). Raises ValueError for t <= 0."""
    if t <= 0:
        raise ValueError(f"a confidence sequence needs at least one observation, got t={t}")
    t_rho2 = t * mixture_rho2(alpha, tightest_at)
    return math.sqrt(2.0 * (1.0 + 1.0 / t_rho2) * math.log(math.sqrt(t_rho2 + 1.0) / alpha))


def sample_alpha(alpha: float, sample: int, planned: int) -> float:
    """The alpha of separate sample number ``sample`` (1-based) of ``planned``: an equal share,
    so the samples together never spend more than alpha. Raises SampleBudgetSpent beyond the
    plan."""
    if sample < 1:
        raise ValueError(f"samples are numbered from 1, got {sample}")
    if sample > planned:
        raise SampleBudgetSpent(
            f"sample {sample} of {planned} planned: the false-failure budget is spent; judge a "
            "growing sample instead (same sample number) or plan more samples "
            "(planned_samples in configs/judge.yaml)")
    return alpha / planned


def smallest_size(half_width_at: Callable[[float], float], distance: float,
                  cap: int) -> int | None:
    """The smallest sample size at which ``half_width_at(size)`` (an interval's half-width,
    falling with the size) is at most ``distance``: where an effect that far from a
    tolerance's edge would be decided. None when not reached by ``cap`` (the effect sits on
    the edge, or the data are too noisy for any reasonable sample)."""
    if distance <= 0 or half_width_at(cap) > distance:
        return None
    low, high = 1, cap
    if half_width_at(low) <= distance:
        return low
    while high - low > 1:
        middle = (low + high) // 2
        if half_width_at(middle) <= distance:
            high = middle
        else:
            low = middle
    return high
