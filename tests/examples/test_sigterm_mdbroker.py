"""SIGTERM to the Majordomo broker program: the request a worker holds is answered,
a new request is dropped (MDP has no error reply: the client times out), workers get
DISCONNECT, the process exits 0."""

from __future__ import annotations

import asyncio
import contextlib

from _sigterm_helpers import EXIT_BOUND, run_real, server, terminate

from transportkit import Message, ServiceUnavailableError, SocketOptions
from transportkit.patterns import MajordomoClient, MajordomoWorker
from transportkit.zmq_backend import ZmqNetwork

OPTIONS = SocketOptions(linger=0)


def test_sigterm_forwards_the_reply_in_flight_refuses_new_requests_and_exits_0() -> None:
    with server("mdbroker", "--bind", "tcp://127.0.0.1:*", "--heartbeat-interval", "0.5") as child:
        assert child.ready_line is not None
        endpoint = child.ready_line.split()[1]

        async def go() -> tuple[Message, bool, int]:
            started = asyncio.Event()

            async def slow(request: Message) -> Message:
                started.set()
                await asyncio.sleep(1.0)
                return [b"done:" + request[0]]

            with ZmqNetwork(name="sigterm-mdp") as net:
                worker = MajordomoWorker(
                    net, endpoint, b"slow", heartbeat_interval=0.5, options=OPTIONS
                )
                serving = asyncio.ensure_future(worker.serve(slow))
                first = MajordomoClient(net, endpoint, timeout=8.0, attempts=1, options=OPTIONS)
                second = MajordomoClient(net, endpoint, timeout=1.0, attempts=1, options=OPTIONS)
                try:
                    in_flight = asyncio.ensure_future(first.request(b"slow", [b"order-1"]))
                    await asyncio.wait_for(started.wait(), 10.0)
                    await asyncio.to_thread(terminate, child)
                    try:
                        await second.request(b"slow", [b"order-2"])
                        refused = False
                    except ServiceUnavailableError:
                        refused = True
                    reply = await in_flight
                    await asyncio.sleep(0.3)  # the DISCONNECT travels
                    return reply, refused, worker.stats.disconnects
                finally:
                    first.close()
                    second.close()
                    await worker.aclose()
                    serving.cancel()
                    with contextlib.suppress(BaseException):
                        await serving

        reply, refused, disconnects = run_real(go())
        assert reply == [b"done:order-1"]
        assert refused
        assert disconnects >= 1
        assert child.wait(EXIT_BOUND) == 0
        assert "STOPPED clean" in child.lines
