"""`analytics.rollups.quantiles` (both ways: numpy where it is imported, polars expressions where it
is not) against `proxy.accounting.histogram` (the reference implementation of the layout): the same
buckets, the same quantiles, on random values."""

from __future__ import annotations

import random
import sys
from collections.abc import Iterator

import numpy  # the numpy way needs it imported; the fixture hides it for the other
import polars as pl
import pytest

from analytics.rollups import bucket, quantiles, representative
from proxy.accounting.histogram import Histogram
from proxy.accounting.histogram import bucket as reference_bucket
from proxy.accounting.histogram import representative as reference_representative

QS = {"p0": 0.0, "p10": 0.1, "p50": 0.5, "p90": 0.9, "p95": 0.95, "p99": 0.99, "p100": 1.0}


@pytest.fixture(autouse=True, params=["numpy", "polars"])
def way(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """Each test runs both ways: `quantiles` reads numpy only where the process imported it."""
    if request.param == "polars":
        monkeypatch.delitem(sys.modules, "numpy")
    yield request.param


def test_bucket_and_representative_match_the_reference() -> None:
    rng = random.Random(3)
    values = [0.0, -2.0, 1.0, 1e-9, 1e12, *(rng.lognormvariate(3, 3) for _ in range(5000))]
    got = pl.DataFrame({"v": values}).select(bucket(pl.col("v")).alias("b"))["b"].to_list()
    assert got == [reference_bucket(v) for v in values]
    reps = pl.DataFrame({"b": got}).select(representative(pl.col("b")).alias("r"))["r"].to_list()
    assert reps == pytest.approx([reference_representative(b) for b in got], rel=1e-12)


@pytest.mark.parametrize("seed", range(5))
def test_merged_quantiles_match_the_reference(seed: int) -> None:
    """Rows per (group, hour) histograms, as rollups hold them; polars merges them per group."""
    rng = random.Random(seed)
    rows, reference = [], {g: Histogram() for g in ("a", "b", "c")}
    for group in reference:
        for _ in range(rng.randrange(1, 12)):  # hours
            part = Histogram()
            for _ in range(rng.randrange(1, 300)):
                part.add(rng.choice([0.0, rng.lognormvariate(5, 1.5), float(rng.randrange(1, 5))]))
            reference[group].merge(part)
            b, c = part.arrays()
            rows.append({"g": group, "x_b": b, "x_c": c})
    frame = pl.LazyFrame(rows, schema={"g": pl.String, "x_b": pl.List(pl.Int32), "x_c": pl.List(pl.Int64)})
    got = {r["g"]: r for r in quantiles(frame, ["g"], "x", QS).collect().iter_rows(named=True)}
    for group, histogram in reference.items():
        for name, q in QS.items():
            assert got[group][name] == pytest.approx(histogram.quantile(q), rel=1e-12, abs=1e-12), (group, name)
    overall = Histogram()
    for histogram in reference.values():
        overall.merge(histogram)
    whole = quantiles(frame, [], "x", QS).collect().row(0, named=True)
    assert whole == {name: pytest.approx(overall.quantile(q), rel=1e-12) for name, q in QS.items()}


def test_an_empty_histogram_has_no_quantile() -> None:
    frame = pl.LazyFrame({"x_b": [[]], "x_c": [[]]}, schema={"x_b": pl.List(pl.Int32), "x_c": pl.List(pl.Int64)})
    assert quantiles(frame, [], "x", {"p95": 0.95}).collect().row(0) == (None,)


def test_both_ways_give_the_same_bits(monkeypatch: pytest.MonkeyPatch, way: str) -> None:
    """The numpy and the polars way agree to the last bit (a CLI process and the dashboard print
    the same figures), and so do the expression and the reference representatives."""
    rng = random.Random(11)
    rows = []
    for group in range(40):
        for _ in range(4):
            part = Histogram()
            for _ in range(rng.randrange(1, 200)):
                part.add(rng.lognormvariate(5, 2))
            b, c = part.arrays()
            rows.append({"g": str(group), "x_b": b, "x_c": c})
    frame = pl.LazyFrame(rows, schema={"g": pl.String, "x_b": pl.List(pl.Int32), "x_c": pl.List(pl.Int64)})
    monkeypatch.setitem(sys.modules, "numpy", numpy)
    with_numpy = quantiles(frame, ["g"], "x", QS).collect().sort("g")
    monkeypatch.delitem(sys.modules, "numpy")
    with_polars = quantiles(frame, ["g"], "x", QS).collect().sort("g")
    assert with_numpy.to_dicts() == with_polars.to_dicts()
    indices = list(range(-2000, 2000))
    got = pl.DataFrame({"b": indices}, schema={"b": pl.Int32}).select(representative(pl.col("b")))
    assert got.to_series().to_list() == [reference_representative(i) for i in indices]
