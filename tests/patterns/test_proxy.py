"""The steerable proxy: queue device, streamer, capture, control, HWM, on both backends."""

from __future__ import annotations

import asyncio
import math
import struct

import pytest

from transportkit import SocketOptions, StateError, Worker
from transportkit._socket import Receiver
from transportkit.patterns.proxy import (
    PAUSE,
    RESUME,
    STATISTICS,
    TERMINATE,
    Proxy,
    ProxyState,
    parse_statistics,
    queue_device,
    streamer,
)
from transportkit.testing import Harness, sim_test

OPTS = SocketOptions(linger=0)


def endpoint_of(sock: object) -> str:
    endpoint = getattr(sock, "last_endpoint", None)
    assert endpoint is not None
    return str(endpoint)


async def nothing_arrives(sock: Receiver, seconds: float) -> bool:
    return not await sock.poll(seconds)


def _bytes(*messages: list[bytes]) -> int:
    return sum(len(frame) for message in messages for frame in message)


def test_queue_device_carries_requests_and_replies_whole(tk_harness: Harness) -> None:
    net = tk_harness.network()

    async def main() -> None:
        with queue_device(
            net,
            frontend=tk_harness.bind_endpoint(),
            backend=tk_harness.bind_endpoint(),
            options=OPTS,
        ) as proxy:
            running = asyncio.ensure_future(proxy.run())
            workers = []
            for _ in range(2):
                rep = net.worker(connect=endpoint_of(proxy.backend), options=OPTS)
                workers.append(rep)

            async def serve(rep: Worker, name: bytes) -> None:
                while True:
                    request = await rep.recv(timeout=10.0)
                    await rep.send([name, *request])

            serving = [
                asyncio.ensure_future(serve(rep, b"w%d" % i)) for i, rep in enumerate(workers)
            ]
            try:
                with net.requester(connect=endpoint_of(proxy.frontend), options=OPTS) as req:
                    for i in range(6):
                        body = [b"req", b"", b"%d" % i, b"x" * i]  # empty frame kept too
                        reply = await req.request(body, timeout=5.0)
                        assert reply[0] in (b"w0", b"w1")
                        assert reply[1:] == body
                assert proxy.stats.forwarded == 6
                assert proxy.stats.returned == 6
            finally:
                for task in serving:
                    task.cancel()
                await asyncio.gather(*serving, return_exceptions=True)
                for rep in workers:
                    rep.close()
                proxy.stop()
                await asyncio.wait_for(running, 5.0)

    tk_harness.run(main(), timeout=30.0)


def test_streamer_forwards_multipart_messages_whole_and_in_order(tk_harness: Harness) -> None:
    net = tk_harness.network()

    async def main() -> list[list[bytes]]:
        with streamer(
            net,
            frontend=tk_harness.bind_endpoint(),
            backend=tk_harness.bind_endpoint(),
            options=OPTS,
        ) as proxy:
            running = asyncio.ensure_future(proxy.run())
            with (
                net.puller(connect=endpoint_of(proxy.backend), options=OPTS) as pull,
                net.pusher(connect=endpoint_of(proxy.frontend), options=OPTS) as push,
            ):
                for i in range(50):
                    await push.send([b"%d" % i, b"a" * (i % 5), b"end"])
                got = [await pull.recv(timeout=5.0) for _ in range(50)]
            proxy.stop()
            await asyncio.wait_for(running, 5.0)
            return got

    got = tk_harness.run(main(), timeout=30.0)
    assert got == [[b"%d" % i, b"a" * (i % 5), b"end"] for i in range(50)]


def test_capture_gets_every_message_in_both_directions_whole(tk_harness: Harness) -> None:
    net = tk_harness.network()

    async def main() -> None:
        with queue_device(
            net,
            frontend=tk_harness.bind_endpoint(),
            backend=tk_harness.bind_endpoint(),
            capture=tk_harness.bind_endpoint(),
            options=OPTS,
        ) as proxy:
            running = asyncio.ensure_future(proxy.run())
            with (
                net.subscriber(connect=endpoint_of(proxy.capture), options=OPTS) as tap,
                net.worker(connect=endpoint_of(proxy.backend), options=OPTS) as rep,
                net.requester(connect=endpoint_of(proxy.frontend), options=OPTS) as req,
            ):
                await asyncio.sleep(tk_harness.settle)  # the tap's subscription is in
                for i in range(3):
                    await req.send([b"q%d" % i, b"more"])
                    request = await rep.recv(timeout=5.0)
                    await rep.send([b"r%d" % i, *request[1:]])
                    assert await req.recv(timeout=5.0) == [b"r%d" % i, b"more"]
                captured = [await tap.recv(timeout=5.0) for _ in range(6)]
                assert await nothing_arrives(tap, tk_harness.settle)
            # What libzmq's proxy captures: each message as the proxy read it, the
            # ROUTER's routing id and REQ's empty delimiter included, request then reply.
            for i in range(3):
                request, reply = captured[2 * i], captured[2 * i + 1]
                assert request[1:] == [b"", b"q%d" % i, b"more"]  # [id, "", body...]
                assert reply == [request[0], b"", b"r%d" % i, b"more"]  # the id comes back
            assert len({c[0] for c in captured[::2]}) == 1  # the one client's id
            assert proxy.stats.captured == 6
            proxy.stop()
            await asyncio.wait_for(running, 5.0)

    tk_harness.run(main(), timeout=30.0)


def test_control_socket_pauses_resumes_reports_and_terminates(tk_harness: Harness) -> None:
    net = tk_harness.network()
    messages = [[b"a", b"bc"], [b"def"], [b"", b"g", b"hi"]]

    async def main() -> None:
        with streamer(
            net,
            frontend=tk_harness.bind_endpoint(),
            backend=tk_harness.bind_endpoint(),
            control=tk_harness.bind_endpoint(),
            options=OPTS,
        ) as proxy:
            running = asyncio.ensure_future(proxy.run())
            with (
                net.requester(connect=endpoint_of(proxy.control), options=OPTS) as ctl,
                net.puller(connect=endpoint_of(proxy.backend), options=OPTS) as pull,
                net.pusher(connect=endpoint_of(proxy.frontend), options=OPTS) as push,
            ):
                assert await ctl.request([PAUSE], timeout=5.0) == [b""]  # REP: empty reply
                assert proxy.state is ProxyState.PAUSED
                for message in messages:
                    await push.send(message)
                assert await nothing_arrives(pull, tk_harness.settle)
                assert proxy.stats.frontend_received == 0  # paused: nothing read
                assert await ctl.request([RESUME], timeout=5.0) == [b""]
                got = [await pull.recv(timeout=5.0) for _ in messages]
                assert got == messages

                reply = await ctl.request([STATISTICS], timeout=5.0)
                frames, nbytes = sum(map(len, messages)), _bytes(*messages)
                # libzmq's order and units: every frame counts; nothing flows back
                # on a streamer, so the frontend sends and the backend receives nothing.
                assert parse_statistics(reply) == (frames, nbytes, 0, 0, 0, 0, frames, nbytes)
                assert all(len(f) == 8 for f in reply)
                assert reply[0] == struct.pack("<Q", frames)

                assert await ctl.request([b"BOGUS"], timeout=5.0) == [b""]
                assert proxy.stats.malformed == 1
                assert proxy.state is ProxyState.ACTIVE

                assert await ctl.request([TERMINATE], timeout=5.0) == [b""]
                await asyncio.wait_for(running, 5.0)
                assert proxy.state is ProxyState.TERMINATED
                assert proxy.stats.commands == 4

    tk_harness.run(main(), timeout=30.0)


def test_pair_control_answers_statistics_only(tk_harness: Harness) -> None:
    net = tk_harness.network()

    async def main() -> None:
        pull = net.puller(bind=tk_harness.bind_endpoint(), options=OPTS)
        push = net.pusher(bind=tk_harness.bind_endpoint(), options=OPTS)
        control = net.pair(bind=tk_harness.bind_endpoint(), options=OPTS)
        with Proxy(pull, push, control=control) as proxy:
            running = asyncio.ensure_future(proxy.run())
            with net.pair(connect=endpoint_of(control), options=OPTS) as ctl:
                await ctl.send([PAUSE])
                assert await nothing_arrives(ctl, tk_harness.settle)  # no reply
                assert proxy.state is ProxyState.PAUSED
                await ctl.send([STATISTICS])
                assert parse_statistics(await ctl.recv(timeout=5.0)) == (0,) * 8
                await ctl.send([TERMINATE])
                await asyncio.wait_for(running, 5.0)
                assert await nothing_arrives(ctl, tk_harness.settle)

    tk_harness.run(main(), timeout=30.0)


def test_methods_pause_resume_and_stop(tk_harness: Harness) -> None:
    net = tk_harness.network()

    async def main() -> None:
        with streamer(
            net,
            frontend=tk_harness.bind_endpoint(),
            backend=tk_harness.bind_endpoint(),
            options=OPTS,
        ) as proxy:
            running = asyncio.ensure_future(proxy.run())
            with (
                net.puller(connect=endpoint_of(proxy.backend), options=OPTS) as pull,
                net.pusher(connect=endpoint_of(proxy.frontend), options=OPTS) as push,
            ):
                proxy.pause()
                await push.send([b"held"])
                assert await nothing_arrives(pull, tk_harness.settle)
                proxy.resume()
                assert await pull.recv(timeout=5.0) == [b"held"]
                proxy.stop()
                await asyncio.wait_for(running, 5.0)
                proxy.resume()  # no effect once terminated
                assert proxy.state is ProxyState.TERMINATED

    tk_harness.run(main(), timeout=30.0)


def test_a_blocked_backend_blocks_the_stream_and_loses_nothing(tk_harness: Harness) -> None:
    """With no puller, the backend PUSH cannot send: the proxy holds one message and
    reads no more (libzmq's proxy blocks that direction); once a puller comes, all
    arrive, in order."""
    net = tk_harness.network()

    async def main() -> None:
        with streamer(
            net,
            frontend=tk_harness.bind_endpoint(),
            backend=tk_harness.bind_endpoint(),
            options=OPTS,
        ) as proxy:
            running = asyncio.ensure_future(proxy.run())
            with net.pusher(connect=endpoint_of(proxy.frontend), options=OPTS) as push:
                for i in range(20):
                    await push.send([b"%d" % i, b"x"])
                await asyncio.sleep(tk_harness.settle)
                assert proxy.stats.frontend_received == 2  # one message, held
                assert proxy.stats.backend_sent == 0
                with net.puller(connect=endpoint_of(proxy.backend), options=OPTS) as pull:
                    got = [await pull.recv(timeout=5.0) for _ in range(20)]
                    assert got == [[b"%d" % i, b"x"] for i in range(20)]
            proxy.stop()
            await asyncio.wait_for(running, 5.0)
            assert proxy.stats.abandoned == 0

    tk_harness.run(main(), timeout=30.0)


def test_a_blocked_direction_does_not_stop_the_other(tk_harness: Harness) -> None:
    """Requests wait at a backend DEALER with no worker while a worker's late replies
    still flow back to the client."""
    net = tk_harness.network()

    async def main() -> None:
        with queue_device(
            net,
            frontend=tk_harness.bind_endpoint(),
            backend=tk_harness.bind_endpoint(),
            options=OPTS,
        ) as proxy:
            running = asyncio.ensure_future(proxy.run())
            with (
                net.dealer(connect=endpoint_of(proxy.frontend), options=OPTS) as client,
                net.dealer(connect=endpoint_of(proxy.backend), options=OPTS) as worker,
            ):
                await client.send([b"", b"first"])
                request = await worker.recv(timeout=5.0)
                worker.close()  # the only worker goes: requests now block
                await asyncio.sleep(tk_harness.settle)
                for i in range(3):
                    await client.send([b"", b"more%d" % i])
                await asyncio.sleep(tk_harness.settle)
                assert proxy.stats.forwarded == 1
                with net.dealer(connect=endpoint_of(proxy.backend), options=OPTS) as late:
                    await late.send([*request[:-1], b"reply"])  # the other way flows
                    assert await client.recv(timeout=5.0) == [b"", b"reply"]
                    got = [await late.recv(timeout=5.0) for _ in range(3)]
                    assert [m[-1] for m in got] == [b"more0", b"more1", b"more2"]
            proxy.stop()
            await asyncio.wait_for(running, 5.0)

    tk_harness.run(main(), timeout=30.0)


def test_oversized_messages_are_dropped_and_counted(tk_harness: Harness) -> None:
    net = tk_harness.network()

    async def main() -> None:
        with streamer(
            net,
            frontend=tk_harness.bind_endpoint(),
            backend=tk_harness.bind_endpoint(),
            options=OPTS.replace(maxmsgsize=1000),  # let the big one reach the proxy
            max_message_bytes=100,
        ) as proxy:
            running = asyncio.ensure_future(proxy.run())
            with (
                net.puller(connect=endpoint_of(proxy.backend), options=OPTS) as pull,
                net.pusher(connect=endpoint_of(proxy.frontend), options=OPTS) as push,
            ):
                await push.send([b"a" * 60, b"b" * 60])
                await push.send([b"ok"])
                assert await pull.recv(timeout=5.0) == [b"ok"]
                assert proxy.stats.over_limit == 1
            proxy.stop()
            await asyncio.wait_for(running, 5.0)

    tk_harness.run(main(), timeout=30.0)


def test_a_closed_socket_ends_the_run(tk_harness: Harness) -> None:
    net = tk_harness.network()

    async def main() -> None:
        proxy = streamer(
            net, frontend=tk_harness.bind_endpoint(), backend=tk_harness.bind_endpoint()
        )
        running = asyncio.ensure_future(proxy.run())
        await asyncio.sleep(tk_harness.settle)
        proxy.close()
        await asyncio.wait_for(running, 5.0)

    tk_harness.run(main(), timeout=30.0)


def test_bad_arguments_are_refused_and_leak_nothing(tk_harness: Harness) -> None:
    net = tk_harness.network()
    pull = net.puller(options=OPTS)
    other = net.puller(options=OPTS)
    pub = net.publisher(options=OPTS)
    try:
        with pytest.raises(ValueError, match="nothing can flow"):
            Proxy(pull, other)
        with pytest.raises(ValueError, match="REP or PAIR"):
            Proxy(pull, net.pusher(options=OPTS), control=pub)
        with pytest.raises(ValueError, match="distinct"):
            Proxy(pull, pull)
        with pytest.raises(ValueError, match="capture"):
            Proxy(pull, pub, capture=other)
        with pytest.raises(ValueError, match="sndhwm=0"):
            streamer(
                net, frontend="inproc://a", backend="inproc://b", options=OPTS.replace(sndhwm=0)
            )
    finally:
        for sock in (pull, other, pub):
            sock.close()


def test_at_the_backends_hwm_a_streamer_waits_and_drops_nothing(tk_harness: Harness) -> None:
    """Small HWMs and a slow puller: the stream slows to the puller's pace (PUSH blocks
    at its HWM, and so does the proxy), every message arrives once, in order."""
    net = tk_harness.network()
    small = OPTS.replace(sndhwm=5, rcvhwm=5)

    async def main() -> list[list[bytes]]:
        with streamer(
            net,
            frontend=tk_harness.bind_endpoint(),
            backend=tk_harness.bind_endpoint(),
            options=small,
        ) as proxy:
            running = asyncio.ensure_future(proxy.run())
            with (
                net.puller(connect=endpoint_of(proxy.backend), options=small) as pull,
                net.pusher(connect=endpoint_of(proxy.frontend), options=small) as push,
            ):

                async def produce() -> None:
                    for i in range(300):
                        await push.send([b"%d" % i, b"payload"])

                producing = asyncio.ensure_future(produce())
                got = []
                for _ in range(300):
                    got.append(await pull.recv(timeout=5.0))
                    if len(got) % 50 == 0:
                        await asyncio.sleep(0.01)  # a slow reader now and then
                await asyncio.wait_for(producing, 5.0)
            proxy.stop()
            await asyncio.wait_for(running, 5.0)
            assert proxy.stats.forwarded == 300
            return got

    got = tk_harness.run(main(), timeout=30.0)
    assert got == [[b"%d" % i, b"payload"] for i in range(300)]


def test_a_message_the_destination_refuses_is_dropped_and_counted(tk_harness: Harness) -> None:
    """A conflating PUSH backend refuses multipart messages (FrameError): the proxy
    drops and counts them, and goes on (it used to end with the error)."""
    net = tk_harness.network()

    async def main() -> None:
        pull = net.puller(bind=tk_harness.bind_endpoint(), options=OPTS)
        push = net.pusher(bind=tk_harness.bind_endpoint(), options=OPTS.replace(conflate=True))
        with Proxy(pull, push) as proxy:
            running = asyncio.ensure_future(proxy.run())
            with (
                net.puller(connect=endpoint_of(push), options=OPTS) as out,
                net.pusher(connect=endpoint_of(pull), options=OPTS) as into,
            ):
                await into.send([b"two", b"frames"])
                await into.send([b"one"])
                assert await out.recv(timeout=5.0) == [b"one"]
                assert proxy.stats.malformed == 1
                assert not running.done()
            proxy.stop()
            await asyncio.wait_for(running, 5.0)

    tk_harness.run(main(), timeout=30.0)


def test_one_run_at_a_time(tk_harness: Harness) -> None:
    net = tk_harness.network()

    async def main() -> None:
        with streamer(
            net, frontend=tk_harness.bind_endpoint(), backend=tk_harness.bind_endpoint()
        ) as proxy:
            running = asyncio.ensure_future(proxy.run())
            await asyncio.sleep(0)
            with pytest.raises(StateError, match="already running"):
                await proxy.run()
            proxy.stop()
            await asyncio.wait_for(running, 5.0)
            await asyncio.wait_for(proxy.run(), 1.0)  # terminated: returns at once

    tk_harness.run(main(), timeout=30.0)


@sim_test(seeds=20)
async def test_a_queue_device_under_any_scheduling_answers_each_client_once(
    tk_harness: Harness,
) -> None:
    """Three clients, two workers, random scheduling: every reply reaches its own
    client exactly once, the counters add up."""
    net = tk_harness.network("proxy")
    with queue_device(
        net, frontend=tk_harness.bind_endpoint(), backend=tk_harness.bind_endpoint(), options=OPTS
    ) as proxy:
        running = asyncio.ensure_future(proxy.run())
        workers = [
            tk_harness.network(f"w{i}").worker(connect=endpoint_of(proxy.backend), options=OPTS)
            for i in range(2)
        ]

        async def serve(rep: Worker) -> None:
            while True:
                request = await rep.recv(timeout=math.inf)
                await rep.send([b"re", *request])

        serving = [asyncio.ensure_future(serve(rep)) for rep in workers]

        async def client(i: int) -> list[list[bytes]]:
            with tk_harness.network(f"c{i}").requester(
                connect=endpoint_of(proxy.frontend), options=OPTS
            ) as req:
                return [await req.request([b"%d/%d" % (i, n)], timeout=5.0) for n in range(5)]

        try:
            replies = await asyncio.gather(*(client(i) for i in range(3)))
        finally:
            for task in serving:
                task.cancel()
            await asyncio.gather(*serving, return_exceptions=True)
            for rep in workers:
                rep.close()
        assert replies == [[[b"re", b"%d/%d" % (i, n)] for n in range(5)] for i in range(3)]
        assert proxy.stats.forwarded == proxy.stats.returned == 15
        proxy.stop()
        await asyncio.wait_for(running, 5.0)
