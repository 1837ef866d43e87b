"""Faults: asymmetric queues, crash and restart, partition and repair, dropped connections."""

from __future__ import annotations

import asyncio

import pytest

from transportkit import ClosedError, SocketOptions, Timeout, WouldBlock
from transportkit.sim_backend import Constant, Node, Simulation

from .conftest import VIRTUAL_LIMIT

L = 0.001
BIND = "tcp://*:7002"
# Connect by the binding node's name: tcp hosts are checked.
AT_SRV = "tcp://srv:7002"
AT_A = "tcp://a:7002"
AT_B = "tcp://b:7002"
AT_N = "tcp://n:7002"


def _sim(*, kernel_buffers: bool = True) -> Simulation:
    return Simulation(latency=Constant(L), kernel_buffers=kernel_buffers)


PIPES_ONLY = {"kernel_buffers": False}
"""For tests of which pipe keeps its queue: tcp's kernel buffers off, so that the
messages past the HWMs wait in the sender's pipe (on real tcp they would sit in the
kernel, in flight, and be lost with the connection)."""


async def _drain(sock, timeout: float = 0.5) -> list[list[bytes]]:  # type: ignore[no-untyped-def]
    got = []
    while True:
        try:
            got.append(await sock.recv(timeout=timeout))
        except Timeout:
            return got


# -- asymmetric queues ---------------------------------------------------------------


def test_connecting_side_keeps_its_queue_across_the_peers_restart() -> None:
    sim = _sim()
    received: list[bytes] = []

    async def server_main(node: Node) -> None:
        pull = node.puller(bind=BIND)
        while True:
            received.append((await pull.recv())[0])

    sim.node("srv", server_main)
    client = sim.node("cli")

    async def main() -> tuple[int, int]:
        push = client.pusher(connect=AT_SRV, options=SocketOptions(sndhwm=10))
        mon = push.monitor()
        await asyncio.sleep(0.1)
        for i in range(3):
            await push.send([b"before%d" % i])
        await asyncio.sleep(0.1)
        sim.crash("srv")
        while (await mon.recv()).name != "DISCONNECTED":
            pass
        accepted = 0
        refused = 0
        for i in range(15):
            try:
                push.try_send([b"during%d" % i])
                accepted += 1
            except WouldBlock:
                refused += 1
        await asyncio.sleep(1)
        sim.restart("srv")
        await asyncio.sleep(1)
        return accepted, refused

    # libzmq 4.3.5 too: the PUSH's pipe told it of the 3 messages read only every
    # lwm = 5 messages, so it counts them still queued and takes 7 more, not 10
    # (measured with raw pyzmq: test_sim_kernel_buffers.py).
    assert sim.run(main(), timeout=VIRTUAL_LIMIT) == (7, 8)
    assert received == [b"before0", b"before1", b"before2"] + [b"during%d" % i for i in range(7)]


def test_binding_side_discards_a_lost_peers_queue_and_counts_it() -> None:
    sim = _sim(**PIPES_ONLY)
    server, client = sim.node("srv"), sim.node("cli")

    async def main() -> tuple[int | None, int | None, int]:
        push = server.pusher(bind=BIND, options=SocketOptions(sndhwm=5))
        mon = push.monitor()
        pull = client.puller(connect=AT_SRV, options=SocketOptions(rcvhwm=2))
        await asyncio.sleep(0.1)
        for i in range(7):
            push.try_send([b"%d" % i])  # 2 fill the PULL's queue, 5 wait in the PUSH's
        await asyncio.sleep(0.1)
        sim.crash("cli")
        while (await mon.recv()).name != "DISCONNECTED":
            pass
        return push.stats.dropped, pull.stats.dropped, len(push.peers)  # type: ignore[attr-defined]

    push_dropped, pull_dropped, peers = sim.run(main(), timeout=VIRTUAL_LIMIT)
    assert push_dropped == 5
    assert pull_dropped == 2  # what sat in the receiving socket's queue died with it
    assert peers == 0


def test_messages_waiting_in_a_receivers_queue_die_with_it_on_crash() -> None:
    sim = _sim()
    a, b = sim.node("a"), sim.node("b")

    async def main() -> tuple[int, int | None]:
        pull = b.puller(bind=BIND)
        push = a.pusher(connect=AT_B)
        await asyncio.sleep(0.1)
        for i in range(4):
            await push.send([b"%d" % i])
        await asyncio.sleep(0.1)
        assert await pull.recv() == [b"0"]
        sim.crash("b")
        return pull.stats.received, pull.stats.dropped

    assert sim.run(main(), timeout=VIRTUAL_LIMIT) == (1, 3)


def test_a_crashed_nodes_sockets_raise_closed_error_mentioning_the_crash() -> None:
    sim = _sim()
    node = sim.node("n")

    async def main() -> None:
        pull = node.puller(bind=BIND)
        push = node.pusher(connect=AT_N)
        sim.crash("n")
        assert pull.closed
        assert push.closed
        with pytest.raises(ClosedError, match="crash"):
            await pull.recv(timeout=1)
        with pytest.raises(ClosedError, match="crash"):
            await push.send([b"x"])
        with pytest.raises(ClosedError, match="crash"):
            push.connect("tcp://elsewhere:1")
        with pytest.raises(ClosedError, match="crash"):
            node.puller()

    sim.run(main(), timeout=VIRTUAL_LIMIT)


# -- crash and restart ---------------------------------------------------------------


def test_crash_cancels_the_nodes_tasks_and_the_tasks_they_created() -> None:
    sim = _sim()
    log: list[str] = []

    async def child() -> None:
        try:
            await asyncio.sleep(100)
        except asyncio.CancelledError:
            log.append("child cancelled")
            raise

    async def node_main(node: Node) -> None:
        task = asyncio.create_task(child())
        inner = node.spawn(child())
        try:
            await asyncio.gather(task, inner)
        except asyncio.CancelledError:
            log.append("main cancelled")
            raise

    node = sim.node("n", node_main)

    async def main() -> int:
        await asyncio.sleep(1)
        assert len(node.tasks) == 3
        sim.crash("n")
        await asyncio.sleep(0.001)
        return len(node.tasks)

    assert sim.run(main(), timeout=VIRTUAL_LIMIT) == 0
    assert sorted(log) == ["child cancelled", "child cancelled", "main cancelled"]


def test_a_waiting_recv_in_a_crashed_node_is_cancelled_not_left_hanging() -> None:
    sim = _sim()
    outcome: list[str] = []

    async def node_main(node: Node) -> None:
        pull = node.puller(bind=BIND)
        try:
            await pull.recv()
        except asyncio.CancelledError:
            outcome.append("cancelled")
            raise

    sim.node("n", node_main)

    async def main() -> None:
        await asyncio.sleep(1)
        sim.crash("n")
        await asyncio.sleep(1)

    sim.run(main(), timeout=VIRTUAL_LIMIT)
    assert outcome == ["cancelled"]


def test_peers_see_disconnected_one_link_delay_after_a_crash() -> None:
    sim = Simulation(latency=Constant(0.02))
    server, client = sim.node("srv"), sim.node("cli")

    async def main() -> float:
        server.puller(bind=BIND)
        push = client.pusher(connect=AT_SRV)
        mon = push.monitor()
        await asyncio.sleep(1)
        sim.crash("srv")
        crashed_at = sim.now
        while (await mon.recv(timeout=5)).name != "DISCONNECTED":
            pass
        return sim.now - crashed_at

    assert sim.run(main(), timeout=VIRTUAL_LIMIT) == pytest.approx(0.02)


def test_restart_reruns_the_nodes_main_and_peers_reconnect() -> None:
    sim = _sim()
    starts: list[float] = []

    async def echo_main(node: Node) -> None:
        starts.append(sim.now)
        rep = node.worker(bind=BIND)
        while True:
            request = await rep.recv()
            await rep.send([b"echo", *request])

    sim.node("srv", echo_main)
    client = sim.node("cli")

    async def main() -> list[bytes]:
        await asyncio.sleep(0.5)
        sim.crash("srv")
        await asyncio.sleep(0.5)
        sim.restart("srv")
        req = client.requester(connect=AT_SRV)
        return await req.request([b"hi"], timeout=5)

    assert sim.run(main(), timeout=VIRTUAL_LIMIT) == [b"echo", b"hi"]
    assert starts == [0.0, pytest.approx(1.0)]


def test_req_whose_server_crashed_mid_request_waits_until_its_timeout() -> None:
    sim = _sim()
    requests: list[list[bytes]] = []

    async def server_main(node: Node) -> None:
        rep = node.worker(bind=BIND)
        while True:
            requests.append(await rep.recv())
            await asyncio.sleep(10)  # crashes before replying
            await rep.send([b"late"])

    sim.node("srv", server_main)
    client = sim.node("cli")

    async def main() -> tuple[float, float]:
        req = client.requester(connect=AT_SRV)
        await req.send([b"quote?"])
        await asyncio.sleep(0.5)
        sim.crash("srv")
        await asyncio.sleep(0.5)
        sim.restart("srv")  # back, but the request died with the old process
        start = sim.now
        with pytest.raises(Timeout):
            await req.recv(timeout=2.5)
        return start, sim.now

    start, end = sim.run(main(), timeout=VIRTUAL_LIMIT)
    assert end - start == pytest.approx(2.5)
    assert requests == [[b"quote?"]]


# -- partition, repair, dropped connections ------------------------------------------


def test_partition_holds_traffic_and_repair_delivers_it_in_order() -> None:
    sim = _sim()
    a, b = sim.node("a"), sim.node("b")

    async def main() -> tuple[list[list[bytes]], list[list[bytes]], float]:
        pull = b.puller(bind=BIND)
        push = a.pusher(connect=AT_B)
        await asyncio.sleep(0.1)
        sim.partition("a", "b")
        for i in range(20):
            await push.send([b"%d" % i])
        during = await _drain(pull, timeout=5)
        sim.repair("a", "b")
        repaired_at = sim.now
        after = [await pull.recv(timeout=0)]
        after += await _drain(pull, timeout=0.1)
        return during, after, repaired_at

    during, after, _ = sim.run(main(), timeout=VIRTUAL_LIMIT)
    assert during == []
    assert after == [[b"%d" % i] for i in range(20)]


def test_one_way_partition_holds_only_that_direction() -> None:
    sim = _sim()
    a, b = sim.node("a"), sim.node("b")

    async def main() -> tuple[list[bytes], list[list[bytes]]]:
        pa = a.pair(bind=BIND)
        pb = b.pair(connect=AT_A)
        await asyncio.sleep(0.1)
        sim.partition("a", "b", both_ways=False)
        await pa.send([b"a->b"])
        await pb.send([b"b->a"])
        got_a = await pa.recv(timeout=1)
        held = await _drain(pb, timeout=1)
        sim.repair("a", "b", both_ways=False)
        held += await _drain(pb, timeout=1)
        return got_a, held

    assert sim.run(main(), timeout=VIRTUAL_LIMIT) == ([b"b->a"], [[b"a->b"]])


def test_connects_fail_while_partitioned_and_succeed_after_repair() -> None:
    sim = _sim()
    a, b = sim.node("a"), sim.node("b")

    async def main() -> tuple[list[str], float]:
        b.puller(bind=BIND)
        sim.partition("a", "b")
        push = a.pusher(options=SocketOptions(reconnect_ivl=100))
        mon = push.monitor()
        push.connect(AT_B)
        await asyncio.sleep(1)
        sim.repair("a", "b")
        names = []
        while True:
            event = await mon.recv(timeout=1)
            names.append(event.name)
            if event.name == "CONNECTED":
                return names, sim.now

    names, connected_at = sim.run(main(), timeout=VIRTUAL_LIMIT)
    assert names[0] == "CONNECT_DELAYED"
    assert names[1:-1] == ["CONNECT_RETRIED"] * (len(names) - 2)
    assert len(names) - 2 == 10  # attempts at L, L+0.1, ..., L+0.9
    assert connected_at == pytest.approx(L + 1.0)
    failures = [e for e in sim.trace.events if e.kind == "connect-failed"]
    assert all("partitioned" in e.detail for e in failures)


@pytest.mark.parametrize(("ivl", "timeout"), [(1000, -1), (500, 3000)])
def test_heartbeats_drop_a_partitioned_connection_after_ivl_plus_timeout(
    ivl: int, timeout: int
) -> None:
    sim = _sim()
    a, b = sim.node("a"), sim.node("b")
    options = SocketOptions(heartbeat_ivl=ivl, heartbeat_timeout=timeout, reconnect_ivl=100)
    effective = ivl if timeout == -1 else timeout

    async def main() -> tuple[float, float, list[bytes]]:
        pull = b.puller(bind=BIND, options=options)
        push = a.pusher(connect=AT_B, options=options)
        mon = push.monitor()
        await asyncio.sleep(0.1)
        while (await mon.recv()).name != "HANDSHAKE_SUCCEEDED":
            pass
        sim.partition("a", "b")
        cut = sim.now
        while (await mon.recv()).name != "DISCONNECTED":
            pass
        dropped_after = sim.now - cut
        await asyncio.sleep(2)
        sim.repair("a", "b")
        repaired = sim.now
        while (await mon.recv()).name != "CONNECTED":
            pass
        await push.send([b"after"])
        return dropped_after, sim.now - repaired, await pull.recv(timeout=1)

    dropped_after, reconnected_after, msg = sim.run(main(), timeout=VIRTUAL_LIMIT)
    assert dropped_after == pytest.approx((ivl + effective) / 1000)
    assert 0 < reconnected_after <= 0.1 + 1e-9
    assert msg == [b"after"]


def test_without_heartbeats_a_partition_never_drops_the_connection() -> None:
    sim = _sim()
    a, b = sim.node("a"), sim.node("b")

    async def main() -> list[str]:
        b.puller(bind=BIND)
        push = a.pusher(connect=AT_B)
        mon = push.monitor()
        await asyncio.sleep(0.1)
        sim.partition("a", "b")
        await asyncio.sleep(3600)
        sim.repair("a", "b")
        names = []
        while (event := mon.try_recv()) is not None:
            names.append(event.name)
        return names

    assert "DISCONNECTED" not in sim.run(main(), timeout=VIRTUAL_LIMIT)


def test_drop_connection_keeps_the_connecters_queue_and_discards_the_binders() -> None:
    sim = _sim(**PIPES_ONLY)
    a, b = sim.node("a"), sim.node("b")

    async def main() -> tuple[int, list[list[bytes]], list[list[bytes]], int | None, int | None]:
        # a's DEALER connects to b's DEALER; each has messages stuck behind a full peer.
        opts = SocketOptions(sndhwm=3, rcvhwm=1)
        binder = b.dealer(bind=BIND, options=opts)
        connecter = a.dealer(connect=AT_B, options=opts)
        await asyncio.sleep(0.1)
        for i in range(4):
            connecter.try_send([b"c%d" % i])  # c0 in b's receive queue, c1-c3 wait at a
            binder.try_send([b"b%d" % i])  # b0 in a's receive queue, b1-b3 wait at b
        await asyncio.sleep(0.1)
        broken = sim.drop_connection("a", "b")
        binder_dropped, connecter_dropped = binder.stats.dropped, connecter.stats.dropped
        await asyncio.sleep(1)  # a reconnects after reconnect_ivl
        at_binder = await _drain(binder, timeout=0.5)
        at_connecter = await _drain(connecter, timeout=0.5)
        return broken, at_binder, at_connecter, binder_dropped, connecter_dropped

    broken, at_binder, at_connecter, binder_dropped, connecter_dropped = sim.run(
        main(), timeout=VIRTUAL_LIMIT
    )
    assert broken == 1
    # what had arrived stays readable; a's queue survives and is delivered on reconnect
    assert at_binder == [[b"c0"], [b"c1"], [b"c2"], [b"c3"]]
    assert at_connecter == [[b"b0"]]
    assert binder_dropped == 3
    assert connecter_dropped == 0


def test_drop_connection_loses_messages_in_flight_and_counts_them_at_the_sender() -> None:
    sim = Simulation(latency=Constant(0.05))
    a, b = sim.node("a"), sim.node("b")

    async def main() -> tuple[int | None, list[list[bytes]]]:
        pull = b.puller(bind=BIND)
        push = a.pusher(connect=AT_B)
        await asyncio.sleep(1)
        await push.send([b"lost"])
        await asyncio.sleep(0.01)
        sim.drop_connection("a", "b")
        await push.send([b"kept"])
        return push.stats.dropped, await _drain(pull, timeout=1)

    assert sim.run(main(), timeout=VIRTUAL_LIMIT) == (1, [[b"kept"]])


def test_a_crash_behind_a_partition_is_noticed_only_on_repair() -> None:
    sim = _sim()
    a, b = sim.node("a"), sim.node("b")

    async def main() -> tuple[list[str], float]:
        b.puller(bind=BIND)
        push = a.pusher(connect=AT_B)
        mon = push.monitor()
        await asyncio.sleep(0.1)
        while (await mon.recv()).name != "HANDSHAKE_SUCCEEDED":
            pass
        sim.partition("a", "b")
        sim.crash("b")
        await asyncio.sleep(60)
        during = [e.name for e in iter(mon.try_recv, None)]
        sim.repair("a", "b")
        repaired = sim.now
        while (await mon.recv(timeout=1)).name != "DISCONNECTED":
            pass
        return during, sim.now - repaired

    during, noticed_after = sim.run(main(), timeout=VIRTUAL_LIMIT)
    assert during == []
    assert noticed_after == 0


def test_heartbeats_notice_a_crash_behind_a_partition() -> None:
    sim = _sim()
    a, b = sim.node("a"), sim.node("b")
    options = SocketOptions(heartbeat_ivl=1000, heartbeat_timeout=2000)

    async def main() -> float:
        pull = a.puller(bind=BIND, options=options)
        mon = pull.monitor()
        b.pusher(connect=AT_A, options=options)
        await asyncio.sleep(0.1)
        sim.crash("b")  # the connecting side dies; the reset is on its way ...
        sim.partition("a", "b")  # ... and is held
        cut = sim.now
        while (await mon.recv(timeout=10)).name != "DISCONNECTED":
            pass
        return sim.now - cut

    assert sim.run(main(), timeout=VIRTUAL_LIMIT) == pytest.approx(3.0)


def test_disconnect_drops_the_connection_and_its_queue_counted() -> None:
    sim = _sim(**PIPES_ONLY)
    a, b = sim.node("a"), sim.node("b")

    async def main() -> tuple[int | None, list[list[bytes]], list[list[bytes]]]:
        pull = b.puller(bind=BIND, options=SocketOptions(rcvhwm=1))
        push = a.pusher(connect=AT_B, options=SocketOptions(sndhwm=10))
        await asyncio.sleep(0.1)
        for i in range(5):
            await push.send([b"%d" % i])  # 0 reaches the PULL, 1-4 wait at the PUSH
        await asyncio.sleep(0.1)
        push.disconnect(AT_B)
        first = await _drain(pull, timeout=1)
        with pytest.raises(WouldBlock):
            push.try_send([b"no peer"])
        return push.stats.dropped, first, await _drain(pull, timeout=1)

    assert sim.run(main(), timeout=VIRTUAL_LIMIT) == (4, [[b"0"]], [])
