"""Lazy Pirate: every request ends in its own reply or in ServiceUnavailableError."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from _pirate_helpers import example, real_endpoint, run_real
from hypothesis import given, settings

from transportkit import Message, Network, Requester, ServiceUnavailableError, SocketOptions
from transportkit.examples import lpclient, lpserver
from transportkit.patterns.lazy_pirate import (
    NOT_AN_ANSWER,
    LazyPirateClient,
    LazyPirateWire,
    ServeStats,
    sequenced,
    serve_lazy_pirate,
    serve_requests,
)
from transportkit.sim_backend import (
    Crash,
    FaultSchedule,
    Node,
    Restart,
    Simulation,
    schedule_faults,
)
from transportkit.testing import ChildProcess, open_harness
from transportkit.testing.strategies import fault_schedules
from transportkit.zmq_backend import ZmqNetwork

SERVER = "tcp://srv:5555"


def echo(body: Message) -> Message:
    return [b"echo", *body]


async def echo_server(node: Node) -> None:
    with node.worker(bind="tcp://*:5555") as rep:
        await serve_lazy_pirate(rep, echo)


Outcome = tuple[int, str, float, float]


def run_through_faults(schedule: FaultSchedule, after: int = 5) -> tuple[list[Outcome], float]:
    """Requests every 0.3 s while the faults last, then ``after`` more; check each reply.

    Returns each request's (number, "reply"/"unavailable", start, duration) and the time
    the faults stopped.
    """
    sim = Simulation(seed=11)
    sim.node("srv", main=echo_server)
    cli = sim.node("cli")
    schedule_faults(sim, schedule)
    quiet = max((when for when, _ in schedule), default=0.0)

    async def main() -> list[Outcome]:
        outcomes: list[Outcome] = []
        with LazyPirateClient(cli, SERVER, timeout=1.0, attempts=3) as client:
            i = 0
            while len(outcomes) < after or outcomes[-after][2] <= quiet:
                start = sim.now
                try:
                    reply = await client.request([b"%d" % i])
                except ServiceUnavailableError:
                    outcomes.append((i, "unavailable", start, sim.now - start))
                else:
                    assert reply == [b"echo", b"%d" % i], f"request {i} got {reply!r}"
                    outcomes.append((i, "reply", start, sim.now - start))
                i += 1
                await asyncio.sleep(0.3)
            stats = client.stats
            assert stats.requests == stats.replies + stats.failures == len(outcomes)
        return outcomes

    return sim.run(main(), timeout=quiet + 200.0), quiet


FAULTS = fault_schedules(["cli", "srv"], crashable=["srv"], horizon=15.0, max_outage=8.0)


@settings(max_examples=40, deadline=None)
@given(schedule=FAULTS)
def test_every_request_ends_in_one_matching_reply_or_one_failure_and_never_hangs(
    schedule: FaultSchedule,
) -> None:
    outcomes, _ = run_through_faults(schedule)
    assert [i for i, *_ in outcomes] == list(range(len(outcomes)))
    # 3 attempts of 1 s each: nothing ever waits longer.
    assert all(duration <= 3.0 + 1e-9 for *_, duration in outcomes)


@settings(max_examples=40, deadline=None)
@given(schedule=FAULTS)
def test_requests_succeed_again_once_the_faults_stop(schedule: FaultSchedule) -> None:
    outcomes, quiet = run_through_faults(schedule)
    after = [kind for _, kind, start, _ in outcomes if start > quiet]
    assert len(after) >= 5
    assert set(after) == {"reply"}


def test_a_30_second_outage_raises_service_unavailable_then_recovers_in_virtual_time() -> None:
    sim = Simulation(seed=1)
    sim.node("srv", main=echo_server)
    cli = sim.node("cli")
    schedule_faults(sim, [(1.0, Crash("srv")), (31.0, Restart("srv"))])

    async def main() -> list[tuple[float, str]]:
        log = []
        async with LazyPirateClient(cli, SERVER) as client:  # the Guide's 2.5 s x 3
            while sim.now < 40.0:
                try:
                    await client.request([b"x"])
                    log.append((round(sim.now, 3), "reply"))
                except ServiceUnavailableError as exc:
                    assert SERVER in str(exc)
                    assert "3 attempt" in str(exc)
                    log.append((round(sim.now, 3), "unavailable"))
                await asyncio.sleep(1.0)
            assert (client.stats.failures, client.stats.retries) == (3, 3 * 2 + 1)
        return log

    log = sim.run(main(), timeout=100.0)
    # Each failed request took exactly three 2.5 s attempts in virtual time; the one
    # waiting when the server came back at 31 s was answered at once.
    assert log[:5] == [
        (0.0, "reply"),
        (8.5, "unavailable"),
        (17.0, "unavailable"),
        (25.5, "unavailable"),
        (31.0, "reply"),
    ]
    assert {kind for _, kind in log[5:]} == {"reply"}


def test_a_sequenced_reply_carrying_another_sequence_number_is_never_accepted() -> None:
    sim = Simulation(seed=2)
    cli = sim.node("cli")

    async def stale_server(node: Node) -> None:
        with node.worker(bind="tcp://*:5555") as rep:
            await serve_requests(rep, lambda request: [b"41", b"stale"])

    sim.node("srv", main=stale_server)

    async def main() -> None:
        async with LazyPirateClient(
            cli, SERVER, timeout=1.0, attempts=2, wire=LazyPirateWire.SEQUENCED
        ) as client:
            for _ in range(3):
                with pytest.raises(ServiceUnavailableError, match="did not carry the sequence"):
                    await client.request([b"q"])
            assert client.stats.mismatched == 6
            assert client.stats.replies == 0

    sim.run(main(), timeout=60.0)


class CountingNetwork:
    """A network whose requesters are counted (and kept, to see them closed)."""

    def __init__(self, net: Network) -> None:
        self.net = net
        self.made: list[Requester] = []

    def requester(self, **kwargs: object) -> Requester:
        sock = self.net.requester(**kwargs)  # type: ignore[arg-type]
        self.made.append(sock)
        return sock


def test_plain_requests_go_unchanged_and_every_unanswered_attempt_gets_a_new_socket() -> None:
    sim = Simulation(seed=4)
    seen: list[Message] = []

    async def server(node: Node) -> None:
        def answer(request: Message) -> Message:
            seen.append(request)
            return [b"ok"]

        with node.worker(bind="tcp://*:5555") as rep:
            await serve_lazy_pirate(rep, answer)

    sim.node("srv", main=server)
    cli = CountingNetwork(sim.node("cli"))
    schedule_faults(sim, [(2.0, Crash("srv")), (5.5, Restart("srv"))])

    async def main() -> list[Message | str]:
        replies: list[Message | str] = []
        async with LazyPirateClient(cli, SERVER, timeout=1.0, attempts=2) as client:  # type: ignore[arg-type]
            replies += [await client.request([b"AAPL", b"100"]) for _ in range(2)]
            assert len(cli.made) == 1  # an answered request keeps its socket
            await asyncio.sleep(2.0)  # the server is down now
            with pytest.raises(ServiceUnavailableError):
                await client.request([b"lost"])
            replies.append("unavailable")
            # The kept socket timed out and was closed; the retry went on a new one.
            assert len(cli.made) == 2
            assert all(sock.closed for sock in cli.made)  # each closed after its timeout
            await asyncio.sleep(2.0)
            replies.append(await client.request([b"back"]))
            assert len(cli.made) == 3  # the second attempt's socket timed out too
            assert client.stats.mismatched == 0
        return replies

    assert sim.run(main(), timeout=60.0) == [[b"ok"], [b"ok"], "unavailable", [b"ok"]]
    assert seen == [[b"AAPL", b"100"], [b"AAPL", b"100"], [b"back"]]


def test_the_sequenced_wire_format_round_trip_and_its_frames() -> None:
    sim = Simulation(seed=5)
    seen: list[Message] = []
    stats = ServeStats()

    async def recording_rep(node: Node) -> None:
        # What travels on the wire, as a plain REP sees it, then the sequenced server.
        with node.worker(bind="tcp://*:5555") as rep:
            request = await rep.recv()
            seen.append(request)
            await rep.send([request[0], b"raw", *request[1:]])
            await serve_lazy_pirate(rep, echo, stats=stats, wire=LazyPirateWire.SEQUENCED)

    sim.node("srv", main=recording_rep)
    cli = sim.node("cli")

    async def main() -> list[Message]:
        async with LazyPirateClient(
            cli, SERVER, timeout=1.0, wire=LazyPirateWire.SEQUENCED
        ) as client:
            return [await client.request([b"a", b"b"]), await client.request([b"c"])]

    assert sim.run(main(), timeout=30.0) == [[b"raw", b"a", b"b"], [b"echo", b"c"]]
    assert seen == [[b"1", b"a", b"b"]]
    assert (stats.served, stats.malformed) == (1, 0)


def test_a_plain_client_of_a_sequenced_server_gets_a_counted_malformed_not_a_hang() -> None:
    sim = Simulation(seed=6)
    stats = ServeStats()

    async def server(node: Node) -> None:
        with node.worker(bind="tcp://*:5555") as rep:
            await serve_lazy_pirate(rep, echo, stats=stats, wire=LazyPirateWire.SEQUENCED)

    sim.node("srv", main=server)
    cli = sim.node("cli")

    async def main() -> Message:
        async with LazyPirateClient(cli, SERVER, timeout=1.0) as client:
            return await client.request([b"order"])

    assert sim.run(main(), timeout=30.0) == [NOT_AN_ANSWER]
    assert (stats.served, stats.malformed) == (0, 1)


def test_a_sequenced_client_of_a_plain_server_fails_with_a_clear_error_not_a_hang() -> None:
    sim = Simulation(seed=7)

    async def server(node: Node) -> None:
        with node.worker(bind="tcp://*:5555") as rep:
            await serve_lazy_pirate(rep, lambda request: [b"verdict"])

    sim.node("srv", main=server)
    cli = sim.node("cli")

    async def main() -> str:
        async with LazyPirateClient(
            cli, SERVER, timeout=1.0, attempts=2, wire=LazyPirateWire.SEQUENCED
        ) as client:
            with pytest.raises(ServiceUnavailableError) as info:
                await client.request([b"order"])
            assert client.stats.mismatched == 2
            return str(info.value)

    message = sim.run(main(), timeout=30.0)
    assert "2 replies did not carry the sequence frame 1" in message
    assert "LazyPirateWire.SEQUENCED" in message


def test_a_late_reply_is_retried_and_the_answer_belongs_to_the_request() -> None:
    sim = Simulation(seed=3)
    cli = sim.node("cli")
    seen: list[bytes] = []

    async def slow_once(body: Message) -> Message:
        seen.append(body[0])
        if len(seen) == 1:
            await asyncio.sleep(1.5)  # longer than the client's timeout
        return [b"done", *body]

    async def server(node: Node) -> None:
        with node.worker(bind="tcp://*:5555") as rep:
            await serve_lazy_pirate(rep, slow_once)

    sim.node("srv", main=server)

    async def main() -> list[Message]:
        async with LazyPirateClient(cli, SERVER, timeout=1.0, attempts=3) as client:
            replies = [await client.request([b"a"]), await client.request([b"b"])]
            assert client.stats.retries == 1
            return replies

    assert sim.run(main(), timeout=60.0) == [[b"done", b"a"], [b"done", b"b"]]
    assert seen == [b"a", b"a", b"b"]


def test_sequenced_handler_echoes_the_sequence_frame() -> None:
    handler = sequenced(lambda body: [b"ok", *body])

    async def call() -> object:
        return await handler([b"7", b"x"])

    assert asyncio.run(call()) == [b"7", b"ok", b"x"]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"timeout": 0}, "timeout"), ({"attempts": 0}, "attempts"), ({"wire": "plain"}, "wire")],
)
def test_bad_client_parameters_are_refused(kwargs: dict[str, float], match: str) -> None:
    with open_harness("sim") as h, pytest.raises(ValueError, match=match):
        LazyPirateClient(h.network(), SERVER, **kwargs)  # type: ignore[arg-type]


def test_lazy_pirate_request_reply(tk_backend: str) -> None:
    with open_harness(tk_backend) as h:
        srv, cli = h.network("srv"), h.network("cli")

        async def main() -> list[Message]:
            with srv.worker(bind=h.bind_endpoint("tcp")) as rep:
                endpoint = rep.last_endpoint
                assert endpoint is not None
                server = asyncio.ensure_future(serve_lazy_pirate(rep, echo, max_requests=3))
                async with LazyPirateClient(cli, endpoint, timeout=2.0) as client:
                    replies = [await client.request([b"%d" % i]) for i in range(3)]
                assert await server == 3
                return replies

        assert h.run(main(), timeout=20.0) == [[b"echo", b"0"], [b"echo", b"1"], [b"echo", b"2"]]


@pytest.mark.parametrize("transport", ["tcp", "ipc"])
def test_a_killed_server_gives_service_unavailable_and_a_restarted_one_replies(
    transport: str, tmp_path: Path
) -> None:
    endpoint = real_endpoint(transport, tmp_path)
    with ChildProcess(*example("lpserver"), "--bind", endpoint, "--quiet") as server:
        assert server.ready_line == f"READY {endpoint}"

        async def main() -> None:
            with ZmqNetwork(name="test-client") as net:
                opts = SocketOptions(linger=0)
                async with LazyPirateClient(
                    net, endpoint, timeout=0.3, attempts=2, options=opts
                ) as client:
                    assert await client.request([b"before"]) == [b"before"]
                    server.kill()
                    with pytest.raises(ServiceUnavailableError, match="2 attempt"):
                        await client.request([b"down"])
                    server.restart()
                    assert await client.request([b"after"]) == [b"after"]
                    assert client.stats.failures == 1

        run_real(main())


def test_a_server_that_crashes_itself_mid_run_is_survived_after_restart(tmp_path: Path) -> None:
    endpoint = real_endpoint("ipc", tmp_path)
    argv = (*example("lpserver"), "--bind", endpoint, "--crash-after", "2", "--quiet")
    with ChildProcess(*argv) as server:

        async def main() -> list[str]:
            outcomes = []
            with ZmqNetwork(name="test-client") as net:
                async with LazyPirateClient(net, endpoint, timeout=0.3, attempts=2) as client:
                    for i in range(5):
                        try:
                            await client.request([b"%d" % i])
                            outcomes.append("reply")
                        except ServiceUnavailableError:
                            outcomes.append("unavailable")
                            await asyncio.to_thread(server.restart)
            return outcomes

        assert run_real(main()) == ["reply", "reply", "unavailable", "reply", "reply"]


@pytest.mark.parametrize("module", [lpclient, lpserver])
def test_example_programs_explain_themselves(
    module: object, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        module.main(["--help"])  # type: ignore[attr-defined]
    assert exit_info.value.code == 0
    assert "usage: python -m transportkit.examples." in capsys.readouterr().out
