"""The zmq backend's connection log (``ZmqNetwork(log_connections=True)``): connects,
drops and reconnects are logged in order with their peers, a long outage writes a
bounded number of retry lines, nothing is left open when sockets and networks close,
and the default opens no monitor and logs nothing.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest

from transportkit import SocketKind, SocketOptions
from transportkit.sim_backend import DropConnection
from transportkit.testing import FaultProxy
from transportkit.zmq_backend import ZmqNetwork

LOGGER = "transportkit.zmq_backend.connections"
WAIT = 5.0


class Lines(logging.Handler):
    """Collects the connection log's records (from its thread)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def events(self, socket: str | None = None, *, level: int = logging.INFO) -> list[str]:
        return [
            r.event  # type: ignore[attr-defined]
            for r in list(self.records)
            if getattr(r, "event", None) is not None
            and r.levelno >= level
            and (socket is None or r.socket == socket)  # type: ignore[attr-defined]
        ]


@contextmanager
def captured() -> Iterator[Lines]:
    logger = logging.getLogger(LOGGER)
    lines = Lines()
    old = logger.level
    logger.setLevel(logging.DEBUG)
    logger.addHandler(lines)
    try:
        yield lines
    finally:
        logger.removeHandler(lines)
        logger.setLevel(old)


def wait_until(predicate: Callable[[], object], what: str, timeout: float = WAIT) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.005)


async def async_wait_until(predicate: Callable[[], object], what: str) -> None:
    deadline = time.monotonic() + WAIT
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.005)


def connlog_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("transportkit-connlog")]


FAST = SocketOptions(linger=0, reconnect_ivl=20)


def test_a_connect_a_drop_and_a_reconnect_are_logged_in_order_with_peers() -> None:
    async def main(lines: Lines) -> None:
        with (
            ZmqNetwork(name="risk", log_connections=True) as risk,
            ZmqNetwork(name="gw", log_connections=True) as gw,
        ):
            router = risk.router(bind="tcp://127.0.0.1:*", options=FAST)
            endpoint = router.last_endpoint
            assert endpoint is not None
            dealer = gw.dealer(connect=endpoint, options=FAST)
            await async_wait_until(lambda: "ACCEPTED" in lines.events("risk/router0"), "the accept")
            await dealer.send([b"order"])
            assert (await router.recv(timeout=WAIT))[1] == b"order"
            router.close()  # the binder goes: the dealer's connection drops
            await async_wait_until(
                lambda: "CONNECT_RETRIED" in lines.events("gw/dealer0"), "a retry"
            )
            again = risk.router(bind=endpoint, options=FAST)  # the same port comes back
            await async_wait_until(
                lambda: lines.events("gw/dealer0").count("CONNECTED") == 2, "the reconnect"
            )
            await dealer.send([b"again"])
            assert (await again.recv(timeout=WAIT))[1] == b"again"
            await async_wait_until(
                lambda: "ACCEPTED" in lines.events("risk/router1"), "the second accept"
            )

    with captured() as lines:
        asyncio.run(asyncio.wait_for(main(lines), 15))
    dealer = lines.events("gw/dealer0")
    # Before the drop one connect; after it, retries until the binder is back.
    assert dealer[:2] == ["CONNECTED", "DISCONNECTED"]
    assert dealer[2] == "CONNECT_RETRIED"
    assert set(dealer[2:-1]) == {"CONNECT_RETRIED"}
    assert dealer[-1] == "CONNECTED"
    assert lines.events("risk/router0") == ["ACCEPTED"]
    # (then maybe DISCONNECTED: the dealer's network closes first, at the end)
    assert lines.events("risk/router1")[0] == "ACCEPTED"
    by_event = {(r.socket, r.event): r for r in lines.records}  # type: ignore[attr-defined]
    connected = by_event["gw/dealer0", "CONNECTED"]
    port = connected.endpoint.rsplit(":", 1)[1]  # type: ignore[attr-defined]
    assert connected.peer == f"127.0.0.1:{port}"  # type: ignore[attr-defined]
    assert connected.levelno == logging.INFO
    accepted = by_event["risk/router0", "ACCEPTED"]
    assert accepted.peer.startswith("127.0.0.1:")  # type: ignore[attr-defined]
    assert accepted.peer != f"127.0.0.1:{port}"  # type: ignore[attr-defined]  # the client's port
    dropped = by_event["gw/dealer0", "DISCONNECTED"]
    assert dropped.levelno == logging.WARNING
    assert dropped.peer == connected.peer  # type: ignore[attr-defined]  # remembered by fd
    assert by_event["gw/dealer0", "CONNECT_RETRIED"].levelno == logging.WARNING
    assert by_event["risk/router0", "CLOSED"].levelno == logging.DEBUG
    message = connected.getMessage()
    assert message == (
        f"CONNECTED DEALER gw/dealer0 endpoint={connected.endpoint} "  # type: ignore[attr-defined]
        f"peer=127.0.0.1:{port}"
    )
    assert not connlog_threads()


def test_a_drop_by_the_fault_proxy_is_logged_on_both_ends_and_the_reconnect_too() -> None:
    with (
        captured() as lines,
        FaultProxy() as proxy,
        ZmqNetwork(name="srv", log_connections=True) as srv,
        ZmqNetwork(name="cli", log_connections=True) as cli,
    ):
        pull = srv.blocking(SocketKind.PULL, bind="tcp://127.0.0.1:*", options=FAST)
        assert pull.last_endpoint is not None
        push = cli.blocking(
            SocketKind.PUSH, connect=proxy.route("cli", "srv", pull.last_endpoint), options=FAST
        )
        push.send([b"1"])
        assert pull.recv(timeout=WAIT) == [b"1"]
        wait_until(lambda: "ACCEPTED" in lines.events("srv/pull0"), "the accept")
        outcome = proxy.apply(DropConnection("cli", "srv"))
        assert outcome.startswith("applied: 1 connection(s)")
        wait_until(
            lambda: (
                lines.events("cli/push0").count("CONNECTED") == 2
                and lines.events("srv/pull0").count("ACCEPTED") == 2
            ),
            "the reconnect through the proxy",
        )
        push.send([b"2"])
        assert pull.recv(timeout=WAIT) == [b"2"]
        wait_until(lambda: "DISCONNECTED" in lines.events("srv/pull0"), "the server's drop")
    client = lines.events("cli/push0")
    assert client[:2] == ["CONNECTED", "DISCONNECTED"]
    assert client[-1] == "CONNECTED"
    server = lines.events("srv/pull0")
    assert server[0] == "ACCEPTED" and server.count("ACCEPTED") == 2
    assert server.index("DISCONNECTED") > 0


def test_a_long_outage_writes_a_bounded_number_of_retry_lines() -> None:
    options = SocketOptions(linger=0, reconnect_ivl=5)
    with captured() as lines:
        net = ZmqNetwork(name="gw", log_connections=True)
        try:
            free = net.blocking(SocketKind.PULL, bind="tcp://127.0.0.1:*")
            endpoint = free.last_endpoint
            assert endpoint is not None
            free.close()  # nobody listens there now
            net.blocking(SocketKind.PUSH, connect=endpoint, options=options)
            log = net.connection_log
            assert log is not None
            # Three events per retry: CONNECT_DELAYED, CLOSED, CONNECT_RETRIED.
            wait_until(lambda: log.events >= 2 + 3 * 60, "60 retries")
            retries = lines.events("gw/push1").count("CONNECT_RETRIED")
            # burst 5 per 10 s window; at least 60 retries happened meanwhile
            assert retries == 5
        finally:
            net.close()
    # Closing the network wrote the count of what was suppressed, at WARNING.
    summary = [r for r in lines.records if "suppressed" in r.getMessage()]
    retried = [r for r in summary if "CONNECT_RETRIED" in r.getMessage()]
    assert len(retried) == 1 and retried[0].levelno == logging.WARNING
    assert retried[0].suppressed >= 50  # type: ignore[attr-defined]


def test_the_default_opens_no_monitor_starts_no_thread_and_logs_nothing(
    run: Callable[..., object],
) -> None:
    async def main() -> None:
        with ZmqNetwork(name="quiet") as net:
            assert net.connection_log is None
            router = net.router(bind="tcp://127.0.0.1:*", options=FAST)
            assert router.last_endpoint is not None
            dealer = net.dealer(connect=router.last_endpoint, options=FAST)
            await dealer.send([b"x"])
            await router.recv(timeout=WAIT)
            assert not connlog_threads()
            # The only libzmq sockets of the context are the two made.
            assert len([s for s in net.context._sockets if not s.closed]) == 0
            assert len(net.open_sockets()) == 2
            router.close()
            await asyncio.sleep(0.1)

    with captured() as lines:
        run(main())
    assert lines.records == []


def test_closing_sockets_and_the_network_closes_every_monitor_socket_and_the_thread() -> None:
    before = len(connlog_threads())
    net = ZmqNetwork(name="leak", log_connections=True)
    log = net.connection_log
    assert log is not None and log.alive
    ctx = net.context
    socks = [
        net.blocking(SocketKind.PULL, bind="tcp://127.0.0.1:*", options=FAST) for _ in range(3)
    ]

    def extra() -> int:  # libzmq sockets of the context that are not the network's
        return len([s for s in ctx._sockets if not s.closed]) - len(net.open_blocking_sockets())

    assert extra() == 3 + 2  # a reader per socket, and the log's own wake pair
    wait_until(lambda: log.watched == 3, "three watched sockets")
    socks[0].close()
    socks[1].close()
    wait_until(lambda: log.watched == 1, "the closed sockets' monitors to end")
    assert extra() == 1 + 2
    began = time.monotonic()
    net.close()
    assert time.monotonic() - began < 1.0
    assert not log.alive and log.watched == 0
    assert len(connlog_threads()) == before
    assert all(s.closed for s in ctx._sockets)
    assert ctx.closed  # terminated: nothing of the log kept it open


def test_a_user_monitor_on_a_logged_socket_sees_the_events_and_closing_it_keeps_the_log(
    run: Callable[..., object],
) -> None:
    async def main(lines: Lines) -> None:
        with ZmqNetwork(name="mon", log_connections=True) as net:
            router = net.router(bind="tcp://127.0.0.1:*", options=FAST)
            assert router.last_endpoint is not None
            dealer = net.dealer(options=FAST)
            monitor = dealer.monitor()
            dealer.connect(router.last_endpoint)
            seen = []
            while "CONNECTED" not in seen:
                seen.append((await monitor.recv(timeout=WAIT)).name)
            monitor.close()
            second = dealer.monitor()  # replaces nothing of the log's
            second.close()
            router.close()
            await async_wait_until(
                lambda: "DISCONNECTED" in lines.events("mon/dealer1"), "the drop"
            )

    with captured() as lines:
        run(main(lines))
    assert lines.events("mon/dealer1")[:2] == ["CONNECTED", "DISCONNECTED"]


def test_inproc_is_not_logged(run: Callable[..., object]) -> None:
    async def main() -> None:
        with ZmqNetwork(log_connections=True) as net:
            pull = net.puller(bind="inproc://connlog-test")
            push = net.pusher(connect="inproc://connlog-test")
            await push.send([b"x"])
            await pull.recv(timeout=WAIT)
            pull.close()
            await asyncio.sleep(0.05)

    with captured() as lines:
        run(main())
    assert lines.records == []


def test_log_connections_must_be_a_bool() -> None:
    with pytest.raises(Exception, match="log_connections must be a bool"):
        ZmqNetwork(log_connections=1)  # type: ignore[arg-type]


def test_a_close_with_no_time_to_wait_still_ends_the_log_and_terminates_the_context() -> None:
    net = ZmqNetwork(name="hasty", log_connections=True)
    log = net.connection_log
    assert log is not None
    net.blocking(SocketKind.PULL, bind="tcp://127.0.0.1:*", options=FAST)
    wait_until(lambda: log.watched == 1, "the watched socket")
    began = time.monotonic()
    net.close(timeout=0)  # no grace for the log: the context's shutdown ends its thread
    assert time.monotonic() - began < 1.0
    wait_until(lambda: not log.alive, "the log's thread to end")
    assert net.context.closed
