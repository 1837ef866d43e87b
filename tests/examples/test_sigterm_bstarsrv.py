"""SIGTERM to the Binary Star server program: the request being handled is answered,
a new one is not read (the client would fail over), the process exits 0."""

from __future__ import annotations

import asyncio

from _sigterm_helpers import EXIT_BOUND, run_real, server, terminate

from transportkit import Message, SocketOptions, Timeout
from transportkit.testing import free_tcp_endpoint
from transportkit.zmq_backend import ZmqNetwork

OPTIONS = SocketOptions(linger=0)


def test_sigterm_answers_the_request_in_flight_and_exits_0() -> None:
    front, state_pub, state_sub = (free_tcp_endpoint() for _ in range(3))
    with server(
        "bstarsrv", "--primary", "--frontend", front, "--state-pub", state_pub,
        "--state-sub", state_sub, "--heartbeat", "0.1", "--delay", "0.5",
    ) as child:  # fmt: skip

        async def go() -> tuple[Message, bool]:
            await asyncio.sleep(0.4)  # the (absent) backup is presumed dead
            with ZmqNetwork(name="sigterm-bstar") as net:
                first = net.requester(connect=front, options=OPTIONS)
                await first.send([b"in-flight"])
                await asyncio.to_thread(child.wait_for_line, "STATE PRIMARY ACTIVE", 10.0)
                await asyncio.to_thread(terminate, child)
                second = net.requester(connect=front, options=OPTIONS)
                await second.send([b"after-sigterm"])
                reply = await first.recv(timeout=8.0)
                try:
                    await second.recv(timeout=1.0)
                    answered = True
                except Timeout:
                    answered = False
                return reply, answered

        reply, answered = run_real(go())
        assert reply == [b"in-flight"]
        assert not answered
        assert child.wait(EXIT_BOUND) == 0
        assert "STOPPED clean" in child.lines
