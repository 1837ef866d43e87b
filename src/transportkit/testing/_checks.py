"""Conformance checks: the behaviour every backend must show, run through a Harness.

Each ``check_*`` function runs one scenario on the harness's backend and raises
``AssertionError`` with a message saying what differed from ZeroMQ's behaviour. They
import no test framework, so third-party backends and user test suites can call them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from contextlib import ExitStack
from typing import Any

from transportkit._errors import (
    AddressInUseError,
    ClosedError,
    EndpointError,
    FrameError,
    HostUnreachableError,
    OptionError,
    StateError,
    Timeout,
    WouldBlock,
)
from transportkit._network import Network
from transportkit._options import SocketOptions
from transportkit._poll import poll
from transportkit._socket import Message, Monitor, Publisher, Receiver, Subscriber
from transportkit.testing._harness import Harness

__all__ = [
    "SYNC_TOPIC",
    "check_bad_input",
    "check_conflate",
    "check_dealer_router",
    "check_hwm",
    "check_pair",
    "check_poll",
    "check_pub_sub_filtering",
    "check_push_pull",
    "check_req_rep",
    "check_slow_joiner",
    "check_xpub_subscriptions",
    "collect_pub_sub",
    "expected_pub_sub",
    "recv_data",
    "sync_subscribers",
    "wait_for_event",
]

SYNC_TOPIC = b"\x00transportkit.sync"
"""Topic of the probes :func:`sync_subscribers` publishes (skipped by :func:`recv_data`)."""


async def wait_for_event(monitor: Monitor, name: str, count: int, timeout: float) -> None:
    """Wait until ``monitor`` has shown ``count`` events called ``name``."""
    seen = 0
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while seen < count:
        remaining = deadline - loop.time()
        if remaining <= 0:
            raise AssertionError(f"saw {seen} of {count} {name} monitor events in {timeout} s")
        try:
            event = await monitor.recv(timeout=remaining)
        except Timeout:
            continue
        if event.name == name:
            seen += 1


async def sync_subscribers(
    pub: Publisher,
    subs: Sequence[Subscriber],
    *,
    timeout: float = 5.0,
    interval: float = 0.001,
    subscribe: bool = True,
) -> None:
    """Publish probes until every subscriber has received one (beats the slow joiner).

    With ``subscribe`` each subscriber subscribes to :data:`SYNC_TOPIC` for the duration
    and unsubscribes after; without it the subscribers must already match the probe
    (e.g. subscribe to everything). Probes left in queues are skipped by
    :func:`recv_data`.
    """
    if subscribe:
        for sub in subs:
            sub.subscribe(SYNC_TOPIC)
    pending = list(subs)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    try:
        while pending:
            if loop.time() > deadline:
                raise AssertionError(
                    f"{len(pending)} of {len(subs)} subscribers got no probe in {timeout} s"
                )
            await pub.send([SYNC_TOPIC])
            await asyncio.sleep(interval)
            still = []
            for sub in pending:
                got = False
                while (msg := sub.try_recv()) is not None:
                    got = got or msg[0] == SYNC_TOPIC
                if not got:
                    still.append(sub)
            pending = still
    finally:
        if subscribe:
            for sub in subs:
                if not sub.closed:
                    sub.unsubscribe(SYNC_TOPIC)


async def recv_data(sock: Receiver, timeout: float) -> Message:
    """Receive the next message that is not a sync probe."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        msg = await sock.recv(timeout=max(0.0, deadline - loop.time()))
        if msg[0] != SYNC_TOPIC:
            return msg


def _net(h: Harness, transport: str, name: str) -> Network:
    """The network for role ``name``: one shared network for inproc (same process)."""
    return h.network("local" if transport == "inproc" else name)


def _drain(sock: Receiver) -> list[Message]:
    out = []
    while (msg := sock.try_recv()) is not None:
        if msg[0] != SYNC_TOPIC:
            out.append(msg)
    return out


def expected_pub_sub(
    subscriptions: Sequence[Sequence[bytes]], messages: Sequence[Sequence[bytes]]
) -> list[list[list[bytes]]]:
    """What ZeroMQ delivers: to each subscriber, the messages whose frame 0 starts with
    one of its prefixes, whole and in publish order.
    """
    return [
        [list(m) for m in messages if any(m[0].startswith(p) for p in prefixes)]
        for prefixes in subscriptions
    ]


async def _collect_pub_sub(
    h: Harness,
    subscriptions: Sequence[Sequence[bytes]],
    messages: Sequence[Sequence[bytes]],
    transport: str,
) -> list[list[Message]]:
    expected = expected_pub_sub(subscriptions, messages)
    pub_net = _net(h, transport, "publisher")
    with ExitStack() as stack:
        pub = stack.enter_context(pub_net.publisher(bind=h.bind_endpoint(transport)))
        endpoint = pub.last_endpoint
        assert endpoint is not None
        subs = [
            stack.enter_context(
                _net(h, transport, f"sub{i}").subscriber(connect=endpoint, topics=list(prefixes))
            )
            for i, prefixes in enumerate(subscriptions)
        ]
        await sync_subscribers(pub, subs)
        for msg in messages:
            await pub.send(list(msg))
        received: list[list[Message]] = []
        for sub, want in zip(subs, expected, strict=True):
            got: list[Message] = []
            try:
                while len(got) < len(want):
                    got.append(await recv_data(sub, timeout=5.0))
            except Timeout:
                pass
            received.append(got)
        await asyncio.sleep(h.settle / 4)
        for sub, got in zip(subs, received, strict=True):
            got.extend(_drain(sub))
        return received


def collect_pub_sub(
    h: Harness,
    subscriptions: Sequence[Sequence[bytes]],
    messages: Sequence[Sequence[bytes]],
    *,
    transport: str = "tcp",
) -> list[list[Message]]:
    """Publish ``messages`` to one subscriber per entry of ``subscriptions`` (after
    synchronising) and return what each subscriber received.
    """
    return h.run(_collect_pub_sub(h, subscriptions, messages, transport), timeout=60)


def check_pub_sub_filtering(
    h: Harness,
    subscriptions: Sequence[Sequence[bytes]],
    messages: Sequence[Sequence[bytes]],
    *,
    transport: str = "tcp",
) -> None:
    """Topic-prefix filtering, per-publisher order and multipart atomicity."""
    got = collect_pub_sub(h, subscriptions, messages, transport=transport)
    want = expected_pub_sub(subscriptions, messages)
    for i, (g, w) in enumerate(zip(got, want, strict=True)):
        assert g == w, (
            f"[{h.name}] subscriber {i} with prefixes {list(subscriptions[i])!r} "
            f"received {g!r}, expected {w!r}"
        )


def check_slow_joiner(h: Harness, *, count: int = 100, transport: str = "tcp") -> None:
    """Messages published before the subscription reaches the publisher are lost; the
    subscriber sees a gap-free suffix of the stream.
    """

    async def body() -> list[int]:
        with ExitStack() as stack:
            pub = stack.enter_context(
                _net(h, transport, "pub").publisher(bind=h.bind_endpoint(transport))
            )
            assert pub.last_endpoint is not None
            sub = stack.enter_context(
                _net(h, transport, "sub").subscriber(connect=pub.last_endpoint)
            )
            interval = h.settle * 2 / count
            for i in range(count):
                await pub.send([b"seq", str(i).encode()])
                await asyncio.sleep(interval)
            await asyncio.sleep(h.settle)
            return [int(m[1]) for m in _drain(sub)]

    seen = h.run(body(), timeout=60)
    assert seen, f"[{h.name}] the subscriber received nothing of {count} messages"
    first = seen[0]
    assert seen == list(range(first, count)), (
        f"[{h.name}] slow joiner must see a gap-free suffix, got {seen!r}"
    )
    if h.virtual_time:
        # On real sockets a descheduled test thread can let the subscription win the
        # race against message 0; only virtual time makes the loss certain.
        assert first > 0, (
            f"[{h.name}] message 0 was published at connect time, before the subscription "
            "could reach the publisher, yet it was delivered"
        )


def check_req_rep(
    h: Harness, requests: Sequence[Sequence[bytes]], *, transport: str = "tcp"
) -> None:
    """Lockstep request/reply: each reply answers its request, and out-of-order calls
    raise StateError on both sides.
    """

    async def body() -> None:
        with ExitStack() as stack:
            rep = stack.enter_context(
                _net(h, transport, "server").worker(bind=h.bind_endpoint(transport))
            )
            assert rep.last_endpoint is not None
            req = stack.enter_context(
                _net(h, transport, "client").requester(connect=rep.last_endpoint)
            )
            try:
                await rep.send([b"too early"])
            except StateError:
                pass
            else:
                raise AssertionError(f"[{h.name}] REP send before recv did not raise StateError")
            try:
                await req.recv(timeout=0.1)
            except StateError:
                pass
            else:
                raise AssertionError(f"[{h.name}] REQ recv before send did not raise StateError")

            async def serve() -> None:
                for _ in requests:
                    msg = await rep.recv()
                    await rep.send([b"re:" + msg[0], *msg[1:]])

            server = asyncio.ensure_future(serve())
            for request in requests:
                reply = await req.request(list(request), timeout=5.0)
                want = [b"re:" + request[0], *request[1:]]
                assert reply == want, f"[{h.name}] reply {reply!r} to {request!r}, want {want!r}"
            await asyncio.wait_for(server, 5.0)
            await req.send([b"pending"])
            try:
                await req.send([b"again"])
            except StateError:
                pass
            else:
                raise AssertionError(f"[{h.name}] REQ send twice did not raise StateError")
            await rep.recv(timeout=5.0)
            try:
                await rep.recv(timeout=0.1)
            except StateError:
                pass
            else:
                raise AssertionError(f"[{h.name}] REP recv twice did not raise StateError")

    h.run(body(), timeout=60)


def check_push_pull(
    h: Harness, *, pullers: int = 3, count: int = 30, transport: str = "tcp"
) -> None:
    """Every message reaches exactly one puller, in order, round-robin (counts differ by
    at most one when all pullers are connected before the first send).
    """

    async def body() -> list[list[int]]:
        with ExitStack() as stack:
            push = stack.enter_context(
                _net(h, transport, "producer").pusher(bind=h.bind_endpoint(transport))
            )
            mon = push.monitor()
            stack.callback(mon.close)
            assert push.last_endpoint is not None
            pulls = [
                stack.enter_context(
                    _net(h, transport, f"worker{i}").puller(connect=push.last_endpoint)
                )
                for i in range(pullers)
            ]
            if transport != "inproc":
                await wait_for_event(mon, "HANDSHAKE_SUCCEEDED", pullers, timeout=5.0)
            for i in range(count):
                await push.send([str(i).encode()])
            got: list[list[int]] = [[] for _ in pulls]
            total = 0
            while total < count:
                progressed = False
                for j, pull in enumerate(pulls):
                    msg = pull.try_recv()
                    if msg is not None:
                        got[j].append(int(msg[0]))
                        total += 1
                        progressed = True
                if not progressed:
                    msgs = await asyncio.wait_for(_first(pulls), 5.0)
                    for j, msg in msgs:
                        got[j].append(int(msg[0]))
                        total += 1
            await asyncio.sleep(h.settle / 4)
            for j, pull in enumerate(pulls):
                got[j].extend(int(m[0]) for m in _drain(pull))
            return got

    got = h.run(body(), timeout=60)
    flat = sorted(x for part in got for x in part)
    assert flat == list(range(count)), f"[{h.name}] not exactly once: {got!r}"
    for part in got:
        assert part == sorted(part), f"[{h.name}] a puller saw reordering: {part!r}"
    sizes = [len(part) for part in got]
    assert max(sizes) - min(sizes) <= 1, f"[{h.name}] not round-robin: {sizes} ({got!r})"


async def _first(socks: Sequence[Receiver]) -> list[tuple[int, Message]]:
    tasks = [asyncio.ensure_future(s.recv()) for s in socks]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    return [(i, t.result()) for i, t in enumerate(tasks) if t in done and not t.cancelled()]


def check_pair(h: Harness, *, count: int = 20, transport: str = "tcp") -> None:
    """PAIR carries messages both ways, in order."""

    async def body() -> None:
        with ExitStack() as stack:
            a = stack.enter_context(_net(h, transport, "a").pair(bind=h.bind_endpoint(transport)))
            assert a.last_endpoint is not None
            b = stack.enter_context(_net(h, transport, "b").pair(connect=a.last_endpoint))
            for i in range(count):
                await a.send([b"a", str(i).encode()])
                await b.send([b"b", str(i).encode()])
            from_a = [await b.recv(timeout=5.0) for _ in range(count)]
            from_b = [await a.recv(timeout=5.0) for _ in range(count)]
            assert from_a == [[b"a", str(i).encode()] for i in range(count)], from_a
            assert from_b == [[b"b", str(i).encode()] for i in range(count)], from_b

    h.run(body(), timeout=60)


def check_dealer_router(
    h: Harness,
    *,
    routing_ids: Sequence[bytes] = (b"D1", b"D2"),
    transport: str = "tcp",
) -> None:
    """ROUTER prefixes the sender's routing id and routes replies by it; REQ's envelope
    is ``[id, b"", ...]``; unknown ids are dropped, or raise with router_mandatory.

    ``routing_ids`` must be distinct valid ids (1-255 bytes, not starting with 0) and
    must not include ``b"nobody"``.
    """

    async def body() -> None:
        with ExitStack() as stack:
            router = stack.enter_context(
                _net(h, transport, "broker").router(bind=h.bind_endpoint(transport))
            )
            mon = router.monitor()
            stack.callback(mon.close)
            ep = router.last_endpoint
            assert ep is not None
            dealers = {
                name: stack.enter_context(
                    _net(h, transport, f"dealer{i}").dealer(
                        connect=ep, options=SocketOptions(routing_id=name)
                    )
                )
                for i, name in enumerate(routing_ids)
            }
            req = stack.enter_context(_net(h, transport, "client").requester(connect=ep))
            await wait_for_event(mon, "HANDSHAKE_SUCCEEDED", len(dealers) + 1, timeout=5.0)
            for name, dealer in dealers.items():
                await dealer.send([b"hello", name])
            seen = []
            for _ in dealers:
                msg = await router.recv(timeout=5.0)
                assert msg[1:] == [b"hello", msg[0]], f"[{h.name}] ROUTER got {msg!r}"
                seen.append(msg[0])
                await router.send([msg[0], b"reply-to", msg[0]])
            assert sorted(seen) == sorted(dealers), f"[{h.name}] routing ids seen: {seen!r}"
            for name, dealer in dealers.items():
                reply = await dealer.recv(timeout=5.0)
                assert reply == [b"reply-to", name], f"[{h.name}] dealer {name!r} got {reply!r}"
            await req.send([b"question"])
            msg = await router.recv(timeout=5.0)
            assert len(msg) == 3 and msg[1:] == [b"", b"question"], (
                f"[{h.name}] REQ envelope at ROUTER: {msg!r}"
            )
            await router.send([msg[0], b"", b"answer"])
            assert await req.recv(timeout=5.0) == [b"answer"]
            before = router.stats.dropped
            await router.send([b"nobody", b"lost"])
            if h.exact_drops:
                assert before is not None
                assert router.stats.dropped == before + 1, "unroutable send not counted"
            strict = stack.enter_context(
                _net(h, transport, "broker").router(
                    bind=h.bind_endpoint(transport), options=SocketOptions(router_mandatory=True)
                )
            )
            try:
                await strict.send([b"nobody", b"lost"])
            except HostUnreachableError:
                pass
            else:
                raise AssertionError(f"[{h.name}] router_mandatory did not raise")

    h.run(body(), timeout=60)


def check_hwm(h: Harness, *, hwm: int = 10) -> None:
    """At the HWM a PUB drops (never blocks; drops counted where the backend can) while
    a PUSH blocks: try_send raises WouldBlock and send times out (inproc: the path holds
    exactly SNDHWM + RCVHWM).
    """

    async def body() -> None:
        net = h.network("local")
        opts = SocketOptions(sndhwm=hwm, rcvhwm=hwm, sndtimeo=50)
        with ExitStack() as stack:
            pub = stack.enter_context(net.publisher(bind=h.bind_endpoint("inproc"), options=opts))
            assert pub.last_endpoint is not None
            sub = stack.enter_context(net.subscriber(connect=pub.last_endpoint, options=opts))
            published = 50 * hwm
            for i in range(published):
                await pub.send([b"t", str(i).encode()])
            await asyncio.sleep(h.settle / 4)
            delivered = _drain(sub)
            assert 0 < len(delivered) <= 2 * hwm, (
                f"[{h.name}] PUB/SUB path held {len(delivered)} messages, "
                f"expected at most SNDHWM+RCVHWM={2 * hwm}"
            )
            assert delivered == [[b"t", str(i).encode()] for i in range(len(delivered))], (
                f"[{h.name}] HWM drops must take the newest messages, kept {delivered!r}"
            )
            if h.exact_drops:
                assert pub.stats.dropped == published - len(delivered), (
                    f"[{h.name}] PUB counted {pub.stats.dropped} drops, "
                    f"expected {published - len(delivered)}"
                )

            push = stack.enter_context(net.pusher(bind=h.bind_endpoint("inproc"), options=opts))
            assert push.last_endpoint is not None
            stack.enter_context(net.puller(connect=push.last_endpoint, options=opts))
            accepted = 0
            try:
                for _ in range(10 * hwm):
                    push.try_send([b"job"])
                    accepted += 1
            except WouldBlock:
                pass
            assert 0 < accepted <= 2 * hwm, (
                f"[{h.name}] PUSH accepted {accepted} messages before blocking, "
                f"expected at most {2 * hwm}"
            )
            try:
                await push.send([b"job"])
            except Timeout:
                pass
            else:
                raise AssertionError(f"[{h.name}] PUSH at its HWM did not time out")

    h.run(body(), timeout=60)


def check_conflate(h: Harness, *, count: int = 50, transport: str = "tcp") -> None:
    """A conflating subscriber keeps only the newest message; conflate refuses
    multipart sends.
    """

    async def body() -> None:
        with ExitStack() as stack:
            pub = stack.enter_context(
                _net(h, transport, "pub").publisher(bind=h.bind_endpoint(transport))
            )
            assert pub.last_endpoint is not None
            sub = stack.enter_context(
                _net(h, transport, "sub").subscriber(
                    connect=pub.last_endpoint, options=SocketOptions(conflate=True)
                )
            )
            await sync_subscribers(pub, [sub], subscribe=False)
            for i in range(count):
                await pub.send([b"v%d" % i])
            await asyncio.sleep(h.settle)
            last = await recv_data(sub, timeout=5.0)
            assert last == [b"v%d" % (count - 1)], f"[{h.name}] conflate kept {last!r}"
            assert _drain(sub) == [], f"[{h.name}] conflate kept more than one message"
            conflating = stack.enter_context(
                _net(h, transport, "pub").publisher(
                    bind=h.bind_endpoint(transport), options=SocketOptions(conflate=True)
                )
            )
            try:
                await conflating.send([b"topic", b"data"])
            except FrameError:
                pass
            else:
                raise AssertionError(f"[{h.name}] conflate accepted a multipart message")

    h.run(body(), timeout=60)


def check_bad_input(h: Harness) -> None:
    """Bad input raises typed errors naming the problem, and closed sockets say so."""

    async def body() -> None:
        net = h.network("bad")
        cases: list[tuple[type[BaseException], Any]] = [
            (EndpointError, lambda: net.publisher(bind="tcp://127.0.0.1")),
            (EndpointError, lambda: net.publisher(bind="nonsense")),
            (EndpointError, lambda: net.subscriber(connect="carrier-pigeon://coop")),
            (EndpointError, lambda: net.pusher(bind="tcp://127.0.0.1:99999")),
            (OptionError, lambda: net.requester(options=SocketOptions(conflate=True))),
            (OptionError, lambda: SocketOptions.from_mapping({"sndhmw": 10})),
            (OptionError, lambda: SocketOptions(sndhwm=-5)),
            (FrameError, lambda: net.subscriber(topics=["MARKET."])),  # type: ignore[list-item]
        ]
        for error, make in cases:
            try:
                made = make()
            except error as exc:
                assert str(exc), f"[{h.name}] {error.__name__} without a message"
            else:
                if hasattr(made, "close"):
                    made.close()
                raise AssertionError(f"[{h.name}] expected {error.__name__}")
        with ExitStack() as stack:
            pub = stack.enter_context(net.publisher(bind=h.bind_endpoint("tcp")))
            assert pub.last_endpoint is not None
            for frames in ([b"ok", "text"], [], b"bytes-not-a-list", [b"x", 3]):
                try:
                    await pub.send(frames)  # type: ignore[arg-type]
                except FrameError as exc:
                    assert str(exc)
                else:
                    raise AssertionError(f"[{h.name}] send({frames!r}) did not raise FrameError")
            other = stack.enter_context(net.publisher())
            try:
                other.bind(pub.last_endpoint)
            except AddressInUseError:
                pass
            else:
                raise AssertionError(f"[{h.name}] binding a used endpoint did not raise")
            pull = stack.enter_context(net.puller(bind=h.bind_endpoint("tcp")))
            waiter = asyncio.ensure_future(pull.recv())
            await asyncio.sleep(0.01)
            pull.close()
            try:
                await asyncio.wait_for(waiter, 5.0)
            except ClosedError:
                pass
            else:
                raise AssertionError(f"[{h.name}] recv waiting on a closed socket returned")
            for action in (pull.try_recv, lambda: pull.bind(h.bind_endpoint("tcp"))):
                try:
                    action()
                except ClosedError:
                    pass
                else:
                    raise AssertionError(f"[{h.name}] closed socket still usable")
            try:
                await pull.recv(timeout=0.1)
            except ClosedError:
                pass
            else:
                raise AssertionError(f"[{h.name}] recv on a closed socket did not raise")
            pull.close()  # idempotent

    h.run(body(), timeout=60)


def check_poll(h: Harness, *, transport: str = "tcp") -> None:
    """``poll`` reports which sockets have a message waiting, takes nothing, times out
    with an empty list, and raises ClosedError for a socket closed while it waits.
    """

    async def body() -> None:
        with ExitStack() as stack:
            pushes, pulls = [], []
            for i in range(2):
                push = stack.enter_context(
                    _net(h, transport, "producer").pusher(bind=h.bind_endpoint(transport))
                )
                assert push.last_endpoint is not None
                pushes.append(push)
                pulls.append(
                    stack.enter_context(
                        _net(h, transport, f"worker{i}").puller(connect=push.last_endpoint)
                    )
                )
            assert await poll(pulls, timeout=0.05) == [], f"[{h.name}] poll without messages"
            await pushes[1].send([b"second"])
            assert await poll(pulls, timeout=5.0) == [pulls[1]], f"[{h.name}] poll missed it"
            assert await poll(pulls, timeout=0) == [pulls[1]], "poll consumed the message"
            assert pulls[1].try_recv() == [b"second"]
            assert await poll(pulls, timeout=0) == []
            waiting = asyncio.ensure_future(poll(pulls))
            await asyncio.sleep(0.01)
            pulls[0].close()
            try:
                await asyncio.wait_for(waiting, 5.0)
            except ClosedError:
                pass
            else:
                raise AssertionError(f"[{h.name}] poll on a closed socket did not raise")

    h.run(body(), timeout=60)


async def _expect_next(sock: Receiver, want: Message, what: str, h: Harness) -> None:
    try:
        got = await sock.recv(timeout=5.0)
    except Timeout:
        raise AssertionError(f"[{h.name}] {what}: expected {want!r}, got nothing in 5 s") from None
    assert got == want, f"[{h.name}] {what}: expected {want!r}, got {got!r}"


async def _expect_quiet(sock: Receiver, what: str, h: Harness) -> None:
    await asyncio.sleep(h.settle)
    got = sock.try_recv()
    assert got is None, f"[{h.name}] {what}: expected nothing, got {got!r}"


def check_xpub_subscriptions(h: Harness, *, transport: str = "tcp") -> None:
    """XPUB/XSUB as libzmq 4.3 has them (RFC 29): an XPUB receives a topic's first
    subscription only and its unsubscription when the last subscriber leaves
    (unsubscribing or closing), filters what it sends by prefix as a PUB does, and
    receives an XSUB's subscriptions and upstream data.
    """

    async def body() -> None:
        with ExitStack() as stack:
            pub = stack.enter_context(
                _net(h, transport, "pub").xpublisher(bind=h.bind_endpoint(transport))
            )
            endpoint = pub.last_endpoint
            assert endpoint is not None
            sub1 = stack.enter_context(
                _net(h, transport, "sub1").subscriber(connect=endpoint, topics=[b"A"])
            )
            await _expect_next(pub, [b"\x01A"], "first subscription to A", h)
            sub2 = stack.enter_context(
                _net(h, transport, "sub2").subscriber(connect=endpoint, topics=[b"A", b"B"])
            )
            await _expect_next(pub, [b"\x01B"], "first subscription to B", h)
            await _expect_quiet(pub, "a second subscription to A", h)
            for topic in (b"A", b"B", b"C"):
                await pub.send([topic, b"data"])
            await _expect_next(sub1, [b"A", b"data"], "sub1's topic", h)
            await _expect_next(sub2, [b"A", b"data"], "sub2's first topic", h)
            await _expect_next(sub2, [b"B", b"data"], "sub2's second topic", h)
            await _expect_quiet(sub1, "prefix filtering at the XPUB", h)
            sub2.unsubscribe(b"A")
            await _expect_quiet(pub, "an unsubscription while A has a subscriber", h)
            sub1.close()
            await _expect_next(pub, [b"\x00A"], "A's last subscriber closed", h)
            xsub = stack.enter_context(_net(h, transport, "xsub").xsubscriber(connect=endpoint))
            xsub.subscribe(b"C")
            await _expect_next(pub, [b"\x01C"], "an XSUB's subscription", h)
            await xsub.send([b"upstream", b"data"])
            await _expect_next(pub, [b"upstream", b"data"], "an XSUB's upstream data", h)
            sub2.close()
            await _expect_next(pub, [b"\x00B"], "B's last subscriber closed", h)
            await _expect_quiet(pub, "nothing else", h)

    h.run(body(), timeout=60)
