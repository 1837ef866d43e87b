"""Load-balancing and Paranoid Pirate loops outlive any one request, and bound what they hold."""

from __future__ import annotations

import asyncio

import pytest

from transportkit import Message, Network, ServiceUnavailableError, SocketOptions, Timeout
from transportkit.patterns import paranoid_pirate
from transportkit.patterns.lazy_pirate import (
    EMPTY_ANSWER,
    NOT_AN_ANSWER,
    Handler,
    LazyPirateClient,
    LazyPirateWire,
    ServeStats,
    sequenced,
    serve_lazy_pirate,
    serve_requests,
)
from transportkit.patterns.load_balancing import (
    READY,
    LoadBalancingBroker,
    LoadBalancingWorkerStats,
    run_load_balancing_worker,
)
from transportkit.patterns.paranoid_pirate import (
    PPP_READY,
    ParanoidPirateQueue,
    ParanoidPirateWorker,
)
from transportkit.sim_backend import Node, Simulation

FRONTEND, BACKEND = "tcp://broker:5555", "tcp://broker:5556"


def echo(body: Message) -> Message:
    return body


def fails_on_boom(body: Message) -> Message:
    if body == [b"boom"]:
        raise RuntimeError("the handler failed")
    return [b"ok", *body]


def not_a_message(body: Message) -> object:
    return "text" if body == [b"boom"] else [b"ok", *body]


async def ask(net: Network, frames: list[bytes], timeout: float = 2.0) -> Message | None:
    """One REQ round trip to the front end; None if no reply came in time."""
    with net.requester(connect=FRONTEND) as req:
        try:
            return await req.request(frames, timeout=timeout)
        except Timeout:
            return None


@pytest.mark.parametrize("kind", ["load-balancing", "paranoid"])
def test_a_request_without_a_body_gets_the_sequence_frame_back_and_the_worker_lives(
    kind: str,
) -> None:
    # The Guide's lpclient sends its sequence number as the only frame; an echo handler
    # then replies with an empty body, which used to end the worker with FrameError.
    deployment = Deployment(kind, sequenced(echo))
    client = deployment.sim.node("client")

    async def main() -> list[Message | None]:
        await asyncio.sleep(0.5)
        return [await ask(client, [b"1"]), await ask(client, [b"2", b"order"])]

    assert deployment.sim.run(main(), timeout=30) == [[b"1"], [b"2", b"order"]]


@pytest.mark.parametrize("handler", [fails_on_boom, not_a_message], ids=["raises", "non-message"])
@pytest.mark.parametrize("kind", ["load-balancing", "paranoid"])
def test_a_failing_handler_call_drops_that_request_only_and_is_counted(
    kind: str, handler: Handler
) -> None:
    deployment = Deployment(kind, handler)
    client = deployment.sim.node("client")

    async def main() -> list[Message | None]:
        await asyncio.sleep(0.5)
        replies = []
        for body in ([b"boom"], [b"a"], [b"boom"], [b"b"]):
            replies.append(await ask(client, body))
        return replies

    assert deployment.sim.run(main(), timeout=60) == [None, [b"ok", b"a"], None, [b"ok", b"b"]]
    assert deployment.handler_errors() == 2
    assert deployment.served() == 2


def test_a_malformed_message_on_the_back_end_does_not_make_its_sender_a_worker() -> None:
    # A peer on the back end that sends garbage used to be listed as a ready worker,
    # and the next client request went to it and was lost.
    deployment = Deployment("load-balancing", echo, start=False)
    intruder, client = deployment.sim.node("intruder"), deployment.sim.node("client")

    async def main() -> Message | None:
        with intruder.dealer(connect=BACKEND) as dealer:
            await dealer.send([b"", b"not", b"a", b"reply"])
            await asyncio.sleep(0.5)
            deployment.start_worker()
            await asyncio.sleep(0.5)
            return await ask(client, [b"order"])

    assert deployment.sim.run(main(), timeout=30) == [b"order"]
    assert deployment.broker.stats.malformed == 1
    assert len(deployment.broker.workers) == 1


def test_a_malformed_message_is_no_sign_of_life_to_the_paranoid_queue() -> None:
    deployment = Deployment("paranoid", echo, start=False)
    intruder, client = deployment.sim.node("intruder"), deployment.sim.node("client")

    async def main() -> Message | None:
        with intruder.dealer(connect=BACKEND) as dealer:
            await dealer.send([b"garbage"])
            await asyncio.sleep(0.5)
            deployment.start_worker()
            await asyncio.sleep(0.5)
            return await ask(client, [b"order"])

    assert deployment.sim.run(main(), timeout=30) == [b"order"]
    assert deployment.broker.stats.malformed == 1
    assert len(deployment.broker.workers) == 1


@pytest.mark.parametrize("kind", ["load-balancing", "paranoid"])
def test_a_request_over_max_message_bytes_never_reaches_a_worker(kind: str) -> None:
    seen: list[Message] = []

    def record(body: Message) -> Message:
        seen.append(body)
        return body

    deployment = Deployment(kind, record, max_message_bytes=100)
    client = deployment.sim.node("client")

    async def main() -> list[Message | None]:
        await asyncio.sleep(0.5)
        # Each frame is within the limit (libzmq's maxmsgsize is per frame), the whole
        # message is not: the broker's own check refuses it.
        return [await ask(client, [b"x" * 60, b"x" * 60]), await ask(client, [b"y" * 50])]

    assert deployment.sim.run(main(), timeout=30) == [None, [b"y" * 50]]
    assert seen == [[b"y" * 50]]
    broker = deployment.broker
    assert broker.stats.over_limit + (broker.frontend.stats.dropped or 0) == 1


def test_the_broker_sockets_get_max_message_bytes_as_maxmsgsize_unless_set() -> None:
    sim = Simulation(seed=1)
    node = sim.node("broker")

    async def main() -> list[int]:
        sizes = []
        for options in (None, SocketOptions(maxmsgsize=10)):
            with LoadBalancingBroker(
                node, frontend="tcp://*:0", backend="tcp://*:0", options=options
            ) as lb:
                sizes += [lb.frontend.options.maxmsgsize, lb.backend.options.maxmsgsize]
            with ParanoidPirateQueue(
                node, frontend="tcp://*:0", backend="tcp://*:0", options=options
            ) as pp:
                sizes += [pp.frontend.options.maxmsgsize, pp.backend.options.maxmsgsize]
        return sizes

    assert sim.run(main(), timeout=5) == [1 << 20] * 4 + [10] * 4


@pytest.mark.parametrize("kind", ["load-balancing", "paranoid"])
def test_no_more_than_max_workers_are_listed(kind: str) -> None:
    sim = Simulation(seed=3)
    box: dict[str, LoadBalancingBroker | ParanoidPirateQueue] = {}

    async def broker_main(node: Node) -> None:
        cls = LoadBalancingBroker if kind == "load-balancing" else ParanoidPirateQueue
        with cls(node, frontend="tcp://*:5555", backend="tcp://*:5556", max_workers=2) as b:
            box["broker"] = b
            await b.run()

    sim.node("broker", main=broker_main)
    peers = [sim.node(f"peer{i}") for i in range(4)]
    hello = [b"", READY] if kind == "load-balancing" else [PPP_READY]

    async def main() -> int:
        dealers = [peer.dealer(connect=BACKEND) for peer in peers]
        for dealer in dealers:
            await dealer.send(hello)
        await asyncio.sleep(0.5)
        for dealer in dealers:
            dealer.close()
        return len(box["broker"].workers)

    assert sim.run(main(), timeout=30) == 2
    assert box["broker"].stats.over_limit == 2


def test_the_paranoid_records_keep_the_latest_history_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(paranoid_pirate, "HISTORY", 3)
    events: list[int] = []
    for i in range(10):
        paranoid_pirate._record(events, i)
    assert events == [7, 8, 9]


def test_serve_requests_answers_a_failed_request_with_on_error_and_goes_on() -> None:
    sim = Simulation(seed=1)
    server, client = sim.node("server"), sim.node("client")
    stats = ServeStats()

    async def main() -> list[Message]:
        with server.worker(bind="tcp://*:5555") as rep:
            task = server.spawn(
                serve_requests(
                    rep,
                    fails_on_boom,
                    on_error=lambda req, exc: [b"error", str(exc).encode()],
                    stats=stats,
                )
            )
            with client.requester(connect="tcp://server:5555") as req:
                replies = [await req.request(body, timeout=1) for body in ([b"boom"], [b"a"])]
            task.cancel()
            return replies

    assert sim.run(main(), timeout=10) == [[b"error", b"the handler failed"], [b"ok", b"a"]]
    assert stats == ServeStats(served=1, handler_errors=1)


SEQUENCED = LazyPirateWire.SEQUENCED


def test_serve_lazy_pirate_answers_what_it_cannot_answer_with_no_answer_and_goes_on() -> None:
    sim = Simulation(seed=1)
    server, client = sim.node("server"), sim.node("client")
    stats = ServeStats()
    seen: list[Message] = []

    def handler(body: Message) -> Message:
        seen.append(body)
        return fails_on_boom(body)

    async def main() -> tuple[list[Message], str, Message]:
        with server.worker(bind="tcp://*:5555") as rep:
            task = server.spawn(
                serve_lazy_pirate(rep, handler, max_message_bytes=100, stats=stats, wire=SEQUENCED)
            )
            with client.requester(connect="tcp://server:5555") as req:
                replies = [
                    await req.request(body, timeout=1)
                    for body in (
                        [b"1", b"boom"],
                        [b"2", b"x" * 60, b"x" * 60],
                        [b"3", b"a"],
                        [b"no sequence", b"a"],
                    )
                ]
            lazy = LazyPirateClient(
                client, "tcp://server:5555", timeout=0.5, attempts=2, wire=SEQUENCED
            )
            with pytest.raises(ServiceUnavailableError):
                await lazy.request([b"boom"])
            mismatched = lazy.stats.mismatched
            after = await lazy.request([b"b"])
            lazy.close()
            task.cancel()  # before its socket closes: it would end with ClosedError
            return replies, f"mismatched={mismatched}", after

    replies, mismatched, after = sim.run(main(), timeout=30)
    assert replies == [[NOT_AN_ANSWER], [NOT_AN_ANSWER], [b"3", b"ok", b"a"], [NOT_AN_ANSWER]]
    assert mismatched == "mismatched=2"  # taken for no answer, twice, then given up
    assert after == [b"ok", b"b"]
    assert [b"x" * 60, b"x" * 60] not in seen  # never handed to the handler
    assert stats == ServeStats(served=2, handler_errors=3, over_limit=1, malformed=1)


def test_serve_lazy_pirate_with_on_error_none_ends_with_the_handler_error() -> None:
    sim = Simulation(seed=1)
    server, client = sim.node("server"), sim.node("client")

    async def main() -> None:
        with server.worker(bind="tcp://*:5555") as rep:
            task = server.spawn(
                serve_lazy_pirate(rep, fails_on_boom, on_error=None, wire=SEQUENCED)
            )
            with client.requester(connect="tcp://server:5555") as req:
                await req.send([b"1", b"boom"])
                with pytest.raises(RuntimeError, match="the handler failed"):
                    await task

    sim.run(main(), timeout=10)


def test_plain_serve_lazy_pirate_answers_what_it_cannot_answer_with_one_empty_frame() -> None:
    sim = Simulation(seed=1)
    server, client = sim.node("server"), sim.node("client")
    stats = ServeStats()

    async def main() -> list[Message]:
        with server.worker(bind="tcp://*:5555") as rep:
            task = server.spawn(
                serve_lazy_pirate(rep, fails_on_boom, max_message_bytes=100, stats=stats)
            )
            lazy = LazyPirateClient(client, "tcp://server:5555", timeout=0.5, attempts=2)
            replies = [
                await lazy.request(body)
                for body in ([b"boom"], [b"x" * 60, b"x" * 60], [b"a"], [b"no sequence"])
            ]
            lazy.close()
            task.cancel()
            return replies

    replies = sim.run(main(), timeout=30)
    assert replies == [[EMPTY_ANSWER], [EMPTY_ANSWER], [b"ok", b"a"], [b"ok", b"no sequence"]]
    assert stats == ServeStats(served=2, handler_errors=1, over_limit=1, malformed=0)


# -- helpers ----------------------------------------------------------------------


class Deployment:
    """A broker or a Paranoid Pirate queue and one worker of its kind, in a simulation."""

    def __init__(self, kind: str, handler: Handler, *, start: bool = True, **limits: object):
        self.sim = Simulation(seed=3)
        self.kind = kind
        self.handler = handler
        self.box: dict[str, LoadBalancingBroker | ParanoidPirateQueue] = {}
        self.lb_stats = LoadBalancingWorkerStats()
        self.pp_worker: ParanoidPirateWorker | None = None
        self.sim.node("broker", main=self._broker(limits))
        self.worker = self.sim.node("worker", main=self._work if start else None)

    def _broker(self, limits: dict[str, object]):  # type: ignore[no-untyped-def]
        async def main(node: Node) -> None:
            cls = LoadBalancingBroker if self.kind == "load-balancing" else ParanoidPirateQueue
            with cls(node, frontend="tcp://*:5555", backend="tcp://*:5556", **limits) as b:  # type: ignore[arg-type]
                self.box["broker"] = b
                await b.run()

        return main

    async def _work(self, node: Node) -> None:
        if self.kind == "load-balancing":
            await run_load_balancing_worker(node, BACKEND, self.handler, stats=self.lb_stats)
        else:
            self.pp_worker = ParanoidPirateWorker(node, BACKEND, self.handler)
            await self.pp_worker.run()

    def start_worker(self) -> None:
        self.worker.spawn(self._work(self.worker))

    @property
    def broker(self) -> LoadBalancingBroker | ParanoidPirateQueue:
        return self.box["broker"]

    def handler_errors(self) -> int:
        if self.pp_worker is not None:
            return self.pp_worker.stats.handler_errors
        return self.lb_stats.handler_errors

    def served(self) -> int:
        if self.pp_worker is not None:
            return self.pp_worker.stats.served
        return self.lb_stats.served


@pytest.mark.parametrize("field", ["sndhwm", "rcvhwm"])
def test_unlimited_high_water_marks_are_refused(field: str) -> None:
    unlimited = SocketOptions(**{field: 0})
    node = Simulation(seed=1).node("n")
    with pytest.raises(ValueError, match="unlimited"):
        LoadBalancingBroker(node, frontend="tcp://*:1", backend="tcp://*:2", options=unlimited)
    with pytest.raises(ValueError, match="unlimited"):
        ParanoidPirateQueue(node, frontend="tcp://*:1", backend="tcp://*:2", options=unlimited)
    with pytest.raises(ValueError, match="unlimited"):
        ParanoidPirateWorker(node, BACKEND, echo, options=unlimited)
    with pytest.raises(ValueError, match="unlimited"):
        asyncio.run(run_load_balancing_worker(node, BACKEND, echo, options=unlimited))


@pytest.mark.parametrize("kind", ["load-balancing", "paranoid"])
def test_a_worker_survives_a_frame_over_its_limit_from_the_broker(kind: str) -> None:
    # Workers connect, and libzmq never reconnects a connecting socket after a frame
    # over its maxmsgsize: a worker that set one would be cut off from its broker for
    # good. It drops the request in process instead, and serves the next one.
    sim = Simulation(seed=4)
    broker, worker = sim.node("broker"), sim.node("worker")
    stats = LoadBalancingWorkerStats()
    pp: list[ParanoidPirateWorker] = []

    async def work(node: Node) -> None:
        if kind == "load-balancing":
            await run_load_balancing_worker(node, BACKEND, echo, stats=stats)
        else:
            pp.append(ParanoidPirateWorker(node, BACKEND, echo))
            await pp[0].run()

    async def main() -> Message:
        with broker.router(bind="tcp://*:5556") as router:
            worker.spawn(work(worker))
            hello = await router.recv(timeout=5)
            envelope = hello[:2] if kind == "load-balancing" else hello[:1]
            await router.send([*envelope, b"client", b"", b"x" * ((1 << 20) + 1)])
            while (await router.recv(timeout=5))[len(envelope)] in (b"\x02",):
                pass  # Paranoid Pirate heartbeats; the next message is its READY
            await router.send([*envelope, b"client", b"", b"small"])
            while True:
                reply = await router.recv(timeout=5)
                if reply[len(envelope) :][:1] == [b"client"]:
                    return reply[len(envelope) :]

    assert sim.run(main(), timeout=60) == [b"client", b"", b"small"]
    over_limit = stats.over_limit if kind == "load-balancing" else pp[0].stats.over_limit
    assert over_limit == 1
