"""Blocking sockets for latency-critical loops (zmq backend only).

The hot path is one call per message into the optional C accelerator
(:mod:`transportkit.zmq_backend._accel`: every frame of a message, and the "more" flag
of each read in C) inside a plain ``try``/``except`` (free when nothing is raised,
since Python 3.11), with a poll only when a call asks for a timeout other than the
socket's ``rcvtimeo``. Without the accelerator the same calls go through pyzmq's
compiled ``send``/``recv``, non-blocking, with the waits done by transportkit (pyzmq's
own waits call libzmq again with a handle a signal handler may have closed): a receive
takes the first frame as a ``zmq.Frame`` and asks it whether more follow
(``getsockopt(RCVMORE)``, as used by ``recv_multipart``, costs more than the receive
in pyzmq's option lookup). The zero-copy calls and timed waits take the same care on
both paths (``_accel.recv_frames``, ``send_frames``, ``wait``).

Two opt-in modes trade generality for speed:

- **Zero-copy** (``send(frames, copy=False)`` and :meth:`BlockingSocket.recv_buffers`):
  libzmq references the caller's buffers instead of copying them, and received frames
  are handed out as views of libzmq's own message buffers. Worth it for large frames
  (pyzmq copies frames under 64 KB anyway); over inproc a 1 MB message then crosses
  without a single copy.
- **Busy polling** (``ZmqNetwork.blocking(..., spin=True)``): receives spin on
  non-blocking receives instead of sleeping in the kernel, which saves the wake-up
  (the median round trip drops) at the price of a whole core per spinning socket.
  Use it only with a core to spare for each spinning thread (pinned, isolated); on a
  machine with fewer cores than busy threads the spinner steals the CPU its peer
  needs and the tail (P99) gets worse.
"""

from __future__ import annotations

import functools
import math
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import zmq

from transportkit._closing import Closeable
from transportkit._errors import ClosedError, Timeout, TransportError, UnsupportedError
from transportkit._kinds import SocketKind
from transportkit._options import SocketOptions
from transportkit._socket import Frame, Message, SocketStats
from transportkit.zmq_backend import _accel
from transportkit.zmq_backend._errors import FRAME_ERRORS, frame_error, mapped_errors, translate
from transportkit.zmq_backend._options import (
    attach_endpoint,
    check_conflatable,
    check_topic,
    timeout_ms,
)

__all__ = ["BlockingSocket", "ThreadSafeSocket"]


class BlockingSocket(Closeable):
    """A synchronous socket of any kind, as fast as raw pyzmq.

    Made by :meth:`~transportkit.zmq_backend.ZmqNetwork.blocking`. Like a libzmq
    socket it belongs to one thread at a time; use :class:`ThreadSafeSocket`
    (``thread_safe=True``) to share one between threads. Errors are transportkit's,
    as on the asyncio sockets.
    """

    __slots__ = (
        "_closed",
        "_conflate",
        "_kind",
        "_last_endpoint",
        "_on_close",
        "_options",
        "_rcvtimeo",
        "_recv_message",
        "_send_message",
        "_sock",
        "_spin",
        "_stats",
        "_subscriptions",
    )

    def __init__(
        self,
        sock: zmq.Socket[bytes],
        kind: SocketKind,
        options: SocketOptions,
        on_close: Callable[[object], None],
        *,
        spin: bool = False,
    ) -> None:
        self._sock = sock
        self._spin = spin
        self._kind = kind
        self._options = options
        self._on_close = on_close
        self._send_message = _accel.send_message
        self._recv_message = _accel.recv_message
        self._rcvtimeo = options.rcvtimeo
        self._conflate = options.conflate
        self._stats = SocketStats(dropped=None)
        self._last_endpoint: str | None = None
        self._subscriptions: list[bytes] = []
        self._closed = False

    def _where(self) -> str:
        return f"blocking {self._kind.value} socket ({self._last_endpoint or 'unattached'})"

    def _error(
        self, exc: zmq.ZMQError, action: str, *, nonblocking: bool = False
    ) -> TransportError:
        if self._closed:
            return ClosedError(f"{self._where()}: cannot {action}: it is closed")
        return translate(exc, self._where(), action, nonblocking=nonblocking)

    def _check_open(self, action: str) -> None:
        if self._closed:
            raise ClosedError(f"{self._where()}: cannot {action}: it is closed")

    @property
    def kind(self) -> SocketKind:
        """The socket's kind."""
        return self._kind

    @property
    def options(self) -> SocketOptions:
        """The options the socket was made with."""
        return self._options

    @property
    def stats(self) -> SocketStats:
        """Sent and received counts; ``dropped`` is None (libzmq does not report drops)."""
        return self._stats

    @property
    def closed(self) -> bool:
        """True once :meth:`close` was called."""
        return self._closed

    @property
    def spin(self) -> bool:
        """True if receives busy-poll instead of sleeping (``blocking(..., spin=True)``)."""
        return self._spin

    @property
    def last_endpoint(self) -> str | None:
        """The endpoint last bound (resolved) or connected; None before any."""
        return self._last_endpoint

    @property
    def zmq_socket(self) -> zmq.Socket[bytes]:
        """The underlying pyzmq socket (close it only through :meth:`close`)."""
        return self._sock

    def send(self, frames: Sequence[Frame], *, copy: bool = True) -> None:
        """Send one multipart message, blocking up to ``sndtimeo`` at the HWM.

        Args:
            frames: The message's frames: a non-empty Sequence of C-contiguous
                bytes-like objects (:func:`transportkit._socket.check_frames`, checked
                before anything is sent; the same rules with ``copy`` False).
            copy: False sends without copying: libzmq keeps a reference to each frame
                of 64 KB or more until it has sent it, so the caller must not modify
                those buffers afterwards (``bytes`` cannot be modified: always safe).
                Smaller frames are copied anyway, as copying them is cheaper.

        Raises:
            FrameError: ``frames`` breaks those rules, or is multipart on a
                ``conflate`` socket.
            Timeout: ``sndtimeo`` elapsed.
            StateError: The REQ/REP lockstep was broken.
            HostUnreachableError: A ``router_mandatory`` ROUTER has no such peer.
            UnsupportedError: This kind does not send.
            ClosedError: The socket is closed.
        """
        if self._conflate:
            check_conflatable(frames, self._where())
        try:
            if copy:
                self._send_message(self._sock, frames)
            else:
                _accel.send_frames(self._sock, frames)
        except zmq.ZMQError as exc:
            raise self._error(exc, "send") from exc
        except FRAME_ERRORS as exc:
            raise frame_error(self._where(), frames, exc) from exc
        self._stats.sent += 1

    def try_send(self, frames: Sequence[Frame]) -> None:
        """Send without blocking; raise WouldBlock where :meth:`send` would block."""
        if self._conflate:
            check_conflatable(frames, self._where())
        try:
            self._send_message(self._sock, frames, zmq.NOBLOCK)
        except zmq.ZMQError as exc:
            raise self._error(exc, "send", nonblocking=True) from exc
        except FRAME_ERRORS as exc:
            raise frame_error(self._where(), frames, exc) from exc
        self._stats.sent += 1

    def recv(self, timeout: float | None = None) -> Message:
        """Receive one message.

        Args:
            timeout: Seconds to wait; ``math.inf`` for ever; None uses ``rcvtimeo``.

        Raises:
            Timeout: Nothing arrived in time.
            StateError: The REQ/REP lockstep was broken.
            UnsupportedError: This kind does not receive.
            ClosedError: The socket is closed.
        """
        if timeout is not None or self._spin:
            return self._recv_waiting(timeout, copy=True)
        try:
            frames = self._recv_message(self._sock)
        except zmq.ZMQError as exc:
            raise self._error(exc, "recv") from exc
        self._stats.received += 1
        return frames

    def recv_buffers(self, timeout: float | None = None) -> list[memoryview]:
        """Receive one message without copying it out of libzmq (zero-copy).

        Each frame is a read-only view of libzmq's message buffer, valid as long as the
        view is referenced; ``bytes(view)`` copies it when needed. Worth it for large
        frames; for small ones :meth:`recv` is faster.

        Args:
            timeout: As for :meth:`recv`.

        Raises:
            Timeout: Nothing arrived in time.
            StateError: The REQ/REP lockstep was broken.
            UnsupportedError: This kind does not receive.
            ClosedError: The socket is closed.
        """
        if timeout is not None or self._spin:
            frames = self._recv_waiting(timeout, copy=False)
        else:
            try:
                frames = _accel.recv_frames(self._sock)
            except zmq.ZMQError as exc:
                raise self._error(exc, "recv") from exc
            self._stats.received += 1
        return [frame.buffer for frame in frames]

    def _recv_waiting(self, timeout: float | None, *, copy: bool) -> list[Any]:
        """Receive with an explicit timeout, or by spinning (the paths off the fast one)."""
        wait_ms = self._rcvtimeo if timeout is None else timeout_ms(timeout)
        sock = self._sock
        receive: Callable[[int], list[Any]]
        if copy:
            receive = functools.partial(self._recv_message, sock)
        else:
            receive = functools.partial(_accel.recv_frames, sock)
        if self._spin:
            frames = self._recv_spinning(receive, wait_ms)
        elif wait_ms == self._rcvtimeo:
            try:
                frames = receive(0)
            except zmq.ZMQError as exc:
                raise self._error(exc, "recv") from exc
        else:
            frames = self._recv_within(receive, wait_ms)
        self._stats.received += 1
        return frames

    def _recv_spinning(self, receive: Callable[[int], list[Any]], wait_ms: int) -> list[Any]:
        deadline = math.inf if wait_ms < 0 else time.monotonic() + wait_ms / 1000
        try:
            while True:
                try:
                    return receive(zmq.NOBLOCK)
                except zmq.Again:
                    if time.monotonic() >= deadline:
                        raise Timeout(
                            f"{self._where()}: recv timed out after {wait_ms} ms"
                        ) from None
        except zmq.ZMQError as exc:
            raise self._error(exc, "recv") from exc

    def _recv_within(self, receive: Callable[[int], list[Any]], wait_ms: int) -> list[Any]:
        # Try first, so that a message already waiting, or a state error, comes at once.
        try:
            return receive(zmq.NOBLOCK)
        except zmq.Again:
            pass
        except zmq.ZMQError as exc:
            raise self._error(exc, "recv") from exc
        try:
            if not _accel.wait(self._sock, zmq.POLLIN, wait_ms):
                raise Timeout(f"{self._where()}: recv timed out after {wait_ms} ms") from None
            return receive(zmq.NOBLOCK)
        except zmq.ZMQError as exc:
            raise self._error(exc, "recv") from exc

    def try_recv(self) -> Message | None:
        """Return the next waiting message, or None; never blocks."""
        try:
            frames = self._recv_message(self._sock, zmq.NOBLOCK)
        except zmq.Again:
            return None
        except zmq.ZMQError as exc:
            raise self._error(exc, "recv", nonblocking=True) from exc
        self._stats.received += 1
        return frames

    def subscribe(self, prefix: bytes) -> None:
        """Add a topic prefix (SUB only; counted like libzmq's).

        Raises:
            FrameError: ``prefix`` is not bytes.
            UnsupportedError: The socket is not a SUB.
            ClosedError: The socket is closed.
        """
        self._check_subscriber("subscribe", prefix)
        with mapped_errors(self._where(), "subscribe"):
            self._sock.setsockopt(zmq.SUBSCRIBE, prefix)
        self._subscriptions.append(prefix)

    def unsubscribe(self, prefix: bytes) -> None:
        """Remove one subscription to ``prefix`` (SUB only); ignore one never made."""
        self._check_subscriber("unsubscribe", prefix)
        if prefix not in self._subscriptions:
            return
        with mapped_errors(self._where(), "unsubscribe"):
            self._sock.setsockopt(zmq.UNSUBSCRIBE, prefix)
        self._subscriptions.remove(prefix)

    @property
    def subscriptions(self) -> tuple[bytes, ...]:
        """The prefixes subscribed to, in the order they were added."""
        return tuple(self._subscriptions)

    def _check_subscriber(self, action: str, prefix: object) -> None:
        if self._kind is not SocketKind.SUB:
            raise UnsupportedError(f"{self._where()}: only SUB sockets can {action}")
        check_topic(prefix, self._where())
        self._check_open(action)

    def bind(self, endpoint: str) -> str:
        """Bind and return the resolved endpoint (see ``Socket.bind``)."""
        self._check_open(f"bind {endpoint}")
        self._last_endpoint = attach_endpoint(self._sock, "bind", endpoint, self._where())
        return self._last_endpoint

    def connect(self, endpoint: str) -> None:
        """Connect to ``endpoint`` (see ``Socket.connect``)."""
        self._check_open(f"connect {endpoint}")
        self._last_endpoint = attach_endpoint(self._sock, "connect", endpoint, self._where())

    def disconnect(self, endpoint: str) -> None:
        """Drop the connection to ``endpoint`` (see ``Socket.disconnect``)."""
        self._check_open(f"disconnect {endpoint}")
        attach_endpoint(self._sock, "disconnect", endpoint, self._where())

    def close(self) -> None:
        """Close the socket; idempotent; unsent messages survive ``linger`` ms."""
        if self._closed:
            return
        self._closed = True
        self._sock.close()
        self._on_close(self)

    def __repr__(self) -> str:
        state = "closed" if self._closed else (self._last_endpoint or "unattached")
        return f"<{type(self).__name__} {self._kind.value} {state}>"


class ThreadSafeSocket(BlockingSocket):
    """A :class:`BlockingSocket` whose every call holds one ``threading.Lock``.

    Any number of threads may share it (the seed's ``ThreadSafeSocket``). A blocking
    ``recv`` holds the lock while it waits, so every other call on the socket waits
    too: share a socket for sending, or receive with a timeout (or ``try_recv``).
    """

    __slots__ = ("_lock",)

    def __init__(
        self,
        sock: zmq.Socket[bytes],
        kind: SocketKind,
        options: SocketOptions,
        on_close: Callable[[object], None],
        *,
        spin: bool = False,
    ) -> None:
        super().__init__(sock, kind, options, on_close, spin=spin)
        self._lock = threading.Lock()

    def send(self, frames: Sequence[Frame], *, copy: bool = True) -> None:
        """Send under the lock (see :meth:`BlockingSocket.send`)."""
        with self._lock:
            super().send(frames, copy=copy)

    def try_send(self, frames: Sequence[Frame]) -> None:
        """Send without blocking, under the lock."""
        with self._lock:
            super().try_send(frames)

    def recv(self, timeout: float | None = None) -> Message:
        """Receive under the lock, which is held for the whole wait."""
        with self._lock:
            return super().recv(timeout)

    def recv_buffers(self, timeout: float | None = None) -> list[memoryview]:
        """Receive without copying, under the lock (see :meth:`BlockingSocket.recv_buffers`)."""
        with self._lock:
            return super().recv_buffers(timeout)

    def try_recv(self) -> Message | None:
        """Receive without blocking, under the lock."""
        with self._lock:
            return super().try_recv()

    def subscribe(self, prefix: bytes) -> None:
        """Subscribe under the lock."""
        with self._lock:
            super().subscribe(prefix)

    def unsubscribe(self, prefix: bytes) -> None:
        """Unsubscribe under the lock."""
        with self._lock:
            super().unsubscribe(prefix)

    def bind(self, endpoint: str) -> str:
        """Bind under the lock."""
        with self._lock:
            return super().bind(endpoint)

    def connect(self, endpoint: str) -> None:
        """Connect under the lock."""
        with self._lock:
            super().connect(endpoint)

    def disconnect(self, endpoint: str) -> None:
        """Disconnect under the lock."""
        with self._lock:
            super().disconnect(endpoint)

    def close(self) -> None:
        """Close under the lock (so after any call in progress returns)."""
        with self._lock:
            super().close()
