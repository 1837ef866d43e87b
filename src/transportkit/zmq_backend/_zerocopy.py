"""Zero-copy sends whose buffers are never reused, or unmapped, while libzmq holds them.

A zero-copy send (pyzmq ``copy=False``) hands libzmq a pointer into the caller's
memory: libzmq reads it later, from its I/O thread, or, over ``inproc://``, the
receiver reads it whenever it gets round to the message. Writing to that memory in
the meantime changes the bytes the peer receives, and unmapping it leaves libzmq a
dangling pointer. The seed's ``ZeroCopyPublisher`` does exactly that: it copies each
message into one buffer and sends it without a copy, so a message still queued is
overwritten by the next one.

Two owners of such memory make the hazard impossible to reach by accident (zmq
backend only, on :class:`~transportkit.zmq_backend.BlockingSocket`):

- :class:`BufferPool`: N fixed-size writable buffers. :meth:`BufferPool.acquire`
  hands one out only once libzmq has released it (a ``zmq.MessageTracker`` per send:
  pyzmq sets it from its garbage-collection thread when libzmq's free callback runs);
  :meth:`BufferPool.send` sends it and takes it back. A buffer given back cannot be
  used again through its :class:`PooledBuffer` (its view is released).
- :class:`MappedFile`: a file mapped read-only; :meth:`MappedFile.send` sends a
  region of it as a frame without copying; :meth:`MappedFile.close` waits, bounded,
  until libzmq holds no region any more, and raises :class:`~transportkit.Timeout`
  (leaving the file mapped) rather than unmap memory a queued message points into.

Frames smaller than the copy threshold (pyzmq's ``copy_threshold``, 64 KB by
default) are copied by pyzmq at the send, as a copy is cheaper than tracking them;
their buffer is free at once.

Why zmq only: the portable (asyncio) interfaces have no notion of a caller-owned
buffer, and the sim backend copies every frame into ``bytes`` when it is sent, so
the hazard does not exist there and a simulated tracker would prove nothing about
libzmq. Given anything but a zmq blocking socket, these classes raise
:class:`~transportkit.UnsupportedError`; they never send a copy silently.
"""

from __future__ import annotations

import contextlib
import math
import mmap
import os
import threading
from collections import deque
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final, Protocol, cast

import zmq

from transportkit import _wallclock as wallclock
from transportkit._errors import ClosedError, StateError, Timeout, UnsupportedError
from transportkit._socket import Frame, check_frames

if TYPE_CHECKING:
    from typing import Self

__all__ = ["BufferPool", "MappedFile", "PooledBuffer", "tracked_frames"]

_WAIT_SLICE_S: Final = 0.01
"""Longest wait on one tracker before looking at the others again (seconds)."""
_MAX_TIMEOUT_S: Final = 3600.0
"""The longest wait any call here accepts (seconds)."""


class _TrackedSender(Protocol):
    def send_tracked(
        self, frames: Sequence[Frame | zmq.Frame], *, copy_threshold: int | None = None
    ) -> zmq.MessageTracker: ...


def tracked_frames(
    frames: Sequence[Frame | zmq.Frame], copy_threshold: int
) -> tuple[list[Frame], zmq.MessageTracker]:
    """Wrap a message's frames as tracked ``zmq.Frame`` objects, not yet sent.

    Frames of at least ``copy_threshold`` bytes share the caller's memory; smaller ones
    are copied now (their part of the tracker is done at once). A frame that is a
    ``zmq.Frame`` already is sent as it is (tracked if it was made with
    ``track=True``). The tracker is done once libzmq has released every shared frame
    *and* the returned ``zmq.Frame`` objects are gone: drop them once sent.

    Raises:
        FrameError: ``frames`` breaks :func:`transportkit._socket.check_frames`.
    """
    items = check_frames(frames)
    wrapped = [
        frame
        if isinstance(frame, zmq.Frame)
        else zmq.Frame(frame, track=True, copy_threshold=copy_threshold)
        for frame in items
    ]
    tracker = zmq.MessageTracker(*(f for f in wrapped if f.tracker is not None))
    # A zmq.Frame has the buffer protocol: to transportkit's send it is a frame.
    return cast("list[Frame]", wrapped), tracker


def _threshold(sock: Any, copy_threshold: int | None) -> int:
    """The copy threshold of a send: the given one, else the pyzmq socket's."""
    if copy_threshold is not None:
        return copy_threshold
    raw = getattr(sock, "zmq_socket", None)
    return int(getattr(raw, "copy_threshold", zmq.COPY_THRESHOLD))


def _check_timeout(timeout: float) -> float:
    if not isinstance(timeout, int | float) or math.isnan(timeout) or timeout < 0:
        raise ValueError(f"timeout must be a number of seconds >= 0, got {timeout!r}")
    return min(float(timeout), _MAX_TIMEOUT_S)


def _sender(sock: object) -> _TrackedSender:
    if not callable(getattr(sock, "send_tracked", None)):
        raise UnsupportedError(
            f"zero-copy sends need a zmq backend blocking socket "
            f"(ZmqNetwork.blocking), not {type(sock).__name__}: the asyncio sockets and "
            "the sim backend have no tracked sends; send bytes(...) there"
        )
    return sock  # type: ignore[return-value]


def _wait_any(trackers: Sequence[zmq.MessageTracker], deadline: float) -> bool:
    """Wait until one of ``trackers`` (oldest first) is done, or ``deadline`` passes."""
    while True:
        for tracker in trackers:
            if tracker.done:
                return True
        left = deadline - wallclock.monotonic()
        if left <= 0:
            return False
        with contextlib.suppress(zmq.NotDone):
            trackers[0].wait(min(left, _WAIT_SLICE_S))


class PooledBuffer:
    """One buffer of a :class:`BufferPool`, handed out by :meth:`BufferPool.acquire`.

    Write the message into :attr:`view`, then either :meth:`BufferPool.send` it or
    :meth:`release` it unsent. Either gives it back: the view is released (any use of
    it raises ``ValueError``), and a second give-back raises
    :class:`~transportkit.StateError`. An object holding an export of the view (a
    numpy array over it, ``pickle.PickleBuffer``) makes the give-back raise
    StateError until it is dropped. New views made from it (``view[:n]``,
    ``memoryview(view)``) are separate objects that no pool can see or revoke: do not
    keep them past the give-back.
    """

    __slots__ = ("_index", "_pool", "_view")

    def __init__(self, pool: BufferPool, index: int, view: memoryview) -> None:
        self._pool = pool
        self._index = index
        self._view: memoryview | None = view

    @property
    def index(self) -> int:
        """Which of the pool's buffers this is (0 .. count-1)."""
        return self._index

    @property
    def size(self) -> int:
        """The buffer's size in bytes (the pool's ``size``)."""
        return self._pool.size

    @property
    def view(self) -> memoryview:
        """The writable memory of the buffer.

        Raises:
            StateError: The buffer was given back (sent or released).
        """
        if self._view is None:
            raise StateError(f"pooled buffer {self._index} was given back; acquire another")
        return self._view

    @property
    def held(self) -> bool:
        """True while the caller owns the buffer (acquired, not yet given back)."""
        return self._view is not None

    def release(self) -> None:
        """Give the buffer back unsent; it is free at once.

        Raises:
            StateError: It was given back already, or its view is still exported (a
                numpy array over it...): drop that first.
        """
        self._pool._give_back(self)

    def _revoke(self) -> None:
        """Release the caller's view (the buffer is being given back)."""
        if self._view is None:
            raise StateError(f"pooled buffer {self._index} was given back already")
        try:
            self._view.release()
        except BufferError:
            raise StateError(
                f"pooled buffer {self._index} is still exported (a memoryview or array "
                "made from its view): drop it before giving the buffer back"
            ) from None
        self._view = None

    def __repr__(self) -> str:
        state = "held" if self.held else "given back"
        return f"<PooledBuffer {self._index} of {self._pool.size} B, {state}>"


class BufferPool:
    """N fixed-size writable buffers for zero-copy sends, each reused only once libzmq
    has let go of it.

    Thread-safe. Each buffer is in one of three states: free, held by the caller
    (:meth:`acquire`), or in flight (sent: libzmq may still read it). An in-flight
    buffer becomes free when its tracker says libzmq released it: after the peer
    received it (inproc) or it was written to the kernel (ipc, tcp), or when the socket
    dropped it (close with ``linger``, HWM on PUB). A sent frame below the copy
    threshold was copied, so its buffer is free at once.

    Example::

        pool = BufferPool(count=4, size=1 << 20)
        buf = pool.acquire(timeout=1.0)
        buf.view[:5] = b"hello"
        pool.send(sock, buf, 5)

    Args:
        count: How many buffers (1 .. 4096).
        size: Bytes per buffer (1 .. 2**31).
        copy_threshold: Frames smaller than this many bytes are copied at the send;
            None uses the socket's pyzmq ``copy_threshold`` (``zmq.COPY_THRESHOLD``,
            64 KB, unless changed). 0 never copies.

    Raises:
        ValueError: A count, size or threshold out of range.
    """

    def __init__(self, count: int, size: int, *, copy_threshold: int | None = None) -> None:
        if not isinstance(count, int) or not 1 <= count <= 4096:
            raise ValueError(f"count must be an int in 1..4096, got {count!r}")
        if not isinstance(size, int) or not 1 <= size <= 2**31:
            raise ValueError(f"size must be an int in 1..2**31, got {size!r}")
        if copy_threshold is not None and (
            not isinstance(copy_threshold, int) or copy_threshold < 0
        ):
            raise ValueError(f"copy_threshold must be an int >= 0 or None, got {copy_threshold!r}")
        self._size = size
        self._copy_threshold = copy_threshold
        self._memory = [bytearray(size) for _ in range(count)]
        # The pool's own views: frames are cut from these, never from the caller's.
        self._bases = [memoryview(block) for block in self._memory]
        self._free: deque[int] = deque(range(count))
        self._in_flight: deque[tuple[int, zmq.MessageTracker]] = deque()
        self._lock = threading.Lock()
        self._closed = False

    @property
    def count(self) -> int:
        """How many buffers the pool has."""
        return len(self._memory)

    @property
    def size(self) -> int:
        """Bytes per buffer."""
        return self._size

    @property
    def in_flight(self) -> int:
        """Buffers sent and still held by libzmq (as of their last look)."""
        with self._lock:
            self._reap()
            return len(self._in_flight)

    @property
    def free(self) -> int:
        """Buffers that :meth:`acquire` can hand out at once."""
        with self._lock:
            self._reap()
            return len(self._free)

    @property
    def closed(self) -> bool:
        """True once :meth:`close` was called."""
        return self._closed

    def _reap(self) -> None:
        """Move every in-flight buffer that libzmq released to the free list (lock held)."""
        if not self._in_flight:
            return
        still: deque[tuple[int, zmq.MessageTracker]] = deque()
        for index, tracker in self._in_flight:
            if tracker.done:
                self._free.append(index)
            else:
                still.append((index, tracker))
        self._in_flight = still

    def acquire(self, timeout: float = 1.0) -> PooledBuffer:
        """Take a free buffer, waiting up to ``timeout`` seconds for libzmq to release one.

        Its contents are whatever was last written to it.

        Args:
            timeout: Seconds to wait at most (0: do not wait; at most 3600).

        Raises:
            Timeout: No buffer became free in time (every one is held by the caller
                or by libzmq).
            ClosedError: The pool is closed.
            ValueError: ``timeout`` is negative or not a number.
        """
        deadline = wallclock.monotonic() + _check_timeout(timeout)
        while True:
            with self._lock:
                if self._closed:
                    raise ClosedError("buffer pool: cannot acquire: it is closed")
                self._reap()
                if self._free:
                    index = self._free.popleft()
                    return PooledBuffer(self, index, self._bases[index][:])
                trackers = [tracker for _, tracker in self._in_flight]
            if not trackers or not _wait_any(trackers, deadline):
                raise Timeout(
                    f"buffer pool: no buffer free after {timeout} s "
                    f"({len(trackers)} of {self.count} held by libzmq, "
                    f"{self.count - len(trackers)} by the caller)"
                )

    def send(
        self,
        sock: Any,
        buffer: PooledBuffer,
        length: int | None = None,
        *,
        prefix: Sequence[Frame] = (),
    ) -> zmq.MessageTracker:
        """Send ``buffer[:length]`` without copying, as the last frame of one message.

        The buffer is given back whatever happens: it is in flight until libzmq
        releases it (if the send failed, once the exception is gone), then free.

        Args:
            sock: A zmq backend blocking socket (``ZmqNetwork.blocking``).
            buffer: A buffer of this pool, held by the caller.
            length: Bytes to send (0 .. size); None sends the whole buffer.
            prefix: Frames sent before it in the same message (a topic, a header),
                copied or not by the same threshold.

        Returns:
            The send's tracker (``tracker.done``, ``tracker.wait(timeout)``).

        Raises:
            UnsupportedError: ``sock`` is not a zmq blocking socket (the sim's and the
                asyncio sockets have no tracked sends).
            StateError: ``buffer`` is not held (given back already), is another
                pool's, or is still exported.
            ValueError: ``length`` out of range.
            ClosedError: The pool or the socket is closed.
            Timeout: The socket's ``sndtimeo`` elapsed.
            FrameError: A prefix frame is not a frame.
        """
        sender = _sender(sock)
        if buffer._pool is not self:
            raise StateError(f"{buffer!r} belongs to another pool")
        if length is None:
            length = self._size
        if not isinstance(length, int) or not 0 <= length <= self._size:
            raise ValueError(f"length must be an int in 0..{self._size}, got {length!r}")
        if self._closed:
            raise ClosedError("buffer pool: cannot send: it is closed")
        # The frame is made first, so that its tracker is known even if the send fails
        # (the frame then lives on in the exception's traceback, and so does the hold).
        frame = zmq.Frame(
            self._bases[buffer.index][:length],
            track=True,
            copy_threshold=_threshold(sock, self._copy_threshold),
        )
        tracker: zmq.MessageTracker = frame.tracker
        with self._lock:
            buffer._revoke()
            self._in_flight.append((buffer.index, tracker))
        try:
            sender.send_tracked([*prefix, frame], copy_threshold=self._copy_threshold)
        finally:
            del frame
        return tracker

    def _give_back(self, buffer: PooledBuffer) -> None:
        with self._lock:
            buffer._revoke()
            self._free.append(buffer.index)

    def close(self, timeout: float = 1.0) -> None:
        """Refuse further acquires and sends; wait up to ``timeout`` s for libzmq.

        Idempotent. Buffers still held by libzmq at the deadline stay allocated (the
        pool object keeps them alive), so nothing is freed under libzmq.

        Raises:
            Timeout: Some buffer was still in flight at the deadline (the pool is
                closed all the same; call again to wait again).
        """
        deadline = wallclock.monotonic() + _check_timeout(timeout)
        with self._lock:
            self._closed = True
        while True:
            with self._lock:
                self._reap()
                trackers = [tracker for _, tracker in self._in_flight]
            if not trackers:
                return
            if not _wait_any(trackers, deadline):
                raise Timeout(
                    f"buffer pool: {len(trackers)} buffer(s) still held by libzmq after {timeout} s"
                )

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<BufferPool {self.count} x {self._size} B{' closed' if self._closed else ''}>"


class MappedFile:
    """A file mapped read-only, whose regions are sent without a copy.

    Each region sent is a frame that points into the mapping; the file is not
    unmapped while libzmq holds any of them, and :meth:`close` never unmaps memory a
    queued message points into: it waits, bounded, for libzmq to release every region,
    and raises :class:`~transportkit.Timeout` (leaving the file mapped, and refusing
    new sends) if one is still held. Thread-safe.

    The file must not be truncated by anyone while it is mapped (a read past the new
    end kills the process with SIGBUS; that is the operating system's rule).

    Args:
        path: The file to map (it must exist and be non-empty).
        copy_threshold: As :class:`BufferPool`'s.

    Raises:
        OSError: The file cannot be opened.
        ValueError: It is empty (an empty file cannot be mapped).
    """

    def __init__(self, path: str | os.PathLike[str], *, copy_threshold: int | None = None) -> None:
        self._path = Path(path)
        self._copy_threshold = copy_threshold
        fd = os.open(self._path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
        try:
            size = os.fstat(fd).st_size
            if size == 0:
                raise ValueError(f"{self._path} is empty: an empty file cannot be mapped")
            self._mmap: mmap.mmap | None = mmap.mmap(fd, size, access=mmap.ACCESS_READ)
        finally:
            os.close(fd)  # the mapping keeps the file's pages; the descriptor is not needed
        self._size = size
        self._base: memoryview | None = memoryview(self._mmap)
        self._in_flight: deque[zmq.MessageTracker] = deque()
        self._lock = threading.Lock()
        self._closing = False

    @property
    def path(self) -> Path:
        """The file's path."""
        return self._path

    @property
    def size(self) -> int:
        """The mapping's size in bytes (the file's size when it was opened)."""
        return self._size

    @property
    def closed(self) -> bool:
        """True once the file is unmapped."""
        return self._mmap is None

    @property
    def in_flight(self) -> int:
        """Regions sent and still held by libzmq."""
        with self._lock:
            self._reap()
            return len(self._in_flight)

    def _reap(self) -> None:
        while self._in_flight and self._in_flight[0].done:
            self._in_flight.popleft()
        if len(self._in_flight) > 64:  # not FIFO (several sockets): look at them all
            self._in_flight = deque(t for t in self._in_flight if not t.done)

    def _check_region(self, offset: int, length: int) -> None:
        if not isinstance(offset, int) or not isinstance(length, int):
            raise ValueError(f"offset and length must be ints, got {offset!r}, {length!r}")
        if offset < 0 or length < 0 or offset + length > self._size:
            raise ValueError(
                f"region [{offset}, {offset + length}) is outside {self._path} ({self._size} bytes)"
            )

    def read(self, offset: int, length: int) -> bytes:
        """A copy of the region's bytes.

        Raises:
            ValueError: The region is outside the file.
            ClosedError: The file is closed (or closing).
        """
        self._check_region(offset, length)
        with self._lock:
            if self._base is None or self._closing:
                raise ClosedError(f"mapped file {self._path}: cannot read: it is closed")
            return bytes(self._base[offset : offset + length])

    def send(
        self, sock: Any, offset: int, length: int, *, prefix: Sequence[Frame] = ()
    ) -> zmq.MessageTracker:
        """Send the region ``[offset, offset + length)`` without copying it.

        Args:
            sock: A zmq backend blocking socket (``ZmqNetwork.blocking``).
            offset: The region's first byte.
            length: Its length in bytes.
            prefix: Frames sent before it in the same message.

        Returns:
            The send's tracker: done once libzmq released the region.

        Raises:
            UnsupportedError: ``sock`` is not a zmq blocking socket.
            ValueError: The region is outside the file.
            ClosedError: The file is closed or closing, or the socket is closed.
            Timeout: The socket's ``sndtimeo`` elapsed.
            FrameError: A prefix frame is not a frame.
        """
        sender = _sender(sock)
        self._check_region(offset, length)
        with self._lock:
            if self._base is None or self._closing:
                raise ClosedError(f"mapped file {self._path}: cannot send: it is closed")
            self._reap()
            frame = zmq.Frame(
                self._base[offset : offset + length],
                track=True,
                copy_threshold=_threshold(sock, self._copy_threshold),
            )
            tracker: zmq.MessageTracker = frame.tracker
            self._in_flight.append(tracker)
        try:
            sender.send_tracked([*prefix, frame], copy_threshold=self._copy_threshold)
        finally:
            del frame
        return tracker

    def close(self, timeout: float = 1.0) -> None:
        """Unmap the file once libzmq holds none of its regions; idempotent.

        New sends are refused from the start of the call. Waits up to ``timeout``
        seconds for every region in flight to be released (delivered, written to the
        kernel, or dropped by a socket closed with ``linger``), then unmaps.

        Args:
            timeout: Seconds to wait at most (0: do not wait; at most 3600).

        Raises:
            Timeout: A region was still held by libzmq (or referenced by a failed
                send's exception) at the deadline. The file stays mapped and refuses
                sends; call :meth:`close` again later (after closing the socket, say).
            ValueError: ``timeout`` is negative or not a number.
        """
        deadline = wallclock.monotonic() + _check_timeout(timeout)
        with self._lock:
            if self._mmap is None:
                return
            self._closing = True
        while True:
            with self._lock:
                self._reap()
                trackers = list(self._in_flight)
            if trackers and not _wait_any(trackers, deadline):
                raise Timeout(
                    f"mapped file {self._path}: {len(trackers)} region(s) still held by "
                    f"libzmq after {timeout} s; the file stays mapped"
                )
            if not trackers and self._try_unmap():
                return
            if wallclock.monotonic() >= deadline:
                raise Timeout(
                    f"mapped file {self._path}: a region is still referenced after "
                    f"{timeout} s; the file stays mapped"
                )
            if not trackers:
                # Released by libzmq, not yet dropped by pyzmq's collector thread.
                threading.Event().wait(0.001)

    def _try_unmap(self) -> bool:
        with self._lock:
            if self._mmap is None:
                return True
            assert self._base is not None
            self._base.release()  # slices of it are separate views: mmap counts them
            try:
                self._mmap.close()
            except BufferError:  # a frame's view is still alive
                self._base = memoryview(self._mmap)
                return False
            self._mmap = None
            self._base = None
            return True

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self.closed else ("closing" if self._closing else "open")
        return f"<MappedFile {self._path} {self._size} B {state}>"
