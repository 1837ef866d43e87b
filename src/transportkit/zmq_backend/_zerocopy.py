"""Zero-copy sends whose buffers are never reused, or unmapped, while libzmq holds them.

A zero-copy send (``BlockingSocket.send(frames, copy=False)``, pyzmq ``copy=False``)
hands libzmq a pointer into the caller's memory: libzmq reads it later, from its I/O
thread, or, over ``inproc://``, the receiver reads it whenever it gets round to the
message. Writing to that memory in the meantime changes the bytes the peer receives,
and unmapping it leaves libzmq a dangling pointer. A publisher that copies each
message into one reusable buffer and sends that without a copy does exactly this: a
message still queued is overwritten by the next one.

Two owners of such memory make the hazard impossible to reach by accident (zmq
backend, :class:`~transportkit.zmq_backend.BlockingSocket` only):

- :class:`BufferPool`: N fixed-size writable buffers. :meth:`BufferPool.acquire`
  hands one out only once libzmq has released it; :meth:`BufferPool.send` sends it
  and takes it back. A buffer given back cannot be used again through its
  :class:`PooledBuffer` (its view is released).
- :class:`MappedFile`: a file mapped read-only; :meth:`MappedFile.send` sends a
  region of it as a frame without copying; :meth:`MappedFile.close` waits, bounded,
  until libzmq holds no region any more, and raises :class:`~transportkit.Timeout`
  (leaving the file mapped) rather than unmap memory a queued message points into.

How a release is seen: pyzmq keeps a reference to the object sent with
``copy=False`` until libzmq's free callback runs (its garbage-collection thread then
drops it; that is also when a ``zmq.MessageTracker`` is set). Each send here hands
pyzmq a fresh ``memoryview`` slice and keeps only a weak reference to it, whose
callback wakes any thread waiting in :meth:`BufferPool.acquire` or
:meth:`MappedFile.close`: the slice is gone exactly when libzmq and pyzmq are done
with it. That costs a weak reference per send (about 1 us) instead of the
``threading.Event`` and tracker that ``track=True`` makes (``zmq.Frame(view,
track=True)`` made and dropped took 55 us against 21 us untracked, timed on a loaded
machine). For a mapping, Python adds a second guard:
``mmap.close()`` raises ``BufferError`` while any view of it is alive, and
:meth:`MappedFile.close` never forces it.

Frames smaller than the socket's copy threshold (pyzmq's ``copy_threshold``,
``zmq.COPY_THRESHOLD``, 64 KB, unless set on ``sock.zmq_socket``) are copied by
pyzmq at the send, as a copy is cheaper than sharing: their buffer is free at once.

Why zmq only: the portable (asyncio) interfaces have no notion of a caller-owned
buffer, and the sim backend copies every frame into ``bytes`` when it is sent, so the
hazard does not exist there and a simulated hold would prove nothing about libzmq.
Given anything but a zmq blocking socket, these classes raise
:class:`~transportkit.UnsupportedError`; they never fall back to a copy silently.
"""

from __future__ import annotations

import math
import mmap
import os
import threading
import weakref
from collections import deque
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Final

from transportkit import _wallclock as wallclock
from transportkit._errors import ClosedError, StateError, Timeout, UnsupportedError
from transportkit._socket import Frame
from transportkit.zmq_backend._blocking import BlockingSocket

if TYPE_CHECKING:
    from typing import Self

__all__ = ["BufferPool", "MappedFile", "PooledBuffer", "SendHold"]

_WAIT_SLICE_S: Final = 0.01
"""Longest sleep of a wait before it looks again (bounds a wake-up lost to a race)."""
_MAX_TIMEOUT_S: Final = 3600.0
"""The longest wait any call here accepts (seconds)."""
_REAP_FLOOR: Final = 64
"""A mapped file's sends forget released regions once this many are listed (or more)."""


def _check_timeout(timeout: float) -> float:
    if (
        isinstance(timeout, bool)
        or not isinstance(timeout, int | float)
        or math.isnan(timeout)
        or timeout < 0
    ):
        raise ValueError(f"timeout must be a number of seconds >= 0, got {timeout!r}")
    return min(float(timeout), _MAX_TIMEOUT_S)


def _check_socket(sock: object) -> BlockingSocket:
    if not isinstance(sock, BlockingSocket):
        raise UnsupportedError(
            "zero-copy sends need a zmq backend blocking socket (ZmqNetwork.blocking), "
            f"not {type(sock).__name__}: the asyncio sockets and the sim backend have "
            "no zero-copy sends; send bytes(...) there"
        )
    return sock


class _Releases:
    """Weak references to the views handed to libzmq, and a wake-up when one dies.

    The callback may run in any thread (pyzmq's collector thread, or the sender's when
    a failed send's exception goes), so it takes no lock: it only sets an Event, and
    only when someone waits.
    """

    __slots__ = ("__weakref__", "_callback", "_count_lock", "_event", "_waiters")

    def __init__(self) -> None:
        self._callback = self._released  # one bound method, not one per send
        self._event = threading.Event()
        self._waiters = 0
        self._count_lock = threading.Lock()  # never taken by the callback

    def watch(self, view: memoryview) -> weakref.ref[memoryview]:
        return weakref.ref(view, self._callback)

    def _released(self, _ref: weakref.ref[memoryview]) -> None:
        if self._waiters:
            self._event.set()

    def notify(self) -> None:
        """Wake the waiters (something other than a release made them ready)."""
        if self._waiters:
            self._event.set()

    def wait_until(self, ready: Callable[[], bool], deadline: float) -> bool:
        """Wait until ``ready()`` (checked after each release) or ``deadline``."""
        with self._count_lock:
            self._waiters += 1
        try:
            while True:
                self._event.clear()
                if ready():
                    return True
                left = deadline - wallclock.monotonic()
                if left <= 0:
                    return False
                self._event.wait(min(left, _WAIT_SLICE_S))
        finally:
            with self._count_lock:
                self._waiters -= 1


class SendHold:
    """libzmq's hold on the memory of one zero-copy send (what the sends here return).

    :attr:`done` is True once libzmq has released it: the peer took it (inproc), it
    was written to the kernel (ipc, tcp), or the socket dropped it. A frame that was
    copied at the send is done at once.
    """

    __slots__ = ("_ref", "_releases")

    def __init__(self, ref: weakref.ref[memoryview], releases: _Releases) -> None:
        self._ref = ref
        self._releases = releases

    @property
    def done(self) -> bool:
        """True once libzmq no longer references the memory."""
        return self._ref() is None

    def wait(self, timeout: float = 1.0) -> bool:
        """Wait up to ``timeout`` seconds (at most 3600) for :attr:`done`; return it.

        Raises:
            ValueError: ``timeout`` is negative or not a number.
        """
        deadline = wallclock.monotonic() + _check_timeout(timeout)
        return self._releases.wait_until(lambda: self._ref() is None, deadline)

    def __repr__(self) -> str:
        return f"<SendHold {'done' if self.done else 'held by libzmq'}>"


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
                f"pooled buffer {self._index} is still exported (an array or buffer made "
                "from its view): drop it before giving the buffer back"
            ) from None
        self._view = None

    def __repr__(self) -> str:
        state = "held" if self.held else "given back"
        return f"<PooledBuffer {self._index} of {self._pool.size} B, {state}>"


class BufferPool:
    """N fixed-size writable buffers for zero-copy sends, each handed out again only
    once libzmq has let go of it.

    Thread-safe. Each buffer is free, held by the caller (:meth:`acquire`), or in
    flight (sent: libzmq may still read it). An in-flight buffer becomes free when
    libzmq releases it: once the peer received it (inproc) or it was written to the
    kernel (ipc, tcp), or when the socket dropped it (closed, ``linger`` over). A
    frame below the socket's copy threshold (64 KB by default) was copied at the
    send, so its buffer is free at once.

    Example::

        pool = BufferPool(count=4, size=1 << 20)
        buf = pool.acquire(timeout=1.0)
        buf.view[:5] = b"hello"
        pool.send(sock, buf, 5)

    Args:
        count: How many buffers (1 .. 4096).
        size: Bytes per buffer (1 .. 2**31).

    Raises:
        ValueError: A count or size out of range.
    """

    def __init__(self, count: int, size: int) -> None:
        if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= 4096:
            raise ValueError(f"count must be an int in 1..4096, got {count!r}")
        if isinstance(size, bool) or not isinstance(size, int) or not 1 <= size <= 2**31:
            raise ValueError(f"size must be an int in 1..2**31, got {size!r}")
        self._size = size
        # The pool's own views: frames are cut from these, never from the caller's.
        self._bases = [memoryview(bytearray(size)) for _ in range(count)]
        self._free: deque[int] = deque(range(count))
        self._in_flight: deque[tuple[int, weakref.ref[memoryview]]] = deque()
        self._releases = _Releases()
        self._lock = threading.Lock()
        self._closed = False

    @property
    def count(self) -> int:
        """How many buffers the pool has."""
        return len(self._bases)

    @property
    def size(self) -> int:
        """Bytes per buffer."""
        return self._size

    @property
    def in_flight(self) -> int:
        """Buffers sent and still held by libzmq."""
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
        """Move every in-flight buffer libzmq released to the free list (lock held)."""
        flying = self._in_flight
        if not flying:
            return
        if flying[0][1]() is None and (len(flying) == 1 or flying[-1][1]() is not None):
            # The usual order (one socket: released as sent): only the front moved.
            while flying and flying[0][1]() is None:
                self._free.append(flying.popleft()[0])
            return
        still: deque[tuple[int, weakref.ref[memoryview]]] = deque()
        for index, ref in flying:
            if ref() is None:
                self._free.append(index)
            else:
                still.append((index, ref))
        self._in_flight = still

    def _has_free(self) -> bool:
        with self._lock:
            self._reap()
            return bool(self._free) or self._closed

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
            # Woken by a release from libzmq, or by another thread's give-back.
            if not self._releases.wait_until(self._has_free, deadline):
                with self._lock:
                    self._reap()
                    flying = len(self._in_flight)
                raise Timeout(
                    f"buffer pool: no buffer free after {timeout} s "
                    f"({flying} of {self.count} held by libzmq, "
                    f"{self.count - flying} by the caller)"
                )

    def send(
        self,
        sock: BlockingSocket,
        buffer: PooledBuffer,
        length: int | None = None,
        *,
        prefix: Sequence[Frame] = (),
    ) -> SendHold:
        """Send ``buffer[:length]`` without copying, as the last frame of one message.

        The buffer is given back whatever happens: it is in flight until libzmq
        releases it (if the send failed, once the exception is gone), then free.

        Args:
            sock: A zmq backend blocking socket (``ZmqNetwork.blocking``).
            buffer: A buffer of this pool, held by the caller.
            length: Bytes to send (0 .. size); None sends the whole buffer.
            prefix: Frames sent before it in the same message (a topic, a header),
                sent as ``send(..., copy=False)`` sends them.

        Returns:
            libzmq's hold on the buffer (``hold.done``, ``hold.wait(timeout)``).

        Raises:
            UnsupportedError: ``sock`` is not a zmq blocking socket (the sim's and the
                asyncio sockets have no zero-copy sends).
            StateError: ``buffer`` is not held (given back already), is another
                pool's, or is still exported.
            ValueError: ``length`` out of range.
            ClosedError: The pool or the socket is closed.
            Timeout: The socket's ``sndtimeo`` elapsed.
            FrameError: A prefix frame is not a frame.
        """
        target = _check_socket(sock)
        if buffer._pool is not self:
            raise StateError(f"{buffer!r} belongs to another pool")
        if length is None:
            length = self._size
        if isinstance(length, bool) or not isinstance(length, int) or not 0 <= length <= self._size:
            raise ValueError(f"length must be an int in 0..{self._size}, got {length!r}")
        with self._lock:
            if self._closed:
                raise ClosedError("buffer pool: cannot send: it is closed")
            buffer._revoke()
            frame = self._bases[buffer.index][:length]
            ref = self._releases.watch(frame)
            self._in_flight.append((buffer.index, ref))
        try:
            target.send([*prefix, frame] if prefix else [frame], copy=False)
        finally:
            del frame  # pyzmq's reference, if it took one, is now the only one
        return SendHold(ref, self._releases)

    def _give_back(self, buffer: PooledBuffer) -> None:
        with self._lock:
            buffer._revoke()
            self._free.append(buffer.index)
        self._releases.notify()

    def _all_released(self) -> bool:
        with self._lock:
            self._reap()
            return not self._in_flight

    def close(self, timeout: float = 1.0) -> None:
        """Refuse further acquires and sends; wait up to ``timeout`` s for libzmq.

        Idempotent. Buffers still held by libzmq at the deadline stay allocated (the
        pool keeps them alive), so nothing is freed under libzmq.

        Raises:
            Timeout: Some buffer was still in flight at the deadline (the pool is
                closed all the same; call again to wait again).
            ValueError: ``timeout`` is negative or not a number.
        """
        deadline = wallclock.monotonic() + _check_timeout(timeout)
        with self._lock:
            self._closed = True
        self._releases.notify()  # an acquire waiting now raises ClosedError
        if not self._releases.wait_until(self._all_released, deadline):
            raise Timeout(
                f"buffer pool: {self.in_flight} buffer(s) still held by libzmq after {timeout} s"
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

    Each region sent is a frame that points into the mapping. The file is never
    unmapped while libzmq holds a region: :meth:`close` waits, bounded, until every
    region was released, and raises :class:`~transportkit.Timeout` (leaving the file
    mapped, and refusing new sends) if one is still held. Thread-safe.

    The file must not be truncated by anyone while it is mapped (a read past the new
    end kills the process with SIGBUS; that is the operating system's rule).

    Args:
        path: The file to map (it must exist and be non-empty).

    Raises:
        OSError: The file cannot be opened (``FileNotFoundError``...).
        ValueError: It is empty (an empty file cannot be mapped).
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self._path = Path(path)
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
        self._in_flight: deque[weakref.ref[memoryview]] = deque()
        self._reap_at = _REAP_FLOOR
        self._releases = _Releases()
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
        """Forget the regions libzmq released (lock held).

        Sends reap only once the list has doubled since the last time, so that it
        stays within twice the regions in flight (plus 64) at a cost per send that
        does not grow with them.
        """
        self._in_flight = deque(ref for ref in self._in_flight if ref() is not None)
        self._reap_at = max(_REAP_FLOOR, 2 * len(self._in_flight))

    def _check_region(self, offset: int, length: int) -> None:
        if type(offset) is not int or type(length) is not int:
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
        self, sock: BlockingSocket, offset: int, length: int, *, prefix: Sequence[Frame] = ()
    ) -> SendHold:
        """Send the region ``[offset, offset + length)`` without copying it.

        Args:
            sock: A zmq backend blocking socket (``ZmqNetwork.blocking``).
            offset: The region's first byte.
            length: Its length in bytes.
            prefix: Frames sent before it in the same message.

        Returns:
            libzmq's hold on the region (``hold.done``, ``hold.wait(timeout)``).

        Raises:
            UnsupportedError: ``sock`` is not a zmq blocking socket.
            ValueError: The region is outside the file.
            ClosedError: The file is closed or closing, or the socket is closed.
            Timeout: The socket's ``sndtimeo`` elapsed.
            FrameError: A prefix frame is not a frame.
        """
        target = _check_socket(sock)
        self._check_region(offset, length)
        with self._lock:
            if self._base is None or self._closing:
                raise ClosedError(f"mapped file {self._path}: cannot send: it is closed")
            if len(self._in_flight) >= self._reap_at:
                self._reap()
            frame = self._base[offset : offset + length]
            ref = self._releases.watch(frame)
            self._in_flight.append(ref)
        try:
            target.send([*prefix, frame] if prefix else [frame], copy=False)
        finally:
            del frame
        return SendHold(ref, self._releases)

    def _all_released(self) -> bool:
        with self._lock:
            self._reap()
            return not self._in_flight

    def close(self, timeout: float = 1.0) -> None:
        """Unmap the file once libzmq holds none of its regions; idempotent.

        New sends (and reads) are refused from the start of the call. Waits up to
        ``timeout`` seconds for every region in flight to be released (delivered,
        written to the kernel, or dropped by a closed socket), then unmaps.

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
        if not self._releases.wait_until(self._all_released, deadline) or not self._unmap():
            raise Timeout(
                f"mapped file {self._path}: {self.in_flight or 'a'} region(s) still held "
                f"by libzmq after {timeout} s; the file stays mapped"
            )

    def _unmap(self) -> bool:
        with self._lock:
            if self._mmap is None:
                return True
            assert self._base is not None
            self._base.release()
            try:
                self._mmap.close()
            except BufferError:  # a view is alive after all: keep the mapping
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
