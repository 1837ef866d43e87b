"""CURVE security in the simulated world: mechanisms, ZAP decisions, the authenticator.

What a handshake does (its steps in virtual time) is the wire's
(:meth:`Wire._handshake <transportkit.sim_backend._wire.Wire._handshake>`); this module
says which mechanism a socket speaks, what libzmq 4.3 reports when a handshake fails,
and what a node's authenticator (its ZAP handler, RFC 27) decides. The rules of the
decision are those of pyzmq's authenticator, which the zmq backend's follows too:

1. a ZAP domain the policy does not answer for (its ``domain`` is neither ``"*"`` nor
   the server socket's ``zap_domain``) is refused as ``denied_key``;
2. with ``allow_ips`` not empty, an address not in it is refused (``denied_ip``);
   otherwise an address in ``deny_ips`` is;
3. a client key is let in if ``allow_keys`` is None or holds it (``denied_key``
   otherwise): an allowed address never replaces the key check. A plaintext (NULL)
   peer, asked about by a socket with a ``zap_domain``, has no key: rules 1 and 2
   decide.

The address a simulated peer has is the name of its node over tcp (node names are the
sim's hosts, as in ``tcp://exchange:5556``: its "DNS" maps a name to itself) and the
empty string over ipc (a local socket has no IP address, as in libzmq).
"""

from __future__ import annotations

import dataclasses
import errno
from collections.abc import Callable
from typing import Final, Literal

from transportkit._errors import ClosedError, OptionError
from transportkit._options import SocketOptions
from transportkit.security import Authenticator, AuthPolicy, AuthStats
from transportkit.sim_backend._trace import Trace

__all__ = [
    "HANDSHAKE_IVL",
    "PROTOCOL_ERROR_ZMTP_CRYPTOGRAPHIC",
    "PROTOCOL_ERROR_ZMTP_MECHANISM_MISMATCH",
    "PROTOCOL_ERROR_ZMTP_UNEXPECTED_COMMAND",
    "RESET_ERRNO",
    "ZAP_DENIED",
    "Decision",
    "Mechanism",
    "SimAuthenticator",
    "decide",
    "mechanism",
    "peer_address",
]

Mechanism = Literal["NULL", "CURVE-server", "CURVE-client"]
"""The security mechanism a socket speaks on ipc and tcp (its CURVE role, if any)."""
Decision = Literal["allowed", "denied_key", "denied_ip"]
"""A ZAP decision, named by the :class:`~transportkit.security.AuthStats` counter."""

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


def decide(policy: AuthPolicy, *, domain: str, address: str, key: bytes | None) -> Decision:
    """What ``policy`` says of a CURVE client with Z85 public ``key`` from ``address``,
    asked by a server socket whose ``zap_domain`` is ``domain`` (rules in the module);
    ``key`` None is a plaintext (NULL) peer, asked about by a socket with a
    ``zap_domain``: only the domain and address rules apply.
    """
    if policy.domain not in ("*", domain):
        return "denied_key"
    if policy.allow_ips:
        if address not in policy.allow_ips:
            return "denied_ip"
    elif address in policy.deny_ips:
        return "denied_ip"
    allowed = policy.allow_keys
    if key is None or allowed is None or key in allowed:
        return "allowed"
    return "denied_key"


def _describe(policy: AuthPolicy) -> str:
    keys = "any" if policy.allow_keys is None else str(len(policy.allow_keys))
    return (
        f"keys={keys} allow_ips={len(policy.allow_ips)} deny_ips={len(policy.deny_ips)} "
        f"domain={policy.domain!r}"
    )


class SimAuthenticator(Authenticator):
    """The ZAP handler of one simulated node (:meth:`Node.start_authenticator
    <transportkit.sim_backend.Node.start_authenticator>`).

    It answers at once (a ZAP request is an inproc round trip in libzmq: no link
    delay), from the policy in force when the client's INITIATE reaches the server;
    so :meth:`update` applies to every handshake decided after it, and connections
    already made stay. It stops when it is closed, when its node's network is closed
    and when its node crashes (a restarted node has none until it starts one again);
    the node's CURVE servers then admit any client with a valid handshake, as libzmq
    does without a handler.

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

    @property
    def stats(self) -> AuthStats:
        """A snapshot of the counters (a new object each time)."""
        return dataclasses.replace(self._stats)

    @property
    def closed(self) -> bool:
        """True once closed (by :meth:`close`, its node's ``close`` or a crash)."""
        return self._closed

    def close(self, reason: str = "close") -> None:
        """Stop answering: later handshakes are not authenticated. Idempotent."""
        if not self._closed:
            self._closed = True
            self._trace.add(self._clock(), "auth-stop", self._node, reason)

    def check(self, *, domain: str, address: str, key: bytes | None) -> Decision:
        """Decide one handshake and count it (called by the wire)."""
        decision = decide(self._policy, domain=domain, address=address, key=key)
        setattr(self._stats, decision, getattr(self._stats, decision) + 1)
        return decision

    def __repr__(self) -> str:
        state = "closed" if self._closed else "running"
        return f"<SimAuthenticator {self._node!r} {state}>"


def _check_policy(policy: object) -> None:
    if not isinstance(policy, AuthPolicy):
        raise OptionError(f"policy must be an AuthPolicy, got {type(policy).__name__}")
