"""The asyncio sockets of the zmq backend, one class per kind, and their monitor.

Every socket is a ``zmq.asyncio`` socket plus a synchronous shadow of the same libzmq
socket. Sends and receives are first tried without waiting on the shadow; only when
that would block does the socket await readiness (``zmq.asyncio`` poll), then try
again. A message is therefore taken off the libzmq queue only in the same step that
returns it: cancelling a waiting ``recv`` never loses a message.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import struct
from collections.abc import Callable, Sequence
from typing import Any, Final, cast

import zmq
import zmq.asyncio

from transportkit._errors import ClosedError, Timeout
from transportkit._kinds import SocketKind
from transportkit._options import SocketOptions
from transportkit._socket import (
    Dealer,
    Frame,
    Message,
    Monitor,
    MonitorEvent,
    Pair,
    Publisher,
    Puller,
    Pusher,
    Requester,
    Router,
    Socket,
    SocketStats,
    Subscriber,
    Worker,
    XPublisher,
    XSubscriber,
    check_frames,
    check_manual,
    check_xsub_message,
)
from transportkit.zmq_backend import _accel
from transportkit.zmq_backend._errors import FRAME_ERRORS, frame_error, mapped_errors, translate
from transportkit.zmq_backend._options import (
    EndpointMap,
    attach_endpoint,
    check_conflatable,
    check_topic,
)
from transportkit.zmq_backend.connections import _Watch

__all__ = [
    "SOCKET_CLASSES",
    "ZmqDealer",
    "ZmqMonitor",
    "ZmqPair",
    "ZmqPublisher",
    "ZmqPuller",
    "ZmqPusher",
    "ZmqRequester",
    "ZmqRouter",
    "ZmqSocket",
    "ZmqSubscriber",
    "ZmqWorker",
    "ZmqXPublisher",
    "ZmqXSubscriber",
]

_EVENT_NAMES: Final = {int(event): str(event.name) for event in zmq.Event}
_EVENT_HEADER: Final = struct.Struct("=HI")
_monitor_ids = itertools.count()
_SPURIOUS_WAKE_PAUSE: Final = 0.001


def _readiness_waiter(
    asock: zmq.asyncio.Socket,
) -> Callable[[int], asyncio.Future[Any]] | None:
    """A one-future readiness wait on ``asock``, or None to use its public ``poll``.

    ``zmq.asyncio``'s ``Socket.poll`` wraps the socket's own event machinery in a
    ``Poller``, two more futures and their callbacks: about a third of the CPU of an
    asyncio round trip. The socket's ``_add_recv_event``/``_add_send_event`` with kind
    ``"poll"`` is what that machinery ends in, one future that resolves when the socket
    is ready and takes nothing from it (so cancelling it loses nothing). They are pyzmq
    internals (present since pyzmq 17): if they are ever missing, fall back to ``poll``.
    """
    add_recv = getattr(asock, "_add_recv_event", None)
    add_send = getattr(asock, "_add_send_event", None)
    if not (callable(add_recv) and callable(add_send)):
        return None

    def ready(flag: int) -> asyncio.Future[Any]:
        if flag == zmq.POLLIN:
            return cast(asyncio.Future[Any], add_recv("poll"))
        return cast(asyncio.Future[Any], add_send("poll"))

    return ready


def _not_cancelling() -> bool:
    """Whether the current task is not being cancelled (so a CancelledError is ours)."""
    task = asyncio.current_task()
    return task is None or task.cancelling() == 0


class _AsyncEnd:
    """An asyncio zmq socket with its synchronous shadow and the wait-then-retry loop.

    The shadow does not know when the socket is closed (touching it afterwards would
    use freed memory), so every use of it is preceded, in the same step, by a check of
    ``_closed``. Messages go through the accelerator with the asyncio socket itself:
    pyzmq zeroes its ``underlying`` when it is closed, so a call that runs Python code
    midway (a signal handler) sees the close and never touches the freed socket,
    which a re-read of the shadow's handle would not show.
    """

    def __init__(self, asock: zmq.asyncio.Socket) -> None:
        self._async = asock
        self._sock: zmq.Socket[bytes] = zmq.Socket.shadow(asock.underlying)
        self._closed = False
        self._readiness = _readiness_waiter(asock)
        # Whole messages in one call each (C when built; see _accel), non-blocking.
        self._recv_message = _accel.recv_message
        self._send_message = _accel.send_message
        # Timed waits: readiness future -> deadline, and the one timer that ends them.
        self._timed: dict[asyncio.Future[Any], float] = {}
        self._expired: set[asyncio.Future[Any]] = set()
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = math.inf
        self._timer_loop: asyncio.AbstractEventLoop | None = None

    def _where(self) -> str:
        raise NotImplementedError

    def _closed_error(self, action: str) -> ClosedError:
        return ClosedError(f"{self._where()}: cannot {action}: it is closed")

    def _deadline(self, timeout: float) -> float:
        """The loop time by which a wait of ``timeout`` seconds ends (inf: never)."""
        if timeout == math.inf:
            return math.inf
        if math.isnan(timeout):
            raise ValueError("timeout must be a number of seconds or math.inf, got nan")
        return asyncio.get_running_loop().time() + max(timeout, 0.0)

    async def _wait(self, flag: int, deadline: float, action: str) -> bool:
        """Wait until the socket may be ready for ``flag``; False once ``deadline`` passed.

        Consumes nothing. Raises ClosedError if the socket is closed while waiting.
        """
        if deadline == math.inf:
            poll_ms = -1
        else:
            loop = asyncio.get_running_loop()
            remaining = deadline - loop.time()
            if remaining <= 0:
                return False
            poll_ms = max(1, math.ceil(remaining * 1000))
        try:
            if self._readiness is not None:
                ready = self._readiness(flag)
                if poll_ms < 0:
                    await ready
                else:
                    # A timed wait, inlined (no coroutine per wait): one timer per
                    # socket ends it (see _expire), instead of asyncio.wait_for's
                    # timer armed and cancelled on every wait, which made an inproc
                    # asyncio round trip against a thread of this process 25-30%
                    # slower on a VM whose idle vCPU wakes slowly.
                    self._timed[ready] = deadline
                    if (
                        self._timer is None
                        or deadline < self._timer_at
                        or self._timer_loop is not loop
                    ):
                        self._arm(loop, deadline)
                    try:
                        await ready
                    except asyncio.CancelledError:
                        if ready in self._expired and _not_cancelling():
                            return False
                        raise
                    finally:
                        self._timed.pop(ready, None)
                        self._expired.discard(ready)
            else:
                # pyzmq's stub for the asyncio poll omits its ``flags`` parameter.
                await self._async.poll(poll_ms, flag)  # type: ignore[call-arg]
        except TimeoutError:
            return False
        except zmq.Again:
            # pyzmq ends a poll after rcvtimeo/sndtimeo on its own: just look again.
            pass
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if self._closed and (task is None or task.cancelling() == 0):
                raise self._closed_error(action) from None
            raise
        except zmq.ZMQError as exc:
            if self._closed:
                raise self._closed_error(action) from exc
            raise translate(exc, self._where(), action) from exc
        if self._closed:
            raise self._closed_error(action)
        return True

    async def _recv_frames(self, deadline: float | None, default_timeout: float) -> Message:
        """Receive one message, waiting until ``deadline`` (computed on first need)."""
        while True:
            if self._closed:
                raise self._closed_error("recv")
            try:
                return self._recv_message(self._async, zmq.NOBLOCK)
            except zmq.Again:
                pass
            except zmq.ZMQError as exc:
                raise translate(exc, self._where(), "recv") from exc
            if deadline is None:
                deadline = self._deadline(default_timeout)
            if not await self._wait(zmq.POLLIN, deadline, "recv"):
                raise Timeout(f"{self._where()}: recv timed out")

    def _arm(self, loop: asyncio.AbstractEventLoop, at: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = loop.call_at(at, self._expire, loop)
        self._timer_at = at
        self._timer_loop = loop

    def _expire(self, loop: asyncio.AbstractEventLoop) -> None:
        """End the timed waits whose deadline has come; re-arm for the next one."""
        self._timer, self._timer_at = None, math.inf
        # asyncio runs a timer up to one clock resolution early: the same slack here.
        now = loop.time() + getattr(loop, "_clock_resolution", 0.0)
        soonest = math.inf
        for future, at in list(self._timed.items()):
            if at <= now:
                del self._timed[future]
                self._expired.add(future)
                future.cancel()
            else:
                soonest = min(soonest, at)
        if soonest < math.inf:
            self._arm(loop, soonest)

    def _stop_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer, self._timer_at = None, math.inf

    def _try_recv_frames(self) -> Message | None:
        if self._closed:
            raise self._closed_error("recv")
        try:
            return self._recv_message(self._async, zmq.NOBLOCK)
        except zmq.Again:
            return None
        except zmq.ZMQError as exc:
            raise translate(exc, self._where(), "recv", nonblocking=True) from exc


class ZmqSocket(_AsyncEnd, Socket):
    """Base of the zmq backend's asyncio sockets; made by
    :meth:`~transportkit.zmq_backend.ZmqNetwork.socket` and friends.

    Not thread-safe, and bound to the event loop that first waits on it.
    """

    def __init__(
        self,
        asock: zmq.asyncio.Socket,
        options: SocketOptions,
        on_close: Callable[[object], None],
    ) -> None:
        super().__init__(asock)
        self._options = options
        self._stats = SocketStats(dropped=None, truncated=None)
        self._on_close = on_close
        self._last_endpoint: str | None = None
        self._monitor: ZmqMonitor | None = None
        self._endpoint_map: EndpointMap | None = None  # set by the network
        self._connwatch: _Watch | None = None  # set by the network: connections logged

    def _where(self) -> str:
        return f"{self.kind.value} socket ({self._last_endpoint or 'unattached'})"

    @property
    def options(self) -> SocketOptions:
        """The options the socket was made with."""
        return self._options

    @property
    def stats(self) -> SocketStats:
        """Sent and received counts; ``dropped`` and ``truncated`` are None (libzmq reports
        neither).
        """
        return self._stats

    @property
    def closed(self) -> bool:
        """True once :meth:`close` was called (here or by the network)."""
        return self._closed

    @property
    def last_endpoint(self) -> str | None:
        """The endpoint last bound (resolved by libzmq) or connected; None before any."""
        return self._last_endpoint

    @property
    def zmq_socket(self) -> zmq.asyncio.Socket:
        """The underlying ``zmq.asyncio`` socket (for options transportkit does not cover).

        Closing it behind transportkit's back is not supported; use :meth:`close`.
        """
        return self._async

    def bind(self, endpoint: str) -> str:
        """Bind and return the endpoint libzmq resolved (``tcp://127.0.0.1:*`` works).

        Raises:
            EndpointError: Malformed endpoint, or libzmq refused it.
            AddressInUseError: Something is already bound there.
            UnsupportedError: ``pgm``/``epgm`` on a libzmq built without OpenPGM.
            ClosedError: The socket is closed.
        """
        if self._closed:
            raise self._closed_error(f"bind {endpoint}")
        self._last_endpoint = attach_endpoint(
            self._sock, "bind", endpoint, self._where(), self._endpoint_map
        )
        return self._last_endpoint

    def connect(self, endpoint: str) -> None:
        """Connect (completes and reconnects in the background, as libzmq does).

        Raises:
            EndpointError: Malformed endpoint, or libzmq refused it.
            UnsupportedError: ``pgm``/``epgm`` on a libzmq built without OpenPGM.
            ClosedError: The socket is closed.
        """
        if self._closed:
            raise self._closed_error(f"connect {endpoint}")
        self._last_endpoint = attach_endpoint(
            self._sock, "connect", endpoint, self._where(), self._endpoint_map
        )

    def disconnect(self, endpoint: str) -> None:
        """Drop the connection to ``endpoint`` made by :meth:`connect`, and its queue.

        Raises:
            EndpointError: The socket is not connected to ``endpoint``.
            ClosedError: The socket is closed.
        """
        if self._closed:
            raise self._closed_error(f"disconnect {endpoint}")
        attach_endpoint(self._sock, "disconnect", endpoint, self._where(), self._endpoint_map)

    def close(self) -> None:
        """Close the socket (its monitor too); idempotent; never blocks.

        Unsent messages survive ``linger`` ms in libzmq's background threads. A
        ``recv`` or ``send`` waiting in another task raises ClosedError.
        """
        if self._closed:
            return
        if self._monitor is not None:
            self._monitor.close()
        self._closed = True
        self._stop_timer()
        self._async.close()
        self._on_close(self)

    def _close_from_any_thread(self) -> bool:
        """Close now, or hand the close to the socket's event loop if it runs elsewhere.

        An asyncio socket belongs to its loop's thread: closing it from another one
        while that loop runs would cancel the loop's futures and change its selector
        from the wrong thread. Returns True if the close was handed to the loop (it
        runs there soon; the network waits for it).
        """
        # pyzmq's loop of the socket, set when it first waited (pyzmq 17 onwards).
        loop = getattr(self._async, "_current_loop", None)
        if isinstance(loop, asyncio.AbstractEventLoop) and loop.is_running():
            try:
                here = asyncio.get_running_loop()
            except RuntimeError:
                here = None
            if loop is not here:
                try:
                    loop.call_soon_threadsafe(self.close)
                except RuntimeError:  # closed meanwhile: nothing runs on it any more
                    pass
                else:
                    return True
        self.close()
        return False

    def monitor(self) -> ZmqMonitor:
        """Start streaming this socket's libzmq lifecycle events.

        A socket has at most one monitor: starting another closes the previous one.
        The monitor is closed with the socket. On a network with
        ``log_connections=True``, libzmq's one monitor of the socket is the connection
        log's, whose thread hands each event on to this monitor too (events already
        queued when it starts may be among them); closing it leaves the log running.

        Raises:
            ClosedError: The socket is closed.
        """
        if self._closed:
            raise self._closed_error("monitor")
        if self._monitor is not None:
            self._monitor.close()
        address = f"inproc://transportkit.monitor.{id(self):x}.{next(_monitor_ids)}"
        if self._connwatch is not None:
            return self._forwarded_monitor(address, self._connwatch)
        with mapped_errors(self._where(), "monitor"):
            self._sock.monitor(address, zmq.EVENT_ALL)
            pair = self._async.context.socket(zmq.PAIR)
            pair.setsockopt(zmq.LINGER, 0)
            try:
                pair.connect(address)
            except BaseException:
                pair.close()
                self._sock.disable_monitor()
                raise
        self._monitor = ZmqMonitor(pair, self)
        return self._monitor

    def _forwarded_monitor(self, address: str, watch: _Watch) -> ZmqMonitor:
        """A monitor of a socket whose connections are logged: libzmq's one monitor
        is the log's, whose thread hands each event on to a PAIR bound at ``address``.
        """
        with mapped_errors(self._where(), "monitor"):
            source: zmq.Socket[bytes] = zmq.Context.shadow(self._async.context.underlying).socket(
                zmq.PAIR
            )
            source.setsockopt(zmq.LINGER, 0)
            try:
                source.bind(address)
                pair = self._async.context.socket(zmq.PAIR)
            except BaseException:
                source.close()
                raise
            pair.setsockopt(zmq.LINGER, 0)
            try:
                pair.connect(address)
            except BaseException:
                pair.close()
                source.close()
                raise
        watch.log.forward(watch, source)
        self._monitor = ZmqMonitor(pair, self)
        return self._monitor

    def _monitor_closed(self, monitor: ZmqMonitor) -> None:
        if self._monitor is monitor:
            if self._connwatch is not None:
                self._connwatch.log.forward(self._connwatch, None)
            elif not self._closed:
                self._sock.disable_monitor()
            self._monitor = None


class _Sending(ZmqSocket):
    """``send``/``try_send`` for the kinds that send."""

    async def send(self, frames: Sequence[Frame]) -> None:
        """Send one multipart message, waiting up to ``sndtimeo`` at the HWM.

        Raises:
            FrameError: ``frames`` breaks the rules of
                :func:`transportkit._socket.check_frames` (checked before anything is
                sent), or is multipart on a ``conflate`` socket. A frame larger than the
                peer's ``maxmsgsize`` is no error here: libzmq sends it, and the peer
                drops the connection (see :attr:`~transportkit.SocketOptions.maxmsgsize`).
            Timeout: ``sndtimeo`` elapsed while the socket could not send.
            StateError: The REQ/REP lockstep was broken.
            HostUnreachableError: A ``router_mandatory`` ROUTER has no such peer.
            ClosedError: The socket is (or became, while waiting) closed.
        """
        if self._options.conflate:
            check_conflatable(frames, self._where())
        deadline: float | None = None
        woken = False
        while True:
            if self._closed:
                raise self._closed_error("send")
            try:
                self._send_message(self._async, frames, zmq.NOBLOCK)
            except zmq.Again:
                pass
            except zmq.ZMQError as exc:
                raise translate(exc, self._where(), "send") from exc
            except FRAME_ERRORS as exc:
                raise frame_error(self._where(), frames, exc) from exc
            else:
                self._stats.sent += 1
                return
            if deadline is None:
                sndtimeo = self._options.sndtimeo
                deadline = self._deadline(math.inf if sndtimeo < 0 else sndtimeo / 1000)
            elif woken:
                # Ready for output, yet this message could not go (a ROUTER peer at
                # its HWM): do not spin.
                await asyncio.sleep(_SPURIOUS_WAKE_PAUSE)
            woken = await self._wait(zmq.POLLOUT, deadline, "send")
            if not woken:
                raise Timeout(f"{self._where()}: send timed out after {self._options.sndtimeo} ms")

    def try_send(self, frames: Sequence[Frame]) -> None:
        """Send without waiting; raise WouldBlock where :meth:`send` would wait."""
        if self._closed:
            raise self._closed_error("send")
        if self._options.conflate:
            check_conflatable(frames, self._where())
        try:
            self._send_message(self._async, frames, zmq.NOBLOCK)
        except zmq.ZMQError as exc:
            raise translate(exc, self._where(), "send", nonblocking=True) from exc
        except FRAME_ERRORS as exc:
            raise frame_error(self._where(), frames, exc) from exc
        self._stats.sent += 1


class _Receiving(ZmqSocket):
    """``recv``/``try_recv`` for the kinds that receive."""

    async def recv(self, timeout: float | None = None) -> Message:
        """Receive one message.

        Args:
            timeout: Seconds to wait; ``math.inf`` waits for ever whatever ``rcvtimeo``
                says; None waits ``rcvtimeo`` ms (-1: for ever).

        Raises:
            Timeout: Nothing arrived in time.
            StateError: The REQ/REP lockstep was broken.
            ClosedError: The socket is (or became, while waiting) closed.
        """
        if timeout is None:
            rcvtimeo = self._options.rcvtimeo
            timeout = math.inf if rcvtimeo < 0 else rcvtimeo / 1000
        frames = await self._recv_frames(None, timeout)
        self._stats.received += 1
        return frames

    def try_recv(self) -> Message | None:
        """Return the next waiting message, or None; never waits.

        Raises:
            ClosedError: The socket is closed.
        """
        frames = self._try_recv_frames()
        if frames is not None:
            self._stats.received += 1
        return frames

    async def poll(self, timeout: float = math.inf) -> bool:
        """Wait until a message is waiting (libzmq's ZMQ_EVENTS), taking nothing.

        Raises:
            ClosedError: The socket is (or became, while waiting) closed.
        """
        deadline = self._deadline(timeout)
        while True:
            if self._closed:
                raise self._closed_error("poll")
            try:
                events = cast(int, self._sock.get(zmq.EVENTS))
            except zmq.ZMQError as exc:
                raise translate(exc, self._where(), "poll") from exc
            if events & zmq.POLLIN:
                return True
            if not await self._wait(zmq.POLLIN, deadline, "poll"):
                return False


class ZmqPublisher(_Sending, Publisher):
    """PUB over pyzmq."""


class ZmqSubscriber(_Receiving, Subscriber):
    """SUB over pyzmq."""

    def __init__(
        self,
        asock: zmq.asyncio.Socket,
        options: SocketOptions,
        on_close: Callable[[object], None],
    ) -> None:
        super().__init__(asock, options, on_close)
        self._subscriptions: list[bytes] = []

    def subscribe(self, prefix: bytes) -> None:
        """Add a topic prefix (counted: subscribing twice needs two unsubscribes).

        Raises:
            FrameError: ``prefix`` is not bytes.
            ClosedError: The socket is closed.
        """
        check_topic(prefix, self._where())
        if self._closed:
            raise self._closed_error("subscribe")
        with mapped_errors(self._where(), "subscribe"):
            self._sock.setsockopt(zmq.SUBSCRIBE, prefix)
        self._subscriptions.append(prefix)

    def unsubscribe(self, prefix: bytes) -> None:
        """Remove one subscription to ``prefix``; like libzmq, ignore one never made.

        Raises:
            FrameError: ``prefix`` is not bytes.
            ClosedError: The socket is closed.
        """
        check_topic(prefix, self._where())
        if self._closed:
            raise self._closed_error("unsubscribe")
        if prefix not in self._subscriptions:
            return
        with mapped_errors(self._where(), "unsubscribe"):
            self._sock.setsockopt(zmq.UNSUBSCRIBE, prefix)
        self._subscriptions.remove(prefix)

    @property
    def subscriptions(self) -> tuple[bytes, ...]:
        """The prefixes subscribed to, in the order they were added."""
        return tuple(self._subscriptions)


class ZmqXPublisher(_Sending, _Receiving, XPublisher):
    """XPUB over pyzmq (libzmq's own XPUB, its options set before any bind or connect)."""

    def subscribe(self, prefix: bytes) -> None:
        """``xpub_manual``: ZMQ_SUBSCRIBE for the last subscriber heard from.

        Raises:
            StateError: The socket is not ``xpub_manual``.
            FrameError: ``prefix`` is not bytes.
            ClosedError: The socket is closed.
        """
        topic = check_manual(self, "subscribe", prefix, self._where())
        with mapped_errors(self._where(), "subscribe"):
            self._sock.setsockopt(zmq.SUBSCRIBE, topic)

    def unsubscribe(self, prefix: bytes) -> None:
        """``xpub_manual``: ZMQ_UNSUBSCRIBE for the last subscriber heard from.

        Raises:
            StateError: The socket is not ``xpub_manual``.
            FrameError: ``prefix`` is not bytes.
            ClosedError: The socket is closed.
        """
        topic = check_manual(self, "unsubscribe", prefix, self._where())
        with mapped_errors(self._where(), "unsubscribe"):
            self._sock.setsockopt(zmq.UNSUBSCRIBE, topic)


class ZmqXSubscriber(_Sending, _Receiving, XSubscriber):
    """XSUB over pyzmq (libzmq's own XSUB)."""

    def __init__(
        self,
        asock: zmq.asyncio.Socket,
        options: SocketOptions,
        on_close: Callable[[object], None],
    ) -> None:
        super().__init__(asock, options, on_close)
        self._subscriptions: list[bytes] = []

    def _checked(self, frames: Sequence[Frame]) -> tuple[list[Frame], tuple[bool, bytes] | None]:
        items = check_frames(frames)
        return items, check_xsub_message(items, self._where())

    def _note(self, what: tuple[bool, bytes] | None) -> None:
        if what is None:
            return
        add, topic = what
        if add:
            self._subscriptions.append(topic)
        elif topic in self._subscriptions:
            self._subscriptions.remove(topic)

    async def send(self, frames: Sequence[Frame]) -> None:
        """Send a (un)subscription or a data message upstream (see
        :class:`~transportkit.XSubscriber`); libzmq's XSUB never blocks.

        Raises:
            FrameError: ``frames`` breaks the rules of
                :func:`~transportkit._socket.check_frames`, or is a multipart message
                with a frame that starts with byte 0 or 1.
            ClosedError: The socket is closed.
        """
        items, what = self._checked(frames)
        await super().send(items)
        self._note(what)

    def try_send(self, frames: Sequence[Frame]) -> None:
        """Send without waiting (an XSUB never has to wait)."""
        items, what = self._checked(frames)
        super().try_send(items)
        self._note(what)

    @property
    def subscriptions(self) -> tuple[bytes, ...]:
        """The prefixes subscribed to, in the order they were added."""
        return tuple(self._subscriptions)


class ZmqRequester(_Sending, _Receiving, Requester):
    """REQ over pyzmq."""


class ZmqWorker(_Sending, _Receiving, Worker):
    """REP over pyzmq."""


class ZmqPusher(_Sending, Pusher):
    """PUSH over pyzmq."""


class ZmqPuller(_Receiving, Puller):
    """PULL over pyzmq."""


class ZmqPair(_Sending, _Receiving, Pair):
    """PAIR over pyzmq."""


class ZmqDealer(_Sending, _Receiving, Dealer):
    """DEALER over pyzmq."""


class ZmqRouter(_Sending, _Receiving, Router):
    """ROUTER over pyzmq."""


SOCKET_CLASSES: Final[dict[SocketKind, type[ZmqSocket]]] = {
    SocketKind.PUB: ZmqPublisher,
    SocketKind.SUB: ZmqSubscriber,
    SocketKind.REQ: ZmqRequester,
    SocketKind.REP: ZmqWorker,
    SocketKind.PUSH: ZmqPusher,
    SocketKind.PULL: ZmqPuller,
    SocketKind.PAIR: ZmqPair,
    SocketKind.DEALER: ZmqDealer,
    SocketKind.ROUTER: ZmqRouter,
    SocketKind.XPUB: ZmqXPublisher,
    SocketKind.XSUB: ZmqXSubscriber,
}
"""The asyncio socket class of each kind."""


class ZmqMonitor(_AsyncEnd, Monitor):
    """libzmq's socket monitor as a stream of :class:`~transportkit.MonitorEvent`.

    Made by :meth:`ZmqSocket.monitor`; closed with its socket.
    """

    def __init__(self, pair: zmq.asyncio.Socket, target: ZmqSocket) -> None:
        super().__init__(pair)
        self._target = target

    def _where(self) -> str:
        return f"monitor of {self._target._where()}"

    @property
    def closed(self) -> bool:
        """True once the monitor (or its socket) was closed."""
        return self._closed

    async def recv(self, timeout: float | None = None) -> MonitorEvent:
        """Wait for the next event; None or ``math.inf`` waits for ever.

        Raises:
            Timeout: No event within ``timeout`` seconds.
            ClosedError: The monitor or its socket is (or became) closed.
        """
        frames = await self._recv_frames(None, math.inf if timeout is None else timeout)
        return _parse_event(frames)

    def try_recv(self) -> MonitorEvent | None:
        """Return the next waiting event, or None."""
        frames = self._try_recv_frames()
        return None if frames is None else _parse_event(frames)

    def close(self) -> None:
        """Stop monitoring. Idempotent."""
        if self._closed:
            return
        self._target._monitor_closed(self)
        self._closed = True
        self._stop_timer()
        self._async.close(linger=0)


def _parse_event(frames: Message) -> MonitorEvent:
    event, value = _EVENT_HEADER.unpack_from(frames[0])
    endpoint = frames[1].decode(errors="replace") if len(frames) > 1 else ""
    return MonitorEvent(_EVENT_NAMES.get(event, f"EVENT_{event:#x}"), endpoint, value)
