"""The run timeline behind the plot: every stream, bounded memory, nothing dropped."""

from __future__ import annotations

import json

from transportkit.scenario._metrics import TIMELINE_BINS, Timeline


def test_a_long_run_coarsens_its_bins_and_loses_no_count() -> None:
    timeline = Timeline()
    for i in range(300_000):  # more than the 200,000 deliveries the old timeline kept
        timeline.delivered(i * 0.001, "feed")  # 1 kHz for 300 s
    timeline.add(150.0, "orders", "failed", 3)
    assert timeline.total("feed", "delivered") == 300_000
    assert timeline.total("orders", "failed") == 3
    assert all(len(bins) <= TIMELINE_BINS for bins in timeline.series.values())
    assert max(timeline.series[("feed", "delivered")]) < TIMELINE_BINS
    assert timeline.bin_seconds == 0.128  # 1 ms doubled until 300 s fit in 4096 bins


def test_a_timeline_crosses_a_process_boundary_and_merges() -> None:
    child = Timeline()
    for i in range(1000):
        child.delivered(i * 0.01, "feed")
    child.add(5.0, "feed", "gap")
    copied = Timeline.from_dict(json.loads(json.dumps(child.as_dict())))
    assert copied == child
    parent = Timeline()
    parent.add(20.0, "orders", "delivered", 7)  # already coarser than the child
    parent.merge(copied)
    assert parent.total("feed", "delivered") == 1000
    assert parent.total("feed", "gap") == 1
    assert parent.total("orders", "delivered") == 7
    assert parent.total("nothing", "delivered") == 0
