"""SIGTERM to the Majordomo worker program: the request it holds is answered, it sends
DISCONNECT (the broker forgets it at once), the process exits 0."""

from __future__ import annotations

import asyncio
import contextlib

from _sigterm_helpers import EXIT_BOUND, run_real, server, terminate

from transportkit import Message, SocketOptions
from transportkit.patterns import MajordomoBroker, MajordomoClient
from transportkit.zmq_backend import ZmqNetwork


def test_sigterm_answers_the_request_held_then_disconnects_and_exits_0() -> None:
    async def go() -> tuple[Message, int, int, list[str]]:
        with ZmqNetwork(name="sigterm-mdworker") as net:
            broker = MajordomoBroker(net, "tcp://127.0.0.1:*", options=SocketOptions(linger=0))
            endpoint = broker.bind()
            running = asyncio.ensure_future(broker.run())
            client = MajordomoClient(
                net, endpoint, timeout=8.0, attempts=1, options=SocketOptions(linger=0)
            )
            child = server("mdworker", "--broker", endpoint, "--delay", "0.5")
            try:
                await asyncio.to_thread(child.start)
                in_flight = asyncio.ensure_future(client.request(b"echo", [b"in-flight"]))
                while broker.stats.dispatched == 0:
                    await asyncio.sleep(0.01)
                await asyncio.to_thread(terminate, child)
                reply = await in_flight
                code = await asyncio.to_thread(child.wait, EXIT_BOUND)
                await asyncio.sleep(0.2)
                return reply, code, broker.worker_count(b"echo"), child.lines
            finally:
                child.kill()
                client.close()
                broker.stop()
                with contextlib.suppress(BaseException):
                    await running

    reply, code, workers, lines = run_real(go())
    assert reply == [b"in-flight"]
    assert code == 0
    assert workers == 0  # forgotten at its DISCONNECT, not after liveness expiry
    assert "STOPPED clean" in lines
