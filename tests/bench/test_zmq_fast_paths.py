"""The zmq backend's opt-in fast paths keep the contract: zero-copy and busy polling."""

from __future__ import annotations

import math
import time
from collections.abc import Iterator

import pytest

from transportkit import SocketKind, SocketOptions, Timeout
from transportkit.zmq_backend import ZmqNetwork

BIG = bytes(range(256)) * 4096  # 1 MB, above pyzmq's copy threshold


@pytest.fixture
def net() -> Iterator[ZmqNetwork]:
    network = ZmqNetwork()
    try:
        yield network
    finally:
        network.close()


@pytest.mark.parametrize("transport", ["inproc", "tcp"])
def test_zero_copy_send_and_recv_buffers_deliver_the_same_bytes(
    net: ZmqNetwork, transport: str
) -> None:
    options = SocketOptions(rcvtimeo=5000, sndtimeo=5000)
    where = "inproc://zc" if transport == "inproc" else "tcp://127.0.0.1:*"
    pull = net.blocking(SocketKind.PULL, options=options)
    endpoint = pull.bind(where)
    push = net.blocking(SocketKind.PUSH, connect=endpoint, options=options)
    push.send([b"head", BIG], copy=False)
    frames = pull.recv_buffers()
    assert [bytes(f) for f in frames] == [b"head", BIG]
    assert all(isinstance(f, memoryview) for f in frames)
    push.send([BIG])
    assert pull.recv_buffers(timeout=5)[0] == BIG
    push.send([BIG], copy=False)  # a single frame: pyzmq's send, no multipart layer
    push.send([b"x", b"", b"y"], copy=False)
    assert [bytes(f) for f in pull.recv_buffers()] == [BIG]
    assert [bytes(f) for f in pull.recv_buffers()] == [b"x", b"", b"y"]
    assert pull.stats.received == 4 and push.stats.sent == 4


def test_recv_buffers_times_out(net: ZmqNetwork) -> None:
    pull = net.blocking(SocketKind.PULL, bind="inproc://zc-timeout")
    with pytest.raises(Timeout):
        pull.recv_buffers(timeout=0.01)


def test_multipart_and_single_frame_messages_survive_the_fast_path(net: ZmqNetwork) -> None:
    pull = net.blocking(SocketKind.PULL, bind="inproc://fp", options=SocketOptions(rcvtimeo=5000))
    push = net.blocking(SocketKind.PUSH, connect="inproc://fp")
    push.send([b"one"])
    push.send([b"a", b"", b"c"])
    push.send((b"tuple",))
    push.send([bytearray(b"ba"), memoryview(b"mv")])
    assert pull.recv() == [b"one"]
    assert pull.recv() == [b"a", b"", b"c"]
    assert pull.recv() == [b"tuple"]
    assert pull.recv() == [b"ba", b"mv"]


@pytest.mark.parametrize("transport", ["inproc", "tcp"])
def test_spinning_socket_round_trips_and_honours_timeouts(net: ZmqNetwork, transport: str) -> None:
    where = "inproc://spin" if transport == "inproc" else "tcp://127.0.0.1:*"
    options = SocketOptions(rcvtimeo=5000, sndtimeo=5000)
    rep = net.blocking(SocketKind.REP, options=options, spin=True)
    endpoint = rep.bind(where)
    req = net.blocking(SocketKind.REQ, connect=endpoint, options=options, spin=True)
    assert req.spin and rep.spin
    for i in range(20):
        req.send([b"ping", str(i).encode()])
        rep.send(rep.recv())
        assert req.recv() == [b"ping", str(i).encode()]
    started = time.monotonic()
    with pytest.raises(Timeout):
        rep.recv(timeout=0.02)
    assert time.monotonic() - started < 2
    assert rep.recv_buffers is not None and not math.isnan(started)


def test_spinning_recv_uses_rcvtimeo_by_default(net: ZmqNetwork) -> None:
    pull = net.blocking(
        SocketKind.PULL, bind="inproc://spin-default", options=SocketOptions(rcvtimeo=20), spin=True
    )
    with pytest.raises(Timeout):
        pull.recv()
