"""ZmqNetwork: a process's ZeroMQ context as a transportkit Network."""

from __future__ import annotations

import dataclasses
import threading
import time

import zmq
import zmq.asyncio

from transportkit._errors import ClosedError, OptionError
from transportkit._kinds import SocketKind
from transportkit._network import Endpoints, Network
from transportkit._options import SocketOptions
from transportkit._socket import attach
from transportkit.zmq_backend._blocking import BlockingSocket, ThreadSafeSocket
from transportkit.zmq_backend._options import ZMQ_TYPES, apply_options
from transportkit.zmq_backend._sockets import SOCKET_CLASSES, ZmqSocket

__all__ = ["ZmqNetwork"]


class ZmqNetwork(Network):
    """Real ZeroMQ sockets (inproc, ipc, tcp) from one ``zmq.Context``.

    Make one network per process and share it between the process's threads, as
    ZeroMQ intends for its context: ``inproc://`` then connects every socket of the
    network, asyncio or blocking, in any thread. The sockets themselves are not
    thread-safe (except :class:`ThreadSafeSocket`); the network is.

    Asyncio sockets (:meth:`publisher`, :meth:`subscriber`, ...) work on any running
    asyncio loop. :meth:`blocking` makes synchronous sockets for latency-critical
    loops.

    Closing the network closes every socket it made (and never hangs: sockets linger
    only ``linger`` ms, 0 by default), then terminates the context if the network
    created it. Close blocking sockets in the threads that use them first: closing a
    socket that another thread is blocked on is not safe in libzmq.

    Args:
        io_threads: libzmq I/O threads of the context the network creates (>= 1; one
            handles about a gigabyte per second).
        name: A name for reports and traces.
        context: An existing ``zmq.Context`` to use instead of creating one (then
            ``io_threads`` must stay 1, and the network never terminates it).

    Raises:
        OptionError: ``io_threads`` is not an int >= 1, ``context`` is not a
            ``zmq.Context``, or both ``context`` and ``io_threads`` were given.
        ClosedError: ``context`` is already terminated.
    """

    def __init__(
        self,
        *,
        io_threads: int = 1,
        name: str = "zmq",
        context: zmq.Context[zmq.Socket[bytes]] | None = None,
    ) -> None:
        if isinstance(io_threads, bool) or not isinstance(io_threads, int) or io_threads < 1:
            raise OptionError(f"io_threads must be an int >= 1, got {io_threads!r}")
        if context is None:
            self._ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context(io_threads)
            self._owns_context = True
        else:
            if not isinstance(context, zmq.Context):
                raise OptionError(f"context must be a zmq.Context, got {type(context).__name__}")
            if io_threads != 1:
                raise OptionError(
                    "io_threads applies to a context the network creates; "
                    "set the I/O threads of the context you pass instead"
                )
            if context.closed:
                raise ClosedError("the zmq.Context given to ZmqNetwork is already terminated")
            if isinstance(context, zmq.asyncio.Context):
                context = zmq.Context.shadow(context.underlying)
            self._ctx = context
            self._owns_context = False
        self._actx = zmq.asyncio.Context.shadow(self._ctx.underlying)
        self._name = name
        self._lock = threading.Lock()
        self._sockets: dict[int, ZmqSocket | BlockingSocket] = {}
        self._closed = False

    @property
    def name(self) -> str:
        """The network's name."""
        return self._name

    @property
    def context(self) -> zmq.Context[zmq.Socket[bytes]]:
        """The synchronous ``zmq.Context`` (for raw pyzmq sockets next to transportkit's).

        Sockets made from it directly are the caller's to close.
        """
        return self._ctx

    @property
    def closed(self) -> bool:
        """True once :meth:`close` was called."""
        return self._closed

    def time_ns(self) -> int:
        """Wall-clock nanoseconds since the epoch (``time.time_ns()``)."""
        return time.time_ns()

    def _check_open(self, kind: SocketKind) -> None:
        if self._closed:
            raise ClosedError(
                f"network {self._name!r} is closed: cannot make a {kind.value} socket"
            )

    def _open(self, kind: SocketKind, options: SocketOptions) -> ZmqSocket:
        with self._lock:
            self._check_open(kind)
            asock = self._actx.socket(ZMQ_TYPES[kind])
        try:
            # The asyncio sockets enforce rcvtimeo/sndtimeo with their own deadline;
            # set on libzmq too, they would make pyzmq arm a second timer per wait.
            untimed = dataclasses.replace(options, rcvtimeo=-1, sndtimeo=-1)
            apply_options(asock, untimed, f"{kind.value} socket")
            sock = SOCKET_CLASSES[kind](asock, options, self._forget)
        except BaseException:
            asock.close(linger=0)
            raise
        self._remember(sock)
        return sock

    def blocking(
        self,
        kind: SocketKind,
        *,
        bind: Endpoints = (),
        connect: Endpoints = (),
        options: SocketOptions | None = None,
        thread_safe: bool = False,
        spin: bool = False,
    ) -> BlockingSocket:
        """Make a synchronous socket for latency-critical loops (zmq backend only).

        Args:
            kind: The socket kind. A SUB starts with no subscription: call
                :meth:`BlockingSocket.subscribe`.
            bind: Endpoint(s) to bind.
            connect: Endpoint(s) to connect.
            options: Socket options (defaults: :class:`~transportkit.SocketOptions`).
            thread_safe: Return a :class:`ThreadSafeSocket`, which any thread may use
                (its blocking ``recv`` holds the lock while it waits).
            spin: Busy-poll: receives spin on non-blocking receives instead of
                sleeping in the kernel (lower median latency, one core burnt per
                spinning thread; see :mod:`transportkit.zmq_backend._blocking` for
                when it pays). Timeouts still apply.

        Raises:
            OptionError: ``options`` is not SocketOptions, or does not suit ``kind``.
            EndpointError: A bind or connect failed (the socket is closed first).
            ClosedError: The network is closed.
        """
        opts = SocketOptions() if options is None else options
        if not isinstance(opts, SocketOptions):
            raise OptionError(f"options must be SocketOptions, got {type(opts).__name__}")
        if not isinstance(kind, SocketKind):
            raise OptionError(f"kind must be a SocketKind, got {kind!r}")
        opts.check_for(kind)
        with self._lock:
            self._check_open(kind)
            raw = self._ctx.socket(ZMQ_TYPES[kind])
        cls = ThreadSafeSocket if thread_safe else BlockingSocket
        try:
            apply_options(raw, opts, f"blocking {kind.value} socket")
            sock = cls(raw, kind, opts, self._forget, spin=spin)
        except BaseException:
            raw.close(linger=0)
            raise
        self._remember(sock)
        return attach(sock, bind, connect)

    def _remember(self, sock: ZmqSocket | BlockingSocket) -> None:
        with self._lock:
            closed = self._closed
            if not closed:
                self._sockets[id(sock)] = sock
        if closed:
            sock.close()
            raise ClosedError(f"network {self._name!r} was closed while a socket was made")

    def _forget(self, sock: object) -> None:
        with self._lock:
            self._sockets.pop(id(sock), None)

    def close(self) -> None:
        """Close every socket the network made, then its context if it created it.

        Idempotent, and never hangs (sockets linger ``linger`` ms at most, 0 by
        default; sockets made directly from :attr:`context` are closed with linger 0).
        """
        with self._lock:
            if self._closed:
                return
            self._closed = True
            sockets = list(self._sockets.values())
            self._sockets.clear()
        for sock in sockets:
            sock.close()
        if self._owns_context:
            self._ctx.destroy(linger=0)

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"{len(self._sockets)} sockets"
        return f"<ZmqNetwork {self._name!r} {state}>"
