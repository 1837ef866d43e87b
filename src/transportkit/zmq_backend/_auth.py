"""The zmq backend's ZAP handler (ZeroMQ RFC 27) on a thread of its own.

libzmq asks the handler bound at ``inproc://zeromq.zap.01`` of a context about every
CURVE handshake on that context's server sockets, and about NULL handshakes on sockets
with a ``zap_domain``. The handler here answers from an
:class:`~transportkit.security.AuthPolicy` (see :meth:`AuthPolicy.decide
<transportkit.security.AuthPolicy.decide>`), on a thread so that it answers while
user code blocks (a synchronous socket's ``recv``, a busy event loop).

The thread owns its REP socket from the moment it starts; the only other thing it
shares is a wake-up socket pair (a byte written by :meth:`ZmqAuthenticator.close`),
the policy (swapped whole under a lock) and the counters (under the same lock).

Logging (logger ``transportkit.zmq_backend._auth``): INFO when an authenticator
starts, takes a new policy or stops; from the handler's thread a WARNING for each
refused handshake and each malformed request (rate-limited by wall-clock time through
:func:`transportkit._log.limited`, keyed by the counter: ``denied_key``,
``denied_ip``, ``malformed``) with the client's address, its public key in Z85 and
the reason, and an ERROR with the traceback when the policy raised
(``handler_errors``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import socket
import threading
import warnings
from typing import Final

import zmq

from transportkit._curve import z85_encode
from transportkit._errors import ClosedError, OptionError
from transportkit._log import limited
from transportkit.security import (
    _REFUSAL_MESSAGE,
    AuthDecision,
    Authenticator,
    AuthPolicy,
    AuthStats,
    _describe,
    _refusal_record,
)

__all__ = ["STOP_TIMEOUT", "ZAP_ENDPOINT", "ZmqAuthenticator"]

logger = logging.getLogger(__name__)

ZAP_ENDPOINT: Final = "inproc://zeromq.zap.01"
"""Where RFC 27 puts the handler of a context."""
ZAP_VERSION: Final = b"1.0"
STOP_TIMEOUT: Final = 1.0
"""Seconds :meth:`ZmqAuthenticator.close` waits for its thread (it needs milliseconds)."""
MAX_REQUEST_FRAMES: Final = 16
"""More frames than any mechanism sends: such a request is refused as malformed."""
_DECISIONS: Final = frozenset({"allowed", "denied_key", "denied_ip"})


class ZmqAuthenticator(Authenticator):
    """The ZAP handler of one :class:`~transportkit.zmq_backend.ZmqNetwork`.

    Made by :meth:`ZmqNetwork.start_authenticator
    <transportkit.zmq_backend.ZmqNetwork.start_authenticator>`, which documents what
    it decides; closed by :meth:`close` or with the network.

    Raises:
        OptionError: ``policy`` is not an AuthPolicy, or another ZAP handler (pyzmq's
            ``zmq.auth`` for example) is already bound on the context.
    """

    def __init__(
        self, context: zmq.Context[zmq.Socket[bytes]], policy: AuthPolicy, name: str
    ) -> None:
        if not isinstance(policy, AuthPolicy):
            raise OptionError(f"policy must be an AuthPolicy, got {type(policy).__name__}")
        self._name = name
        self._lock = threading.Lock()
        self._policy = policy
        self._stats = AuthStats()
        self._closed = False
        zap = context.socket(zmq.REP)
        zap.linger = 0
        try:
            zap.bind(ZAP_ENDPOINT)
        except zmq.ZMQError as exc:
            zap.close(linger=0)
            if exc.errno == zmq.EADDRINUSE:
                raise OptionError(
                    f"network {name!r}: another ZAP handler is already bound on this "
                    f"context ({ZAP_ENDPOINT}, pyzmq's zmq.auth for example); "
                    "one per context"
                ) from None
            raise
        # Bound before the thread starts: a handshake from now on is asked about (it
        # queues on the inproc pipe until the thread reads it).
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._thread = threading.Thread(
            target=self._serve, args=(zap,), name=f"transportkit-zap-{name}", daemon=True
        )
        self._thread.start()
        logger.info(
            "authenticator of network %r started: %s",
            name,
            _describe(policy),
            extra={"network": name, "reason": "start"},
        )

    @property
    def policy(self) -> AuthPolicy:
        """The policy in force."""
        with self._lock:
            return self._policy

    def update(self, policy: AuthPolicy) -> None:
        """Replace the policy (thread-safe); it decides every handshake from now on.

        Connections already established stay: ZAP runs only at the handshake.

        Raises:
            OptionError: ``policy`` is not an AuthPolicy.
            ClosedError: The authenticator is closed.
        """
        if not isinstance(policy, AuthPolicy):
            raise OptionError(f"policy must be an AuthPolicy, got {type(policy).__name__}")
        with self._lock:
            if self._closed:
                raise ClosedError(f"the authenticator of network {self._name!r} is closed")
            self._policy = policy
        logger.info(
            "authenticator of network %r updated: %s",
            self._name,
            _describe(policy),
            extra={"network": self._name, "reason": "update"},
        )

    @property
    def stats(self) -> AuthStats:
        """A snapshot of the counters (a new object each time; thread-safe)."""
        with self._lock:
            return dataclasses.replace(self._stats)

    @property
    def malformed(self) -> int:
        """``stats.malformed``: ZAP requests refused with status 400 without a
        decision: not in RFC 27's form (version ``1.0``, six frames and the
        credentials), CURVE credentials that are not one 32-byte key, or a mechanism
        other than NULL and CURVE (transportkit sets neither PLAIN nor GSSAPI).

        libzmq never sends a malformed one; a raw socket of the application
        connected to the handler's endpoint could.
        """
        with self._lock:
            return self._stats.malformed

    @property
    def handler_errors(self) -> int:
        """``stats.handler_errors``: requests whose decision raised, or was not an
        ``AuthDecision`` (a policy whose ``decide`` fails): each was answered with
        status 500, which fails the handshake.
        """
        with self._lock:
            return self._stats.handler_errors

    @property
    def closed(self) -> bool:
        """True once :meth:`close` was called (or the network closed)."""
        return self._closed

    @property
    def running(self) -> bool:
        """True while the handler's thread answers requests."""
        return self._thread.is_alive()

    def close(self, timeout: float = STOP_TIMEOUT) -> None:
        """Stop the handler and wait (at most ``timeout`` seconds) for its thread.

        Idempotent, from any thread. Once it is closed, the network's CURVE servers
        admit any client with a valid handshake again (libzmq's behaviour without a
        handler): close the servers first when that matters; closing the network
        does.
        """
        with self._lock:
            first = not self._closed
            self._closed = True
        if first:
            with contextlib.suppress(OSError):  # the pair is ours and empty
                self._wake_w.send(b"x")
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout)
        if first:
            logger.info(
                "authenticator of network %r stopped: its CURVE servers now admit any "
                "client with a valid handshake",
                self._name,
                extra={"network": self._name, "reason": "close"},
            )
        if first and not self._thread.is_alive():
            self._wake_w.close()
        elif first:  # pragma: no cover - the thread needs milliseconds
            warnings.warn(
                f"the ZAP handler of network {self._name!r} did not stop within {timeout} s",
                RuntimeWarning,
                stacklevel=2,
            )

    def _serve(self, zap: zmq.Socket[bytes]) -> None:
        poller = zmq.Poller()
        poller.register(zap, zmq.POLLIN)
        poller.register(self._wake_r, zmq.POLLIN)
        try:
            while not self._closed:
                try:
                    ready = dict(poller.poll())
                    if zap not in ready:
                        continue
                    request = zap.recv_multipart(copy=True)
                    zap.send_multipart(self._safe_answer(request))
                except zmq.ZMQError as exc:
                    if exc.errno in (zmq.ETERM, zmq.ENOTSOCK):
                        return  # the context was shut down: the network is closing
                    raise
        finally:
            # Unbind first: an inproc unbind is synchronous, a close is not (libzmq's
            # reaper frees the endpoint later), and a new handler may bind at once.
            with contextlib.suppress(zmq.ZMQError):
                zap.unbind(ZAP_ENDPOINT)
            zap.close(linger=0)
            self._wake_r.close()

    def _safe_answer(self, request: list[bytes]) -> list[bytes]:
        """:meth:`_answer`, or status 500 (RFC 27's internal error: the handshake
        fails) if deciding raised: a broken policy refuses, it never lets in.
        """
        try:
            return self._answer(request)
        except Exception as exc:
            self._count("handler_errors")
            frames = request + [b""] * 6
            key = frames[6] if len(request) == 7 and len(frames[6]) == 32 else None
            level, args, extra = _refusal_record(
                "handler_errors",
                f"the policy's decide() raised {type(exc).__name__}",
                address=frames[3].decode("utf-8", "replace"),
                key=key,
                domain=frames[2].decode("utf-8", "replace"),
            )
            limited(
                logger,
                level,
                "handler_errors",
                _REFUSAL_MESSAGE,
                *args,
                exc_info=True,
                extra=extra,
            )
            request_id = request[1] if len(request) > 1 else b""
            return [ZAP_VERSION, request_id, b"500", b"internal error", b"", b""]

    def _count(self, counter: str) -> None:
        with self._lock:
            setattr(self._stats, counter, getattr(self._stats, counter) + 1)

    def _malformed_reply(self, request: list[bytes], text: bytes) -> list[bytes]:
        self._count("malformed")
        limited(
            logger,
            logging.WARNING,
            "malformed",
            "ZAP request refused as malformed (%s): %d frames",
            text.decode("ascii"),
            len(request),
            extra={"counter": "malformed", "reason": text.decode("ascii")},
        )
        request_id = request[1] if len(request) > 1 else b""
        return [ZAP_VERSION, request_id, b"400", text, b"", b""]

    def _answer(self, request: list[bytes]) -> list[bytes]:
        """The reply frames (RFC 27: version, request id, status, text, user id, metadata)."""
        if len(request) < 6 or len(request) > MAX_REQUEST_FRAMES or request[0] != ZAP_VERSION:
            return self._malformed_reply(request, b"malformed ZAP request")
        _version, request_id, raw_domain, raw_address, _identity, mechanism = request[:6]
        credentials = request[6:]
        key: bytes | None
        if mechanism == b"NULL" and not credentials:
            key = None
        elif mechanism == b"CURVE" and len(credentials) == 1 and len(credentials[0]) == 32:
            key = credentials[0]
        else:
            text = (
                b"mechanism not supported"
                if mechanism not in (b"NULL", b"CURVE")
                else (b"malformed credentials")
            )
            return self._malformed_reply(request, text)
        with self._lock:
            policy = self._policy
        domain = raw_domain.decode("utf-8", "replace")
        address = raw_address.decode("utf-8", "replace")
        decision: AuthDecision = policy.decide(domain=domain, address=address, key=key)
        if decision not in _DECISIONS:
            raise OptionError(f"decide() returned {decision!r}, not an AuthDecision")
        reason = policy.reason(decision, domain=domain)
        self._count(decision)
        if decision == "allowed":
            user = b"" if key is None else z85_encode(key)
            return [ZAP_VERSION, request_id, b"200", b"OK", user, b""]
        level, args, extra = _refusal_record(
            decision, reason, address=address, key=key, domain=domain
        )
        limited(logger, level, decision, _REFUSAL_MESSAGE, *args, extra=extra)
        text = b"address not allowed" if decision == "denied_ip" else b"key not allowed"
        return [ZAP_VERSION, request_id, b"400", text, b"", b""]

    def __repr__(self) -> str:
        state = "closed" if self._closed else "running"
        return f"<ZmqAuthenticator {self._name!r} {state}>"
