r"""The Titanic Service Protocol, 9/TSP: disconnected reliability over Majordomo.

Titanic sits beside a Majordomo broker, a worker to clients and a client to workers.
A client gives it a request for a service that may not be running; Titanic stores the
request on disk and answers with a UUID at once, forwards the request to the service
when the broker says (8/MMI ``mmi.service``) the service has a worker, stores the
reply, and hands it out whenever the client asks with that UUID, until the client
closes it. Clients and workers need never be up at the same time.

The services, carried over 7/MDP (frames of the request body and the reply body):

===================  ==================================  ==============================
service              request                             reply
===================  ==================================  ==============================
``titanic.request``  ``[service, body...]``              ``[b"200", uuid]``
``titanic.reply``    ``[uuid]``                          ``[b"200", reply...]``,
                                                         ``[b"300"]`` pending,
                                                         ``[b"400"]`` unknown
``titanic.close``    ``[uuid]``                          ``[b"200"]`` (known or not)
===================  ==================================  ==============================

A UUID is 32 hexadecimal characters, as the Guide's ``uuid4().hex`` (lower case; a
client may send it in upper case). Status frames are the bare three digits (the
Guide's client compares them whole); :class:`TitanicClient` reads any status 9/TSP
allows (three digits, then nothing or a space and text: ``b"200 OK"``) and takes
anything else (``b"2000"``) for a ProtocolError. What 9/TSP leaves open is decided so:

- A ``titanic.request`` that is not a non-empty service name followed by at least one
  body frame, or that names a ``titanic.*`` or ``mmi.*`` service (which Titanic could
  never dispatch), and a ``titanic.reply`` or ``titanic.close`` that is not exactly
  one UUID, are answered ``400`` (the client SHOULD NOT retry) and counted
  (``stats.malformed``).
- A request larger than ``max_request_bytes`` is answered ``400`` (retrying would not
  help), one past ``max_requests`` stored, or one the disk refused, ``500`` (retry
  later); both bounds are counted in ``stats.over_limit``.
- A reply of the real service larger than ``max_reply_bytes`` is not stored; the
  request is answered ``500`` from then on (``stats.over_limit``).

Storage: a directory, one file per request (``<uuid>.req``) and per reply
(``<uuid>.rep``), each written to a temporary file, flushed (``fsync`` by default) and
renamed over its name with :func:`os.replace`, so a crash leaves either the whole file
or none. A request is on disk before its ``200`` is sent, so a Titanic restarted from
the same directory serves every request it had accepted (in the order it accepted
them: each request file holds its sequence number; the directory is always read in
sorted order). The files are transportkit's own length-prefixed frame format, not the
Guide's pickles (which a Titanic must never load from a directory others can write).

File I/O is synchronous, in the event loop: each request, reply and close costs one
small write (and two ``fsync`` calls unless ``fsync=False``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import struct
import uuid as uuid_module
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Final, Self

from transportkit import (
    ClosedError,
    Frame,
    Message,
    Network,
    ProtocolError,
    ServiceUnavailableError,
    SocketOptions,
    StateError,
    TransportError,
)
from transportkit._closing import Closeable
from transportkit._keywords import RETRIES_COUNTED_ATTEMPTS, renamed
from transportkit._log import limited
from transportkit._socket import check_frames
from transportkit._timeouts import wait_for
from transportkit.patterns._limits import (
    DEFAULT_MAX_MESSAGE_BYTES,
    check_bound,
    message_bytes,
)
from transportkit.patterns._shutdown import (
    DEFAULT_SHUTDOWN_TIMEOUT,
    GracefulStop,
    check_shutdown_timeout,
)
from transportkit.patterns.majordomo import (
    MDP_HEARTBEAT_INTERVAL,
    MMI_OK,
    MMI_SERVICE,
    MajordomoClient,
    MajordomoWorker,
)

logger = logging.getLogger(__name__)

__all__ = [
    "TITANIC_CLOSE",
    "TITANIC_REPLY",
    "TITANIC_REQUEST",
    "TSP_ERROR",
    "TSP_OK",
    "TSP_PENDING",
    "TSP_UNKNOWN",
    "Titanic",
    "TitanicClient",
    "TitanicError",
    "TitanicStats",
]

TITANIC_REQUEST: Final = b"titanic.request"
"""Service that stores a request and returns its UUID."""

TITANIC_REPLY: Final = b"titanic.reply"
"""Service that returns the reply to a request, if there is one yet."""

TITANIC_CLOSE: Final = b"titanic.close"
"""Service that forgets a request and its reply."""

TSP_OK: Final = b"200"
"""Status: done (for ``titanic.reply``: the real service answered; the reply follows)."""

TSP_PENDING: Final = b"300"
"""Status: no reply yet; ask again later."""

TSP_UNKNOWN: Final = b"400"
"""Status: unknown UUID, or a request Titanic refuses for good; do not retry."""

TSP_ERROR: Final = b"500"
"""Status: Titanic could not do it now (full, disk error); retry later."""

_HEX: Final = frozenset(b"0123456789abcdefABCDEF")
_MAGIC: Final = b"TKTSP1\n"
_REQ: Final = ".req"
_REP: Final = ".rep"
_TMP: Final = ".tmp"
# Bytes a worker may receive on top of a request's body: the client's address, the
# MDP frames and the service name (a ZeroMQ routing id is at most 255 bytes).
_ENVELOPE: Final = 1024


class TitanicError(TransportError):
    """A Titanic service answered with a status other than success or pending.

    Attributes:
        status: The status frame, e.g. ``b"400"`` (unknown or refused: do not retry) or
            ``b"500"`` (Titanic could not do it now: retry later).
    """

    def __init__(self, message: str, status: bytes) -> None:
        super().__init__(message)
        self.status = status


def _valid_uuid(frame: bytes) -> str | None:
    """The UUID as Titanic names its files (lower-case hex), or None if not one."""
    if len(frame) != 32 or not set(frame) <= _HEX:
        return None
    return frame.decode("ascii").lower()


def _status_code(frame: bytes) -> bytes | None:
    """The code of a 9/TSP status frame (three digits, then nothing or a space and
    text), or None if the frame is not one.
    """
    code = bytes(frame[:3])
    if len(code) != 3 or not all(0x30 <= c <= 0x39 for c in code):
        return None
    if len(frame) > 3 and frame[3:4] != b" ":
        return None
    return code


def _encode(frames: Sequence[bytes]) -> bytes:
    parts = [_MAGIC, struct.pack(">I", len(frames))]
    for frame in frames:
        parts.append(struct.pack(">I", len(frame)))
        parts.append(bytes(frame))
    return b"".join(parts)


def _decode(data: bytes) -> list[bytes]:
    """Frames of a stored file; ValueError if it is not one."""
    if not data.startswith(_MAGIC):
        raise ValueError("not a Titanic file")
    pos = len(_MAGIC)
    (count,) = struct.unpack_from(">I", data, pos)
    pos += 4
    frames = []
    for _ in range(count):
        (size,) = struct.unpack_from(">I", data, pos)
        pos += 4
        if pos + size > len(data):
            raise ValueError("truncated Titanic file")
        frames.append(data[pos : pos + size])
        pos += size
    if pos != len(data):
        raise ValueError("trailing bytes in a Titanic file")
    return frames


@dataclass(slots=True)
class TitanicStats:
    """Counters of a :class:`Titanic`, updated as it runs.

    Attributes:
        requests: Requests stored (answered ``200`` with a UUID).
        loaded: Requests found in the directory at start (stored by an earlier run).
        dispatched: Requests sent to their service (a request sent again after a
            timeout counts again).
        replies: Replies of the real services stored.
        unavailable: Dispatch attempts skipped because ``mmi.service`` said the
            service has no worker, or the broker did not answer.
        failed_dispatches: Requests sent to a service that did not answer in time
            (they stay pending and are sent again later).
        reply_queries: ``titanic.reply`` requests answered.
        closed: ``titanic.close`` requests answered.
        malformed: TSP requests that follow no form of 9/TSP (answered ``400``).
        over_limit: Requests refused by a bound (``max_request_bytes``: ``400``;
            ``max_requests``: ``500``), and replies over ``max_reply_bytes``.
        storage_errors: Disk operations that failed (the request was answered
            ``500``, or the reply is retried).
        corrupt: Files in the directory that could not be read at start (left there,
            ignored).
        shutdown_dropped: Dispatches a graceful stop (:meth:`Titanic.shutdown`) cut at
            its deadline (the request stays stored and pending).
    """

    requests: int = 0
    loaded: int = 0
    dispatched: int = 0
    replies: int = 0
    unavailable: int = 0
    failed_dispatches: int = 0
    reply_queries: int = 0
    closed: int = 0
    malformed: int = 0
    over_limit: int = 0
    storage_errors: int = 0
    corrupt: int = 0
    shutdown_dropped: int = 0


@dataclass(slots=True, eq=False)
class _Entry:
    seq: int
    service: bytes
    replied: bool = False


class Titanic:
    """A 9/TSP server: the three Titanic services and a dispatcher, over one broker.

    :meth:`run` registers ``titanic.request``, ``titanic.reply`` and
    ``titanic.close`` with the broker (three :class:`MajordomoWorker`) and runs the
    dispatcher: in the order requests were accepted, it asks the broker
    ``mmi.service`` whether the request's service has a worker (once per service per
    pass), and if so sends it the request with a :class:`MajordomoClient` (one attempt
    of ``request_timeout`` seconds) and stores the reply. Requests still pending are
    tried again every ``dispatch_interval`` seconds, and at once when a new one comes.
    A request is sent to its service one or more times (after a timeout, after a
    restart): services behind Titanic must be idempotent, as 7/MDP asks.

    **Bounds.** At most ``max_requests`` requests are stored at once (accepted and not
    yet closed, answered or not); a request's frames total at most
    ``max_request_bytes`` (the service name included) and a stored reply's at most
    ``max_reply_bytes``; so the directory holds at most ``max_requests`` x
    (``max_request_bytes`` + ``max_reply_bytes``) bytes and a few bytes per file.
    Memory holds an index entry per stored request, never a body. Refusals are
    answered as the module docstring says and counted (``stats.over_limit``).
    Clients must close what they have read: nothing expires. The ``titanic.*``
    workers take messages of up to ``max_request_bytes`` + 1 KiB from the broker (the
    MDP envelope); a larger one never reaches Titanic's handler: the worker gives it
    back to the broker (see :class:`MajordomoWorker`), and the client gets no answer.

    One Titanic per directory: nothing locks it, and two would serve and delete each
    other's requests. A request is stored before it is acknowledged, so a client that
    retries after a lost ``200`` (a crash between the write and the answer) may have
    its request stored twice, under two UUIDs: 9/TSP delivers at least once.

    Args:
        network: Makes the sockets (the workers' DEALERs, the dispatcher's REQs).
        broker: The Majordomo broker's endpoint.
        directory: Where requests and replies are stored (created if missing). A
            Titanic started again on the same directory takes up its requests.
        dispatch_interval: Seconds between passes over the pending requests.
        request_timeout: Seconds the dispatcher waits for a service's reply (and for
            the broker's ``mmi.service`` answer).
        heartbeat_interval: The workers' MDP heartbeat interval; use the broker's.
        max_requests: Requests stored at once.
        max_request_bytes: Largest request, all frames.
        max_reply_bytes: Largest reply stored, all frames.
        fsync: Flush every file and the directory to the disk before answering
            (False: faster, and a power cut may lose what the OS had not written).
        options: Options of the workers' and the dispatcher's sockets.

    Raises:
        ValueError: A timing or a bound is out of range.
    """

    def __init__(
        self,
        network: Network,
        broker: str,
        directory: str | os.PathLike[str],
        *,
        dispatch_interval: float = 1.0,
        request_timeout: float = MDP_HEARTBEAT_INTERVAL,
        heartbeat_interval: float = MDP_HEARTBEAT_INTERVAL,
        max_requests: int = 10_000,
        max_request_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        max_reply_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        fsync: bool = True,
        options: SocketOptions | None = None,
    ) -> None:
        for name, value in (
            ("dispatch_interval", dispatch_interval),
            ("request_timeout", request_timeout),
            ("heartbeat_interval", heartbeat_interval),
        ):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
                raise ValueError(f"{name} must be a positive number of seconds, got {value!r}")
        self.network: Final = network
        self.broker: Final = broker
        self.directory: Final = Path(directory)
        self.dispatch_interval: Final = float(dispatch_interval)
        self.request_timeout: Final = float(request_timeout)
        self.heartbeat_interval: Final = float(heartbeat_interval)
        self.max_requests: Final = check_bound("max_requests", max_requests)
        self.max_request_bytes: Final = check_bound("max_request_bytes", max_request_bytes)
        self.max_reply_bytes: Final = check_bound("max_reply_bytes", max_reply_bytes)
        self.fsync: Final = bool(fsync)
        self.stats: Final = TitanicStats()
        self._options = options
        self._entries: dict[str, _Entry] = {}
        self._next_seq = 0
        self._loaded = False
        self._wake = asyncio.Event()
        self._running = False
        self._stopping = False
        self._stopped = asyncio.Event()
        self._graceful = GracefulStop()

    # -- state --------------------------------------------------------------------------

    @property
    def stored(self) -> int:
        """Requests stored (accepted and not closed), answered or not."""
        return len(self._entries)

    @property
    def pending(self) -> int:
        """Stored requests that have no reply yet."""
        return sum(1 for entry in self._entries.values() if not entry.replied)

    def status(self, request_uuid: str) -> bytes:
        """What ``titanic.reply`` would answer for ``request_uuid`` now: its status frame."""
        entry = self._entries.get(request_uuid.lower())
        if entry is None:
            return TSP_UNKNOWN
        return TSP_OK if entry.replied else TSP_PENDING

    def load(self) -> int:
        """Read the directory (created if missing); return how many requests it holds.

        Called by :meth:`run`; idempotent. Leftover temporary files (of a write cut by
        a crash) are removed, a reply whose request is gone (a close cut by a crash)
        too; unreadable files are counted (``stats.corrupt``) and left alone.

        Raises:
            OSError: The directory cannot be created or read.
        """
        if self._loaded:
            return len(self._entries)
        self.directory.mkdir(parents=True, exist_ok=True)
        names = sorted(os.listdir(self.directory))
        found: list[tuple[int, str, bytes]] = []
        replies: set[str] = set()
        for name in names:
            path = self.directory / name
            if name.endswith(_TMP):
                with contextlib.suppress(OSError):
                    path.unlink()
                continue
            stem, suffix = name[: -len(_REQ)], name[-len(_REQ) :]
            if _valid_uuid(stem.encode()) != stem:
                continue
            if suffix == _REP:
                replies.add(stem)
            elif suffix == _REQ:
                try:
                    frames = _decode(path.read_bytes())
                    seq, service = int(frames[0]), frames[1]
                except (OSError, ValueError, IndexError):
                    self.stats.corrupt += 1
                    limited(
                        logger,
                        logging.WARNING,
                        "corrupt",
                        "stored request %s is unreadable: skipped",
                        path,
                        exc_info=True,
                        extra={"reason": "corrupt", "counter": "corrupt"},
                    )
                    continue
                found.append((seq, stem, service))
        found.sort()
        for seq, stem, service in found:
            self._entries[stem] = _Entry(seq, service, replied=stem in replies)
            self._next_seq = max(self._next_seq, seq + 1)
        for stem in sorted(replies - self._entries.keys()):
            with contextlib.suppress(OSError):
                (self.directory / (stem + _REP)).unlink()
        self.stats.loaded = len(self._entries)
        self._loaded = True
        return len(self._entries)

    # -- running ------------------------------------------------------------------------

    async def run(self) -> None:
        """Load the directory, serve the three services and dispatch, until :meth:`stop`.

        Raises:
            StateError: Already running.
            OSError: The directory cannot be created or read.
        """
        if self._running:
            raise StateError("Titanic is already running")
        if self._stopping:
            return
        self._running = True
        self.load()
        workers = [
            MajordomoWorker(
                self.network,
                self.broker,
                service,
                heartbeat_interval=self.heartbeat_interval,
                max_message_bytes=self.max_request_bytes + _ENVELOPE,
                options=self._options,
            )
            for service in (TITANIC_REQUEST, TITANIC_REPLY, TITANIC_CLOSE)
        ]
        handlers = (self._on_request, self._on_reply, self._on_close)
        loop = asyncio.get_running_loop()
        tasks: list[asyncio.Task[object]] = [
            loop.create_task(worker.serve(handler), name=f"titanic-{worker.service.decode()}")
            for worker, handler in zip(workers, handlers, strict=True)
        ]
        dispatcher = loop.create_task(self._dispatch_loop(), name="titanic-dispatcher")
        tasks.append(dispatcher)
        graceful = self._graceful
        graceful.started()
        try:
            stop = loop.create_task(self._stopped.wait())
            done, _ = await asyncio.wait([*tasks, stop], return_when=asyncio.FIRST_COMPLETED)
            stop.cancel()
            for task in done:
                if task is not stop and not task.cancelled() and task.exception() is not None:
                    raise task.exception()  # type: ignore[misc]
            if graceful.requested:
                for worker in workers:  # DISCONNECT: the broker sends them no more
                    await worker.aclose()
                if not dispatcher.done():
                    await asyncio.wait([dispatcher], timeout=graceful.remaining())
                if not dispatcher.done():
                    self.stats.shutdown_dropped += 1
                    graceful.clean = False
        finally:
            for worker in workers:
                worker.close()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            self._running = False
            graceful.finished()

    def stop(self) -> None:
        """Make :meth:`run` return (its workers close) at once: the hard stop. What is
        stored stays stored. Idempotent.
        """
        self._stopping = True
        self._stopped.set()

    async def shutdown(self, timeout: float = DEFAULT_SHUTDOWN_TIMEOUT) -> bool:
        """Stop gracefully: the three services DISCONNECT from the broker (it sends
        them no new request), no new dispatch starts, and the dispatch in flight gets
        ``timeout`` seconds (default 5) for its reply to be stored; then :meth:`run`
        returns. Nothing accepted is lost either way: a request whose dispatch was cut
        (``stats.shutdown_dropped``) is stored and sent again after a restart.
        Idempotent; on a Titanic that is not running, the same as :meth:`stop`.

        Returns:
            True if no dispatch was cut at the deadline.

        Raises:
            ValueError: ``timeout`` is not from 0 to 3600 seconds.
        """
        check_shutdown_timeout(timeout)
        self._graceful.request(timeout)
        self._stopping = True
        self._wake.set()
        self._stopped.set()
        return await self._graceful.shutdown(timeout)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- the three services -------------------------------------------------------------

    def _on_request(self, body: Message) -> list[bytes]:
        if (
            len(body) < 2
            or not body[0]
            or body[0].startswith(b"titanic.")
            or body[0].startswith(b"mmi.")
        ):
            self.stats.malformed += 1
            limited(
                logger,
                logging.WARNING,
                "malformed",
                "malformed titanic.request: %s",
                "no service, or a titanic./mmi. service",
                extra={"reason": "no service, or a titanic./mmi. service", "counter": "malformed"},
            )
            return [TSP_UNKNOWN]
        if message_bytes(body) > self.max_request_bytes:
            self.stats.over_limit += 1
            limited(
                logger,
                logging.WARNING,
                "over_limit",
                "titanic.request of %d bytes over max_request_bytes (%d): refused",
                message_bytes(body),
                self.max_request_bytes,
                extra={"reason": "too large", "counter": "over_limit"},
            )
            return [TSP_UNKNOWN]
        if len(self._entries) >= self.max_requests:
            self.stats.over_limit += 1
            limited(
                logger,
                logging.WARNING,
                "over_limit",
                "titanic.request refused: %d requests stored (max_requests)",
                len(self._entries),
                extra={"reason": "max_requests", "counter": "over_limit"},
            )
            return [TSP_ERROR]
        request_uuid = uuid_module.uuid4().hex
        seq = self._next_seq
        try:
            self._write(request_uuid + _REQ, [b"%d" % seq, *body])
        except OSError:
            self.stats.storage_errors += 1
            limited(
                logger,
                logging.ERROR,
                "storage",
                "could not store a request in %s",
                self.directory,
                exc_info=True,
                extra={"counter": "storage_errors"},
            )
            return [TSP_ERROR]
        self._next_seq = seq + 1
        self._entries[request_uuid] = _Entry(seq, body[0])
        self.stats.requests += 1
        self._wake.set()
        return [TSP_OK, request_uuid.encode("ascii")]

    def _on_reply(self, body: Message) -> list[bytes]:
        request_uuid = _valid_uuid(body[0]) if len(body) == 1 else None
        if request_uuid is None:
            self.stats.malformed += 1
            limited(
                logger,
                logging.WARNING,
                "malformed",
                "malformed titanic.reply: %s",
                "not one UUID frame",
                extra={"reason": "not one UUID frame", "counter": "malformed"},
            )
            return [TSP_UNKNOWN]
        self.stats.reply_queries += 1
        entry = self._entries.get(request_uuid)
        if entry is None:
            return [TSP_UNKNOWN]
        if not entry.replied:
            return [TSP_PENDING]
        try:
            return _decode((self.directory / (request_uuid + _REP)).read_bytes())
        except (OSError, ValueError):
            self.stats.storage_errors += 1
            limited(
                logger,
                logging.ERROR,
                "storage",
                "could not read the stored reply %s",
                request_uuid,
                exc_info=True,
                extra={"counter": "storage_errors"},
            )
            return [TSP_ERROR]

    def _on_close(self, body: Message) -> list[bytes]:
        request_uuid = _valid_uuid(body[0]) if len(body) == 1 else None
        if request_uuid is None:
            self.stats.malformed += 1
            limited(
                logger,
                logging.WARNING,
                "malformed",
                "malformed titanic.close: %s",
                "not one UUID frame",
                extra={"reason": "not one UUID frame", "counter": "malformed"},
            )
            return [TSP_UNKNOWN]
        self.stats.closed += 1
        if self._entries.pop(request_uuid, None) is not None:
            # The request first: a crash between the two leaves a reply without a
            # request, which load() removes (the other way round it would be served).
            for suffix in (_REQ, _REP):
                with contextlib.suppress(FileNotFoundError):
                    (self.directory / (request_uuid + suffix)).unlink()
        return [TSP_OK]

    # -- dispatcher ---------------------------------------------------------------------

    async def _dispatch_loop(self) -> None:
        client = MajordomoClient(
            self.network,
            self.broker,
            timeout=self.request_timeout,
            attempts=1,
            options=self._options,
        )
        try:
            while not self._graceful.requested:
                self._wake.clear()
                await self._dispatch_pass(client)
                if self._wake.is_set():
                    continue
                with contextlib.suppress(TimeoutError):
                    await wait_for(self._wake.wait(), self.dispatch_interval)
        finally:
            client.close()

    async def _dispatch_pass(self, client: MajordomoClient) -> None:
        """Try every pending request once, in the order they were accepted."""
        available: dict[bytes, bool] = {}
        pending = sorted(
            ((entry.seq, key) for key, entry in self._entries.items() if not entry.replied),
        )
        for _, request_uuid in pending:
            if self._graceful.requested:
                return  # no new dispatch once a graceful stop began
            entry = self._entries.get(request_uuid)
            if entry is None or entry.replied:
                continue  # closed (or answered) while we waited on another
            service = entry.service
            if service not in available:
                try:
                    answer = await client.request(MMI_SERVICE, [service])
                except ServiceUnavailableError:
                    self.stats.unavailable += 1
                    logger.warning(
                        "the broker at %s does not answer: %d stored request(s) wait for the "
                        "next pass in %g s",
                        self.broker,
                        len(pending),
                        self.dispatch_interval,
                        extra={"endpoint": self.broker, "counter": "unavailable"},
                    )
                    return  # the broker is not answering: wait for the next pass
                available[service] = answer == [MMI_OK]
            if not available[service]:
                self.stats.unavailable += 1
                logger.debug(
                    "service %r has no worker: request %s waits for the next pass",
                    service,
                    request_uuid,
                    extra={"service": service, "counter": "unavailable"},
                )
                continue
            try:
                frames = _decode((self.directory / (request_uuid + _REQ)).read_bytes())
            except FileNotFoundError:
                continue  # closed meanwhile
            except (OSError, ValueError):
                self.stats.storage_errors += 1
                limited(
                    logger,
                    logging.ERROR,
                    "storage",
                    "could not read the stored request %s",
                    request_uuid,
                    exc_info=True,
                    extra={"counter": "storage_errors"},
                )
                continue
            self.stats.dispatched += 1
            try:
                reply = await client.request(service, frames[2:])
            except ServiceUnavailableError:
                self.stats.failed_dispatches += 1
                logger.info(
                    "request %s to service %r got no reply: retried at the next pass",
                    request_uuid,
                    service,
                    extra={"service": service, "counter": "failed_dispatches"},
                )
                available[service] = False  # its worker is busy or gone: later
                continue
            except ProtocolError as exc:
                self.stats.failed_dispatches += 1
                limited(
                    logger,
                    logging.WARNING,
                    "malformed",
                    "request %s to service %r: bad reply (%s): retried at the next pass",
                    request_uuid,
                    service,
                    exc,
                    extra={"service": service, "reason": str(exc), "counter": "failed_dispatches"},
                )
                continue
            if self._entries.get(request_uuid) is not entry:
                continue  # closed while the service worked on it
            if message_bytes(reply) > self.max_reply_bytes:
                self.stats.over_limit += 1
                limited(
                    logger,
                    logging.WARNING,
                    "over_limit",
                    "reply of %d bytes to request %s over max_reply_bytes (%d): stored as an error",
                    message_bytes(reply),
                    request_uuid,
                    self.max_reply_bytes,
                    extra={"service": service, "reason": "too large", "counter": "over_limit"},
                )
                stored = [TSP_ERROR]
            else:
                stored = [TSP_OK, *reply]
            try:
                self._write(request_uuid + _REP, stored)
            except OSError:
                self.stats.storage_errors += 1
                limited(
                    logger,
                    logging.ERROR,
                    "storage",
                    "could not store the reply to %s",
                    request_uuid,
                    exc_info=True,
                    extra={"counter": "storage_errors"},
                )
                continue
            entry.replied = True
            self.stats.replies += 1

    # -- storage ------------------------------------------------------------------------

    def _write(self, name: str, frames: Sequence[bytes]) -> None:
        """Write ``name`` atomically: a temporary file, flushed, renamed over it."""
        path = self.directory / name
        tmp = self.directory / (name + _TMP)
        try:
            with open(tmp, "wb") as f:
                f.write(_encode(frames))
                if self.fsync:
                    f.flush()
                    os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise
        if self.fsync:
            fd = os.open(self.directory, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)


class TitanicClient(Closeable):
    """A 9/TSP client (the Guide's ``ticlient``): store a request, poll, close.

    Talks to Titanic's services through a :class:`MajordomoClient` (so each call
    retries as it does, and raises :class:`~transportkit.ServiceUnavailableError`
    when Titanic does not answer).

    Args:
        network: The network that makes the REQ sockets.
        broker: The Majordomo broker's endpoint (Titanic registers there).
        timeout: Seconds to wait for each attempt of a call.
        attempts: Sends of each call before giving up, the first included (default
            3). Formerly ``retries``, which counted the same thing: passing
            ``retries=`` raises a TypeError that says what to write.
        options: Options of the REQ sockets.

    Raises:
        ValueError: ``timeout`` is not a positive number, or ``attempts`` is not an
            int >= 1.
        TypeError: The removed keyword ``retries`` was given (use ``attempts``).
    """

    @renamed("retries", "attempts", RETRIES_COUNTED_ATTEMPTS)
    def __init__(
        self,
        network: Network,
        broker: str,
        *,
        timeout: float = MDP_HEARTBEAT_INTERVAL,
        attempts: int = 3,
        options: SocketOptions | None = None,
    ) -> None:
        self._client = MajordomoClient(
            network, broker, timeout=timeout, attempts=attempts, options=options
        )

    @property
    def closed(self) -> bool:
        """True once :meth:`close` was called."""
        return self._client.closed

    async def request(self, service: bytes, frames: Sequence[Frame]) -> bytes:
        """Have Titanic store a request for ``service``; return its UUID (32 hex bytes).

        Raises:
            TitanicError: Titanic refused it (``400``: malformed or too large, do not
                retry; ``500``: full or a disk error, retry later).
            ServiceUnavailableError: Titanic did not answer.
            ProtocolError: The answer is not 9/TSP.
            FrameError: ``service`` or ``frames`` is malformed.
            ClosedError: The client is closed.
        """
        body = check_frames(frames)
        reply = await self._call(TITANIC_REQUEST, [service, *body])
        if reply is None or len(reply) != 2 or _valid_uuid(reply[1]) is None:
            raise ProtocolError(f"titanic.request answered {reply!r:.80}, no UUID")
        return reply[1]

    async def reply(self, request_uuid: bytes) -> Message | None:
        """The reply to the request ``request_uuid``, or None while it is pending (``300``).

        Raises:
            TitanicError: ``400`` (unknown UUID) or ``500`` (retry later).
            ServiceUnavailableError: Titanic did not answer.
            ProtocolError: The answer is not 9/TSP.
            ClosedError: The client is closed.
        """
        reply = await self._call(TITANIC_REPLY, [request_uuid])
        return None if reply is None else reply[1:]

    async def close_request(self, request_uuid: bytes) -> None:
        """Tell Titanic the reply to ``request_uuid`` was taken: it forgets both.

        Raises:
            TitanicError: ``400`` (not a UUID) or ``500``.
            ServiceUnavailableError: Titanic did not answer.
            ProtocolError: The answer is not 9/TSP.
            ClosedError: The client is closed.
        """
        await self._call(TITANIC_CLOSE, [request_uuid])

    async def call(
        self,
        service: bytes,
        frames: Sequence[Frame],
        *,
        poll_interval: float = 1.0,
        max_polls: int | None = None,
    ) -> Message:
        """Store a request, poll every ``poll_interval`` seconds for its reply, close it.

        Args:
            service: The real service's name.
            frames: The request body.
            poll_interval: Seconds between ``titanic.reply`` polls.
            max_polls: Give up after this many pending answers (None: never).

        Raises:
            ServiceUnavailableError: Still pending after ``max_polls`` polls (the
                request stays stored: poll its UUID later), or Titanic did not answer.
            TitanicError: As :meth:`request` and :meth:`reply`.
        """
        request_uuid = await self.request(service, frames)
        polls = 0
        while True:
            reply = await self.reply(request_uuid)
            if reply is not None:
                await self.close_request(request_uuid)
                return reply
            polls += 1
            if max_polls is not None and polls >= max_polls:
                logger.warning(
                    "giving up on Titanic request %s for %r: still pending after %d polls",
                    request_uuid.decode(),
                    service,
                    polls,
                    extra={"service": service},
                )
                raise ServiceUnavailableError(
                    f"Titanic request {request_uuid.decode()} for {service!r}: "
                    f"still pending after {polls} polls"
                )
            await asyncio.sleep(poll_interval)

    def close(self) -> None:
        """Close the sockets; later calls raise ClosedError. Idempotent."""
        self._client.close()

    async def _call(self, service: bytes, body: list[Frame]) -> Message | None:
        if self._client.closed:
            raise ClosedError("Titanic client is closed")
        reply = await self._client.request(service, body)
        status = _status_code(reply[0])
        if status == TSP_OK:
            return reply
        if status == TSP_PENDING and service == TITANIC_REPLY:
            return None
        if status in (TSP_UNKNOWN, TSP_ERROR):
            raise TitanicError(f"{service.decode()} answered {reply[0]!r:.60}", status)
        raise ProtocolError(f"{service.decode()} answered {reply[0]!r:.60}, not a 9/TSP status")
