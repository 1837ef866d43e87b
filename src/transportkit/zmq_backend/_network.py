"""ZmqNetwork: a process's ZeroMQ context as a transportkit Network."""

from __future__ import annotations

import dataclasses
import threading
import time
import warnings
from typing import Final

import zmq
import zmq.asyncio

from transportkit import _wallclock as wallclock
from transportkit._errors import ClosedError, OptionError
from transportkit._kinds import SocketKind
from transportkit._network import Endpoints, Network
from transportkit._options import SocketOptions
from transportkit._socket import Socket, attach
from transportkit.security import AuthPolicy
from transportkit.zmq_backend._auth import ZmqAuthenticator
from transportkit.zmq_backend._blocking import BlockingSocket, ThreadSafeSocket
from transportkit.zmq_backend._libzmq import shutdown_context
from transportkit.zmq_backend._options import ZMQ_TYPES, EndpointMap, apply_options
from transportkit.zmq_backend._sockets import SOCKET_CLASSES, ZmqSocket
from transportkit.zmq_backend.connections import ConnectionLog

__all__ = ["ZmqNetwork"]

CLOSE_TIMEOUT: Final = 1.0
"""Seconds :meth:`ZmqNetwork.close` waits, by default, for other threads' calls to end."""
RAW_SOCKET_GRACE: Final = 0.1
"""Seconds sockets made directly from the context get to be closed by their threads."""


class ZmqNetwork(Network):
    """Real ZeroMQ sockets (inproc, ipc, tcp) from one ``zmq.Context``.

    Make one network per process and share it between the process's threads, as
    ZeroMQ intends for its context: ``inproc://`` then connects every socket of the
    network, asyncio or blocking, in any thread. The sockets themselves are not
    thread-safe (except :class:`ThreadSafeSocket`); the network is.

    Asyncio sockets (:meth:`publisher`, :meth:`subscriber`, ...) work on any running
    asyncio loop. :meth:`blocking` makes synchronous sockets for latency-critical
    loops.

    Closing the network closes every socket it made, from any thread, even while
    other threads are blocked in calls on them; it never aborts and never hangs (see
    :meth:`close`).

    Args:
        io_threads: libzmq I/O threads of the context the network creates (>= 1; one
            handles about a gigabyte per second).
        name: A name for reports and traces.
        context: An existing ``zmq.Context`` to use instead of creating one (then
            ``io_threads`` must stay 1, and the network never terminates it).
        endpoint_map: Sees every bind of the network's sockets and chooses the
            endpoint each connect really uses (:class:`EndpointMap`; default none:
            endpoints are used as given). The testing kit's fault proxy uses it.
        log_connections: Log every socket's connects, accepts, disconnects and
            retries on ``transportkit.zmq_backend.connections`` (default False; see
            :mod:`transportkit.zmq_backend.connections`). Costs a thread per network
            and a libzmq monitor (two inproc sockets) per socket.

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
        endpoint_map: EndpointMap | None = None,
        log_connections: bool = False,
    ) -> None:
        if not isinstance(log_connections, bool):
            raise OptionError(f"log_connections must be a bool, got {log_connections!r}")
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
        self._endpoint_map = endpoint_map
        self._lock = threading.Lock()
        self._released = threading.Condition(self._lock)  # notified as sockets close
        self._sockets: dict[int, ZmqSocket | BlockingSocket] = {}
        self._closed = False
        self._close_done = threading.Event()
        self._terminate_when_released = False
        self._authenticator: ZmqAuthenticator | None = None
        self._connlog = ConnectionLog(self._ctx, name) if log_connections else None

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
            sock._endpoint_map = self._endpoint_map
            if self._connlog is not None:
                sock._connwatch = self._connlog.watch(sock._sock, kind.value)
        except BaseException:
            asock.close(linger=0)
            raise
        self._remember(sock)
        return sock

    def start_authenticator(self, policy: AuthPolicy | None = None) -> ZmqAuthenticator:
        """Start the network's ZAP handler (RFC 27) on a thread, with ``policy``.

        It binds ``inproc://zeromq.zap.01`` on the network's context before returning,
        so every handshake from then on is decided by it, while user code blocks or
        not. Per connection libzmq asks it once, at the handshake:

        - a CURVE server socket (``curve_server=True``) asks about every client that
          completed the CURVE handshake (so knows the server's key), giving its
          public key: :meth:`AuthPolicy.decide
          <transportkit.security.AuthPolicy.decide>` applies the domain, the IP
          rules, then ``allow_keys``. A client with no keys or a wrong server key
          never gets this far (libzmq fails its handshake as a protocol error).
        - a plaintext (NULL) socket asks only if it has a ``zap_domain``: the domain
          and IP rules apply to it (as in pyzmq's authenticator), keys do not. A NULL
          socket with no ``zap_domain`` is never asked about and serves everybody.

        A refused peer is disconnected before any message passes and both ends'
        monitors report ``HANDSHAKE_FAILED_AUTH`` (value 400; 500 if the policy's
        ``decide`` raised). The refused client does not retry: libzmq takes the
        refusal as a protocol error and ends the connection's session, dropping what
        the client queued for it (measured on libzmq 4.3.5: no retry in 800 refused
        CURVE clients, 600 over tcp, 400 of them while tests loaded the machine, and
        200 over ipc; the sim models this). The ERROR command races with the
        server's close, though, and a client that sees the close first takes it as
        a connection error and retries every ``reconnect_ivl``, each try decided and
        counted again: seen for CURVE clients only in loaded test runs, and for a
        plaintext client refused by a server with a ``zap_domain`` in one run of
        seven. So after an :meth:`~ZmqAuthenticator.update` that admits it, a client
        is sure to get in only by connecting again (a new socket, or ``disconnect``
        then ``connect``). A refused client that gave up has no connection left: a
        REQ's or DEALER's send then waits (until ``sndtimeo``) as it does before any
        peer is there.

        Every refusal is logged at WARNING (rate-limited) with the client's
        address, its public key and the reason, and the start, each update and the
        stop at INFO (logger ``transportkit.zmq_backend._auth``);
        :meth:`MetricsRegistry.watch <transportkit.metrics.MetricsRegistry.watch>`
        exports its counters.

        One running authenticator per network (libzmq has one ZAP endpoint per
        context); after closing it a new one may be started. Closing the network
        stops it after the network's sockets are closed, within about a second.

        Args:
            policy: Who gets in; default ``AuthPolicy()``: any client that completes
                the CURVE handshake, from any address, for every domain.

        Raises:
            ClosedError: The network is closed.
            OptionError: An authenticator of this network is running, another ZAP
                handler is bound on the context, or ``policy`` is not an AuthPolicy.
        """
        chosen = AuthPolicy() if policy is None else policy
        with self._lock:
            if self._closed:
                raise ClosedError(
                    f"network {self._name!r} is closed: cannot start an authenticator"
                )
            if self._authenticator is not None and not self._authenticator.closed:
                raise OptionError(
                    f"network {self._name!r} already has a running authenticator: "
                    "update its policy with update(), or close it first"
                )
            self._authenticator = ZmqAuthenticator(self._ctx, chosen, self._name)
            return self._authenticator

    def _stop_authenticator(self) -> None:
        with self._lock:
            auth = self._authenticator
        if auth is not None:
            auth.close()

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
            sock._endpoint_map = self._endpoint_map
            if self._connlog is not None:
                self._connlog.watch(raw, kind.value)
        except BaseException:
            raw.close(linger=0)
            raise
        self._remember(sock)
        return attach(sock, bind, connect)

    def open_sockets(self) -> tuple[Socket, ...]:
        """The network's asyncio sockets that are not closed, oldest first (a snapshot;
        any thread). The blocking ones are in :meth:`open_blocking_sockets`.
        """
        with self._lock:
            sockets = tuple(self._sockets.values())
        return tuple(s for s in sockets if isinstance(s, ZmqSocket) and not s.closed)

    def open_blocking_sockets(self) -> tuple[BlockingSocket, ...]:
        """The network's blocking sockets that are not closed, oldest first (a snapshot;
        any thread).
        """
        with self._lock:
            sockets = tuple(self._sockets.values())
        return tuple(s for s in sockets if isinstance(s, BlockingSocket) and not s.closed)

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
            self._released.notify_all()
            terminate = self._terminate_when_released and not self._sockets
            if terminate:
                self._terminate_when_released = False
        if terminate:
            # The last socket a close() had to leave behind is now closed. Terminate
            # the context in the background: ``linger`` may make term() wait, and this
            # is the user's thread (or its event loop).
            threading.Thread(
                target=self._ctx.term, name=f"transportkit-term-{self._name}", daemon=True
            ).start()

    def close(self, timeout: float = CLOSE_TIMEOUT) -> None:
        """Close every socket the network made, then its context if it created it.

        Safe from any thread, even while other threads are blocked in calls on the
        network's sockets: it never aborts the process (libzmq does when a socket is
        closed under a call in another thread), and returns within about
        ``timeout`` seconds. Idempotent; a second, concurrent call returns when the
        first is done (or after ``timeout``).

        In order:

        1. Every socket is marked closed: any later call on it raises ClosedError.
           Sockets no thread is using are closed at once. An asyncio socket whose
           event loop runs in another thread is closed by that loop (its waiting
           ``recv`` or ``send`` raises ClosedError there), within ``timeout / 2``.
           With ``log_connections``, the connection log's thread then gets up to
           0.25 s (within ``timeout``) to log the closed sockets' last events, and
           closes every monitor socket it reads.

        2. If the network created the context, it is shut down
           (``zmq_ctx_shutdown``): every call blocked on one of its sockets, with or
           without a timeout, returns at once, raising ClosedError naming its socket,
           and the thread that made the call closes that socket on its way out. A
           :class:`ThreadSafeSocket` ends its own waits, on any context.
        3. Once they are all closed (at most ``timeout`` after the start), sockets
           made directly from :attr:`context` and still open get 0.1 s more to be
           closed by their threads (close yours in the thread that uses it: the
           network cannot tell whether another thread is inside a call on it), then
           are closed with linger 0, and the context is terminated (``linger`` ms at
           most for sockets that still hold messages, 0 by default). The
           authenticator, if one runs, is stopped after the network's sockets are
           closed and before this step (on a context given by the caller: after
           step 1).

        On a context given by the caller, the network does not shut the context
        down, so it cannot interrupt a call in progress on a plain
        :class:`BlockingSocket`: that socket is closed by its thread when the call
        returns; terminating the context yourself ends such a call. Close does not
        wait for them.

        If one of the network's sockets is still in use after ``timeout`` (a thread
        that does not come back from its call, an event loop that does not run),
        close warns (``RuntimeWarning``, naming the sockets) and returns without
        terminating the context; a background thread terminates it once the last
        of them is closed.

        Args:
            timeout: Seconds to wait for other threads' calls to return (>= 0).

        Raises:
            OptionError: ``timeout`` is negative or not a number.
        """
        if isinstance(timeout, bool) or not isinstance(timeout, int | float) or not timeout >= 0:
            raise OptionError(f"timeout must be a number of seconds >= 0, got {timeout!r}")
        with self._lock:
            first = not self._closed
            self._closed = True
            sockets = list(self._sockets.values())
        if not first:
            self._close_done.wait(timeout)
            return
        try:
            self._close_all(sockets, wallclock.monotonic() + timeout, timeout)
        finally:
            self._close_done.set()

    def _close_all(
        self, sockets: list[ZmqSocket | BlockingSocket], deadline: float, timeout: float
    ) -> None:
        elsewhere = False
        for sock in sockets:
            if isinstance(sock, BlockingSocket):
                sock._request_close()
            else:
                elsewhere = sock._close_from_any_thread() or elsewhere
        if elsewhere:
            # Before the shutdown: an asyncio socket still open when its context is
            # shut down leaves its loop's waits pending for ever.
            self._wait_released(
                min(deadline, wallclock.monotonic() + timeout / 2), asyncio_only=True
            )
        if not self._owns_context:
            self._stop_authenticator()
            self._stop_connection_log(deadline)
            return
        # Before the shutdown: the log's thread reads the closed sockets' last events,
        # then closes its monitor sockets itself (they are its alone).
        self._stop_connection_log(deadline)
        shut_down = shutdown_context(self._ctx)
        # A log thread still reading (no time was left) ends at once on the shutdown:
        # let it close its own sockets before the raw sockets' step could.
        self._stop_connection_log(wallclock.monotonic() + CLOSE_TIMEOUT)
        released = self._wait_released(deadline)
        # After the sockets (no CURVE server outlives its handler), before the raw
        # sockets: the handler's socket is one, and its thread alone may close it.
        self._stop_authenticator()
        self._close_raw_sockets(wallclock.monotonic() + (RAW_SOCKET_GRACE if released else 0.0))
        if released:
            self._ctx.term()
        else:
            self._leave_to_last_socket(shut_down)

    def _stop_connection_log(self, deadline: float) -> None:
        if self._connlog is not None:
            self._connlog.close(max(0.0, deadline - wallclock.monotonic()))

    @property
    def connection_log(self) -> ConnectionLog | None:
        """The network's connection log while ``log_connections`` is on, else None."""
        return self._connlog

    def _wait_released(self, deadline: float, *, asyncio_only: bool = False) -> bool:
        """Wait until the network's sockets are all closed; False if ``deadline`` passed."""
        with self._lock:
            while True:
                left = [
                    s
                    for s in self._sockets.values()
                    if not (asyncio_only and isinstance(s, BlockingSocket))
                ]
                remaining = deadline - wallclock.monotonic()
                if not left or remaining <= 0:
                    return not left
                self._released.wait(remaining)

    def _leave_to_last_socket(self, shut_down: bool) -> None:
        with self._lock:
            left = [repr(s) for s in self._sockets.values()]
            self._terminate_when_released = bool(left)
        if not left:  # closed just now
            self._ctx.term()
            return
        why = "" if shut_down else " (zmq_ctx_shutdown is not reachable on this platform)"
        warnings.warn(
            f"ZmqNetwork {self._name!r} closed, but {len(left)} socket(s) are still in "
            f"use by other threads{why}: {', '.join(left)}; the context will be "
            "terminated when they are closed",
            RuntimeWarning,
            stacklevel=4,  # the caller of close()
        )

    def _close_raw_sockets(self, deadline: float) -> None:
        """Close sockets made directly from :attr:`context`, after a grace for their threads.

        After the shutdown, a call blocked on one of them has returned ETERM; its
        thread may close it (pyzmq then forgets it). Those still open by
        ``deadline`` are closed here, with linger 0.
        """
        with self._lock:  # never one of the network's own, left to the thread using it
            own = {
                id(s.zmq_socket) for s in self._sockets.values() if isinstance(s, BlockingSocket)
            }
        while True:
            raw = [
                s
                for s in list(self._ctx._sockets)
                if s is not None and not s.closed and id(s) not in own
            ]
            if not raw or wallclock.monotonic() >= deadline:
                break
            time.sleep(0.005)
        for sock in raw:
            sock.close(linger=0)

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"{len(self._sockets)} sockets"
        return f"<ZmqNetwork {self._name!r} {state}>"
