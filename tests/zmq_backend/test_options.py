"""SocketOptions reach libzmq: every field maps to a sockopt, and values read back."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
import zmq

from transportkit import OptionError, Socket, SocketKind, SocketOptions
from transportkit.zmq_backend import ZmqNetwork, ZmqSocket
from transportkit.zmq_backend._options import NOT_SOCKOPTS, SOCKOPTS


def test_every_socket_option_field_has_a_zmq_mapping() -> None:
    fields = {f.name for f in dataclasses.fields(SocketOptions)}
    assert fields == set(SOCKOPTS) | NOT_SOCKOPTS
    assert not set(SOCKOPTS) & NOT_SOCKOPTS


def raw(sock: Socket) -> zmq.Socket[Any]:
    assert isinstance(sock, ZmqSocket)
    return sock.zmq_socket


def test_linger_is_always_set_to_transportkits_default_of_zero(net: ZmqNetwork) -> None:
    sock = net.pusher()
    assert raw(sock).getsockopt(zmq.LINGER) == 0


TUNED = SocketOptions(
    sndhwm=5000,
    rcvhwm=7000,
    linger=250,
    sndtimeo=100,
    rcvtimeo=200,
    reconnect_ivl=50,
    reconnect_ivl_max=1000,
    heartbeat_ivl=1000,
    heartbeat_ttl=3000,
    heartbeat_timeout=2500,
    tcp_keepalive=1,
    tcp_keepalive_idle=60,
    tcp_keepalive_cnt=3,
    tcp_keepalive_intvl=10,
    immediate=True,
    maxmsgsize=65536,
    routing_id=b"desk-7",
)


def _read_back(sock: zmq.Socket[Any], names: list[str]) -> dict[str, object]:
    values: dict[str, object] = {}
    for name in names:
        value = sock.getsockopt(SOCKOPTS[name])
        values[name] = value
    return values


@pytest.mark.parametrize("flavour", ["async", "blocking"])
def test_tuned_options_read_back_from_libzmq(net: ZmqNetwork, flavour: str) -> None:
    if flavour == "async":
        sock = raw(net.dealer(options=TUNED))
    else:
        sock = net.blocking(SocketKind.DEALER, options=TUNED).zmq_socket
    names = [name for name in TUNED.changed() if name != "routing_id"]
    expected = {name: int(getattr(TUNED, name)) for name in names}
    if flavour == "async":
        # Enforced by the asyncio socket's own deadline, so that pyzmq does not arm a
        # second timer per wait (test_async_semantics checks that they are enforced).
        expected.update(rcvtimeo=-1, sndtimeo=-1)
    assert _read_back(sock, names) == expected
    assert sock.getsockopt(zmq.ROUTING_ID) == b"desk-7"


def test_conflate_and_kind_specific_options_are_applied(net: ZmqNetwork) -> None:
    sub = net.subscriber(options=SocketOptions(conflate=True))
    assert raw(sub).getsockopt(zmq.CONFLATE) == 1
    router = net.router(options=SocketOptions(router_mandatory=True))
    # ROUTER_MANDATORY and the REQ options are write-only in libzmq 4.3; they act below.
    assert router.options.router_mandatory
    req = net.requester(options=SocketOptions(req_relaxed=True, req_correlate=True))
    assert req.options.req_relaxed and req.options.req_correlate


def test_unknown_option_from_mapping_is_an_option_error() -> None:
    with pytest.raises(OptionError, match=r"sndhvm.*did you mean 'sndhwm'"):
        SocketOptions.from_mapping({"sndhvm": 10})


def test_option_not_for_the_kind_is_refused_before_a_socket_exists(net: ZmqNetwork) -> None:
    with pytest.raises(OptionError, match="router_mandatory"):
        net.pusher(options=SocketOptions(router_mandatory=True))
    with pytest.raises(OptionError, match="conflate"):
        net.blocking(SocketKind.REQ, options=SocketOptions(conflate=True))


def test_options_must_be_socket_options(net: ZmqNetwork) -> None:
    with pytest.raises(OptionError):
        net.pusher(options={"sndhwm": 1})  # type: ignore[arg-type]
    with pytest.raises(OptionError):
        net.blocking(SocketKind.PUSH, options={"sndhwm": 1})  # type: ignore[arg-type]


@pytest.mark.parametrize("io_threads", [0, -1, True, 1.5, "2"])
def test_io_threads_must_be_a_positive_int(io_threads: object) -> None:
    with pytest.raises(OptionError, match="io_threads"):
        ZmqNetwork(io_threads=io_threads)  # type: ignore[arg-type]


def test_io_threads_configure_the_context_the_network_creates() -> None:
    with ZmqNetwork(io_threads=2) as network:
        assert network.context.get(zmq.IO_THREADS) == 2


def test_a_given_context_is_used_and_left_running() -> None:
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    try:
        with ZmqNetwork(context=ctx, name="shared") as network:
            assert network.context is ctx
            assert network.name == "shared"
            network.pusher()
        assert not ctx.closed
        with pytest.raises(OptionError, match="io_threads"):
            ZmqNetwork(context=ctx, io_threads=2)
    finally:
        ctx.term()


def test_context_must_be_a_zmq_context() -> None:
    with pytest.raises(OptionError, match=r"zmq\.Context"):
        ZmqNetwork(context=object())  # type: ignore[arg-type]
