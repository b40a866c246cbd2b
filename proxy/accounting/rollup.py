"""Rollup accounting: a batch of event rows aggregated in memory into rollup rows (SPEC §4).

Pure, no I/O: the writer hands it the rows it has just inserted (in `COLUMNS` order, as
`Event.row()` makes them or as `RETURNING` gives them back) and upserts what comes out in the
same transaction (`proxy.store.db.rollups`). The rows are the ones of migration 005's tables
`rollup_hourly` (per org, UTC hour, feature, task, provider, model, routed model) and
`rollup_daily_end_user` (per org, UTC day, end user, feature), column for column as its
comments define them; `lectr_rollup_rebuild` (migration 006) computes the same rows in SQL. The
hourly rows before the watermark merged per UTC day are the batch's `rollup_daily` rows
(migrations 008 and 010: usually none, a batch spans the last hour or two and the seal merges
hours once they are over); this costs a step per group, not per event.

Cheap by construction, because it runs in the writer's flush thread, holding the GIL, for every
event (the writer's target is ≥ 20,000 events/s): one Python step per row puts the row in its
group, then every figure of a group is computed column by column with C-level builtins (`zip`,
`map`, `filter`, `compress`, `sum`, `Counter`) rather than one interpreted statement per row and
figure. Histogram buckets use `math.log(v) / log(γ)` exactly as `proxy.accounting.histogram.bucket` and
`lectr_bucket` do, so the writer, Python and SQL put a value in the same bucket.

Empty dimensions: the rollups' unique key coalesces null dimensions to '' (migration 005), so
'' and null cannot be two groups; both are stored as null (untagged), here and in the rebuild.
"""

from __future__ import annotations

import datetime as dt
import decimal
import math
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from functools import cache, partial
from itertools import compress, repeat
from operator import and_, is_, is_not, itemgetter, le, lt, methodcaller, not_, or_, sub, truediv
from typing import Any

from proxy.accounting.histogram import ZERO
from proxy.accounting.record import COLUMNS

# γ as proxy.accounting.histogram and lectr_bucket compute it, and log(γ): a bucket is
# `ceil(log(v) / log(γ))`, the same two operations as `bucket` and `lectr_bucket` (and as
# `math.log(v, γ)`, which takes log(γ) again for every value).
_GAMMA = 1.015 / 0.985
_LOG_GAMMA = math.log(_GAMMA)
_CENT = Decimal("1e-10")  # events.cost_usd is numeric(20, 10): Postgres rounds half away from zero
_UTC = dt.UTC
_is_known = partial(is_not, None)
_positive = partial(lt, 0)
_stored_cost = methodcaller("quantize", _CENT, decimal.ROUND_HALF_UP)

(ORG, CREATED, FEATURE, TASK, PROVIDER, MODEL, ROUTED, STREAM, STATUS, ERROR_TYPE, LATENCY, TTFT, UPSTREAM,
 INPUT, OUTPUT, CACHED, CACHE_WRITE, REASONING, ESTIMATED, COST, REQUEST_BYTES, RESPONSE_BYTES, MESSAGES,
 END_USER) = (COLUMNS.index(name) for name in (
    "org_id", "created_at", "feature", "task", "provider", "model", "routed_model", "stream", "status_code",
    "error_type", "latency_ms", "ttft_ms", "upstream_ms", "input_tokens", "output_tokens", "cached_input_tokens",
    "cache_write_tokens", "reasoning_tokens", "usage_estimated", "cost_usd", "request_bytes", "response_bytes",
    "message_count", "end_user"))
_HOURLY_DIMENSIONS = itemgetter(ORG, FEATURE, TASK, PROVIDER, MODEL, ROUTED)
_DAILY_DIMENSIONS = itemgetter(ORG, END_USER, FEATURE)
_CREATED, _END_USER = itemgetter(CREATED), itemgetter(END_USER)

HISTOGRAMS = ("latency_ms", "ttft_ms", "upstream_ms", "overhead_ms", "input_tokens", "output_tokens")
HOURLY_COLUMNS: tuple[str, ...] = (
    "org_id", "hour", "feature", "task", "provider", "model", "routed_model",
    "requests", "errors", "status_2xx", "status_3xx", "status_4xx", "status_5xx", "status_429", "status_499",
    "status_other", "input_tokens", "output_tokens", "cached_input_tokens", "cache_write_tokens",
    "reasoning_tokens", "with_usage", "usage_estimated", "cost_usd", "priced", "unpriced",
    "unpriced_input_tokens", "unpriced_output_tokens", "stream", "latency_ms_sum", "latency_ms_n", "ttft_ms_sum",
    "ttft_ms_n", "upstream_ms_sum", "upstream_ms_n", "overhead_ms_sum", "overhead_ms_n", "message_count_sum",
    "message_count_n", "request_bytes", "response_bytes", "last_error_at",
    *(f"{name}_{part}" for name in HISTOGRAMS for part in "bc"),
)
HOURLY_KEY = 7  # the first seven columns name the group
DAILY_COLUMNS: tuple[str, ...] = (
    "org_id", "day", "end_user", "feature", "requests", "errors", "input_tokens", "output_tokens",
    "cached_input_tokens", "cache_write_tokens", "reasoning_tokens", "cost_usd", "unpriced", "latency_ms_sum",
    "latency_ms_n",
)
DAILY_KEY = 4


@dataclass(slots=True)
class Rollups:
    """The rollup rows of a batch: `hourly` in HOURLY_COLUMNS order, `days` (the hourly rows merged
    per UTC day, `day` a date in place of `hour`) in the same order, `daily` (per end user) in
    DAILY_COLUMNS order, each sorted by its key (every writer then locks rollup rows in the same
    order: no deadlocks)."""

    hourly: list[tuple[Any, ...]] = field(default_factory=list)
    daily: list[tuple[Any, ...]] = field(default_factory=list)
    days: list[tuple[Any, ...]] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.hourly or self.daily)


def aggregate(rows: Iterable[Sequence[Any]], sealed: dt.datetime) -> Rollups:
    """The rollup rows of event rows (in `COLUMNS` order) that were all just inserted. `sealed`: the
    watermark of `rollup_daily` (`proxy.store.db.rollups.sealed_through`); `days` holds the hours
    before it (the later ones are merged into `rollup_daily` by the seal)."""
    rows = rows if isinstance(rows, list) else list(rows)
    users = list(map(_END_USER, rows))
    if users.count(None) != len(users):
        daily = _grouped(list(compress(rows, map(is_not, users, repeat(None)))), _DAILY_DIMENSIONS, 24)
    else:
        daily = {}
    with decimal.localcontext() as context:
        context.prec = 60  # cost sums are exact (numeric(30, 10) has 30 digits)
        hourly_rows = sorted(
            (_hourly(key, group) for key, group in _normalised(_grouped(rows, _HOURLY_DIMENSIONS, 1), 1, 5).items()),
            key=_order,
        )
        return Rollups(
            hourly=hourly_rows,
            daily=sorted((_daily(key, group) for key, group in _normalised(daily, 2, 1).items()), key=_order),
            days=by_day([row for row in hourly_rows if row[1] < sealed]),
        )


def _grouped(
    rows: list[Sequence[Any]], dimensions: Callable[[Sequence[Any]], tuple[Any, ...]], hours: int
) -> dict[tuple[Any, ...], list[Sequence[Any]]]:
    """Rows grouped by (dimensions, period), the period in hours since 0001-01-01 UTC (`hours`
    1) or in days (24). The one interpreted step per row puts it in its group of dimensions (a
    dict keyed by the C-built tuple); a group's period is then read off its earliest and latest
    `created_at`, and only a group that spans periods (a batch across midnight or an hour's end)
    is split row by row."""
    by_dimensions: defaultdict[tuple[Any, ...], list[Sequence[Any]]] = defaultdict(list)
    for row in rows:
        by_dimensions[dimensions(row)].append(row)
    groups: dict[tuple[Any, ...], list[Sequence[Any]]] = {}
    for key, group in by_dimensions.items():
        created = list(map(_CREATED, group))
        first, last = _hour(min(created)) // hours, _hour(max(created)) // hours
        if first == last:
            groups[(key, first)] = group
            continue
        for row, when in zip(group, created, strict=True):
            period = (key, _hour(when) // hours)
            if period in groups:
                groups[period].append(row)
            else:
                groups[period] = [row]
    return groups


def _hour(created: dt.datetime) -> int:
    """Hours since 0001-01-01 UTC (cheaper than `timestamp()`); a replayed row comes back in the
    session's time zone."""
    if created.tzinfo is not _UTC:
        created = created.astimezone(_UTC)
    return created.toordinal() * 24 + created.hour


def _normalised(
    groups: dict[tuple[Any, ...], list[Sequence[Any]]], first: int, count: int
) -> dict[tuple[Any, ...], list[Sequence[Any]]]:
    """Groups keyed by (org, dimensions..., period) with '' dimensions made null, merging groups
    that then coincide. `first`, `count`: where the nullable dimensions sit in the dimensions."""
    merged: dict[tuple[Any, ...], list[Sequence[Any]]] = {}
    for (dimensions, period), group in groups.items():
        key = (*dimensions[:first], *(value or None for value in dimensions[first : first + count]),
               *dimensions[first + count :], int(period))
        if key in merged:
            merged[key] = merged[key] + group
        else:
            merged[key] = group
    return merged


# Where the figures of an hourly row sit: counters and sums, then last_error_at, then histograms.
_LAST_ERROR = HOURLY_COLUMNS.index("last_error_at")


def by_day(hourly: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """Hourly rows (sorted by key) merged per UTC day: `rollup_daily` rows, sorted by key.

    Sums are added (costs as exact decimals: `aggregate` calls this in its 60-digit context),
    `last_error_at` is the latest, histograms are merged bucket by bucket. A batch has a row
    per group and hour, so most days have one hourly row and merge nothing."""
    days: dict[tuple[Any, ...], list[Any]] = {}
    for row in hourly:
        key = (row[0], row[1].date(), *row[2:HOURLY_KEY])
        merged = days.get(key)
        if merged is None:
            days[key] = [*key, *row[HOURLY_KEY:]]
            continue
        for i in range(HOURLY_KEY, _LAST_ERROR):
            merged[i] += row[i]
        if row[_LAST_ERROR] is not None and (merged[_LAST_ERROR] is None or row[_LAST_ERROR] > merged[_LAST_ERROR]):
            merged[_LAST_ERROR] = row[_LAST_ERROR]
        for i in range(_LAST_ERROR + 1, len(row), 2):
            counts = Counter(dict(zip(merged[i], merged[i + 1], strict=True)))
            counts.update(dict(zip(row[i], row[i + 1], strict=True)))
            indices = sorted(counts)
            merged[i], merged[i + 1] = indices, [counts[index] for index in indices]
    return sorted((tuple(row) for row in days.values()), key=_order)


def _order(row: tuple[Any, ...]) -> tuple[Any, ...]:
    return tuple("" if value is None else value for value in row[:HOURLY_KEY])


def _errors(status: Sequence[int], error_type: Sequence[Any]) -> list[bool]:
    """Per row: status >= 400 or an error type (analytics' IS_ERROR)."""
    return list(map(or_, map(le, repeat(400), status), map(is_not, error_type, repeat(None))))


def _sum(column: Iterable[Any]) -> int:
    return sum(filter(None, column))


def _known(column: Iterable[Any]) -> list[Any]:
    return list(filter(_is_known, column))


def _cost(column: Sequence[Any]) -> Decimal:
    """The sum of the costs as Postgres stores them (rounded to 10 places, half away from zero)."""
    try:
        return sum(map(_stored_cost, filter(None, column)), Decimal(0))
    except AttributeError:  # a cost that is not a Decimal (a float): as Postgres reads its text
        return sum((_stored_cost(Decimal(str(cost))) for cost in filter(None, column)), Decimal(0))


def histogram(values: Sequence[float]) -> tuple[list[int], list[int]]:
    """(bucket indices ascending, counts) of known values, as `proxy.accounting.histogram.Histogram.arrays`."""
    try:  # times are positive: one pass
        counts = Counter(map(math.ceil, map(truediv, map(math.log, values), repeat(_LOG_GAMMA))))
    except ValueError:  # a zero or a negative (no output tokens, an overhead below zero): the ZERO bucket
        positive = list(filter(_positive, values))
        counts = Counter(map(math.ceil, map(truediv, map(math.log, positive), repeat(_LOG_GAMMA))))
        counts[ZERO] += len(values) - len(positive)
    indices = sorted(counts)
    return indices, list(map(counts.__getitem__, indices))


def token_histogram(values: Sequence[int]) -> tuple[list[int], list[int]]:
    """`histogram` of token counts: integers, nearly all below `_TABLE_SIZE`, whose buckets are
    looked up in a table `histogram`'s formula filled (a list index instead of two logarithms)."""
    if not values:
        return [], []
    table = _token_buckets()
    try:
        if min(values) < 0:  # (a negative index would read from the table's end)
            return histogram(values)
        counts = Counter(map(table.__getitem__, values))
    except (IndexError, TypeError):  # a count beyond the table, or not an integer
        return histogram(values)
    indices = sorted(counts)
    return indices, list(map(counts.__getitem__, indices))


_TABLE_SIZE = 1 << 16


@cache
def _token_buckets() -> list[int]:
    """The bucket of every integer below `_TABLE_SIZE`, by `histogram`'s own formula (0: ZERO)."""
    return [ZERO, *map(math.ceil, map(truediv, map(math.log, range(1, _TABLE_SIZE)), repeat(_LOG_GAMMA)))]


def _hourly(key: tuple[Any, ...], rows: list[Sequence[Any]]) -> tuple[Any, ...]:
    org, feature, task, provider, model, routed, hour = key
    columns = list(zip(*rows, strict=True))
    status = columns[STATUS]
    errors = _errors(status, columns[ERROR_TYPE])
    classes = Counter(status)
    by_class = [0] * 7  # 2xx 3xx 4xx 5xx 429 499 other
    for code, count in classes.items():
        if 200 <= code < 600:
            by_class[code // 100 - 2] += count
            if code == 429 or code == 499:
                by_class[4 if code == 429 else 5] += count
        else:
            by_class[6] += count
    inputs, outputs, costs = columns[INPUT], columns[OUTPUT], columns[COST]
    none = repeat(None)
    unpriced = list(map(and_, map(is_, costs, none), map(not_, errors)))
    latency, upstream = columns[LATENCY], columns[UPSTREAM]
    both = list(map(and_, map(is_not, latency, none), map(is_not, upstream, none)))
    overhead = list(map(sub, compress(latency, both), compress(upstream, both)))
    known_latency, known_ttft, known_upstream = _known(latency), _known(columns[TTFT]), _known(upstream)
    known_input, known_output, messages = _known(inputs), _known(outputs), _known(columns[MESSAGES])
    n = len(rows)
    return (
        org, dt.datetime.fromordinal(hour // 24).replace(hour=hour % 24, tzinfo=_UTC), feature, task, provider,
        model, routed,
        n, sum(errors), *by_class,
        sum(known_input), sum(known_output), _sum(columns[CACHED]), _sum(columns[CACHE_WRITE]),
        _sum(columns[REASONING]),
        n - sum(map(and_, map(is_, inputs, none), map(is_, outputs, none))),
        sum(columns[ESTIMATED]), _cost(costs), n - sum(map(is_, costs, none)), sum(unpriced),
        _sum(compress(inputs, unpriced)), _sum(compress(outputs, unpriced)), sum(columns[STREAM]),
        float(sum(known_latency)), len(known_latency), float(sum(known_ttft)), len(known_ttft),
        float(sum(known_upstream)), len(known_upstream), float(sum(overhead)), len(overhead),
        sum(messages), len(messages), _sum(columns[REQUEST_BYTES]), _sum(columns[RESPONSE_BYTES]),
        max(compress(columns[CREATED], errors), default=None),
        *histogram(known_latency), *histogram(known_ttft), *histogram(known_upstream), *histogram(overhead),
        *token_histogram(known_input), *token_histogram(known_output),
    )


def _daily(key: tuple[Any, ...], rows: list[Sequence[Any]]) -> tuple[Any, ...]:
    org, end_user, feature, day = key
    columns = list(zip(*rows, strict=True))
    errors = _errors(columns[STATUS], columns[ERROR_TYPE])
    costs = columns[COST]
    latency = _known(columns[LATENCY])
    return (
        org, dt.date.fromordinal(day), end_user, feature, len(rows), sum(errors),
        _sum(columns[INPUT]), _sum(columns[OUTPUT]), _sum(columns[CACHED]), _sum(columns[CACHE_WRITE]),
        _sum(columns[REASONING]), _cost(costs),
        sum(map(and_, map(is_, costs, repeat(None)), map(not_, errors))), float(sum(latency)), len(latency),
    )


__all__ = ["DAILY_COLUMNS", "HISTOGRAMS", "HOURLY_COLUMNS", "Rollups", "aggregate", "by_day", "histogram"]
