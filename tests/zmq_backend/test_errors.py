"""pyzmq errors come out as transportkit errors that name the socket and the problem."""

from __future__ import annotations

import asyncio
import errno
from collections.abc import Callable
from typing import Any

import pytest
import zmq

from transportkit import (
    AddressInUseError,
    ClosedError,
    EndpointError,
    FrameError,
    HostUnreachableError,
    SocketKind,
    SocketOptions,
    StateError,
    Timeout,
    TransportError,
    UnsupportedError,
    WouldBlock,
)
from transportkit.zmq_backend import ZmqNetwork
from transportkit.zmq_backend._errors import translate

# Every test here runs with the C accelerator (if built) and with pure pyzmq calls.
pytestmark = pytest.mark.usefixtures("message_impl")

Run = Callable[..., Any]
EndpointFor = Callable[[str], str]


@pytest.mark.parametrize(
    ("code", "nonblocking", "expected"),
    [
        (errno.EAGAIN, False, Timeout),
        (errno.EAGAIN, True, WouldBlock),
        (zmq.EFSM, False, StateError),
        (zmq.ETERM, False, ClosedError),
        (errno.ENOTSOCK, False, ClosedError),
        (errno.EHOSTUNREACH, False, HostUnreachableError),
        (errno.EADDRINUSE, False, AddressInUseError),
        (errno.EMSGSIZE, False, FrameError),
        (errno.ENOTSUP, False, UnsupportedError),
        (errno.EIO, False, TransportError),
    ],
)
def test_translate_maps_errno_to_error_class(
    code: int, nonblocking: bool, expected: type[TransportError]
) -> None:
    error = translate(
        zmq.ZMQError(code), "PUSH socket (inproc://a)", "send", nonblocking=nonblocking
    )
    assert type(error) is expected
    assert "PUSH socket (inproc://a)" in str(error)


@pytest.mark.parametrize("code", [errno.EINVAL, errno.EPROTONOSUPPORT, errno.ENOENT])
def test_translate_maps_bad_endpoints_on_bind_and_connect(code: int) -> None:
    for action in ("bind tcp://x:1", "connect tcp://x:1"):
        error = translate(zmq.ZMQError(code), "SUB socket (unattached)", action)
        assert type(error) is EndpointError
        assert action in str(error)
    assert type(translate(zmq.ZMQError(code), "SUB socket", "recv")) is not EndpointError


@pytest.mark.parametrize(
    "endpoint", ["nonsense", "udp://127.0.0.1:5555", "tcp://127.0.0.1", "tcp://1.2.3.4:99999"]
)
def test_malformed_endpoint_is_an_endpoint_error(net: ZmqNetwork, endpoint: str) -> None:
    sock = net.puller()
    with pytest.raises(EndpointError):
        sock.bind(endpoint)
    with pytest.raises(EndpointError):
        sock.connect(endpoint)
    with pytest.raises(EndpointError):
        net.blocking(SocketKind.PULL, bind=endpoint)


def test_endpoint_libzmq_refuses_is_an_endpoint_error(net: ZmqNetwork) -> None:
    with pytest.raises(EndpointError, match=r"PULL socket.*bind tcp://no-such-host\.invalid"):
        net.puller(bind="tcp://no-such-host.invalid:5555")


def test_failed_bind_in_factory_closes_the_new_socket(net: ZmqNetwork) -> None:
    first = net.puller(bind="tcp://127.0.0.1:*")
    assert first.last_endpoint is not None
    count = len(net._sockets)
    with pytest.raises(AddressInUseError):
        net.puller(bind=first.last_endpoint)
    assert len(net._sockets) == count


# Not ipc: libzmq unlinks an existing ipc path and binds anew, by design.
@pytest.mark.parametrize("transport", ["inproc", "tcp"])
def test_address_in_use(net: ZmqNetwork, transport: str, endpoint_for: EndpointFor) -> None:
    first = net.puller(bind=endpoint_for(transport))
    assert first.last_endpoint is not None
    second = net.puller()
    with pytest.raises(AddressInUseError, match="address already in use"):
        second.bind(first.last_endpoint)


def test_req_sending_twice_is_a_state_error(
    run: Run, net: ZmqNetwork, endpoint_for: EndpointFor
) -> None:
    async def body() -> None:
        rep = net.worker(bind=endpoint_for("inproc"))
        assert rep.last_endpoint is not None
        req = net.requester(connect=rep.last_endpoint)
        await req.send([b"one"])
        with pytest.raises(StateError, match="REQ socket"):
            await req.send([b"two"])
        with pytest.raises(StateError):
            await rep.send([b"reply before any request"])

    run(body())


def test_router_mandatory_unknown_peer_is_host_unreachable(
    run: Run, net: ZmqNetwork, endpoint_for: EndpointFor
) -> None:
    async def body() -> None:
        router = net.router(
            bind=endpoint_for("inproc"), options=SocketOptions(router_mandatory=True)
        )
        with pytest.raises(HostUnreachableError, match="routing id"):
            await router.send([b"nobody", b"fill"])
        with pytest.raises(HostUnreachableError):
            router.try_send([b"nobody", b"fill"])

    run(body())


def test_push_without_peer_times_out_after_sndtimeo(run: Run, net: ZmqNetwork) -> None:
    async def body() -> None:
        push = net.pusher(options=SocketOptions(sndtimeo=50))
        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises(Timeout, match=r"PUSH socket.*send timed out"):
            await push.send([b"order"])
        assert 0.04 <= loop.time() - started < 2
        with pytest.raises(TimeoutError):  # Timeout is also the builtin TimeoutError
            await push.send([b"order"])
        assert push.stats.sent == 0

    run(body())


def test_blocking_push_without_peer_times_out(net: ZmqNetwork) -> None:
    push = net.blocking(SocketKind.PUSH, options=SocketOptions(sndtimeo=20))
    with pytest.raises(Timeout):
        push.send([b"order"])


def test_try_send_without_peer_would_block(run: Run, net: ZmqNetwork) -> None:
    async def body() -> None:
        push = net.pusher()
        with pytest.raises(WouldBlock, match="would block"):
            push.try_send([b"order"])

    run(body())
    blocking = net.blocking(SocketKind.DEALER)
    with pytest.raises(WouldBlock):
        blocking.try_send([b"order"])


def test_every_operation_on_a_closed_socket_is_a_closed_error(run: Run, net: ZmqNetwork) -> None:
    async def body() -> None:
        pair = net.pair(bind="inproc://closed-test")
        pair.close()
        pair.close()  # idempotent
        assert pair.closed
        with pytest.raises(ClosedError):
            await pair.send([b"x"])
        with pytest.raises(ClosedError):
            pair.try_send([b"x"])
        with pytest.raises(ClosedError):
            await pair.recv(timeout=1)
        with pytest.raises(ClosedError):
            pair.try_recv()
        with pytest.raises(ClosedError):
            pair.bind("inproc://other")
        with pytest.raises(ClosedError):
            pair.connect("inproc://other")
        with pytest.raises(ClosedError):
            pair.disconnect("inproc://other")
        with pytest.raises(ClosedError):
            pair.monitor()
        assert "closed" in repr(pair)

    run(body())


def test_blocking_socket_operations_after_close_are_closed_errors(net: ZmqNetwork) -> None:
    pair = net.blocking(SocketKind.PAIR)
    pair.close()
    pair.close()
    for call in (
        lambda: pair.send([b"x"]),
        lambda: pair.try_send([b"x"]),
        pair.recv,
        lambda: pair.recv(timeout=0.01),
        pair.try_recv,
        lambda: pair.bind("inproc://x"),
        lambda: pair.connect("inproc://x"),
    ):
        with pytest.raises(ClosedError):
            call()


def test_recv_waiting_when_the_socket_closes_raises_closed_error(run: Run, net: ZmqNetwork) -> None:
    async def body() -> None:
        pull = net.puller(bind="inproc://closing")
        waiting = [asyncio.create_task(pull.recv()) for _ in range(2)]
        waiting.append(asyncio.create_task(pull.recv(timeout=5)))
        await asyncio.sleep(0.02)
        pull.close()
        for task in waiting:
            with pytest.raises(ClosedError, match="PULL socket"):
                await task

    run(body())


def test_send_waiting_when_the_socket_closes_raises_closed_error(run: Run, net: ZmqNetwork) -> None:
    async def body() -> None:
        push = net.pusher()
        sending = asyncio.create_task(push.send([b"x"]))
        await asyncio.sleep(0.02)
        push.close()
        with pytest.raises(ClosedError):
            await sending

    run(body())


def test_recv_waiting_when_the_network_closes_raises_closed_error(run: Run) -> None:
    async def body() -> None:
        network = ZmqNetwork()
        sub = network.subscriber(bind="inproc://feed")
        waiting = asyncio.create_task(sub.recv())
        await asyncio.sleep(0.02)
        network.close()
        with pytest.raises(ClosedError):
            await waiting
        with pytest.raises(ClosedError, match="network 'zmq' is closed"):
            network.pusher()
        with pytest.raises(ClosedError):
            network.blocking(SocketKind.PUSH)

    run(body())


@pytest.mark.parametrize(
    ("frames", "match"),
    [
        ([b"ok", "text"], r"frame 1 is str"),
        ([b"ok", 42], r"frame 1 is int"),
        (b"raw bytes", r"single bytes"),
        ("text", r"single str"),
        ([], r"at least one frame"),
    ],
)
def test_bad_frames_are_frame_errors(run: Run, net: ZmqNetwork, frames: Any, match: str) -> None:
    async def body() -> None:
        pull = net.puller(bind="inproc://frames")
        push = net.pusher(connect="inproc://frames")
        with pytest.raises(FrameError, match=match):
            await push.send(frames)
        with pytest.raises(FrameError, match=match):
            push.try_send(frames)
        assert push.stats.sent == 0
        await push.send([b"still works"])
        assert await pull.recv(timeout=5) == [b"still works"]

    run(body())
    blocking = net.blocking(SocketKind.PUSH)
    with pytest.raises(FrameError, match=match):
        blocking.send(frames)


def test_multipart_on_a_conflate_socket_is_a_frame_error(run: Run, net: ZmqNetwork) -> None:
    async def body() -> None:
        push = net.pusher(options=SocketOptions(conflate=True))
        with pytest.raises(FrameError, match="conflate"):
            await push.send([b"topic", b"data"])

    run(body())
    blocking = net.blocking(SocketKind.PUB, options=SocketOptions(conflate=True))
    with pytest.raises(FrameError, match="conflate"):
        blocking.send([b"topic", b"data"])
    blocking.send([b"one frame is fine"])


def test_subscribing_to_text_is_a_frame_error(net: ZmqNetwork) -> None:
    sub = net.subscriber(topics=())
    with pytest.raises(FrameError, match="bytes"):
        sub.subscribe("AAPL")  # type: ignore[arg-type]
    with pytest.raises(FrameError):
        net.subscriber(topics=["AAPL"])  # type: ignore[list-item]


@pytest.mark.parametrize("transport", ["pgm", "epgm"])
def test_pgm_is_refused_with_a_clear_unsupported_error(net: ZmqNetwork, transport: str) -> None:
    if zmq.has("pgm"):
        pytest.skip("this libzmq was built with OpenPGM")
    endpoint = f"{transport}://eth0;239.192.1.1:5555"
    with pytest.raises(UnsupportedError, match=r"without OpenPGM.*tcp.*sim backend"):
        net.publisher(connect=endpoint)
    with pytest.raises(UnsupportedError, match="OpenPGM"):
        net.blocking(SocketKind.SUB, bind=endpoint)


def test_oversized_inbound_message_never_reaches_the_receiver(run: Run, net: ZmqNetwork) -> None:
    async def body() -> None:
        pull = net.puller(bind="tcp://127.0.0.1:*", options=SocketOptions(maxmsgsize=8))
        assert pull.last_endpoint is not None
        push = net.pusher(connect=pull.last_endpoint)
        await push.send([b"x" * 64])
        with pytest.raises(Timeout):
            await pull.recv(timeout=0.1)

    run(body())


def test_disconnect_from_an_endpoint_never_connected_is_an_endpoint_error(
    net: ZmqNetwork,
) -> None:

    sock = net.dealer()
    with pytest.raises(EndpointError, match="disconnect"):
        sock.disconnect("tcp://127.0.0.1:5999")
