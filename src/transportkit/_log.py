r"""Logging in transportkit: the loggers, what they log at which level, and the rate limit.

transportkit logs through the standard :mod:`logging` module, one logger per module
(``logging.getLogger(__name__)``), all under ``transportkit``. As a library it never
configures logging: the ``transportkit`` logger has a :class:`logging.NullHandler`, so
nothing is printed until the application configures a handler (for example
``logging.basicConfig(level=logging.INFO)``), and nothing is written by the library to
stdout or stderr (only the command-line tools and the examples print). Select what you
want by logger name: ``logging.getLogger("transportkit.patterns").setLevel(logging.INFO)``.

Levels, the same in every module:

- ``DEBUG``: a step of normal operation an operator does not need (a retry that is
  part of a protocol's normal flow, a snapshot taken).
- ``INFO``: something happened that recovers on its own (a retry after a timeout, a
  reconnect, a server switch, a state change of Binary Star, a Clone resnapshot).
- ``WARNING``: work was lost or refused, or a peer misbehaves: a give-up, a worker
  purged or expired, a heartbeat lost, a malformed message, a bound reached.
- ``ERROR``: a handler or a storage call raised (with the traceback,
  :meth:`logging.Logger.exception`-style); the loop goes on.

Every log line that means trouble sits next to the stats counter it accompanies (the
counter names of :mod:`transportkit.patterns._limits`: ``malformed``, ``over_limit``,
``handler_errors``, and the patterns' own), and carries ``extra=`` fields where they
help a log pipeline: ``peer`` (a routing id as hex, at most :data:`PEER_HEX_BYTES`
bytes shown, then ``...``), ``reason``, ``service``, ``endpoint``, ``counter`` (the
stats counter bumped with it).

The loggers (``*``: rate-limited, see below):

========================================  ============================================  ========
logger (``transportkit.`` + ...)          what it logs                                  level
========================================  ============================================  ========
``patterns.lazy_pirate``                  client: a retry after a timeout               INFO
\                                         client: a give-up (ServiceUnavailableError)   WARNING
\                                         client: a reply without its sequence frame    WARNING*
\                                         server: a malformed or too large request      WARNING*
\                                         a request handler raised (also the default    ERROR*
                                          of ``reply_or_none``), with the traceback
``patterns.paranoid_pirate``              queue: a worker purged (heartbeats lost)      WARNING
\                                         queue: malformed, too large, ``max_workers``  WARNING*
                                          reached, a message that could not be routed
\                                         worker: the queue went silent, reconnecting   WARNING
\                                         worker: malformed, too large, unsent          WARNING*
\                                         worker: the handler raised                    ERROR*
``patterns.binary_star``                  a state change                                INFO
\                                         a failover (PASSIVE -> ACTIVE)                WARNING
\                                         a split brain (the server stops)              ERROR
\                                         a request refused (not active)                INFO*
\                                         malformed state or request, too large,        WARNING*
                                          unsent reply
\                                         the handler raised                            ERROR*
\                                         client: switching to the other server         INFO
\                                         client: a give-up                             WARNING
``patterns.freelance``                    client: a server live again; a request        INFO
                                          switching server
\                                         client: a server taken as dead; a give-up     WARNING
\                                         client and server: malformed, too large,      WARNING*
                                          unsent
\                                         server: the handler raised                    ERROR*
``patterns.majordomo``                    broker: a worker expired                      WARNING
\                                         broker: a request requeued (worker gone)      INFO
\                                         broker: a request expired or poisoned,        WARNING*
                                          malformed, too large, a bound reached,
                                          undeliverable
\                                         worker: broker lost, reconnecting             WARNING
\                                         worker: DISCONNECT from the broker            INFO
\                                         worker: malformed, too large, unsent          WARNING*
\                                         worker: the handler or ``on_error`` raised    ERROR*
\                                         client: a timeout, reconnecting; async        INFO
                                          client: ``reconnect()``
\                                         client: a give-up                             WARNING
\                                         async client: a malformed reply               WARNING*
``patterns.titanic``                      a dispatch that got no reply (retried)        INFO
\                                         a service without workers (request waits)     DEBUG
\                                         the broker not answering; a client give-up    WARNING
\                                         malformed, too large, ``max_requests``,       WARNING*
                                          unreadable stored request, bad reply
\                                         storage errors, with the traceback            ERROR*
``patterns.clone._client``                a resnapshot (gap, stall, server restart)     INFO
\                                         a server silent; switching server             WARNING
\                                         malformed, map over its bounds, update not    WARNING*
                                          taken by a collector
``patterns.clone._server``                malformed, too large, ``max_keys``, ttl or    WARNING*
                                          subtree too long, snapshot refused or cut
\                                         a snapshot request refused (not active)       INFO*
``patterns.clone._pair``                  a takeover (failover)                         WARNING
\                                         a passive server's held updates over bound    WARNING*
``patterns.load_balancing``               malformed, too large, ``max_workers``,        WARNING*
                                          unroutable
\                                         the worker's handler raised                   ERROR*
``patterns.resilience``                   a silent publisher: resubscribed              WARNING
\                                         a malformed heartbeat or timestamp, a topic   WARNING*
                                          not subscribed
\                                         stale data (the Suicidal Snail stops)         ERROR
``patterns.conflation``                   a malformed update (``ConflatingSubscriber``) WARNING*
\                                         last-value cache: a non-subscription on its   WARNING*
                                          XPUB, a replay cut at ``max_replay_topics``
                                          or refused at ``max_pending_replays``
``patterns.proxy``                        a state change (pause, resume, terminate)     INFO
\                                         too large, unroutable, refused by the         WARNING*
                                          destination, an unknown control command, a
                                          capture copy lost, a held message abandoned
                                          or dropped at a graceful stop's deadline
``trading._risk``                         a malformed or too large order request        WARNING*
\                                         the risk book raised, with the traceback      ERROR*
``trading._orders``, ``._market_data``    a malformed order or update                   WARNING*
``sim_backend._faults``                   each fault of a schedule as it is applied     INFO
``zmq_backend.connections``,              with ``log_connections=True`` only: each      INFO,
``sim_backend.connections``               socket's connects and accepts (INFO),         WARNING*
                                          disconnects, retries, failed handshakes
                                          (WARNING), closes (DEBUG); see
                                          :mod:`transportkit.zmq_backend.connections`
``sim_backend._auth``                     an authenticator started, updated, stopped    INFO
\                                         a handshake refused (``denied_key``,          WARNING*
                                          ``denied_ip``), with the client's address,
                                          its Z85 public key and the reason
\                                         the policy's ``decide`` raised, with the      ERROR*
                                          traceback (``handler_errors``)
``zmq_backend._auth``                     the same lines (from the handler's thread)    as above
\                                         a malformed ZAP request (``malformed``)       WARNING*
========================================  ============================================  ========

Give-ups and retries are not rate-limited: each is one line per request (at most
``attempts`` lines), so their rate is the application's own request rate.

Rate-limited records go through :func:`limited` (a :class:`RateLimitedLog` per logger
and event loop; the key is the kind of event, ``"malformed"``, ``"over_limit"``...):
at most ``burst`` records (default :data:`DEFAULT_BURST`) per key in each ``interval``
(default :data:`DEFAULT_INTERVAL` seconds), then one line with the count of what was
suppressed when the next window opens. A flood of bad messages from one peer, or from a
thousand, writes at most ``burst + 1`` lines per key and interval.

Virtual time: inside a simulation run (:meth:`Simulation.run
<transportkit.sim_backend.Simulation.run>`), in the thread running it, every record gets
a ``sim_time`` attribute (virtual seconds since the simulation began), its
``relativeCreated`` is the same in milliseconds, and its ``created`` (hence ``asctime``
and ``msecs``) is virtual epoch time, 2026-01-01T00:00:00Z plus virtual time (see
:mod:`transportkit.sim_backend._guards`). Records on the zmq backend and outside a run
have no ``sim_time`` and carry wall-clock time as usual. A format string for both:
``"%(asctime)s %(name)s %(levelname)s %(message)s"``.
"""

from __future__ import annotations

import asyncio
import logging
import time
import weakref
from collections.abc import Callable, Mapping
from typing import Final

__all__ = [
    "DEFAULT_BURST",
    "DEFAULT_INTERVAL",
    "DEFAULT_MAX_KEYS",
    "OVERFLOW_KEY",
    "PEER_HEX_BYTES",
    "RateLimitedLog",
    "TimeFormatter",
    "limited",
    "peer",
]

DEFAULT_BURST: Final = 5
"""Records a :class:`RateLimitedLog` lets through per key in each interval."""
DEFAULT_INTERVAL: Final = 10.0
"""The length of a :class:`RateLimitedLog` window, in seconds of its clock."""
DEFAULT_MAX_KEYS: Final = 64
"""Keys a :class:`RateLimitedLog` keeps state for; past it, new keys share one."""
OVERFLOW_KEY: Final = "(other)"
"""The key that events of new keys share once :data:`DEFAULT_MAX_KEYS` are in use."""
PEER_HEX_BYTES: Final = 16
"""How many bytes of a routing id :func:`peer` shows (as 32 hex digits)."""


def peer(routing_id: bytes | bytearray | memoryview | None) -> str:
    """A routing id for a log line: lowercase hex, its first :data:`PEER_HEX_BYTES`
    bytes, then ``...`` if it is longer; ``"-"`` for None (no routing id known).
    """
    if routing_id is None:
        return "-"
    raw = bytes(routing_id)
    if len(raw) <= PEER_HEX_BYTES:
        return raw.hex()
    return raw[:PEER_HEX_BYTES].hex() + "..."


def loop_clock() -> float:
    """Seconds on the running event loop's clock (virtual time in a simulation), or
    :func:`time.monotonic` when no loop runs in this thread.
    """
    try:
        return asyncio.get_running_loop().time()
    except RuntimeError:
        return time.monotonic()


class TimeFormatter(logging.Formatter):
    """``TIME LEVEL LOGGER: MESSAGE``, where TIME is the virtual time of a record made
    inside a simulation run (``t=12.345678``, seconds) and the wall-clock time otherwise
    (``2026-12-01 18:42:51,123``). For applications and the command line: the library
    installs no handler or formatter itself.
    """

    def __init__(self) -> None:
        """Make the formatter (the format is fixed)."""
        super().__init__("%(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        """Format ``record`` with its virtual or wall-clock time first."""
        sim_time = getattr(record, "sim_time", None)
        when = f"t={sim_time:.6f}" if sim_time is not None else self.formatTime(record)
        return f"{when} {super().format(record)}"


class _Window:
    __slots__ = ("emitted", "level", "start", "suppressed")

    def __init__(self, start: float) -> None:
        self.start = start
        self.emitted = 0
        self.suppressed = 0
        self.level = logging.NOTSET


class RateLimitedLog:
    """Logs through ``logger`` at most ``burst`` records per key in each ``interval``.

    A key names a kind of event (``"malformed"``, ``"over_limit"``, ``"handler"``...),
    not a peer, so a flood from many peers is limited as one. In each window of
    ``interval`` seconds the first ``burst`` records of a key go through; the rest are
    counted, and the first record of the key after the window has passed is preceded by
    one line saying how many were suppressed (``extra``: ``suppressed``, ``log_key``).
    :meth:`flush` writes those lines at once (for example when a server stops).

    Bounded: state for at most ``max_keys`` keys (a few ints each); once that many are
    in use, events of any new key share the key :data:`OVERFLOW_KEY`. So over ``T``
    seconds it writes at most ``max_keys * (burst + 1) * (T / interval + 1)`` lines.

    Time comes from ``clock`` (default: :func:`loop_clock`, the running event loop's,
    which is virtual time in a simulation: the same seed suppresses the same records,
    and a flood in virtual time is limited by virtual time). A clock that goes back
    starts a new window. A level the logger does not log costs a level check only.

    Args:
        logger: Where the records go.
        burst: Records per key and window (an int >= 1; default :data:`DEFAULT_BURST`).
        interval: The window, in seconds (> 0; default :data:`DEFAULT_INTERVAL`).
        max_keys: Keys with state of their own (an int >= 1; default
            :data:`DEFAULT_MAX_KEYS`).
        clock: Seconds, any epoch.

    Raises:
        ValueError: A bound is out of range.
    """

    __slots__ = ("_clock", "_windows", "burst", "interval", "logger", "max_keys")

    def __init__(
        self,
        logger: logging.Logger,
        *,
        burst: int = DEFAULT_BURST,
        interval: float = DEFAULT_INTERVAL,
        max_keys: int = DEFAULT_MAX_KEYS,
        clock: Callable[[], float] | None = None,
    ) -> None:
        for name, value in (("burst", burst), ("max_keys", max_keys)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an int >= 1, got {value!r}")
        if not interval > 0:
            raise ValueError(f"interval must be a positive number of seconds, got {interval!r}")
        self.logger = logger
        self.burst = burst
        self.interval = float(interval)
        self.max_keys = max_keys
        self._clock = loop_clock if clock is None else clock
        self._windows: dict[str, _Window] = {}

    @property
    def suppressed(self) -> int:
        """Records suppressed in the current windows and not yet reported."""
        return sum(window.suppressed for window in self._windows.values())

    def log(
        self,
        level: int,
        key: str,
        msg: str,
        *args: object,
        exc_info: bool = False,
        extra: Mapping[str, object] | None = None,
        _stacklevel: int = 2,
    ) -> bool:
        """Log ``msg % args`` at ``level`` unless ``key`` is over its rate.

        Args:
            level: A :mod:`logging` level.
            key: The kind of event the rate is counted for.
            msg: A ``%``-format string (formatted only if the record is written).
            *args: Its arguments.
            exc_info: Attach the exception being handled (``logger.exception``-style).
            extra: Fields set on the record.

        Returns:
            Whether the record was written (False: suppressed, or the level is off).
        """
        logger = self.logger
        if not logger.isEnabledFor(level):
            return False
        now = self._clock()
        windows = self._windows
        window = windows.get(key)
        if window is None:
            if len(windows) >= self.max_keys:
                key = OVERFLOW_KEY
                window = windows.get(key)
            if window is None:
                if len(windows) >= self.max_keys:  # the overflow key takes the oldest's slot
                    oldest = next(iter(windows))
                    self._report(oldest, windows.pop(oldest), now, _stacklevel + 1)
                window = windows[key] = _Window(now)
        if now < window.start or now - window.start >= self.interval:
            self._report(key, window, now, _stacklevel + 1)
            window.start = now
            window.emitted = 0
        if window.emitted >= self.burst:
            window.suppressed += 1
            window.level = max(window.level, level)
            return False
        window.emitted += 1
        logger.log(level, msg, *args, exc_info=exc_info, extra=extra, stacklevel=_stacklevel)
        return True

    def flush(self) -> int:
        """Write the pending suppressed-count lines now, and start new windows.

        Returns:
            How many records those lines reported.
        """
        now = self._clock()
        total = 0
        for key, window in self._windows.items():
            total += window.suppressed
            self._report(key, window, now, 3)
            window.start = now
            window.emitted = 0
        return total

    def _report(self, key: str, window: _Window, now: float, stacklevel: int) -> None:
        if window.suppressed:
            self.logger.log(
                window.level,
                "suppressed %d more %r records in the last %.3f s",
                window.suppressed,
                key,
                max(0.0, now - window.start),
                extra={"suppressed": window.suppressed, "log_key": key},
                stacklevel=stacklevel,
            )
            window.suppressed = 0
            window.level = logging.NOTSET


_by_loop: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, RateLimitedLog]] = (
    weakref.WeakKeyDictionary()
)
"""Event loop -> logger name -> its limiter. Per loop, so that each simulation run (its
own loop) starts with fresh windows and the same seed writes the same lines; an entry
goes when its loop does."""
_without_loop: dict[str, RateLimitedLog] = {}


def limited(
    logger: logging.Logger,
    level: int,
    key: str,
    msg: str,
    *args: object,
    exc_info: bool = False,
    extra: Mapping[str, object] | None = None,
) -> bool:
    """Log through ``logger``'s shared :class:`RateLimitedLog` (default bounds).

    One limiter per logger and event loop (one per logger for calls outside any
    loop), made at its first use: the call sites of a module share its rate per key.
    Memory: a limiter per module that logs this way and per live loop, each bounded
    by :data:`DEFAULT_MAX_KEYS`.

    Returns:
        Whether the record was written; see :meth:`RateLimitedLog.log`.
    """
    if not logger.isEnabledFor(level):
        return False
    try:
        loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
    except RuntimeError:
        loop = None
    if loop is None:
        limiters = _without_loop
    else:
        found = _by_loop.get(loop)
        if found is None:
            found = _by_loop[loop] = {}
        limiters = found
    limiter = limiters.get(logger.name)
    if limiter is None:
        limiter = limiters[logger.name] = RateLimitedLog(logger)
    return limiter.log(level, key, msg, *args, exc_info=exc_info, extra=extra, _stacklevel=3)
