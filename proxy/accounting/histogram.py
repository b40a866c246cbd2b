"""Mergeable log-bucket histograms (DDSketch's layout), for the rollups' latency and token figures.

A positive value v falls in bucket `i = ceil(log_γ(v))`, that is `γ^(i-1) < v <= γ^i`, with
`γ = (1 + α) / (1 - α)`. Every value of bucket i is within a relative `α` of the bucket's
representative `2·γ^i / (γ + 1)`, so a quantile read from the buckets is within `α` of the exact
one (DDSketch, Masson et al., VLDB 2019). Zero and negative values (an answer with no output
tokens) share one bucket, `ZERO`, whose representative is 0.

The layout is fixed, so two histograms merge by adding their counts bucket by bucket: the hourly
rollup rows of a 90-day window merge into one histogram with a sum. A histogram is stored as two
arrays of the same length, bucket indices ascending and their counts (`*_b int[]`, `*_c bigint[]`
in the rollup tables); Postgres merges them with `lectr_hist_merge` and computes buckets with
`lectr_bucket` (migration 005), which follow the same formulas as this module.

`quantile` interpolates between the representatives of the two ranks around `q·(n-1)`, exactly as
Postgres' `percentile_cont` and polars' linear quantile interpolate between the two values: the
result stays within `α` of theirs, because each representative is within `α` of its value.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

# The relative error bound: 1.5 %, inside the 2 % the SPEC promises with room for float rounding.
ALPHA = 0.015
GAMMA = (1 + ALPHA) / (1 - ALPHA)
_LOG_GAMMA = math.log(GAMMA)
# The bucket of zero and negative values (a 16-bit floor no positive double reaches: |log_γ| < 23,700).
ZERO = -32768


def bucket(value: float) -> int:
    """The bucket index of one value."""
    if value <= 0:
        return ZERO
    return math.ceil(math.log(value) / _LOG_GAMMA)


# 2 / (γ + 1), once: a representative is γ^i times it. A product, not a quotient, so that every
# implementation (here, polars, numpy) rounds it alike: polars divides by a constant as a product
# with its reciprocal, which differs from a division in the last bit.
_SCALE = 2 / (GAMMA + 1)


def representative(index: int) -> float:
    """The value that stands for every value of bucket `index` (within ALPHA of each)."""
    if index == ZERO:
        return 0.0
    return GAMMA**index * _SCALE


class Histogram:
    """Counts per bucket; `add` values, `merge` other histograms, `arrays` for storage."""

    __slots__ = ("counts",)

    def __init__(self, counts: dict[int, int] | None = None) -> None:
        self.counts: dict[int, int] = counts if counts is not None else {}

    def add(self, value: float | None) -> None:
        """Count one value; None (not measured) is not counted."""
        if value is not None:
            index = bucket(value)
            self.counts[index] = self.counts.get(index, 0) + 1

    def merge(self, other: Histogram) -> None:
        counts = self.counts
        for index, count in other.counts.items():
            counts[index] = counts.get(index, 0) + count

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def arrays(self) -> tuple[list[int], list[int]]:
        """(bucket indices ascending, their counts): the stored form."""
        indices = sorted(self.counts)
        return indices, [self.counts[i] for i in indices]

    @classmethod
    def from_arrays(cls, indices: Iterable[int] | None, counts: Iterable[int] | None) -> Histogram:
        histogram = cls()
        if indices is not None and counts is not None:
            for index, count in zip(indices, counts, strict=True):
                histogram.counts[index] = histogram.counts.get(index, 0) + count
        return histogram

    def quantile(self, q: float) -> float | None:
        indices, counts = self.arrays()
        return quantile(indices, counts, q)


def quantile(indices: Sequence[int], counts: Sequence[int], q: float) -> float | None:
    """The q-quantile (0 ≤ q ≤ 1) of a histogram given as ascending indices and their counts, as
    `percentile_cont(q)` would compute it from the values (within ALPHA); None when empty."""
    total = sum(counts)
    if total == 0:
        return None
    rank = q * (total - 1)
    low_rank, high_rank = math.floor(rank), math.ceil(rank)
    low = high = None
    seen = 0
    for index, count in zip(indices, counts, strict=True):
        seen += count
        if low is None and seen > low_rank:
            low = representative(index)
        if seen > high_rank:
            high = representative(index)
            break
    assert low is not None and high is not None
    return low + (high - low) * (rank - low_rank)
