"""@sim_test shrinks a failing seed, reports the result and replays it with --tk-replay."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import pytest

from transportkit import SimulationError
from transportkit.sim_backend import Constant, Crash, Partition, Repair, SetLatency
from transportkit.testing._simtest import failure_signature
from transportkit.testing._simtest_failures import fault_from_json, faults_json, load_replay

pytest_plugins = ["pytester"]

# The bug needs two things: the quote task resuming before the cache warmer (an order
# FIFO never produces), and the exchange unreachable when the quote then asks it. The
# other faults are noise that shrinking must take away, and so are the random walk's
# other choices.
QUOTES = """
import asyncio

from transportkit import SocketOptions, Timeout
from transportkit.sim_backend import (
    Constant, Crash, Hold, Partition, Release, Repair, Restart, SetLatency,
)
from transportkit.testing import sim_test


def market_faults(seed):
    return [
        (0.5, SetLatency("desk", "backoffice", Constant(0.02))),
        (1.0, Crash("backoffice")),
        (1.5, Partition("exchange", "backoffice")),
        (2.0, Restart("backoffice")),
        (2.5, Repair("exchange", "backoffice")),
        (3.0, SetLatency("desk", "backoffice", None)),
        (3.5, Hold("desk", "backoffice")),
        (4.0, Partition("desk", "exchange")),
        (4.5, Release("desk", "backoffice")),
        (6.0, Repair("desk", "exchange")),
        (7.0, Crash("backoffice")),
    ]


async def exchange(net):
    with net.worker(bind="tcp://*:5555") as rep:
        while True:
            (symbol,) = await rep.recv()
            await rep.send([symbol, b"187.20"])


@sim_test(seeds=50, faults=market_faults, nodes={"exchange": exchange})
async def test_the_desk_always_has_a_price(tk_sim):
    desk = tk_sim.node("desk")
    tk_sim.node("backoffice")
    cache = {}
    await asyncio.sleep(4.0)

    async def warm():
        await asyncio.sleep(0)
        cache[b"AAPL"] = b"187.20"

    async def quote():
        await asyncio.sleep(0)
        if b"AAPL" in cache:
            return cache[b"AAPL"]
        options = SocketOptions(rcvtimeo=1000, sndtimeo=1000, linger=0)
        with desk.requester(connect="tcp://exchange:5555", options=options) as req:
            try:
                return (await req.request([b"AAPL"]))[1]
            except Timeout:
                return None

    async def ticker(n):  # noise: more ready callbacks to reorder
        for _ in range(n):
            await asyncio.sleep(0)

    tickers = [asyncio.create_task(ticker(n)) for n in (3, 5)]
    warming = asyncio.create_task(warm())
    price = await asyncio.create_task(quote())
    await warming
    await asyncio.gather(*tickers)
    assert price is not None, "no price for AAPL"
"""

NODE = "test_quotes.py::test_the_desk_always_has_a_price[sim]"
SHRUNK_LINE = re.compile(
    r"^shrunk: FIFO except step (\d+) \(index 1\), and a 1 s partition between desk and "
    r"exchange at t=4\.0$",
    flags=re.M,
)


def lines_starting(text: str, prefix: str) -> list[str]:
    return [line.removeprefix(prefix) for line in text.splitlines() if line.startswith(prefix)]


def the_folder(root: Path) -> Path:
    (folder,) = (root / ".transportkit" / "failures").iterdir()
    return folder


def test_a_failing_seed_is_shrunk_to_one_choice_and_one_fault_and_both_replays_work(
    pytester: pytest.Pytester,
) -> None:
    pytester.makepyfile(test_quotes=QUOTES)
    first = pytester.runpytest("-p", "no:cacheprovider")
    first.assert_outcomes(failed=1)
    out = first.stdout.str()
    assert re.search(r"^E +AssertionError: no price for AAPL$", out, flags=re.M), out

    # The report: the random walk's many choices and the 11 faults shrink to one of each.
    found = SHRUNK_LINE.search(out)
    assert found, out
    step = int(found.group(1))
    (seed_line,) = [line for line in out.splitlines() if " passing seed(s); scheduler" in line]
    original = int(re.findall(r"seed (\d+) failed", seed_line)[0])
    assert "scheduler random: FIFO except steps " in seed_line  # more than one choice
    (summary,) = lines_starting(out, "shrinking: ")
    assert re.fullmatch(
        r"\d+ re-runs, from \d+ choices and 11 faults; 1-minimal: without any one of its "
        r"choices or faults it passes",
        summary,
    ), summary
    folder = the_folder(pytester.path)
    shrunk_replay = f"pytest '{NODE}' --tk-replay={folder.relative_to(pytester.path)}/shrunk.json"
    assert lines_starting(out, "replay shrunk: ") == [shrunk_replay] * 2  # report, summary
    assert re.search(rf"^E +replay shrunk: {re.escape(shrunk_replay)}$", out, flags=re.M)

    # shrunk.json: the choice and the fault, as the replay reads them.
    shrunk = json.loads((folder / "shrunk.json").read_text())
    assert shrunk["seed"] == original
    assert shrunk["choices"] == [[step, 1]]
    assert shrunk["faults"] == [
        {
            "at": 4.0,
            "fault": {"type": "Partition", "a": "desk", "b": "exchange", "both_ways": True},
        },
        {"at": 5.0, "fault": {"type": "Repair", "a": "desk", "b": "exchange", "both_ways": True}},
    ]
    assert shrunk["exception"] == "AssertionError: no price for AAPL\nassert None is not None"
    assert shrunk["replay"] == shrunk_replay
    record = json.loads((folder / "failure.json").read_text())
    assert record["replay_shrunk"] == shrunk_replay
    assert record["shrunk"] == found.group(0).removeprefix("shrunk: ")

    # The printed shrunk command, in a fresh interpreter: the same failure, the same run.
    argv = shlex.split(shrunk_replay)
    again = pytester.runpytest_subprocess(*argv[1:], "-p", "no:cacheprovider")
    again.assert_outcomes(failed=1)
    replayed = again.stdout.str()
    assert re.search(r"^E +AssertionError: no price for AAPL$", replayed, flags=re.M), replayed
    assert f"trace hash {shrunk['trace_hash']}," in replayed
    assert f"scheduler replay: FIFO except step {step} (index 1)" in replayed
    assert "saved: nothing (a --tk-replay run leaves the failure folders alone)" in replayed
    assert json.loads((folder / "shrunk.json").read_text()) == shrunk  # left alone

    # The original seed's replay still runs that seed, and shrinks it the same way.
    (seed_replay,) = set(lines_starting(out, "replay: "))
    assert seed_replay == f"pytest '{NODE}' --tk-seed={original}"
    seed_again = pytester.runpytest(*shlex.split(seed_replay)[1:], "-p", "no:cacheprovider")
    seed_again.assert_outcomes(failed=1)
    assert f"trace hash {record['trace_hash']}," in seed_again.stdout.str()
    assert SHRUNK_LINE.search(seed_again.stdout.str())
    assert json.loads((folder / "shrunk.json").read_text())["choices"] == [[step, 1]]

    # The failure folder itself replays the original (unshrunk) run exactly.
    whole = pytester.runpytest(NODE, f"--tk-replay={folder}", "-p", "no:cacheprovider")
    whole.assert_outcomes(failed=1)
    assert f"trace hash {record['trace_hash']}," in whole.stdout.str()

    # And the shrunk run is minimal: without its choice, or without its fault, it passes.
    for edit in ({"choices": []}, {"faults": []}):
        edited = pytester.path / "edited.json"
        edited.write_text(json.dumps({**shrunk, **edit}))
        alone = pytester.runpytest(NODE, f"--tk-replay={edited}", "-p", "no:cacheprovider")
        alone.assert_outcomes(passed=1)


# With FIFO order the body fails at its second assertion; only a reordering fails the
# first. Shrinking toward FIFO must keep the failure at the first one.
TWO_WAYS = """
import asyncio

from transportkit.testing import sim_test


@sim_test(seeds=20)
async def test_two_ways_to_fail():
    order = []

    async def worker(name):
        await asyncio.sleep(0)
        order.append(name)

    await asyncio.gather(worker("a"), worker("b"), worker("c"))
    assert order[0] == "a", f"{order[0]} resumed first"
    assert False, "the second way"
"""


def test_shrinking_keeps_the_failure_at_the_same_line(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_ways=TWO_WAYS)
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(failed=1)
    out = result.stdout.str()
    assert re.search(r"^E +AssertionError: [bc] resumed first$", out, flags=re.M), out
    (shrunk,) = lines_starting(out, "shrunk: ")
    assert re.fullmatch(r"FIFO except step \d+ \(index [12]\)", shrunk), shrunk
    (summary,) = lines_starting(out, "shrinking: ")
    assert summary.endswith("1-minimal: without any one of its choices or faults it passes")
    (command,) = set(lines_starting(out, "replay shrunk: "))
    again = pytester.runpytest(*shlex.split(command)[1:], "-p", "no:cacheprovider")
    again.assert_outcomes(failed=1)
    assert re.search(r"^E +AssertionError: [bc] resumed first$", again.stdout.str(), flags=re.M)


def test_shrinking_is_off_with_shrink_false_or_tk_shrink_0_and_bounded_by_shrink_n(
    pytester: pytest.Pytester,
) -> None:
    pytester.makepyfile(
        test_bounds=TWO_WAYS.replace("@sim_test(seeds=20)", "@sim_test(seeds=20, shrink=False)")
        + TWO_WAYS.replace("test_two_ways_to_fail", "test_again").replace(
            "@sim_test(seeds=20)", "@sim_test(seeds=20, shrink=2)"
        )
    )
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(failed=2)
    out = result.stdout.str()
    (shrunk,) = lines_starting(out, "shrunk: ")  # only test_again shrinks, and not far
    assert shrunk.endswith(" (shrinking stopped at max_runs)"), shrunk
    (summary,) = lines_starting(out, "shrinking: ")
    assert summary.startswith("2 re-runs, ") and summary.endswith(
        "stopped at max_runs: it may not be minimal"
    )
    names = sorted(
        p.name
        for p in (pytester.path / ".transportkit" / "failures").glob("*/shrunk.json")
        for p in [p.parent]
    )
    assert len(names) == 1 and "test_again" in names[0]

    off = pytester.runpytest("-p", "no:cacheprovider", "--tk-shrink=0")
    off.assert_outcomes(failed=2)
    assert not lines_starting(off.stdout.str(), "shrunk: ")
    assert not lines_starting(off.stdout.str(), "replay shrunk: ")
    hurried = pytester.runpytest("-p", "no:cacheprovider", "--tk-shrink-seconds=1e-9")
    hurried.assert_outcomes(failed=2)  # shrink=False stays off; test_again stops at once
    (summary,) = lines_starting(hurried.stdout.str(), "shrinking: ")
    assert summary.startswith("1 re-run, ")  # the check that the seed replays, no more
    assert summary.endswith("; stopped after its 1e-09 s budget: it may not be minimal")
    bad = pytester.runpytest("-p", "no:cacheprovider", "--tk-shrink-seconds=0")
    assert bad.ret == pytest.ExitCode.USAGE_ERROR
    bad.stderr.fnmatch_lines(["*--tk-shrink-seconds must be positive, got 0.0*"])


def test_a_failure_that_does_not_replay_is_reported_not_shrunk(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_stateful="""
        from transportkit.testing import sim_test

        RUNS = []

        @sim_test(seeds=10)
        async def test_third_run_fails():
            RUNS.append(1)  # state kept across seeds: the replay is the 4th run
            assert len(RUNS) != 3
        """
    )
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(failed=1)
    out = result.stdout.str()
    (summary,) = lines_starting(out, "shrinking: ")
    assert summary.startswith(
        "not possible: seed 2 replayed with its recorded schedule and faults did not fail "
        "the same way"
    )
    assert not lines_starting(out, "shrunk: ")
    assert not lines_starting(out, "replay shrunk: ")
    assert not list((pytester.path / ".transportkit" / "failures").glob("*/shrunk.json"))


def test_tk_replay_refuses_what_it_cannot_replay(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_any="""
        from transportkit.testing import sim_test

        @sim_test(seeds=2)
        async def test_ok():
            pass
        """
    )
    bad = pytester.path / "bad.json"
    cases = {
        "missing.json": "cannot read",
        "bad.json": "is not JSON",
    }
    bad.write_text("{")
    for path, message in cases.items():
        result = pytester.runpytest("-p", "no:cacheprovider", f"--tk-replay={path}")
        assert result.ret == pytest.ExitCode.USAGE_ERROR
        result.stderr.fnmatch_lines([f"*--tk-replay={path}: *{message}*"])
    bad.write_text(json.dumps({"seed": 1, "choices": [[3, 1]], "faults": [{"at": 1.0}]}))
    result = pytester.runpytest("-p", "no:cacheprovider", "--tk-replay=bad.json")
    result.stderr.fnmatch_lines(['*a fault entry is {"at": t, "fault": {...}}*'])
    bad.write_text(json.dumps({"seed": 1, "choices": [[3, 1]]}))
    both = pytester.runpytest("-p", "no:cacheprovider", "--tk-replay=bad.json", "--tk-seed=1")
    assert both.ret == pytest.ExitCode.USAGE_ERROR
    both.stderr.fnmatch_lines(["*--tk-replay replays one run: it excludes --tk-seed*"])
    # A record of another test skips this one, saying whose it is.
    bad.write_text(json.dumps({"test": "x.py::test_y[sim]", "seed": 1, "choices": []}))
    other = pytester.runpytest("-p", "no:cacheprovider", "--tk-replay=bad.json", "-rs")
    other.assert_outcomes(skipped=1)
    assert "--tk-replay=bad.json replays x.py::test_y[sim]" in other.stdout.str()


def test_faults_round_trip_through_json_with_their_latency_models(tmp_path: Path) -> None:
    schedule = [
        (0.5, SetLatency("a", "b", Constant(0.02), both_ways=False)),
        (1.0, SetLatency("a", "b", None)),
        (2.0, Crash("a")),
        (3.0, Partition("a", "b")),
        (3.5, Repair("a", "b")),
    ]
    data = json.loads(json.dumps(faults_json(schedule)))
    assert [fault_from_json(item) for item in data] == schedule
    with pytest.raises(ValueError, match="unknown fault type 'Meteor'"):
        fault_from_json({"at": 1.0, "fault": {"type": "Meteor"}})
    with pytest.raises(ValueError, match="unknown latency model type 'Mine'"):
        fault_from_json({"at": 1, "fault": {"type": "SetLatency", "a": "a", "b": "b",
                                            "latency": {"type": "Mine"}}})  # fmt: skip
    with pytest.raises(ValueError, match="finite number >= 0"):
        fault_from_json({"at": -1, "fault": {"type": "Crash", "node": "a"}})
    (tmp_path / "s.json").write_text(json.dumps({"seed": 4, "choices": [[9, 2], [3, 1]]}))
    record = load_replay(tmp_path / "s.json")
    assert (record.seed, record.choices, record.faults, record.test) == (
        4,
        ((3, 1), (9, 2)),
        [],
        None,
    )


def test_the_same_way_means_the_same_types_down_the_cause_chain_and_the_assert_line() -> None:
    def raised(make: object) -> BaseException:
        try:
            make()  # type: ignore[operator]
        except BaseException as exc:
            return exc
        raise AssertionError("did not raise")

    def wrapped(inner: type[Exception]) -> None:
        try:
            raise inner("inner")
        except Exception as exc:
            raise SimulationError("a task failed") from exc

    def assert_here() -> None:
        assert False, "here"  # noqa: B011

    def assert_there() -> None:
        assert False, "there"  # noqa: B011

    a, b = raised(lambda: wrapped(KeyError)), raised(lambda: wrapped(KeyError))
    assert failure_signature(a) == failure_signature(b)  # messages are not compared
    assert failure_signature(a) != failure_signature(raised(lambda: wrapped(ValueError)))
    here = raised(assert_here)
    assert failure_signature(here) == failure_signature(raised(assert_here))
    assert failure_signature(here) != failure_signature(raised(assert_there))
    group = raised(lambda: (_ for _ in ()).throw(ExceptionGroup("g", [KeyError(1), OSError()])))
    assert failure_signature(group) == failure_signature(
        ExceptionGroup("h", [OSError(2), KeyError()])
    )
    assert failure_signature(group) != failure_signature(ExceptionGroup("g", [KeyError(1)]))
