"""The one place where pyzmq's errors become transportkit's.

Every ``zmq.ZMQError`` the backend catches goes through :func:`translate`, which picks
the transportkit error by errno and writes a message naming the socket, its endpoint
and the problem. Callers always chain: ``raise translate(...) from exc``.
"""

from __future__ import annotations

import errno
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Final

import zmq

from transportkit._errors import (
    AddressInUseError,
    ClosedError,
    EndpointError,
    FrameError,
    HostUnreachableError,
    StateError,
    Timeout,
    TransportError,
    UnsupportedError,
    WouldBlock,
)
from transportkit._socket import check_frames

__all__ = ["frame_error", "mapped_errors", "translate"]

_ENDPOINT_ACTIONS: Final = frozenset({"bind", "connect", "disconnect"})
_ENDPOINT_ERRNOS: Final = frozenset(
    {
        errno.EINVAL,
        errno.EPROTONOSUPPORT,
        errno.ENOENT,
        errno.ENODEV,
        errno.EADDRNOTAVAIL,
        errno.ENAMETOOLONG,
        errno.EACCES,
        zmq.ENOCOMPATPROTO,
    }
)
_CLOSED_ERRNOS: Final = frozenset({zmq.ETERM, errno.ENOTSOCK})


def translate(
    exc: zmq.ZMQError, where: str, action: str, *, nonblocking: bool = False
) -> TransportError:
    """Map a pyzmq error to the transportkit error that says whose fault it is.

    Args:
        exc: The error pyzmq raised.
        where: What failed, for the message: ``"PUSH socket (tcp://127.0.0.1:5555)"``.
        action: The operation, for the message: ``"send"``, ``"bind tcp://..."``.
            Its first word decides whether EINVAL/ENOENT mean a bad endpoint.
        nonblocking: The call was not allowed to wait, so EAGAIN means
            :class:`~transportkit.WouldBlock` rather than :class:`~transportkit.Timeout`.

    Returns:
        The error to raise (the caller chains it with ``from exc``).
    """
    code = exc.errno
    problem = exc.strerror
    message = f"{where}: {action} failed: {problem}"
    verb = action.split(" ", 1)[0]
    if code == errno.EAGAIN:
        if nonblocking:
            return WouldBlock(f"{where}: {action} would block (no peer ready or at the HWM)")
        return Timeout(f"{where}: {action} timed out")
    if code == zmq.EFSM:
        return StateError(
            f"{where}: {action} is not allowed in the socket's current state "
            "(REQ must alternate send/recv, REP recv/send)"
        )
    if code in _CLOSED_ERRNOS:
        return ClosedError(f"{where}: {action} failed: the socket or its network is closed")
    if code == errno.EHOSTUNREACH:
        return HostUnreachableError(
            f"{where}: {action} failed: no connected peer has that routing id"
        )
    if code == errno.EADDRINUSE:
        return AddressInUseError(f"{where}: {action} failed: address already in use")
    if code == errno.EMSGSIZE:
        return FrameError(f"{where}: {action} failed: message too large ({problem})")
    if verb in _ENDPOINT_ACTIONS and code in _ENDPOINT_ERRNOS:
        return EndpointError(message)
    if code == errno.ENOTSUP:
        return UnsupportedError(f"{where}: {action} is not supported by this socket kind")
    return TransportError(message)


@contextmanager
def mapped_errors(where: str, action: str, *, nonblocking: bool = False) -> Iterator[None]:
    """Translate pyzmq errors raised inside the block (for paths that are not hot)."""
    try:
        yield
    except zmq.ZMQError as exc:
        raise translate(exc, where, action, nonblocking=nonblocking) from exc


FRAME_ERRORS = (TypeError, IndexError, ValueError, BufferError)
"""What pyzmq or the accelerator raise for frames they cannot send (before sending any)."""


def frame_error(where: str, frames: object, exc: Exception) -> FrameError:
    """Explain why pyzmq refused ``frames`` (called only after it did).

    pyzmq checks every frame before sending any, so nothing was sent. The precise
    message comes from :func:`transportkit._socket.check_frames` where it finds the
    fault, else from pyzmq's own message.
    """
    try:
        check_frames(frames)
    except FrameError as found:
        return FrameError(f"{where}: cannot send: {found}")
    if isinstance(frames, Sequence) and not frames:
        return FrameError(f"{where}: cannot send: a message needs at least one frame")
    return FrameError(f"{where}: cannot send: {exc}")
