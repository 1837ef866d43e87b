"""SIGTERM to the market-data forwarder program: it stops forwarding, closes its
sockets, prints its counters and exits 0 (it used to die of the signal)."""

from __future__ import annotations

import asyncio

from _sigterm_helpers import EXIT_BOUND, run_real, server, terminate

from transportkit import SocketOptions
from transportkit.zmq_backend import ZmqNetwork

OPTIONS = SocketOptions(linger=0)


def test_sigterm_stops_the_forwarder_cleanly_and_exits_0() -> None:
    async def go() -> None:
        with ZmqNetwork(name="sigterm-mdforwarder") as net:
            pub = net.publisher(bind="tcp://127.0.0.1:*", options=OPTIONS)
            try:
                upstream = str(pub.last_endpoint)
                with server(
                    "mdforwarder",
                    "--upstream", upstream,
                    "--backend", "tcp://127.0.0.1:*",
                    "--shutdown-timeout", "2",
                    "--linger", "0",
                ) as child:  # fmt: skip
                    assert child.ready_line is not None
                    backend = child.ready_line.split()[2]
                    sub = net.subscriber(connect=backend, topics=[b"MARKET.AAPL"], options=OPTIONS)
                    try:
                        for _ in range(100):  # until the subscription reached the feed
                            await pub.send([b"MARKET.AAPL", b"prime"])
                            if await sub.poll(0.1):
                                break
                        else:
                            raise AssertionError("no update came through the forwarder")
                        assert (await sub.recv(timeout=1.0))[0] == b"MARKET.AAPL"
                        await asyncio.to_thread(terminate, child)
                        status = await asyncio.to_thread(child.wait, EXIT_BOUND)
                    finally:
                        sub.close()
                    assert status == 0
                    assert "STOPPED clean" in child.lines
                    stats = [line for line in child.lines if line.startswith("STATISTICS ")]
                    assert len(stats) == 1
                    counters = [int(n) for n in stats[0].split()[1:]]
                    assert len(counters) == 8
                    assert counters[0] >= 2  # frames read from the feed
                    assert counters[6] >= 2  # frames sent to the traders
            finally:
                pub.close()

    run_real(go())
