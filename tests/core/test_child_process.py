"""ChildProcess: start on READY, crash with SIGKILL, restart."""

from __future__ import annotations

import pytest

from transportkit.testing import ChildProcess

SERVER = "import time; print('booting'); print('READY 42', flush=True); time.sleep(60)"


def test_start_waits_for_ready_and_kill_is_a_crash() -> None:
    with ChildProcess("-c", SERVER) as child:
        assert child.ready_line == "READY 42"
        assert child.running
        first = child.pid
        assert child.restart() == "READY 42"
        assert child.running and child.pid != first
        child.kill()
        assert not child.running
        child.kill()  # idempotent
    assert child.lines.count("booting") == 2


def test_a_child_that_dies_before_ready_is_reported() -> None:
    child = ChildProcess("-c", "print('oops'); raise SystemExit(3)")
    with pytest.raises(RuntimeError, match="exited with 3"):
        child.start()
    assert "oops" in child.lines


def test_a_silent_child_times_out_and_is_killed() -> None:
    child = ChildProcess("-c", "import time; time.sleep(60)", timeout=0.5)
    with pytest.raises(RuntimeError, match="printed no 'READY' line"):
        child.start()
    assert not child.running
