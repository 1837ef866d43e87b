"""The harnesses' endpoints: ``bind_endpoint`` is a wildcard to bind, ``endpoint`` a
concrete address that can be connected to as it is, before the bind, on both backends."""

from __future__ import annotations

import asyncio

import pytest

from transportkit import EndpointError, SocketOptions
from transportkit.testing import BACKENDS, open_harness

OPTS = SocketOptions(linger=0, rcvtimeo=2000, sndtimeo=2000)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("transport", ["tcp", "ipc"])
def test_an_endpoint_is_connectable_as_given_even_before_the_bind(
    backend: str, transport: str
) -> None:
    with open_harness(backend) as h:
        srv, cli = h.network("srv"), h.network("cli")
        endpoint = h.endpoint(transport, network="srv")
        assert "*" not in endpoint

        async def main() -> list[bytes]:
            # Connect first, to the string itself: nothing from bind() is needed.
            with cli.pusher(connect=endpoint, options=OPTS) as push:
                await asyncio.sleep(0.05)
                with srv.puller(bind=endpoint, options=OPTS) as pull:
                    await push.send([b"order"])
                    return await pull.recv(timeout=2.0)

        assert h.run(main(), timeout=10.0) == [b"order"]


@pytest.mark.parametrize("backend", BACKENDS)
def test_an_inproc_endpoint_connects_within_its_network(backend: str) -> None:
    with open_harness(backend) as h:
        net = h.network("main")
        endpoint = h.endpoint("inproc")

        async def main() -> list[bytes]:
            with (
                net.puller(bind=endpoint, options=OPTS) as pull,
                net.pusher(connect=endpoint, options=OPTS) as push,
            ):
                await push.send([b"x"])
                return await pull.recv(timeout=2.0)

        assert h.run(main(), timeout=10.0) == [b"x"]


@pytest.mark.parametrize("backend", BACKENDS)
def test_endpoints_are_fresh_and_bind_endpoint_is_the_wildcard(backend: str) -> None:
    with open_harness(backend) as h:
        tcp = [h.endpoint("tcp", network="a") for _ in range(3)]
        assert len(set(tcp)) == 3
        assert h.bind_endpoint("tcp") == "tcp://127.0.0.1:*"
        assert h.bind_endpoint("ipc") != h.bind_endpoint("ipc")


def test_on_the_sim_the_endpoint_names_the_binding_node() -> None:
    with open_harness("sim") as h:
        assert h.endpoint("tcp", network="exchange") == "tcp://exchange:20000"
        assert h.endpoint("tcp") == "tcp://main:20001"
        other = h.network("other")
        endpoint = h.endpoint("tcp", network="exchange")

        async def main() -> None:
            other.puller(bind=endpoint)

        with pytest.raises(EndpointError):
            h.run(main())


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_wildcard_bind_endpoint_connects_through_what_bind_returned(backend: str) -> None:
    with open_harness(backend) as h:
        srv, cli = h.network("srv"), h.network("cli")

        async def main() -> list[bytes]:
            with srv.puller(bind=h.bind_endpoint(), options=OPTS) as pull:  # noqa: SIM117
                with cli.pusher(connect=str(pull.last_endpoint), options=OPTS) as push:
                    await push.send([b"y"])
                    return await pull.recv(timeout=2.0)

        assert h.run(main(), timeout=10.0) == [b"y"]


@pytest.mark.parametrize("backend", BACKENDS)
def test_connecting_to_a_wildcard_port_is_refused_on_both_backends(backend: str) -> None:
    # libzmq refuses it (EINVAL); the sim used to accept it and retry for ever.
    with open_harness(backend) as h:
        net = h.network("cli")

        async def main() -> None:
            with pytest.raises(EndpointError, match=r"tcp://127\.0\.0\.1:\*"):
                net.pusher(connect=h.bind_endpoint("tcp"))

        h.run(main(), timeout=5.0)
