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

Closing from another thread: libzmq aborts the process if a socket is closed while
another thread is inside a call on it. Each call therefore marks the socket in use
(one flag, set before libzmq is entered and cleared after: about 30 ns per send plus
receive), a close from another thread leaves a socket in use to the thread using it,
and that thread closes it when its call returns (see :meth:`BlockingSocket.close`).
"""

from __future__ import annotations

import contextlib
import functools
import math
import os
import sys
import threading
import time
import types
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import zmq

from transportkit import _wallclock as wallclock
from transportkit._closing import Closeable
from transportkit._errors import (
    ClosedError,
    Timeout,
    TransportError,
    UnsupportedError,
    WouldBlock,
)
from transportkit._kinds import SocketKind
from transportkit._options import SocketOptions
from transportkit._socket import Frame, Message, SocketStats
from transportkit.zmq_backend import _accel
from transportkit.zmq_backend._errors import FRAME_ERRORS, frame_error, mapped_errors, translate
from transportkit.zmq_backend._options import (
    EndpointMap,
    attach_endpoint,
    check_conflatable,
    check_topic,
    timeout_ms,
)

__all__ = ["BlockingSocket", "ThreadSafeSocket"]

_SPURIOUS_WAKE_PAUSE = 0.001
"""Seconds a ThreadSafeSocket send pauses when the socket said ready but could not send."""
_CLOSE_WAIT = 1.0
"""Seconds ThreadSafeSocket.close waits for the thread inside a call to release the socket."""


class BlockingSocket(Closeable):
    """A synchronous socket of any kind, as fast as raw pyzmq.

    Made by :meth:`~transportkit.zmq_backend.ZmqNetwork.blocking`. Like a libzmq
    socket it belongs to one thread at a time; use :class:`ThreadSafeSocket`
    (``thread_safe=True``) to share one between threads. Errors are transportkit's,
    as on the asyncio sockets.
    """

    __slots__ = (
        "_busy",
        "_closed",
        "_conflate",
        "_endpoint_map",
        "_kind",
        "_last_endpoint",
        "_on_close",
        "_options",
        "_rcvtimeo",
        "_recv_message",
        "_release_lock",
        "_released",
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
        self._stats = SocketStats(dropped=None, truncated=None)
        self._last_endpoint: str | None = None
        self._endpoint_map: EndpointMap | None = None  # set by the network
        self._subscriptions: list[bytes] = []
        self._closed = False  # close() was called (or the context shut down)
        self._busy = False  # a call is inside libzmq (see close)
        self._released = False  # the libzmq socket is closed
        self._release_lock = threading.Lock()

    def _where(self) -> str:
        return f"blocking {self._kind.value} socket ({self._last_endpoint or 'unattached'})"

    def _error(
        self, exc: zmq.ZMQError, action: str, *, nonblocking: bool = False
    ) -> TransportError:
        if exc.errno == zmq.ETERM and not self._closed:
            # The context was shut down or terminated (by the network's close, or by
            # the owner of a context given to the network): the socket can do nothing
            # more. Marked closed, it is released as the call in progress returns.
            self._closed = True
            return ClosedError(
                f"{self._where()}: {action} failed: the socket's zmq context was terminated"
            )
        if self._closed:
            return self._closed_error(action)
        return translate(exc, self._where(), action, nonblocking=nonblocking)

    def _closed_error(self, action: str) -> ClosedError:
        return ClosedError(f"{self._where()}: cannot {action}: it is closed")

    def _check_open(self, action: str) -> None:
        if self._closed:
            raise self._closed_error(action)

    @contextlib.contextmanager
    def _in_use(self, action: str) -> Iterator[None]:
        """Bracket a call that is not on the hot path (bind, subscribe...) as in use."""
        self._busy = True
        try:
            self._check_open(action)
            yield
        finally:
            self._busy = False
            if self._closed:
                self._release()

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
        """Sent and received counts; ``dropped`` and ``truncated`` are None (libzmq
        reports neither).
        """
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
                ``conflate`` socket. A frame larger than the peer's ``maxmsgsize`` is
                sent without error, and the peer drops the connection (see
                ``SocketOptions.maxmsgsize``).
            Timeout: ``sndtimeo`` elapsed.
            StateError: The REQ/REP lockstep was broken.
            HostUnreachableError: A ``router_mandatory`` ROUTER has no such peer.
            UnsupportedError: This kind does not send.
            ClosedError: The socket is closed.
        """
        if self._conflate:
            check_conflatable(frames, self._where())
        self._busy = True
        try:
            if self._closed:
                raise self._closed_error("send")
            if copy:
                self._send_message(self._sock, frames)
            else:
                _accel.send_frames(self._sock, frames)
        except zmq.ZMQError as exc:
            raise self._error(exc, "send") from exc
        except FRAME_ERRORS as exc:
            raise frame_error(self._where(), frames, exc) from exc
        finally:
            self._busy = False
            if self._closed:
                self._release()
        self._stats.sent += 1

    def try_send(self, frames: Sequence[Frame]) -> None:
        """Send without blocking; raise WouldBlock where :meth:`send` would block."""
        if self._conflate:
            check_conflatable(frames, self._where())
        self._busy = True
        try:
            if self._closed:
                raise self._closed_error("send")
            self._send_message(self._sock, frames, zmq.NOBLOCK)
        except zmq.ZMQError as exc:
            raise self._error(exc, "send", nonblocking=True) from exc
        except FRAME_ERRORS as exc:
            raise frame_error(self._where(), frames, exc) from exc
        finally:
            self._busy = False
            if self._closed:
                self._release()
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
        self._busy = True
        try:
            if self._closed:
                raise self._closed_error("recv")
            if timeout is not None or self._spin:
                return self._recv_waiting(timeout, copy=True)
            frames = self._recv_message(self._sock)
        except zmq.ZMQError as exc:
            raise self._error(exc, "recv") from exc
        finally:
            self._busy = False
            if self._closed:
                self._release()
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
        self._busy = True
        try:
            if self._closed:
                raise self._closed_error("recv")
            if timeout is not None or self._spin:
                frames = self._recv_waiting(timeout, copy=False)
            else:
                try:
                    frames = _accel.recv_frames(self._sock)
                except zmq.ZMQError as exc:
                    raise self._error(exc, "recv") from exc
                self._stats.received += 1
        finally:
            self._busy = False
            if self._closed:
                self._release()
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
        deadline = math.inf if wait_ms < 0 else wallclock.monotonic() + wait_ms / 1000
        try:
            while True:
                try:
                    return receive(zmq.NOBLOCK)
                except zmq.Again:
                    if self._closed:  # by another thread: this one releases the socket
                        raise self._closed_error("recv") from None
                    if wallclock.monotonic() >= deadline:
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
        self._busy = True
        try:
            if self._closed:
                raise self._closed_error("recv")
            frames = self._recv_message(self._sock, zmq.NOBLOCK)
        except zmq.Again:
            return None
        except zmq.ZMQError as exc:
            raise self._error(exc, "recv", nonblocking=True) from exc
        finally:
            self._busy = False
            if self._closed:
                self._release()
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
        with self._in_use("subscribe"), mapped_errors(self._where(), "subscribe"):
            self._sock.setsockopt(zmq.SUBSCRIBE, prefix)
        self._subscriptions.append(prefix)

    def unsubscribe(self, prefix: bytes) -> None:
        """Remove one subscription to ``prefix`` (SUB only); ignore one never made."""
        self._check_subscriber("unsubscribe", prefix)
        if prefix not in self._subscriptions:
            return
        with self._in_use("unsubscribe"), mapped_errors(self._where(), "unsubscribe"):
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
        with self._in_use(f"bind {endpoint}"):
            self._last_endpoint = attach_endpoint(
                self._sock, "bind", endpoint, self._where(), self._endpoint_map
            )
        return self._last_endpoint

    def connect(self, endpoint: str) -> None:
        """Connect to ``endpoint`` (see ``Socket.connect``)."""
        with self._in_use(f"connect {endpoint}"):
            self._last_endpoint = attach_endpoint(
                self._sock, "connect", endpoint, self._where(), self._endpoint_map
            )

    def disconnect(self, endpoint: str) -> None:
        """Drop the connection to ``endpoint`` (see ``Socket.disconnect``)."""
        with self._in_use(f"disconnect {endpoint}"):
            attach_endpoint(self._sock, "disconnect", endpoint, self._where(), self._endpoint_map)

    def close(self) -> None:
        """Close the socket; idempotent, never blocks; unsent messages survive ``linger`` ms.

        Safe from any thread. If another thread is inside a call on the socket,
        libzmq forbids closing it under that call: the socket is marked closed at
        once (every later call raises ClosedError) and released by that thread when
        its call returns. Closing cannot interrupt that call (a ``recv`` with no
        timeout goes on waiting for a message); closing the network can, and a
        :class:`ThreadSafeSocket`'s close does.
        """
        self._request_close()

    def _request_close(self) -> None:
        """Mark the socket closed; release it now unless a call is in progress.

        The in-use flag and the closed flag form a handshake that needs no lock on
        the hot path: a call sets ``_busy`` and then reads ``_closed``; this sets
        ``_closed`` and then reads ``_busy``. Under the GIL, one of the two sees the
        other's write, so either the call never reaches libzmq or this leaves the
        socket to the call, which releases it on its way out (``_release`` runs
        once, whoever gets there).
        """
        self._closed = True
        if not self._busy or self._called_in_this_thread():
            self._release()

    def _called_in_this_thread(self) -> bool:
        """Whether this thread is itself inside a call on the socket.

        Then the close comes from a signal handler that interrupted that call, and
        handlers run between two libzmq calls, never inside one: the socket can be
        closed at once, and the interrupted call, which reads the handle again before
        it uses it (see ``_accel``), raises ClosedError instead of waiting on. Walking
        the stack costs the close, never the calls.
        """
        frame: types.FrameType | None = sys._getframe(1)
        while frame is not None:
            if frame.f_code in _CALL_CODES and frame.f_locals.get("self") is self:
                return True
            frame = frame.f_back
        return False

    def _release(self) -> None:
        """Close the libzmq socket and tell the network; once, from whichever thread."""
        with self._release_lock:
            if self._released:
                return
            self._released = True
        self._sock.close()
        self._on_close(self)

    def __repr__(self) -> str:
        state = "closed" if self._closed else (self._last_endpoint or "unattached")
        return f"<{type(self).__name__} {self._kind.value} {state}>"


_CALL_CODES = frozenset(
    getattr(BlockingSocket, name).__code__
    for name in ("send", "try_send", "recv", "recv_buffers", "try_recv")
)
"""The code of the calls that go into libzmq (see ``BlockingSocket._called_in_this_thread``)."""


class _Wakeup:
    """A file descriptor that a ``zmq_poll`` waits on next to a socket, so that another
    thread can end the wait (an eventfd, or a pipe where there is none).

    Made on first use. :meth:`set` may come before or after the descriptor is made, and
    after :meth:`close`; it never writes to a descriptor already closed.
    """

    __slots__ = ("_fds", "_lock", "_set")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._fds: tuple[int, int] | None = None
        self._set = False

    def fileno(self) -> int:
        """The descriptor to poll for POLLIN (readable once :meth:`set` was called)."""
        with self._lock:
            if self._fds is None:
                if hasattr(os, "eventfd"):
                    fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
                    self._fds = (fd, fd)
                else:  # pragma: no cover - platforms without eventfd
                    read, write = os.pipe()
                    os.set_blocking(read, False)
                    os.set_blocking(write, False)
                    self._fds = (read, write)
                if self._set:
                    self._signal()
            return self._fds[0]

    def set(self) -> None:
        """Make the descriptor readable for good (now, or as soon as it is made)."""
        with self._lock:
            self._set = True
            if self._fds is not None:
                self._signal()

    def _signal(self) -> None:
        assert self._fds is not None
        read, write = self._fds
        with contextlib.suppress(BlockingIOError):  # full: readable already
            if read == write:
                os.eventfd_write(write, 1)
            else:  # pragma: no cover - platforms without eventfd
                os.write(write, b"\x01")

    def close(self) -> None:
        """Close the descriptor (only when no thread polls it)."""
        with self._lock:
            if self._fds is not None:
                for fd in set(self._fds):
                    os.close(fd)
                self._fds = None


class ThreadSafeSocket(BlockingSocket):
    """A :class:`BlockingSocket` whose every call holds one ``threading.Lock``.

    Any number of threads may share it. A call that
    waits (``recv``, ``recv_buffers``, a ``send`` at the HWM) holds the lock while it
    waits, so every other call on the socket waits too: share a socket for sending,
    or receive with a timeout (or ``try_recv``). :meth:`close` is the exception: it
    never waits behind a call for long, and ends a waiting call with ClosedError.

    A wait is a ``zmq_poll`` on the socket and on a wake-up descriptor (an eventfd,
    made on the first wait), then a non-blocking attempt: :meth:`close` from another
    thread makes the descriptor readable. Spinning sockets (``spin=True``) check for
    a close between attempts instead.
    """

    __slots__ = ("_lock", "_wakeup")

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
        self._wakeup = _Wakeup()

    def send(self, frames: Sequence[Frame], *, copy: bool = True) -> None:
        """Send under the lock (see :meth:`BlockingSocket.send`).

        Waits (holding the lock) up to ``sndtimeo`` at the HWM; a :meth:`close` from
        another thread ends the wait with ClosedError.
        """
        with self._lock:
            try:
                wait_ms = self._options.sndtimeo
                deadline = _deadline(wait_ms)
                woken = False
                while not self._send_nowait(frames, copy):
                    if woken:
                        # Ready for output, yet this message could not go (a
                        # router_mandatory ROUTER's peer at its HWM): do not spin.
                        time.sleep(_SPURIOUS_WAKE_PAUSE)
                    woken = self._wait(zmq.POLLOUT, deadline, wait_ms, "send")
            finally:
                if self._closed:
                    self._release()

    def try_send(self, frames: Sequence[Frame]) -> None:
        """Send without blocking, under the lock."""
        with self._lock:
            super().try_send(frames)

    def recv(self, timeout: float | None = None) -> Message:
        """Receive under the lock, which is held for the whole wait.

        As :meth:`BlockingSocket.recv`; a :meth:`close` from another thread ends the
        wait with ClosedError.
        """
        with self._lock:
            try:
                wait_ms = self._rcvtimeo if timeout is None else timeout_ms(timeout)
                deadline = _deadline(wait_ms)
                while (frames := BlockingSocket.try_recv(self)) is None:
                    self._wait(zmq.POLLIN, deadline, wait_ms, "recv")
                return frames
            finally:
                if self._closed:
                    self._release()

    def recv_buffers(self, timeout: float | None = None) -> list[memoryview]:
        """Receive without copying, under the lock (see :meth:`BlockingSocket.recv_buffers`)."""
        with self._lock:
            try:
                wait_ms = self._rcvtimeo if timeout is None else timeout_ms(timeout)
                deadline = _deadline(wait_ms)
                while (buffers := self._recv_buffers_nowait()) is None:
                    self._wait(zmq.POLLIN, deadline, wait_ms, "recv")
                return buffers
            finally:
                if self._closed:
                    self._release()

    def _send_nowait(self, frames: Sequence[Frame], copy: bool) -> bool:
        """One non-blocking send (copying or not); False if it would block."""
        if not copy:
            if self._conflate:
                check_conflatable(frames, self._where())
            self._check_open("send")
            try:
                _accel.send_frames(self._sock, frames, zmq.NOBLOCK)
            except zmq.Again:
                return False
            except zmq.ZMQError as exc:
                raise self._error(exc, "send") from exc
            except FRAME_ERRORS as exc:
                raise frame_error(self._where(), frames, exc) from exc
            self._stats.sent += 1
            return True
        try:
            BlockingSocket.try_send(self, frames)
        except WouldBlock:
            return False
        return True

    def _recv_buffers_nowait(self) -> list[memoryview] | None:
        self._check_open("recv")
        try:
            frames = _accel.recv_frames(self._sock, zmq.NOBLOCK)
        except zmq.Again:
            return None
        except zmq.ZMQError as exc:
            raise self._error(exc, "recv") from exc
        self._stats.received += 1
        return [frame.buffer for frame in frames]

    def _wait(self, flag: int, deadline: float | None, wait_ms: int, action: str) -> bool:
        """Wait (lock held) until the socket may be ready for ``flag``; True if it is.

        Raises:
            Timeout: ``deadline`` (monotonic seconds; None: never), ``wait_ms`` after
                the call began, has passed.
            ClosedError: The socket was closed, before or during the wait.
        """
        self._check_open(action)
        timeout = -1
        if deadline is not None:
            remaining = deadline - wallclock.monotonic()
            if remaining <= 0:
                raise Timeout(f"{self._where()}: {action} timed out after {wait_ms} ms")
            timeout = max(1, math.ceil(remaining * 1000))
        if self._spin:
            return False  # busy-poll: straight back to the next attempt
        try:
            ready = zmq.zmq_poll([(self._sock, flag), (self._wakeup, zmq.POLLIN)], timeout)
        except zmq.ZMQError as exc:
            raise self._error(exc, action) from exc
        self._check_open(action)
        return bool(ready)

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
        """Close the socket; idempotent; returns within about a second whatever happens.

        If another thread holds the lock (waiting in ``recv``, or in ``send`` at the
        HWM), its wait ends at once with ClosedError and that thread releases the
        socket; this call then waits for it, up to ``1 s``, before returning with the
        socket marked closed either way.
        """
        self._request_close()
        if not self._released and self._lock.acquire(timeout=_CLOSE_WAIT):
            try:
                self._release()
            finally:
                self._lock.release()

    def _request_close(self) -> None:
        """Mark closed; release now if the lock is free, else wake whoever holds it."""
        self._closed = True
        if self._lock.acquire(blocking=False):
            try:
                self._release()
            finally:
                self._lock.release()
        else:
            self._wakeup.set()

    def _release(self) -> None:
        super()._release()
        self._wakeup.close()


def _deadline(wait_ms: int) -> float | None:
    """The monotonic time a wait of ``wait_ms`` (libzmq units, -1: for ever) ends."""
    return None if wait_ms < 0 else wallclock.monotonic() + wait_ms / 1000
