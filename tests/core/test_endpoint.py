"""Endpoint parsing: every malformed endpoint gets an EndpointError naming the fault."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from transportkit import EndpointError, parse_endpoint


@pytest.mark.parametrize(
    ("text", "transport", "host", "port"),
    [
        ("tcp://127.0.0.1:5555", "tcp", "127.0.0.1", 5555),
        ("tcp://*:*", "tcp", "*", None),
        ("tcp://127.0.0.1:0", "tcp", "127.0.0.1", None),
        ("tcp://[::1]:80", "tcp", "::1", 80),
        ("ipc:///tmp/feed.ipc", "ipc", "", None),
        ("inproc://market_data", "inproc", "", None),
        ("epgm://eth0;239.192.1.1:5555", "epgm", "", None),
    ],
)
def test_well_formed_endpoints_parse(
    text: str, transport: str, host: str, port: int | None
) -> None:
    ep = parse_endpoint(text)
    assert (ep.transport, ep.host, ep.port) == (transport, host, port)
    assert str(ep) == text


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("127.0.0.1:5555", "transport://address"),
        ("udp://127.0.0.1:5555", "unknown transport 'udp'"),
        ("tcp://", "empty address"),
        ("tcp://127.0.0.1", "no port"),
        ("tcp://:5555", "empty host"),
        ("tcp://host:http", "non-numeric port"),
        ("tcp://host:70000", "above 65535"),
        ("tcp://[::1:80", "IPv6"),
        ("ipc:///tmp/a b", "whitespace"),
        ("pgm://239.1.1.1:5555", "interface;group:port"),
        (b"tcp://x:1", "must be a str"),
    ],
)
def test_malformed_endpoints_raise_endpoint_error(text: object, needle: str) -> None:
    with pytest.raises(EndpointError, match=needle):
        parse_endpoint(text)


@given(st.text(max_size=30))
def test_parsing_never_fails_with_anything_but_endpoint_error(text: str) -> None:
    try:
        parse_endpoint(text)
    except EndpointError as exc:
        assert str(exc)
