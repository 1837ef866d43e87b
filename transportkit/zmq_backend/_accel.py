"""Whole-message send and receive for the blocking sockets: C when available.

:func:`recv_message` and :func:`send_message` move one multipart message through a
pyzmq socket. With the optional C extension (``_accel_c``, built at install when a C
compiler is present) each is one call into C: a receive asks libzmq for the "more"
flag of each frame directly, where pyzmq's ``getsockopt(RCVMORE)`` costs more than
the receive. Without it they fall back to pyzmq calls with the same results and
errors. :func:`accelerated` tells which is in use, and why not when it is not.

The extension is not linked to libzmq: this module finds the libzmq pyzmq itself
loaded (:func:`~transportkit.zmq_backend._libzmq.loaded_libzmq`: never a second copy,
version checked against pyzmq's), hands the function
addresses to the extension and round-trips a message through it before using it.
Any failure falls back to pyzmq with a :class:`RuntimeWarning`. Set
``TRANSPORTKIT_PURE_PYTHON=1`` to use the fallback regardless.
"""

from __future__ import annotations

import ctypes
import os
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import zmq
from zmq.backend import Socket as _BackendSocket

from transportkit.zmq_backend._libzmq import loaded_libzmq

__all__ = ["accelerated", "py_recv_message", "py_send_message", "recv_message", "send_message"]

_SYMBOLS = (
    "zmq_msg_init",
    "zmq_msg_recv",
    "zmq_msg_data",
    "zmq_msg_size",
    "zmq_msg_more",
    "zmq_msg_close",
    "zmq_send",
    "zmq_errno",
)

_recv_frame: Callable[..., Any] = _BackendSocket.recv
_send_frame: Callable[..., Any] = _BackendSocket.send


def py_recv_message(sock: zmq.Socket[Any], flags: int = 0) -> list[bytes]:
    """Receive one message with pyzmq calls (the fallback of :func:`recv_message`).

    The first frame comes as a ``zmq.Frame``, whose ``more`` flag pyzmq reads in C;
    only a multipart message pays for ``recv_multipart``'s option lookups.
    """
    first = _recv_frame(sock, flags, False)
    if first.more:
        return [first.bytes, *sock.recv_multipart(flags)]
    return [first.bytes]


def py_send_message(sock: zmq.Socket[Any], frames: Sequence[Any], flags: int = 0) -> None:
    """Send one message with pyzmq calls (the fallback of :func:`send_message`)."""
    if type(frames) is list and len(frames) == 1:
        _send_frame(sock, frames[0], flags)
    else:
        sock.send_multipart(frames, flags)


def _error_for(errno: int) -> zmq.ZMQError:
    """The exception pyzmq raises for ``errno`` (``Again``, ``ContextTerminated``...)."""
    if errno == zmq.EAGAIN:
        return zmq.Again(errno)
    if errno == zmq.ETERM:
        return zmq.ContextTerminated(errno)
    return zmq.ZMQError(errno)


def _libzmq_addresses() -> dict[str, int]:
    """Addresses of :data:`_SYMBOLS` in the libzmq pyzmq uses."""
    lib = loaded_libzmq()  # the very libzmq pyzmq resolved, bundled or system
    addresses = {}
    for name in _SYMBOLS:
        address = ctypes.cast(getattr(lib, name), ctypes.c_void_p).value
        if not address:
            raise RuntimeError(f"no address for {name}")
        addresses[name] = address
    return addresses


def _check(module: Any) -> None:
    """Round-trip multipart messages both ways between the extension and pyzmq."""
    ctx: zmq.Context[Any] = zmq.Context(io_threads=0)
    a, b = ctx.socket(zmq.PAIR), ctx.socket(zmq.PAIR)
    try:
        for sock in (a, b):
            sock.setsockopt(zmq.LINGER, 0)
        endpoint = f"inproc://transportkit-accel-check-{id(a)}"
        a.bind(endpoint)
        b.connect(endpoint)
        module.send_message(a, [b"\x01", b""], zmq.NOBLOCK)
        if b.recv_multipart(zmq.NOBLOCK) != [b"\x01", b""]:
            raise RuntimeError("send_message check failed")
        a.send_multipart([b"x", b"", b"yz"])
        if module.recv_message(b, zmq.NOBLOCK) != [b"x", b"", b"yz"]:
            raise RuntimeError("recv_message check failed")
    finally:
        a.close()
        b.close()
        ctx.term()


def _load() -> tuple[Any, str]:
    """The initialised extension (or None) and why it is not used."""
    if os.environ.get("TRANSPORTKIT_PURE_PYTHON"):
        return None, "TRANSPORTKIT_PURE_PYTHON is set"
    try:
        from transportkit.zmq_backend import _accel_c  # type: ignore[attr-defined]  # noqa: PLC0415
    except ImportError:
        return None, "the C extension was not built (no C compiler at install?)"
    try:
        _accel_c.init(_libzmq_addresses(), _error_for)
        _check(_accel_c)
    except Exception as exc:  # any failure: fall back, and say so
        warnings.warn(
            f"transportkit's C accelerator is disabled ({exc}); using pure pyzmq calls",
            RuntimeWarning,
            stacklevel=2,
        )
        return None, f"the C extension failed its check: {exc}"
    return _accel_c, ""


_MODULE, _WHY_NOT = _load()

recv_message: Callable[..., list[bytes]] = (
    _MODULE.recv_message if _MODULE is not None else py_recv_message
)
send_message: Callable[..., None] = _MODULE.send_message if _MODULE is not None else py_send_message


def accelerated() -> tuple[bool, str]:
    """Whether the blocking sockets use the C accelerator, and if not, why not."""
    return _MODULE is not None, _WHY_NOT
