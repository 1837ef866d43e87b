"""A steerable proxy (libzmq's ``zmq_proxy_steerable``), on any backend.

:class:`Proxy` moves whole multipart messages between a *frontend* and a *backend*
socket, in both directions where the sockets allow it, as libzmq's proxy does. The
Guide's three devices are three pairings of socket kinds:

=================  ==================  ==================  ==============================
device             frontend            backend             what flows back
=================  ==================  ==================  ==============================
queue              ROUTER (clients)    DEALER (workers)    replies
streamer           PULL                PUSH                nothing
forwarder          XSUB (publishers)   XPUB (subscribers)  subscriptions, upstream
=================  ==================  ==================  ==============================

:func:`queue_device`, :func:`streamer` and :func:`forwarder` make the sockets and the
proxy in one call; :class:`Proxy` takes any sockets you made yourself.

What it does, as libzmq's ``proxy.cpp`` does it:

- **Capture.** Every message the proxy takes from either side is first sent, whole and
  unchanged (the same frames, so a ROUTER's routing id too), to the capture socket, if
  there is one, then forwarded. The capture sees no sign of the direction. Like
  libzmq the proxy sends to the capture socket with a blocking send: a PUB capture
  never waits (it drops at its HWM), a PUSH or DEALER capture at its HWM stalls the
  proxy, up to the capture socket's ``sndtimeo`` (after which the copy is dropped and
  counted in :attr:`ProxyStats.capture_dropped`; with the default ``sndtimeo`` of -1
  it stalls until the capture peer reads, as libzmq does). Use a PUB capture unless
  the copy must not be lost.
- **Control.** A REP or PAIR control socket takes single-frame commands ``PAUSE``,
  ``RESUME``, ``TERMINATE`` and ``STATISTICS``. ``STATISTICS`` is answered with eight
  frames, each an unsigned 64-bit integer: messages and bytes received by the
  frontend, messages and bytes sent by the frontend, then the same four for the
  backend (libzmq's order; like libzmq every *frame* counts as a message). The
  integers are little-endian (libzmq copies them in the host's byte order, which is
  little-endian on x86-64 and ARM64: the two agree there). A REP control socket
  answers every other command, known or not, with one empty frame, as libzmq does; a
  PAIR answers only ``STATISTICS``. Unknown commands change nothing and are counted
  in :attr:`ProxyStats.malformed`. The same steering is available as methods:
  :meth:`Proxy.pause`, :meth:`Proxy.resume`, :meth:`Proxy.stop`, :attr:`Proxy.stats`.
- **Pause.** While paused nothing is read from the frontend or the backend: messages
  wait in the sockets' queues (bounded by their HWMs, then by the peers' HWMs). The
  control socket is still served.
- **High-water marks.** A direction whose destination cannot take a message (a PUSH or
  DEALER at its HWM, a PUSH with no peer) blocks: the proxy holds that one message and
  reads nothing more from that side until it is sent, while the other direction goes
  on. libzmq does the same, except that it waits for ``POLLOUT`` before reading, so
  the held message stays in libzmq's queue rather than in the proxy; here at most one
  message per direction is held. A graceful stop (:meth:`Proxy.shutdown`) delivers
  it within its bound, or drops it at the deadline, counted in
  :attr:`ProxyStats.shutdown_dropped`; a hard stop (``TERMINATE``, :meth:`Proxy.stop`,
  a socket closed, the task cancelled) drops it at once, counted in
  :attr:`ProxyStats.abandoned`. A destination that drops at its HWM (PUB, XPUB,
  ROUTER) drops there, as it does for any sender.
- **Graceful stop.** ``await proxy.shutdown(timeout)`` keeps the contract of every
  server here (:mod:`transportkit.patterns._shutdown`): from the request on, nothing
  more is read from the frontend, the backend or the control socket (what waits in
  their queues was never taken, and goes with the sockets); the message being
  forwarded when the request came is finished (a capture copy waiting at the capture
  socket's HWM waits at most until the deadline, then is lost and counted in
  :attr:`ProxyStats.capture_dropped`); each held message is sent if its destination
  takes it before the deadline, paused or not, else dropped and counted in
  :attr:`ProxyStats.shutdown_dropped`; then the sockets are closed with their own
  ``linger``, the state becomes TERMINATED and :meth:`Proxy.run` returns.

A ROUTER destination with ``router_mandatory`` that has no such peer raises in libzmq's
proxy and ends it; here the message is dropped and counted in
:attr:`ProxyStats.unroutable`, and the proxy goes on. Messages larger than
``max_message_bytes`` (all frames) are dropped before capture and counted in
:attr:`ProxyStats.over_limit` (the frame counters include them: they were received).
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import math
import struct
from collections.abc import Iterable
from dataclasses import dataclass, fields
from typing import Final, cast

from transportkit._closing import Closeable
from transportkit._errors import (
    ClosedError,
    FrameError,
    HostUnreachableError,
    StateError,
    Timeout,
    WouldBlock,
)
from transportkit._kinds import SocketKind
from transportkit._log import limited
from transportkit._network import Network
from transportkit._options import SocketOptions
from transportkit._socket import Message, Receiver, Sender, Socket
from transportkit.patterns._limits import (
    DEFAULT_MAX_MESSAGE_BYTES,
    bounded_options,
    check_bound,
    check_finite_hwm,
    check_message_limit,
    message_bytes,
    too_large,
)
from transportkit.patterns._shutdown import (
    DEFAULT_SHUTDOWN_TIMEOUT,
    DrainTimeout,
    GracefulStop,
    check_shutdown_timeout,
)

__all__ = [
    "DEFAULT_PROXY_BURST",
    "PAUSE",
    "RESUME",
    "STATISTICS",
    "TERMINATE",
    "Proxy",
    "ProxyState",
    "ProxyStats",
    "forwarder",
    "parse_statistics",
    "queue_device",
    "streamer",
]

PAUSE: Final = b"PAUSE"
"""The control command that stops forwarding (libzmq's)."""
RESUME: Final = b"RESUME"
"""The control command that resumes forwarding."""
TERMINATE: Final = b"TERMINATE"
"""The control command that ends :meth:`Proxy.run`."""
STATISTICS: Final = b"STATISTICS"
"""The control command answered with the eight counters."""

DEFAULT_PROXY_BURST: Final = 1000
"""Messages the proxy forwards from one side before it looks at the other (libzmq's
``proxy_burst_size``)."""

logger = logging.getLogger(__name__)

_STAT = struct.Struct("<Q")
_RETRY: Final = 0.001
"""Seconds a graceful stop waits before it sends again a held message whose send timed
out (``sndtimeo``), so that a short ``sndtimeo`` never spins the loop."""
_CONTROL_KINDS: Final = frozenset({SocketKind.REP, SocketKind.PAIR})


class ProxyState(enum.Enum):
    """What a :class:`Proxy` is doing."""

    ACTIVE = "active"
    PAUSED = "paused"
    TERMINATED = "terminated"


@dataclass(slots=True)
class ProxyStats:
    """A proxy's counters.

    The first eight are libzmq's, in the order of the ``STATISTICS`` reply, and count
    frames (each part of a multipart message counts once, as libzmq counts it).

    Attributes:
        frontend_received: Frames read from the frontend.
        frontend_received_bytes: Their bytes.
        frontend_sent: Frames sent on the frontend.
        frontend_sent_bytes: Their bytes.
        backend_received: Frames read from the backend.
        backend_received_bytes: Their bytes.
        backend_sent: Frames sent on the backend.
        backend_sent_bytes: Their bytes.
        forwarded: Whole messages sent frontend to backend.
        returned: Whole messages sent backend to frontend (replies, subscriptions).
        captured: Whole messages sent to the capture socket.
        capture_dropped: Copies the capture socket did not take within its
            ``sndtimeo``.
        unroutable: Messages a ``router_mandatory`` ROUTER destination had no peer for.
        abandoned: Messages held at a blocked destination when a hard stop
            (``TERMINATE``, :meth:`Proxy.stop`, a closed socket, cancellation) ended
            the run.
        shutdown_dropped: Messages held at a blocked destination that a graceful stop
            (:meth:`Proxy.shutdown`) could not deliver before its deadline. A held
            message that is lost counts in exactly one of ``abandoned`` and
            ``shutdown_dropped``.
        over_limit: Messages over ``max_message_bytes``, dropped.
        malformed: Control messages that are not one of the four commands, and
            messages the destination refused as ill-formed for its kind (an XSUB
            refuses a multipart message with a frame that starts with byte 0 or 1,
            which libzmq would read as a subscription), dropped.
        commands: Control commands obeyed (over the socket or by method).
    """

    frontend_received: int = 0
    frontend_received_bytes: int = 0
    frontend_sent: int = 0
    frontend_sent_bytes: int = 0
    backend_received: int = 0
    backend_received_bytes: int = 0
    backend_sent: int = 0
    backend_sent_bytes: int = 0
    forwarded: int = 0
    returned: int = 0
    captured: int = 0
    capture_dropped: int = 0
    unroutable: int = 0
    abandoned: int = 0
    shutdown_dropped: int = 0
    over_limit: int = 0
    malformed: int = 0
    commands: int = 0

    def libzmq_counters(self) -> tuple[int, int, int, int, int, int, int, int]:
        """The eight counters of libzmq's ``STATISTICS`` reply, in its order."""
        return (
            self.frontend_received,
            self.frontend_received_bytes,
            self.frontend_sent,
            self.frontend_sent_bytes,
            self.backend_received,
            self.backend_received_bytes,
            self.backend_sent,
            self.backend_sent_bytes,
        )

    def as_dict(self) -> dict[str, int]:
        """Every counter by name."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


def parse_statistics(reply: Message) -> tuple[int, int, int, int, int, int, int, int]:
    """Decode a ``STATISTICS`` reply (from this proxy or libzmq's on a little-endian host).

    Raises:
        ValueError: ``reply`` is not eight frames of eight bytes.
    """
    if len(reply) != 8 or any(len(frame) != 8 for frame in reply):
        raise ValueError(f"a STATISTICS reply is 8 frames of 8 bytes, got {reply!r:.120}")
    a, b, c, d, e, f, g, h = (_STAT.unpack(frame)[0] for frame in reply)
    return a, b, c, d, e, f, g, h


class _Direction:
    """One way through the proxy: where from, where to, what to count."""

    __slots__ = ("dst", "held", "name", "recv_counts", "send_counts", "sending", "src")

    def __init__(self, name: str, src: Receiver, dst: Sender, recv: str, send: str) -> None:
        self.name = name
        self.src = src
        self.dst = dst
        self.recv_counts = recv
        self.send_counts = send
        self.held: Message | None = None
        self.sending: asyncio.Task[None] | None = None


class Proxy(Closeable):
    """Forwards whole messages between two sockets, steerable (``zmq_proxy_steerable``).

    The behaviour (capture, control commands, pause, what happens at a high-water
    mark) is libzmq's, described in the module docstring with the few differences.
    Written against transportkit's interfaces only, so it runs on every backend.

    The proxy owns the sockets it is given: :meth:`close` closes them all.
    ``await proxy.shutdown(timeout)`` stops it gracefully (the held messages delivered
    within ``timeout``, see the module docstring); :meth:`stop` and :meth:`close` are
    the hard stops.

    Attributes:
        frontend: The frontend socket.
        backend: The backend socket.
        capture: The capture socket, or None.
        control: The control socket (REP or PAIR), or None.
        stats: The live counters (:class:`ProxyStats`).
        max_message_bytes: Largest message forwarded (None: no limit).
    """

    def __init__(
        self,
        frontend: Socket,
        backend: Socket,
        *,
        capture: Socket | None = None,
        control: Socket | None = None,
        max_message_bytes: int | None = DEFAULT_MAX_MESSAGE_BYTES,
        burst: int = DEFAULT_PROXY_BURST,
    ) -> None:
        """Proxy between ``frontend`` and ``backend``.

        A direction exists where its source can receive and its destination can send:
        ROUTER/DEALER and XSUB/XPUB have both, PULL/PUSH only frontend to backend.

        Args:
            frontend: The socket facing the clients (or publishers, or pushers).
            backend: The socket facing the workers (or subscribers, or pullers).
            capture: A socket that can send (PUB is the usual choice), or None.
            control: A REP or PAIR socket taking the four commands, or None.
            max_message_bytes: Largest message forwarded, all frames (default 1 MiB;
                None: no limit); larger ones are dropped and counted.
            burst: Messages taken from one side before the other is served (default
                1000, libzmq's).

        Raises:
            ValueError: No direction can flow, the capture socket cannot send, the
                control socket is not REP or PAIR, the same socket is given twice, or
                a bound is not an int >= 1.
        """
        sockets = [s for s in (frontend, backend, capture, control) if s is not None]
        if len({id(s) for s in sockets}) != len(sockets):
            raise ValueError("frontend, backend, capture and control must be distinct sockets")
        if capture is not None and not isinstance(capture, Sender):
            raise ValueError(f"the capture socket must be able to send, got {capture.kind.value}")
        if control is not None and control.kind not in _CONTROL_KINDS:
            raise ValueError(f"the control socket must be REP or PAIR, got {control.kind.value}")
        self.max_message_bytes = check_message_limit(max_message_bytes)
        self._burst = check_bound("burst", burst)
        self.frontend: Final = frontend
        self.backend: Final = backend
        self.capture: Final = capture
        self.control: Final = control
        self.stats: Final = ProxyStats()
        self._directions: list[_Direction] = []
        if isinstance(frontend, Receiver) and isinstance(backend, Sender):
            self._directions.append(
                _Direction("forward", frontend, backend, "frontend_received", "backend_sent")
            )
        if isinstance(backend, Receiver) and isinstance(frontend, Sender):
            self._directions.append(
                _Direction("return", backend, frontend, "backend_received", "frontend_sent")
            )
        if not self._directions:
            raise ValueError(
                f"nothing can flow from a {frontend.kind.value} frontend to a "
                f"{backend.kind.value} backend, nor back"
            )
        self._state = ProxyState.ACTIVE
        self._running = False
        self._graceful = GracefulStop()
        # The run's waits (see _wait): one poll task per socket it would read, kept
        # from one wait to the next until its socket is ready, and the future the
        # run task sleeps on, resolved by any of them, a held send, or a command.
        self._watchers: dict[int, asyncio.Task[bool]] = {}
        self._signal: asyncio.Future[None] | None = None

    @property
    def state(self) -> ProxyState:
        """ACTIVE, PAUSED or TERMINATED."""
        return self._state

    def pause(self) -> None:
        """Stop forwarding until :meth:`resume` (the control socket is still served).

        Idempotent; no effect once terminated.
        """
        self._command(PAUSE)

    def resume(self) -> None:
        """Resume forwarding after :meth:`pause`. Idempotent; no effect once terminated."""
        self._command(RESUME)

    def stop(self) -> None:
        """Make :meth:`run` return at once (``TERMINATE``, the hard stop: a held
        message is dropped, counted in :attr:`ProxyStats.abandoned`); the sockets stay
        open until :meth:`close`. Idempotent. See :meth:`shutdown` for the graceful stop.
        """
        self._command(TERMINATE)

    def _command(self, command: bytes) -> bool:
        if command == STATISTICS:
            self.stats.commands += 1
            return True
        if command not in (PAUSE, RESUME, TERMINATE):
            return False
        self.stats.commands += 1
        if self._state is not ProxyState.TERMINATED:
            state = {
                PAUSE: ProxyState.PAUSED,
                RESUME: ProxyState.ACTIVE,
                TERMINATE: ProxyState.TERMINATED,
            }[command]
            if state is not self._state:
                logger.info("proxy %s -> %s", self._state.value, state.value)
            self._state = state
        self._poke()
        return True

    async def run(self) -> None:
        """Forward until ``TERMINATE`` (or :meth:`stop`), a graceful stop
        (:meth:`shutdown`), a socket is closed, or the task is cancelled; then return
        (cancellation propagates).

        Nothing the peers send makes it raise: bad control messages, unroutable,
        refused and oversized messages are counted. A socket closed under it ends the
        run. After ``TERMINATE`` or :meth:`shutdown` a new :meth:`run` returns at once.

        Raises:
            StateError: The proxy is already running (in another task).
        """
        if self._running:
            raise StateError("this proxy is already running")
        graceful = self._graceful
        if graceful.requested:
            return
        self._running = True
        graceful.started()
        try:
            while self._state is not ProxyState.TERMINATED:
                if graceful.requested:
                    await self._drain()
                    break
                await self._step()
        except ClosedError:
            return
        finally:
            self._running = False
            await self._release()
            if graceful.requested:
                self._terminated()
                self.close()
            graceful.finished()

    async def shutdown(self, timeout: float = DEFAULT_SHUTDOWN_TIMEOUT) -> bool:
        """Stop gracefully: read nothing more, deliver the held messages within
        ``timeout`` seconds of the loop's clock, close the sockets with their
        ``linger``, make :meth:`run` return (see the module docstring).

        Idempotent (a second call waits for the first; a shorter ``timeout`` brings the
        deadline forward). On a proxy that is not running it closes the sockets at
        once, and a later :meth:`run` returns at once. It returns within ``timeout``
        plus :data:`~transportkit.patterns._shutdown.SHUTDOWN_GRACE` (1 s).

        Returns:
            True if nothing the proxy had taken was lost: every held message was
            delivered and no capture copy was cut at the deadline.

        Raises:
            ValueError: ``timeout`` is not from 0 to 3600 seconds.
        """
        check_shutdown_timeout(timeout)
        graceful = self._graceful
        if not self._running:
            graceful.request(timeout)
            self._terminated()
            self.close()
            return True
        graceful.request(timeout)
        self._poke()
        clean = await graceful.shutdown(timeout)
        self.close()
        return clean

    def _terminated(self) -> None:
        if self._state is not ProxyState.TERMINATED:
            logger.info("proxy %s -> %s", self._state.value, ProxyState.TERMINATED.value)
            self._state = ProxyState.TERMINATED

    async def _drain(self) -> None:
        """The graceful stop: send the held messages until the deadline (or a hard
        stop), then drop and count what is still held.
        """
        graceful = self._graceful
        while self._state is not ProxyState.TERMINATED:
            holding = [way for way in self._directions if way.held is not None]
            if not holding or graceful.expired():
                break
            for way in holding:
                if way.sending is None:
                    way.sending = self._start_send(way)
            if not any(way.sending is not None and way.sending.done() for way in holding):
                await self._sleep(graceful.remaining())
            for way in holding:
                if way.sending is not None and way.sending.done():
                    task, way.sending = way.sending, None
                    task.result()  # a ClosedError ends the run
                    if way.held is not None:  # ``sndtimeo`` elapsed: try again soon
                        await asyncio.sleep(min(_RETRY, graceful.remaining()))
        if self._state is ProxyState.TERMINATED:
            return  # a hard stop: what is held is abandoned
        for way in self._directions:
            if way.sending is not None:
                way.sending.cancel()
                await asyncio.gather(way.sending, return_exceptions=True)
                way.sending = None
            if way.held is not None:
                way.held = None
                self.stats.shutdown_dropped += 1
                graceful.clean = False
                self._warn(
                    "shutdown_dropped",
                    f"graceful stop's deadline: the message held for the {way.name} way dropped",
                )

    async def _step(self) -> None:
        if self.control is not None:
            self._serve_control()
        if self._state is ProxyState.ACTIVE:
            for way in self._directions:
                if way.held is None and way.sending is None and not self._graceful.requested:
                    await self._forward(way)
        if self._state is ProxyState.TERMINATED or self._graceful.requested:
            return
        await self._wait()

    async def _wait(self) -> None:
        """Wait until something can be done: a message on a side that may be read, a
        held message sent, a control message, or a method call.

        A socket's poll task lives until that socket is ready, so an idle side costs
        nothing per message on the other: one message costs one poll task and one
        future, not a task per socket and per wait (which made a forwarder at 2,000
        updates/s spend about 0.35 ms of CPU on each).
        """
        watch: list[Receiver] = []
        if self.control is not None:
            watch.append(cast(Receiver, self.control))
        if self._state is ProxyState.ACTIVE:
            for way in self._directions:
                if way.held is not None and way.sending is None:
                    way.sending = self._start_send(way)
                if way.sending is None:
                    watch.append(way.src)
        watchers = self._watchers
        ready = False
        for sock in watch:
            task = watchers.get(id(sock))
            if task is None:
                task = asyncio.ensure_future(sock.poll(math.inf))
                task.add_done_callback(self._poke)
                watchers[id(sock)] = task
            ready = ready or task.done()
        sending = any(way.sending is not None and way.sending.done() for way in self._directions)
        if not ready and not sending:
            await self._sleep(math.inf)
        for key, task in list(watchers.items()):
            if task.done():
                del watchers[key]
                if not task.cancelled():
                    task.result()  # a ClosedError ends the run
        for way in self._directions:
            if way.sending is not None and way.sending.done():
                done, way.sending = way.sending, None
                done.result()  # a ClosedError ends the run

    def _start_send(self, way: _Direction) -> asyncio.Task[None]:
        task = asyncio.ensure_future(self._send_held(way))
        task.add_done_callback(self._poke)
        return task

    def _poke(self, _: object = None) -> None:
        """Wake the run task from :meth:`_sleep` (something changed)."""
        signal = self._signal
        if signal is not None and not signal.done():
            signal.set_result(None)

    async def _sleep(self, timeout: float) -> None:
        """Sleep until :meth:`_poke` or ``timeout`` seconds."""
        signal = asyncio.get_running_loop().create_future()
        self._signal = signal
        try:
            if math.isinf(timeout):
                await signal
            else:
                await asyncio.wait([signal], timeout=timeout)
        finally:
            self._signal = None
            signal.cancel()

    async def _send_held(self, way: _Direction) -> None:
        """Send the one held message, waiting at the destination's HWM."""
        message = way.held
        assert message is not None
        try:
            await way.dst.send(message)
        except Timeout:
            return  # ``sndtimeo`` elapsed: still held, tried again
        except HostUnreachableError:
            self.stats.unroutable += 1
        else:
            self._sent(way, message)
        way.held = None

    async def _forward(self, way: _Direction) -> None:
        """Forward up to a burst of waiting messages on ``way``."""
        stats = self.stats
        for _ in range(self._burst):
            if self._state is not ProxyState.ACTIVE or self._graceful.requested:
                return
            message = way.src.try_recv()
            if message is None:
                return
            self._count(way.recv_counts, message)
            if too_large(message, self.max_message_bytes):
                stats.over_limit += 1
                self._warn("over_limit", "message over max_message_bytes, dropped")
                continue
            if self.capture is not None:
                await self._capture(message)
            try:
                way.dst.try_send(message)
            except WouldBlock:
                way.held = message  # this direction blocks, as libzmq's does
                return
            except HostUnreachableError:
                stats.unroutable += 1
                self._warn("unroutable", "no such peer at the ROUTER destination, dropped")
                continue
            except FrameError as exc:
                stats.malformed += 1  # the destination cannot send it as it is
                self._warn("malformed", f"refused by the destination ({exc}), dropped")
                continue
            self._sent(way, message)

    async def _capture(self, message: Message) -> None:
        capture = self.capture
        assert capture is not None
        try:
            capture.try_send(message)
        except WouldBlock:
            try:
                # libzmq's blocking send, up to sndtimeo (and a graceful stop's deadline)
                await self._graceful.bounded(capture.send(message))
            except Timeout:
                self.stats.capture_dropped += 1
                self._warn("capture_dropped", "the capture socket's sndtimeo elapsed, copy lost")
                return
            except DrainTimeout:
                self.stats.capture_dropped += 1
                self._warn("capture_dropped", "graceful stop's deadline: capture copy lost")
                return
        self.stats.captured += 1

    def _sent(self, way: _Direction, message: Message) -> None:
        self._count(way.send_counts, message)
        if way.name == "forward":
            self.stats.forwarded += 1
        else:
            self.stats.returned += 1

    def _count(self, counter: str, message: Message) -> None:
        stats = self.stats
        setattr(stats, counter, getattr(stats, counter) + len(message))
        nbytes = f"{counter}_bytes"
        setattr(stats, nbytes, getattr(stats, nbytes) + message_bytes(message))

    def _serve_control(self) -> None:
        assert self.control is not None
        receiver = cast(Receiver, self.control)
        control = cast(Sender, self.control)
        for _ in range(self._burst):
            message = receiver.try_recv()
            if message is None:
                return
            command = message[0] if len(message) == 1 else None
            if command is None or not self._command(command):
                self.stats.malformed += 1
                self._warn("malformed", "unknown control command, ignored")
            if command == STATISTICS:
                counters = self.stats.libzmq_counters()
                reply = [_STAT.pack(value) for value in counters]
                self._reply(control, reply)
            elif control.kind is SocketKind.REP:
                self._reply(control, [b""])  # REP must answer; libzmq answers empty

    @staticmethod
    def _warn(counter: str, reason: str) -> None:
        limited(
            logger,
            logging.WARNING,
            counter,
            "proxy: %s",
            reason,
            extra={"reason": reason, "counter": counter},
        )

    @staticmethod
    def _reply(control: Sender, reply: list[bytes]) -> None:
        # A PAIR peer at its HWM or gone: the reply is lost, as with libzmq.
        with contextlib.suppress(WouldBlock, HostUnreachableError):
            control.try_send(reply)

    async def _release(self) -> None:
        watchers = list(self._watchers.values())
        self._watchers.clear()
        for task in watchers:
            task.cancel()
        await asyncio.gather(*watchers, return_exceptions=True)
        for way in self._directions:
            if way.sending is not None:
                way.sending.cancel()
                await asyncio.gather(way.sending, return_exceptions=True)
                way.sending = None
            if way.held is not None:
                self.stats.abandoned += 1
                self._warn("abandoned", f"stopped holding a message for the {way.name} way")
                way.held = None

    def close(self) -> None:
        """Close every socket of the proxy (a running :meth:`run` returns). Idempotent."""
        for sock in (self.frontend, self.backend, self.capture, self.control):
            if sock is not None:
                sock.close()


Endpoints = str | Iterable[str]


def _device(
    network: Network,
    frontend_kind: SocketKind,
    backend_kind: SocketKind,
    *,
    frontend: Endpoints,
    backend: Endpoints,
    frontend_connect: Endpoints,
    capture: Endpoints | None,
    control: Endpoints | None,
    options: SocketOptions | None,
    max_message_bytes: int | None,
) -> Proxy:
    opts = SocketOptions() if options is None else options
    check_finite_hwm(opts, "proxy options", "sndhwm", "rcvhwm")
    limit = check_message_limit(max_message_bytes)
    receiving = bounded_options(opts, limit)  # for the bound sockets only
    opened: list[Socket] = []

    def make(kind: SocketKind, bind: Endpoints, connect: Endpoints = ()) -> Socket:
        sock = network.socket(
            kind, bind=bind, connect=connect, options=opts if connect else receiving
        )
        opened.append(sock)
        return sock

    try:
        front = make(frontend_kind, frontend, frontend_connect)
        back = make(backend_kind, backend)
        cap = None if capture is None else make(SocketKind.PUB, capture)
        ctl = None if control is None else make(SocketKind.REP, control)
        return Proxy(front, back, capture=cap, control=ctl, max_message_bytes=limit)
    except BaseException:
        for sock in opened:
            sock.close()
        raise


def queue_device(
    network: Network,
    *,
    frontend: Endpoints,
    backend: Endpoints,
    capture: Endpoints | None = None,
    control: Endpoints | None = None,
    options: SocketOptions | None = None,
    max_message_bytes: int | None = DEFAULT_MAX_MESSAGE_BYTES,
) -> Proxy:
    """The Guide's queue device: a bound ROUTER frontend for REQ/DEALER clients, a
    bound DEALER backend for REP/ROUTER workers.

    Args:
        network: Makes the sockets.
        frontend: Endpoint(s) the ROUTER binds.
        backend: Endpoint(s) the DEALER binds.
        capture: Endpoint(s) of a capture PUB to bind, or None for no capture.
        control: Endpoint(s) of a control REP to bind, or None.
        options: Options of every socket (HWMs must not be 0); ``maxmsgsize`` defaults
            to ``max_message_bytes`` on the bound receiving sockets.
        max_message_bytes: Largest message forwarded (default 1 MiB; None: no limit).

    Raises:
        ValueError: An HWM in ``options`` is 0, or a bound is invalid.
        TransportError: A socket could not be made (nothing is left open).
    """
    return _device(
        network,
        SocketKind.ROUTER,
        SocketKind.DEALER,
        frontend=frontend,
        backend=backend,
        frontend_connect=(),
        capture=capture,
        control=control,
        options=options,
        max_message_bytes=max_message_bytes,
    )


def streamer(
    network: Network,
    *,
    frontend: Endpoints,
    backend: Endpoints,
    capture: Endpoints | None = None,
    control: Endpoints | None = None,
    options: SocketOptions | None = None,
    max_message_bytes: int | None = DEFAULT_MAX_MESSAGE_BYTES,
) -> Proxy:
    """The Guide's streamer: a bound PULL frontend for pushers, a bound PUSH backend
    for pullers. At the backend's HWM (or with no puller) the stream blocks.

    Arguments and errors as :func:`queue_device`.
    """
    return _device(
        network,
        SocketKind.PULL,
        SocketKind.PUSH,
        frontend=frontend,
        backend=backend,
        frontend_connect=(),
        capture=capture,
        control=control,
        options=options,
        max_message_bytes=max_message_bytes,
    )


def forwarder(
    network: Network,
    *,
    frontend: Endpoints = (),
    backend: Endpoints,
    upstream: Endpoints = (),
    capture: Endpoints | None = None,
    control: Endpoints | None = None,
    options: SocketOptions | None = None,
    max_message_bytes: int | None = DEFAULT_MAX_MESSAGE_BYTES,
) -> Proxy:
    """The Guide's forwarder: an XSUB frontend facing the publishers, a bound XPUB
    backend for subscribers. Subscriptions flow upstream through it, so publishers
    send only what someone downstream subscribed to.

    Args:
        network: Makes the sockets.
        frontend: Endpoint(s) the XSUB binds (publishers connect to it).
        backend: Endpoint(s) the XPUB binds (subscribers connect to it).
        upstream: Endpoint(s) the XSUB connects to (publishers that bind), instead of
            or as well as ``frontend``.
        capture: As :func:`queue_device`.
        control: As :func:`queue_device`.
        options: As :func:`queue_device`.
        max_message_bytes: As :func:`queue_device`.

    Raises:
        ValueError: Neither ``frontend`` nor ``upstream`` is given, an HWM in
            ``options`` is 0, or a bound is invalid.
        TransportError: A socket could not be made (nothing is left open).
    """
    if not frontend and not upstream:
        raise ValueError("a forwarder needs a frontend to bind or an upstream to connect to")
    return _device(
        network,
        SocketKind("XSUB"),
        SocketKind("XPUB"),
        frontend=frontend,
        backend=backend,
        frontend_connect=upstream,
        capture=capture,
        control=control,
        options=options,
        max_message_bytes=max_message_bytes,
    )
