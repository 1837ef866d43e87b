"""The fuzz machinery itself: each check fails when it should, the oracle's windows and
the simulation's reproducibility."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import pytest
import test_fuzz_binary_star as bstar
import test_fuzz_clone as clone
import test_fuzz_lvc as lvc
import test_fuzz_majordomo as mdp
import test_fuzz_pirate as pirate
import test_fuzz_risk as risk
from _fuzz_helpers import (
    INVALID,
    LIMIT,
    TIMEOUT,
    UNKNOWN,
    VALID,
    Case,
    Face,
    Judgement,
    Server,
    Verdict,
    big,
    case,
    expected_counts,
    protocol_messages,
    run_case,
)
from hypothesis import given, settings
from hypothesis import strategies as st

from transportkit import SocketOptions

pytestmark = TIMEOUT

# -- a toy server whose faults each check must catch -------------------------------------


def judge_toy(frames: tuple[bytes, ...]) -> Judgement:
    return VALID if list(frames) == [b"ok"] else INVALID


class Toy(Server):
    """A ROUTER loop that echoes ``[b"ok"]`` and probes, and counts anything else."""

    name = "toy"
    faces: ClassVar[Mapping[str, Face]] = {
        "dealer": Face(protocol_messages(st.just([b"ok"])), judge_toy)
    }
    per_bad = 1  # what one bad message adds to the count
    dies_on_bad = False
    deaf = False  # never answers the well-behaved peer
    echoes_bad = False  # answers bad messages too (so it acts on an oversized one)
    counts_valid = False  # counts the hostile peer's valid messages as bad too
    refuses_valid = False  # refuses the hostile peer's valid messages, and counts them
    declares_refusals = True  # says how many it refused (Server.refused)

    async def start(self) -> None:
        self.router = self.server_net.router(bind=self.h.bind_endpoint())
        self.closing(self.router.close)
        self.malformed = 0
        self.refusals = 0
        self.task = self.spawn(self.loop(), "loop")
        endpoint = self.router.last_endpoint
        self.hostile = self.peer(self.hostile_net.dealer(connect=endpoint), "hostile")
        good = SocketOptions(routing_id=b"good")
        self.good = self.peer(self.good_net.dealer(connect=endpoint, options=good), "good")
        await self.barrier()

    async def loop(self) -> None:
        while True:
            msg = await self.router.recv(timeout=math.inf)
            if msg[1:] == [b"ok"]:
                if self.refuses_valid and msg[0] != b"good":
                    self.malformed += 1  # as over_limit: refused by a bound
                    self.refusals += 1
                    continue
                if self.counts_valid and msg[0] != b"good":
                    self.malformed += 1
                if not (self.deaf and msg[0] == b"good"):
                    await self.router.send(msg)
            elif msg[1:] == [b"probe"]:
                await self.router.send(msg)
            else:
                if self.dies_on_bad:
                    raise RuntimeError("the toy loop died")
                self.malformed += self.per_bad
                if self.echoes_bad:
                    await self.router.send(msg)

    async def send(self, face: str, frames: Sequence[bytes]) -> None:
        await self.hostile.send(frames)

    async def serve_check(self) -> None:
        await self.good.wait_for(
            lambda msg: msg == [b"ok"], 1.0, "echo", resend=lambda: self.good.send([b"ok"])
        )

    async def barrier(self) -> None:
        await self.hostile.wait_for(
            lambda msg: msg == [b"probe"],
            1.0,
            "probe",
            resend=lambda: self.hostile.send([b"probe"]),
        )

    def bad_input(self) -> int | None:
        return self.malformed

    def refused(self) -> int:
        return self.refusals if self.declares_refusals else 0

    def server_tasks(self) -> list[asyncio.Task[Any]]:
        return [self.task]


class OverCounting(Toy):
    per_bad = 3


class UnderCounting(Toy):
    per_bad = 0


class Dying(Toy):
    dies_on_bad = True


class Deaf(Toy):
    deaf = True


class Echoing(Toy):
    echoes_bad = True


class CountingValid(Toy):
    counts_valid = True


def judge_refusable_toy(frames: tuple[bytes, ...]) -> Judgement:
    return Judgement(Verdict.VALID, refusable=True) if list(frames) == [b"ok"] else INVALID


class Refusing(Toy):
    """A bound (of none) refuses every valid hostile message, as its classifier allows."""

    faces: ClassVar[Mapping[str, Face]] = {
        "dealer": Face(protocol_messages(st.just([b"ok"])), judge_refusable_toy)
    }
    refuses_valid = True


class RefusingSilently(Refusing):
    declares_refusals = False


class RefusingUnrefusable(Toy):
    refuses_valid = True


BAD = case(("dealer", [b"ok"]), ("dealer", [b"bad"]), ("dealer", [b"ok"]))


def test_an_honest_server_passes(tk_backend: str) -> None:
    run_case(Toy, tk_backend, BAD)


@pytest.mark.parametrize(
    ("toy", "failure"),
    [
        (OverCounting, "counted 3 bad message\\(s\\), but only 1"),
        (UnderCounting, "but 1 of those sent are certainly invalid"),
        (Dying, "the server task failed: RuntimeError"),
        (Deaf, "no echo within"),
    ],
)
def test_each_check_fails_a_server_that_breaks_it(toy: type[Server], failure: str) -> None:
    with pytest.raises(AssertionError, match=failure):
        run_case(toy, "sim", case(("dealer", [b"bad"])))


def test_counting_a_valid_message_as_bad_fails() -> None:
    with pytest.raises(AssertionError, match="but only 1 of those sent are not valid"):
        run_case(CountingValid, "sim", BAD)


def test_acting_on_an_oversized_message_fails() -> None:
    with pytest.raises(AssertionError, match="acted on a"):
        run_case(Echoing, "sim", case(("dealer", [big(b"bad")])))


def test_an_oversized_message_need_not_be_counted() -> None:
    run_case(UnderCounting, "sim", case(("dealer", [big(b"bad")])))


def test_valid_messages_a_bound_may_refuse_are_counted_apart() -> None:
    run_case(Refusing, "sim", BAD)
    with pytest.raises(AssertionError, match="counted 3 bad message\\(s\\), but only 1"):
        run_case(RefusingSilently, "sim", BAD)
    with pytest.raises(AssertionError, match="a bound refused 2 valid message\\(s\\), but only 0"):
        run_case(RefusingUnrefusable, "sim", BAD)


# -- the oracle's counting windows --------------------------------------------------------


class Windows(Toy):
    """Messages say what they are: ``[verdict, flags]``."""

    @staticmethod
    def judge(frames: tuple[bytes, ...]) -> Judgement:
        verdict = {b"v": Verdict.VALID, b"i": Verdict.INVALID, b"u": Verdict.UNKNOWN}
        flags = frames[1] if len(frames) > 1 else b""
        return Judgement(verdict[frames[0]], disruptive=b"d" in flags, deferred=b"q" in flags)

    faces: ClassVar[Mapping[str, Face]] = {
        "a": Face(st.nothing(), judge),
        "b": Face(st.nothing(), judge),
        "connects": Face(st.nothing(), judge, maxmsgsize=False),
    }


def must_count(messages: list[tuple[str, list[bytes]]]) -> int:
    server = object.__new__(Windows)
    server.sim = True
    must, _, _ = expected_counts(server, case(*messages).messages)
    return must


def test_invalid_messages_count_up_to_a_disruptive_one_on_their_face() -> None:
    assert must_count([("a", [b"i"]), ("a", [b"v", b"d"]), ("a", [b"i"])]) == 1
    assert must_count([("a", [b"i"]), ("b", [b"v", b"d"]), ("a", [b"i"])]) == 2
    assert must_count([("a", [b"u"]), ("a", [b"v"]), ("a", [b"i"])]) == 1


def test_a_disruptive_message_voids_the_deferred_ones_before_it() -> None:
    assert must_count([("a", [b"i", b"q"]), ("a", [b"i"])]) == 2
    assert must_count([("a", [b"i", b"q"]), ("a", [b"i"]), ("a", [b"v", b"d"])]) == 1
    # A deferred message that ends the window itself still counts, until a later
    # disruptive message on its face (read before it is handled) may void it.
    assert must_count([("a", [b"i", b"qd"])]) == 1
    assert must_count([("a", [b"i", b"qd"]), ("b", [b"v", b"d"])]) == 1
    assert must_count([("a", [b"i", b"qd"]), ("a", [b"i"]), ("a", [b"v", b"d"])]) == 0


def test_oversized_messages_are_never_required_and_a_frame_over_maxmsgsize_ends_the_window() -> (
    None
):
    half = b"\x00" * (LIMIT // 2 + 1)
    # A frame over the binding socket's maxmsgsize drops the connection and what follows.
    assert must_count([("a", [b"i", b"", big()]), ("a", [b"i"])]) == 0
    assert must_count([("a", [b"i", b"", big()]), ("b", [b"i"])]) == 1
    # maxmsgsize is per frame: frames below it all arrive, and the server refuses them.
    assert must_count([("a", [b"i", b"", half, half]), ("a", [b"i"])]) == 1
    # A socket that connects has no maxmsgsize: the oversized message arrives.
    assert must_count([("connects", [b"i", b"", big()]), ("connects", [b"i"])]) == 1


def test_valid_messages_may_be_counted_only_when_oversized() -> None:
    server = object.__new__(Windows)
    server.sim = True
    plan = case(
        ("connects", [b"v"]),
        ("connects", [b"v", b"", big()]),
        ("connects", [b"u"]),
        ("connects", [b"i"]),
    )
    assert expected_counts(server, plan.messages)[:2] == (1, 3)


def test_faces_without_a_barrier_are_never_required() -> None:
    server = object.__new__(clone.CloneClientServer)
    server.sim = True
    plan = case(("snapshot", [b"bad"]), ("updates", [b"bad"]))
    assert expected_counts(server, plan.messages)[:2] == (1, 2)


# -- the classifiers, on messages whose verdict the specifications settle ------------------


@pytest.mark.parametrize(
    ("judge", "frames", "verdict"),
    [
        (mdp.judge_for_broker, [b"", b"MDPC01", b"echo", b"x"], VALID),
        (mdp.judge_for_broker, [b"MDPC01", b"echo", b"x"], INVALID),
        (mdp.judge_for_broker, [b"", b"MDPX01", b"echo", b"x"], INVALID),
        (mdp.judge_for_broker, [b"", b"MDPW01", b"\x01", b"mmi.x"], INVALID),
        (mdp.judge_for_broker, [b"", b"MDPW01", b"\x04"], UNKNOWN),
        (mdp.judge_for_worker, [b"", b"MDPW01", b"\x02", b"c", b"", b"RAISE"], INVALID),
        (mdp.judge_for_worker, [b"", b"MDPW01", b"\x02", b"c", b""], UNKNOWN),
        (mdp.judge_for_worker, [b"", b"MDPW01", b"\x04", b"x"], INVALID),
        (mdp.judge_for_worker, [b"", b"MDPW01", b"\x02", b"", b"", b"x"], INVALID),
        (pirate.judge_for_pp_worker, [b"\x02"], VALID),
        (pirate.judge_for_pp_worker, [b"c", b"", b"x"], VALID),
        (pirate.judge_for_pp_worker, [b"c", b"x"], INVALID),
        (pirate.judge_for_lb_backend, [b"", b"READY"], VALID),
        (pirate.judge_for_lb_backend, [b"", b"\x01"], VALID),
        (pirate.judge_for_lb_backend, [b"READY"], INVALID),
        (clone.judge_for_clone_server, [b"ICANHAZ?", b""], VALID),
        (clone.judge_for_clone_server, [b"ICANHAZ?", b"", b"x"], INVALID),
        (clone.judge_for_clone_client, [b"K", b"\x00" * 7, b"", b"", b"v"], INVALID),
        (bstar.judge_state, [b"1"], VALID),
        (bstar.judge_state, [b" 3"], INVALID),
        (bstar.judge_state, [b"0_3"], INVALID),
        (lvc.judge_request, [b"LVC?", b"", b"t"], VALID),
        (lvc.judge_request, [b"LVC?", b""], INVALID),
        (risk.judge_order_request, [b""], VALID),  # an empty Order: rejected, not malformed
        (risk.judge_order_request, [b"\x07"], INVALID),
        (risk.judge_order_request, [b"", b""], INVALID),
        (risk.judge_lazy_pirate_request, [b"1"], INVALID),
    ],
)
def test_classifiers_follow_the_specifications(
    judge: Any, frames: list[bytes], verdict: Judgement
) -> None:
    assert judge(tuple(frames)).verdict is verdict.verdict


def test_a_majordomo_request_after_another_may_break_the_lockstep() -> None:
    request = [b"", b"MDPW01", b"\x02", b"c", b""]
    plan = case(("router", [*request, b"x"]), ("router", [*request, b"y"]))
    verdicts = [j.verdict for j in mdp.MajordomoWorkerServer.judgements(plan.messages)]
    assert verdicts == [Verdict.VALID, Verdict.UNKNOWN]
    plan = case(("router", [*request, b"x"]), ("router", [*request, b"RAISE"]))
    verdicts = [j.verdict for j in mdp.MajordomoWorkerServer.judgements(plan.messages)]
    assert verdicts == [Verdict.VALID, Verdict.INVALID]  # counted either way


def test_binary_star_never_sends_a_peer_state_that_may_be_fatal() -> None:
    @settings(max_examples=200, deadline=None)
    @given(frames=bstar.BinaryStarPrimaryServer.faces["state"].messages)
    def check(frames: tuple[bytes, ...]) -> None:
        assert list(frames) not in ([b"3"], [b"4"])

    check()


# -- reproducibility ----------------------------------------------------------------------

ADAPTERS = [
    (mdp.MajordomoBrokerServer, ("dealer", [b"", b"MDPC01", b"echo", b"x"])),
    (mdp.MajordomoWorkerServer, ("router", [b"", b"MDPW01", b"\x04"])),
    (pirate.ParanoidPirateQueueServer, ("frontend", [b"", b"x"])),
    (pirate.ParanoidPirateWorkerServer, ("router", [b"\x02"])),
    (pirate.LoadBalancingBrokerServer, ("backend", [b"", b"READY"])),
    (pirate.LoadBalancingWorkerServer, ("router", [b"c", b"", b"x"])),
    (clone.CloneServerServer, ("dealer", [b"ICANHAZ?", b"KEY.1"])),
    (clone.CloneClientServer, ("updates", [b"bad"])),
    (bstar.BinaryStarPrimaryServer, ("state", [b"1"])),
    (bstar.BinaryStarBackupServer, ("state", [b"2"])),
    (lvc.LastValueCacheServer, ("upstream", [b"MARKET.AAPL", b"1"])),
    (risk.RiskRepServer, ("dealer", [b"\x07"])),
    (risk.RiskLazyPirateServer, ("dealer", [b"1", b"\x07"])),
]


@pytest.mark.parametrize(("adapter", "message"), ADAPTERS, ids=[a.name for a, _ in ADAPTERS])
def test_a_simulated_example_replays_exactly(
    adapter: type[Server], message: tuple[str, list[bytes]]
) -> None:
    plan = Case(7, case(message, message).messages)
    first = run_case(adapter, "sim", plan)
    assert first is not None
    assert run_case(adapter, "sim", plan) == first
