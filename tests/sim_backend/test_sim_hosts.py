"""tcp hosts are real in the simulation (issue 10, deliverable 2).

A tcp connect reaches the port of the node its host names (or of the connecting node
itself for ``localhost``/``127.0.0.1``/``::1``/``*``/``0.0.0.0``); a host that names no
node, or a port nobody bound on that node, is retried and never connected, as on real
sockets.
"""

from __future__ import annotations

import asyncio

import pytest

from transportkit import (
    EndpointError,
    Network,
    SimulationDeadlock,
    SocketOptions,
    Timeout,
)
from transportkit.sim_backend import Constant, Node, Simulation
from transportkit.testing import open_harness

from .conftest import VIRTUAL_LIMIT

RETRY = SocketOptions(reconnect_ivl=100, reconnect_ivl_max=0)


async def _events(sock_monitor, seconds: float) -> list[str]:  # type: ignore[no-untyped-def]
    """The names of the monitor events of the next ``seconds``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    names = []
    while (left := deadline - loop.time()) > 0:
        try:
            names.append((await sock_monitor.recv(timeout=left)).name)
        except Timeout:
            break
    return names


def _connects(sim: Simulation) -> list[str]:
    return [f"{e.subject} {e.detail}" for e in sim.trace.events if e.kind == "connect"]


def _failures(sim: Simulation) -> list[str]:
    return [e.detail for e in sim.trace.events if e.kind == "connect-failed"]


def test_a_typo_in_the_host_never_connects() -> None:
    sim = Simulation(latency=Constant(0.001))
    exchange, trader = sim.node("exchange"), sim.node("trader")

    async def main() -> tuple[list[str], int]:
        pull = exchange.puller(bind="tcp://*:5556")
        push = trader.pusher(connect="tcp://exchnage:5556", options=RETRY)
        mon = push.monitor()
        events = await _events(mon, 1.0)
        push.try_send([b"order"]) if push.peers else None
        with pytest.raises(Timeout):
            await pull.recv(timeout=0.5)
        return events, pull.stats.received

    events, received = sim.run(main(), timeout=VIRTUAL_LIMIT)
    assert received == 0
    assert _connects(sim) == []
    # libzmq 4.3: the name fails to resolve at each attempt, so CONNECT_RETRIED only.
    assert set(events) == {"CONNECT_RETRIED"}
    assert len(events) >= 9  # every 100 ms for 1 s
    assert _failures(sim)[0] == "tcp://exchnage:5556 unknown host 'exchnage'"


def test_a_port_bound_on_another_node_is_not_reached() -> None:
    sim = Simulation(latency=Constant(0.001))
    exchange, other, trader = sim.node("exchange"), sim.node("other"), sim.node("trader")

    async def main() -> list[str]:
        exchange.puller(bind="tcp://*:5556")
        assert other.sockets == {}
        push = trader.pusher(connect="tcp://other:5556", options=RETRY)
        return await _events(push.monitor(), 1.0)

    events = sim.run(main(), timeout=VIRTUAL_LIMIT)
    assert _connects(sim) == []
    assert "CONNECTED" not in events
    assert events[0] == "CONNECT_RETRIED"  # CONNECT_DELAYED was emitted by connect()
    assert set(_failures(sim)) == {"tcp://other:5556 nothing bound"}


def test_two_nodes_bind_the_same_port_each_on_its_own_host() -> None:
    sim = Simulation(latency=Constant(0.001))
    a, b, client = sim.node("a"), sim.node("b"), sim.node("client")

    async def main() -> tuple[list[bytes], list[bytes]]:
        pull_a = a.puller(bind="tcp://*:5556")
        pull_b = b.puller(bind="tcp://0.0.0.0:5556")
        to_a = client.pusher(connect="tcp://a:5556")
        to_b = client.pusher(connect="tcp://b:5556")
        await to_a.send([b"for a"])
        await to_b.send([b"for b"])
        return await pull_a.recv(timeout=1), await pull_b.recv(timeout=1)

    assert sim.run(main(), timeout=VIRTUAL_LIMIT) == ([b"for a"], [b"for b"])


@pytest.mark.parametrize("host", ["localhost", "127.0.0.1", "[::1]", "*", "0.0.0.0"])
def test_a_local_host_is_the_connecting_node_itself(host: str) -> None:
    sim = Simulation(latency=Constant(0.001))
    a, b = sim.node("a"), sim.node("b")

    async def main() -> tuple[list[bytes], list[str]]:
        pull = a.puller(bind="tcp://*:5556")
        own = a.pusher(connect=f"tcp://{host}:5556")
        await own.send([b"local"])
        got = await pull.recv(timeout=1)
        elsewhere = b.pusher(connect=f"tcp://{host}:5556", options=RETRY)
        return got, await _events(elsewhere.monitor(), 0.5)

    got, events = sim.run(main(), timeout=VIRTUAL_LIMIT)
    assert got == [b"local"]
    assert "CONNECTED" not in events
    assert _connects(sim) == [f"a/push1 a/pull0 via tcp://{host}:5556"]


@pytest.mark.parametrize("host", ["a", "127.0.0.1", "localhost", "*"])
def test_a_bind_on_the_nodes_name_or_a_local_address_is_reached_by_name(host: str) -> None:
    sim = Simulation(latency=Constant(0.001))
    a, b = sim.node("a"), sim.node("b")

    async def main() -> list[bytes]:
        pull = a.puller(bind=f"tcp://{host}:5556")
        push = b.pusher(connect="tcp://a:5556")
        await push.send([b"hi"])
        return await pull.recv(timeout=1)

    assert sim.run(main(), timeout=VIRTUAL_LIMIT) == [b"hi"]


def test_a_bind_on_another_nodes_name_is_refused() -> None:
    sim = Simulation()
    a = sim.node("a")
    sim.node("b")

    async def main() -> None:
        with pytest.raises(EndpointError, match="not this node"):
            a.puller(bind="tcp://b:5556")

    sim.run(main(), timeout=VIRTUAL_LIMIT)


def test_a_wildcard_port_bind_names_the_node_and_any_node_connects_to_it() -> None:
    sim = Simulation(latency=Constant(0.001))
    exchange, trader = sim.node("exchange"), sim.node("trader")

    async def main() -> tuple[str, list[bytes]]:
        pull = exchange.puller()
        resolved = pull.bind("tcp://127.0.0.1:*")
        push = trader.pusher(connect=resolved)
        await push.send([b"hi"])
        return resolved, await pull.recv(timeout=1)

    resolved, got = sim.run(main(), timeout=VIRTUAL_LIMIT)
    assert resolved.startswith("tcp://exchange:")
    assert got == [b"hi"]


def test_a_node_created_after_the_connect_is_found_at_the_next_retry() -> None:
    sim = Simulation(latency=Constant(0.001))
    trader = sim.node("trader")

    async def late_main(node: Node) -> None:
        pull = node.puller(bind="tcp://*:5556")
        received.append(await pull.recv())

    received: list[list[bytes]] = []

    async def main() -> float:
        push = trader.pusher(connect="tcp://late:5556", options=RETRY)
        await asyncio.sleep(0.35)
        assert _connects(sim) == []
        sim.node("late", late_main)
        await push.send([b"hello"])
        await asyncio.sleep(0.1)
        return sim.now

    sim.run(main(), timeout=VIRTUAL_LIMIT)
    assert received == [[b"hello"]]
    assert "unknown host 'late'" in _failures(sim)[0]
    assert len(_connects(sim)) == 1


def test_waiting_for_a_reply_from_an_unknown_host_is_a_deadlock_not_a_hang() -> None:
    sim = Simulation()

    async def risk_main(node: Node) -> None:
        rep = node.worker(bind="tcp://*:5555")
        while True:
            await rep.send([b"approved", *(await rep.recv())])

    sim.node("risk", risk_main)
    desk = sim.node("desk")

    async def main() -> None:
        req = desk.requester(connect="tcp://rsik:5555")
        await req.send([b"order"])  # queued: REQ without immediate accepts it
        await req.recv()  # nobody can ever answer

    with pytest.raises(SimulationDeadlock):
        sim.run(main())


def test_ipc_is_global_and_inproc_is_per_node() -> None:
    sim = Simulation(latency=Constant(0.001))
    a, b = sim.node("a"), sim.node("b")

    async def main() -> tuple[list[bytes], list[str]]:
        pull = a.puller(bind="ipc://@feed")
        a.puller(bind="inproc://orders")
        push = b.pusher(connect="ipc://@feed")
        await push.send([b"over ipc"])
        got = await pull.recv(timeout=1)
        b.pusher(connect="inproc://orders")
        await asyncio.sleep(0.5)
        return got, _connects(sim)

    got, connects = sim.run(main(), timeout=VIRTUAL_LIMIT)
    assert got == [b"over ipc"]
    assert connects == ["b/push0 a/pull0 via ipc://@feed"]


# -- the same code on both backends ---------------------------------------------------


async def _connect_to_a_name_that_does_not_resolve(net: Network) -> tuple[list[str], int]:
    with net.puller(options=RETRY) as pull:
        mon = pull.monitor()
        pull.connect("tcp://no-such-host.invalid:5556")  # accepted: no EINVAL
        # Two attempts, or 3 s for a slow resolver (".invalid" never resolves, RFC 6761).
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 3.0
        events: list[str] = []
        while events.count("CONNECT_RETRIED") < 2 and (left := deadline - loop.time()) > 0:
            try:
                events.append((await mon.recv(timeout=left)).name)
            except Timeout:
                break
        events += await _events(mon, 0.2)  # nothing else follows (no CONNECTED)
        with pytest.raises(Timeout):
            await pull.recv(timeout=0.1)
        mon.close()
        return events, pull.stats.received


@pytest.mark.parametrize("backend_name", ["sim", "zmq"])
def test_connect_to_a_host_that_does_not_resolve_retries_and_never_connects(
    backend_name: str,
) -> None:
    """libzmq 4.3 accepts the connect and fails at each attempt to resolve the name:
    CONNECT_RETRIED every reconnect interval, never CONNECT_DELAYED nor CONNECTED. The
    sim does the same for a host that names no node.
    """
    with open_harness(backend_name) as h:
        events, received = h.run(
            _connect_to_a_name_that_does_not_resolve(h.network("trader")), timeout=10
        )
    assert received == 0
    assert set(events) == {"CONNECT_RETRIED"}
