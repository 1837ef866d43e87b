"""The connection log: every socket's connects, accepts, drops and retries, logged.

Off by default. Turn it on per network: ``ZmqNetwork(log_connections=True)`` on real
sockets, ``Simulation(..., log_connections=True)`` in a simulation; the same events
give the same lines on both backends. Then each socket's libzmq monitor events are
logged, one line each, on the logger ``transportkit.zmq_backend.connections`` (this
module) or ``transportkit.sim_backend.connections`` (in a simulation, with virtual
time), as::

    CONNECTED DEALER gw/dealer0 endpoint=tcp://risk-host:5555 peer=10.0.0.7:5555
    DISCONNECTED DEALER gw/dealer0 endpoint=tcp://risk-host:5555 peer=10.0.0.7:5555
    CONNECT_RETRIED DEALER gw/dealer0 endpoint=tcp://risk-host:5555 peer=- retry_ms=100

The socket is named ``NETWORK/KINDn`` (the network's or node's name, the kind, a
counter of the network's sockets). The peer is the remote address where it is known:
on tcp, the address of the connection's other end, asked of the kernel (by its file
descriptor) when the log's thread reads the ``CONNECTED`` or ``ACCEPTED`` event and
remembered for its ``DISCONNECTED``; ``-`` for a retry, an event about a listener, or
a connection already gone when its event was read (and, rarely, if its descriptor was
already reused by a new connection then, that one's address). In a simulation: the
other node's name on tcp.

========================================  ========
event                                     level
========================================  ========
``CONNECTED``, ``ACCEPTED``               INFO
``DISCONNECTED``, ``CONNECT_RETRIED``     WARNING
``HANDSHAKE_FAILED_*`` (``error=``:       WARNING
errno, or 400 for a ZAP refusal)
``ACCEPT_FAILED``, ``BIND_FAILED``,       WARNING
``CLOSE_FAILED``
``CLOSED``, ``LISTENING``,                DEBUG
``CONNECT_DELAYED``, ``HANDSHAKE_SUCCEEDED``
========================================  ========

Every line is rate-limited (a :class:`~transportkit._log.RateLimitedLog` per network
or simulation): at most 5 lines per event, socket and endpoint in each 10 s, then one
line with the count of those suppressed. A peer down for an hour, retried every
100 ms, writes at most 6 retry lines per 10 s (2,160 in the hour instead of 36,000);
other sockets' and endpoints' lines are not held back by it (state for up to 1,024
keys, then the rest share one). Records have ``extra`` fields ``event``, ``socket_kind``,
``socket``, ``endpoint``, ``peer`` and ``value``.

libzmq reports nothing about inproc connections, so neither does the log (on either
backend). The simulator reports no ``CLOSED`` (it models no file descriptors).

Cost on the zmq backend: one thread per network (asleep in a poll until an event
comes), and per socket libzmq's monitor (an inproc PAIR pair: two sockets, two file
descriptors). Measured on a shared 2-core VM (``benchmarks/connlog_cost.py``): 2
more file descriptors per socket, 0.1-0.3 ms more to make one and 0.04-0.14 ms more
to close it, 20-45 us of CPU per monitor event read (a reconnect attempt makes three),
no CPU while nothing happens. :meth:`ZmqSocket.monitor
<transportkit.zmq_backend.ZmqSocket.monitor>` still works on a logged socket: the
log's thread hands the monitor the same events. Closing a socket ends its monitor;
closing the network stops the thread and closes every monitor socket before the
context is terminated.
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import logging
import os
import socket as _socket
import struct
import threading
import time
from typing import Final

import zmq

from transportkit._connlog import MAX_KEYS, log_event
from transportkit._log import RateLimitedLog

__all__ = ["ConnectionLog", "logger"]

logger = logging.getLogger(__name__)

STOP_GRACE: Final = 0.25
"""Seconds :meth:`ConnectionLog.close` lets closed sockets' last events arrive."""

MAX_PEERS: Final = 4096
"""Connections per socket whose peer address is remembered (for its DISCONNECTED)."""

_HEADER: Final = struct.Struct("=HI")
_NAMES: Final = {int(event): str(event.name) for event in zmq.Event}
_STOPPED: Final = int(zmq.EVENT_MONITOR_STOPPED)
_WITH_PEER: Final = frozenset({int(zmq.EVENT_CONNECTED), int(zmq.EVENT_ACCEPTED)})
_FD_GONE: Final = frozenset({int(zmq.EVENT_DISCONNECTED), int(zmq.EVENT_CLOSED)})
_ids = itertools.count()


def peer_of(fd: int) -> str | None:
    """``host:port`` of the other end of the tcp connection on ``fd``, or None.

    Asks the kernel through a duplicate of the descriptor (libzmq's stays untouched);
    None when ``fd`` is no connected inet socket (ipc, or closed meanwhile).
    """
    try:
        copy = os.dup(fd)
    except OSError:
        return None
    try:
        dup = _socket.socket(fileno=copy)
    except OSError:
        os.close(copy)
        return None
    try:
        if dup.family not in (_socket.AF_INET, _socket.AF_INET6):
            return None
        address = dup.getpeername()
    except OSError:
        return None
    finally:
        dup.close()
    host, port = address[0], address[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class _Watch:
    """One socket's monitor, read by the log's thread."""

    __slots__ = ("forward", "kind", "log", "name", "peers", "reader")

    def __init__(self, log: ConnectionLog, name: str, kind: str, reader: zmq.Socket[bytes]) -> None:
        self.log = log
        self.name = name
        self.kind = kind
        self.reader = reader
        self.forward: zmq.Socket[bytes] | None = None
        self.peers: dict[int, str] = {}  # fd -> peer, while the connection is up


class ConnectionLog:
    """A network's connection log: one thread reading every logged socket's monitor.

    Made by :class:`~transportkit.zmq_backend.ZmqNetwork` when ``log_connections`` is
    true; :meth:`watch` is called for each socket it makes. Thread-safe.

    Args:
        context: The network's context (the monitor sockets are made on it).
        network: The network's name (the first part of each socket's name).
    """

    def __init__(self, context: zmq.Context[zmq.Socket[bytes]], network: str) -> None:
        self._ctx = context
        self._network = network
        self._lock = threading.Lock()
        self._ops: list[tuple[str, _Watch, zmq.Socket[bytes] | None]] = []
        self._dirty = False
        self._counter = itertools.count()
        self._closed = False
        self._stopping = False
        self.events = 0
        """Monitor events read (logged or not), for tests and measurements."""
        self.watched = 0
        """Sockets whose monitors the thread reads (updated by the thread)."""
        self._limiter = RateLimitedLog(logger, max_keys=MAX_KEYS, clock=time.monotonic)
        wake = f"inproc://transportkit.connlog.{id(self):x}.{next(_ids)}"
        self._wake_rx: zmq.Socket[bytes] = context.socket(zmq.PAIR)
        self._wake_tx: zmq.Socket[bytes] = context.socket(zmq.PAIR)
        for s in (self._wake_rx, self._wake_tx):
            s.setsockopt(zmq.LINGER, 0)
        self._wake_rx.bind(wake)
        self._wake_tx.connect(wake)
        self._thread = threading.Thread(
            target=self._run, name=f"transportkit-connlog-{network}", daemon=True
        )
        self._thread.start()

    @property
    def alive(self) -> bool:
        """Whether the log's thread runs."""
        return self._thread.is_alive()

    def watch(self, target: zmq.Socket[bytes], kind: str) -> _Watch:
        """Start logging ``target``'s monitor events (call in the thread that owns it).

        Raises:
            zmq.ZMQError: libzmq refused the monitor (the socket is closed).
        """
        with self._lock:
            if self._closed or self._stopping:
                raise zmq.ZMQError(errno.ENOTSOCK, "the connection log is closed")
            name = f"{self._network}/{kind.lower()}{next(self._counter)}"
        address = f"inproc://transportkit.connmon.{id(target):x}.{next(_ids)}"
        target.monitor(address, zmq.EVENT_ALL)
        reader: zmq.Socket[bytes] = self._ctx.socket(zmq.PAIR)
        reader.setsockopt(zmq.LINGER, 0)
        try:
            reader.connect(address)
        except BaseException:
            reader.close()
            target.disable_monitor()
            raise
        watch = _Watch(self, name, kind, reader)
        self._post("add", watch, None)
        return watch

    def forward(self, watch: _Watch, to: zmq.Socket[bytes] | None) -> None:
        """Hand ``watch``'s events to ``to`` (a PAIR bound for a user's monitor) from
        now on, or to nobody (None); the thread closes the previous one.
        """
        self._post("forward", watch, to)

    def _post(self, op: str, watch: _Watch, to: zmq.Socket[bytes] | None) -> None:
        with self._lock:
            if self._closed:
                if to is not None:
                    to.close(linger=0)
                if op == "add":
                    watch.reader.close(linger=0)
                return
            self._ops.append((op, watch, to))
            self._dirty = True
            with contextlib.suppress(zmq.ZMQError):  # a wake is pending already
                self._wake_tx.send(b"", zmq.NOBLOCK)

    def close(self, timeout: float = 1.0) -> bool:
        """Stop the thread: it reads what closed sockets still report for up to
        :data:`STOP_GRACE` seconds (less if the context is shut down meanwhile), then
        closes every monitor socket and its own. Idempotent.

        Returns:
            Whether the thread ended within ``timeout`` seconds.
        """
        with self._lock:
            first = not self._stopping
            self._stopping = True
            if first and not self._closed:
                with contextlib.suppress(zmq.ZMQError):
                    self._wake_tx.send(b"", zmq.NOBLOCK)
        self._thread.join(timeout)
        return not self._thread.is_alive()

    # -- the thread -------------------------------------------------------------------

    def _apply(self, watches: dict[zmq.Socket[bytes], _Watch], poller: zmq.Poller) -> None:
        with self._lock:
            ops, self._ops = self._ops, []
            self._dirty = False
        for op, watch, to in ops:
            if op == "add":
                watches[watch.reader] = watch
                poller.register(watch.reader, zmq.POLLIN)
            elif watch.reader in watches:
                if watch.forward is not None:
                    watch.forward.close(linger=0)
                watch.forward = to
            elif to is not None:
                to.close(linger=0)

    def _run(self) -> None:
        watches: dict[zmq.Socket[bytes], _Watch] = {}
        poller = zmq.Poller()
        poller.register(self._wake_rx, zmq.POLLIN)
        deadline: float | None = None
        try:
            while True:
                self._apply(watches, poller)
                if self._stopping:
                    now = time.monotonic()
                    deadline = now + STOP_GRACE if deadline is None else deadline
                    if not watches or now >= deadline:
                        return
                wait = None if deadline is None else max(1, int((deadline - now) * 1000))
                ready = dict(poller.poll(wait))
                if self._wake_rx in ready:
                    while True:
                        try:
                            self._wake_rx.recv(zmq.NOBLOCK)
                        except zmq.Again:
                            break
                for reader in list(watches):
                    if reader in ready and not self._drain(watches[reader], watches, poller):
                        del watches[reader]
                        poller.unregister(reader)
                self.watched = len(watches)
        except zmq.ZMQError:
            return  # the context was shut down under us: close what we hold
        finally:
            with self._lock:
                ops, self._ops = self._ops, []
                self._closed = True  # later posts close their sockets themselves
                self._wake_tx.close(linger=0)  # used under the lock only: ours now
            for op, watch, to in ops:
                if to is not None:
                    to.close(linger=0)
                if op == "add":
                    watches[watch.reader] = watch
            for watch in watches.values():
                self._end(watch)
            self.watched = 0
            self._wake_rx.close(linger=0)
            self._limiter.flush()

    def _drain(
        self, watch: _Watch, watches: dict[zmq.Socket[bytes], _Watch], poller: zmq.Poller
    ) -> bool:
        """Log what ``watch`` has; False once its monitor stopped (it is closed)."""
        while True:
            try:
                frames = watch.reader.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return True
            if self._dirty:  # a forward posted before this event was made
                self._apply(watches, poller)
            self.events += 1
            if watch.forward is not None:
                # The user's monitor full: the event is dropped, as libzmq's would be.
                with contextlib.suppress(zmq.ZMQError):
                    watch.forward.send_multipart(frames, zmq.NOBLOCK)
            event, value = _HEADER.unpack_from(frames[0])
            if event == _STOPPED:
                self._end(watch)
                return False
            endpoint = frames[1].decode(errors="replace") if len(frames) > 1 else ""
            if event in _WITH_PEER:
                found = peer_of(value) if endpoint.startswith("tcp://") else None
                if found is not None:
                    if len(watch.peers) >= MAX_PEERS:  # DISCONNECTEDs lost: start over
                        watch.peers.clear()
                    watch.peers[value] = found
            elif event in _FD_GONE:
                found = watch.peers.pop(value, None)
            else:
                found = None
            log_event(
                self._limiter.log,
                event=_NAMES.get(event, f"EVENT_{event:#x}"),
                kind=watch.kind,
                socket=watch.name,
                endpoint=endpoint,
                peer=found,
                value=value,
            )

    @staticmethod
    def _end(watch: _Watch) -> None:
        watch.reader.close(linger=0)
        if watch.forward is not None:
            watch.forward.close(linger=0)
            watch.forward = None
        watch.peers.clear()
