"""What every server pattern bounds, and the helpers they share to do it.

A server must never hold unbounded memory or time on behalf of one peer, and no
message a peer sends may end its loop. Every server pattern in this package follows
the same rules:

- **Message size.** It takes ``max_message_bytes`` (default
  :data:`DEFAULT_MAX_MESSAGE_BYTES`; None: no limit). A received message whose frames
  total more is dropped and counted (``stats.over_limit``). The same figure becomes the
  ``maxmsgsize`` of the sockets it *binds* to receive from untrusted peers, unless the
  caller's options set one: over ipc and tcp libzmq then refuses any *frame* larger
  than that and drops the peer's connection, so the bytes never reach the server at
  all (libzmq applies ``maxmsgsize`` per frame, and not over inproc; the in-process
  check covers both gaps). A socket that *connects* gets no ``maxmsgsize``: libzmq
  treats an oversized frame as a protocol error, and a connecting socket never
  reconnects after one, so a single large message from the peer would cut it off for
  good; it relies on the in-process check alone.
- **Queues.** Anything it keeps for a peer (queued requests, pending snapshots,
  per-symbol state) is bounded in count and, where entries vary in size, in bytes,
  with documented defaults; what arrives past a bound is refused and counted
  (``stats.over_limit``), never queued.
- **High-water marks.** No socket that a peer can fill has an unlimited HWM (0).
- **Time.** One slow or silent peer never delays the others: sends to one peer do not
  wait in the loop that serves everyone.
- **Bad input.** A message that follows no protocol is counted
  (``stats.malformed``) and dropped, or answered with the protocol's error reply
  where it has one; a handler that raises or returns something that is not a message
  is counted (``stats.handler_errors``) and the loop goes on.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

from transportkit._options import SocketOptions

__all__ = [
    "DEFAULT_MAX_MESSAGE_BYTES",
    "bounded_options",
    "check_bound",
    "check_finite_hwm",
    "check_message_limit",
    "message_bytes",
    "too_large",
]

DEFAULT_MAX_MESSAGE_BYTES: Final = 1 << 20
"""The largest inbound message (all frames, bytes) a server pattern accepts by default.

1 MiB: orders, quotes, market-data updates and their envelopes are a few hundred
bytes; a peer that sends more than this is either broken or hostile.
"""


def message_bytes(frames: Sequence[bytes]) -> int:
    """The total size of a message's frames, in bytes."""
    return sum(len(frame) for frame in frames)


def too_large(frames: Sequence[bytes], limit: int | None) -> bool:
    """Whether ``frames`` is over ``limit`` bytes in all (never, when ``limit`` is None)."""
    return limit is not None and message_bytes(frames) > limit


def check_message_limit(value: object, name: str = "max_message_bytes") -> int | None:
    """Validate a ``max_message_bytes``-style argument: an int >= 1, or None for no limit.

    Raises:
        ValueError: It is not None and not an int >= 1.
    """
    if value is None:
        return None
    return check_bound(name, value)


def check_bound(name: str, value: object, minimum: int = 1) -> int:
    """Validate a count or byte bound: an int (not a bool) of at least ``minimum``.

    Raises:
        ValueError: It is not such an int.
    """
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
    return value


def bounded_options(options: SocketOptions | None, max_message_bytes: int | None) -> SocketOptions:
    """The options of a socket that binds to receive from untrusted peers.

    Not for a socket that connects (see the module's rules): libzmq never reconnects
    it after a frame over its ``maxmsgsize``.

    ``maxmsgsize`` becomes ``max_message_bytes`` unless the caller's ``options`` already
    set a limit (anything but -1) or ``max_message_bytes`` is None.
    """
    opts = SocketOptions() if options is None else options
    if max_message_bytes is not None and opts.maxmsgsize < 0:
        return opts.replace(maxmsgsize=max_message_bytes)
    return opts


def check_finite_hwm(options: SocketOptions, name: str, *fields: str) -> None:
    """Refuse an unlimited (0) high-water mark on a socket that peers can fill.

    Raises:
        ValueError: One of ``fields`` of ``options`` is 0.
    """
    for field in fields:
        if getattr(options, field) == 0:
            raise ValueError(
                f"{name}: {field}=0 (unlimited) lets one peer make the server hold "
                "unbounded memory; give a finite high-water mark"
            )
