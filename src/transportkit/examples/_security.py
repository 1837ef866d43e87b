"""CURVE flags shared by the example programs (``--curve-secret`` and friends).

Servers take ``--curve-secret FILE`` (their secret certificate: the bound socket
becomes a CURVE server) and ``--allow-keys DIR`` (admit only the clients whose public
certificates, ``*.key``, are in DIR). Clients take ``--curve-server-key FILE`` (the
server's public certificate: CURVE on) and ``--curve-secret FILE`` (their own secret
certificate; without it a new key pair is made for the run, which a server with
``--allow-keys`` refuses). Certificates are pyzmq's ``zmq.auth`` files; ``keygen``
writes them. A bad file is a usage error (exit status 2) naming it.
"""

from __future__ import annotations

import argparse
import sys

from transportkit import SocketOptions
from transportkit.security import (
    AuthPolicy,
    CertificateError,
    CurveKeyPair,
    generate_keypair,
    load_certificate,
    load_public_keys,
)
from transportkit.zmq_backend import ZmqNetwork

__all__ = [
    "add_client_security",
    "add_server_security",
    "client_security",
    "server_security",
]


def _secret_certificate(path: str) -> CurveKeyPair:
    try:
        pair = load_certificate(path)
    except (CertificateError, OSError) as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    if pair.secret is None:
        raise argparse.ArgumentTypeError(
            f"certificate {path!r} has no secret key (give the .key_secret file)"
        )
    return pair


def _public_certificate(path: str) -> bytes:
    try:
        return load_certificate(path).public
    except (CertificateError, OSError) as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _key_directory(path: str) -> frozenset[bytes]:
    try:
        return load_public_keys(path)
    except (CertificateError, OSError) as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_server_security(parser: argparse.ArgumentParser) -> None:
    """Add ``--curve-secret FILE`` and ``--allow-keys DIR`` to a server's parser."""
    group = parser.add_argument_group("CURVE security (off by default)")
    group.add_argument(
        "--curve-secret",
        type=_secret_certificate,
        metavar="FILE",
        help="this server's secret certificate (NAME.key_secret): serve over CURVE",
    )
    group.add_argument(
        "--allow-keys",
        type=_key_directory,
        metavar="DIR",
        help="admit only clients whose public certificate (*.key) is in DIR "
        "(default with --curve-secret: any client that knows the server's key)",
    )


def add_client_security(parser: argparse.ArgumentParser) -> None:
    """Add ``--curve-server-key FILE`` and ``--curve-secret FILE`` to a client's parser."""
    group = parser.add_argument_group("CURVE security (off by default)")
    group.add_argument(
        "--curve-server-key",
        type=_public_certificate,
        metavar="FILE",
        help="the server's public certificate (NAME.key): talk CURVE to it",
    )
    group.add_argument(
        "--curve-secret",
        type=_secret_certificate,
        metavar="FILE",
        help="this client's secret certificate (default: a new key pair for this run)",
    )


def server_security(
    args: argparse.Namespace, net: ZmqNetwork, options: SocketOptions | None = None
) -> SocketOptions:
    """``options`` (default: transportkit's) made a CURVE server's if ``--curve-secret``
    was given; with ``--allow-keys``, start ``net``'s authenticator on that list.

    Exits with status 2 (a usage error) for ``--allow-keys`` without ``--curve-secret``.
    """
    base = SocketOptions() if options is None else options
    pair: CurveKeyPair | None = args.curve_secret
    if pair is None:
        if args.allow_keys is not None:
            print("error: --allow-keys needs --curve-secret", file=sys.stderr)
            raise SystemExit(2)
        return base
    if args.allow_keys is not None:
        net.start_authenticator(AuthPolicy(allow_keys=args.allow_keys))
    return base.replace(curve_server=True, curve_secretkey=pair.secret)


def client_security(
    args: argparse.Namespace, options: SocketOptions | None = None
) -> SocketOptions:
    """``options`` (default: transportkit's) made a CURVE client's if
    ``--curve-server-key`` was given.

    Exits with status 2 (a usage error) for ``--curve-secret`` without
    ``--curve-server-key``.
    """
    base = SocketOptions() if options is None else options
    server_key: bytes | None = args.curve_server_key
    if server_key is None:
        if args.curve_secret is not None:
            print("error: --curve-secret needs --curve-server-key", file=sys.stderr)
            raise SystemExit(2)
        return base
    pair: CurveKeyPair = args.curve_secret or generate_keypair()
    return base.replace(curve_secretkey=pair.secret, curve_serverkey=server_key)
