"""CURVE security in the simulated world: mechanisms, ZAP decisions, the authenticator.

What a handshake does (its steps in virtual time) is the wire's
(:meth:`Wire._handshake <transportkit.sim_backend._wire.Wire._handshake>`); this module
says which mechanism a socket speaks, what libzmq 4.3 reports when a handshake fails,
and what a node's authenticator (its ZAP handler, RFC 27) decides: that is
:meth:`AuthPolicy.decide <transportkit.security.AuthPolicy.decide>`, the very method
the zmq backend's authenticator calls, so both backends decide and count alike.

The address a simulated peer has is the name of its node over tcp (node names are the
sim's hosts, as in ``tcp://exchange:5556``: its "DNS" maps a name to itself) and the
empty string over ipc (a local socket has no IP address, as in libzmq).

Logging (logger ``transportkit.sim_backend._auth``), with the virtual time of the run:
INFO when an authenticator starts, takes a new policy or stops; a WARNING for each
refused handshake (rate-limited by virtual time through
:func:`transportkit._log.limited`, keyed by the counter) with the client's address,
its public key in Z85 and the reason; an ERROR, with the traceback, when the policy
raised.
"""

from __future__ import annotations

import dataclasses
import errno
import logging
from collections.abc import Callable
from typing import Final, Literal

from transportkit._errors import ClosedError, OptionError
from transportkit._log import limited
from transportkit._options import SocketOptions
from transportkit.security import (
    _REFUSAL_MESSAGE,
    Authenticator,
    AuthPolicy,
    AuthStats,
    _describe,
    _refusal_record,
)
from transportkit.sim_backend._trace import Trace

__all__ = [
    "HANDSHAKE_IVL",
    "PROTOCOL_ERROR_ZMTP_CRYPTOGRAPHIC",
    "PROTOCOL_ERROR_ZMTP_MECHANISM_MISMATCH",
    "PROTOCOL_ERROR_ZMTP_UNEXPECTED_COMMAND",
    "RESET_ERRNO",
    "ZAP_DENIED",
    "ZAP_INTERNAL_ERROR",
    "Decision",
    "Mechanism",
    "SimAuthenticator",
    "mechanism",
    "peer_address",
]

logger = logging.getLogger(__name__)

Mechanism = Literal["NULL", "CURVE-server", "CURVE-client"]
"""The security mechanism a socket speaks on ipc and tcp (its CURVE role, if any)."""
Decision = Literal["allowed", "denied_key", "denied_ip", "handler_errors"]
"""What :meth:`SimAuthenticator.check` says of a handshake, named by the
:class:`~transportkit.security.AuthStats` counter it adds to: the policy's
:data:`~transportkit.security.AuthDecision`, or ``"handler_errors"`` when the policy
failed to decide (refused, as libzmq refuses on a ZAP status 500)."""
ZAP_INTERNAL_ERROR: Final = 500
"""The ZAP status code of a handler that failed (``HANDSHAKE_FAILED_AUTH``'s value)."""

_DECISIONS: Final = frozenset({"allowed", "denied_key", "denied_ip"})

# libzmq 4.3's monitor event values (zmq.h), as measured on 4.3.5 for each case.
PROTOCOL_ERROR_ZMTP_UNEXPECTED_COMMAND: Final = 0x10000001
"""Both ends are CURVE clients: each gets a HELLO where it expects a WELCOME."""
PROTOCOL_ERROR_ZMTP_CRYPTOGRAPHIC: Final = 0x11000001
"""The server cannot open the client's HELLO: the client's ``curve_serverkey`` is wrong."""
PROTOCOL_ERROR_ZMTP_MECHANISM_MISMATCH: Final = 0x11000002
"""One end speaks CURVE, the other NULL (plaintext): seen in the ZMTP greeting."""
ZAP_DENIED: Final = 400
"""The ZAP status code of a refusal (``HANDSHAKE_FAILED_AUTH``'s value on both ends)."""
RESET_ERRNO: Final = errno.EPIPE
"""``HANDSHAKE_FAILED_NO_DETAIL``'s value when the peer closes during the handshake
(libzmq 4.3.5 reports EPIPE for a client whose server key is wrong)."""
HANDSHAKE_IVL: Final = 30.0
"""libzmq's default ``ZMQ_HANDSHAKE_IVL`` (s): two CURVE servers wait this long, then
both fail with ``HANDSHAKE_FAILED_NO_DETAIL`` (EAGAIN) and the connecting one retries."""


def mechanism(options: SocketOptions) -> Mechanism:
    """The mechanism a socket with ``options`` speaks over ipc and tcp.

    ``SocketOptions`` has already refused incomplete key sets, so a server key means a
    complete CURVE client. inproc never runs a handshake (libzmq): callers skip it.
    """
    if options.curve_server:
        return "CURVE-server"
    if options.curve_serverkey is not None:
        return "CURVE-client"
    return "NULL"


def peer_address(transport: str, node: str) -> str:
    """The address a ZAP handler is given for a peer on ``node`` (see the module)."""
    return node if transport == "tcp" else ""


class SimAuthenticator(Authenticator):
    """The ZAP handler of one simulated node (:meth:`Node.start_authenticator
    <transportkit.sim_backend.Node.start_authenticator>`).

    It answers at once (a ZAP request is an inproc round trip in libzmq: no link
    delay), from the policy in force when the client's INITIATE reaches the server;
    so :meth:`update` applies to every handshake decided after it, and connections
    already made stay. It stops when it is closed, when its node's network is closed
    and when its node crashes (a restarted node has none until it starts one again);
    the node's CURVE servers then admit any client with a valid handshake, as libzmq
    does without a handler. What it logs is in the module's docstring.

    Raises:
        OptionError: ``policy`` is not an AuthPolicy.
    """

    def __init__(
        self, node: str, policy: AuthPolicy, trace: Trace, clock: Callable[[], float]
    ) -> None:
        _check_policy(policy)
        self._node = node
        self._policy = policy
        self._stats = AuthStats()
        self._trace = trace
        self._clock = clock
        self._closed = False
        trace.add(clock(), "auth-start", node, _describe(policy))
        logger.info(
            "authenticator of node %r started: %s",
            node,
            _describe(policy),
            extra={"node": node, "reason": "start"},
        )

    @property
    def policy(self) -> AuthPolicy:
        """The policy in force."""
        return self._policy

    def update(self, policy: AuthPolicy) -> None:
        """Replace the policy; handshakes decided from now on follow it.

        Raises:
            OptionError: ``policy`` is not an AuthPolicy.
            ClosedError: The authenticator is closed (or its node crashed).
        """
        _check_policy(policy)
        if self._closed:
            raise ClosedError(f"the authenticator of node {self._node!r} is closed")
        self._policy = policy
        self._trace.add(self._clock(), "auth-update", self._node, _describe(policy))
        logger.info(
            "authenticator of node %r updated: %s",
            self._node,
            _describe(policy),
            extra={"node": self._node, "reason": "update"},
        )

    @property
    def stats(self) -> AuthStats:
        """A snapshot of the counters (a new object each time)."""
        return dataclasses.replace(self._stats)

    @property
    def closed(self) -> bool:
        """True once closed (by :meth:`close`, its node's ``close`` or a crash)."""
        return self._closed

    @property
    def running(self) -> bool:
        """True while it answers (not :attr:`closed`), as ``ZmqAuthenticator.running``."""
        return not self._closed

    def close(self, reason: str = "close") -> None:
        """Stop answering: later handshakes are not authenticated. Idempotent."""
        if not self._closed:
            self._closed = True
            self._trace.add(self._clock(), "auth-stop", self._node, reason)
            logger.info(
                "authenticator of node %r stopped (%s): its CURVE servers now admit "
                "any client with a valid handshake",
                self._node,
                reason,
                extra={"node": self._node, "reason": reason},
            )

    def check(self, *, domain: str, address: str, key: bytes | None) -> Decision:
        """Decide one handshake with :meth:`AuthPolicy.decide
        <transportkit.security.AuthPolicy.decide>`, count it, and log a refusal
        (called by the wire).

        A policy that raises, or answers something other than an ``AuthDecision``,
        refuses: ``"handler_errors"`` (counted there, logged at ERROR), as the zmq
        backend answers ZAP status 500.
        """
        policy = self._policy
        try:
            decided = policy.decide(domain=domain, address=address, key=key)
            if decided not in _DECISIONS:
                raise OptionError(f"decide() returned {decided!r}, not an AuthDecision")
            reason = policy.reason(decided, domain=domain)
        except Exception as exc:
            self._stats.handler_errors += 1
            self._log(
                "handler_errors",
                f"the policy's decide() raised {type(exc).__name__}",
                address=address,
                key=key,
                domain=domain,
                exc_info=True,
            )
            return "handler_errors"
        setattr(self._stats, decided, getattr(self._stats, decided) + 1)
        if decided != "allowed":
            self._log(decided, reason, address=address, key=key, domain=domain)
        return decided

    @staticmethod
    def _log(
        counter: str,
        reason: str,
        *,
        address: str,
        key: bytes | None,
        domain: str,
        exc_info: bool = False,
    ) -> None:
        level, args, extra = _refusal_record(
            counter, reason, address=address, key=key, domain=domain
        )
        limited(logger, level, counter, _REFUSAL_MESSAGE, *args, exc_info=exc_info, extra=extra)

    def __repr__(self) -> str:
        state = "closed" if self._closed else "running"
        return f"<SimAuthenticator {self._node!r} {state}>"


def _check_policy(policy: object) -> None:
    if not isinstance(policy, AuthPolicy):
        raise OptionError(f"policy must be an AuthPolicy, got {type(policy).__name__}")
