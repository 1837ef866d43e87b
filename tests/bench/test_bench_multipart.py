"""The ``multipart`` figure: shape, counts, the message that crossed, the instruction counts.

No timing is asserted (the machine is shared).
"""

from __future__ import annotations

import importlib
import math
import shutil
from typing import Any

import pytest

from transportkit._bench import _fig_multipart
from transportkit._bench._common import BenchConfig
from transportkit._bench._instructions import MARKET_DATA, PATHS, _check, _loop

# The module (the package's own `_throughput` attribute is a function until it is imported).
_throughput = importlib.import_module("transportkit._bench._throughput")

TINY = BenchConfig.quick(rounds=1, multipart_messages=300, timeout_s=10.0)


@pytest.fixture(scope="module")
def figure() -> dict[str, Any]:
    return _fig_multipart.run(TINY)


def test_shape_and_counts(figure: dict[str, Any]) -> None:
    assert figure["frame_bytes"] == [7, 8, 1024]
    assert set(figure["patterns"]) == {"push_pull", "pub_sub"}
    for fig in figure["patterns"].values():
        assert set(fig["msgs_per_s"]) == {"raw", "tk"}
        assert all(v > 0 and math.isfinite(v) for v in fig["msgs_per_s"].values())
        assert fig["tk_vs_raw"] > 0
        assert fig["received"] == {"raw": 300, "tk": 300}
    assert figure["instructions"] == {
        "measured": False,
        "reason": "not asked for (multipart_instructions is 0)",
    }


def test_rows_and_lines(figure: dict[str, Any]) -> None:
    rows = _fig_multipart.checks(figure)
    assert [(r["target"], r["figure"]) for r in rows] == [
        ("multipart_vs_raw", "push_pull tk/raw"),
        ("multipart_vs_raw", "pub_sub tk/raw"),
    ]
    text = "\n".join(_fig_multipart.format_lines(figure))
    assert "| push_pull |" in text and "| pub_sub |" in text and "7+8+1024 B" in text


def test_a_wrong_message_fails_the_run(monkeypatch: pytest.MonkeyPatch) -> None:
    real = _throughput._receiver

    def truncating(impl: str, sock: Any, **kwargs: Any) -> Any:
        recv = real(impl, sock, **kwargs)
        return lambda: recv()[:2]  # loses the data frame

    monkeypatch.setattr(_throughput, "_receiver", truncating)
    with pytest.raises(RuntimeError, match="not the message sent"):
        _fig_multipart.run(TINY)


@pytest.mark.parametrize("path", ["raw-md", "tk-md", "raw", "tk"])
def test_the_instruction_loops_move_the_message_they_count(path: str) -> None:
    assert path in PATHS
    _loop(path, 3)  # runs outside callgrind too; raises if the message came back wrong


def test_the_instruction_loop_check_catches_a_wrong_message() -> None:
    with pytest.raises(RuntimeError, match="received"):
        _check([b"MD.AAPL"], list(MARKET_DATA), 1)


@pytest.mark.slow
@pytest.mark.timeout(1200)  # four runs under callgrind
@pytest.mark.skipif(shutil.which("valgrind") is None, reason="no valgrind")
def test_the_figure_counts_instructions_under_callgrind() -> None:
    figure = _fig_multipart.run(
        BenchConfig.quick(rounds=1, multipart_messages=200, multipart_instructions=500)
    )
    counted = figure["instructions"]
    assert counted["measured"] is True
    assert counted["per_message"]["raw"] > 0 and counted["per_message"]["tk"] > 0
    assert "Instructions per message (callgrind" in "\n".join(_fig_multipart.format_lines(figure))


def test_market_data_is_topic_timestamp_data() -> None:
    topic, stamp, data = MARKET_DATA
    assert topic == b"MD.AAPL" and len(stamp) == 8 and len(data) == 1024
