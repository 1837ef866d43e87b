"""XPUB and XSUB on both backends: subscriptions in the open, libzmq 4.3's rules.

Every test runs once per backend (``tk_harness``). On zmq these are libzmq's own XPUB
and XSUB; on the sim they are its model of them, held to the same outcomes. Waits are
for a subscription message at the XPUB (the way an XPUB knows a subscriber is there),
never for a fixed time, except to show that nothing more arrives.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from contextlib import ExitStack
from typing import Any

import pytest

from transportkit import (
    ClosedError,
    FrameError,
    Message,
    Monitor,
    OptionError,
    Receiver,
    SocketKind,
    SocketOptions,
    StateError,
    Timeout,
    WouldBlock,
    XPublisher,
    parse_subscription,
)
from transportkit._kinds import PEERS
from transportkit.sim_backend import Crash, DropConnection
from transportkit.testing import Harness, open_harness

RUN_TIMEOUT = 30.0


def run(h: Harness, body: Callable[[ExitStack], Coroutine[Any, Any, None]]) -> None:
    async def main() -> None:
        with ExitStack() as stack:
            await body(stack)

    h.run(main(), timeout=RUN_TIMEOUT)


async def expect(sock: Receiver, *messages: Message, timeout: float = 5.0) -> None:
    """Receive exactly ``messages`` next, in order."""
    got = []
    for _ in messages:
        try:
            got.append(await sock.recv(timeout=timeout))
        except Timeout:
            break
    assert got == list(messages)


async def quiet(h: Harness, sock: Receiver) -> None:
    """Nothing more arrives at ``sock`` within half the harness's settle time (100 ms
    on zmq, where loopback delivers in well under a millisecond).
    """
    await asyncio.sleep(h.settle / 2)
    assert sock.try_recv() is None


async def keep_using(sock: Receiver) -> None:
    """Use ``sock`` now and then, as an application that still reads it would."""
    while True:
        sock.try_recv()
        await asyncio.sleep(0.005)


async def keep_polling(sock: Receiver) -> None:
    """Poll ``sock`` now and then (taking nothing), as a waiting reader does."""
    while True:
        await sock.poll(0)
        await asyncio.sleep(0.005)


def xpub(h: Harness, stack: ExitStack, transport: str = "tcp", **options: Any) -> XPublisher:
    net = h.network("local" if transport == "inproc" else "pub")
    sock = stack.enter_context(
        net.xpublisher(bind=h.bind_endpoint(transport), options=SocketOptions(**options))
    )
    return sock


def net_for(h: Harness, transport: str, name: str) -> Any:
    return h.network("local" if transport == "inproc" else name)


@pytest.mark.parametrize("transport", ["tcp", "inproc"])
def test_xpub_receives_a_topics_first_subscription_only(
    tk_harness: Harness, transport: str
) -> None:
    h = tk_harness

    async def body(stack: ExitStack) -> None:
        pub = xpub(h, stack, transport)
        endpoint = pub.last_endpoint
        assert endpoint is not None
        sub1 = stack.enter_context(
            net_for(h, transport, "sub1").subscriber(connect=endpoint, topics=[b"A"])
        )
        await expect(pub, [b"\x01A"])
        sub2 = stack.enter_context(
            net_for(h, transport, "sub2").subscriber(connect=endpoint, topics=[b"A", b"B"])
        )
        # libzmq sends a SUB's subscriptions in topic order: B arriving means A did too.
        await expect(pub, [b"\x01B"])
        await quiet(h, pub)
        assert pub.stats.received == 2
        await pub.publish(b"A", b"1")
        await pub.publish(b"B", b"2")
        await pub.publish(b"C", b"3")
        await expect(sub1, [b"A", b"1"])
        await expect(sub2, [b"A", b"1"], [b"B", b"2"])
        await quiet(h, sub1)
        await quiet(h, sub2)

    run(h, body)


def test_xpub_verbose_receives_every_subscription(tk_harness: Harness) -> None:
    h = tk_harness

    async def body(stack: ExitStack) -> None:
        pub = xpub(h, stack, xpub_verbose=True)
        endpoint = pub.last_endpoint
        sub1 = stack.enter_context(h.network("sub1").subscriber(connect=endpoint, topics=[b"A"]))
        await expect(pub, [b"\x01A"])
        sub2 = stack.enter_context(h.network("sub2").subscriber(connect=endpoint, topics=[b"A"]))
        await expect(pub, [b"\x01A"])
        sub1.subscribe(b"A")  # the same subscriber again: verbose passes it too
        await expect(pub, [b"\x01A"])
        # Unsubscriptions are not verbose: only the last one of the topic comes.
        sub1.unsubscribe(b"A")
        sub1.unsubscribe(b"A")
        await quiet(h, pub)
        sub2.unsubscribe(b"A")
        await expect(pub, [b"\x00A"])
        await quiet(h, pub)

    run(h, body)


def test_xpub_verboser_receives_every_unsubscription(tk_harness: Harness) -> None:
    h = tk_harness

    async def body(stack: ExitStack) -> None:
        pub = xpub(h, stack, xpub_verboser=True)
        endpoint = pub.last_endpoint
        sub1 = stack.enter_context(h.network("sub1").subscriber(connect=endpoint, topics=[b"A"]))
        await expect(pub, [b"\x01A"])
        sub2 = stack.enter_context(h.network("sub2").subscriber(connect=endpoint, topics=[b"A"]))
        await expect(pub, [b"\x01A"])
        sub1.unsubscribe(b"A")
        await expect(pub, [b"\x00A"])
        sub2.close()  # leaving unsubscribes too, verbosely
        await expect(pub, [b"\x00A"])
        await quiet(h, pub)

    run(h, body)


def test_xpub_unsubscription_comes_when_the_last_subscriber_leaves(tk_harness: Harness) -> None:
    h = tk_harness

    async def body(stack: ExitStack) -> None:
        pub = xpub(h, stack)
        endpoint = pub.last_endpoint
        sub1 = stack.enter_context(h.network("sub1").subscriber(connect=endpoint, topics=[b"A"]))
        await expect(pub, [b"\x01A"])
        sub2 = stack.enter_context(
            h.network("sub2").subscriber(connect=endpoint, topics=[b"A", b"B"])
        )
        await expect(pub, [b"\x01B"])
        sub1.unsubscribe(b"A")
        sub1.unsubscribe(b"never")  # never subscribed: the SUB does not send it
        await quiet(h, pub)
        sub2.unsubscribe(b"A")
        await expect(pub, [b"\x00A"])
        sub2.subscribe(b"B")  # counted: two subscriptions to B, one unsubscribe keeps it
        sub2.unsubscribe(b"B")
        await quiet(h, pub)
        sub2.unsubscribe(b"B")
        await expect(pub, [b"\x00B"])

    run(h, body)


def test_a_disconnect_or_crash_unsubscribes_from_the_subscribers_topics(
    tk_harness: Harness,
) -> None:
    h = tk_harness

    async def body(stack: ExitStack) -> None:
        pub = xpub(h, stack)
        endpoint = pub.last_endpoint
        assert endpoint is not None
        sub1 = stack.enter_context(
            h.network("sub1").subscriber(connect=endpoint, topics=[b"A", b"B", b"C"])
        )
        await expect(pub, [b"\x01A"], [b"\x01B"], [b"\x01C"])
        stack.enter_context(h.network("sub2").subscriber(connect=endpoint, topics=[b"B"]))
        stack.enter_context(h.network("sub3").subscriber(connect=endpoint, topics=[b"D"]))
        await expect(pub, [b"\x01D"])
        # sub1 goes: its topics nobody else has are unsubscribed, in topic order.
        sub1.disconnect(endpoint)
        if h.name == "zmq":
            # libzmq ends the connection only once the disconnecting socket is used
            # again (test_zmq_disconnect_completes_when_the_socket_is_used_again).
            await quiet(h, pub)
            user = asyncio.create_task(keep_using(sub1))
        await expect(pub, [b"\x00A"], [b"\x00C"])
        if h.name == "zmq":
            user.cancel()
        await quiet(h, pub)
        # sub3's process dies: the same, when the connection ends.
        h.apply(Crash("sub3"))
        await expect(pub, [b"\x00D"])
        await quiet(h, pub)
        assert pub.stats.received == 7

    run(h, body)


def test_welcome_message_goes_to_each_new_subscriber(tk_harness: Harness) -> None:
    h = tk_harness

    async def body(stack: ExitStack) -> None:
        pub = xpub(h, stack, xpub_welcome_msg=b"W")
        endpoint = pub.last_endpoint
        sub = stack.enter_context(h.network("sub").subscriber(connect=endpoint, topics=[b"W"]))
        # libzmq attaches a connection (and sends the welcome) when the XPUB is next
        # used: here by the receive of the subscription.
        await expect(pub, [b"\x01W"])
        await expect(sub, [b"W"])
        # A SUB filters the welcome as any message: not subscribed to it, not seen.
        other = stack.enter_context(h.network("other").subscriber(connect=endpoint, topics=[b"X"]))
        await expect(pub, [b"\x01X"])
        # An XSUB does not filter: it sees the welcome with no subscription at all.
        xsub = stack.enter_context(h.network("xsub").xsubscriber(connect=endpoint))
        user = asyncio.create_task(keep_using(pub))  # it sends nothing the XPUB could read
        await expect(xsub, [b"W"])
        user.cancel()
        await pub.publish(b"X", b"1")
        await expect(other, [b"X", b"1"])
        await quiet(h, xsub)

    run(h, body)


def test_xsub_subscription_goes_upstream_to_a_pub(tk_harness: Harness) -> None:
    h = tk_harness

    async def body(stack: ExitStack) -> None:
        pub = stack.enter_context(h.network("pub").publisher(bind=h.bind_endpoint()))
        xsub = stack.enter_context(
            h.network("xsub").xsubscriber(connect=pub.last_endpoint, topics=[b"A"])
        )
        assert xsub.subscriptions == (b"A",)
        # A PUB does not say when a subscription arrived: publish until one is seen.
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 5.0
        while (got := xsub.try_recv()) is None:
            assert loop.time() < deadline, "the XSUB's subscription never reached the PUB"
            await pub.publish(b"A", b"probe")
            await asyncio.sleep(0.01)
        assert got == [b"A", b"probe"]
        await asyncio.sleep(h.settle)
        while xsub.try_recv() is not None:
            pass
        await pub.publish(b"B", b"1")
        await pub.publish(b"A", b"2")
        await expect(xsub, [b"A", b"2"])
        # Data sent upstream is discarded by a PUB (it never receives), no error.
        await xsub.send([b"upstream data"])
        xsub.unsubscribe(b"A")
        assert xsub.subscriptions == ()
        await asyncio.sleep(h.settle)
        await pub.publish(b"A", b"3")
        await quiet(h, xsub)
        assert xsub.stats.sent == 3  # the subscription, the data, the unsubscription

    run(h, body)


def test_xsub_to_xpub_subscriptions_and_data_upstream(tk_harness: Harness) -> None:
    h = tk_harness

    async def body(stack: ExitStack) -> None:
        pub = xpub(h, stack, xpub_verbose=True)
        xsub = stack.enter_context(h.network("xsub").xsubscriber(connect=pub.last_endpoint))
        xsub.subscribe(b"A")
        await expect(pub, [b"\x01A"])
        await xsub.send([b"\x01A"])  # a raw subscription message: the same thing
        await expect(pub, [b"\x01A"])
        assert xsub.subscriptions == (b"A", b"A")
        await xsub.send([b"hello", b"world"])
        await expect(pub, [b"hello", b"world"])
        assert parse_subscription([b"hello", b"world"]) is None
        xsub.unsubscribe(b"A")  # one of two: the XSUB keeps it, sends nothing
        await quiet(h, pub)
        await pub.publish(b"A", b"x")
        await expect(xsub, [b"A", b"x"])
        xsub.unsubscribe(b"A")
        await expect(pub, [b"\x00A"])
        assert pub.stats.received == 4
        assert xsub.stats.sent == 5

    run(h, body)


def test_forwarding_subscriptions_and_data_through_xpub_and_xsub(tk_harness: Harness) -> None:
    """A hand-written forwarder: SUB -> XPUB | XSUB -> PUB and the data back down."""
    h = tk_harness

    async def body(stack: ExitStack) -> None:
        pub = stack.enter_context(h.network("source").publisher(bind=h.bind_endpoint()))
        proxy = h.network("proxy")
        front = stack.enter_context(proxy.xpublisher(bind=h.bind_endpoint()))
        back = stack.enter_context(proxy.xsubscriber(connect=pub.last_endpoint))
        sub = stack.enter_context(
            h.network("sub").subscriber(connect=front.last_endpoint, topics=[b"AAPL"])
        )
        subscription = await front.recv(timeout=5.0)
        assert parse_subscription(subscription) == (True, b"AAPL")
        await back.send(subscription)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 5.0
        while (msg := back.try_recv()) is None:
            assert loop.time() < deadline, "the forwarded subscription never reached the PUB"
            await pub.publish(b"AAPL", b"px=1")
            await pub.publish(b"MSFT", b"px=2")
            await asyncio.sleep(0.01)
        assert msg == [b"AAPL", b"px=1"]
        await front.send(msg)
        await expect(sub, [b"AAPL", b"px=1"])

    run(h, body)


@pytest.mark.parametrize("nodrop", [False, True])
def test_xpub_nodrop_blocks_at_the_hwm_instead_of_dropping(
    tk_harness: Harness, nodrop: bool
) -> None:
    h = tk_harness
    hwm = 10

    async def body(stack: ExitStack) -> None:
        pub = xpub(h, stack, "inproc", sndhwm=hwm, rcvhwm=hwm, sndtimeo=50, xpub_nodrop=nodrop)
        endpoint = pub.last_endpoint
        sub = stack.enter_context(
            h.network("local").subscriber(
                connect=endpoint, topics=[b""], options=SocketOptions(sndhwm=hwm, rcvhwm=hwm)
            )
        )
        await expect(pub, [b"\x01"])
        accepted = 0
        try:
            for i in range(10 * hwm):
                pub.try_send([b"t", b"%d" % i])
                accepted += 1
        except WouldBlock:
            assert nodrop, "an XPUB without xpub_nodrop must never refuse a send"
        if nodrop:
            # inproc holds SNDHWM + RCVHWM; libzmq's pipe is full at exactly that.
            assert accepted == 2 * hwm
            with pytest.raises(Timeout):
                await pub.send([b"t", b"late"])
        else:
            assert accepted == 10 * hwm
        received = []
        while (msg := sub.try_recv()) is not None:
            received.append(msg)
        assert received == [[b"t", b"%d" % i] for i in range(2 * hwm)]
        if h.exact_drops:
            assert pub.stats.dropped == accepted - 2 * hwm

    run(h, body)


@pytest.mark.parametrize(
    "factory",
    ["publisher", "subscriber", "xsubscriber", "pusher", "dealer"],
)
@pytest.mark.parametrize(
    "option",
    [
        {"xpub_verbose": True},
        {"xpub_verboser": True},
        {"xpub_nodrop": True},
        {"xpub_manual": True},
        {"xpub_welcome_msg": b"hi"},
    ],
)
def test_xpub_options_are_refused_on_other_kinds(
    tk_harness: Harness, factory: str, option: dict[str, Any]
) -> None:
    net = tk_harness.network()
    with pytest.raises(OptionError, match=f"'{next(iter(option))}' applies to XPUB, not"):
        getattr(net, factory)(options=SocketOptions(**option))


def test_bad_xpub_options_and_xsub_messages_are_refused(tk_harness: Harness) -> None:
    with pytest.raises(OptionError, match="must not be empty"):
        SocketOptions(xpub_welcome_msg=b"")
    with pytest.raises(OptionError, match="must be bytes or None"):
        SocketOptions(xpub_welcome_msg="hi")  # type: ignore[arg-type]
    with pytest.raises(OptionError, match="must be a bool"):
        SocketOptions(xpub_verbose=1)  # type: ignore[arg-type]
    net = tk_harness.network()
    with pytest.raises(OptionError, match="conflate"):
        net.xpublisher(options=SocketOptions(conflate=True))
    with pytest.raises(OptionError, match="conflate"):
        net.xsubscriber(options=SocketOptions(conflate=True))
    with pytest.raises(FrameError, match="must be bytes"):
        net.xsubscriber(topics=["AAPL"])  # type: ignore[list-item]

    async def body(stack: ExitStack) -> None:
        xsub = stack.enter_context(net.xsubscriber())
        with pytest.raises(FrameError, match="frame 0 of a 2-frame message starts with byte 1"):
            await xsub.send([b"\x01A", b"B"])
        with pytest.raises(FrameError, match="frame 1 of a 2-frame message starts with byte 0"):
            xsub.try_send([b"data", b"\x00B"])
        with pytest.raises(FrameError, match="must be bytes"):
            xsub.subscribe("A")  # type: ignore[arg-type]
        assert xsub.subscriptions == ()
        assert xsub.stats.sent == 0

    run(tk_harness, body)


def test_kinds_peers_and_parse_subscription() -> None:
    assert PEERS[SocketKind.XPUB] == {SocketKind.SUB, SocketKind.XSUB}
    assert PEERS[SocketKind.XSUB] == {SocketKind.PUB, SocketKind.XPUB}
    assert SocketKind.XPUB in PEERS[SocketKind.SUB]
    assert SocketKind.XSUB in PEERS[SocketKind.PUB]
    assert SocketKind.XPUB.can_send and SocketKind.XPUB.can_recv
    assert SocketKind.XSUB.can_send and SocketKind.XSUB.can_recv
    assert parse_subscription([b"\x01AAPL"]) == (True, b"AAPL")
    assert parse_subscription([b"\x00"]) == (False, b"")
    assert parse_subscription([b"\x02x"]) is None
    assert parse_subscription([b""]) is None
    assert parse_subscription([b"\x01A", b"x"]) is None


def test_a_subscribers_topics_arrive_once_each_in_byte_order(tk_harness: Harness) -> None:
    """libzmq's SUB sends its subscriptions on connect by walking its trie: each
    prefix once, in byte order, however often and in whatever order it subscribed.
    """
    h = tk_harness

    async def body(stack: ExitStack) -> None:
        pub = xpub(h, stack, xpub_verbose=True)
        topics = [b"B", b"A", b"AB", b"A", b""]
        stack.enter_context(h.network("sub").subscriber(connect=pub.last_endpoint, topics=topics))
        await expect(pub, [b"\x01"], [b"\x01A"], [b"\x01AB"], [b"\x01B"])
        await quiet(h, pub)

    run(h, body)


def test_a_dropped_connection_unsubscribes_then_the_reconnect_subscribes_again(
    tk_backend: str,
) -> None:
    """The XPUB binds: its end of a dropped connection is a pipe that ends, so the
    subscriber's topics are unsubscribed; the subscriber reconnects and subscribes
    again on the new pipe (the welcome comes again too: it is per pipe).

    The subscriber reads its feed throughout, as an application does: libzmq resends
    a SUB's subscriptions in the SUB's own thread, when it is next used (see
    :func:`test_zmq_a_reconnected_sub_resubscribes_when_it_is_used_again`).
    """
    with open_harness(tk_backend, faults=True) as h:

        async def body(stack: ExitStack) -> None:
            pub = xpub(h, stack, xpub_welcome_msg=b"W")
            sub = stack.enter_context(
                h.network("sub").subscriber(connect=pub.last_endpoint, topics=[b"A", b"W"])
            )
            await expect(pub, [b"\x01A"], [b"\x01W"])
            await expect(sub, [b"W"])
            second_welcome = asyncio.create_task(sub.recv(timeout=5.0))
            await asyncio.sleep(0)  # the subscriber's receive waits before the drop
            h.apply(DropConnection("sub", "pub"))
            await expect(pub, [b"\x00A"], [b"\x00W"], [b"\x01A"], [b"\x01W"])
            assert await second_welcome == [b"W"]
            await pub.publish(b"A", b"after")
            await expect(sub, [b"A", b"after"])

        run(h, body)


def test_a_connecting_xpub_keeps_its_pipe_and_subscriptions_across_a_reconnect(
    tk_backend: str,
) -> None:
    """The XPUB connects to a binding SUB: libzmq keeps the connecting side's pipe
    across a reconnect, so no unsubscription comes, the SUB's subscriptions arrive
    again on the same pipe (passed up only with verbose), and no second welcome.
    """
    with open_harness(tk_backend, faults=True) as h:

        async def body(stack: ExitStack) -> None:
            sub = stack.enter_context(
                h.network("sub").subscriber(bind=h.bind_endpoint(), topics=[b"A", b"W"])
            )
            pub = stack.enter_context(
                h.network("pub").xpublisher(
                    connect=sub.last_endpoint,
                    options=SocketOptions(xpub_verbose=True, xpub_welcome_msg=b"W"),
                )
            )
            # A binding libzmq socket attaches a connection in its own thread, when it
            # is used: as a subscriber waiting for data is.
            user = asyncio.create_task(keep_polling(sub))
            await expect(pub, [b"\x01A"], [b"\x01W"])
            await expect(sub, [b"W"])
            h.apply(DropConnection("pub", "sub"))
            await expect(pub, [b"\x01A"], [b"\x01W"])  # verbose: the same pipe again
            await pub.publish(b"A", b"after")
            await expect(sub, [b"A", b"after"])
            await quiet(h, sub)  # no second welcome
            await quiet(h, pub)  # and never an unsubscription
            user.cancel()

        run(h, body)


def test_zmq_disconnect_completes_when_the_socket_is_used_again(tk_harness: Harness) -> None:
    """A difference between the backends, kept and pinned: libzmq 4.3 ends the
    connection of a ``disconnect()`` only when the disconnecting socket's thread next
    uses it (the pipe's termination handshake runs in the socket's commands), so an
    XPUB sees the unsubscriptions of a SUB that disconnected and is never touched
    again only when that SUB is closed. The sim ends the connection at once.
    """
    h = tk_harness

    async def body(stack: ExitStack) -> None:
        pub = xpub(h, stack)
        endpoint = pub.last_endpoint
        assert endpoint is not None
        sub = stack.enter_context(h.network("sub").subscriber(connect=endpoint, topics=[b"A"]))
        await expect(pub, [b"\x01A"])
        sub.disconnect(endpoint)
        if h.name == "zmq":
            await asyncio.sleep(2 * h.settle)
            assert pub.try_recv() is None, "libzmq completed an untouched disconnect"
            sub.try_recv()  # any use of the socket runs its pending commands
            await asyncio.sleep(h.settle)
            sub.try_recv()
        await expect(pub, [b"\x00A"])

    run(h, body)


def test_zmq_a_reconnected_sub_resubscribes_when_it_is_used_again() -> None:
    """A difference between the backends, kept and pinned: after its connection drops,
    a connecting libzmq 4.3 SUB reconnects at once (its I/O thread does that), but
    resends its subscriptions only when its own thread next uses it (the reconnect's
    ``hiccup`` command is processed with the socket's other commands). So a SUB that
    nobody reads (here one never read at all, so no receive ever waited on it and no
    event loop watches it) is connected again, and the XPUB has the new connection,
    yet no subscription comes until the SUB is used. The sim resubscribes at once.
    """
    with open_harness("zmq", faults=True) as h:

        async def body(stack: ExitStack) -> None:
            pub = xpub(h, stack)
            endpoint = pub.last_endpoint
            assert endpoint is not None
            sub = stack.enter_context(h.network("sub").subscriber(topics=[b"A"]))
            events = sub.monitor()
            stack.callback(events.close)
            sub.connect(endpoint)
            await expect(pub, [b"\x01A"])
            h.apply(DropConnection("sub", "pub"))
            await expect(pub, [b"\x00A"])
            await reconnected(events)
            await asyncio.sleep(h.settle)  # the XPUB attaches the new connection
            assert pub.try_recv() is None, "an untouched SUB resubscribed"
            assert sub.try_recv() is None  # one use runs the SUB's pending commands
            await expect(pub, [b"\x01A"])

        run(h, body)


async def reconnected(events: Monitor) -> None:
    """Wait until ``events`` reports a disconnect, then a new completed handshake."""
    disconnected = False
    while True:
        name = (await events.recv(timeout=5.0)).name
        if name == "DISCONNECTED":
            disconnected = True
        elif disconnected and name == "HANDSHAKE_SUCCEEDED":
            return


def test_xsub_queues_to_a_pipe_still_connecting(tk_harness: Harness) -> None:
    """An XSUB connected over inproc before anyone binds has its pipe already: its
    subscriptions and data wait there, subscriptions first, for the XPUB.
    """
    h = tk_harness

    async def body(stack: ExitStack) -> None:
        net = h.network("local")
        endpoint = h.bind_endpoint("inproc")
        xsub = stack.enter_context(net.xsubscriber(connect=endpoint))
        xsub.subscribe(b"A")
        await xsub.send([b"early data"])
        await asyncio.sleep(h.settle / 4)
        pub = stack.enter_context(net.xpublisher(bind=endpoint))
        await expect(pub, [b"\x01A"], [b"early data"])

    run(h, body)


def test_xpub_manual_applies_only_what_the_application_subscribes(tk_harness: Harness) -> None:
    h = tk_harness

    async def body(stack: ExitStack) -> None:
        pub = xpub(h, stack, xpub_manual=True)
        endpoint = pub.last_endpoint
        sub1 = stack.enter_context(h.network("sub1").subscriber(connect=endpoint, topics=[b"A"]))
        await expect(pub, [b"\x01A"])
        pub.subscribe(b"A")  # for sub1, whose subscription was received last
        pub.subscribe(b"LVC")  # anything the application likes
        sub2 = stack.enter_context(h.network("sub2").subscriber(connect=endpoint, topics=[b"A"]))
        await expect(pub, [b"\x01A"])  # manual passes every subscription
        # sub2 asked for A, but nobody subscribed it: only sub1 gets A.
        await pub.publish(b"A", b"1")
        await pub.publish(b"LVC", b"2")
        await expect(sub1, [b"A", b"1"])
        await quiet(h, sub1)  # sub1 did not subscribe to LVC itself: its SUB filters it
        await quiet(h, sub2)
        pub.subscribe(b"A")  # now for sub2
        await pub.publish(b"A", b"3")
        await expect(sub1, [b"A", b"3"])
        await expect(sub2, [b"A", b"3"])
        pub.unsubscribe(b"A")  # sub2 again
        await pub.publish(b"A", b"4")
        await expect(sub1, [b"A", b"4"])
        await quiet(h, sub2)
        sub1.close()  # what it asked for is unsubscribed
        await expect(pub, [b"\x00A"])
        pub.subscribe(b"A")  # its pipe has gone: nothing to do, no error
        await quiet(h, pub)

    run(h, body)


def test_xpub_subscribe_without_manual_is_refused(tk_harness: Harness) -> None:
    async def body(stack: ExitStack) -> None:
        pub = stack.enter_context(tk_harness.network().xpublisher())
        with pytest.raises(StateError, match="only with xpub_manual"):
            pub.subscribe(b"A")
        with pytest.raises(StateError, match="only with xpub_manual"):
            pub.unsubscribe(b"A")
        manual = stack.enter_context(
            tk_harness.network().xpublisher(options=SocketOptions(xpub_manual=True))
        )
        with pytest.raises(FrameError, match="must be bytes"):
            manual.subscribe("A")  # type: ignore[arg-type]
        manual.subscribe(b"A")  # no subscriber heard from yet: nothing to do
        manual.close()
        with pytest.raises(ClosedError):
            manual.subscribe(b"A")

    run(tk_harness, body)
