"""The wire of the simulated world: endpoints, connections, transmission, heartbeats.

:class:`Wire` keeps who is bound where and every socket's connects, makes and breaks
connections with libzmq's queue semantics, and moves messages over the links of the
:class:`~transportkit.sim_backend._topology.Topology` (per-pipe FIFO, HWMs, linger,
``maxmsgsize``). Sockets call it on the path of every message; the
:class:`~transportkit.sim_backend.Simulation` owns one and delegates to it.
"""

from __future__ import annotations

import errno
import itertools
import math
import random
from collections.abc import Callable, Mapping
from functools import partial
from heapq import heappush
from typing import TYPE_CHECKING, Any, Protocol

import simpy

from transportkit._endpoint import Endpoint
from transportkit._errors import AddressInUseError, EndpointError, UnsupportedError
from transportkit._kinds import PEERS, SocketKind
from transportkit.sim_backend import _auth, _kernel
from transportkit.sim_backend._loop import _NORMAL, IdleEvents, SimCall, schedule_call
from transportkit.sim_backend._pipes import Connection, Item, Peer
from transportkit.sim_backend._topology import Link, Topology
from transportkit.sim_backend._trace import TRACE_BATCH, Trace

if TYPE_CHECKING:
    from transportkit.sim_backend._auth import SimAuthenticator
    from transportkit.sim_backend._sockets import SimSocket

__all__ = ["Connecter", "Wire"]

_FIRST_EPHEMERAL_PORT = 49152
_LOCAL_HOSTS = frozenset({"*", "0.0.0.0", "127.0.0.1", "localhost", "::", "::1"})


def _secured(sock: SimSocket) -> bool:
    """Whether ``sock`` has CURVE options (a server, or a client with a server key)."""
    options = sock.options
    return options.curve_server or options.curve_serverkey is not None


def _zap_of(sock: SimSocket) -> SimAuthenticator | None:
    """The running authenticator a plaintext ``sock`` asks (it has a ``zap_domain``)."""
    if not sock.options.zap_domain or _secured(sock):
        return None
    auth = sock.node.authenticator
    return None if auth is None or auth.closed else auth


class _Handshake:
    """One secured handshake in progress (see :meth:`Wire._handshake`)."""

    __slots__ = ("connecter", "finished", "over", "succeeded", "target")

    def __init__(self, connecter: Connecter, target: SimSocket) -> None:
        self.connecter = connecter
        self.target = target
        self.over = False
        self.succeeded: list[SimSocket] = []
        self.finished: list[SimSocket] = []


def _peer_of(endpoint: str, other: SimSocket) -> str | None:
    """The peer address the connection log shows for ``other``'s end: its node's name
    on tcp (what the sim's ZAP handler is given), None elsewhere.
    """
    return other.node.name if endpoint.startswith("tcp://") else None


def _nameable(node: str) -> bool:
    """Whether a node's name can stand as the host of a tcp endpoint."""
    return bool(node) and not any(c.isspace() or c in "/[]" for c in node)


class Host(Protocol):
    """What the wire needs of a node: its sockets (the sim's ``Node`` is one)."""

    @property
    def sockets(self) -> dict[SimSocket, None]:
        """The node's live sockets, in creation order."""


class Connecter:
    """A socket's ``connect()`` to one endpoint: retries and reconnects with back-off."""

    __slots__ = ("active", "endpoint", "ivl", "key", "peer", "sock")

    def __init__(self, sock: SimSocket, endpoint: str, key: tuple[str, ...]) -> None:
        self.sock = sock
        self.endpoint = endpoint
        self.key = key
        self.peer: Peer | None = None
        self.active = True
        self.ivl = sock.options.reconnect_ivl


class Wire:
    """Endpoints, connections and the messages between simulated sockets.

    Args:
        env: The SimPy environment (virtual time and the event queue).
        rng: The simulation's RNG (latency samples, tie shuffling).
        trace: Where connects, deliveries and drops are recorded.
        topology: The links messages travel.
        nodes: The simulation's nodes by name (tcp hosts).
        idle: The count of idle events (retries that cannot succeed alone).
        shuffle_ties: Order simultaneous events by the seed (see ``Simulation``).
    """

    def __init__(
        self,
        env: simpy.Environment,
        rng: random.Random,
        trace: Trace,
        topology: Topology,
        *,
        nodes: Mapping[str, Host],
        idle: IdleEvents,
        shuffle_ties: bool,
    ) -> None:
        self.env = env
        self.rng = rng
        self.trace = trace
        self.topology = topology
        self.nodes = nodes
        self.shuffle_ties = shuffle_ties
        self._idle = idle
        self._bound: dict[tuple[str, ...], SimSocket] = {}
        self._inproc_waiting: dict[tuple[str, ...], list[Connecter]] = {}
        self._ports = itertools.count(_FIRST_EPHEMERAL_PORT)
        self.kernel_buffers = True
        """Model ipc/tcp kernel buffers and pipe notifications (``_kernel``)."""
        self.arrive = self._arrive
        """The function of every scheduled arrival (one bound method for all: a receiver
        recognizes its next arrival by it, see ``SimSocket.recv``)."""

    def _key(self, sock: SimSocket, ep: Endpoint) -> tuple[str, ...]:
        """Where ``ep`` is, seen from ``sock``: tcp by (host node, port), ipc by path
        (one filesystem for the whole world), inproc by (node, name).
        """
        if ep.transport in ("pgm", "epgm"):
            raise UnsupportedError(
                f"{ep}: the sim backend does not model {ep.transport} multicast yet; "
                "use PUB/SUB over tcp or ipc"
            )
        if ep.transport == "inproc":
            return ("inproc", sock.node.name, ep.address)
        if ep.transport == "ipc":
            return ("ipc", ep.address)
        host = sock.node.name if ep.host in _LOCAL_HOSTS else ep.host
        return ("tcp", host, str(ep.port))

    def bind(self, sock: SimSocket, ep: Endpoint) -> str:
        """Register ``sock`` at ``ep``; return the resolved endpoint.

        A tcp bind's host must be the socket's node (its name) or a local address
        (``*``, ``0.0.0.0``, ``::``, ``127.0.0.1``, ``localhost``, ``::1``): either way
        it listens on the port of its node, which every node reaches by the node's
        name. A wildcard port (``*`` or 0) gets a fresh port, and the endpoint
        returned names the node (``tcp://exchange:49152``) so that any node can
        connect to it.

        Raises:
            EndpointError: The host is another node or a remote address.
            AddressInUseError: That port of that node (or that ipc path, or that
                inproc name in that node) is bound already.
            UnsupportedError: pgm/epgm.
        """
        node = sock.node.name
        if ep.transport == "tcp":
            if ep.host not in _LOCAL_HOSTS and ep.host != node:
                raise EndpointError(
                    f"cannot bind {ep}: host {ep.host!r} is not this node "
                    f"({node!r}) nor a local address"
                )
            if ep.port is None:
                port = next(self._ports)
                while ("tcp", node, str(port)) in self._bound:
                    port = next(self._ports)
                host = node if _nameable(node) else ("0.0.0.0" if ep.host == "*" else ep.host)
                ep = Endpoint("tcp", f"{host}:{port}", host, port)
        key = self._key(sock, ep)
        if key in self._bound:
            raise AddressInUseError(f"cannot bind {ep}: address already in use")
        self._bound[key] = sock
        resolved = str(ep)
        sock.bound[resolved] = key
        sock.emit("LISTENING", resolved)
        for connecter in self._inproc_waiting.pop(key, []):
            if connecter.active:
                self._attempt(connecter)
        return resolved

    def unbind_all(self, sock: SimSocket) -> None:
        """Release every endpoint ``sock`` is bound to."""
        for key in sock.bound.values():
            assert isinstance(key, tuple)
            if self._bound.get(key) is sock:
                del self._bound[key]
        sock.bound.clear()

    def connect(self, sock: SimSocket, ep: Endpoint) -> None:
        """Start connecting ``sock`` to ``ep`` (completes later, retries on failure).

        Over inproc the pipe exists at once, bound or not and whatever ``immediate``
        says (libzmq makes it in ``connect()``): sends queue to it up to SNDHWM.
        """
        endpoint = str(ep)
        existing = sock.connecters.get(endpoint)
        if existing is not None and existing.active:
            return
        connecter = Connecter(sock, endpoint, self._key(sock, ep))
        sock.connecters[endpoint] = connecter
        inproc = ep.transport == "inproc"
        if inproc or not sock.options.immediate:
            connecter.peer = Peer(sock, endpoint, connecter=True, inproc=inproc)
            sock.peers.append(connecter.peer)
        if inproc:
            if not self._attempt(connecter):
                self._inproc_waiting.setdefault(connecter.key, []).append(connecter)
            return
        if not self._resolves(connecter):
            # libzmq resolves the host when it starts connecting: an unknown name fails
            # there and then (CONNECT_RETRIED, no CONNECT_DELAYED), and again at each
            # reconnect interval. connect() itself succeeds.
            self._later(0.0, partial(self._attempt, connecter))
            return
        sock.emit("CONNECT_DELAYED", endpoint)
        target = self._bound.get(connecter.key)
        node = target.node.name if target is not None else sock.node.name
        delay = self.topology.link(sock.node.name, node).latency.sample(self.rng)
        self._later(delay, partial(self._attempt, connecter))

    def disconnect(self, sock: SimSocket, endpoint: str) -> None:
        """Undo ``connect(endpoint)``: the connection and its queue go."""
        connecter = sock.connecters.pop(endpoint, None)
        if connecter is None:
            raise EndpointError(f"{sock.name} is not connected to {endpoint}")
        connecter.active = False
        peer = connecter.peer
        if peer is not None:
            if peer.conn is not None:
                self.break_connection(peer.conn)
            self._discard_peer(peer, "disconnect")

    def _attempt(self, connecter: Connecter) -> bool:
        sock = connecter.sock
        if not connecter.active or sock.destroyed:
            return False
        target = self._bound.get(connecter.key)
        inproc = connecter.key[0] == "inproc"
        failure = ""
        if not self._resolves(connecter):
            failure = f"unknown host {connecter.key[1]!r}"
        elif target is None or target.closed:
            failure = "nothing bound"
        elif target.kind not in PEERS[sock.kind]:
            failure = f"{sock.kind.value} cannot talk to {target.kind.value}"
            sock.emit("HANDSHAKE_FAILED_PROTOCOL", connecter.endpoint)
        elif not (target.admits(sock) and sock.admits(target)):
            failure = "refused by peer"
        elif not inproc and not (
            self.topology.link(sock.node.name, target.node.name).up
            and self.topology.link(target.node.name, sock.node.name).up
        ):
            failure = "partitioned"
        if not failure:
            assert target is not None
            if not inproc and (
                _secured(sock) or _secured(target) or _zap_of(sock) or _zap_of(target)
            ):
                self._handshake(connecter, target)
            else:
                self._establish(connecter, target)
            return True
        if inproc:
            if target is not None and not target.closed:
                self._inproc_refused(connecter, target, failure)
            return False
        self.trace.add(self.env.now, "connect-failed", sock.name, f"{connecter.endpoint} {failure}")
        peer = connecter.peer
        if sock.options.reconnect_ivl <= 0 and peer is not None and not peer.stranded:
            # No retry will come (libzmq: an interval of 0 or -1 never retries), yet
            # libzmq keeps the pipe and queues to it: count what it takes as lost.
            peer.stranded = True
            sock.drop(len(peer.out_q), "no-reconnect", f"queued to {peer.endpoint}")
        self._schedule_reconnect(connecter, after_failure=True)
        return False

    def _inproc_refused(self, connecter: Connecter, target: SimSocket, failure: str) -> None:
        """A bound inproc socket cannot take this connection (libzmq 4.3.5, measured).

        inproc has no handshake: a socket of a kind that cannot talk to this one, or a
        ROUTER that already has this routing id, still gets the pipe and never reads it
        (a PUSH to a PUB accepts SNDHWM + the PUB's RCVHWM sends, never delivered; a
        DEALER with a taken id keeps taking sends, never delivered, even after the
        first holder of the id is gone), so the connecter's peer is stranded: what it
        queues (up to its SNDHWM here) is counted as dropped, and it is not connected
        again. A PAIR that has its peer ends the new pipe, as a closing binder does.
        """
        sock = connecter.sock
        self.trace.add(self.env.now, "connect-failed", sock.name, f"{connecter.endpoint} {failure}")
        if target.kind is SocketKind.PAIR and target.kind in PEERS[sock.kind]:
            self._end_connecter(connecter)
            return
        connecter.active = False
        peer = connecter.peer
        if peer is not None and not peer.stranded:
            peer.stranded = True
            sock.drop(len(peer.out_q), "no-reconnect", f"queued to {peer.endpoint}")

    def _resolves(self, connecter: Connecter) -> bool:
        """Whether the host of a tcp connect names a node (other transports: True)."""
        key = connecter.key
        return key[0] != "tcp" or key[1] in self.nodes

    def _schedule_reconnect(self, connecter: Connecter, *, after_failure: bool) -> None:
        sock = connecter.sock
        opts = sock.options
        # libzmq retries only for a positive interval: 0, like -1, never retries.
        if opts.reconnect_ivl <= 0 or not connecter.active:
            return
        ivl = connecter.ivl
        sock.emit("CONNECT_RETRIED", connecter.endpoint, ivl)
        if opts.reconnect_ivl_max > 0:
            connecter.ivl = min(ivl * 2, opts.reconnect_ivl_max)
        # A retry after a failed attempt can only succeed if something else changes the
        # world first; alone, such retries cannot wake anyone (unless a monitor watches
        # them), so they do not keep a deadlocked run alive.
        idle = after_failure and not sock.monitors
        self._later(ivl / 1000, partial(self._attempt, connecter), idle=idle)

    def _establish(
        self, connecter: Connecter, target: SimSocket, *, handshaken: bool = False
    ) -> None:
        """Make the connection (both pipes); ``handshaken``: after a CURVE handshake,
        whose monitor events :meth:`_handshake` has reported already.
        """
        sock = connecter.sock
        a = connecter.peer
        if a is None:
            a = connecter.peer = Peer(sock, connecter.endpoint, connecter=True)
            sock.peers.append(a)
        inproc = connecter.key[0] == "inproc"
        b = Peer(target, connecter.endpoint, connecter=False, inproc=inproc)
        if inproc:
            # libzmq's connecter makes an inproc pipe with its own options: its
            # conflate is the pipe's, both ways, and the binder's has no effect.
            b.conflate = a.conflate = sock.conflate
        target.peers.append(b)
        link_ab = None if inproc else self.topology.link(sock.node.name, target.node.name)
        link_ba = None if inproc else self.topology.link(target.node.name, sock.node.name)
        conn = Connection(a, b, link_ab, link_ba)
        if not inproc and self.kernel_buffers:
            _kernel.attach(a, b, connecter.key[0])
        now = self.env.now
        a.remote, b.remote = b, a
        a.conn = b.conn = conn
        a.last_arrival = b.last_arrival = now
        a.routing_id = target.options.routing_id or sock.new_routing_id()
        b.routing_id = sock.options.routing_id or target.new_routing_id()
        connecter.ivl = sock.options.reconnect_ivl
        self.trace.add(now, "connect", sock.name, f"{target.name} via {connecter.endpoint}")
        if not handshaken:
            sock.emit("CONNECTED", connecter.endpoint, peer=_peer_of(connecter.endpoint, target))
            target.emit("ACCEPTED", connecter.endpoint, peer=_peer_of(connecter.endpoint, sock))
            sock.emit("HANDSHAKE_SUCCEEDED", connecter.endpoint)
            target.emit("HANDSHAKE_SUCCEEDED", connecter.endpoint)
        sock.attached(a)
        target.attached(b)
        self.pump(a)
        self.pump(b)

    # -- CURVE handshakes --------------------------------------------------------------

    def _handshake(self, connecter: Connecter, target: SimSocket) -> None:
        """Secure a connection that has just formed over ipc or tcp (one end at least
        has CURVE options, or a ``zap_domain`` and a running authenticator), as
        libzmq 4.3.5 does; what each failure reports was measured there.

        The connection forms as any other (``CONNECTED``/``ACCEPTED``, one link delay
        after ``connect()`` or the retry), then:

        - CURVE against NULL (plaintext), either way: the ZMTP greeting names the
          mechanisms, so both ends fail at once with ``HANDSHAKE_FAILED_PROTOCOL``
          (``MECHANISM_MISMATCH``), a protocol error (on real sockets the ends race:
          one may see the other close first, ``HANDSHAKE_FAILED_NO_DETAIL``, and a
          client retries until an attempt where it reads the mismatch; the sim
          models that attempt);
        - a CURVE client against a CURVE server: HELLO, WELCOME, INITIATE, READY, two
          round trips of the links between the nodes. The server opens HELLO only if
          the client's ``curve_serverkey`` is its public key (else
          ``HANDSHAKE_FAILED_PROTOCOL``, ``CRYPTOGRAPHIC``, on the server, a protocol
          error; the client sees the connection close: ``HANDSHAKE_FAILED_NO_DETAIL``,
          EPIPE, a connection error). At INITIATE the server's node's authenticator,
          if one runs, decides (no delay); a refusal is ``HANDSHAKE_FAILED_AUTH`` (400)
          on the server, sent as an ERROR command, and ``HANDSHAKE_FAILED_AUTH`` (400)
          on the client when it arrives, a protocol error there. Allowed (or no
          authenticator), the server reports ``HANDSHAKE_SUCCEEDED`` as it sends READY,
          and when READY arrives the client does and the connection is made (so a
          server's first message leaves one link delay later than in libzmq);
        - plaintext on both ends, one (or both) with a ``zap_domain`` and an
          authenticator running on its node: that end asks it about the other (the
          domain and address rules: no key), at once; a refusal is reported as for
          CURVE (``HANDSHAKE_FAILED_AUTH``, 400, on both ends, no retry: libzmq's
          usual outcome; it races there, and a client whose READY had not left
          when the ERROR came retries);
        - two CURVE clients fail when each gets the other's HELLO
          (``UNEXPECTED_COMMAND``, protocol errors); two CURVE servers wait for a HELLO
          until libzmq's default handshake interval (30 s) and fail with
          ``HANDSHAKE_FAILED_NO_DETAIL`` (EAGAIN), connection errors.

        An end that fails reports ``DISCONNECTED`` after its ``HANDSHAKE_FAILED_*``
        event. A connecting end retries after ``reconnect_ivl`` on a connection error
        (keeping its pipe and queue) and ends its session on a protocol error: no
        retry, its pipe and what it queued are gone (counted in ``stats.dropped``),
        ``disconnect()`` and ``connect()`` again still work; so a refused or plaintext
        client is not retried. A step waits while its link is partitioned or held; an
        end that closes or crashes during the handshake is noticed at the next step
        (``HANDSHAKE_FAILED_NO_DETAIL`` on the other end). Every failure is traced as
        ``handshake-failed`` with its reason, every decision as ``zap``.
        """
        sock = connecter.sock
        ep = connecter.endpoint
        sock.emit("CONNECTED", ep, peer=_peer_of(ep, target))
        target.emit("ACCEPTED", ep, peer=_peer_of(ep, sock))
        hs = _Handshake(connecter, target)
        mine, theirs = _auth.mechanism(sock.options), _auth.mechanism(target.options)
        self.trace.add(self.env.now, "handshake", sock.name, f"{ep} {mine} to {theirs}")
        up = self.topology.link(sock.node.name, target.node.name)
        transport = connecter.key[0]
        if mine == theirs == "NULL":
            # Plaintext, with a zap_domain and an authenticator on one end at least:
            # each such end asks about the other (no key: the domain and address
            # rules), folded into the connection's one link delay like the greeting.
            for asker, other in ((target, sock), (sock, target)):
                auth = _zap_of(asker)
                if auth is None:
                    continue
                address = _auth.peer_address(transport, other.node.name)
                decision = auth.check(domain=asker.options.zap_domain, address=address, key=None)
                self.trace.add(self.env.now, "zap", asker.name, f"{ep} {decision} {address!r}")
                if decision != "allowed":
                    self._hs_denied(hs, asker, other, decision)
                    return
            sock.emit("HANDSHAKE_SUCCEEDED", ep)
            target.emit("HANDSHAKE_SUCCEEDED", ep)
            hs.over = True
            self._establish(connecter, target, handshaken=True)
            return
        if "NULL" in (mine, theirs):
            reason = f"mechanism-mismatch {mine} to {theirs}"
            for end in (target, sock):
                self._hs_fail(
                    hs,
                    end,
                    "HANDSHAKE_FAILED_PROTOCOL",
                    _auth.PROTOCOL_ERROR_ZMTP_MECHANISM_MISMATCH,
                    reason,
                    protocol=True,
                )
            return
        if mine == theirs == "CURVE-client":

            def hellos() -> None:
                for end in (target, sock):
                    self._hs_fail(
                        hs,
                        end,
                        "HANDSHAKE_FAILED_PROTOCOL",
                        _auth.PROTOCOL_ERROR_ZMTP_UNEXPECTED_COMMAND,
                        "both-curve-clients",
                        protocol=True,
                    )

            self._hs_over(hs, up, hellos)
            return
        if mine == theirs == "CURVE-server":

            def expire() -> None:
                if self._hs_live(hs):
                    for end in (target, sock):
                        self._hs_fail(
                            hs,
                            end,
                            "HANDSHAKE_FAILED_NO_DETAIL",
                            errno.EAGAIN,
                            "both-curve-servers handshake timeout",
                            protocol=False,
                        )

            self._later(_auth.HANDSHAKE_IVL, expire)
            return
        client, server = (sock, target) if mine == "CURVE-client" else (target, sock)
        to_server = self.topology.link(client.node.name, server.node.name)
        to_client = self.topology.link(server.node.name, client.node.name)

        def ready() -> None:
            if not (target.admits(sock) and sock.admits(target)):
                self.trace.add(self.env.now, "connect-failed", sock.name, f"{ep} refused by peer")
                for end in (target, sock):
                    self._hs_fail(hs, end, None, 0, "refused by peer", protocol=False)
                return
            client.emit("HANDSHAKE_SUCCEEDED", ep)
            hs.over = True
            self._establish(connecter, target, handshaken=True)

        def initiate() -> None:
            auth = server.node.authenticator
            if auth is not None and not auth.closed:
                address = _auth.peer_address(transport, client.node.name)
                key = client.options.curve_publickey
                assert key is not None
                decision = auth.check(domain=server.options.zap_domain, address=address, key=key)
                self.trace.add(self.env.now, "zap", server.name, f"{ep} {decision} {address!r}")
                if decision != "allowed":
                    self._hs_denied(hs, server, client, decision)
                    return
            server.emit("HANDSHAKE_SUCCEEDED", ep)
            hs.succeeded.append(server)
            self._hs_over(hs, to_client, ready)

        def hello() -> None:
            if client.options.curve_serverkey != server.options.curve_publickey:
                self._hs_fail(
                    hs,
                    server,
                    "HANDSHAKE_FAILED_PROTOCOL",
                    _auth.PROTOCOL_ERROR_ZMTP_CRYPTOGRAPHIC,
                    "wrong-server-key",
                    protocol=True,
                )
                self._hs_over(
                    hs,
                    to_client,
                    partial(
                        self._hs_fail,
                        hs,
                        client,
                        "HANDSHAKE_FAILED_NO_DETAIL",
                        _auth.RESET_ERRNO,
                        "closed by the server (wrong server key)",
                        protocol=False,
                    ),
                    after_failure=True,
                )
                return
            self._hs_over(hs, to_client, partial(self._hs_over, hs, to_server, initiate))

        self._hs_over(hs, to_server, hello)

    def _hs_denied(
        self, hs: _Handshake, server: SimSocket, client: SimSocket, decision: str
    ) -> None:
        """The authenticator refused the client: ERROR to it, then it closes (ZAP
        status 400, or 500 when the policy failed to decide).
        """
        to_server = self.topology.link(client.node.name, server.node.name)
        to_client = self.topology.link(server.node.name, client.node.name)
        reason = f"zap {decision}"
        status = _auth.ZAP_INTERNAL_ERROR if decision == "handler_errors" else _auth.ZAP_DENIED
        self._hs_fail(hs, server, "HANDSHAKE_FAILED_AUTH", status, reason, protocol=None)

        def closed_by_client() -> None:
            self._hs_fail(hs, server, None, 0, "closed by the client", protocol=False)

        def error_arrives() -> None:
            self._hs_fail(hs, client, "HANDSHAKE_FAILED_AUTH", status, reason, protocol=True)
            self._hs_over(hs, to_server, closed_by_client, after_failure=True)

        self._hs_over(hs, to_client, error_arrives, after_failure=True)

    def _hs_over(
        self,
        hs: _Handshake,
        link: Link,
        step: Callable[[], object],
        *,
        after_failure: bool = False,
    ) -> None:
        """Run ``step`` when a handshake command sent now over ``link`` arrives (it
        waits while the link does not pass); skipped once the handshake is abandoned,
        and, ``after_failure``, it runs whatever happened to the ends meanwhile.
        """

        def arrive() -> None:
            if not link.passes:
                link.held.append(arrive)
                return
            if after_failure or self._hs_live(hs):
                step()

        self._later(link.latency.sample(self.rng), arrive)

    def _hs_live(self, hs: _Handshake) -> bool:
        """Whether both ends still take part; if one left (closed, crashed, or the
        connect was undone), the other fails once, as at a connection reset.
        """
        if hs.over:
            return False
        connecter, target = hs.connecter, hs.target
        sock = connecter.sock
        gone_c = (
            sock.destroyed
            or not connecter.active
            or sock.connecters.get(connecter.endpoint) is not connecter
        )
        gone_t = target.destroyed or target.closed
        if not (gone_c or gone_t):
            return True
        hs.over = True
        if gone_c and gone_t:
            return False
        end = target if gone_c else sock
        event = None if end in hs.succeeded else "HANDSHAKE_FAILED_NO_DETAIL"
        self._hs_fail(hs, end, event, errno.ECONNRESET, "peer gone", protocol=False)
        return False

    def _hs_fail(
        self,
        hs: _Handshake,
        end: SimSocket,
        event: str | None,
        value: int,
        reason: str,
        *,
        protocol: bool | None,
    ) -> None:
        """One end of a handshake fails: its monitor events, the trace, its session.

        ``protocol``: True for a protocol error (a connecting end does not retry),
        False for a connection error (it retries), None when the end only reports the
        failure now and learns the connection is closed later (a ZAP refusal's
        server, which waits for the client to close).
        """
        hs.over = True
        if end.destroyed or end in hs.finished:
            return
        ep = hs.connecter.endpoint
        now = self.env.now
        if event is not None:
            end.emit(event, ep, value)
            self.trace.add(now, "handshake-failed", end.name, f"{ep} {reason}")
        if protocol is None:
            return
        hs.finished.append(end)
        other = hs.target if end is hs.connecter.sock else hs.connecter.sock
        end.emit("DISCONNECTED", ep, peer=_peer_of(ep, other))
        connecter = hs.connecter
        if end is not connecter.sock:
            return  # an accepted connection has no pipe before its handshake succeeds
        if not connecter.active or end.connecters.get(connecter.endpoint) is not connecter:
            return  # the connect was undone meanwhile
        if protocol:
            # libzmq ends the session after a protocol error: no retry; its pipe and
            # queue go, and the endpoint stays known (disconnect() works).
            connecter.active = False
            peer = connecter.peer
            if peer is not None:
                self._discard_peer(peer, "handshake-failed")
            if end.closing and not any(p.out_q for p in end.peers):
                self.destroy(end, "linger-done")
        elif end.options.reconnect_ivl <= 0:
            self._end_connecter(connecter)
        else:
            self._schedule_reconnect(connecter, after_failure=True)

    def break_connection(self, conn: Connection) -> None:
        """Tear down a live connection with libzmq's asymmetric queue semantics."""
        if not conn.alive:
            return
        conn.alive = False
        a, b = conn.a, conn.b
        for peer in (a, b):
            sender = conn.other(peer).sock
            sender.drop(peer.in_flight, "disconnect", "in flight")
            peer.in_flight = 0
            _kernel.reset(peer)
            peer.remote = None
            peer.conn = None
        self.trace.add(self.env.now, "disconnect", a.sock.name, f"{b.sock.name} via {a.endpoint}")
        for peer in (a, b):
            sock = peer.sock
            if sock.destroyed:
                continue
            sock.detached(peer)
            sock.emit(
                "DISCONNECTED", peer.endpoint, peer=_peer_of(peer.endpoint, conn.other(peer).sock)
            )
            if peer.connecter:
                connecter = sock.connecters.get(peer.endpoint)
                if connecter is not None and connecter.peer is peer:
                    if peer.inproc or sock.options.reconnect_ivl <= 0:
                        self._end_connecter(connecter)
                    else:
                        self._schedule_reconnect(connecter, after_failure=False)
            else:
                self._discard_peer(peer, "disconnect")

    def _end_connecter(self, connecter: Connecter) -> None:
        """A connection that will never be made again: its pipe goes, as in libzmq.

        Over inproc (libzmq has no reconnect for it: even a new binder of the name is
        not connected to, until the application calls ``connect()`` again) and over
        ipc/tcp with ``reconnect_ivl`` of 0 or -1. What the socket had queued to it is
        lost and counted in its ``stats.dropped``; what it had received stays readable;
        sends no longer go there (PUSH, DEALER, REQ and PAIR block without another
        peer). The endpoint is forgotten, as libzmq forgets it (``disconnect()`` raises
        EndpointError, libzmq's ENOENT; ``connect()`` again starts afresh).
        """
        sock = connecter.sock
        connecter.active = False
        peer = connecter.peer
        if peer is not None:
            self._discard_peer(peer, "no-reconnect")
        if sock.connecters.get(connecter.endpoint) is connecter:
            del sock.connecters[connecter.endpoint]
        if sock.closing and not any(p.out_q for p in sock.peers):
            self.destroy(sock, "linger-done")

    def _discard_peer(self, peer: Peer, reason: str) -> None:
        """Remove ``peer`` from its socket; its outbound queue is lost, inbound drains."""
        sock = peer.sock
        peer.dead = True
        if not peer.stranded:  # a stranded peer's queue was counted as it was queued
            sock.drop(len(peer.out_q), reason, f"queued to {peer.endpoint}")
        peer.out_q.clear()
        if peer in sock.peers:
            sock.peers.remove(peer)
        sock.pipe_ended(peer)

    def close_socket(self, sock: SimSocket) -> None:
        """Close ``sock``: unbind now, keep sending queued messages for ``linger`` ms.

        While it lingers the socket keeps (re)connecting, as libzmq's sessions do, so a
        peer that appears in time still gets the queued messages.
        """
        self.unbind_all(sock)
        linger = sock.options.linger
        if linger == 0 or not any(p.out_q for p in sock.peers):
            self.destroy(sock, "close")
            return
        sock.closing = True
        if linger > 0:
            self._later(linger / 1000, partial(self.destroy, sock, "linger"))

    def destroy(self, sock: SimSocket, reason: str) -> None:
        if sock.destroyed:
            return
        sock.destroyed = True
        sock.closing = False
        sock.node.forget(sock)
        self.unbind_all(sock)
        for connecter in sock.connecters.values():
            connecter.active = False
        for waiting in self._inproc_waiting.values():
            waiting[:] = [c for c in waiting if c.sock is not sock]
        lost = 0
        now = self.env.now
        for peer in dict.fromkeys([*sock.peers, *sock.ready]):
            if peer.dead and not peer.in_q:
                continue
            conn = peer.conn
            if peer.out_q and peer.inproc and conn is not None and conn.alive and sock.node.alive:
                # An inproc pipe is one queue: what this socket wrote stays readable
                # by the peer, whatever the linger (libzmq only appends the pipe's end).
                # A crash takes the whole process, the peer included: nothing to hand.
                while peer.out_q:
                    self._transmit(peer, peer.out_q.popleft())
            lost += (0 if peer.stranded else len(peer.out_q)) + len(peer.in_q)
            peer.out_q.clear()
            peer.in_q.clear()
            peer.dead = True
            if conn is not None and conn.alive:
                link = conn.link_from(peer)
                when = now if link is None else self._arrival(peer, link)
                self._later_at(when, partial(self._reset, conn, link))
        sock.drop(lost, reason, "queued")
        sock.peers.clear()
        sock.ready.clear()
        for mon in list(sock.monitors):
            mon.close()
        self.trace.add(now, "closed", sock.name, reason)

    def _reset(self, conn: Connection, link: Link | None) -> None:
        """The peer learns that ``conn`` is gone, once ``link`` lets the news through."""
        if link is not None and not link.passes:
            link.held.append(partial(self._reset, conn, link))
            return
        self.break_connection(conn)

    def _connections_between(self, a: str, b: str) -> list[Connection]:
        found: list[Connection] = []
        for name in (a, b):
            other = b if name == a else a
            for sock in self.nodes[name].sockets:
                for peer in sock.peers:
                    conn = peer.conn
                    if (
                        conn is not None
                        and conn.alive
                        and conn.other(peer).sock.node.name == other
                        and conn not in found
                    ):
                        found.append(conn)
        return found

    def drop_connection(self, a: str, b: str, *, discard_queues: bool = False) -> int:
        """Break every live connection between nodes ``a`` and ``b``; return how many
        (see :meth:`Simulation.drop_connection`).
        """
        broken = 0
        for conn in self._connections_between(a, b):
            detail = "drop_connection" + (" discard_queues" if discard_queues else "")
            self.trace.add(self.env.now, "fault", f"{a}<->{b}", detail)
            connecter = conn.a
            self.break_connection(conn)
            if discard_queues:
                connecter.sock.drop(len(connecter.out_q), "disconnect", "queue discarded")
                connecter.out_q.clear()
            broken += 1
        return broken

    def watch_heartbeats(self, link: Link) -> None:
        epoch = link.epoch
        for conn in self._connections_between(link.src, link.dst):
            ivls = [
                (s.options.heartbeat_ivl, s.options.heartbeat_timeout_effective)
                for s in (conn.a.sock, conn.b.sock)
                if s.options.heartbeat_ivl > 0
            ]
            if not ivls:
                continue
            wait = min(ivl + timeout for ivl, timeout in ivls) / 1000

            def expire(conn: Connection = conn) -> None:
                if not link.up and link.epoch == epoch and conn.alive:
                    self.trace.add(self.env.now, "heartbeat-timeout", conn.a.sock.name, "")
                    self.break_connection(conn)

            self._later(wait, expire)

    # -- moving messages --------------------------------------------------------------

    def offer(self, peer: Peer, item: Item) -> None:
        """Hand a message to ``peer``: onto the wire if there is room, else queue it."""
        remote = peer.remote
        conn = peer.conn
        if conn is not None and not peer.out_q:
            assert remote is not None
            receiver = remote.sock
            hwm = receiver.rcvhwm
            if (
                hwm == 0
                or remote.conflate
                or len(remote.in_q) + remote.in_flight < hwm
                or (remote.kcap and _kernel.admit(remote, item[1]))
            ):
                link = conn.link_ab if peer is conn.a else conn.link_ba
                if link is None or self.shuffle_ties:
                    self._transmit(peer, item)
                    return
                # The path of every message: _transmit's usual case, inlined.
                remote.in_flight += 1
                lwm = peer.lwm
                if lwm:  # libzmq tells the sender what left its pipe every lwm messages
                    unseen = peer.unseen + 1
                    peer.unseen = 0 if unseen >= lwm else unseen
                env = self.env
                when = env._now + link.latency.sample(self.rng)
                if when < peer.last_arrival:  # noqa: PLR1730 (no max() call per message)
                    when = peer.last_arrival
                peer.last_arrival = when
                queue: list[Any] = env._queue
                heappush(
                    queue,
                    (
                        when,
                        _NORMAL,
                        next(env._eid),
                        SimCall((self.arrive, (conn, remote, item, link))),
                    ),
                )
                return
        if peer.conflate:
            peer.out_q.clear()
        peer.out_q.append(item)
        if peer.stranded:
            peer.sock.drop(1, "no-reconnect", f"m{item[0]} queued to {peer.endpoint}")

    def _has_room(self, peer: Peer) -> bool:
        """Whether the message at the head of ``peer.out_q`` can go onto the wire now:
        into the receiver's RCVHWM, or (ipc/tcp) into the kernel's buffer, booked.
        """
        remote = peer.remote
        assert remote is not None
        receiver = remote.sock
        hwm = receiver.rcvhwm
        return (
            hwm == 0
            or remote.conflate
            or len(remote.in_q) + remote.in_flight < hwm
            or bool(remote.kcap and _kernel.admit(remote, peer.out_q[0][1]))
        )

    def pump(self, peer: Peer) -> None:
        """Move queued messages of ``peer`` onto the wire while the receiver has room."""
        if peer.conn is None or not peer.out_q:
            return
        moved = False
        while peer.out_q and self._has_room(peer):
            self._transmit(peer, peer.out_q.popleft())
            moved = True
        sock = peer.sock
        if moved:
            sock.space()
            if sock.closing and not any(p.out_q for p in sock.peers):
                self.destroy(sock, "linger-done")

    def _transmit(self, peer: Peer, item: Item) -> None:
        conn = peer.conn
        assert conn is not None
        if peer is conn.a:
            remote, link = conn.b, conn.link_ab
        else:
            remote, link = conn.a, conn.link_ba
        remote.in_flight += 1
        if link is None:
            self._arrive(conn, remote, item, None)
            return
        if peer.lwm:  # libzmq tells the sender what left its pipe every lwm messages
            unseen = peer.unseen + 1
            peer.unseen = 0 if unseen >= peer.lwm else unseen
        if self.shuffle_ties:
            self._schedule_at(self._arrival(peer, link), self.arrive, conn, remote, item, link)
            return
        # The hot path of every message: _arrival and schedule_call, inlined.
        env = self.env
        when = env._now + link.latency.sample(self.rng)
        if when < peer.last_arrival:  # noqa: PLR1730 (no max() call per message)
            when = peer.last_arrival
        peer.last_arrival = when
        queue: list[Any] = env._queue
        heappush(
            queue,
            (when, _NORMAL, next(env._eid), SimCall((self.arrive, (conn, remote, item, link)))),
        )

    def _arrival(self, peer: Peer, link: Link) -> float:
        """When something sent now by ``peer`` over ``link`` arrives: never before what
        it sent earlier (a pipe is FIFO), strictly after it when ties are shuffled.
        """
        when = self.env._now + link.latency.sample(self.rng)
        last = peer.last_arrival
        if when < last or (self.shuffle_ties and when == last):
            when = math.nextafter(last, math.inf) if self.shuffle_ties else last
        peer.last_arrival = when
        return when

    def _schedule_at(self, at: float, fn: Callable[..., object], *args: Any) -> None:
        """Call ``fn(*args)`` at virtual time ``at``; ties ordered by the seed if asked."""
        if not self.shuffle_ties:
            schedule_call(self.env, at, fn, args)
            return
        priority: Any = self.rng.randrange(1 << 30)  # any int orders within a time
        schedule_call(self.env, at, fn, args, priority)

    def _arrive(self, conn: Connection, remote: Peer, item: Item, link: Link | None) -> None:
        if link is not None and not (link.up and not link.holding):
            link.held.append(partial(self._arrive, conn, remote, item, link))
            return
        if not conn.alive:
            return
        remote.in_flight -= 1
        receiver = remote.sock
        if remote.dead or receiver._closed:
            conn.other(remote).sock.drop(1, "peer-gone", f"m{item[0]}")
            return
        limit = receiver.maxmsgsize
        if limit >= 0 and link is not None and any(len(f) > limit for f in item[1]):
            self._refuse_oversized(conn, remote, item, limit)
            return
        if remote.conflate:
            # libzmq's conflate queue holds one frame: of a multipart message only the
            # last frame survives (and a SUB then filters on it); counted here.
            if len(item[1]) > 1:
                item = receiver.truncate(item)
            remote.in_q.clear()
        remote.in_q.append(item)
        pending = receiver.trace_pending  # Trace.add, inlined: the path of every message
        pending.append((self.env._now, "deliver", receiver.name, item[0]))
        if len(pending) >= TRACE_BATCH:
            self.trace.flush()
        if not receiver._plain_arrival:
            receiver.arrived(remote)
            return
        # SimSocket.arrived, inlined (the socket kinds that receive keep it).
        if not remote.queued:
            remote.queued = True
            receiver.ready.append(remote)
        waiters = receiver.recv_waiters
        if waiters:
            for fut in waiters:
                if not fut.done():
                    fut.set_result(True)
            waiters.clear()

    def _refuse_oversized(self, conn: Connection, remote: Peer, item: Item, limit: int) -> None:
        """A frame over the receiver's ``maxmsgsize`` arrived: libzmq 4.3's behaviour.

        Its decoder refuses the frame (a ZMTP protocol error): the message is lost,
        counted in the receiver's ``stats.dropped``, and the connection is dropped as
        :meth:`break_connection` models it (what was in flight behind it is lost,
        both sides' monitors report DISCONNECTED, a connecting sender reconnects and
        keeps its queue). A connecting receiver ends its session instead of
        reconnecting, as libzmq does after a protocol error: that connection is not
        made again (until the socket disconnects and connects), and what the
        receiver had queued to that peer is lost.
        """
        receiver = remote.sock
        largest = max(len(f) for f in item[1])
        receiver.drop(1, "maxmsgsize", f"m{item[0]} frame of {largest} bytes > {limit}")
        connecter = receiver.connecters.get(remote.endpoint) if remote.connecter else None
        if connecter is not None and connecter.peer is remote:
            connecter.active = False  # no reconnect after a protocol error
        else:
            connecter = None
        self.break_connection(conn)
        if connecter is not None:
            self._discard_peer(remote, "maxmsgsize")

    def send_subscription(self, peer: Peer, prefix: bytes, *, add: bool) -> None:
        """Carry a (un)subscription from a SUB's ``peer`` to the publisher's end.

        A conflating SUB conflates its subscription commands too, as libzmq does: a
        command still on its way when a newer one is sent is lost, and over inproc the
        publisher only picks up the newest pending command when it next sends.
        """
        conn = peer.conn
        assert conn is not None
        link = conn.link_from(peer)
        remote = conn.other(peer)
        conflated = peer.sock.conflate
        peer.sub_gen += 1
        generation = peer.sub_gen

        def apply(_event: object = None) -> None:
            if link is not None and not link.passes:
                link.held.append(apply)
                return
            if not conn.alive:
                return
            what = "subscribe" if add else "unsubscribe"
            if conflated and generation != peer.sub_gen:
                self.trace.add(self.env.now, "conflated", remote.sock.name, f"{what} {prefix!r}")
                return
            remote.sock.subscription(remote, prefix, add)
            self.trace.add(self.env.now, what, remote.sock.name, repr(prefix))

        if link is None:
            if conflated:
                remote.pending_command = apply
            else:
                apply()
            return
        self._later_at(self._arrival(peer, link), apply)

    def _later(self, delay: float, callback: Callable[[], object], *, idle: bool = False) -> None:
        """Call ``callback`` after ``delay`` virtual seconds (see :meth:`_later_at`)."""
        self._later_at(self.env._now + delay, callback, idle=idle)

    def _later_at(self, at: float, callback: Callable[[], object], *, idle: bool = False) -> None:
        """Call ``callback`` at virtual time ``at``.

        ``idle`` events (retries that cannot succeed on their own) do not count as
        pending work for deadlock detection.
        """
        if idle:
            self._idle.count += 1
            self._schedule_at(at, self._fire_idle, callback)
        else:
            self._schedule_at(at, callback)

    def _fire_idle(self, callback: Callable[[], object]) -> None:
        self._idle.count -= 1
        callback()
