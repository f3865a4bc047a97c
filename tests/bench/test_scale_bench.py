"""The train-scale bench's parts that could be wrong without anyone noticing: the data
written a chunk at a time reads as one data set of the asked size, the sizes parse, the
growth exponent is the slope on a log-log plot, and a step's peak RSS is its own."""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from bench.generate import SyntheticSpec, ensure_partitioned, generate_table
from bench.scale_bench import (
    BETWEEN,
    PeakSteps,
    Size,
    exponent,
    parse_sizes,
    per_unit,
    spec_for,
)
from nbo.core import columns as col
from nbo.data.mapping import load_mapping
from nbo.data.purchases import dataset_files, read_purchases


def test_a_dataset_written_in_chunks_reads_as_one_of_the_asked_size(tmp_path: Path) -> None:
    spec = SyntheticSpec(customers=900, items=300, lines=27_000, seed=1)

    folder, seconds = ensure_partitioned(spec, tmp_path, chunk_lines=10_000)

    assert seconds is not None
    assert [f.name for f in dataset_files(folder)] == [
        "part-00000.parquet",
        "part-00001.parquet",
        "part-00002.parquet",
    ]
    purchases, report = read_purchases(folder, load_mapping("canonical"))
    assert report.rows_read == 27_000
    assert report.customers == 900  # every customer buys, each in one chunk only
    assert report.items <= 300
    # Order ids are numbered across chunks: no order holds two customers.
    per_order = purchases.groupby(col.ORDER_ID, observed=True)[col.CUSTOMER_ID].nunique()
    assert per_order.max() == 1
    # The same items, prices included, in every chunk: an item has one base price
    # (10% of lines at a 20% discount).
    prices = purchases.groupby(col.ITEM_ID, observed=True)[col.PRICE]
    assert prices.nunique().max() <= 2
    assert (prices.min() >= prices.max() * 0.78).all()
    # Cached: a second call does not write again.
    assert ensure_partitioned(spec, tmp_path, chunk_lines=10_000) == (folder, None)


def test_one_chunk_has_the_shape_of_the_single_file_generator(tmp_path: Path) -> None:
    spec = SyntheticSpec(customers=500, items=200, lines=10_000, seed=2)
    folder, _ = ensure_partitioned(spec, tmp_path)
    chunked, _ = read_purchases(folder, load_mapping("canonical"))
    single_file = tmp_path / "single.parquet"
    pq.write_table(generate_table(spec), single_file)
    single, _ = read_purchases(single_file, load_mapping("canonical"))

    assert len(chunked) == pytest.approx(len(single), rel=0.05)
    assert chunked[col.CUSTOMER_ID].nunique() == single[col.CUSTOMER_ID].nunique() == 500
    lines_per_order = len(single) / single[col.ORDER_ID].nunique()
    chunked_lines_per_order = len(chunked) / chunked[col.ORDER_ID].nunique()
    assert chunked_lines_per_order == pytest.approx(lines_per_order, rel=0.15)


def test_sizes_parse_and_customers_and_items_grow_with_the_lines() -> None:
    assert parse_sizes("1M, 3M,300k") == [
        Size("1M", 1_000_000),
        Size("3M", 3_000_000),
        Size("300k", 300_000),
    ]
    with pytest.raises(argparse.ArgumentTypeError, match="size 'lots'"):
        parse_sizes("lots")
    with pytest.raises(argparse.ArgumentTypeError, match="at least 1k"):
        parse_sizes("10")
    small, large = spec_for(3_000_000), spec_for(30_000_000)
    assert (small.customers, small.items) == (100_000, 20_000)  # the default synthetic set
    assert large.customers == 10 * small.customers
    assert large.items == round(20_000 * math.sqrt(10))


def test_the_growth_exponent_is_the_log_log_slope() -> None:
    assert exponent(10.0, 100.0, 1_000, 10_000) == pytest.approx(1.0)
    assert exponent(10.0, 1_000.0, 1_000, 10_000) == pytest.approx(2.0)
    assert exponent(10.0, 10.0, 1_000, 3_000) == pytest.approx(0.0)
    assert exponent(0.0, 1.0, 1, 10) is None
    assert exponent(10.0, 12.0, 3_000, 3_000) is None  # same lines, items moved alone


def test_a_steps_peak_is_its_own_and_counts_for_the_step_around_it() -> None:
    peaks = PeakSteps()
    peaks.step("outer")
    peaks.step("big inner")
    block = np.ones(64 << 20, dtype=np.uint8)  # 64 MiB, touched
    peak_inner = int(block.sum())
    del block
    peaks.done("big inner", 0.0)
    peaks.step("small inner")
    peaks.done("small inner", 0.0)
    peaks.done("outer", 0.0)
    peaks.finish()

    assert peak_inner == 64 << 20
    assert peaks.peaks["big inner"] - peaks.peaks["small inner"] > 50 << 20
    assert peaks.peaks["outer"] >= peaks.peaks["big inner"]
    assert set(peaks.cpu) == {"outer", "big inner", "small inner"}
    assert BETWEEN in peaks.peaks


def test_a_size_can_move_the_items_alone() -> None:
    (size,) = parse_sizes("3M/80k")
    assert size == Size("3M/80k", 3_000_000, 80_000)
    spec = spec_for(size.lines, 0, size.items)
    assert (spec.customers, spec.items) == (spec_for(3_000_000).customers, 80_000)
    with pytest.raises(argparse.ArgumentTypeError, match="size '3M/many'"):
        parse_sizes("3M/many")
    with pytest.raises(argparse.ArgumentTypeError, match="at least 10 items"):
        parse_sizes("3M/5")


def test_memory_per_customer_and_per_item_is_told_apart_only_when_the_sizes_allow() -> None:
    def cost(customers: int, items: int) -> float:
        return 200e6 + 1_300.0 * customers + 900.0 * items

    grown_together = [(c, i, cost(c, i)) for c, i in [(100_000, 20_000), (1_000_000, 63_246)]]
    assert per_unit(grown_together) is None  # two sizes: customers and items not apart
    collinear = [(c, 2 * c, cost(c, 2 * c)) for c in (1_000, 10_000, 100_000)]
    assert per_unit(collinear) is None
    points = [*grown_together, (100_000, 80_000, cost(100_000, 80_000))]
    fixed, customer, item = per_unit(points) or (0.0, 0.0, 0.0)
    assert fixed == pytest.approx(200e6)
    assert customer == pytest.approx(1_300.0)
    assert item == pytest.approx(900.0)
