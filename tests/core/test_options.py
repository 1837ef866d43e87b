"""SocketOptions: validated, typed, with presets for trading systems."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given
from hypothesis import strategies as st

from transportkit import (
    HIGH_THROUGHPUT,
    LOW_LATENCY,
    RELIABLE_REQUEST_REPLY,
    OptionError,
    SocketKind,
    SocketOptions,
)

ALL_OPTIONS = [f.name for f in dataclasses.fields(SocketOptions)]


def test_every_option_named_in_the_design_and_seed_exists() -> None:
    wanted = {
        "sndhwm", "rcvhwm", "linger", "sndtimeo", "rcvtimeo", "reconnect_ivl",
        "reconnect_ivl_max", "heartbeat_ivl", "heartbeat_ttl", "heartbeat_timeout",
        "tcp_keepalive", "tcp_keepalive_idle", "tcp_keepalive_cnt", "tcp_keepalive_intvl",
        "conflate", "immediate", "router_mandatory", "maxmsgsize", "routing_id",
        "req_relaxed", "req_correlate", "tcp_nodelay",
    }  # fmt: skip
    assert wanted <= set(ALL_OPTIONS)


def test_defaults_are_libzmq_defaults_except_linger() -> None:
    opts = SocketOptions()
    assert (opts.sndhwm, opts.rcvhwm, opts.reconnect_ivl, opts.sndtimeo) == (1000, 1000, 100, -1)
    assert opts.linger == 0


def test_presets_follow_the_seed() -> None:
    assert (LOW_LATENCY.sndhwm, LOW_LATENCY.rcvhwm, LOW_LATENCY.linger) == (5000, 5000, 0)
    assert HIGH_THROUGHPUT.sndhwm >= 10_000
    assert (RELIABLE_REQUEST_REPLY.sndtimeo, RELIABLE_REQUEST_REPLY.rcvtimeo) == (100, 100)
    assert RELIABLE_REQUEST_REPLY.tcp_keepalive == 1


@pytest.mark.parametrize(
    ("changes", "needle"),
    [
        ({"sndhwm": -1}, "sndhwm"),
        ({"sndhwm": 1.5}, "must be an int"),
        ({"linger": -2}, "linger"),
        ({"rcvtimeo": True}, "rcvtimeo"),
        ({"conflate": 1}, "must be a bool"),
        ({"tcp_keepalive": 2}, "tcp_keepalive"),
        ({"routing_id": b""}, "1 to 255"),
        ({"routing_id": b"\x00abc"}, "zero byte"),
        ({"routing_id": "abc"}, "must be bytes"),
        ({"tcp_nodelay": False}, "TCP_NODELAY"),
        ({"heartbeat_ttl": 7_000_000}, "heartbeat_ttl"),
        ({"reconnect_ivl": 500, "reconnect_ivl_max": 100}, "reconnect_ivl_max"),
        ({"sndhwm": 2**40}, "32 bits"),
    ],
)
def test_invalid_values_raise_option_error_naming_the_option(
    changes: dict[str, object], needle: str
) -> None:
    with pytest.raises(OptionError, match=needle):
        SocketOptions(**changes)  # type: ignore[arg-type]


def test_unknown_option_suggests_the_right_name() -> None:
    with pytest.raises(OptionError, match="did you mean 'sndhwm'"):
        SocketOptions.from_mapping({"sndhmw": 10})
    with pytest.raises(OptionError, match="unknown socket option 'banana'"):
        SocketOptions().replace(banana=1)
    with pytest.raises(OptionError, match="network"):
        SocketOptions.from_mapping({"io_threads": 2})


@pytest.mark.parametrize(
    ("options", "kind"),
    [
        (SocketOptions(conflate=True), SocketKind.REQ),
        (SocketOptions(conflate=True), SocketKind.ROUTER),
        (SocketOptions(router_mandatory=True), SocketKind.DEALER),
        (SocketOptions(req_relaxed=True), SocketKind.REP),
        (SocketOptions(req_correlate=True), SocketKind.DEALER),
    ],
)
def test_options_that_do_not_apply_to_the_kind_are_refused(
    options: SocketOptions, kind: SocketKind
) -> None:
    with pytest.raises(OptionError, match=kind.value):
        options.check_for(kind)


@given(hwm=st.integers(0, 2**31 - 1), linger=st.integers(-1, 10**6))
def test_valid_values_round_trip_through_plain_data(hwm: int, linger: int) -> None:
    opts = SocketOptions(sndhwm=hwm, linger=linger)
    assert SocketOptions.from_mapping(opts.changed()) == opts
    assert opts.replace() == opts
