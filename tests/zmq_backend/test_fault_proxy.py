"""The tcp fault proxy: each fault at the TCP level, its bounds, and its cost.

Raw pyzmq peers on 127.0.0.1 with random ports, LINGER=0 and receive timeouts, so
nothing here can hang; every proxy is closed in a ``with``.
"""

from __future__ import annotations

import asyncio
import statistics
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import zmq

from transportkit import ClosedError, EndpointError, OptionError, SocketOptions, UnsupportedError
from transportkit.sim_backend import (
    Constant,
    Crash,
    DropConnection,
    Hold,
    Partition,
    Release,
    Repair,
    Restart,
    SetLatency,
)
from transportkit.testing import FaultProxy, ZmqHarness, free_tcp_endpoint, open_harness
from transportkit.testing._faultproxy import CHUNK_BYTES
from transportkit.zmq_backend import ZmqNetwork

TIMEOUT_MS = 2000


@contextmanager
def context() -> Iterator[zmq.Context[zmq.Socket[bytes]]]:
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    try:
        yield ctx
    finally:
        ctx.destroy(linger=0)


def sock(ctx: zmq.Context[zmq.Socket[bytes]], kind: int, **opts: int) -> zmq.Socket[bytes]:
    s = ctx.socket(kind)
    s.linger = 0
    s.rcvtimeo = TIMEOUT_MS
    s.sndtimeo = TIMEOUT_MS
    s.reconnect_ivl = 20
    for name, value in opts.items():
        s.setsockopt(getattr(zmq, name.upper()), value)
    return s


def bind(s: zmq.Socket[bytes]) -> str:
    port = s.bind_to_random_port("tcp://127.0.0.1")
    return f"tcp://127.0.0.1:{port}"


def nothing_within(s: zmq.Socket[bytes], seconds: float) -> bool:
    return s.poll(int(seconds * 1000)) == 0


def test_a_partition_stops_forwarding_and_the_repair_delivers_in_order() -> None:
    with context() as ctx, FaultProxy() as proxy:
        pull = sock(ctx, zmq.PULL)
        real = bind(pull)
        push = sock(ctx, zmq.PUSH)
        push.connect(proxy.route("cli", "srv", real))
        push.send(b"before")
        assert pull.recv() == b"before"
        assert proxy.apply(Partition("cli", "srv")).startswith("applied: cli->srv and srv->cli cut")
        for i in range(20):
            push.send(b"%d" % i)
        assert nothing_within(pull, 0.15)  # on the old code (no proxy) all 20 arrive at once
        assert proxy.apply(Repair("cli", "srv")).startswith("applied")
        assert [pull.recv() for _ in range(20)] == [b"%d" % i for i in range(20)]


def test_new_connections_are_refused_while_cut_and_made_after_the_repair() -> None:
    with context() as ctx, FaultProxy() as proxy:
        pull = sock(ctx, zmq.PULL)
        endpoint = proxy.route("cli", "srv", bind(pull))
        proxy.apply(Partition("srv", "cli", both_ways=False))  # either direction cut refuses
        push = sock(ctx, zmq.PUSH)
        push.connect(endpoint)
        push.send(b"queued")  # libzmq queues it for the pipe it will make
        assert nothing_within(pull, 0.15)
        assert proxy.stats.refused >= 1 and proxy.stats.accepted == 0
        proxy.apply(Repair("srv", "cli", both_ways=False))
        assert pull.recv() == b"queued"
        assert proxy.stats.accepted == 1


def test_a_one_way_partition_cuts_one_direction_only() -> None:
    with context() as ctx, FaultProxy() as proxy:
        server = sock(ctx, zmq.PAIR)
        client = sock(ctx, zmq.PAIR)
        client.connect(proxy.route("a", "b", bind(server)))
        client.send(b"hello")
        assert server.recv() == b"hello"
        proxy.apply(Partition("a", "b", both_ways=False))
        client.send(b"a->b")
        server.send(b"b->a")
        assert client.recv() == b"b->a"
        assert nothing_within(server, 0.2)
        proxy.apply(Repair("a", "b", both_ways=False))
        assert server.recv() == b"a->b"


def test_hold_stalls_traffic_but_accepts_connections_and_release_delivers() -> None:
    with context() as ctx, FaultProxy() as proxy:
        pull = sock(ctx, zmq.PULL)
        endpoint = proxy.route("cli", "srv", bind(pull))
        outcome = proxy.apply(Hold("cli", "srv"))
        assert "held on 0 connection(s)" in outcome
        push = sock(ctx, zmq.PUSH)
        push.connect(endpoint)
        push.send(b"held")
        assert nothing_within(pull, 0.15)
        assert proxy.stats.accepted == 1 and proxy.stats.refused == 0
        assert "released on 1 connection(s)" in proxy.apply(Release("cli", "srv"))
        assert pull.recv() == b"held"


def test_a_dropped_connection_is_reset_and_libzmq_reconnects() -> None:
    with context() as ctx, FaultProxy() as proxy:
        pull = sock(ctx, zmq.PULL)
        push = sock(ctx, zmq.PUSH)
        push.connect(proxy.route("cli", "srv", bind(pull)))
        push.send(b"1")
        assert pull.recv() == b"1"
        outcome = proxy.apply(DropConnection("cli", "srv", discard_queues=True))
        assert outcome.startswith("applied: 1 connection(s) between cli and srv reset")
        assert "discard_queues not realised" in outcome
        push.send(b"2")
        assert pull.recv() == b"2"
        stats = proxy.stats
        assert (stats.dropped, stats.accepted, stats.open) == (1, 2, 1)


def round_trips(req: zmq.Socket[bytes], rep: zmq.Socket[bytes], count: int) -> list[float]:
    times = []
    for _ in range(count):
        began = time.perf_counter()
        req.send(b"x")
        rep.send(rep.recv())
        req.recv()
        times.append(time.perf_counter() - began)
    return times


def test_a_latency_fault_delays_each_direction_and_none_removes_it() -> None:
    with context() as ctx, FaultProxy() as proxy:
        rep = sock(ctx, zmq.REP)
        req = sock(ctx, zmq.REQ)
        req.connect(proxy.route("cli", "srv", bind(rep)))
        round_trips(req, rep, 3)
        proxy.apply(SetLatency("cli", "srv", Constant(0.03)))
        slow = round_trips(req, rep, 3)
        assert min(slow) >= 0.06  # 30 ms each way
        assert "added delay removed" in proxy.apply(SetLatency("cli", "srv", None))
        assert statistics.median(round_trips(req, rep, 5)) < 0.03


def test_a_cut_link_pushes_back_on_libzmq_instead_of_buffering_without_bound() -> None:
    """The proxy reads nothing from a cut direction: the sender's kernel buffers and
    then libzmq's pipe fill, and a PUSH's send times out (on a proxy that kept
    reading, it would accept sends for as long as memory lasts)."""
    with context() as ctx, FaultProxy() as proxy:
        pull = sock(ctx, zmq.PULL, rcvhwm=10)
        push = sock(ctx, zmq.PUSH, sndhwm=10)
        push.sndtimeo = 200
        push.connect(proxy.route("cli", "srv", bind(pull)))
        push.send(b"x")
        assert pull.recv() == b"x"
        proxy.apply(Partition("cli", "srv"))
        payload = b"p" * 4096
        accepted = 0
        with pytest.raises(zmq.Again):
            for _ in range(100_000):
                push.send(payload)
                accepted += 1
        # libzmq's pipe and the kernel buffers of one loopback connection: a few MB.
        assert accepted * len(payload) < 32 * 1024 * 1024
        proxy.apply(Repair("cli", "srv"))
        assert len(pull.recv()) == len(payload)


def test_scheduled_faults_fire_at_their_times_from_the_proxys_thread() -> None:
    with context() as ctx, FaultProxy() as proxy:
        pull = sock(ctx, zmq.PULL)
        push = sock(ctx, zmq.PUSH)
        push.connect(proxy.route("cli", "srv", bind(pull)))
        start = time.monotonic()
        proxy.schedule([(0.25, Repair("cli", "srv")), (0.05, Partition("cli", "srv"))], start=start)
        time.sleep(0.1)
        push.send(b"during")
        assert pull.recv() == b"during"
        arrived = time.monotonic() - start
        assert 0.2 <= arrived < 1.5
        assert [(at, type(f).__name__) for at, f, _ in proxy.outcomes] == [
            (0.05, "Partition"),
            (0.25, "Repair"),
        ]
        assert all(text.startswith("applied") for _, _, text in proxy.outcomes)


def test_crashes_and_bad_arguments_are_refused_clearly() -> None:
    with FaultProxy() as proxy:
        with pytest.raises(ValueError, match="not a network fault"):
            proxy.apply(Crash("srv"))
        with pytest.raises(ValueError, match="not a network fault"):
            proxy.schedule([(1.0, Crash("srv"))], start=time.monotonic())
        with pytest.raises(EndpointError, match=r"tcp://127\.0\.0\.1:PORT"):
            proxy.route("a", "b", "ipc:///tmp/x")
        assert proxy.apply(Partition("a", "b")).startswith("not applicable on zmq")
    with pytest.raises(OptionError, match="buffer_bytes"):
        FaultProxy(buffer_bytes=0)
    with pytest.raises(ClosedError):
        proxy.apply(Repair("a", "b"))


def test_close_is_bounded_and_leaves_no_thread_listener_or_connection() -> None:
    with context() as ctx:
        proxy = FaultProxy()
        pull = sock(ctx, zmq.PULL)
        endpoint = proxy.route("cli", "srv", bind(pull))
        push = sock(ctx, zmq.PUSH)
        push.connect(endpoint)
        push.send(b"x")
        assert pull.recv() == b"x"
        proxy.apply(Hold("cli", "srv"))
        push.send(b"stuck")
        began = time.monotonic()
        proxy.close()
        assert time.monotonic() - began < 3.0
        assert not any(t.name == "transportkit-fault-proxy" for t in threading.enumerate())
        proxy.close()  # idempotent


def test_the_proxy_adds_well_under_a_millisecond_to_a_round_trip() -> None:
    """The figure the module docstring states: REQ/REP round trips through the proxy
    against direct ones (printed with ``-s``)."""
    with context() as ctx, FaultProxy() as proxy:
        rep = sock(ctx, zmq.REP)
        real = bind(rep)
        direct, proxied = sock(ctx, zmq.REQ), sock(ctx, zmq.REQ)
        direct.connect(real)
        proxied.connect(proxy.route("cli", "srv", real))
        medians: dict[str, list[float]] = {"direct": [], "proxy": []}
        for _ in range(3):  # interleaved, so machine load hits both alike
            medians["direct"].append(statistics.median(round_trips(direct, rep, 300)))
            medians["proxy"].append(statistics.median(round_trips(proxied, rep, 300)))
        d, p = min(medians["direct"]), min(medians["proxy"])
        print(f"round trip median: direct {d * 1e6:.0f} us, proxy {p * 1e6:.0f} us")
        assert p - d < 1e-3


# -- the hook the harness uses ----------------------------------------------------------


class Recorder:
    def __init__(self) -> None:
        self.binds: list[str] = []
        self.connects: list[str] = []

    def bound(self, endpoint: str) -> None:
        self.binds.append(endpoint)

    def connect(self, endpoint: str) -> str:
        self.connects.append(endpoint)
        return endpoint.replace("tcp://localhost:", "tcp://127.0.0.1:")


def test_an_endpoint_map_sees_binds_and_chooses_where_connects_go() -> None:
    recorder = Recorder()
    with ZmqNetwork(name="n", endpoint_map=recorder) as net:
        pull = net.puller(bind="tcp://127.0.0.1:*")
        port = pull.last_endpoint.rsplit(":", 1)[1] if pull.last_endpoint else ""
        push = net.pusher(connect=f"tcp://localhost:{port}")
        blocking = net.blocking(push.kind, connect=f"tcp://localhost:{port}")
        assert push.last_endpoint == f"tcp://localhost:{port}"  # the endpoint it was given
        push.disconnect(f"tcp://localhost:{port}")  # mapped the same way, so it is found
        blocking.disconnect(f"tcp://localhost:{port}")
    assert recorder.binds == [f"tcp://127.0.0.1:{port}"]
    assert recorder.connects == [f"tcp://localhost:{port}"] * 4


# -- the harness ------------------------------------------------------------------------


def test_the_zmq_harness_routes_tcp_between_its_networks_through_the_proxy() -> None:
    with open_harness("zmq", faults=True) as h:
        assert isinstance(h, ZmqHarness) and h.proxy is not None
        srv, cli = h.network("srv"), h.network("cli")

        async def main() -> list[bytes]:
            with srv.puller(bind=h.bind_endpoint()) as pull:
                assert pull.last_endpoint is not None
                options = SocketOptions(reconnect_ivl=20)
                with cli.pusher(connect=pull.last_endpoint, options=options) as push:
                    await push.send([b"a"])
                    first = await pull.recv(timeout=2.0)
                    h.apply(Partition("cli", "srv"))
                    await push.send([b"b"])
                    assert await pull.poll(0.2) is False
                    h.apply(Repair("cli", "srv"))
                    return [*first, *await pull.recv(timeout=2.0)]

        assert h.run(main()) == [b"a", b"b"]
        assert [(s, d) for s, d, _ in h.proxy.routes] == [("cli", "srv")]
        # A wildcard bind (libzmq reports tcp://0.0.0.0:PORT) is another network's too.
        other = h.network("other").puller(bind="tcp://*:*")
        assert other.last_endpoint is not None
        port = other.last_endpoint.rsplit(":", 1)[1]
        cli.pusher(connect=f"tcp://127.0.0.1:{port}")
        assert [(s, d) for s, d, _ in h.proxy.routes][1:] == [("cli", "other")]


def test_a_zmq_harness_without_the_proxy_refuses_network_faults_and_crashes_networks() -> None:
    with open_harness("zmq") as h:
        with pytest.raises(Exception, match="faults=True"):
            h.apply(Partition("a", "b"))
        with pytest.raises(Exception, match="faults=True"):
            h.schedule_faults([(0.1, Hold("a", "b"))])
        net = h.network("srv")
        assert h.apply(Crash("srv")).startswith("applied")
        assert net.closed
        with pytest.raises(ClosedError, match="down"):
            h.network("srv")
        h.schedule_faults([(0.0, Restart("srv"))])  # fires within the next run
        h.run(asyncio.sleep(0.05))
        assert [(type(f).__name__, text[:7]) for _, f, text in h.outcomes] == [
            ("Restart", "applied")
        ]
        again = h.network("srv")
        assert again is not net and not again.closed


def wait_event(monitor: zmq.Socket[bytes], wanted: int, seconds: float) -> bool:
    from zmq.utils.monitor import recv_monitor_message  # noqa: PLC0415

    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        if monitor.poll(int(left * 1000)) and recv_monitor_message(monitor)["event"] == wanted:
            return True
    return False


def test_heartbeats_expire_across_a_cut_link_and_the_connection_comes_back_after_repair() -> None:
    # Long waits (5 s): it failed once in a full run on a loaded machine (the failing
    # assertion was not captured) and passes alone; a wait only costs when it fails.
    with context() as ctx, FaultProxy() as proxy:
        pull = sock(ctx, zmq.PULL)
        push = sock(ctx, zmq.PUSH, heartbeat_ivl=50, heartbeat_timeout=200)
        monitor = push.get_monitor_socket(zmq.EVENT_DISCONNECTED | zmq.EVENT_HANDSHAKE_SUCCEEDED)
        try:
            push.connect(proxy.route("cli", "srv", bind(pull)))
            assert wait_event(monitor, zmq.EVENT_HANDSHAKE_SUCCEEDED, 5.0)
            proxy.apply(Partition("cli", "srv"))
            assert wait_event(monitor, zmq.EVENT_DISCONNECTED, 5.0)  # libzmq's own timeout
            proxy.apply(Repair("cli", "srv"))
            assert wait_event(monitor, zmq.EVENT_HANDSHAKE_SUCCEEDED, 5.0)
            push.send(b"after")
            assert pull.recv() == b"after"
        finally:
            push.disable_monitor()
            monitor.close(linger=0)


def test_a_receiver_that_stops_reading_fills_at_most_the_proxys_bound() -> None:
    with context() as ctx, FaultProxy(buffer_bytes=64 * 1024) as proxy:
        pull = sock(ctx, zmq.PULL, rcvhwm=1, rcvbuf=64 * 1024)
        push = sock(ctx, zmq.PUSH, sndhwm=1)
        push.sndtimeo = 300
        push.connect(proxy.route("cli", "srv", bind(pull)))
        payload = b"p" * (256 * 1024)
        with pytest.raises(zmq.Again):
            for _ in range(10_000):  # nobody reads: the sends must stop being accepted
                push.send(payload)
        assert 0 < proxy.stats.held_bytes <= 64 * 1024 + CHUNK_BYTES
        assert len(pull.recv()) == len(payload)  # and it all flows again


def test_a_link_latency_delays_from_the_start_and_a_spike_ends_back_at_it() -> None:
    """A scenario's ``[[link]]`` latency is the link's own added delay: a latency
    fault replaces it while it lasts, and its end (``SetLatency(a, b, None)``) restores
    it, not zero (the sim restores a link's own latency after a spike too)."""
    with context() as ctx, FaultProxy() as proxy:
        rep = sock(ctx, zmq.REP)
        req = sock(ctx, zmq.REQ)
        text = proxy.set_link_latency("cli", "srv", Constant(0.01))
        assert text.startswith("applied: cli->srv and srv->cli: +10 ms per chunk"), text
        req.connect(proxy.route("cli", "srv", bind(rep)))
        assert min(round_trips(req, rep, 3)) >= 0.02  # 10 ms each way, from the start
        proxy.apply(SetLatency("cli", "srv", Constant(0.03)))
        assert min(round_trips(req, rep, 2)) >= 0.04  # 30 ms out, the link's 10 ms back
        ended = proxy.apply(SetLatency("cli", "srv", None))
        assert "back to the link's own added delay" in ended, ended
        back = round_trips(req, rep, 3)
        assert min(back) >= 0.02 and statistics.median(back) < 0.03, back
        with pytest.raises(TypeError, match="latency model"):
            proxy.set_link_latency("cli", "srv", 0.01)  # type: ignore[arg-type]


def test_the_zmq_harness_refuses_the_faults_the_proxy_cannot_realise() -> None:
    """On the old code each of these was accepted and did nothing to the traffic:
    ``apply`` returned "not applicable" (ipc, tcp connected before the bind) or
    "applied ... discard_queues not realised"."""
    with open_harness("zmq", faults=True) as h:
        srv, cli = h.network("srv"), h.network("cli")
        drop = DropConnection("cli", "srv", discard_queues=True)
        with pytest.raises(UnsupportedError, match="cannot reach into libzmq's queues"):
            h.apply(drop)
        with pytest.raises(UnsupportedError, match="cannot reach into libzmq's queues"):
            h.schedule_faults([(0.1, drop)])
        # Networks joined over ipc: no fault between them can be realised.
        pull = srv.puller(bind=h.bind_endpoint("ipc"))
        assert pull.last_endpoint is not None
        cli.pusher(connect=pull.last_endpoint)
        with pytest.raises(
            UnsupportedError, match=r"does not sit in \(cli connected to srv's ipc://"
        ):
            h.apply(Partition("cli", "srv"))
        # Once a fault between two networks is scheduled, such a connect is refused.
        other = h.network("other").puller(bind=h.bind_endpoint("ipc"))
        assert other.last_endpoint is not None
        h.schedule_faults([(60.0, Hold("cli", "other"))])
        with pytest.raises(UnsupportedError, match=r"cannot sit in .* but Hold\(a='cli'"):
            cli.pusher(connect=other.last_endpoint)
        # A tcp connect made before the port was bound goes around the proxy.
        port = free_tcp_endpoint().rsplit(":", 1)[1]
        cli.pusher(connect=f"tcp://127.0.0.1:{port}")
        h.network("late").puller(bind=f"tcp://127.0.0.1:{port}")
        with pytest.raises(
            UnsupportedError, match=f"cli connected to late's tcp://127.0.0.1:{port}"
        ):
            h.apply(SetLatency("cli", "late", Constant(0.01)))
        # Within one network, or between networks that never met: nothing to refuse.
        assert h.apply(Partition("srv", "late")).startswith("not applicable on zmq")
