"""Graceful shutdown: the one contract every long-running server of these patterns keeps.

``await server.shutdown(timeout=DEFAULT_SHUTDOWN_TIMEOUT)`` (or, for the function
servers :func:`~transportkit.patterns.serve_lazy_pirate` and
:func:`~transportkit.trading.serve_risk`, ``await stop.shutdown(timeout=...)`` on the
:class:`GracefulStop` given to them as ``stop=``) does, in order:

1. **Stop accepting.** No new request is taken: a server stops reading the socket its
   requests come on (a REP; Binary Star's and Freelance's ROUTER; Clone's and the
   last-value cache's snapshot ROUTER and upstream; the front end of the
   load-balancing and Paranoid Pirate queues; a Majordomo worker takes no new
   request). The Majordomo broker, whose clients and workers share one socket, keeps
   reading for its workers' replies and drops each new client request, counted in
   its stats' ``shutdown_dropped``. None of these protocols has a "going away" reply
   a client would understand, so a refused client sees what it sees of a dead
   server: a timeout, then its retry or failover.
2. **Drain.** What is in flight (a handler running, a request handed to a worker, a
   snapshot being sent, a Titanic dispatch) is finished and answered for at most
   ``timeout`` seconds of the loop's clock (virtual on the sim). At the deadline what
   is left is failed with the protocol's error reply where the protocol has one (Lazy
   Pirate's :data:`~transportkit.patterns.lazy_pirate.EMPTY_ANSWER` /
   :data:`~transportkit.patterns.lazy_pirate.NOT_AN_ANSWER`), given back where the
   protocol can (a Majordomo worker's DISCONNECT: the broker requeues the request),
   else dropped; each is counted in ``shutdown_dropped``.
3. **Close.** The server's sockets are closed with their own ``linger`` (0 by
   default), so replies just sent leave within it; the network's close waits at most
   that long for them.

``run()`` (or the serve function) then returns normally, and ``shutdown`` returns True
if nothing in flight was dropped or failed, False otherwise. ``shutdown`` is
idempotent (a second call waits for the first; a shorter timeout brings the deadline
forward) and bounded: it returns within ``timeout`` plus :data:`SHUTDOWN_GRACE`. Called
on a server that is not running, it closes the server at once and returns True, and
a later ``run()`` returns at once. ``timeout`` is between 0 (fail what is in flight
at once) and :data:`MAX_SHUTDOWN_TIMEOUT`; the default is
:data:`DEFAULT_SHUTDOWN_TIMEOUT`. Cancelling ``run()`` remains the hard stop.

Signals belong to the command-line layer (``transportkit.examples._main``),
not here: a pattern never installs a signal handler.
"""

from __future__ import annotations

import asyncio
import inspect
import math
from collections.abc import Awaitable, Callable
from typing import Any, Final, TypeVar

from transportkit._errors import ClosedError, Timeout
from transportkit._socket import Message, Receiver

__all__ = [
    "DEFAULT_SHUTDOWN_TIMEOUT",
    "MAX_SHUTDOWN_TIMEOUT",
    "SHUTDOWN_GRACE",
    "DrainTimeout",
    "GracefulStop",
    "check_shutdown_timeout",
    "stop_then_close",
]

T = TypeVar("T")

DEFAULT_SHUTDOWN_TIMEOUT: Final = 5.0
"""Seconds a server has, by default, to finish what is in flight once asked to stop."""

MAX_SHUTDOWN_TIMEOUT: Final = 3600.0
"""The longest ``timeout`` a shutdown accepts (an hour)."""

SHUTDOWN_GRACE: Final = 1.0
"""Seconds ``shutdown`` waits past its deadline for the loop to close its sockets and
return before it gives up waiting (and returns False)."""


def check_shutdown_timeout(timeout: object) -> float:
    """``timeout`` as a float, checked.

    Raises:
        ValueError: ``timeout`` is not a number from 0 to :data:`MAX_SHUTDOWN_TIMEOUT`.
    """
    if (
        isinstance(timeout, bool)
        or not isinstance(timeout, int | float)
        or not 0 <= timeout <= MAX_SHUTDOWN_TIMEOUT
    ):
        raise ValueError(
            f"shutdown timeout must be a number of seconds from 0 to {MAX_SHUTDOWN_TIMEOUT:g},"
            f" got {timeout!r}"
        )
    return float(timeout)


async def stop_then_close(
    graceful: GracefulStop, timeout: float, close: Callable[[], object]
) -> bool:
    """The body every server's ``shutdown(timeout)`` shares: check ``timeout``, stop
    ``graceful`` (the server's run loop drains within ``timeout``), then ``close()``
    (awaited when it is a coroutine function's result) whether or not the loop ran.

    Returns:
        True if nothing in flight was dropped at the deadline.

    Raises:
        ValueError: ``timeout`` is not from 0 to :data:`MAX_SHUTDOWN_TIMEOUT` seconds.
    """
    check_shutdown_timeout(timeout)
    clean = await graceful.shutdown(timeout)
    closing = close()
    if inspect.isawaitable(closing):
        await closing
    return clean


class DrainTimeout(Exception):
    """Work in flight did not finish before the shutdown's deadline (it was cancelled)."""


class GracefulStop:
    """The stop request of one server loop, and the loop's answer.

    The caller asks with :meth:`request` (synchronous: fine from a signal handler run
    by the event loop) or :meth:`shutdown` (which also waits for the loop to finish);
    the loop watches :attr:`requested`, bounds its in-flight work with :meth:`bounded`,
    and reports with :meth:`finished`. One object serves one loop at a time.
    """

    __slots__ = (
        "_deadline",
        "_done",
        "_event",
        "_expiring",
        "_requested",
        "_running",
        "_sleeper",
        "_timer",
        "_woke",
        "_worker",
        "clean",
    )

    def __init__(self) -> None:
        self._requested = False
        self._deadline = math.inf
        self._event: asyncio.Event | None = None
        self._done: asyncio.Event | None = None
        self._running = False
        self._timer: asyncio.TimerHandle | None = None
        self._worker: asyncio.Task[Any] | None = None
        self._expiring = False
        self._sleeper: asyncio.Task[Any] | None = None
        self._woke = False
        self.clean = True
        """False once the loop dropped or failed something in flight at the deadline."""

    @property
    def requested(self) -> bool:
        """True once a stop was requested."""
        return self._requested

    @property
    def running(self) -> bool:
        """True while a loop watching this stop is running."""
        return self._running

    @property
    def deadline(self) -> float:
        """The loop-clock time by which in-flight work must end (inf before a request)."""
        return self._deadline

    @property
    def event(self) -> asyncio.Event:
        """Set once a stop was requested (for loops that wait on an ``asyncio.Event``)."""
        if self._event is None:
            self._event = asyncio.Event()
            if self._requested:
                self._event.set()
        return self._event

    def remaining(self) -> float:
        """Seconds left before the deadline (inf before a request, never negative)."""
        if not self._requested:
            return math.inf
        return max(self._deadline - asyncio.get_running_loop().time(), 0.0)

    def expired(self) -> bool:
        """True once a stop was requested and its deadline has passed."""
        return self._requested and self.remaining() <= 0.0

    def request(self, timeout: float = DEFAULT_SHUTDOWN_TIMEOUT) -> None:
        """Ask the loop to stop, finishing its in-flight work within ``timeout`` seconds.

        A second request may bring the deadline forward, never back.

        Raises:
            ValueError: ``timeout`` is out of range (see :func:`check_shutdown_timeout`).
            RuntimeError: No event loop is running.
        """
        seconds = check_shutdown_timeout(timeout)
        now = asyncio.get_running_loop().time()
        self._deadline = min(self._deadline, now + seconds)
        self._requested = True
        self.event.set()
        sleeper = self._sleeper
        if sleeper is not None and not self._woke and sleeper is not asyncio.current_task():
            self._woke = True
            sleeper.cancel()
        if self._worker is not None:
            self._arm()

    def started(self) -> None:
        """Called by the loop as it starts (before its first receive)."""
        self._running = True
        self.clean = True
        if self._done is not None:
            self._done.clear()

    def finished(self) -> None:
        """Called by the loop once it has stopped and closed (or left) its sockets."""
        self._running = False
        if self._done is None:
            self._done = asyncio.Event()
        self._done.set()

    async def shutdown(self, timeout: float = DEFAULT_SHUTDOWN_TIMEOUT) -> bool:
        """Request the stop and wait (at most ``timeout`` + :data:`SHUTDOWN_GRACE`) for
        the loop to finish.

        Returns:
            True if the loop finished with nothing in flight dropped or failed (or no
            loop was running); False otherwise, or if it did not finish in time.

        Raises:
            ValueError: ``timeout`` is out of range.
        """
        self.request(timeout)
        if not self._running:
            return True
        if self._done is None:
            self._done = asyncio.Event()
        try:
            await asyncio.wait_for(self._done.wait(), self.remaining() + SHUTDOWN_GRACE)
        except TimeoutError:
            return False
        return self.clean

    async def bounded(self, work: Awaitable[T]) -> T:
        """Await ``work`` in this task; once a stop is requested, only until its
        deadline (a timer then cancels it). Costs no task.

        Raises:
            DrainTimeout: The deadline passed first (``work`` is cancelled, and
                :attr:`clean` becomes False).
        """
        task = asyncio.current_task()
        self._worker = task
        if self._requested:
            self._arm()
        try:
            result = await work
        except asyncio.CancelledError:
            if self._expiring and task is not None:
                self._expiring = False
                if task.uncancel() == 0:
                    self.clean = False
                    raise DrainTimeout(
                        "in-flight work did not finish before the shutdown deadline"
                    ) from None
            raise
        finally:
            self._worker = None
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
        if self._expiring and task is not None:  # the cancellation was swallowed
            self._expiring = False
            task.uncancel()
            self.clean = False
            raise DrainTimeout("in-flight work did not finish before the shutdown deadline")
        return result

    def _arm(self) -> None:
        """Cancel the work in flight (see :meth:`bounded`) at the deadline."""
        if self._timer is not None:
            self._timer.cancel()
        self._timer = asyncio.get_running_loop().call_at(self._deadline, self._expire)

    def _expire(self) -> None:
        self._timer = None
        worker = self._worker
        if worker is not None and not self._expiring:
            self._expiring = True
            worker.cancel()

    async def interruptible(self, wait: Awaitable[T]) -> T | None:
        """Await ``wait`` in this task; return None instead if a stop is requested first
        (or was already).

        Only for waits whose result may be lost (a poll, a sleep): the request wakes
        the task by cancelling it, which throws away what ``wait`` was about to return.
        A cancellation from elsewhere still propagates. Costs no task.
        """
        if self._requested:
            if inspect.iscoroutine(wait):
                wait.close()
            return None
        task = asyncio.current_task()
        self._sleeper = task
        try:
            result = await wait
        except asyncio.CancelledError:
            if self._woke and task is not None:
                self._woke = False
                if task.uncancel() == 0:
                    return None
            raise
        finally:
            self._sleeper = None
        if self._woke and task is not None:  # the wake's cancellation was swallowed
            self._woke = False
            task.uncancel()
            return None
        return result

    async def receive(self, sock: Receiver, timeout: float) -> Message | None:
        """``sock.recv(timeout=timeout)``, but None if a stop is requested meanwhile.

        For loops that must go on reading while they drain (a broker waits for its
        workers' replies): once a stop was requested this is a plain ``recv``. It
        polls, then takes the message, so the request never costs one.

        Raises:
            Timeout: Nothing came within ``timeout``.
            ClosedError: ``sock`` is closed.
        """
        if self._requested:
            return await sock.recv(timeout=timeout)
        message = sock.try_recv()
        if message is not None:
            return message
        waiting = await self.interruptible(sock.poll(timeout))
        if waiting is None:
            return None
        message = sock.try_recv() if waiting else None
        if message is None:
            raise Timeout(f"nothing received within {timeout} s")
        return message

    async def recv(self, sock: Receiver) -> Message | None:
        """The next message on ``sock``; None once a stop is requested or ``sock`` is
        closed. It polls, then takes the message: a message still in the socket when
        the request comes stays there (it was not accepted).
        """
        while True:
            try:
                waiting = await self.interruptible(sock.poll(math.inf))
            except ClosedError:
                return None
            if waiting is None:
                return None
            message = sock.try_recv()
            if message is not None:
                return message
