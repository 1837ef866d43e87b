"""@sim_test: a test body run once per seed, replayable from the line it prints."""

from __future__ import annotations

import importlib
import inspect
import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from transportkit.sim_backend import Simulation, Uniform
from transportkit.testing import _simtest, sim_test
from transportkit.testing._simtest_failures import folder_name, prune_failures
from transportkit.testing.strategies import fault_schedules

pytest_plugins = ["pytester"]

# An order-dependent test: it assumes the order from desk-a reaches the exchange first.
# With random link latency that holds for some seeds only (seeds 0 and 1 pass and seed
# 2 fails with this latency, on any scheduler: the latency draws decide).
ORDER_DEPENDENT = """
import asyncio

from transportkit.sim_backend import Uniform
from transportkit.testing import sim_test


@sim_test(seeds=20, latency=Uniform(1e-3, 5e-3))
async def test_desk_b_is_always_first(tk_sim):
    with (
        tk_sim.node("exchange").puller(bind="tcp://*:6000") as sink,
        tk_sim.node("desk-a").pusher(connect="tcp://exchange:6000") as a,
        tk_sim.node("desk-b").pusher(connect="tcp://exchange:6000") as b,
    ):
        await asyncio.sleep(0.1)
        await a.send([b"from-a"])
        await b.send([b"from-b"])
        first = await sink.recv()
        assert first == [b"from-b"], f"{first[0]!r} arrived first"
"""


def failure_folders(root: Path) -> list[Path]:
    base = root / ".transportkit" / "failures"
    return sorted(p for p in base.iterdir() if p.is_dir()) if base.exists() else []


def replay_line(text: str) -> str:
    lines = [line for line in text.splitlines() if line.startswith("replay: ")]
    assert lines, text
    return lines[0].removeprefix("replay: ")


def error_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("E ")]


def test_a_failing_seed_prints_its_replay_line_saves_its_folder_and_replays_exactly(
    pytester: pytest.Pytester,
) -> None:
    pytester.makepyfile(test_orders=ORDER_DEPENDENT)
    first = pytester.runpytest("-p", "no:cacheprovider")
    first.assert_outcomes(failed=1)
    out = first.stdout.str()

    command = replay_line(out)
    assert command == "pytest 'test_orders.py::test_desk_b_is_always_first[sim]' --tk-seed=2"
    assert "seed 2 failed after 2 passing seed(s)" in out
    assert re.search(r"^last 19 trace events before the failure \(of 19\):$", out, flags=re.M)
    assert re.search(r"^  0\.1\d+ deliver +exchange/pull0 m1$", out, flags=re.M), out
    assert re.search(r"^E +AssertionError: b'from-a' arrived first$", out, flags=re.M)

    (folder,) = failure_folders(pytester.path)
    assert folder.name == "test_orders.py_test_desk_b_is_always_first_sim-2"
    assert {p.name for p in folder.iterdir()} >= {"trace.json", "schedule.json", "faults.json"}
    trace = json.loads((folder / "trace.json").read_text())
    assert any(e.get("name") == "deliver" for e in trace["traceEvents"])
    assert json.loads((folder / "faults.json").read_text()) == []
    schedule = json.loads((folder / "schedule.json").read_text())
    assert isinstance(schedule, dict) and schedule
    record = json.loads((folder / "failure.json").read_text())
    assert record["seed"] == 2 and record["replay"] == command
    assert f"trace hash {record['trace_hash']}" in out
    summary = out.split("transportkit: replay the failing seeds", 1)[1]
    assert f"replay: {command}" in summary.splitlines()

    # The printed command, in a fresh interpreter, fails the same way with the same trace.
    argv = shlex.split(command)
    assert argv[0] == "pytest"
    again = pytester.runpytest_subprocess(*argv[1:], "-p", "no:cacheprovider")
    again.assert_outcomes(failed=1)
    replayed = again.stdout.str()
    assert error_lines(replayed)[:2] == error_lines(out)[:2]
    assert "seed 2 failed after 0 passing seed(s)" in replayed
    assert f"trace hash {record['trace_hash']}" in replayed
    replayed_record = json.loads((folder / "failure.json").read_text())
    assert replayed_record["trace_hash"] == record["trace_hash"]
    assert replayed_record["exception"] == record["exception"]

    # And a seed that passes, passes alone.
    pytester.runpytest(argv[1], "--tk-seed=1", "-p", "no:cacheprovider").assert_outcomes(passed=1)


def test_seeds_are_0_to_n_minus_1_and_the_options_choose_them(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_seen="""
        from transportkit.testing import sim_test

        SEEN = []

        @sim_test(seeds=5)
        async def test_record(tk_seed, tk_sim):
            assert tk_sim.seed == tk_seed
            SEEN.append(tk_seed)

        @sim_test(seeds=[7, 3])
        async def test_listed(tk_seed):
            SEEN.append(("listed", tk_seed))

        def test_zzz_report():
            print("SEEN", SEEN)
        """
    )
    plain = pytester.runpytest("-p", "no:cacheprovider", "-s")
    plain.assert_outcomes(passed=3)
    assert "SEEN [0, 1, 2, 3, 4, ('listed', 7), ('listed', 3)]" in plain.stdout.str()
    many = pytester.runpytest("-p", "no:cacheprovider", "-s", "--tk-seeds=8")
    assert "SEEN [0, 1, 2, 3, 4, 5, 6, 7, ('listed', 7), ('listed', 3)]" in many.stdout.str()
    one = pytester.runpytest("-p", "no:cacheprovider", "-s", "--tk-seed=42")
    assert "SEEN [42, ('listed', 42)]" in one.stdout.str()
    bad = pytester.runpytest("-p", "no:cacheprovider", "--tk-seeds=0")
    assert bad.ret == pytest.ExitCode.USAGE_ERROR
    bad.stderr.fnmatch_lines(["*--tk-seeds must be 1 to 1000000, got 0*"])


def test_faults_from_a_function_of_the_seed_are_applied_saved_and_given_to_the_body(
    pytester: pytest.Pytester,
) -> None:
    pytester.makepyfile(
        test_faulty="""
        import asyncio

        from transportkit.sim_backend import Crash, Restart
        from transportkit.testing import sim_test

        def outages(seed):
            return [(0.5, Crash("risk")), (1.5, Restart("risk"))] if seed == 3 else []

        @sim_test(seeds=6, faults=outages)
        async def test_risk_never_crashes(tk_sim, tk_faults):
            tk_sim.node("risk")
            assert tk_faults == outages(tk_sim.seed)
            await asyncio.sleep(1.0)
            assert tk_sim.nodes["risk"].alive, "risk is down"
        """
    )
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(failed=1)
    assert replay_line(result.stdout.str()).endswith("--tk-seed=3")
    result.stdout.fnmatch_lines(["  0.500000000 fault * risk crash"])  # in the trace tail
    (folder,) = failure_folders(pytester.path)
    faults = json.loads((folder / "faults.json").read_text())
    assert faults == [
        {"at": 0.5, "fault": {"type": "Crash", "node": "risk"}},
        {"at": 1.5, "fault": {"type": "Restart", "node": "risk"}},
    ]


def test_a_hypothesis_strategy_of_faults_is_drawn_from_by_the_seed_deterministically(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Hypothesis mixes the constants of every "local" module loaded in the process into
    # what it generates; a test session loads many more than the replay's fresh process.
    # Load one more here, full of constants, so the in-process draw sees a different
    # module set from the subprocess's below: the draws must not depend on it.
    (tmp_path / "tk_many_constants.py").write_text(
        "VALUES = [" + ", ".join(f"{n * 0.37:.3f}, {n * 7919}, 'c{n}'" for n in range(300)) + "]\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    importlib.import_module("tk_many_constants")
    spec = _simtest._Spec.make(
        seeds=10,
        scheduler=None,
        faults=fault_schedules(["a", "b"], crashable=["a"], horizon=5.0),
        nodes=None,
        backends=("sim",),
        timeout=10.0,
        zmq_timeout=1.0,
        simulation_options={},
    )
    drawn = [spec.faults_for(seed) for seed in range(10)]
    assert drawn == [spec.faults_for(seed) for seed in range(10)]
    assert sum(1 for schedule in drawn if schedule) >= 5  # not the empty schedule every time
    assert len({repr(schedule) for schedule in drawn}) >= 5
    # The same in another interpreter, with another hash seed: a replay draws the same.
    code = (
        "from transportkit.testing import _simtest\n"
        "from transportkit.testing.strategies import fault_schedules\n"
        "s = fault_schedules(['a', 'b'], crashable=['a'], horizon=5.0)\n"
        "print(repr([_simtest._Spec.make(seeds=1, scheduler=None, faults=s, nodes=None,"
        " backends=('sim',), timeout=1.0, zmq_timeout=1.0, simulation_options={})"
        ".faults_for(seed) for seed in range(10)]))\n"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=True,
    )
    assert out.stdout.strip() == repr(drawn)


def test_the_body_runs_in_the_exploring_scheduler_by_default(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    made: list[object] = []

    class WithScheduler(Simulation):
        def __init__(self, seed: int = 0, *, scheduler: object = "fifo", **options: object):
            made.append(scheduler)
            super().__init__(seed, **options)  # type: ignore[arg-type]

    monkeypatch.setattr(_simtest, "Simulation", WithScheduler)
    spec = _simtest._Spec.make(
        seeds=1,
        scheduler=None,
        faults=None,
        nodes=None,
        backends=("sim",),
        timeout=10.0,
        zmq_timeout=1.0,
        simulation_options={},
    )
    spec.simulation(5)
    picked = _simtest._Spec.make(
        seeds=1,
        scheduler=lambda seed: ("replayer", seed),
        faults=None,
        nodes=None,
        backends=("sim",),
        timeout=10.0,
        zmq_timeout=1.0,
        simulation_options={},
    )
    picked.simulation(9)
    assert made == ["random", ("replayer", 9)]


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"seeds": 0}, ValueError, "seeds must be 1 to 1000000"),
        ({"seeds": []}, ValueError, "seeds lists 1 to"),
        ({"seeds": [1, "2"]}, TypeError, "a seed must be an int"),
        ({"backends": ("sim", "grpc")}, ValueError, "backends must be distinct names"),
        ({"timeout": float("inf")}, ValueError, "timeout must be positive and finite"),
        ({"zmq_timeout": 0}, ValueError, "zmq_timeout must be positive"),
        ({"faults": 3}, TypeError, "faults must be a FaultSchedule"),
        ({"seed": 3}, TypeError, "the seed comes from seeds="),
    ],
)
def test_bad_arguments_are_refused_when_the_test_is_defined(
    kwargs: dict[str, object], error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=match):
        sim_test(**kwargs)  # type: ignore[arg-type]


def test_the_body_must_be_async_and_tk_sim_exists_only_on_the_sim() -> None:
    def sync_body() -> None:
        pass

    async def wants_sim(tk_sim: Simulation) -> None:
        pass

    with pytest.raises(TypeError, match="needs an async def test body"):
        sim_test(sync_body)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="takes tk_sim, which exists only on the sim"):
        sim_test(backends=("sim", "zmq"))(wants_sim)


def test_the_same_body_runs_per_seed_on_sim_and_once_on_zmq(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_both="""
        from transportkit import SocketOptions
        from transportkit.testing import sim_test

        RUNS = []

        async def echo(net):
            with net.worker(bind="inproc://echo") as rep:
                while True:
                    await rep.send(await rep.recv())

        @sim_test(seeds=3, backends=("sim", "zmq"), nodes={"server": echo})
        async def test_round_trip(tk_harness, tk_seed):
            RUNS.append((tk_harness.name, tk_seed))
            net = tk_harness.network("main")
            with net.puller(bind=tk_harness.bind_endpoint()) as sink:
                with net.pusher(connect=sink.last_endpoint) as source:
                    await source.send([b"order", b"%d" % tk_seed])
                    assert await sink.recv() == [b"order", b"%d" % tk_seed]

        def test_zzz_report():
            print("RUNS", RUNS)
        """
    )
    result = pytester.runpytest("-p", "no:cacheprovider", "-s", "-v")
    result.assert_outcomes(passed=3)
    result.stdout.fnmatch_lines(
        ["*test_round_trip?sim? PASSED*", "*test_round_trip?zmq? PASSED*"], consecutive=False
    )
    assert "RUNS [('sim', 0), ('sim', 1), ('sim', 2), ('zmq', 0)]" in result.stdout.str()


def test_a_node_main_that_raises_on_zmq_fails_the_run_naming_the_node(
    pytester: pytest.Pytester,
) -> None:
    pytester.makepyfile(
        test_broken="""
        import asyncio

        from transportkit.testing import sim_test

        async def broken(net):
            await asyncio.sleep(0.01)
            raise RuntimeError("risk engine bug")

        @sim_test(backends=("zmq",), nodes={"risk": broken}, zmq_timeout=5.0)
        async def test_waits(tk_harness):
            await asyncio.sleep(3)
        """
    )
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        ["E * RuntimeError: risk engine bug", "E * raised by the main of node 'risk' (zmq run)"]
    )


def test_the_failure_folder_keeps_only_the_newest(pytester: pytest.Pytester) -> None:
    # The ini the conftest gives every pytester project, plus the option under test.
    pytester.makeini(
        "[pytest]\nasyncio_default_fixture_loop_scope = function\ntk_keep_failures = 2\n"
    )
    pytester.makepyfile(
        test_many="""
        import pytest
        from transportkit.testing import sim_test

        @sim_test(seeds=[11])
        async def test_a(): assert False

        @sim_test(seeds=[12])
        async def test_b(): assert False

        @sim_test(seeds=[13])
        async def test_c(): assert False
        """
    )
    (pytester.path / ".transportkit" / "failures" / "not-ours").mkdir(parents=True)
    pytester.runpytest("-p", "no:cacheprovider").assert_outcomes(failed=3)
    names = [p.name for p in failure_folders(pytester.path)]
    assert names == ["not-ours", "test_many.py_test_b_sim-12", "test_many.py_test_c_sim-13"]


def test_prune_keeps_the_newest_failure_folders(tmp_path: Path) -> None:
    for i in range(5):
        folder = tmp_path / f"t-{i}"
        folder.mkdir()
        record = folder / "failure.json"
        record.write_text("{}")
        ns = 1_000_000_000 * (10 + i)
        os.utime(record, ns=(ns, ns))
    removed = prune_failures(tmp_path, 3)
    assert sorted(p.name for p in removed) == ["t-0", "t-1"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t-2", "t-3", "t-4"]


def test_folder_names_are_file_names_and_long_ids_stay_distinct() -> None:
    assert folder_name("tests/a.py::test_x[sim]", 7) == "tests_a.py_test_x_sim-7"
    long_a = "tests/a.py::test_" + "x" * 200 + "[sim]"
    long_b = "tests/a.py::test_" + "x" * 200 + "[zmq]"
    assert folder_name(long_a, 1) != folder_name(long_b, 1)
    assert len(folder_name(long_a, 1)) <= 140
    assert "/" not in folder_name("a/b/../c.py::t[x y]", 0)


def test_sim_test_functions_are_plain_functions_for_pytest() -> None:
    @sim_test(seeds=2, latency=Uniform(1e-3, 2e-3))
    async def test_body(tk_sim: Simulation, tmp_path: Path) -> None:
        pass

    assert not inspect.iscoroutinefunction(test_body)  # no asyncio plugin takes it over
    assert list(inspect.signature(test_body).parameters) == ["tmp_path", "tk_backend", "request"]
    assert test_body.__name__ == "test_body"


TESTING_PAGE = Path(__file__).resolve().parents[2] / "docs" / "testing.md"


def test_the_docs_walk_through_prints_what_the_docs_show(pytester: pytest.Pytester) -> None:
    text = TESTING_PAGE.read_text(encoding="utf-8")
    section = text.split("## One test, many seeds: `@sim_test`", 1)[1].split("\n## ", 1)[0]
    (example,) = [b for b in re.findall(r"```python\n(.*?)```", section, re.S) if "@sim_test" in b]
    (shown,) = re.findall(r"```text\n(.*?)```", section, re.S)
    pytester.mkdir("tests")
    (pytester.path / "tests" / "test_orders.py").write_text(example)
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(failed=1)
    out = result.stdout.str()
    report = out.split("transportkit sim_test: seed", 1)[1].split("\n", 1)[1]
    shown_lines = shown.splitlines()
    (header,) = [i for i, line in enumerate(shown_lines) if "transportkit sim_test: seed" in line]
    notes = shown_lines[:header]  # the E lines under the assertion
    expected = [line for line in shown_lines[header + 1 :] if line.strip() != "..."]
    got = report.splitlines()
    for line in expected:  # the page's lines, in order, in the real report
        assert line in got, f"docs/testing.md shows {line!r}; the report is:\n{report}"
        got = got[got.index(line) + 1 :]
    real_notes = [line[1:].strip() for line in out.splitlines() if line.startswith("E ")]
    for line in notes:
        assert line[1:].strip() in real_notes, (
            f"docs/testing.md shows {line!r}; the notes are {real_notes}"
        )
    assert replay_line(out) == notes[0].split("replay: ", 1)[1]
    assert (pytester.path / notes[1].rsplit(": ", 1)[1]).is_dir()
    (shrunk_command,) = [n for n in notes if "replay shrunk: " in n]
    shrunk_file = shrunk_command.rsplit("--tk-replay=", 1)[1]
    assert json.loads((pytester.path / shrunk_file).read_text())["description"] == "FIFO"


TWO_TASKS = """
import asyncio

from transportkit.testing import sim_test


@sim_test(seeds=100)
async def test_tasks_resume_in_creation_order():
    order = []

    async def worker(name):
        await asyncio.sleep(0)
        order.append(name)

    await asyncio.gather(worker("a"), worker("b"))
    assert order == ["a", "b"]
"""


def test_the_exploring_default_finds_a_hidden_task_order_and_replays_it(
    pytester: pytest.Pytester,
) -> None:
    pytester.makepyfile(test_tasks=TWO_TASKS)
    first = pytester.runpytest("-p", "no:cacheprovider")
    first.assert_outcomes(failed=1)
    out = first.stdout.str()
    assert "scheduler random" in out
    (folder,) = failure_folders(pytester.path)
    record = json.loads((folder / "failure.json").read_text())
    schedule = json.loads((folder / "schedule.json").read_text())
    assert schedule.get("recorded", True) is not False  # a real record, not the FIFO note
    argv = shlex.split(replay_line(out))
    again = pytester.runpytest_subprocess(*argv[1:], "-p", "no:cacheprovider")
    again.assert_outcomes(failed=1)
    assert json.loads((folder / "failure.json").read_text())["trace_hash"] == record["trace_hash"]
    assert json.loads((folder / "schedule.json").read_text()) == schedule


def test_zmq_runs_leave_the_threads_current_event_loop_alone(
    pytester: pytest.Pytester,
) -> None:
    # What an asyncio plugin does: set a loop for the session and count on it staying.
    pytester.makeconftest(
        """
        import asyncio
        import pytest

        @pytest.fixture(scope="session", autouse=True)
        def session_loop():
            loop = asyncio.new_event_loop()
            asyncio.set_event_loop(loop)
            yield loop
            asyncio.set_event_loop(None)
            loop.close()
        """
    )
    pytester.makepyfile(
        test_loop="""
        import asyncio
        from transportkit.testing import sim_test

        @sim_test(seeds=2, backends=("sim", "zmq"))
        async def test_body(tk_harness):
            await asyncio.sleep(0)

        def test_harness_run(tk_harness):
            assert tk_harness.run(asyncio.sleep(0, "done")) == "done"

        def test_zzz_loop_still_set(session_loop):
            assert asyncio.get_event_loop_policy().get_event_loop() is session_loop
        """
    )
    pytester.runpytest("-p", "no:cacheprovider").assert_outcomes(passed=5)


def test_methods_fixtures_and_request_reach_the_body(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_cls="""
        import pytest
        from transportkit.testing import sim_test

        @pytest.fixture
        def book():
            return {"AAPL": 1}

        class TestDesk:
            @sim_test(seeds=3)
            async def test_method(self, book, tk_seed, tk_sim):
                assert isinstance(self, TestDesk)
                assert book == {"AAPL": 1}
                assert tk_sim.seed == tk_seed

            @sim_test
            async def test_bare(self, request):
                assert request.node.name == "test_bare[sim]"
        """
    )
    pytester.runpytest("-p", "no:cacheprovider").assert_outcomes(passed=2)
