"""Endpoint strings: parsing and validation shared by both backends."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from transportkit._errors import EndpointError

__all__ = ["Endpoint", "parse_endpoint"]

TRANSPORTS: Final = ("inproc", "ipc", "tcp", "pgm", "epgm")
MULTICAST: Final = frozenset({"pgm", "epgm"})


@dataclass(frozen=True, slots=True)
class Endpoint:
    """A parsed ``transport://address`` endpoint.

    Attributes:
        transport: One of ``inproc``, ``ipc``, ``tcp``, ``pgm``, ``epgm``.
        address: Everything after ``://``.
        host: For tcp, the host part (``*`` for a wildcard bind); otherwise ``""``.
        port: For tcp, the port number, or None for a wildcard port (``*`` or ``0``).
    """

    transport: str
    address: str
    host: str = ""
    port: int | None = None

    def __str__(self) -> str:
        return f"{self.transport}://{self.address}"


def parse_endpoint(text: object) -> Endpoint:
    """Parse and validate an endpoint; raise EndpointError naming the problem.

    Accepted forms: ``inproc://name``, ``ipc://path``, ``tcp://host:port`` (``host`` may
    be ``*``, a name or an IPv4/bracketed IPv6 address; ``port`` may be ``*`` or 0 for an
    ephemeral port when binding), ``pgm://`` and ``epgm://`` (validated only for shape;
    whether a backend can use them is the backend's call).
    """
    if not isinstance(text, str):
        raise EndpointError(f"endpoint must be a str, got {type(text).__name__} {text!r}")
    transport, sep, address = text.partition("://")
    if not sep:
        raise EndpointError(
            f"malformed endpoint {text!r}: expected 'transport://address', "
            f"e.g. 'tcp://127.0.0.1:5555' or 'ipc:///tmp/feed.ipc'"
        )
    if transport not in TRANSPORTS:
        raise EndpointError(
            f"unknown transport {transport!r} in endpoint {text!r}; "
            f"expected one of {', '.join(TRANSPORTS)}"
        )
    if not address:
        raise EndpointError(f"endpoint {text!r} has an empty address")
    if any(c.isspace() for c in address):
        raise EndpointError(f"endpoint {text!r} contains whitespace")
    if transport == "tcp":
        return _parse_tcp(text, address)
    if transport in MULTICAST and ";" not in address:
        raise EndpointError(
            f"malformed {transport} endpoint {text!r}: expected 'interface;group:port'"
        )
    return Endpoint(transport, address)


def _parse_tcp(text: str, address: str) -> Endpoint:
    if address.startswith("["):
        host, bracket, rest = address[1:].partition("]")
        if not bracket or not rest.startswith(":"):
            raise EndpointError(f"malformed IPv6 tcp endpoint {text!r}: expected '[addr]:port'")
        port_text = rest[1:]
    else:
        host, colon, port_text = address.rpartition(":")
        if not colon:
            raise EndpointError(f"tcp endpoint {text!r} has no port: expected 'tcp://host:port'")
    if not host:
        raise EndpointError(f"tcp endpoint {text!r} has an empty host")
    if port_text == "*":
        return Endpoint("tcp", address, host, None)
    if not port_text.isdigit():
        raise EndpointError(f"tcp endpoint {text!r} has a non-numeric port {port_text!r}")
    port = int(port_text)
    if port > 65535:
        raise EndpointError(f"tcp endpoint {text!r} has port {port}, above 65535")
    return Endpoint("tcp", address, host, port or None)
