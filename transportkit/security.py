"""CURVE security: key pairs, the authentication policy, and the authenticator contract.

CURVE (ZeroMQ RFC 26, CurveZMQ) encrypts a connection and authenticates the server to
the client by its public key; the ZAP handler (RFC 27) authenticates clients to the
server: by the client's public key against an allow-list, and by the peer's IP address.

Set the keys in :class:`~transportkit.SocketOptions` (``curve_server``,
``curve_secretkey``, ``curve_publickey``, ``curve_serverkey``) and start an
authenticator on the server's network with :meth:`transportkit.Network.start_authenticator`;
both backends then refuse the same misconfigurations.
"""

from __future__ import annotations

import abc
import secrets
from collections.abc import Iterable
from dataclasses import dataclass, field

from transportkit._closing import Closeable
from transportkit._curve import curve_public, key_z85, z85_encode
from transportkit._errors import OptionError

__all__ = [
    "AuthPolicy",
    "AuthStats",
    "Authenticator",
    "CurveKeyPair",
    "generate_keypair",
    "public_key",
]


@dataclass(frozen=True, slots=True)
class CurveKeyPair:
    """A CURVE key pair in Z85 form (40 ASCII bytes each).

    Attributes:
        public: The public key: give it to peers (a client's ``curve_serverkey``, a
            server's allow-list).
        secret: The secret key, or None for a public-only certificate.
    """

    public: bytes
    secret: bytes | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "public", key_z85("public", self.public))
        if self.secret is not None:
            secret = key_z85("secret", self.secret)
            object.__setattr__(self, "secret", secret)
            if curve_public(secret) != self.public:
                raise OptionError("the public key does not belong to the secret key")


def generate_keypair() -> CurveKeyPair:
    """A new key pair from the operating system's random source (``secrets``).

    Not for use inside a running simulation (its randomness is not the run's seed):
    make keys in test set-up, or derive them from fixed secrets.
    """
    secret = z85_encode(secrets.token_bytes(32))
    return CurveKeyPair(public=curve_public(secret), secret=secret)


def public_key(secret: bytes | str) -> bytes:
    """The Z85 public key of ``secret`` (Z85 or 32 raw bytes).

    Raises:
        OptionError: ``secret`` is not a CURVE key.
    """
    return curve_public(key_z85("secret", secret))


def _keys(values: Iterable[bytes | str] | None) -> frozenset[bytes] | None:
    if values is None:
        return None
    if isinstance(values, (bytes, str)):
        raise OptionError("allow_keys must be a collection of keys, not one key")
    return frozenset(key_z85("allow_keys", v) for v in values)


@dataclass(frozen=True, slots=True)
class AuthPolicy:
    """Who may connect to the CURVE servers of one network (one ZAP handler).

    Attributes:
        allow_keys: Client public keys (Z85 or raw) allowed in; None allows any client
            that completes the CURVE handshake (pyzmq's ``CURVE_ALLOW_ANY``). An empty
            collection allows nobody.
        allow_ips: If not empty, only peers from these IP addresses get in (then
            ``deny_ips`` is ignored, as in pyzmq's authenticator).
        deny_ips: Peers from these IP addresses are refused.
        domain: The ZAP domain this policy answers for; ``"*"`` answers every domain.
            A socket's domain is its ``zap_domain`` option.
    """

    allow_keys: frozenset[bytes] | None = None
    allow_ips: frozenset[str] = field(default_factory=frozenset)
    deny_ips: frozenset[str] = field(default_factory=frozenset)
    domain: str = "*"

    def __post_init__(self) -> None:
        object.__setattr__(self, "allow_keys", _keys(self.allow_keys))
        for name in ("allow_ips", "deny_ips"):
            value = getattr(self, name)
            if isinstance(value, (bytes, str)):
                raise OptionError(f"{name} must be a collection of addresses, not one address")
            object.__setattr__(self, name, frozenset(str(v) for v in value))
        if not isinstance(self.domain, str):
            raise OptionError("domain must be a str")


@dataclass(slots=True)
class AuthStats:
    """What an authenticator decided, counted.

    Attributes:
        allowed: Handshakes let in.
        denied_key: Refused because the client's key is not allowed (or it has none).
        denied_ip: Refused by ``allow_ips``/``deny_ips``.
    """

    allowed: int = 0
    denied_key: int = 0
    denied_ip: int = 0


class Authenticator(Closeable):
    """The ZAP handler of one network, started by
    :meth:`~transportkit.Network.start_authenticator` and closed with the network.

    While it runs, every CURVE server socket of the network (``curve_server=True``)
    admits only the clients its policy allows; a refused client never delivers a
    message and its monitor reports ``HANDSHAKE_FAILED_AUTH``. Without an authenticator
    a CURVE server admits any client with a valid handshake (libzmq's behaviour).
    """

    @property
    @abc.abstractmethod
    def policy(self) -> AuthPolicy:
        """The policy in force."""

    @abc.abstractmethod
    def update(self, policy: AuthPolicy) -> None:
        """Replace the policy; it applies to handshakes from now on (established
        connections stay, as with libzmq: ZAP runs only at the handshake).
        """

    @property
    @abc.abstractmethod
    def stats(self) -> AuthStats:
        """Counters of the decisions made."""
