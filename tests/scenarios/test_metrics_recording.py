"""Scenario metrics record latencies in batches and count the timeline cheaply: the
histograms and timelines read are the same as recording one value at a time.
"""

from __future__ import annotations

import math
import random

import pytest

pytest.importorskip("hdrh")

from hdrh.histogram import HdrHistogram

from transportkit.scenario._metrics import (
    RECORD_BATCH,
    Receipt,
    Timeline,
    _histogram,
    record_values,
)

HOUR_NS = 3_600_000_000_000


def _one_by_one(values: list[int]) -> HdrHistogram:
    hist = _histogram()
    for value in values:
        hist.record_value(min(value, HOUR_NS))
    return hist


def _same(a: HdrHistogram, b: HdrHistogram) -> None:
    assert bytes(a.counts) == bytes(b.counts)
    assert a.get_total_count() == b.get_total_count()
    assert (a.min_value, a.max_value) == (b.min_value, b.max_value)
    for percentile in (0.0, 50.0, 99.0, 99.9, 100.0):
        assert a.get_value_at_percentile(percentile) == b.get_value_at_percentile(percentile)


def test_record_values_counts_as_record_value_does_across_the_range() -> None:
    rng = random.Random(5)
    values = [1, 2, 1023, 1024, 2047, 2048, 4095, 4096, HOUR_NS - 1, HOUR_NS]
    values += [round(math.exp(rng.uniform(0, math.log(HOUR_NS)))) for _ in range(5_000)]
    values = [min(max(v, 1), HOUR_NS) for v in values]
    batched = _histogram()
    record_values(batched, values[:3_000])
    record_values(batched, values[3_000:])
    _same(batched, _one_by_one(values))


def test_a_receipt_read_mid_batch_has_every_latency() -> None:
    rng = random.Random(7)
    values = [rng.randrange(1, 10**9) for _ in range(RECORD_BATCH * 2 + 17)]
    receipt = Receipt("r")
    reference: list[int] = []
    for i, value in enumerate(values):
        receipt.record(value)
        reference.append(value)
        if i in (0, RECORD_BATCH - 2, RECORD_BATCH + 5, len(values) - 1):
            _same(receipt.latency, _one_by_one(reference))  # read at any moment: complete
    assert receipt.delivered == len(values)


def test_a_receipt_counts_non_positive_latencies_as_deliveries_only_and_caps_at_an_hour() -> None:
    receipt = Receipt("r")
    for value in (0, -5, 10 * HOUR_NS, 1234):
        receipt.record(value)
    assert receipt.delivered == 4
    assert receipt.latency.get_total_count() == 2
    _same(receipt.latency, _one_by_one([HOUR_NS, 1234]))


def test_timeline_counts_negative_and_nan_times_at_zero() -> None:
    timeline = Timeline()
    timeline.add(-1.0, "s", "delivered")
    timeline.add(math.nan, "s", "delivered")  # the old max(when, 0.0) kept NaN: ValueError
    timeline.add(0.0025, "s", "delivered", 3)
    timeline.add(0.5, "s", "gap", 0)  # ignored
    assert timeline.series == {("s", "delivered"): {0: 2, 2: 3}}
