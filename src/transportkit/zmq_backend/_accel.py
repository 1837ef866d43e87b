"""Whole-message send and receive for the zmq sockets: C when available.

:func:`recv_message` and :func:`send_message` move one multipart message through a
pyzmq socket, and :func:`wait` waits until one is ready. With the optional C
extension (``_accel_c``, built at install when a C compiler is present) each is one
call into C: a receive asks libzmq for the "more" flag of each frame directly, where
pyzmq's ``getsockopt(RCVMORE)`` costs more than the receive. Without it they fall
back to pyzmq calls with the same results and errors. :func:`accelerated` tells which
is in use, and why not when it is not. :func:`recv_frames` and :func:`send_frames`
are the zero-copy variants (pyzmq ``Frame`` objects), on pyzmq calls in both cases.

Signals and closed sockets. pyzmq's own waiting calls (a blocking ``recv``/``send``,
``poll``) read the socket's handle once and, after a signal interrupts them and the
Python handlers have run, call libzmq again with that handle: if a handler closed the
socket and made another one, libzmq reads freed memory, or the new socket (which may
reuse the address), and a message goes to or comes from the wrong socket. So nothing
here waits inside pyzmq. The C extension reads the handle again from the socket
object after anything that ran Python code (see ``_accel_c.c``); the fallback makes
only non-blocking pyzmq calls and waits on the socket's file descriptor
(:func:`py_wait`), checking the socket (``ZMQ_EVENTS``, which raises once it is
closed) after every wake and at least every 100 ms. What remains in the fallback is
pyzmq's: a non-blocking call interrupted inside libzmq's zero-timeout internal poll
(a microsecond) is retried by pyzmq with the handle it read.

Whole messages. A receive returns a whole message or raises, and never leaves the
rest of a message to be read as a new one: the C extension runs no Python code
between the frames; the fallback, if a handler raises between two frames, drops
what is left of that message (libzmq's ``RCVMORE`` says how much). A send in C is
whole or nothing for the same reason. The fallback cannot be as exact: pyzmq runs
signal handlers inside each call, both before and after libzmq's, so when one raises
during frame ``i`` of a message it cannot tell whether that frame went. It takes it
as sent and sends the rest, so that the message is ended; the guess is wrong about
as often as right (under a storm of raising handlers about one message in ten lost
a frame), and when it is wrong about the last frame, the message stays open and the
next one is glued onto it (about one in 200 under that storm). A handler that raises
while the send waits (the usual Ctrl-C) is exact: nothing was sent.

The extension is not linked to libzmq: this module finds the libzmq pyzmq itself
loaded (:func:`~transportkit.zmq_backend._libzmq.loaded_libzmq`: never a second copy,
version checked against pyzmq's), hands the function
addresses to the extension and round-trips a message through it before using it.
Any failure falls back to pyzmq with a :class:`RuntimeWarning`. Set
``TRANSPORTKIT_PURE_PYTHON=1`` to use the fallback regardless. On Windows the
fallback is used, without a warning: a DLL's symbols are not looked up through the
modules that load it, so pyzmq's backend module does not lead to libzmq there.
"""

from __future__ import annotations

import ctypes
import errno
import math
import os
import select
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import zmq
from zmq.backend import Socket as _BackendSocket

from transportkit import _wallclock as wallclock
from transportkit._socket import check_frames
from transportkit.zmq_backend._libzmq import loaded_libzmq

__all__ = [
    "Acceleration",
    "accelerated",
    "py_recv_message",
    "py_send_message",
    "py_wait",
    "recv_frames",
    "recv_message",
    "send_frames",
    "send_message",
    "wait",
]

_SYMBOLS = (
    "zmq_msg_init",
    "zmq_msg_recv",
    "zmq_msg_data",
    "zmq_msg_size",
    "zmq_msg_more",
    "zmq_msg_close",
    "zmq_send",
    "zmq_poll",
    "zmq_errno",
)

# The compiled methods of pyzmq's backend socket, called unbound: they work on any
# pyzmq socket, the asyncio ones included (whose own send/recv return futures).
_recv: Callable[..., Any] = _BackendSocket.recv
_send: Callable[..., Any] = _BackendSocket.send
_get: Callable[..., Any] = _BackendSocket.get

# Plain ints: pyzmq's constants are enum.IntFlag, whose "|" runs Python code.
_NOBLOCK = int(zmq.NOBLOCK)
_SNDMORE = int(zmq.SNDMORE)
_WAIT_SLICE_MS = 100
"""The fallback's wait looks at the socket at least this often (see py_wait)."""
_SPURIOUS_WAKE_PAUSE = 0.001
"""Seconds to pause when the socket said ready and the call still could not proceed."""


def py_wait(sock: zmq.Socket[Any], events: int, timeout_ms: int) -> bool:
    """Wait until ``sock`` is ready for ``events`` (the fallback of :func:`wait`).

    libzmq's ``ZMQ_EVENTS`` says whether it is ready; its file descriptor becomes
    readable when that may have changed. The wait is on that descriptor, in slices of
    at most 100 ms: a signal handler that closes the socket may leave Python's retried
    poll on a descriptor that libzmq closed, or that a new socket now uses, and the
    next look at ``ZMQ_EVENTS`` raises ENOTSOCK for a closed socket.

    Args:
        sock: The pyzmq socket.
        events: ``zmq.POLLIN`` and/or ``zmq.POLLOUT``.
        timeout_ms: Milliseconds to wait at most; -1 for ever, 0 to only look.

    Returns:
        True once ready, False if ``timeout_ms`` passed first.

    Raises:
        zmq.ZMQError: ENOTSOCK once the socket is closed, ETERM once its context is.
    """
    deadline = math.inf if timeout_ms < 0 else wallclock.monotonic() + timeout_ms / 1000
    poller: Any = None
    while True:
        if _get(sock, zmq.EVENTS) & events:
            return True
        slice_ms = _WAIT_SLICE_MS
        if deadline != math.inf:
            left = deadline - wallclock.monotonic()
            if left <= 0:
                return False
            slice_ms = min(slice_ms, math.ceil(left * 1000))
        if poller is None:
            poller = _FdPoller(_get(sock, zmq.FD))
        poller.poll(slice_ms)


class _FdPoller:
    """Wait for one file descriptor to become readable (``poll``, else ``select``)."""

    __slots__ = ("_fd", "_poll")

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._poll: Any = None
        if hasattr(select, "poll"):
            self._poll = select.poll()
            self._poll.register(fd, select.POLLIN)

    def poll(self, timeout_ms: int) -> None:
        if self._poll is not None:
            self._poll.poll(timeout_ms)
            return
        try:
            select.select([self._fd], [], [], timeout_ms / 1000)
        except (OSError, ValueError):  # closed meanwhile: the caller looks again
            time.sleep(min(timeout_ms, 1) / 1000)


def _deadline(sock: zmq.Socket[Any], option: int) -> float:
    """The monotonic time at which the socket's RCVTIMEO/SNDTIMEO ends (inf: never)."""
    timeout: int = _get(sock, option)
    return math.inf if timeout < 0 else wallclock.monotonic() + timeout / 1000


def _left_ms(deadline: float) -> int:
    if deadline == math.inf:
        return -1
    return max(0, math.ceil((deadline - wallclock.monotonic()) * 1000))


def _recv_first(sock: zmq.Socket[Any], flags: int) -> Any:
    """The first frame of a message (a ``zmq.Frame``): the one step that may wait."""
    try:
        return _recv(sock, flags | _NOBLOCK, False)
    except zmq.Again:
        if flags & _NOBLOCK:
            raise
    deadline = _deadline(sock, zmq.RCVTIMEO)
    woken = False
    while True:
        if woken:
            time.sleep(_SPURIOUS_WAKE_PAUSE)  # ready, yet nothing came (REQ discards)
        if not wait(sock, zmq.POLLIN, _left_ms(deadline)):
            raise zmq.Again(errno.EAGAIN)
        try:
            return _recv(sock, flags | _NOBLOCK, False)
        except zmq.Again:
            woken = True


def _discard_rest(sock: zmq.Socket[Any]) -> None:
    """Drop what is left of a message whose first frames were taken (``RCVMORE``)."""
    late: BaseException | None = None
    while True:
        try:
            while _get(sock, zmq.RCVMORE):
                _recv(sock, _NOBLOCK, False)
            break
        except zmq.ZMQError:
            break  # closed or torn down: the rest went with it
        except BaseException as exc:  # another handler raised: finish first
            late = exc
    if late is not None:
        raise late


def _receive(sock: zmq.Socket[Any], flags: int, copy: bool) -> list[Any]:
    try:
        first = _recv_first(sock, flags)
        if not first.more:
            return [first.bytes if copy else first]
        frames = [first.bytes if copy else first]
        while True:
            frame = _recv(sock, _NOBLOCK, False)
            frames.append(frame.bytes if copy else frame)
            if not frame.more:
                return frames
    except zmq.ZMQError:
        raise
    except BaseException:
        _discard_rest(sock)
        raise


def py_recv_message(sock: zmq.Socket[Any], flags: int = 0) -> list[bytes]:
    """Receive one message with pyzmq calls (the fallback of :func:`recv_message`).

    The first frame comes as a ``zmq.Frame``, whose ``more`` flag pyzmq reads in C;
    a single-frame message costs one non-blocking receive when one is waiting.
    """
    try:
        first = _recv(sock, flags | _NOBLOCK, False)
        if not first.more:
            return [first.bytes]
    except zmq.Again:
        if flags & _NOBLOCK:
            raise
        return _receive(sock, flags, True)
    except zmq.ZMQError:
        raise
    except BaseException:
        _discard_rest(sock)
        raise
    try:
        frames = [first.bytes]
        while True:
            frame = _recv(sock, _NOBLOCK, False)
            frames.append(frame.bytes)
            if not frame.more:
                return frames
    except zmq.ZMQError:
        raise
    except BaseException:
        _discard_rest(sock)
        raise


def recv_frames(sock: zmq.Socket[Any], flags: int = 0) -> list[zmq.Frame]:
    """Receive one message as ``zmq.Frame`` objects (zero-copy), safely as above.

    Raises:
        zmq.ZMQError: As pyzmq's ``recv`` (``zmq.Again`` after ``RCVTIMEO``).
    """
    return _receive(sock, flags, False)


def _send_first(
    sock: zmq.Socket[Any], frame: Any, flags: int, copy: bool, progress: list[int]
) -> None:
    """Send the first frame of a message: the one step that may wait.

    ``progress[0]`` is 1 from just before each call that hands the frame to libzmq
    until libzmq refuses it: an exception with it set came from that call (see
    :func:`_send_rest`); without it, from the wait, and nothing was sent.
    """
    try:
        progress[0] = 1
        _send(sock, frame, flags | _NOBLOCK, copy)
        return
    except zmq.Again:
        progress[0] = 0
        if flags & _NOBLOCK:
            raise
    deadline = _deadline(sock, zmq.SNDTIMEO)
    woken = False
    while True:
        if woken:
            time.sleep(_SPURIOUS_WAKE_PAUSE)  # ready, yet refused (a ROUTER peer's HWM)
        if not wait(sock, zmq.POLLOUT, _left_ms(deadline)):
            raise zmq.Again(errno.EAGAIN)
        try:
            progress[0] = 1
            _send(sock, frame, flags | _NOBLOCK, copy)
            return
        except zmq.Again:
            progress[0] = 0
            woken = True


def _send_rest(
    sock: zmq.Socket[Any], frames: Sequence[Any], copy: bool, progress: list[int]
) -> None:
    """Send frames ``progress[1]``.. of a message whose first frame libzmq accepted.

    libzmq takes them without waiting. pyzmq runs signal handlers inside each call,
    before and after libzmq's, so when one raises it is not known whether the frame
    went: it is counted as sent (``progress[1]`` moves on before the call) and the
    rest follows, so that the message is ended. libzmq refuses a frame (EAGAIN) only
    when the peer's pipe is torn down mid-message, and then drops the message: the
    rest is sent all the same. Resumable: an exception that escapes before the end
    leaves ``progress[1]`` at the next frame to send.
    """
    last = len(frames) - 1
    refused: zmq.ZMQError | None = None
    late: BaseException | None = None
    while progress[1] <= last:
        try:
            while progress[1] <= last:
                i = progress[1]
                progress[1] = i + 1
                _send(sock, frames[i], _NOBLOCK | _SNDMORE if i < last else _NOBLOCK, copy)
                if i == last:
                    refused = None
        except zmq.Again as exc:
            refused = refused or exc
        except zmq.ZMQError:
            raise
        except BaseException as exc:
            late = late or exc
    if late is not None:
        raise late
    if refused is not None:
        raise refused


def _sendable(frames: Sequence[Any]) -> Sequence[Any]:
    if type(frames) is list:
        for frame in frames:
            if type(frame) is not bytes:
                break
        else:
            if frames:
                return frames
    return check_frames(frames)


def _send_all(sock: zmq.Socket[Any], frames: Sequence[Any], flags: int, copy: bool) -> None:
    items = _sendable(frames)
    progress = [0, 1]  # frame 0 handed to pyzmq; the next frame to send
    if len(items) == 1:
        _send_first(sock, items[0], flags, copy, progress)
        return
    # A tuple: a handler cannot change the frames between the first and the rest.
    items = tuple(items)
    try:
        _send_first(sock, items[0], flags | _SNDMORE, copy, progress)
        _send_rest(sock, items, copy, progress)
    except zmq.ZMQError:
        raise  # refused before anything was sent, or the socket is gone
    except BaseException:
        # Frame 0 went (or most likely went): end the message before raising, even if
        # more handlers raise meanwhile (each call below is inside the loop's try).
        while progress[0] and progress[1] < len(items):
            try:
                _send_rest(sock, items, copy, progress)
            except zmq.ZMQError:
                break
            except BaseException:  # the first exception is raised below
                pass
        raise


def py_send_message(sock: zmq.Socket[Any], frames: Sequence[Any], flags: int = 0) -> None:
    """Send one message with pyzmq calls (the fallback of :func:`send_message`).

    Raises:
        FrameError: ``frames`` breaks :func:`transportkit._socket.check_frames`.
        zmq.ZMQError: As pyzmq's ``send`` (``zmq.Again`` after ``SNDTIMEO``).
    """
    if type(frames) is list and len(frames) == 1 and type(frames[0]) is bytes:
        try:
            _send(sock, frames[0], flags | _NOBLOCK)  # the common case, in one call
            return
        except zmq.Again:
            if flags & _NOBLOCK:
                raise
    _send_all(sock, frames, flags, True)


def send_frames(sock: zmq.Socket[Any], frames: Sequence[Any], flags: int = 0) -> None:
    """Send one message without copying its large frames (pyzmq ``copy=False``).

    Raises:
        FrameError: ``frames`` breaks :func:`transportkit._socket.check_frames`.
        zmq.ZMQError: As pyzmq's ``send`` (``zmq.Again`` after ``SNDTIMEO``).
    """
    _send_all(sock, frames, flags, False)


def _error_for(code: int) -> zmq.ZMQError:
    """The exception pyzmq raises for errno ``code`` (``Again``, ``ContextTerminated``...)."""
    if code == zmq.EAGAIN:
        return zmq.Again(code)
    if code == zmq.ETERM:
        return zmq.ContextTerminated(code)
    return zmq.ZMQError(code)


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
        if module.wait(b, zmq.POLLIN, 0):
            raise RuntimeError("wait check failed")
        module.send_message(a, [b"\x01", b""], zmq.NOBLOCK)
        if b.recv_multipart(zmq.NOBLOCK) != [b"\x01", b""]:
            raise RuntimeError("send_message check failed")
        a.send_multipart([b"x", b"", b"yz"])
        if not module.wait(b, zmq.POLLIN, 1000):
            raise RuntimeError("wait check failed")
        if module.recv_message(b, zmq.NOBLOCK) != [b"x", b"", b"yz"]:
            raise RuntimeError("recv_message check failed")
    finally:
        a.close()
        b.close()
        ctx.term()


class Acceleration(NamedTuple):
    """Whether the zmq sockets use the C accelerator (what :func:`accelerated` returns).

    Its truth value is :attr:`active`: ``if accelerated():`` means "the C accelerator is
    in use". It is also the pair ``(active, reason)``, so ``on, why = accelerated()``
    and ``accelerated()[0]`` work too (unlike a plain tuple, ``(False, "...")`` is
    false).

    Attributes:
        active: True if the C extension was built, loaded and passed its start-up check.
        reason: Why not, when not (``TRANSPORTKIT_PURE_PYTHON`` set, not built, failed
            its check); empty when active.
    """

    active: bool
    reason: str

    def __bool__(self) -> bool:
        return self.active


def _load() -> tuple[Any, str]:
    """The initialised extension (or None) and why it is not used."""
    if os.environ.get("TRANSPORTKIT_PURE_PYTHON"):
        return None, "TRANSPORTKIT_PURE_PYTHON is set"
    if sys.platform == "win32":  # the extension builds, but cannot find libzmq yet
        return None, (
            "not used on Windows: libzmq's functions cannot be looked up through "
            "pyzmq's backend module there"
        )
    try:
        from transportkit.zmq_backend import _accel_c  # type: ignore[attr-defined]  # noqa: PLC0415
    except ImportError:
        return None, "the C extension was not built (no C compiler at install?)"
    try:
        _accel_c.init(_libzmq_addresses(), _error_for, Sequence)
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
_ACCELERATION = Acceleration(_MODULE is not None, _WHY_NOT)

recv_message: Callable[..., list[bytes]] = (
    _MODULE.recv_message if _MODULE is not None else py_recv_message
)
send_message: Callable[..., None] = _MODULE.send_message if _MODULE is not None else py_send_message
wait: Callable[[zmq.Socket[Any], int, int], bool] = _MODULE.wait if _MODULE is not None else py_wait


def accelerated() -> Acceleration:
    """Whether the zmq sockets use the C accelerator, and if not, why not.

    Returns:
        An :class:`Acceleration`, true exactly when the accelerator is in use. Decided
        once, when the zmq backend is first imported.
    """
    return _ACCELERATION
