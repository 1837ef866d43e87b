"""inproc as libzmq 4.3.5 does it (issue 11, points 6 and 7), measured in the same test.

Each test runs one sequence twice: on raw pyzmq (which loads libzmq 4.3.5) over
``inproc://``, and on the sim backend, and compares the facts they report (sends
accepted, messages received). inproc has no network and no I/O thread, so these
counts are stable on real sockets: a send either finds room in the pipe or not. Where
a fact depends on libzmq processing a command (a pipe's termination after its peer
closed), the raw side waits for it with a deadline, never with a fixed sleep alone.

What libzmq does, and the sim now models:

- The pipe of an inproc connection is made by the connecting socket when it connects
  (bound or not), with its own options: ``immediate`` does not apply (a PUSH to a name
  nobody bound queues SNDHWM messages), and the connecter's ``conflate`` decides for the
  whole pipe (a binder's has no effect).
- When the binding socket closes, the pipe is terminated: what the connecter had queued
  to it is lost (the sim counts it in the connecter's ``stats.dropped``), the
  connecter's sends then find no pipe (PUSH, REQ, DEALER, PAIR: would block; PUB: sent
  to nobody), and it never connects again, even to a new binder of the same name,
  unless the application calls ``connect()`` again.
- What either side wrote before it closed stays readable by the other: an inproc pipe
  is one queue, and closing (whatever the linger) only appends its end.
"""

from __future__ import annotations

import asyncio
import errno
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import zmq
from zmq.utils.monitor import recv_monitor_message

from transportkit import (
    EndpointError,
    SocketKind,
    SocketOptions,
    StateError,
    Timeout,
    WouldBlock,
)
from transportkit._socket import Monitor, Socket
from transportkit.sim_backend import Simulation

from .conftest import VIRTUAL_LIMIT

RawMaker = Callable[..., zmq.Socket[bytes]]

_ZMQ_KIND = {
    SocketKind.PUSH: zmq.PUSH,
    SocketKind.PULL: zmq.PULL,
    SocketKind.PUB: zmq.PUB,
    SocketKind.SUB: zmq.SUB,
    SocketKind.REQ: zmq.REQ,
    SocketKind.REP: zmq.REP,
    SocketKind.DEALER: zmq.DEALER,
    SocketKind.ROUTER: zmq.ROUTER,
    SocketKind.PAIR: zmq.PAIR,
}


def test_raw_pyzmq_is_libzmq_4_3_5() -> None:
    """The facts below were measured on libzmq 4.3.5 and are checked against it."""
    assert zmq.zmq_version_info()[:2] == (4, 3)


# -- raw pyzmq helpers ------------------------------------------------------------------


@contextmanager
def raw_sockets() -> Iterator[RawMaker]:
    """A context whose sockets all have LINGER 0 and are closed on the way out."""
    ctx = zmq.Context()
    made: list[zmq.Socket[bytes]] = []

    def make(kind: SocketKind, **options: int) -> zmq.Socket[bytes]:
        sock: zmq.Socket[bytes] = ctx.socket(_ZMQ_KIND[kind])
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.RCVTIMEO, 2000)
        sock.setsockopt(zmq.SNDTIMEO, 2000)
        for name, value in options.items():
            sock.setsockopt(getattr(zmq, name.upper()), value)
        if kind is SocketKind.SUB:
            sock.setsockopt(zmq.SUBSCRIBE, b"")
        made.append(sock)
        return sock

    try:
        yield make
    finally:
        for sock in made:
            sock.close(0)
        ctx.term()


def raw_tries(sock: zmq.Socket[bytes], count: int, frames: list[bytes] | None = None) -> int:
    """How many of ``count`` non-blocking sends are accepted before the first refusal."""
    for i in range(count):
        try:
            sock.send_multipart(frames or [b"m%d" % i], zmq.NOBLOCK)
        except zmq.ZMQError:  # EAGAIN, or EFSM for a REQ
            return i
    return count


def raw_drain(sock: zmq.Socket[bytes], wait: float = 0.05) -> list[list[bytes]]:
    """Every message waiting on ``sock`` after ``wait`` seconds (one for a REP)."""
    time.sleep(wait)
    got = []
    while True:
        try:
            got.append(sock.recv_multipart(zmq.NOBLOCK))
        except zmq.Again:
            return got
        if sock.type == zmq.REP:
            return got


def raw_wait_unwritable(sock: zmq.Socket[bytes], timeout: float = 2.0, settle: float = 0.1) -> None:
    """Wait until ``sock`` has no pipe to send to (it processed its peer's close), then
    go on processing its commands for ``settle`` seconds.

    A pipe stops taking messages as soon as the peer's close reaches it, but it is gone
    (its endpoint forgotten, so ``disconnect()`` fails with ENOENT) only once the
    closed peer's reaper has acknowledged the termination and ``sock`` has processed
    that acknowledgement: without the settling, a loaded machine sees the endpoint
    still there.
    """
    deadline = time.monotonic() + timeout
    while sock.getsockopt(zmq.EVENTS) & zmq.POLLOUT and time.monotonic() < deadline:
        time.sleep(0.005)
    settled = time.monotonic() + settle
    while time.monotonic() < settled:
        sock.getsockopt(zmq.EVENTS)  # processes pending commands
        time.sleep(0.005)


def raw_bind(sock: zmq.Socket[bytes], endpoint: str, timeout: float = 2.0) -> None:
    """Bind, retrying while the closed previous binder's name is still being released."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            sock.bind(endpoint)
            return
        except zmq.ZMQError as exc:
            if exc.errno != zmq.EADDRINUSE or time.monotonic() > deadline:
                raise
            time.sleep(0.005)


# -- sim helpers ------------------------------------------------------------------------


def sim_tries(sock: Socket, count: int, frames: list[bytes] | None = None) -> int:
    for i in range(count):
        try:
            sock.try_send(frames or [b"m%d" % i])
        except (WouldBlock, StateError):
            return i
    return count


def sim_drain(sock: Socket) -> list[list[bytes]]:
    got = []
    while (msg := sock.try_recv()) is not None:
        got.append(msg)
        if sock.kind is SocketKind.REP:
            break
    return got


def run_sim(body: Callable[[Simulation], Any]) -> Any:
    sim = Simulation(seed=1)
    try:
        return sim.run(body(sim), timeout=VIRTUAL_LIMIT)
    finally:
        sim.close()


# -- point 6: the binder goes away --------------------------------------------------------

PAIRS = [
    (SocketKind.PUSH, SocketKind.PULL),
    (SocketKind.REQ, SocketKind.REP),
    (SocketKind.DEALER, SocketKind.ROUTER),
    (SocketKind.PAIR, SocketKind.PAIR),
    (SocketKind.PUB, SocketKind.SUB),
]
TRIES = 20


def _raw_binder_goes_away(connecter: SocketKind, binder: SocketKind) -> tuple[int, int, int]:
    endpoint = f"inproc://gone-{connecter.value}"
    with raw_sockets() as make:
        b = make(binder, rcvhwm=10)
        b.bind(endpoint)
        c = make(connecter, sndhwm=10)
        c.connect(endpoint)
        if connecter is SocketKind.PUB:  # the subscription is read when the PUB sends
            deadline = time.monotonic() + 2.0
            while not raw_drain(b, 0.0) and time.monotonic() < deadline:
                c.send(b"hello")
                time.sleep(0.005)
        else:
            c.send(b"hello")
            request = b.recv_multipart()
            if connecter is SocketKind.REQ:
                b.send_multipart(request)
                c.recv()
        b.close()
        if connecter is SocketKind.PUB:
            time.sleep(0.05)  # a PUB stays writable: give the close time to land
        else:
            raw_wait_unwritable(c)
        after_close = raw_tries(c, TRIES)
        b2 = make(binder)
        raw_bind(b2, endpoint)
        time.sleep(0.15)  # longer than reconnect_ivl (100 ms): a tcp peer would be back
        after_rebind = raw_tries(c, TRIES)
        return after_close, after_rebind, len(raw_drain(b2, 0.02))


def _sim_binder_goes_away(
    connecter: SocketKind, binder: SocketKind
) -> tuple[tuple[int, int, int], int | None]:
    endpoint = f"inproc://gone-{connecter.value}"

    async def body(sim: Simulation) -> tuple[tuple[int, int, int], int | None]:
        node = sim.node("n")
        b = node.socket(binder, bind=endpoint, options=SocketOptions(rcvhwm=10))
        if binder is SocketKind.SUB:
            b.subscribe(b"")
        c = node.socket(connecter, connect=endpoint, options=SocketOptions(sndhwm=10))
        await c.send([b"hello"])
        request = await b.recv(timeout=1.0)
        if connecter is SocketKind.REQ:
            await b.send(request)
            await c.recv(timeout=1.0)
        b.close()
        await asyncio.sleep(0.01)
        after_close = sim_tries(c, TRIES)
        b2 = node.socket(binder, bind=endpoint)
        if binder is SocketKind.SUB:
            b2.subscribe(b"")
        await asyncio.sleep(0.15)
        after_rebind = sim_tries(c, TRIES)
        await asyncio.sleep(0.1)
        return (after_close, after_rebind, len(sim_drain(b2))), c.stats.dropped

    result: tuple[tuple[int, int, int], int | None] = run_sim(body)
    return result


@pytest.mark.parametrize(("connecter", "binder"), PAIRS, ids=[c.value for c, _ in PAIRS])
def test_after_the_binder_closes_the_connecter_never_connects_again(
    connecter: SocketKind, binder: SocketKind
) -> None:
    """Sends after the binder closed, sends after a new binder took the name, and what
    that new binder received: on libzmq and on the sim. The old sim kept the
    connecter's pipe (sends accepted into a queue nobody would read, uncounted) and
    reconnected to the new binder after reconnect_ivl, as over tcp."""
    real = _raw_binder_goes_away(connecter, binder)
    if connecter is SocketKind.PUB:
        assert real == (TRIES, TRIES, 0)  # a PUB never blocks; nobody gets anything
    else:
        assert real == (0, 0, 0)  # no pipe: every send would block, for ever
    simulated, dropped = _sim_binder_goes_away(connecter, binder)
    assert simulated == real
    assert dropped == 0  # nothing was accepted that was not delivered


QUEUEING = [
    (SocketKind.PUSH, SocketKind.PULL),
    (SocketKind.DEALER, SocketKind.ROUTER),
    (SocketKind.PAIR, SocketKind.PAIR),
]


@pytest.mark.parametrize(("connecter", "binder"), QUEUEING, ids=[c.value for c, _ in QUEUEING])
def test_what_the_connecter_had_queued_is_lost_with_the_pipe_and_counted(
    connecter: SocketKind, binder: SocketKind
) -> None:
    """A connecter (SNDHWM 10) to a binder (RCVHWM 10) that does not read: the pipe
    takes 20; the binder closes; a new one binds the name. libzmq: none of the 20
    reaches it, and the connecter accepts nothing more. The old sim delivered the
    connecter's 10 queued messages to the new binder after reconnect_ivl."""
    endpoint = f"inproc://queued-{connecter.value}"
    with raw_sockets() as make:
        b = make(binder, rcvhwm=10)
        b.bind(endpoint)
        c = make(connecter, sndhwm=10)
        c.connect(endpoint)
        queued = raw_tries(c, 100)
        b.close()
        raw_wait_unwritable(c)
        b2 = make(binder)
        raw_bind(b2, endpoint)
        time.sleep(0.15)
        real = (queued, len(raw_drain(b2, 0.02)), raw_tries(c, TRIES))
    assert real == (20, 0, 0)

    async def body(sim: Simulation) -> tuple[tuple[int, int, int], int | None, int | None]:
        node = sim.node("n")
        b = node.socket(binder, bind=endpoint, options=SocketOptions(rcvhwm=10))
        c = node.socket(connecter, connect=endpoint, options=SocketOptions(sndhwm=10))
        queued = sim_tries(c, 100)
        b.close()
        b2 = node.socket(binder, bind=endpoint)
        await asyncio.sleep(0.25)
        facts = (queued, len(sim_drain(b2)), sim_tries(c, TRIES))
        return facts, c.stats.dropped, b.stats.dropped

    facts, connecter_dropped, binder_dropped = run_sim(body)
    assert facts == real
    # Every one of the 20 is counted: the 10 still queued at the connecter by the
    # connecter, the 10 the binder had received but not read by the binder.
    assert (connecter_dropped, binder_dropped) == (10, 10)


def test_with_nobody_rebinding_the_connecter_accepts_nothing_and_loses_nothing_silently() -> None:
    """The issue's second case: the binder closes and nobody binds the name at the old
    sim's single retry (after reconnect_ivl). The old sim then had a dead connection
    whose queue still took SNDHWM sends, never delivered, with ``stats.dropped`` at 0.
    libzmq (measured above for every kind, and here for a PUSH after half a second):
    no send is accepted."""
    with raw_sockets() as make:
        b = make(SocketKind.PULL)
        b.bind("inproc://nobody")
        c = make(SocketKind.PUSH, sndhwm=10)
        c.connect("inproc://nobody")
        c.send(b"x")
        b.recv()
        b.close()
        raw_wait_unwritable(c)
        time.sleep(0.15)  # past the old sim's single retry (reconnect_ivl 100 ms)
        real = raw_tries(c, 100)
    assert real == 0

    async def body(sim: Simulation) -> tuple[int, int | None]:
        node = sim.node("n")
        b = node.puller(bind="inproc://nobody")
        c = node.pusher(connect="inproc://nobody", options=SocketOptions(sndhwm=10))
        await c.send([b"x"])
        await b.recv(timeout=1.0)
        b.close()
        await asyncio.sleep(0.5)  # past the old sim's retry, which found nothing bound
        return sim_tries(c, 100), c.stats.dropped

    assert run_sim(body) == (real, 0)


@pytest.mark.parametrize("closing", ["binder", "connecter"])
def test_what_a_closing_socket_wrote_stays_readable_by_its_peer(closing: str) -> None:
    """A PUSH (SNDHWM 10) fills the inproc pipe to a PULL (RCVHWM 10) that does not
    read, then closes with LINGER 0: libzmq's PULL still reads all 20 (one pipe; the
    close only appends its end). The old sim lost the 10 beyond the PULL's RCVHWM."""
    push_binds = closing == "binder"
    endpoint = f"inproc://closing-{closing}"
    with raw_sockets() as make:
        push = make(SocketKind.PUSH, sndhwm=10)
        pull = make(SocketKind.PULL, rcvhwm=10)
        first, second = (push, pull) if push_binds else (pull, push)
        first.bind(endpoint)
        second.connect(endpoint)
        queued = raw_tries(push, 100)
        push.close()
        real = (queued, len(raw_drain(pull, 0.05)))
    assert real == (20, 20)

    async def body(sim: Simulation) -> tuple[tuple[int, int], int | None]:
        node = sim.node("n")
        where = {"bind": endpoint} if push_binds else {"connect": endpoint}
        there = {"connect": endpoint} if push_binds else {"bind": endpoint}
        if push_binds:
            push = node.pusher(**where, options=SocketOptions(sndhwm=10))  # type: ignore[arg-type]
            pull = node.puller(**there, options=SocketOptions(rcvhwm=10))  # type: ignore[arg-type]
        else:
            pull = node.puller(**there, options=SocketOptions(rcvhwm=10))  # type: ignore[arg-type]
            push = node.pusher(**where, options=SocketOptions(sndhwm=10))  # type: ignore[arg-type]
        queued = sim_tries(push, 100)
        push.close()
        await asyncio.sleep(0.05)
        return (queued, len(sim_drain(pull))), push.stats.dropped

    facts, dropped = run_sim(body)
    assert facts == real
    assert dropped == 0


def test_connecting_again_by_hand_after_the_binder_closed_makes_a_new_pipe() -> None:
    """libzmq: once the connecter has seen its pipe end, the endpoint is gone
    (``disconnect()`` fails with ENOENT, an EndpointError), and ``connect()`` again
    makes a new pipe (queueing SNDHWM before anyone binds), which a new binder gets."""
    with raw_sockets() as make:
        b = make(SocketKind.PULL)
        b.bind("inproc://again")
        c = make(SocketKind.PUSH, sndhwm=5)
        c.connect("inproc://again")
        c.send(b"x")
        b.recv()
        b.close()
        raw_wait_unwritable(c)
        with pytest.raises(zmq.ZMQError) as gone:
            c.disconnect("inproc://again")
        assert gone.value.errno == errno.ENOENT
        c.connect("inproc://again")
        queued = raw_tries(c, 100)
        b2 = make(SocketKind.PULL)
        raw_bind(b2, "inproc://again")
        real = (queued, len(raw_drain(b2, 0.02)))
    assert real == (5, 5)

    async def body(sim: Simulation) -> tuple[int, int]:
        node = sim.node("n")
        b = node.puller(bind="inproc://again")
        c = node.pusher(connect="inproc://again", options=SocketOptions(sndhwm=5))
        await c.send([b"x"])
        await b.recv(timeout=1.0)
        b.close()
        await asyncio.sleep(0.01)
        with pytest.raises(EndpointError):
            c.disconnect("inproc://again")
        c.connect("inproc://again")
        queued = sim_tries(c, 100)
        b2 = node.puller(bind="inproc://again")
        await asyncio.sleep(0.01)
        return queued, len(sim_drain(b2))

    assert run_sim(body) == real


def test_connecting_again_without_disconnecting_also_makes_a_new_pipe() -> None:
    with raw_sockets() as make:
        b = make(SocketKind.PULL)
        b.bind("inproc://again2")
        c = make(SocketKind.PUSH, sndhwm=5)
        c.connect("inproc://again2")
        b.close()
        raw_wait_unwritable(c)
        c.connect("inproc://again2")
        real = raw_tries(c, 100)
    assert real == 5

    async def body(sim: Simulation) -> int:
        node = sim.node("n")
        b = node.puller(bind="inproc://again2")
        c = node.pusher(connect="inproc://again2", options=SocketOptions(sndhwm=5))
        b.close()
        await asyncio.sleep(0.01)
        c.connect("inproc://again2")
        return sim_tries(c, 100)

    assert run_sim(body) == real


def test_a_req_whose_rep_closed_waits_for_a_reply_that_never_comes() -> None:
    with raw_sockets() as make:
        rep = make(SocketKind.REP)
        rep.bind("inproc://req")
        req = make(SocketKind.REQ, rcvtimeo=100)
        req.connect("inproc://req")
        req.send(b"r1")
        rep.recv()
        rep.close()
        with pytest.raises(zmq.Again):
            req.recv()
        with pytest.raises(zmq.ZMQError) as state:
            req.send(b"r2", zmq.NOBLOCK)
        assert state.value.errno == zmq.EFSM

    async def body(sim: Simulation) -> None:
        node = sim.node("n")
        rep = node.worker(bind="inproc://req")
        req = node.requester(connect="inproc://req")
        await req.send([b"r1"])
        await rep.recv(timeout=1.0)
        rep.close()
        with pytest.raises(Timeout):
            await req.recv(timeout=0.1)
        with pytest.raises(StateError):
            req.try_send([b"r2"])

    run_sim(body)


# -- point 7: inproc options --------------------------------------------------------------


def test_immediate_does_not_apply_to_inproc() -> None:
    """PUSH, IMMEDIATE=1, SNDHWM 7, to an inproc name nobody bound: libzmq queues 7,
    and a PULL (RCVHWM 5) that binds later receives 12 (the pipe's HWM becomes the
    sum). Over tcp the same PUSH queues nothing. The old sim refused at once on
    inproc too."""
    with raw_sockets() as make:
        push = make(SocketKind.PUSH, sndhwm=7, immediate=1)
        push.connect("inproc://immediate")
        before = raw_tries(push, 100)
        pull = make(SocketKind.PULL, rcvhwm=5)
        pull.bind("inproc://immediate")
        time.sleep(0.02)
        after = raw_tries(push, 100)
        got = len(raw_drain(pull))
        # A port bound but never listening refuses every connect. (A ZeroMQ listener
        # bound and closed again may still accept for a moment: libzmq closes it in its
        # I/O thread, after close() returns, and a loaded CI run connected to it.)
        with socket.socket() as reserved:
            reserved.bind(("127.0.0.1", 0))
            tcp = make(SocketKind.PUSH, sndhwm=7, immediate=1)
            tcp.connect(f"tcp://127.0.0.1:{reserved.getsockname()[1]}")
            time.sleep(0.02)
            real = (before, after, got, raw_tries(tcp, 100))
    assert real == (7, 5, 12, 0)

    async def body(sim: Simulation) -> tuple[int, int, int, int]:
        node = sim.node("n")
        opts = SocketOptions(sndhwm=7, immediate=True)
        push = node.pusher(connect="inproc://immediate", options=opts)
        before = sim_tries(push, 100)
        pull = node.puller(bind="inproc://immediate", options=SocketOptions(rcvhwm=5))
        await asyncio.sleep(0.02)
        after = sim_tries(push, 100)
        got = len(sim_drain(pull))
        tcp = node.pusher(connect="tcp://n:7999", options=opts)
        return before, after, got, sim_tries(tcp, 100)

    assert run_sim(body) == real


CONFLATE_CASES = [
    # (case, conflating side, which side binds first)
    ("binding-pull-bound-first", "binder", "bind"),
    ("binding-pull-bound-after", "binder", "connect"),
    ("connecting-pull", "connecter", "bind"),
]


@pytest.mark.parametrize(
    ("conflating", "first"), [c[1:] for c in CONFLATE_CASES], ids=[c[0] for c in CONFLATE_CASES]
)
def test_over_inproc_the_connecter_s_conflate_decides(conflating: str, first: str) -> None:
    """A plain PUSH sends ten single frames and one three-frame message to a PULL with
    CONFLATE=1. libzmq: a binding PULL's conflate has no effect on inproc (all eleven
    arrive, whole); a connecting PULL keeps one frame, the last of the last message.
    The old sim conflated in both cases."""
    endpoint = f"inproc://conflate-{conflating}-{first}"
    pull_binds = conflating == "binder"
    messages = [[b"%d" % i] for i in range(10)] + [[b"a", b"b", b"c"]]

    with raw_sockets() as make:
        if pull_binds:
            pull, push = make(SocketKind.PULL, conflate=1), make(SocketKind.PUSH)
            if first == "bind":
                pull.bind(endpoint)
                push.connect(endpoint)
            else:
                push.connect(endpoint)
                pull.bind(endpoint)
        else:
            push, pull = make(SocketKind.PUSH), make(SocketKind.PULL, conflate=1)
            push.bind(endpoint)
            pull.connect(endpoint)
        time.sleep(0.01)
        for message in messages:
            push.send_multipart(message)
        real = raw_drain(pull)
    assert real == (messages if pull_binds else [[b"c"]])

    async def body(sim: Simulation) -> tuple[list[list[bytes]], int | None]:
        node = sim.node("n")
        conflate = SocketOptions(conflate=True)
        if pull_binds:
            if first == "bind":
                pull = node.puller(bind=endpoint, options=conflate)
                push = node.pusher(connect=endpoint)
            else:
                push = node.pusher(connect=endpoint)
                pull = node.puller(bind=endpoint, options=conflate)
        else:
            push = node.pusher(bind=endpoint)
            pull = node.puller(connect=endpoint, options=conflate)
        await asyncio.sleep(0.01)
        for message in messages:
            await push.send(message)
        await asyncio.sleep(0.01)
        return sim_drain(pull), pull.stats.truncated

    got, truncated = run_sim(body)
    assert got == real
    assert truncated == (0 if pull_binds else 1)  # issue 11, point 10


def test_a_connecting_conflating_push_conflates_the_pipe_to_a_plain_pull() -> None:
    with raw_sockets() as make:
        pull = make(SocketKind.PULL)
        pull.bind("inproc://conflating-push")
        push = make(SocketKind.PUSH, conflate=1)
        push.connect("inproc://conflating-push")
        for i in range(10):
            push.send(b"%d" % i)
        real = raw_drain(pull)
    assert real == [[b"9"]]

    async def body(sim: Simulation) -> list[list[bytes]]:
        node = sim.node("n")
        pull = node.puller(bind="inproc://conflating-push")
        push = node.pusher(connect="inproc://conflating-push", options=SocketOptions(conflate=True))
        for i in range(10):
            await push.send([b"%d" % i])
        await asyncio.sleep(0.01)
        return sim_drain(pull)

    assert run_sim(body) == real


def test_inproc_reports_no_monitor_events() -> None:
    """libzmq 4.3.5 sends no monitor event for an inproc bind, connect, or the end of
    the pipe, on either side. The old sim reported LISTENING, CONNECTED, ACCEPTED,
    HANDSHAKE_SUCCEEDED and DISCONNECTED as if it were tcp."""
    with raw_sockets() as make:
        pull = make(SocketKind.PULL)
        push = make(SocketKind.PUSH)
        monitors = [sock.get_monitor_socket() for sock in (pull, push)]
        pull.bind("inproc://monitored")
        push.connect("inproc://monitored")
        push.send(b"x")
        pull.recv()

        def events(mon: zmq.Socket[bytes]) -> list[str]:
            names = []
            while mon.poll(100):
                names.append(zmq.Event(recv_monitor_message(mon)["event"]).name)
            return names

        real = [events(monitors[0])]  # the binder's, before it closes
        pull.close()
        raw_wait_unwritable(push)
        real.append(events(monitors[1]))  # the connecter's, after the pipe ended
        push.disable_monitor()
        for mon in monitors:
            mon.close(0)
    assert real == [[], []]

    async def body(sim: Simulation) -> list[list[str]]:
        node = sim.node("n")
        pull = node.puller()
        push = node.pusher()
        monitors = [pull.monitor(), push.monitor()]
        pull.bind("inproc://monitored")
        push.connect("inproc://monitored")
        await push.send([b"x"])
        await pull.recv(timeout=1.0)

        def events(mon: Monitor) -> list[str]:
            names = []
            while (event := mon.try_recv()) is not None:
                names.append(event.name)
            return names

        seen = [events(monitors[0])]
        pull.close()
        await asyncio.sleep(0.5)
        seen.append(events(monitors[1]))
        return seen

    assert run_sim(body) == real


def test_a_second_pair_over_inproc_loses_its_pipe_and_what_it_queued() -> None:
    """libzmq 4.3.5: a PAIR that already has its peer refuses a second inproc
    connection once it processes the new pipe; the second connecter then has no pipe
    (sends would block) and what it queued before is lost. The old sim kept the second
    connecter waiting, its queue accepting SNDHWM uncounted."""
    with raw_sockets() as make:
        b = make(SocketKind.PAIR)
        b.bind("inproc://pair")
        first = make(SocketKind.PAIR)
        first.connect("inproc://pair")
        b.getsockopt(zmq.EVENTS)  # the binder takes the first pipe
        second = make(SocketKind.PAIR, sndhwm=5)
        second.connect("inproc://pair")
        early = raw_tries(second, 3)
        b.getsockopt(zmq.EVENTS)  # the binder refuses the second pipe
        raw_wait_unwritable(second)
        later = raw_tries(second, 100)
        raw_tries(first, 3)
        real = (early, later, len(raw_drain(b, 0.05)))
    assert real == (3, 0, 3)  # the binder got only the first PAIR's three

    async def body(sim: Simulation) -> tuple[tuple[int, int, int], int | None]:
        node = sim.node("n")
        b = node.pair(bind="inproc://pair")
        first = node.pair(connect="inproc://pair")
        second = node.pair(options=SocketOptions(sndhwm=5))
        second.connect("inproc://pair")
        # The sim refuses at connect(), before any send: the early sends find no pipe.
        early = sim_tries(second, 3)
        later = sim_tries(second, 100)
        sim_tries(first, 3)
        await asyncio.sleep(0.01)
        return (early, later, len(sim_drain(b))), second.stats.dropped

    (early, later, got), dropped = run_sim(body)
    assert (later, got) == real[1:]
    # libzmq accepts sends until the binder looks at the pipe (3 here), the sim refuses
    # at once (0); either way none is delivered, and the sim counts what it accepted.
    assert early in (0, real[0])
    assert dropped == early


def test_a_kind_that_cannot_talk_to_the_binder_gets_a_pipe_nobody_reads() -> None:
    """libzmq 4.3.5 has no handshake over inproc: a PUSH connected to a bound PUB gets
    a pipe the PUB never reads, and accepts SNDHWM + the PUB's RCVHWM sends (5 + 1000).
    The sim accepts SNDHWM (5) and counts each as dropped; the old sim accepted 5
    uncounted."""
    with raw_sockets() as make:
        pub = make(SocketKind.PUB, sndhwm=5)
        pub.bind("inproc://mismatch")
        push = make(SocketKind.PUSH, sndhwm=5)
        push.connect("inproc://mismatch")
        pub.getsockopt(zmq.EVENTS)
        real = raw_tries(push, 2000)
    assert real == 5 + 1000

    async def body(sim: Simulation) -> tuple[int, int | None]:
        node = sim.node("n")
        node.publisher(bind="inproc://mismatch")
        push = node.pusher(connect="inproc://mismatch", options=SocketOptions(sndhwm=5))
        accepted = sim_tries(push, 2000)
        await asyncio.sleep(0.01)
        return accepted, push.stats.dropped

    assert run_sim(body) == (5, 5)


def test_a_dealer_whose_routing_id_the_router_has_gets_a_pipe_nobody_reads() -> None:
    """libzmq 4.3.5: a second DEALER with routing id ``A`` connected to an inproc
    ROUTER that has an ``A`` stays writable and takes sends the ROUTER never
    receives, even after the first ``A`` closed. The sim accepts them and counts them
    as dropped (the old sim kept it waiting for another binder, its queue
    uncounted)."""
    with raw_sockets() as make:
        router = make(SocketKind.ROUTER)
        router.bind("inproc://router")
        first = make(SocketKind.DEALER, routing_id=b"A")
        first.connect("inproc://router")
        first.send(b"one")
        assert raw_drain(router) == [[b"A", b"one"]]
        second = make(SocketKind.DEALER, routing_id=b"A", sndhwm=5)
        second.connect("inproc://router")
        router.getsockopt(zmq.EVENTS)  # the ROUTER sees the new pipe
        accepted = raw_tries(second, 3)
        got = raw_drain(router)
        first.close()
        time.sleep(0.05)
        router.getsockopt(zmq.EVENTS)
        real = (accepted, got, raw_tries(second, 2), raw_drain(router))
    assert real == (3, [], 2, [])

    async def body(
        sim: Simulation,
    ) -> tuple[tuple[int, list[list[bytes]], int, list[list[bytes]]], int | None]:
        node = sim.node("n")
        router = node.router(bind="inproc://router")
        first = node.dealer(connect="inproc://router", options=SocketOptions(routing_id=b"A"))
        await first.send([b"one"])
        assert sim_drain(router) == [[b"A", b"one"]]
        second = node.dealer(
            connect="inproc://router", options=SocketOptions(routing_id=b"A", sndhwm=5)
        )
        accepted = sim_tries(second, 3)
        got = sim_drain(router)
        first.close()
        await asyncio.sleep(0.05)
        later = sim_tries(second, 2)
        await asyncio.sleep(0.05)
        return (accepted, got, later, sim_drain(router)), second.stats.dropped

    facts, dropped = run_sim(body)
    assert facts == real
    assert dropped == 5
