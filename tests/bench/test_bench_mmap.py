"""The bench's ``mmap`` figure runs with tiny counts and has the report's shape.

No timing is asserted (the machine is shared); what is checked is that every variant
sent and received the regions it should, and that they arrived intact.
"""

from __future__ import annotations

import math
import mmap
import threading
from pathlib import Path
from typing import Any

import pytest

from transportkit._bench import BenchConfig, run
from transportkit._bench import _fig_mmap as fig
from transportkit._bench._report import TARGETS, format_report

pytest.importorskip("hdrh")

CONFIG = BenchConfig.quick(rounds=2, mmap_messages=5, timeout_s=5.0)


@pytest.fixture(scope="module")
def figure() -> dict[str, Any]:
    return fig.run(CONFIG)


def test_every_transport_and_variant_measured(figure: dict[str, Any]) -> None:
    assert figure["message_bytes"] == fig.REGION == 1 << 20
    assert figure["messages_per_run"] == 5
    assert set(figure["figures"]) == {"inproc", "ipc"}
    for data in figure["figures"].values():
        assert list(data["msgs_per_s"]) == list(fig.VARIANTS)
        for name in fig.VARIANTS:
            rounds = data["rounds"][name]
            assert len(rounds) == CONFIG.rounds
            assert all(math.isfinite(r) and r > 0 for r in rounds)
            # Every region sent in every round was received, whole.
            assert data["received"][name] == CONFIG.rounds * CONFIG.mmap_messages
        assert data["intact"] is True
        assert set(data["ratios"]) == {
            "tk_mapped_vs_tk_copy",
            "raw_zerocopy_vs_tk_copy",
            "tk_mapped_vs_raw_zerocopy",
        }
        assert all(v > 0 for v in data["ratios"].values())


def test_checks_and_lines(figure: dict[str, Any]) -> None:
    rows = fig.checks(figure)
    assert [r["figure"] for r in rows] == [
        "inproc tk mapped zero-copy/tk copy",
        "ipc tk mapped zero-copy/tk copy",
    ]
    assert all(r["target"] == "mmap_zerocopy_vs_copy" and r["limit"] == ">= 2.0" for r in rows)
    assert TARGETS["mmap_zerocopy_vs_copy"] == (">=", 2.0)
    text = "\n".join(fig.format_lines(figure))
    assert "Memory-mapped file" in text and "tk_mapped" in text and "raw_zerocopy" in text


def test_the_bench_runs_it_by_name() -> None:
    report = run(BenchConfig.quick(rounds=1, mmap_messages=2, timeout_s=5.0), only=["mmap"])
    assert report["mmap"]["figures"]["ipc"]["received"]["tk_mapped"] == 2
    targets = [t for t in report["targets"] if t["target"] == "mmap_zerocopy_vs_copy"]
    assert len(targets) == 2
    assert "Memory-mapped file" in format_report(report)


def test_the_raw_mapping_is_unmapped_once_its_last_view_goes(tmp_path: Path) -> None:
    """The figure's raw copy=False variant leaves views of its mapping to pyzmq's
    collector thread; the figure waits for them instead of failing with BufferError
    (seen in a full run before the wait existed).
    """
    path = tmp_path / "f.bin"
    path.write_bytes(b"x" * 4096)
    with path.open("rb") as f:
        raw_map = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    held = [memoryview(raw_map)[:10]]
    timer = threading.Timer(0.05, held.clear)  # another thread drops the view later
    timer.start()
    try:
        fig._unmap(raw_map, 2.0)
    finally:
        timer.cancel()
    assert raw_map.closed
    with path.open("rb") as f:
        stuck = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    view = memoryview(stuck)
    with pytest.raises(BufferError):
        fig._unmap(stuck, 0.05)  # bounded: a view that never goes is an error
    view.release()
    stuck.close()
