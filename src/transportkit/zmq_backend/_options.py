"""Applying :class:`~transportkit.SocketOptions` to a pyzmq socket, and other shared
translations between transportkit's vocabulary and libzmq's.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Final, Protocol

import zmq

from transportkit._endpoint import parse_endpoint
from transportkit._errors import FrameError, OptionError, UnsupportedError
from transportkit._kinds import SocketKind
from transportkit._options import SocketOptions
from transportkit.zmq_backend._errors import mapped_errors

__all__ = [
    "NOT_SOCKOPTS",
    "SECRET_OPTIONS",
    "SOCKOPTS",
    "ZMQ_TYPES",
    "EndpointMap",
    "apply_options",
    "attach_endpoint",
    "check_conflatable",
    "check_endpoint",
    "check_topic",
    "timeout_ms",
]

ZMQ_TYPES: Final[dict[SocketKind, int]] = {kind: getattr(zmq, kind.value) for kind in SocketKind}
"""libzmq's socket type for each kind."""

SOCKOPTS: Final[dict[str, int]] = {
    "sndhwm": zmq.SNDHWM,
    "rcvhwm": zmq.RCVHWM,
    "linger": zmq.LINGER,
    "sndtimeo": zmq.SNDTIMEO,
    "rcvtimeo": zmq.RCVTIMEO,
    "reconnect_ivl": zmq.RECONNECT_IVL,
    "reconnect_ivl_max": zmq.RECONNECT_IVL_MAX,
    "heartbeat_ivl": zmq.HEARTBEAT_IVL,
    "heartbeat_ttl": zmq.HEARTBEAT_TTL,
    "heartbeat_timeout": zmq.HEARTBEAT_TIMEOUT,
    "tcp_keepalive": zmq.TCP_KEEPALIVE,
    "tcp_keepalive_idle": zmq.TCP_KEEPALIVE_IDLE,
    "tcp_keepalive_cnt": zmq.TCP_KEEPALIVE_CNT,
    "tcp_keepalive_intvl": zmq.TCP_KEEPALIVE_INTVL,
    "conflate": zmq.CONFLATE,
    "immediate": zmq.IMMEDIATE,
    "router_mandatory": zmq.ROUTER_MANDATORY,
    "maxmsgsize": zmq.MAXMSGSIZE,
    "routing_id": zmq.ROUTING_ID,
    "req_relaxed": zmq.REQ_RELAXED,
    "req_correlate": zmq.REQ_CORRELATE,
    "sndbuf": zmq.SNDBUF,
    "rcvbuf": zmq.RCVBUF,
    "curve_server": zmq.CURVE_SERVER,
    "curve_secretkey": zmq.CURVE_SECRETKEY,
    "curve_publickey": zmq.CURVE_PUBLICKEY,
    "curve_serverkey": zmq.CURVE_SERVERKEY,
    "zap_domain": zmq.ZAP_DOMAIN,
    "xpub_verbose": zmq.XPUB_VERBOSE,
    "xpub_verboser": zmq.XPUB_VERBOSER,
    "xpub_nodrop": zmq.XPUB_NODROP,
    "xpub_manual": zmq.XPUB_MANUAL,
    "xpub_welcome_msg": zmq.XPUB_WELCOME_MSG,
}
"""The libzmq socket option behind each :class:`~transportkit.SocketOptions` field."""

NOT_SOCKOPTS: Final = frozenset({"tcp_nodelay"})
"""Fields with no libzmq option (libzmq always sets TCP_NODELAY)."""
SECRET_OPTIONS: Final = frozenset({"curve_secretkey"})
"""Fields whose value an error message never shows."""


def apply_options(sock: zmq.Socket[object], options: SocketOptions, where: str) -> None:
    """Set on ``sock`` every option that differs from libzmq's default, and linger always.

    transportkit's defaults are libzmq's except ``linger`` (0 rather than -1), so the
    options that :meth:`SocketOptions.changed` reports, plus ``linger``, are exactly
    those that must be set.

    Raises:
        OptionError: libzmq refused a value (naming the option).
    """
    changes = options.changed()
    changes["linger"] = options.linger
    for name, value in changes.items():
        if name in NOT_SOCKOPTS:
            continue
        raw = int(value) if isinstance(value, bool) else value
        if isinstance(raw, str):
            raw = raw.encode("utf-8")
        try:
            sock.setsockopt(SOCKOPTS[name], raw)
        except zmq.ZMQError as exc:
            shown = "<secret>" if name in SECRET_OPTIONS else repr(value)
            raise OptionError(
                f"{where}: libzmq refused option {name!r} = {shown}: {exc.strerror}"
            ) from exc


class EndpointMap(Protocol):
    """Where a :class:`~transportkit.zmq_backend.ZmqNetwork`'s sockets really connect.

    Given to ``ZmqNetwork(endpoint_map=...)``, it sees every endpoint the network's
    sockets bind (as libzmq resolved it) and chooses the endpoint each connect (and
    the matching disconnect) really uses: the testing kit's fault proxy routes tcp
    connections between networks through itself this way. The sockets still report
    the endpoint they were given (``last_endpoint``). Its exceptions propagate from
    ``bind``/``connect``/``disconnect``.
    """

    def bound(self, endpoint: str) -> None:
        """A socket of the network bound ``endpoint`` (resolved: a real port)."""

    def connect(self, endpoint: str) -> str:
        """The endpoint to connect to (and disconnect from) for ``endpoint``."""


def attach_endpoint(
    sock: zmq.Socket[bytes],
    action: str,
    endpoint: str,
    where: str,
    endpoint_map: EndpointMap | None = None,
) -> str:
    """``sock.bind``/``connect``/``disconnect`` (``action``) with transportkit's checks
    and errors; return the endpoint, as libzmq resolved it for a bind
    (``tcp://127.0.0.1:*`` gets its port). With ``endpoint_map``, a connect or
    disconnect uses the endpoint it maps ``endpoint`` to, and a bind is reported to it.

    Raises:
        EndpointError: Malformed endpoint, or libzmq refused it.
        AddressInUseError: Something is already bound there.
        UnsupportedError: ``pgm``/``epgm`` on a libzmq built without OpenPGM.
    """
    check_endpoint(endpoint, where)
    target = endpoint
    if endpoint_map is not None and action != "bind":
        target = endpoint_map.connect(endpoint)
    with mapped_errors(where, f"{action} {endpoint}"):
        getattr(sock, action)(target)
        if action != "bind":
            return endpoint
        resolved = sock.getsockopt(zmq.LAST_ENDPOINT)
    text = resolved.decode() if isinstance(resolved, bytes) else ""
    if endpoint_map is not None:
        endpoint_map.bound(text or endpoint)
    return text or endpoint


def check_endpoint(endpoint: str, where: str) -> str:
    """Validate ``endpoint`` before libzmq sees it; return it unchanged.

    Raises:
        EndpointError: It is malformed (from :func:`transportkit.parse_endpoint`).
        UnsupportedError: It is ``pgm://``/``epgm://`` and this libzmq has no OpenPGM.
    """
    parsed = parse_endpoint(endpoint)
    if parsed.transport in ("pgm", "epgm") and not zmq.has("pgm"):
        raise UnsupportedError(
            f"{where}: cannot use {endpoint!r}: this pyzmq/libzmq was built without OpenPGM "
            "(PyPI wheels are), so pgm:// and epgm:// multicast are unavailable; use tcp:// "
            "or ipc:// (one PUB, many SUBs; the sim backend does not model multicast "
            "either)"
        )
    return endpoint


def timeout_ms(seconds: float) -> int:
    """Convert a timeout in seconds to libzmq milliseconds (-1 for ``math.inf``).

    Negative timeouts mean "do not wait" (0); fractions of a millisecond round up,
    so a tiny positive timeout still waits.

    Raises:
        ValueError: ``seconds`` is NaN.
    """
    if seconds == math.inf:
        return -1
    if math.isnan(seconds):
        raise ValueError("timeout must be a number of seconds or math.inf, got nan")
    if seconds <= 0:
        return 0
    return math.ceil(seconds * 1000)


def check_topic(prefix: object, where: str) -> None:
    """Raise FrameError unless ``prefix`` is a bytes subscription prefix."""
    if not isinstance(prefix, bytes):
        raise FrameError(
            f"{where}: a topic prefix must be bytes, got {type(prefix).__name__} {prefix!r:.40}"
            " (encode text explicitly, e.g. b'AAPL' or 'AAPL'.encode())"
        )


def check_conflatable(frames: Sequence[object], where: str) -> None:
    """Raise FrameError if ``frames`` is multipart (a ``conflate`` socket sends one frame)."""
    if isinstance(frames, Sequence) and len(frames) > 1:
        raise FrameError(
            f"{where}: a conflate socket keeps single-frame messages only, got "
            f"{len(frames)} frames (libzmq's CONFLATE does not support multipart)"
        )
