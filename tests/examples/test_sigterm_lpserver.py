"""SIGTERM to the Lazy Pirate (risk) server program: the request in flight is answered,
no new one is accepted, the process exits 0 (143 only when a second signal forces it)."""

from __future__ import annotations

import asyncio
import signal

import pytest
from _sigterm_helpers import EXIT_BOUND, run_real, server, terminate

from transportkit import SocketOptions, Timeout
from transportkit.zmq_backend import ZmqNetwork

OPTIONS = SocketOptions(linger=0)


def _endpoint(ready: str) -> str:
    return ready.split()[1].replace("0.0.0.0", "127.0.0.1")


async def _in_flight_then_new(endpoint: str, child_signal: object) -> tuple[list[bytes], bool]:
    """Send one slow request, signal the server, then try a new request."""
    with ZmqNetwork(name="sigterm-client") as net:
        first = net.requester(connect=endpoint, options=OPTIONS)
        await first.send([b"in-flight"])
        await asyncio.to_thread(child_signal)  # type: ignore[arg-type]
        second = net.requester(connect=endpoint, options=OPTIONS)
        await second.send([b"after-sigterm"])
        reply = await first.recv(timeout=8.0)
        try:
            await second.recv(timeout=1.0)
            answered = True
        except Timeout:
            answered = False
        return reply, answered


def test_sigterm_answers_the_slow_request_in_flight_and_exits_0() -> None:
    with server(
        "lpserver", "--bind", "tcp://127.0.0.1:*", "--overload-chance", "1",
        "--overload-delay", "0.5",
    ) as child:  # fmt: skip
        assert child.ready_line is not None
        endpoint = _endpoint(child.ready_line)

        def signal_when_busy() -> None:
            child.wait_for_line("I: simulating CPU overload", 10.0)
            terminate(child)

        reply, second_answered = run_real(_in_flight_then_new(endpoint, signal_when_busy))
        assert reply == [b"in-flight"]
        assert not second_answered
        assert child.wait(EXIT_BOUND) == 0
        assert "STOPPED clean" in child.lines
        assert not any("after-sigterm" in line for line in child.lines)


@pytest.mark.slow
def test_sigterm_past_the_timeout_fails_the_request_with_the_error_reply() -> None:
    with server(
        "lpserver", "--bind", "tcp://127.0.0.1:*", "--overload-chance", "1",
        "--overload-delay", "30", "--shutdown-timeout", "0.3",
    ) as child:  # fmt: skip
        assert child.ready_line is not None

        def signal_when_busy() -> None:
            child.wait_for_line("I: simulating CPU overload", 10.0)
            terminate(child)

        reply, second_answered = run_real(
            _in_flight_then_new(_endpoint(child.ready_line), signal_when_busy)
        )
        assert reply == [b""]  # EMPTY_ANSWER, the plain format's error reply
        assert not second_answered
        assert child.wait(EXIT_BOUND) == 0
        assert "STOPPED dropped" in child.lines


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_second_signal_forces_the_stop(signum: signal.Signals) -> None:
    with server(
        "lpserver", "--bind", "tcp://127.0.0.1:*", "--overload-chance", "1",
        "--overload-delay", "30", "--shutdown-timeout", "60",
    ) as child:  # fmt: skip
        assert child.ready_line is not None

        def signal_twice() -> None:
            child.wait_for_line("I: simulating CPU overload", 10.0)
            terminate(child, signum)
            child.send_signal(signum)

        async def go() -> None:
            with ZmqNetwork(name="sigterm-client") as net:
                req = net.requester(connect=_endpoint(child.ready_line or ""), options=OPTIONS)
                await req.send([b"in-flight"])
                await asyncio.to_thread(signal_twice)

        run_real(go())
        assert child.wait(EXIT_BOUND) == 128 + signum
        assert any(line.startswith("FORCED") for line in child.lines)


def test_an_idle_server_exits_0_on_sigterm() -> None:
    with server("lpserver", "--bind", "tcp://127.0.0.1:*") as child:
        terminate(child)
        assert child.wait(EXIT_BOUND) == 0
        assert "STOPPED clean" in child.lines
