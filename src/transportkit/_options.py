"""Typed, validated socket options, with presets for trading systems.

Option names and units are libzmq's (``sndhwm``, ``reconnect_ivl`` in milliseconds, -1 for
"infinite" or "OS default"), so the ZeroMQ documentation applies as written. One default
differs from libzmq on purpose: ``linger`` is 0, so closing a socket never hangs a process
on unsent messages (libzmq's -1 is a classic cause of hangs at shutdown). Set it to a
positive number of milliseconds, or -1, when queued messages must outlive ``close()``.
"""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from transportkit._curve import curve_public, key_z85
from transportkit._errors import OptionError, UnknownOptionError
from transportkit._kinds import SocketKind

__all__ = [
    "HIGH_THROUGHPUT",
    "LOW_LATENCY",
    "RELIABLE_REQUEST_REPLY",
    "SocketOptions",
]

_INT32_MAX: Final = 2**31 - 1
_CONFLATE_KINDS: Final = frozenset(
    {SocketKind.PUB, SocketKind.SUB, SocketKind.PUSH, SocketKind.PULL, SocketKind.DEALER}
)
_XPUB_OPTIONS: Final = (
    "xpub_verbose",
    "xpub_verboser",
    "xpub_nodrop",
    "xpub_manual",
    "xpub_welcome_msg",
)


def _int_field(default: int, minimum: int, doc: str) -> Any:
    return field(default=default, metadata={"min": minimum, "doc": doc})


@dataclass(frozen=True, kw_only=True, slots=True)
class SocketOptions:
    """Options of one socket; immutable, validated on construction.

    Construct with keywords (``SocketOptions(sndhwm=10_000, linger=0)``), derive with
    :meth:`replace`, or load from plain data with :meth:`from_mapping`. Every invalid
    value raises :class:`~transportkit.OptionError` naming the option and the problem;
    an unknown name (``SocketOptions(sndhvm=1)``), in any of the three, raises
    :class:`~transportkit.UnknownOptionError` (an OptionError and a TypeError) that
    suggests the closest known one ("did you mean 'sndhwm'?").

    Attributes:
        sndhwm: Messages queued per outgoing pipe before the socket's HWM action
            (drop for PUB/ROUTER, block for PUSH/DEALER/REQ/PAIR). 0 means unlimited.
        rcvhwm: Messages queued per incoming pipe. 0 means unlimited.
        linger: Milliseconds unsent messages survive ``close()``; 0 discards them, -1
            waits for ever (transportkit's default is 0, see the module docstring).
            Over an established inproc connection nothing is unsent: what was sent is
            in the pipe and stays readable by the peer whatever the linger (libzmq).
        sndtimeo: Milliseconds a blocking send waits before raising
            :class:`~transportkit.Timeout`; -1 waits for ever.
        rcvtimeo: Milliseconds a receive without an explicit timeout waits; -1 for ever.
        reconnect_ivl: Milliseconds before a connecting socket retries; -1 never retries
            (nor does 0): a dropped connection then ends its pipe and what was queued
            to it, and sends no longer go there. inproc never reconnects, whatever
            this says (libzmq): once the binder closes, only ``connect()`` again makes
            a new connection.
        reconnect_ivl_max: Upper bound of the doubling back-off; 0 means no back-off.
        heartbeat_ivl: Milliseconds between ZMTP PINGs; 0 disables heartbeats.
        heartbeat_ttl: Milliseconds the peer should wait for our traffic (0 = unset).
        heartbeat_timeout: Milliseconds without traffic before the connection is
            declared dead; -1 means "same as heartbeat_ivl".
        tcp_keepalive: -1 leaves the OS default, 0 disables, 1 enables SO_KEEPALIVE.
        tcp_keepalive_idle: Seconds of idleness before the first probe (-1 = OS).
        tcp_keepalive_cnt: Failed probes before the connection is dropped (-1 = OS).
        tcp_keepalive_intvl: Seconds between probes (-1 = OS).
        conflate: Keep only the last message (PUB, SUB, PUSH, PULL, DEALER only). A
            conflating pipe holds one *frame*, so conflate is for single-frame
            messages: this socket's own multipart sends are refused
            (:class:`~transportkit.FrameError`) on both backends, but nothing stops a
            peer that does not conflate from sending it ``[a, b, c]``, which arrives
            as ``[c]`` with no error on either side (libzmq 4.3; the sim counts each
            such message in the receiver's ``stats.truncated``, the zmq backend
            cannot see it and reports None). Over inproc the pipe conflates as the
            *connecting* socket says, in both directions: a binding socket's conflate
            has no effect on inproc connections (libzmq 4.3 makes the pipe with the
            connecter's options; both backends behave so). libzmq also conflates a
            SUB's subscription commands: give a conflating SUB exactly one
            subscription, before it connects (the sim backend models the loss).
        immediate: Queue only to completed connections (no queueing to a peer that
            is not connected yet), over ipc and tcp. Over inproc it has no effect, as
            in libzmq 4.3: the pipe exists from ``connect()`` on, so a PUSH to a name
            nobody bound yet queues up to SNDHWM messages, which a later binder gets.
        router_mandatory: A ROUTER raises :class:`~transportkit.HostUnreachableError`
            for an unknown routing id (and would-block at the HWM) instead of dropping.
        maxmsgsize: Largest inbound *frame* in bytes, over ipc and tcp; -1 for no
            limit. As libzmq applies it: to each frame, not to a message's total (a
            multipart message of small frames passes whatever its size), and never
            over inproc. A larger frame is no error for anyone: the peer's send
            succeeds; this socket drops the connection it came on (a ZMTP protocol
            error), losing that message and whatever followed it on the wire, and
            both sides' monitors report ``DISCONNECTED`` (no ``HANDSHAKE_FAILED_*``).
            A connecting sender reconnects after ``reconnect_ivl`` and sends what it
            still had queued; if this socket connected, it does not reconnect to that
            endpoint (libzmq ends the session), and the binding sender drops its
            queue to it. Only the sim counts the lost message (``stats.dropped`` of
            this socket); on the zmq backend, where ``stats.dropped`` is None, a
            ``DISCONNECTED`` event on this socket's monitor is the only sign.
        routing_id: Identity this socket presents to a ROUTER peer: 1 to 255 bytes,
            not starting with a zero byte (those are reserved for generated ids).
        req_relaxed: A REQ may send a new request before the reply to the last one.
        req_correlate: A REQ tags requests with an id and drops replies that do not match.
        sndbuf: ZMQ_SNDBUF: the kernel send buffer (SO_SNDBUF) in bytes of each tcp
            connection, or None (the default) for the OS default. libzmq applies it to
            tcp sockets only: ipc and inproc ignore it. Linux doubles the value for its
            bookkeeping, caps it at ``net.core.wmem_max`` and turns the send buffer's
            autotuning off for that socket (by default it grows up to
            ``net.ipv4.tcp_wmem``'s maximum, 4 MiB). 0 asks for the kernel's minimum.
            The sim backend models these buffers (docs/simulator.md, "Kernel socket buffers"):
            on tcp a bigger buffer lets more messages wait beyond the two HWMs.
        rcvbuf: ZMQ_RCVBUF: the kernel receive buffer (SO_RCVBUF) in bytes of each tcp
            connection, or None for the OS default (``net.ipv4.tcp_rmem``'s default,
            128 KiB, autotuned). The same rules as ``sndbuf``: tcp only, doubled,
            capped at ``net.core.rmem_max``, 0 for the minimum.
        curve_server: This socket is a CURVE server (RFC 26): it needs
            ``curve_secretkey``; clients must know its public key. Its network's
            authenticator (:meth:`~transportkit.Network.start_authenticator`), if one
            runs, decides which clients get in. Applies to ipc and tcp; inproc is
            never encrypted (libzmq).
        curve_secretkey: This socket's CURVE secret key: 40 Z85 characters or 32 raw
            bytes (stored as Z85 bytes). Never shown: not in the options' ``repr``,
            an error message, a log line or the sim's trace.
        curve_publickey: This socket's CURVE public key (Z85 or raw). Optional: it is
            derived from ``curve_secretkey`` when left out, and must match it when
            given.
        curve_serverkey: On a CURVE client, the server's public key (Z85 or raw).
            Setting it (with ``curve_secretkey``) makes this socket a CURVE client; a
            client whose server key is wrong never completes a handshake.
        zap_domain: The ZAP domain (ZMQ_ZAP_DOMAIN) a server socket asks its
            network's authenticator about (a CURVE server always asks; a plaintext
            socket asks, about the peer's address only, when this is set); an
            authenticator for domain ``"*"`` answers every domain, one for another
            domain refuses the rest (``denied_key``). At most 254 characters.
        tcp_nodelay: Always True. libzmq sets TCP_NODELAY on every TCP connection and
            offers no way to clear it; this field exists so that asking for False
            fails loudly instead of being silently ignored.
        xpub_verbose: ZMQ_XPUB_VERBOSE (XPUB only): pass every subscription message up
            to the application, not only the first one of each topic. Unsubscriptions
            still come only when a topic's last subscriber leaves.
        xpub_verboser: ZMQ_XPUB_VERBOSER (XPUB only): pass every subscription and
            every unsubscription, including those of a subscriber that goes away
            (it implies ``xpub_verbose``, as libzmq's option sets both).
        xpub_nodrop: ZMQ_XPUB_NODROP (XPUB only): at a subscriber's SNDHWM, do not
            drop: ``send`` waits (up to ``sndtimeo``, then
            :class:`~transportkit.Timeout`) and ``try_send`` raises
            :class:`~transportkit.WouldBlock`, and the message goes to no subscriber
            until every matching one has room. A subscriber that stops reading then
            stalls the publisher: pair it with a finite ``sndtimeo``. On the zmq
            backend a waiting ``send`` tries again every millisecond (libzmq's XPUB
            always reports that it can send, so there is no readiness to wait for).
        xpub_manual: ZMQ_XPUB_MANUAL (XPUB only): subscriptions are the application's
            to apply. Every (un)subscription message is passed up (as with
            ``xpub_verboser``) and changes nothing by itself; after receiving one,
            :meth:`~transportkit.XPublisher.subscribe` and ``unsubscribe`` set what the
            subscriber it came from gets. When that subscriber goes, the XPUB receives
            an unsubscription for each topic it had asked for.
        xpub_welcome_msg: ZMQ_XPUB_WELCOME_MSG (XPUB only): a frame sent to each new
            subscriber when it connects, before anything else and whatever it
            subscribed to (a SUB still filters it: it must subscribe to a prefix of
            it to see it). None (the default) sends nothing; it must not be empty.
    """

    sndhwm: int = _int_field(1000, 0, "send high-water mark")
    rcvhwm: int = _int_field(1000, 0, "receive high-water mark")
    linger: int = _int_field(0, -1, "linger period (ms)")
    sndtimeo: int = _int_field(-1, -1, "send timeout (ms)")
    rcvtimeo: int = _int_field(-1, -1, "receive timeout (ms)")
    reconnect_ivl: int = _int_field(100, -1, "reconnect interval (ms)")
    reconnect_ivl_max: int = _int_field(0, 0, "maximum reconnect interval (ms)")
    heartbeat_ivl: int = _int_field(0, 0, "heartbeat interval (ms)")
    heartbeat_ttl: int = _int_field(0, 0, "heartbeat TTL (ms)")
    heartbeat_timeout: int = _int_field(-1, -1, "heartbeat timeout (ms)")
    tcp_keepalive: int = _int_field(-1, -1, "TCP keepalive switch")
    tcp_keepalive_idle: int = _int_field(-1, -1, "TCP keepalive idle (s)")
    tcp_keepalive_cnt: int = _int_field(-1, -1, "TCP keepalive probe count")
    tcp_keepalive_intvl: int = _int_field(-1, -1, "TCP keepalive interval (s)")
    conflate: bool = False
    immediate: bool = False
    router_mandatory: bool = False
    maxmsgsize: int = _int_field(-1, -1, "maximum message size (bytes)")
    routing_id: bytes | None = None
    req_relaxed: bool = False
    req_correlate: bool = False
    tcp_nodelay: bool = True
    sndbuf: int | None = None
    rcvbuf: int | None = None
    curve_server: bool = False
    curve_secretkey: bytes | None = field(default=None, repr=False)
    curve_publickey: bytes | None = None
    curve_serverkey: bytes | None = None
    zap_domain: str = ""
    xpub_verbose: bool = False
    xpub_verboser: bool = False
    xpub_nodrop: bool = False
    xpub_manual: bool = False
    xpub_welcome_msg: bytes | None = None

    def __new__(cls, *args: Any, **kwargs: Any) -> SocketOptions:
        # Runs before the generated __init__, so that an unknown keyword gets the same
        # suggestion as replace() and from_mapping() instead of Python's bare TypeError.
        _check_names(kwargs)
        return object.__new__(cls)

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if "min" in f.metadata:
                _check_int(f.name, value, f.metadata["min"])
            elif f.type in ("bool", bool) and not isinstance(value, bool):
                raise OptionError(
                    f"option {f.name!r} must be a bool, got {type(value).__name__} {value!r}"
                )
        for name in ("sndbuf", "rcvbuf"):
            size = getattr(self, name)
            if size is not None:
                _check_int(name, size, 0)
        if self.tcp_keepalive not in (-1, 0, 1):
            raise OptionError(
                f"option 'tcp_keepalive' must be -1 (OS default), 0 or 1, got {self.tcp_keepalive}"
            )
        if self.heartbeat_ttl > 6_553_599:
            raise OptionError(
                f"option 'heartbeat_ttl' must be at most 6553599 ms, got {self.heartbeat_ttl}"
            )
        if (
            self.reconnect_ivl_max
            and self.reconnect_ivl >= 0
            and self.reconnect_ivl_max < self.reconnect_ivl
        ):
            raise OptionError(
                "option 'reconnect_ivl_max' must be 0 (no back-off) or at least reconnect_ivl "
                f"({self.reconnect_ivl} ms), got {self.reconnect_ivl_max}"
            )
        if self.routing_id is not None:
            rid = self.routing_id
            if not isinstance(rid, bytes):
                raise OptionError(
                    f"option 'routing_id' must be bytes, got {type(rid).__name__} {rid!r}"
                )
            if not 1 <= len(rid) <= 255:
                raise OptionError(
                    f"option 'routing_id' must be 1 to 255 bytes long, got {len(rid)} bytes"
                )
            if rid[0] == 0:
                raise OptionError(
                    "option 'routing_id' must not start with a zero byte "
                    "(libzmq reserves those for generated ids)"
                )
        _check_curve(self)
        welcome = self.xpub_welcome_msg
        if welcome is not None:
            if not isinstance(welcome, bytes):
                raise OptionError(
                    "option 'xpub_welcome_msg' must be bytes or None, got "
                    f"{type(welcome).__name__} {welcome!r:.40}"
                )
            if not welcome:
                raise OptionError(
                    "option 'xpub_welcome_msg' must not be empty (libzmq sends no welcome "
                    "for an empty one): use None for no welcome message"
                )
        if self.tcp_nodelay is not True:
            raise OptionError(
                "option 'tcp_nodelay' cannot be turned off: libzmq always sets TCP_NODELAY "
                "on TCP connections and has no option to clear it"
            )

    @property
    def heartbeat_timeout_effective(self) -> int:
        """The heartbeat timeout in ms that applies (``heartbeat_ivl`` when unset)."""
        return self.heartbeat_ivl if self.heartbeat_timeout == -1 else self.heartbeat_timeout

    def replace(self, **changes: Any) -> SocketOptions:
        """Return a copy with ``changes`` applied.

        Raises:
            UnknownOptionError: A name in ``changes`` is not an option (an OptionError
                and a TypeError; the message suggests the closest name).
            OptionError: A value is invalid.
        """
        _check_names(changes)
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> SocketOptions:
        """Build options from plain data (a TOML table, say).

        Raises:
            UnknownOptionError: A key is not an option (the message suggests the
                closest name).
            OptionError: A value is invalid.
        """
        _check_names(values)
        return cls(**dict(values))

    def check_for(self, kind: SocketKind) -> None:
        """Raise OptionError if an option set here makes no sense for ``kind``."""
        if self.conflate and kind not in _CONFLATE_KINDS:
            raise OptionError(
                f"option 'conflate' is not supported on {kind.value} sockets "
                "(only PUB, SUB, PUSH, PULL and DEALER)"
            )
        if self.router_mandatory and kind is not SocketKind.ROUTER:
            raise OptionError(f"option 'router_mandatory' applies to ROUTER, not {kind.value}")
        if (self.req_relaxed or self.req_correlate) and kind is not SocketKind.REQ:
            name = "req_relaxed" if self.req_relaxed else "req_correlate"
            raise OptionError(f"option {name!r} applies to REQ, not {kind.value}")
        if kind is not SocketKind.XPUB:
            for name in _XPUB_OPTIONS:
                if getattr(self, name) not in (False, None):
                    raise OptionError(f"option {name!r} applies to XPUB, not {kind.value}")

    def changed(self) -> dict[str, Any]:
        """The options that differ from their defaults, by name."""
        default = _DEFAULTS
        return {
            f.name: getattr(self, f.name)
            for f in dataclasses.fields(self)
            if getattr(self, f.name) != getattr(default, f.name)
        }


def _check_curve(options: SocketOptions) -> None:
    """Normalise the CURVE keys to Z85 and refuse incomplete or contradictory sets."""
    for name in ("curve_secretkey", "curve_publickey", "curve_serverkey"):
        key = getattr(options, name)
        if key is not None:
            object.__setattr__(options, name, key_z85(name, key))
    secret, public = options.curve_secretkey, options.curve_publickey
    if public is not None and secret is None:
        raise OptionError("option 'curve_publickey' needs 'curve_secretkey' (the pair's secret)")
    if secret is not None:
        derived = curve_public(secret)
        if public is None:
            object.__setattr__(options, "curve_publickey", derived)
        elif public != derived:
            raise OptionError(
                "option 'curve_publickey' does not belong to 'curve_secretkey' "
                "(leave it out to derive it)"
            )
    if options.curve_server:
        if secret is None:
            raise OptionError("option 'curve_server' needs 'curve_secretkey'")
        if options.curve_serverkey is not None:
            raise OptionError(
                "option 'curve_serverkey' is for CURVE clients; a socket with "
                "'curve_server' set uses its own key pair"
            )
    elif secret is not None and options.curve_serverkey is None:
        raise OptionError(
            "a CURVE key pair without 'curve_server' makes a client, which needs "
            "'curve_serverkey' (the server's public key)"
        )
    elif options.curve_serverkey is not None and secret is None:
        raise OptionError("option 'curve_serverkey' needs 'curve_secretkey' (the client's keys)")
    if not isinstance(options.zap_domain, str):
        raise OptionError(f"option 'zap_domain' must be a str, got {options.zap_domain!r}")
    if len(options.zap_domain) > 254:
        raise OptionError("option 'zap_domain' must be at most 254 characters")


def _check_int(name: str, value: object, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise OptionError(f"option {name!r} must be an int, got {type(value).__name__} {value!r}")
    if value < minimum:
        hint = " (-1 means infinite/default)" if minimum == -1 else ""
        raise OptionError(f"option {name!r} must be >= {minimum}{hint}, got {value}")
    if value > _INT32_MAX:
        raise OptionError(f"option {name!r} must fit in 32 bits, got {value}")


_NAMES: Final = tuple(f.name for f in dataclasses.fields(SocketOptions))


def _check_names(values: Mapping[str, Any]) -> None:
    for name in values:
        if name not in _NAMES:
            close = difflib.get_close_matches(str(name), _NAMES, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            if name == "io_threads":
                hint = "; I/O threads are an option of the network, not of a socket"
            raise UnknownOptionError(f"unknown socket option {name!r}{hint}")


_DEFAULTS: Final = SocketOptions()

LOW_LATENCY: Final = SocketOptions(sndhwm=5000, rcvhwm=5000, linger=0)
"""A low-latency publisher/subscriber configuration: HWM 5000, linger 0."""

HIGH_THROUGHPUT: Final = SocketOptions(sndhwm=100_000, rcvhwm=100_000, linger=0)
"""Deep queues for bursts: HWMs of 100,000, linger 0."""

RELIABLE_REQUEST_REPLY: Final = SocketOptions(
    sndtimeo=100,
    rcvtimeo=100,
    linger=0,
    tcp_keepalive=1,
    tcp_keepalive_idle=60,
    tcp_keepalive_intvl=10,
    tcp_keepalive_cnt=3,
)
"""A requester that gives up quickly (100 ms send/receive timeouts, linger 0), with TCP
keepalive (idle 60 s, probe every 10 s, 3 probes), so a dead peer is noticed."""
