"""The Network: the one object trading code receives, and the maker of sockets."""

from __future__ import annotations

import abc
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, cast

from transportkit._closing import Closeable
from transportkit._errors import FrameError, OptionError, UnsupportedError
from transportkit._kinds import SocketKind
from transportkit._options import SocketOptions
from transportkit._socket import (
    Dealer,
    Pair,
    Publisher,
    Puller,
    Pusher,
    Requester,
    Router,
    Socket,
    Subscriber,
    Worker,
    XPublisher,
    XSubscriber,
    attach,
)

if TYPE_CHECKING:
    from transportkit.security import Authenticator, AuthPolicy

__all__ = ["Network"]

Endpoints = str | Iterable[str]


class Network(Closeable):
    """Makes sockets on one backend; trading code receives it and nothing else.

    Every factory takes ``bind=`` and/or ``connect=`` (one endpoint or several) and
    optional :class:`~transportkit.SocketOptions`. If a bind or connect fails, the new
    socket is closed before the error propagates, so nothing leaks.

    On the zmq backend a network is a process's ZeroMQ context; on the sim backend it
    is one simulated node (a process), and closing the network closes its sockets.
    """

    _socket_observers: tuple[Callable[[Socket], object], ...] = ()

    @property
    @abc.abstractmethod
    def name(self) -> str:
        """A name for reports and traces (a node name on the sim backend)."""

    @abc.abstractmethod
    def _open(self, kind: SocketKind, options: SocketOptions) -> Socket:
        """Create an unattached socket of ``kind`` (options already validated for it)."""

    @abc.abstractmethod
    def time_ns(self) -> int:
        """Nanoseconds for timestamps: wall-clock epoch time on real networks, virtual
        time in a simulation (trading code must use this, never ``time.time()``).
        """

    @abc.abstractmethod
    def close(self) -> None:
        """Close every socket made by this network, then the network. Idempotent."""

    def start_authenticator(self, policy: AuthPolicy | None = None) -> Authenticator:
        """Start this network's ZAP handler (RFC 27) with ``policy`` (default: allow any
        client that completes a CURVE handshake); closing the network stops it.

        One authenticator per network: a second call raises. Start it before the CURVE
        server sockets accept connections (handshakes before it runs are not
        authenticated, as with libzmq). Both backends implement it, decide with
        :meth:`AuthPolicy.decide <transportkit.security.AuthPolicy.decide>`, count in
        the same :class:`~transportkit.security.AuthStats` and log each refusal at
        WARNING.

        Raises:
            UnsupportedError: This backend has no authenticator (neither built-in
                backend raises it).
            ClosedError: The network is closed.
            OptionError: The network already has an authenticator.
        """
        raise UnsupportedError(f"{type(self).__name__} has no ZAP authenticator")

    def open_sockets(self) -> tuple[Socket, ...]:
        """The sockets this network made that are not closed, oldest first.

        A snapshot, safe to take from another thread (a metrics scrape does): a socket
        closed after it was taken stays in it. :mod:`transportkit.metrics` reads it on
        each scrape; both backends implement it.

        Raises:
            NotImplementedError: This network cannot list its sockets (the default, for
                a Network written outside transportkit).
        """
        raise NotImplementedError(f"{type(self).__name__} does not list its sockets")

    def add_socket_observer(self, observer: Callable[[Socket], object]) -> None:
        """Call ``observer(socket)`` with each socket the factories make from now on.

        It is called in the thread that makes the socket, once the socket is made and
        attached (a SUB before its ``bind``/``connect``), and must not raise. The zmq
        backend's blocking sockets are not announced (list them with
        ``open_blocking_sockets``). :mod:`transportkit.metrics` uses it to count the
        sockets that close between two scrapes.
        """
        self._socket_observers = (*self._socket_observers, observer)

    def remove_socket_observer(self, observer: Callable[[Socket], object]) -> None:
        """Stop calling ``observer`` (one not added is ignored)."""
        self._socket_observers = tuple(o for o in self._socket_observers if o is not observer)

    def socket(
        self,
        kind: SocketKind,
        *,
        bind: Endpoints = (),
        connect: Endpoints = (),
        options: SocketOptions | None = None,
    ) -> Socket:
        """Make a socket of any kind; the typed factories below are usually nicer."""
        opts = SocketOptions() if options is None else options
        if not isinstance(opts, SocketOptions):
            raise OptionError(f"options must be SocketOptions, got {type(opts).__name__}")
        opts.check_for(kind)
        sock = attach(self._open(kind, opts), bind, connect)
        for observer in self._socket_observers:
            observer(sock)
        return sock

    def _typed(
        self, kind: SocketKind, bind: Endpoints, connect: Endpoints, options: SocketOptions | None
    ) -> Socket:
        return self.socket(kind, bind=bind, connect=connect, options=options)

    def publisher(
        self, *, bind: Endpoints = (), connect: Endpoints = (), options: SocketOptions | None = None
    ) -> Publisher:
        """Make a PUB socket."""
        return cast(Publisher, self._typed(SocketKind.PUB, bind, connect, options))

    def subscriber(
        self,
        *,
        bind: Endpoints = (),
        connect: Endpoints = (),
        topics: Iterable[bytes] = (b"",),
        options: SocketOptions | None = None,
    ) -> Subscriber:
        """Make a SUB socket subscribed to ``topics`` (default: everything).

        Pass ``topics=()`` to start with no subscription.
        """
        prefixes = [topics] if isinstance(topics, (bytes, str)) else list(topics)
        for prefix in prefixes:
            if not isinstance(prefix, bytes):
                raise FrameError(f"topic must be bytes, got {type(prefix).__name__} {prefix!r}")
        sub = cast(Subscriber, self._typed(SocketKind.SUB, (), (), options))
        try:
            for prefix in prefixes:
                sub.subscribe(prefix)
        except BaseException:
            sub.close()
            raise
        return attach(sub, bind, connect)

    def requester(
        self, *, bind: Endpoints = (), connect: Endpoints = (), options: SocketOptions | None = None
    ) -> Requester:
        """Make a REQ socket."""
        return cast(Requester, self._typed(SocketKind.REQ, bind, connect, options))

    def worker(
        self, *, bind: Endpoints = (), connect: Endpoints = (), options: SocketOptions | None = None
    ) -> Worker:
        """Make a REP socket (the replying side of request/reply)."""
        return cast(Worker, self._typed(SocketKind.REP, bind, connect, options))

    def pusher(
        self, *, bind: Endpoints = (), connect: Endpoints = (), options: SocketOptions | None = None
    ) -> Pusher:
        """Make a PUSH socket."""
        return cast(Pusher, self._typed(SocketKind.PUSH, bind, connect, options))

    def puller(
        self, *, bind: Endpoints = (), connect: Endpoints = (), options: SocketOptions | None = None
    ) -> Puller:
        """Make a PULL socket."""
        return cast(Puller, self._typed(SocketKind.PULL, bind, connect, options))

    def pair(
        self, *, bind: Endpoints = (), connect: Endpoints = (), options: SocketOptions | None = None
    ) -> Pair:
        """Make a PAIR socket."""
        return cast(Pair, self._typed(SocketKind.PAIR, bind, connect, options))

    def dealer(
        self, *, bind: Endpoints = (), connect: Endpoints = (), options: SocketOptions | None = None
    ) -> Dealer:
        """Make a DEALER socket."""
        return cast(Dealer, self._typed(SocketKind.DEALER, bind, connect, options))

    def router(
        self, *, bind: Endpoints = (), connect: Endpoints = (), options: SocketOptions | None = None
    ) -> Router:
        """Make a ROUTER socket."""
        return cast(Router, self._typed(SocketKind.ROUTER, bind, connect, options))

    def xpublisher(
        self, *, bind: Endpoints = (), connect: Endpoints = (), options: SocketOptions | None = None
    ) -> XPublisher:
        """Make an XPUB socket: a publisher that receives its subscribers' subscriptions.

        Its options (``xpub_verbose``, ``xpub_verboser``, ``xpub_nodrop``, ``xpub_manual``,
        ``xpub_welcome_msg``) are applied before any bind or connect.

        Raises:
            OptionError: ``options`` is not SocketOptions, or does not suit XPUB.
            EndpointError: A bind or connect failed (the socket is closed first).
            ClosedError: The network is closed.
        """
        return cast(XPublisher, self._typed(SocketKind.XPUB, bind, connect, options))

    def xsubscriber(
        self,
        *,
        bind: Endpoints = (),
        connect: Endpoints = (),
        topics: Iterable[bytes] = (),
        options: SocketOptions | None = None,
    ) -> XSubscriber:
        """Make an XSUB socket subscribed to ``topics`` (default: none, as libzmq's XSUB
        starts; a forwarder passes its downstream subscribers' subscriptions on).

        The subscriptions are sent before any bind or connect, so every publisher it
        reaches gets them when the connection is made.

        Raises:
            FrameError: A topic is not bytes.
            OptionError: ``options`` is not SocketOptions, or does not suit XSUB.
            EndpointError: A bind or connect failed (the socket is closed first).
            ClosedError: The network is closed.
        """
        prefixes = [topics] if isinstance(topics, (bytes, str)) else list(topics)
        for prefix in prefixes:
            if not isinstance(prefix, bytes):
                raise FrameError(f"topic must be bytes, got {type(prefix).__name__} {prefix!r}")
        xsub = cast(XSubscriber, self._typed(SocketKind.XSUB, (), (), options))
        try:
            for prefix in prefixes:
                xsub.subscribe(prefix)
        except BaseException:
            xsub.close()
            raise
        return attach(xsub, bind, connect)
