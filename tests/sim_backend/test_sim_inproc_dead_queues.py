"""No queue that can no longer drain takes a message silently (issue 11, point 6).

Besides inproc (``test_sim_inproc.py``), a connecting socket over tcp with
``reconnect_ivl=-1`` (never retry) has two such paths; each test measures libzmq 4.3.5
through raw pyzmq over loopback tcp first, then runs the same on the sim:

- Its connection drops: libzmq ends the session and its pipe, so sends find no pipe
  (a PUSH would block) and nothing is queued. The old sim kept the pipe and accepted
  SNDHWM messages into a queue no connection would ever drain, uncounted.
- Its first attempt fails (nothing bound): libzmq keeps the pipe it made at
  ``connect()`` and accepts SNDHWM messages that no later bind receives. The sim
  accepts them too (the same sends succeed and then block), and counts each in
  ``stats.dropped`` as it is queued, so the loss is visible.
"""

from __future__ import annotations

import asyncio
import errno
import time
from pathlib import Path

import pytest
import zmq

from transportkit import EndpointError, SocketKind, SocketOptions

from .test_sim_inproc import (
    raw_bind,
    raw_drain,
    raw_sockets,
    raw_tries,
    raw_wait_unwritable,
    run_sim,
    sim_drain,
    sim_tries,
)

NEVER = SocketOptions(sndhwm=5, reconnect_ivl=-1)


def _free_tcp_endpoint() -> str:
    with raw_sockets() as make:
        probe = make(SocketKind.PULL)
        probe.bind("tcp://127.0.0.1:*")
        endpoint: str = probe.getsockopt(zmq.LAST_ENDPOINT).decode()
    return endpoint


@pytest.mark.parametrize("transport", ["tcp", "ipc"])
def test_a_connection_that_will_not_be_retried_takes_no_more_messages(
    transport: str, tmp_path: Path
) -> None:
    where = "tcp://127.0.0.1:*" if transport == "tcp" else f"ipc://{tmp_path}/never.ipc"
    with raw_sockets() as make:
        pull = make(SocketKind.PULL)
        pull.bind(where)
        endpoint = pull.getsockopt(zmq.LAST_ENDPOINT).decode()
        push = make(SocketKind.PUSH, sndhwm=5, reconnect_ivl=-1)
        push.connect(endpoint)
        push.send(b"hello")
        assert pull.recv() == b"hello"
        pull.close()
        raw_wait_unwritable(push)
        after_drop = raw_tries(push, 100)
        with pytest.raises(zmq.ZMQError) as forgotten:  # the session ended for good
            push.disconnect(endpoint)
        assert forgotten.value.errno == errno.ENOENT
        again = make(SocketKind.PULL)
        raw_bind(again, endpoint)
        time.sleep(0.15)
        real = (after_drop, len(raw_drain(again, 0.1)))
    assert real == (0, 0)

    bind, connect = (
        ("tcp://*:7100", "tcp://srv:7100")
        if transport == "tcp"
        else ("ipc://@never", "ipc://@never")
    )

    async def body(sim):  # type: ignore[no-untyped-def]
        srv, cli = sim.node("srv"), sim.node("cli")
        pull = srv.puller(bind=bind)
        push = cli.pusher(connect=connect, options=NEVER)
        await push.send([b"hello"])
        assert await pull.recv(timeout=1.0) == [b"hello"]
        pull.close()
        await asyncio.sleep(0.01)
        after_drop = sim_tries(push, 100)
        with pytest.raises(EndpointError):
            push.disconnect(connect)
        again = srv.puller(bind=bind)
        await asyncio.sleep(0.5)
        return (after_drop, len(sim_drain(again))), push.stats.dropped

    facts, dropped = run_sim(body)
    assert facts == real
    assert dropped == 0


def test_a_connect_that_failed_for_good_counts_what_it_queues_as_dropped() -> None:
    endpoint = _free_tcp_endpoint()
    with raw_sockets() as make:
        push = make(SocketKind.PUSH, sndhwm=5, reconnect_ivl=-1)
        push.connect(endpoint)
        time.sleep(0.1)  # the one attempt has failed
        queued = raw_tries(push, 100)
        pull = make(SocketKind.PULL)
        raw_bind(pull, endpoint)
        time.sleep(0.15)
        real = (queued, len(raw_drain(pull, 0.1)))
    assert real == (5, 0)

    async def body(sim):  # type: ignore[no-untyped-def]
        srv, cli = sim.node("srv"), sim.node("cli")
        push = cli.pusher(connect="tcp://srv:7101", options=NEVER)
        early = sim_tries(push, 2)  # before the attempt: queued, not yet known lost
        dropped_early = push.stats.dropped
        await asyncio.sleep(0.1)  # the attempt failed: those two are counted now
        dropped_at_failure = push.stats.dropped
        queued = early + sim_tries(push, 100)
        pull = srv.puller(bind="tcp://*:7101")
        await asyncio.sleep(0.5)
        got = len(sim_drain(pull))
        return (queued, got), (dropped_early, dropped_at_failure, push.stats.dropped)

    facts, counts = run_sim(body)
    assert facts == real
    assert counts == (0, 2, 5)


def test_closing_a_stranded_socket_does_not_count_its_queue_twice() -> None:
    async def body(sim):  # type: ignore[no-untyped-def]
        cli = sim.node("cli")
        push = cli.pusher(connect="tcp://srv:7102", options=NEVER)
        await asyncio.sleep(0.1)
        sim_tries(push, 100)
        push.close()
        return push.stats.dropped

    assert run_sim(body) == 5


def test_inproc_is_not_stranded_by_reconnect_ivl() -> None:
    """An inproc connect waits for its binder whatever reconnect_ivl says (it never
    retries: the bind completes it), so its queue is not lost."""

    async def body(sim):  # type: ignore[no-untyped-def]
        node = sim.node("n")
        push = node.pusher(connect="inproc://later", options=NEVER)
        queued = sim_tries(push, 100)
        await asyncio.sleep(1.0)
        pull = node.puller(bind="inproc://later")
        return queued, len(sim_drain(pull)), push.stats.dropped

    assert run_sim(body) == (5, 5, 0)
