"""REQ/REP: lockstep, relaxed and correlated REQ, envelopes with DEALER and ROUTER."""

from __future__ import annotations

import asyncio

import pytest

from transportkit import SocketOptions, StateError, Timeout
from transportkit.sim_backend import Constant, Node, Simulation

from .conftest import VIRTUAL_LIMIT

L = 0.001


def _sim() -> tuple[Simulation, Node, Node]:
    sim = Simulation(latency=Constant(L))
    return sim, sim.node("srv"), sim.node("cli")


def test_req_and_rep_enforce_lockstep() -> None:
    sim, srv, cli = _sim()

    async def main() -> None:
        rep = srv.worker(bind="tcp://*:7600")
        req = cli.requester(connect="tcp://srv:7600")
        with pytest.raises(StateError):
            await req.recv(timeout=0)
        with pytest.raises(StateError):
            await rep.send([b"unasked"])
        await req.send([b"q"])
        with pytest.raises(StateError, match="req_relaxed"):
            await req.send([b"again"])
        assert await rep.recv(timeout=1) == [b"q"]
        with pytest.raises(StateError):
            await rep.recv(timeout=0)
        await rep.send([b"r"])
        assert await req.recv(timeout=1) == [b"r"]

    sim.run(main(), timeout=VIRTUAL_LIMIT)


def test_req_relaxed_allows_a_second_send_before_the_reply() -> None:
    sim, srv, cli = _sim()

    async def main() -> list[bytes]:
        rep = srv.worker(bind="tcp://*:7601")
        req = cli.requester(connect="tcp://srv:7601", options=SocketOptions(req_relaxed=True))
        await req.send([b"q1"])
        await req.send([b"q2"])
        assert await rep.recv(timeout=1) == [b"q1"]
        await rep.send([b"r1"])
        return await req.recv(timeout=1)

    assert sim.run(main(), timeout=VIRTUAL_LIMIT) == [b"r1"]


def test_req_correlate_drops_stale_and_duplicate_replies() -> None:
    sim, srv, cli = _sim()

    async def main() -> tuple[list[bytes], int | None]:
        router = srv.router(bind="tcp://*:7602")
        req = cli.requester(
            connect="tcp://srv:7602",
            options=SocketOptions(req_relaxed=True, req_correlate=True),
        )
        await req.send([b"q1"])
        await req.send([b"q2"])
        first = await router.recv(timeout=1)
        second = await router.recv(timeout=1)
        peer, id1, delim1, body1 = first
        _, id2, delim2, body2 = second
        assert (delim1, body1, delim2, body2) == (b"", b"q1", b"", b"q2")
        assert id1 != id2
        await router.send([peer, id1, b"", b"stale r1"])
        await router.send([peer, id2, b"", b"r2"])
        await router.send([peer, id2, b"", b"r2 again"])
        reply = await req.recv(timeout=1)
        await asyncio.sleep(0.1)
        with pytest.raises(StateError):
            req.try_recv()  # the duplicate is no reply: it waits, unread
        await req.send([b"q3"])
        _, id3, _, _ = await router.recv(timeout=1)
        await router.send([peer, id3, b"", b"r3"])
        return [*reply, *await req.recv(timeout=1)], req.stats.dropped

    # the stale r1 and the duplicate r2 were both skipped and counted
    assert sim.run(main(), timeout=VIRTUAL_LIMIT) == ([b"r2", b"r3"], 2)


def test_req_takes_the_reply_only_from_the_peer_it_asked() -> None:
    sim, srv, cli = _sim()
    other = sim.node("other")

    async def main() -> tuple[list[bytes], int | None]:
        asked = srv.router(bind="tcp://*:7603")
        stranger = other.router(bind="tcp://*:7604")
        req = cli.requester(connect=["tcp://srv:7603", "tcp://other:7604"])
        await asyncio.sleep(0.1)
        await req.send([b"q"])
        peer, delim, body = await asked.recv(timeout=1)
        assert (delim, body) == (b"", b"q")
        (stranger_peer,) = [p.routing_id for p in stranger.peers]  # type: ignore[attr-defined]
        await stranger.send([stranger_peer, b"", b"forged"])
        await asyncio.sleep(0.1)
        await asked.send([peer, b"", b"genuine"])
        return await req.recv(timeout=1), req.stats.dropped

    assert sim.run(main(), timeout=VIRTUAL_LIMIT) == ([b"genuine"], 1)


def test_rep_serves_a_dealer_client_that_sends_the_empty_delimiter() -> None:
    sim, srv, cli = _sim()

    async def main() -> list[list[bytes]]:
        rep = srv.worker(bind="tcp://*:7605")
        dealer = cli.dealer(connect="tcp://srv:7605")
        replies = []
        for i in range(3):
            await dealer.send([b"", b"q%d" % i])
            request = await rep.recv(timeout=1)
            await rep.send([b"re:" + request[0]])
            replies.append(await dealer.recv(timeout=1))
        return replies

    assert sim.run(main(), timeout=VIRTUAL_LIMIT) == [[b"", b"re:q%d" % i] for i in range(3)]


def test_rep_drops_a_request_without_delimiter_counts_it_and_keeps_serving() -> None:
    sim, srv, cli = _sim()

    async def main() -> tuple[list[bytes], int | None, list[bytes]]:
        rep = srv.worker(bind="tcp://*:7606")
        dealer = cli.dealer(connect="tcp://srv:7606")
        await dealer.send([b"no delimiter"])
        await dealer.send([b""])  # a delimiter and no body
        await dealer.send([b"", b"good"])
        request = await rep.recv(timeout=1)
        await rep.send([b"ok"])
        reply = await dealer.recv(timeout=1)
        return request, rep.stats.dropped, reply

    assert sim.run(main(), timeout=VIRTUAL_LIMIT) == ([b"good"], 2, [b"", b"ok"])


def test_rep_keeps_a_router_hop_envelope_and_returns_it() -> None:
    sim, srv, cli = _sim()

    async def main() -> list[bytes]:
        rep = srv.worker(bind="tcp://*:7607")
        dealer = cli.dealer(connect="tcp://srv:7607")
        await dealer.send([b"hop1", b"hop2", b"", b"q"])
        assert await rep.recv(timeout=1) == [b"q"]
        await rep.send([b"r"])
        return await dealer.recv(timeout=1)

    assert sim.run(main(), timeout=VIRTUAL_LIMIT) == [b"hop1", b"hop2", b"", b"r"]


def test_req_recv_times_out_when_nobody_answers() -> None:
    sim, srv, cli = _sim()

    async def main() -> float:
        srv.worker(bind="tcp://*:7608")
        req = cli.requester(connect="tcp://srv:7608", options=SocketOptions(rcvtimeo=750))
        await req.send([b"q"])
        with pytest.raises(Timeout):
            await req.recv()
        return sim.now

    assert sim.run(main(), timeout=VIRTUAL_LIMIT) == pytest.approx(0.75)
