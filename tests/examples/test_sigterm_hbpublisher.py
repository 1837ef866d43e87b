"""SIGTERM to the heartbeat publisher program: it stops publishing, prints its totals
and exits 0."""

from __future__ import annotations

from _sigterm_helpers import EXIT_BOUND, server, terminate


def test_sigterm_stops_publishing_and_exits_0() -> None:
    with server("hbpublisher", "--bind", "tcp://127.0.0.1:*", "--interval", "0.05") as child:
        child.wait_for_line("READY", 5.0)
        terminate(child)
        assert child.wait(EXIT_BOUND) == 0
        assert "STOPPED clean" in child.lines
        assert any(line.startswith("sent ") and "heartbeats" in line for line in child.lines)
