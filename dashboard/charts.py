"""Altair charts for the figures people would rather look at than read.

Each builder takes a frame that `analytics` computed and returns a chart; tooltips carry the
same human formatting as the tables (`dashboard.format`), added here as display columns.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import altair as alt
import polars as pl

Formatter = Callable[[float | None], str]
HEIGHT = 280  # the whole chart (title, legend, axes), as Streamlit fits it to the column
MONEY_AXIS = "$,.4~f"  # d3: thousands separators, up to 4 decimals, trailing zeros trimmed
PERCENT_AXIS = ".0%"
# Milliseconds on an axis, the way `format.duration` writes them: 850 ms, 1.5 s, 20 s.
DURATION_LABELS = (
    "datum.value < 1000 ? format(datum.value, ',.0f') + ' ms' : format(datum.value / 1000, ',.1~f') + ' s'"
)


def _axis(axis_format: str | None) -> alt.Axis:
    if axis_format == DURATION_LABELS:
        return alt.Axis(labelExpr=DURATION_LABELS)
    return alt.Axis(format=axis_format) if axis_format else alt.Axis()


def _shown(frame: pl.DataFrame, column: str, formatter: Formatter) -> pl.DataFrame:
    """Add `<column>_text`, the value as a person reads it, for tooltips."""
    text = [formatter(v) for v in frame[column].to_list()]
    return frame.with_columns(pl.Series(f"{column}_text", text, dtype=pl.String))


def _time_axis(every: str) -> alt.X:
    label = "%b %d %H:%M" if every.endswith("h") else "%b %d"
    return alt.X("bucket:T", title=None, axis=alt.Axis(format=label, labelAngle=0, tickCount=8))


def time_bars(
    frame: pl.DataFrame, column: str, title: str, every: str, formatter: Formatter, axis_format: str | None = None,
) -> alt.Chart:
    """One bar per bucket (cost or requests over time)."""
    data = _shown(frame, column, formatter)
    return (
        alt.Chart(data, height=HEIGHT, title=title)
        .mark_bar(opacity=0.85)
        .encode(
            x=_time_axis(every),
            y=alt.Y(f"{column}:Q", title=None, axis=_axis(axis_format)),
            tooltip=[alt.Tooltip("bucket:T", title="From", format="%Y-%m-%d %H:%M UTC"),
                     alt.Tooltip(f"{column}_text:N", title=title)],
        )
    )


def time_lines(
    frame: pl.DataFrame, columns: dict[str, str], title: str, every: str, formatter: Formatter,
    axis_format: str | None = None,
) -> alt.Chart:
    """Several measures over time as lines (`columns` maps a column to its legend label)."""
    long = frame.select("bucket", *columns).unpivot(index="bucket", on=list(columns), variable_name="measure")
    long = _shown(long, "value", formatter).with_columns(pl.col("measure").replace_strict(columns))
    return (
        alt.Chart(long, height=HEIGHT, title=title)
        .mark_line(point=alt.OverlayMarkDef(size=18), interpolate="monotone")
        .encode(
            x=_time_axis(every),
            y=alt.Y("value:Q", title=None, axis=_axis(axis_format)),
            color=alt.Color("measure:N", title=None,
                            legend=alt.Legend(orient="bottom") if len(columns) > 1 else None),
            tooltip=[alt.Tooltip("bucket:T", title="From", format="%Y-%m-%d %H:%M UTC"),
                     alt.Tooltip("measure:N", title="Measure"), alt.Tooltip("value_text:N", title="Value")],
        )
    )


def stacked_bars(
    frame: pl.DataFrame, column: str, group: str, title: str, every: str, formatter: Formatter,
    axis_format: str | None = None, order: Sequence[str] | None = None,
) -> alt.Chart:
    """A bar per bucket split by `group` (cost per provider or per feature over time)."""
    data = _shown(frame.filter(pl.col(column).fill_null(0) > 0), column, formatter)
    color = alt.Color(f"{group}:N", title=None, legend=alt.Legend(orient="bottom", columns=5, labelLimit=160),
                      sort=list(order) if order is not None else "ascending")
    return (
        alt.Chart(data, height=HEIGHT + 60, title=title)
        .mark_bar()
        .encode(
            x=_time_axis(every),
            y=alt.Y(f"sum({column}):Q", title=None, axis=_axis(axis_format)),
            color=color,
            tooltip=[alt.Tooltip("bucket:T", title="From", format="%Y-%m-%d %H:%M UTC"),
                     alt.Tooltip(f"{group}:N"), alt.Tooltip(f"{column}_text:N", title=title)],
        )
    )


def ranked_bars(frame: pl.DataFrame, category: str, column: str, title: str, formatter: Formatter,
                axis_format: str | None = None) -> alt.Chart:
    """Horizontal bars, largest first (cost per feature)."""
    data = _shown(frame.filter(pl.col(column).is_not_null()), column, formatter)
    return (
        alt.Chart(data, title=title, height=alt.Step(26))
        .mark_bar()
        .encode(
            y=alt.Y(f"{category}:N", sort="-x", title=None),
            x=alt.X(f"{column}:Q", title=None, axis=_axis(axis_format)),
            tooltip=[alt.Tooltip(f"{category}:N"), alt.Tooltip(f"{column}_text:N", title=title)],
        )
    )



def split_ranked_bars(frame: pl.DataFrame, category: str, column: str, group: str, title: str,
                      formatter: Formatter, axis_format: str | None = None) -> alt.Chart:
    """Horizontal bars, largest total first, each split by `group` (an end user's cost per feature)."""
    data = _shown(frame.filter(pl.col(column).fill_null(0) > 0), column, formatter)
    return (
        alt.Chart(data, title=title, height=alt.Step(26))
        .mark_bar()
        .encode(
            y=alt.Y(f"{category}:N", sort="-x", title=None),
            x=alt.X(f"sum({column}):Q", title=None, axis=_axis(axis_format)),
            color=alt.Color(f"{group}:N", title=None, legend=alt.Legend(orient="bottom", columns=5, labelLimit=160)),
            tooltip=[alt.Tooltip(f"{category}:N"), alt.Tooltip(f"{group}:N"),
                     alt.Tooltip(f"{column}_text:N", title=title)],
        )
    )
