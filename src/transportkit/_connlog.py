"""The connection log's levels and line format, shared by both backends.

Each backend has its logger (``transportkit.zmq_backend.connections`` and
``transportkit.sim_backend.connections``) and turns its monitor events into calls of
:func:`log_event`; the levels, the rate limit and the wording are here so that both
backends write the same lines for the same events. Documented for users in
:mod:`transportkit.zmq_backend.connections`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Final

__all__ = ["EVENT_LEVELS", "LOGGED_EVENTS", "MAX_KEYS", "log_event"]

MAX_KEYS: Final = 1024
"""Keys (event, socket, endpoint) a connection log's rate limiter keeps state for (a
few ints each); past it, new keys share one, as in :class:`RateLimitedLog`."""

EVENT_LEVELS: Final[Mapping[str, int]] = {
    "CONNECTED": logging.INFO,
    "ACCEPTED": logging.INFO,
    "DISCONNECTED": logging.WARNING,
    "CONNECT_RETRIED": logging.WARNING,
    "HANDSHAKE_FAILED_NO_DETAIL": logging.WARNING,
    "HANDSHAKE_FAILED_PROTOCOL": logging.WARNING,
    "HANDSHAKE_FAILED_AUTH": logging.WARNING,
    "ACCEPT_FAILED": logging.WARNING,
    "BIND_FAILED": logging.WARNING,
    "CLOSE_FAILED": logging.WARNING,
    "CLOSED": logging.DEBUG,
    "LISTENING": logging.DEBUG,
    "CONNECT_DELAYED": logging.DEBUG,
    "HANDSHAKE_SUCCEEDED": logging.DEBUG,
}
"""The level each monitor event is logged at; events not listed (``MONITOR_STOPPED``,
unknown ones) are not logged."""

LOGGED_EVENTS: Final = frozenset(EVENT_LEVELS)


def _detail(event: str, value: int) -> str:
    if event == "CONNECT_RETRIED":
        return f" retry_ms={value}"
    if event.startswith("HANDSHAKE_FAILED") or event.endswith("_FAILED"):
        return f" error={value}"  # an errno, or a ZAP status code (400 refused)
    return ""


def log_event(
    log: Callable[..., bool],
    *,
    event: str,
    kind: str,
    socket: str,
    endpoint: str,
    peer: str | None,
    value: int,
) -> bool:
    """Write one line for a monitor event, rate-limited per event, socket and endpoint.

    The line: ``EVENT KIND SOCKET endpoint=ENDPOINT peer=PEER`` (``peer=-`` when not
    known), then ``retry_ms=N`` for ``CONNECT_RETRIED`` or ``error=N`` for a failure.
    The record's ``extra`` fields: ``event``, ``socket_kind``, ``socket``,
    ``endpoint``, ``peer``, ``value``.

    Args:
        log: ``limited``-shaped: ``log(level, key, msg, *args, extra=...) -> bool``.
        event: The libzmq event name.
        kind: The socket kind (``DEALER``...).
        socket: The socket's name.
        endpoint: The endpoint of the event.
        peer: The peer's address, where known.
        value: libzmq's event value.

    Returns:
        Whether a line was written (False: not a logged event, its level is off, or
        the rate limit suppressed it).
    """
    level = EVENT_LEVELS.get(event)
    if level is None:
        return False
    return log(
        level,
        f"{event} {socket} {endpoint}",
        "%s %s %s endpoint=%s peer=%s%s",
        event,
        kind,
        socket,
        endpoint,
        peer or "-",
        _detail(event, value),
        extra={
            "event": event,
            "socket_kind": kind,
            "socket": socket,
            "endpoint": endpoint,
            "peer": peer,
            "value": value,
        },
    )
