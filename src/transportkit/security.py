"""CURVE security: key pairs, the authentication policy, and the authenticator contract.

CURVE (ZeroMQ RFC 26, CurveZMQ) encrypts a connection and authenticates the server to
the client by its public key; the ZAP handler (RFC 27) authenticates clients to the
server: by the client's public key against an allow-list, and by the peer's IP address.

Set the keys in :class:`~transportkit.SocketOptions` (``curve_server``,
``curve_secretkey``, ``curve_publickey``, ``curve_serverkey``) and start an
authenticator on the server's network with :meth:`transportkit.Network.start_authenticator`;
both backends then refuse the same misconfigurations.

Keys live in certificate files in the format of pyzmq's ``zmq.auth`` (and czmq's
``zcert``): :func:`save_certificate` writes ``NAME.key`` and ``NAME.key_secret``,
:func:`load_certificate` reads either, :func:`load_public_keys` reads a directory of
``*.key`` files into an allow-list.
"""

from __future__ import annotations

import abc
import datetime
import logging
import os
import re
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal

from transportkit._closing import Closeable
from transportkit._curve import curve_public, key_z85, z85_encode
from transportkit._errors import OptionError

__all__ = [
    "MAX_CERTIFICATES",
    "MAX_CERTIFICATE_BYTES",
    "AuthDecision",
    "AuthPolicy",
    "AuthStats",
    "Authenticator",
    "CertificateError",
    "CurveKeyPair",
    "generate_keypair",
    "load_certificate",
    "load_public_keys",
    "public_key",
    "save_certificate",
]


@dataclass(frozen=True, slots=True)
class CurveKeyPair:
    """A CURVE key pair in Z85 form (40 ASCII bytes each).

    Its ``repr`` shows the public key only (``secret=<hidden>``), so a pair in a log
    line, a traceback or a debugger's listing does not give the secret away.

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

    def __repr__(self) -> str:
        """The public key and whether there is a secret: never the secret itself."""
        secret = "None" if self.secret is None else "<hidden>"
        return f"CurveKeyPair(public={self.public!r}, secret={secret})"


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


AuthDecision = Literal["allowed", "denied_key", "denied_ip"]
"""An authentication decision, named by the :class:`AuthStats` counter it adds to."""


def _keys(values: Iterable[bytes | str] | None) -> frozenset[bytes] | None:
    if values is None:
        return None
    if isinstance(values, (bytes, str)):
        raise OptionError("allow_keys must be a collection of keys, not one key")
    return frozenset(key_z85("allow_keys", v) for v in values)


def _addresses(name: str, values: Iterable[str]) -> frozenset[str]:
    if isinstance(values, (bytes, str)):
        raise OptionError(f"{name} must be a collection of addresses, not one address")
    return frozenset(str(v) for v in values)


@dataclass(frozen=True, slots=True, init=False)
class AuthPolicy:
    """Who may connect to the CURVE servers of one network (one ZAP handler).

    Made with any collections (lists, sets, tuples, generators); stored as frozensets,
    so a policy is immutable and hashable, and ``dataclasses.replace`` works.

    Attributes:
        allow_keys: Client public keys (Z85 or raw) allowed in; None allows any client
            that completes the CURVE handshake (pyzmq's ``CURVE_ALLOW_ANY``). An empty
            collection allows nobody.
        allow_ips: If not empty, only peers from these IP addresses get in (then
            ``deny_ips`` is ignored, as in pyzmq's authenticator).
        deny_ips: Peers from these IP addresses are refused.
        domain: The ZAP domain this policy answers for; ``"*"`` answers every domain.
            A socket's domain is its ``zap_domain`` option.

    Raises:
        OptionError: A key is not a CURVE key, one key or one address is given where
            a collection is expected, or ``domain`` is not a str.
    """

    allow_keys: frozenset[bytes] | None
    allow_ips: frozenset[str]
    deny_ips: frozenset[str]
    domain: str

    def __init__(
        self,
        allow_keys: Iterable[bytes | str] | None = None,
        allow_ips: Iterable[str] = (),
        deny_ips: Iterable[str] = (),
        domain: str = "*",
    ) -> None:
        """Make the policy (see the class for the arguments)."""
        object.__setattr__(self, "allow_keys", _keys(allow_keys))
        object.__setattr__(self, "allow_ips", _addresses("allow_ips", allow_ips))
        object.__setattr__(self, "deny_ips", _addresses("deny_ips", deny_ips))
        if not isinstance(domain, str):
            raise OptionError("domain must be a str")
        object.__setattr__(self, "domain", domain)

    def decide(self, *, domain: str, address: str, key: bytes | None) -> AuthDecision:
        """What this policy says of one handshake: the :class:`AuthStats` field to count.

        The rules, in order (those of pyzmq's authenticator, plus the domain):

        1. A ``domain`` this policy does not answer for (``self.domain`` is neither
           ``"*"`` nor ``domain``) is refused: ``"denied_key"``.
        2. If ``allow_ips`` is not empty, an ``address`` not in it is refused
           (``"denied_ip"``); otherwise an ``address`` in ``deny_ips`` is
           (``"denied_ip"``). Addresses compare as strings (libzmq gives the peer's
           IP in its canonical text form; an ipc peer's address is empty).
        3. ``key`` None is a NULL-mechanism connection (a socket with a
           ``zap_domain`` and no CURVE): it has no key to check and is let in.
        4. A CURVE ``key`` (Z85 or 32 raw bytes) is let in if ``allow_keys`` is None
           or holds it, even from an address in ``allow_ips``: the address never
           replaces the key.

        Raises:
            OptionError: ``key`` is not a CURVE key.
        """
        if self.domain not in ("*", domain):
            return "denied_key"
        if self.allow_ips:
            if address not in self.allow_ips:
                return "denied_ip"
        elif address in self.deny_ips:
            return "denied_ip"
        if key is None:
            return "allowed"
        z85 = key_z85("key", key)
        if self.allow_keys is None or z85 in self.allow_keys:
            return "allowed"
        return "denied_key"

    def reason(self, decision: AuthDecision, *, domain: str) -> str:
        """Why :meth:`decide` gave ``decision`` for a handshake of ``domain``, in words
        for a log line (the backends' refusal warnings use it).

        It names the rule, never a key: ``"allowed"``, ``"address not in allow_ips"``,
        ``"address in deny_ips"``, ``"key not in allow_keys"``, or ``"ZAP domain 'x'
        not served (the policy answers 'y')"`` for a refusal by rule 1.

        Raises:
            OptionError: ``decision`` is not an :data:`AuthDecision`.
        """
        if decision == "allowed":
            return "allowed"
        if decision == "denied_ip":
            return "address not in allow_ips" if self.allow_ips else "address in deny_ips"
        if decision == "denied_key":
            if self.domain not in ("*", domain):
                return f"ZAP domain {domain!r} not served (the policy answers {self.domain!r})"
            return "key not in allow_keys"
        raise OptionError(f"not an authentication decision: {decision!r}")


@dataclass(slots=True)
class AuthStats:
    """What an authenticator decided, counted.

    The same on both backends: each ZAP request (one per handshake attempt, so a
    client that retries is counted at each try) adds one to exactly one counter.
    Handshakes that fail before the authenticator is asked (a plaintext client of a
    CURVE server, a wrong ``curve_serverkey``) are in none of them.

    Attributes:
        allowed: Handshakes let in.
        denied_key: Refused because the client's key is not allowed, or the socket's
            ``zap_domain`` is not the policy's ``domain`` (a client with no key at all
            never reaches the authenticator: libzmq refuses it in the handshake).
        denied_ip: Refused by ``allow_ips``/``deny_ips``.
        malformed: ZAP requests refused without a decision because they follow no
            protocol (not RFC 27's form, bad CURVE credentials, a mechanism other than
            NULL and CURVE). libzmq never sends one, only a raw socket connected to
            the handler's endpoint could: always 0 on the sim.
        handler_errors: Handshakes refused because the policy's ``decide`` raised or
            returned something other than an :data:`AuthDecision` (a subclass's
            bug): a broken policy refuses, it never lets in.
    """

    allowed: int = 0
    denied_key: int = 0
    denied_ip: int = 0
    malformed: int = 0
    handler_errors: int = 0


class Authenticator(Closeable):
    """The ZAP handler of one network, started by
    :meth:`~transportkit.Network.start_authenticator` and closed with the network.

    While it runs, every CURVE server socket of the network (``curve_server=True``)
    admits only the clients its policy allows (:meth:`AuthPolicy.decide`, on both
    backends); a refused client never delivers a message, both monitors report
    ``HANDSHAKE_FAILED_AUTH``, and the client does not retry (libzmq ends its session;
    on real sockets a loaded client may see the close first and retry, see
    :meth:`ZmqNetwork.start_authenticator
    <transportkit.zmq_backend.ZmqNetwork.start_authenticator>`). Without an
    authenticator a CURVE server admits any client with a valid handshake (libzmq's
    behaviour).

    Each refusal is logged at WARNING (rate-limited through
    :func:`transportkit._log.limited`) with the client's address, its Z85 public key
    and the reason; the start, each :meth:`update` and the stop at INFO.
    :meth:`MetricsRegistry.watch <transportkit.metrics.MetricsRegistry.watch>` exports
    :attr:`stats` and :attr:`running`, with the same names on both backends.
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
        """Counters of the decisions made (a snapshot)."""

    @property
    @abc.abstractmethod
    def running(self) -> bool:
        """True while it answers handshakes (exported as the ``running`` gauge by
        :meth:`MetricsRegistry.watch <transportkit.metrics.MetricsRegistry.watch>`).
        """


def _key_text(key: bytes | None) -> str:
    """A client's public key for a log line: its Z85 text, ``"-"`` for none (NULL)."""
    if key is None:
        return "-"
    try:
        return key_z85("key", key).decode("ascii")
    except OptionError:
        return f"<not a key: {len(key)} bytes>"


_REFUSAL_MESSAGE: Final = "handshake refused (%s): %s, from address %r, key %s, ZAP domain %r"


def _refusal_record(
    counter: str, reason: str, *, address: str, key: bytes | None, domain: str
) -> tuple[int, tuple[object, ...], dict[str, object]]:
    """The level, ``%`` arguments (for :data:`_REFUSAL_MESSAGE`) and ``extra`` fields
    of a refused handshake's log line, the same on both backends: a WARNING (an ERROR
    for ``handler_errors``, a policy that raised). The backends write it through
    :func:`transportkit._log.limited`, keyed by ``counter``.

    ``key`` is the client's public key (public by definition); no secret ever reaches
    an authenticator, so none can reach this line.
    """
    level = logging.ERROR if counter == "handler_errors" else logging.WARNING
    text = _key_text(key)
    extra: dict[str, object] = {
        "counter": counter,
        "reason": reason,
        "address": address,
        "key": text,
        "domain": domain,
    }
    return level, (counter, reason, address, text, domain), extra


def _describe(policy: AuthPolicy) -> str:
    """A policy in one line for logs and traces: sizes and the domain, never keys."""
    keys = "any" if policy.allow_keys is None else str(len(policy.allow_keys))
    return (
        f"keys={keys} allow_ips={len(policy.allow_ips)} deny_ips={len(policy.deny_ips)} "
        f"domain={policy.domain!r}"
    )


# Certificates: the ZPL text files of czmq's zcert and pyzmq's zmq.auth.
#
# ``NAME.key`` holds the public key, ``NAME.key_secret`` both keys; each is a ZPL
# document (ZeroMQ RFC 4): ``#`` comments, a ``metadata`` section of ``name = "value"``
# lines, a ``curve`` section with ``public-key = "<Z85>"`` and, in the secret file,
# ``secret-key = "<Z85>"``. The reader accepts what pyzmq's ``load_certificate``
# accepts (values quoted with ' or " or bare, indentation free).

MAX_CERTIFICATE_BYTES: Final = 64 * 1024
"""A certificate file longer than this is refused (real ones are under 1 KiB)."""
MAX_CERTIFICATES: Final = 100_000
""":func:`load_public_keys` refuses a directory with more ``*.key`` files."""

_ZPL_NAME: Final = re.compile(r"[A-Za-z0-9$\-_@.&+/]+")
_KEY_LINE: Final = re.compile(rb"^(public-key|secret-key)\s*=\s*(.*)$")


class CertificateError(OptionError):
    """A certificate file is malformed, too large, or holds keys that do not match.

    Attributes:
        path: The file concerned.
    """

    def __init__(self, path: str | os.PathLike[str], problem: str) -> None:
        self.path = Path(path)
        super().__init__(f"certificate {str(self.path)!r}: {problem}")


def _zpl_value(path: Path, what: str, value: str) -> str:
    if any(c in value for c in "\"'\r\n") or not value.isprintable():
        raise CertificateError(path, f"{what} {value!r} cannot be written in ZPL")
    return value


def _certificate_text(
    path: Path, pair_public: bytes, secret: bytes | None, metadata: Mapping[str, str]
) -> str:
    kind = "secret" if secret is not None else "public"
    lines = [
        f"#   ZeroMQ CURVE {kind} certificate, written by transportkit on "
        f"{datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M:%S} UTC",
    ]
    if secret is not None:
        lines.append("#   Secret: keep this file to yourself (mode 0600); share the .key file.")
    else:
        lines.append("#   Public: give it to the peers that must recognise this key.")
    lines += ["", "metadata"]
    for name, value in metadata.items():
        if not isinstance(name, str) or not _ZPL_NAME.fullmatch(name):
            raise CertificateError(path, f"metadata name {name!r} is not a ZPL name")
        if not isinstance(value, str):
            raise CertificateError(path, f"metadata value of {name!r} must be a str")
        lines.append(f'    {name} = "{_zpl_value(path, "metadata value", value)}"')
    lines.append("curve")
    lines.append(f'    public-key = "{pair_public.decode("ascii")}"')
    if secret is not None:
        lines.append(f'    secret-key = "{secret.decode("ascii")}"')
    return "\n".join(lines) + "\n"


def _write_atomically(path: Path, text: str, mode: int) -> None:
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        with os.fdopen(fd, "w", encoding="ascii") as f:
            f.write(text)
        os.chmod(tmp, mode)  # whatever the umask
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def save_certificate(
    directory: str | os.PathLike[str],
    name: str,
    pair: CurveKeyPair,
    metadata: Mapping[str, str] | None = None,
) -> tuple[Path, Path | None]:
    """Write ``pair`` as ``directory/name.key`` (public) and ``name.key_secret``.

    The files are in the ZPL format pyzmq's ``zmq.auth.create_certificates`` writes
    (and czmq's ``zcert``), so either library reads the other's. The secret file is
    created with mode 0600, the public one 0644; each is written to a temporary file
    and renamed, so a reader never sees half a certificate. Existing files of that
    name are replaced.

    Args:
        directory: An existing directory.
        name: The certificates' base name: not empty, no path separator.
        pair: The keys; with ``pair.secret`` None only the public file is written.
        metadata: ``name = "value"`` lines for the ``metadata`` section of both files
            (names of letters, digits and ``$-_@.&+/``; values printable, without
            quotes).

    Returns:
        The public file's path and the secret file's (None if ``pair`` has no secret).

    Raises:
        CertificateError: A metadata entry cannot be written, or ``name`` is not a
            plain file name.
        OSError: The directory does not exist or cannot be written.
    """
    if not isinstance(pair, CurveKeyPair):
        raise OptionError(f"pair must be a CurveKeyPair, got {type(pair).__name__}")
    base = Path(directory)
    if not isinstance(name, str) or not name or name != Path(name).name or name in ("..", "."):
        raise CertificateError(base / str(name), "the name must be a plain file name")
    public_path = base / f"{name}.key"
    secret_path = base / f"{name}.key_secret"
    meta = dict(metadata or {})
    public_text = _certificate_text(public_path, pair.public, None, meta)
    secret_text = None
    if pair.secret is not None:
        secret_text = _certificate_text(secret_path, pair.public, pair.secret, meta)
    _write_atomically(public_path, public_text, 0o644)
    if secret_text is None:
        return public_path, None
    _write_atomically(secret_path, secret_text, 0o600)
    return public_path, secret_path


def _read_bounded(path: Path) -> bytes:
    with open(path, "rb") as f:
        data = f.read(MAX_CERTIFICATE_BYTES + 1)
    if len(data) > MAX_CERTIFICATE_BYTES:
        raise CertificateError(
            path, f"longer than {MAX_CERTIFICATE_BYTES} bytes: not a certificate"
        )
    return data


def load_certificate(path: str | os.PathLike[str]) -> CurveKeyPair:
    """Read a certificate written by :func:`save_certificate`, pyzmq or czmq.

    A public certificate (``.key``) gives a pair whose ``secret`` is None; a secret one
    (``.key_secret``) gives both keys, checked to belong together.

    Raises:
        CertificateError: The file is larger than :data:`MAX_CERTIFICATE_BYTES`, is
            not text, has no ``public-key``, has a key twice, a key that is not 40
            Z85 characters, or a secret key that does not match its public key.
        OSError: The file cannot be read (``FileNotFoundError`` if it is missing).
    """
    file = Path(path)
    data = _read_bounded(file)
    found: dict[bytes, bytes] = {}
    for number, raw_line in enumerate(data.splitlines(), start=1):
        line = raw_line.strip()
        if not line or line.startswith(b"#"):
            continue
        match = _KEY_LINE.match(line)
        if match is None:
            continue
        field_name, value = match.group(1), match.group(2).strip(b" \t'\"")
        if field_name in found:
            raise CertificateError(file, f"line {number}: a second {field_name.decode()}")
        if len(value) != 40:
            raise CertificateError(
                file, f"line {number}: {field_name.decode()} is not 40 Z85 characters"
            )
        found[field_name] = value
    if b"public-key" not in found:
        raise CertificateError(file, "no public-key (not a CURVE certificate)")
    try:
        return CurveKeyPair(public=found[b"public-key"], secret=found.get(b"secret-key"))
    except OptionError as exc:
        raise CertificateError(file, str(exc)) from None


def load_public_keys(directory: str | os.PathLike[str]) -> frozenset[bytes]:
    """The public keys of every ``*.key`` certificate in ``directory`` (not its
    subdirectories), for ``AuthPolicy(allow_keys=...)``.

    ``*.key_secret`` files are not read. Files are read in name order; an empty
    directory gives an empty set (which, as ``allow_keys``, admits nobody).

    Raises:
        CertificateError: A file is malformed (naming it), or there are more than
            :data:`MAX_CERTIFICATES`.
        NotADirectoryError: ``directory`` is not a directory.
        FileNotFoundError: It does not exist.
    """
    base = Path(directory)
    if not base.exists():
        raise FileNotFoundError(f"certificate directory {str(base)!r} does not exist")
    if not base.is_dir():
        raise NotADirectoryError(f"certificate directory {str(base)!r} is not a directory")
    files = sorted(p for p in base.glob("*.key") if p.is_file())
    if len(files) > MAX_CERTIFICATES:
        raise CertificateError(base, f"more than {MAX_CERTIFICATES} certificates")
    return frozenset(load_certificate(p).public for p in files)
