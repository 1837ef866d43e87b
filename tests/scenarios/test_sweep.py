"""Seed sweeps: ``transportkit sweep`` and ``transportkit.scenario.sweep``.

Each seed runs in a child process, so these tests keep to a tiny scenario (0.8 s of
virtual time, a few milliseconds of sim) and a handful of seeds.
"""

from __future__ import annotations

import importlib
import json
import multiprocessing
import os
import re
import shlex
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Executor, Future, ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

import transportkit
import transportkit.scenario._sweep as sweep_module
from transportkit.cli import main
from transportkit.scenario import (
    SweepResult,
    default_wall_budget,
    load,
    replay_command,
    swarm_fault_kinds,
    sweep,
)
from transportkit.scenario._sweep_child import run_task

SHIPPED = Path(transportkit.__file__).parent / "scenarios"  # the scenario files in the package

ROOT = Path(__file__).resolve().parents[2]

TWO_KINDS = """\
[scenario]
name = "two-kinds"
seed = 1
duration = 0.6
drain = 0.2
latency = { model = "lognormal", median_us = 50, sigma = 0.3 }

[[component]]
name = "feed"
kind = "market_data_publisher"
node = "exchange"
bind = "tcp://*:5556"
rate = 500

[[component]]
name = "desk-md"
kind = "market_data_subscriber"
node = "desk"
source = "feed"
connect = "tcp://exchange:5556"

[[fault]]
at = 0.2
kind = "set_latency"
a = "exchange"
b = "desk"
latency = { model = "constant", delay_us = 5000 }

[[fault]]
at = 0.3
kind = "set_latency"
a = "exchange"
b = "desk"

[[fault]]
at = 0.3
kind = "crash"
node = "exchange"

[[fault]]
at = 0.4
kind = "restart"
node = "exchange"

[[invariant]]
kind = "latency"
description = "desk sees updates within 1 ms"
stream = "feed"
receiver = "desk-md"
percentile = 100
max_us = 1000

[[invariant]]
kind = "bound"
description = "the feed never restarts"
stream = "feed"
metric = "sequence_restarts"
at_most = 0
"""
"""Passes exactly when no fault is enabled: the latency spike breaks the first
invariant, the exchange's crash and restart the second."""

LATENCY_INVARIANT = "desk sees updates within 1 ms"
RESTART_INVARIANT = "the feed never restarts"


@pytest.fixture(scope="module")
def scenario_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("sweep") / "two_kinds.toml"
    path.write_text(TWO_KINDS, encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def swarm_sweep(scenario_file: Path) -> SweepResult:
    """One swarm sweep of four seeds on the default executor (a process pool)."""
    return sweep(scenario_file, range(10, 14), jobs=2, swarm=True)


def replay_json(command: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, dict[str, Any]]:
    """Run a printed replay command (``transportkit run ...``) here, with --json."""
    words = shlex.split(command)
    assert words[:2] == ["transportkit", "run"]
    capsys.readouterr()
    status = main([*words[1:], "--json", "--no-progress"])
    return status, json.loads(capsys.readouterr().out)


def test_swarm_seeds_pick_their_fault_kinds_and_fail_exactly_when_faults_are_on(
    swarm_sweep: SweepResult, scenario_file: Path
) -> None:
    scenario = load(scenario_file)
    assert swarm_sweep.seeds == 4 and swarm_sweep.not_run == 0
    assert [r.seed for r in swarm_sweep.results] == list(range(10, 14))
    assert swarm_sweep.fault_kinds == ("crash", "set_latency")
    subsets = set()
    for result in swarm_sweep.results:
        assert result.fault_kinds == swarm_fault_kinds(scenario, result.seed)
        subsets.add(result.fault_kinds)
        assert result.passed == (result.fault_kinds == ()), result
        failed = {name for name, _ in result.failed_invariants}
        expected = set()
        if result.fault_kinds and "set_latency" in result.fault_kinds:
            expected.add(LATENCY_INVARIANT)
        if result.fault_kinds and "crash" in result.fault_kinds:
            expected.add(RESTART_INVARIANT)
        assert failed == expected
        assert result.trace_hash is not None and len(result.trace_hash) == 32
    assert subsets == {(), ("set_latency",), ("crash", "set_latency")}
    counts = swarm_sweep.invariant_failures()
    assert counts == {
        name: sum(name in {n for n, _ in r.failed_invariants} for r in swarm_sweep.results)
        for name in counts
    }
    assert not swarm_sweep.passed
    assert swarm_sweep.counts()["failed"] == len(swarm_sweep.failures) > 0


def test_the_replay_command_reproduces_the_seed_exactly(
    swarm_sweep: SweepResult, capsys: pytest.CaptureFixture[str]
) -> None:
    for result in swarm_sweep.results:
        assert result.replay == replay_command(
            str(swarm_sweep.source), result.seed, result.fault_kinds
        )
        status, report = replay_json(result.replay, capsys)
        assert report["trace_hash"] == result.trace_hash, result.replay
        assert status == (0 if result.passed else 1)
        assert report["passed"] == result.passed
    # The fault kinds in the command matter: without them a seed that had some of its
    # faults turned off runs every fault, another run.
    partial = next(r for r in swarm_sweep.results if r.fault_kinds != ("crash", "set_latency"))
    words = shlex.split(partial.replay)
    cut = words.index("--faults")
    _, everything = replay_json(shlex.join(words[:cut] + words[cut + 2 :]), capsys)
    assert everything["trace_hash"] != partial.trace_hash


@pytest.fixture(scope="module")
def random_sweep(scenario_file: Path) -> SweepResult:
    """Three seeds in the random-walk scheduler, on a pool of two threads."""
    with ThreadPoolExecutor(2) as threads:
        return sweep(scenario_file, range(3), executor=threads, scheduler="random")


def test_a_random_scheduler_sweep_replays_each_seed_exactly(
    random_sweep: SweepResult, scenario_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert random_sweep.scheduler == "random"
    assert "scheduler random" in random_sweep.report_text()
    assert random_sweep.to_dict()["scheduler"] == "random"
    for result in random_sweep.results:
        assert result.replay == replay_command(str(scenario_file), result.seed, scheduler="random")
        assert result.replay.endswith(f"--seed {result.seed} --scheduler random")
        assert result.trace_hash is not None
        status, report = replay_json(result.replay, capsys)
        assert report["trace_hash"] == result.trace_hash, result.replay
        assert status == (0 if result.passed else 1)
    # With the other options that made the run, in transportkit run's terms.
    both = replay_command("a b.toml", 3, ("crash",), 10**7, scheduler="pct")
    assert both == (
        "transportkit run 'a b.toml' --seed 3 --faults crash --max-events 10000000 --scheduler pct"
    )
    # Without --scheduler the command replays another run: FIFO's.
    words = shlex.split(random_sweep.results[0].replay)
    _, fifo = replay_json(shlex.join(words[: words.index("--scheduler")]), capsys)
    assert fifo["trace_hash"] != random_sweep.results[0].trace_hash


def test_the_scheduler_changes_the_runs_of_a_sweep(
    random_sweep: SweepResult, scenario_file: Path
) -> None:
    # The publisher's and the subscriber's tasks are often ready at once: another order
    # of them is another trace (each non-FIFO choice is a trace event).
    with ThreadPoolExecutor(2) as threads:
        fifo = sweep(scenario_file, range(3), executor=threads)
        pct = sweep(scenario_file, range(3), executor=threads, scheduler="pct")
    assert fifo.scheduler == "fifo" and "scheduler" not in fifo.report_text().splitlines()[0]
    assert all(
        r.replay == f"transportkit run {scenario_file} --seed {r.seed}" for r in fifo.results
    )
    hashes = {
        name: [r.trace_hash for r in run.results]
        for name, run in (("fifo", fifo), ("random", random_sweep), ("pct", pct))
    }
    assert all(h is not None for seeds in hashes.values() for h in seeds)
    for other in ("random", "pct"):
        assert any(h != f for h, f in zip(hashes[other], hashes["fifo"], strict=True)), other
    assert all(r.replay.endswith(" --scheduler pct") for r in pct.results)


def test_cli_sweep_scheduler_reaches_the_runs_and_the_replay_commands(
    scenario_file: Path,
    random_sweep: SweepResult,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    out = tmp_path / "random.json"
    argv = ["sweep", str(scenario_file), "--seeds", "2", "--jobs", "2", "--no-progress"]
    assert main([*argv, "--scheduler", "random", "--json", str(out)]) == 1
    text = capsys.readouterr().out
    assert f"replay: transportkit run {scenario_file} --seed 0 --scheduler random\n" in text
    data = json.loads(out.read_text(encoding="utf-8"))
    assert data["scheduler"] == "random"
    assert [r["trace_hash"] for r in data["results"]] == [
        r.trace_hash for r in random_sweep.results[:2]
    ]


def test_a_sweep_leaves_no_process_and_no_file_behind(
    scenario_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A forkserver pool's workers end with os._exit, without running finalizers: the
    # helper, whose input closes then, removes its supervisor's files and exits.
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.setattr(tempfile, "tempdir", None)  # read TMPDIR again
    context = multiprocessing.get_context("forkserver")
    with ProcessPoolExecutor(1, mp_context=context) as pool:
        result = sweep(scenario_file, [1], executor=pool)
    assert result.results[0].trace_hash is not None
    deadline = time.monotonic() + 10
    while list(tmp_path.rglob("transportkit-*")) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert list(tmp_path.rglob("transportkit-*")) == []  # (pymp-* is the forkserver's)


def test_swarm_choices_are_a_function_of_the_seed_alone(scenario_file: Path) -> None:
    scenario = load(scenario_file)
    chosen = [swarm_fault_kinds(scenario, seed) for seed in range(8)]
    # The same on every machine and Python version (random.Random seeded with a str).
    assert chosen == [
        ("set_latency",),
        ("set_latency",),
        (),
        ("set_latency",),
        ("crash",),
        ("set_latency",),
        ("set_latency",),
        ("crash",),
    ]


def test_cli_prints_failures_with_replay_commands_and_a_summary(
    scenario_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "sweep.json"
    argv = ["sweep", str(scenario_file), "--seeds", "2", "--seed-start", "5", "--jobs", "1"]
    status = main([*argv, "--json", str(out), "--no-progress", "--max-shown", "1"])
    text = capsys.readouterr().out
    assert status == 1
    assert text.count("FAIL seed ") == 1  # bounded: one in full, the rest counted
    assert "FAIL seed 5 (failed): desk sees updates within 1 ms" in text
    assert f"replay: transportkit run {scenario_file} --seed 5\n" in text
    assert "... and 1 more failing seed(s)" in text
    assert "summary: 0 passed, 2 failed (2 by an invariant) of 2 seed(s) run" in text
    assert "slowest: seed " in text and "total wall time: " in text
    data = json.loads(out.read_text(encoding="utf-8"))
    assert [r["seed"] for r in data["results"]] == [5, 6]
    assert [f["seed"] for f in data["failures"]] == [5, 6]
    assert data["invariant_failures"] == {LATENCY_INVARIANT: 2, RESTART_INVARIANT: 2}
    assert data["counts"]["failed"] == 2 and data["passed"] is False
    assert data["failures"][0]["replay"] == f"transportkit run {scenario_file} --seed 5"


def test_cli_exit_status_zero_when_every_seed_passes(
    scenario_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    calm = tmp_path / "calm.toml"
    calm.write_text(re.sub(r"\[\[fault\]\].*?(?=\[\[invariant)", "", TWO_KINDS, flags=re.S))
    assert "[[fault]]" not in calm.read_text(encoding="utf-8")
    assert main(["sweep", str(calm), "--seeds", "2", "--jobs", "1", "--no-progress"]) == 0
    text = capsys.readouterr().out
    assert "FAIL" not in text and "summary: 2 passed, 0 failed of 2 seed(s) run" in text
    # Swarm testing needs faults to choose from: refused before anything runs.
    assert main(["sweep", str(calm), "--swarm", "--no-progress"]) == 2
    assert "the scenario has none" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--seeds", "0"], "--seeds: must be from 1"),
        (["--jobs", "0"], "--jobs: must be from 1"),
        (["--wall-budget", "0"], "--wall-budget: must be more than 0"),
        (["--seed-start", str(2**63 - 1), "--seeds", "2"], "at most 9223372036854775807"),
        (["--json", "/nonexistent-dir/x.json"], "does not exist"),
        (["--json", "SCENARIO"], "is the scenario file"),
        (["--scheduler", "lifo"], "--scheduler: invalid choice: 'lifo'"),
    ],
)
def test_cli_refuses_a_bad_command_line_before_running(
    scenario_file: Path, argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = [str(scenario_file) if word == "SCENARIO" else word for word in argv]
    try:
        status = main(["sweep", str(scenario_file), *argv, "--no-progress"])
    except SystemExit as exc:  # argparse
        status = int(exc.code or 0)
    assert status == 2
    assert message in capsys.readouterr().err


FAKE_CHILD = textwrap.dedent(
    """\
    # A stand-in for a seed's child process (or its helper): crashes, hangs or exits
    # early on some seeds, registers an invariant the run breaks on others (each seed's
    # process is its own: the patches stay in it), runs the rest as usual.
    import os, sys, time
    import transportkit.scenario._runner as runner
    import transportkit.scenario._sweep_child as child
    real = child.run_task
    def run_task(task):
        seed = task["seed"]
        with open(os.path.join(sys.argv[1], f"pid-{seed}"), "w") as f:
            f.write(str(os.getpid()))
        if seed == 1:
            os.abort()
        if seed == 2:
            time.sleep(120)
        if seed == 3:
            print("something went badly wrong", file=sys.stderr)
            sys.exit(3)
        if seed in (5, 6):
            class Watched(runner.Simulation):
                def __init__(self, *args, **kwargs):
                    super().__init__(*args, **kwargs)
                    if seed == 5:
                        self.always(lambda: self.now < 0.25, name="quiet until t=0.25")
                    else:
                        self.eventually(lambda: False, within=0.1, name="an answer in 0.1 s")
            runner.Simulation = Watched
        if seed == 7:
            def broken(*args, **kwargs):
                raise AttributeError("'Book' object has no attribute 'bid'", name="bid")
            runner.run_scenario = broken
        return real(task)
    child.run_task = run_task
    sys.exit(child.main(sys.argv[1:]))
    """
)


@pytest.fixture
def fake_child(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    script = tmp_path / "fake_child.py"
    script.write_text(FAKE_CHILD, encoding="utf-8")
    monkeypatch.setattr(sweep_module, "CHILD_COMMAND", (str(script), str(tmp_path)))
    return tmp_path


FORK_MODES = pytest.mark.parametrize(
    "fork",
    [True, pytest.param(False, marks=pytest.mark.slow)],  # fork=False: a few seconds more
    ids=["forked", "new-interpreter"],
)


@FORK_MODES
def test_a_crash_and_a_silent_exit_are_failures_with_their_reasons(
    scenario_file: Path, fake_child: Path, fork: bool
) -> None:
    with ThreadPoolExecutor(2) as threads:
        result = sweep(scenario_file, [0, 1, 3], executor=threads, swarm=True, fork=fork)
    by_seed = {r.seed: r for r in result.results}
    assert [r.seed for r in result.results] == [0, 1, 3]
    assert by_seed[1].status == "crashed"
    assert "killed by SIGABRT" in by_seed[1].detail
    assert by_seed[3].status == "crashed"
    assert "exited with status 3 without an answer" in by_seed[3].detail
    assert "something went badly wrong" in by_seed[3].detail
    assert by_seed[0].status == "failed"  # the other seed ran as usual
    assert by_seed[0].trace_hash is not None
    assert result.counts()["crashed"] == 2
    assert result.failures[1].replay.startswith("transportkit run ")
    assert "(1 by an invariant, 2 crashed) of 3 seed(s) run" in result.report_text()


@FORK_MODES
def test_a_seed_past_its_wall_budget_is_killed_and_the_sweep_goes_on(
    scenario_file: Path, fake_child: Path, fork: bool
) -> None:
    budget = 2.0  # the hanging seed sleeps for 120 s
    with ThreadPoolExecutor(1) as one_thread:  # the second seed reuses its helper
        result = sweep(scenario_file, [2, 4], executor=one_thread, wall_budget=budget, fork=fork)
    hung, after = result.results
    assert hung.status == "timeout"
    assert f"ran past its wall budget of {budget:g} s and was killed" in hung.detail
    assert budget <= hung.wall_seconds < budget + 2
    pid_file = fake_child / "pid-2"
    if pid_file.exists():  # the child had started before the budget ran out
        with pytest.raises(ProcessLookupError):  # killed and reaped, not left running
            os.kill(int(pid_file.read_text(encoding="utf-8")), 0)
    assert after.status == "failed" and after.trace_hash is not None
    assert "1 timed out" in result.report_text()


def test_a_new_interpreter_per_seed_gives_the_same_runs(
    swarm_sweep: SweepResult, scenario_file: Path
) -> None:
    with ThreadPoolExecutor(2) as threads:
        fresh = sweep(scenario_file, [10, 11], executor=threads, swarm=True, fork=False)
    assert [(r.seed, r.status, r.trace_hash) for r in fresh.results] == [
        (r.seed, r.status, r.trace_hash) for r in swarm_sweep.results[:2]
    ]


def test_an_invariant_violation_during_a_run_counts_under_its_name(
    scenario_file: Path, fake_child: Path
) -> None:
    with ThreadPoolExecutor(2) as threads:
        result = sweep(scenario_file, [5, 6, 7], executor=threads)
    always, eventually, other = result.results
    assert [r.status for r in result.results] == ["error"] * 3
    assert [name for name, _ in always.failed_invariants] == ["quiet until t=0.25"]
    assert [name for name, _ in eventually.failed_invariants] == ["an answer in 0.1 s"]
    assert always.detail == (
        "InvariantViolation: always-invariant 'quiet until t=0.25' does not hold at "
        "t=0.250000s (seed 5)"
    )
    assert eventually.detail.startswith(
        "InvariantViolation: eventually-invariant 'an answer in 0.1 s' did not hold within"
    )
    assert "last trace events" in always.traceback  # the events are kept, off the line
    # Another exception with a name attribute (AttributeError's, ImportError's) is an
    # error, not an invariant called "bid".
    assert other.failed_invariants == ()
    assert other.detail == "AttributeError: 'Book' object has no attribute 'bid'"
    assert result.invariant_failures() == {"an answer in 0.1 s": 1, "quiet until t=0.25": 1}
    text = result.report_text()
    assert "summary: 0 passed, 3 failed (3 by an error) of 3 seed(s) run" in text
    assert "  invariant failures (seeds):\n         1  an answer in 0.1 s\n" in text
    assert "         1  quiet until t=0.25\n" in text
    assert all("\n" not in r.detail for r in result.results)
    assert "deliver" not in text  # no trace event spilled into the report


class ReverseExecutor(Executor):
    """Runs nothing until ``batch`` calls are submitted, then all of them, last first:
    results arrive in the reverse of seed order.
    """

    def __init__(self, batch: int) -> None:
        self.batch = batch
        self.calls: list[tuple[Future[Any], Callable[..., Any], tuple[Any, ...]]] = []
        self.completed: list[int] = []

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        future: Future[Any] = Future()
        self.calls.append((future, fn, args))
        if len(self.calls) == self.batch:
            for fut, call, call_args in reversed(self.calls):
                fut.set_running_or_notify_cancel()
                fut.set_result(call(*call_args))
                self.completed.append(call_args[0].seed)
        return future


def test_results_are_in_seed_order_whatever_the_completion_order(scenario_file: Path) -> None:
    executor = ReverseExecutor(batch=3)
    result = sweep(scenario_file, [7, 3, 5], executor=executor, max_in_flight=3)
    assert executor.completed == [7, 5, 3]
    assert [r.seed for r in result.results] == [3, 5, 7]
    assert result.executor == "ReverseExecutor"


def test_fail_fast_stops_after_the_first_failure(scenario_file: Path) -> None:
    with ThreadPoolExecutor(1) as one_thread:
        result = sweep(
            scenario_file, range(4), executor=one_thread, max_in_flight=1, fail_fast=True
        )
    assert [r.seed for r in result.results] == [0]
    assert result.not_run == 3 and not result.passed
    assert "3 seed(s) (--fail-fast stopped at the first failure)" in result.report_text()


def test_a_bad_seed_list_is_refused(scenario_file: Path) -> None:
    with pytest.raises(ValueError, match="repeated"):
        sweep(scenario_file, [1, 1])
    with pytest.raises(ValueError, match="at least one seed"):
        sweep(scenario_file, [])
    with pytest.raises(ValueError, match="from 0 to"):
        sweep(scenario_file, [-1])


def test_an_unknown_scheduler_is_refused_before_any_seed_runs(scenario_file: Path) -> None:
    executor = ReverseExecutor(batch=1)  # would run a submitted seed at once
    with pytest.raises(ValueError, match=r"unknown scheduler 'lifo': use one of fifo, random"):
        sweep(scenario_file, [1], executor=executor, scheduler="lifo")
    with pytest.raises(ValueError, match="unknown scheduler"):
        sweep(scenario_file, [1], executor=executor, scheduler=None)  # type: ignore[arg-type]
    assert executor.calls == []


def test_the_default_wall_budget_follows_the_estimated_cost() -> None:
    assert default_wall_budget(load(SHIPPED / "trading_day.toml")) == 120.0
    million = load(SHIPPED / "market_data_million.toml")
    assert default_wall_budget(million) > 120.0


def test_the_child_reports_an_exception_of_the_run(scenario_file: Path) -> None:
    task = {
        "seed": 1, "text": TWO_KINDS, "source": str(scenario_file),
        "max_events": 5_000_000, "fault_kinds": ["hold"], "scheduler": "fifo",
    }  # fmt: skip
    answer = run_task(task)
    assert answer["error"].startswith("ScenarioError: ")
    assert "no fault of that kind" in answer["error"]


def test_run_faults_keeps_only_the_named_kinds(
    scenario_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status, report = replay_json(f"transportkit run {scenario_file} --faults set_latency", capsys)
    assert status == 1
    assert [f["kind"] for f in report["faults"]] == ["set_latency", "set_latency"]
    status, report = replay_json(f"transportkit run {scenario_file} --faults none", capsys)
    assert status == 0 and report["faults"] == []
    for bad, message in (("crsh", "unknown fault kind 'crsh'"), ("hold", "no fault of that kind")):
        assert main(["run", str(scenario_file), "--faults", bad]) == 2
        assert message in capsys.readouterr().err


def test_dask_without_distributed_names_the_extra(
    scenario_file: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    real = importlib.import_module

    def no_distributed(name: str, package: str | None = None) -> Any:
        if name == "distributed":
            raise ModuleNotFoundError("No module named 'distributed'", name="distributed")
        return real(name, package)

    monkeypatch.setattr(importlib, "import_module", no_distributed)
    assert main(["sweep", str(scenario_file), "--dask", "tcp://127.0.0.1:1"]) == 2
    assert "pip install 'transportkit[dask]'" in capsys.readouterr().err


@pytest.fixture(scope="module")
def dask_cluster() -> Iterator[Any]:
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None
    ) as cluster:
        yield cluster


def test_a_sweep_on_a_dask_cluster(
    dask_cluster: Any,
    scenario_file: Path,
    swarm_sweep: SweepResult,
    capsys: pytest.CaptureFixture[str],
) -> None:
    distributed = sys.modules["distributed"]
    with distributed.Client(dask_cluster, set_as_default=False) as client:
        executor = client.get_executor(pure=False)
        result = sweep(scenario_file, range(10, 13), executor=executor, swarm=True)
    local = swarm_sweep.results[:3]  # the same seeds on a local process pool
    assert [(r.seed, r.status, r.trace_hash) for r in result.results] == [
        (r.seed, r.status, r.trace_hash) for r in local
    ]
    argv = ["sweep", str(scenario_file), "--seeds", "1", "--dask", dask_cluster.scheduler_address]
    assert main([*argv, "--no-progress"]) == 1
    text = capsys.readouterr().out
    assert f"(dask {dask_cluster.scheduler_address})" in text
    assert "summary: 0 passed, 1 failed" in text


def test_an_executor_that_refuses_seeds_ends_the_sweep_with_the_reason(
    scenario_file: Path,
) -> None:
    closed = ThreadPoolExecutor(1)
    closed.shutdown()
    result = sweep(scenario_file, range(3), executor=closed)
    assert result.results == () and result.not_run == 3 and not result.passed
    assert result.executor_error is not None
    assert "cannot schedule new futures after shutdown" in result.executor_error
    assert "not run: 3 seed(s) (the executor refused a seed: RuntimeError" in result.report_text()
