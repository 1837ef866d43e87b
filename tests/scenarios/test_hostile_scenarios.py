"""Hostile scenario files and command lines end with exit status 2 and one clear message.

Each case goes through the command line (``transportkit run``): in this process with a
timeout, or, where the old behaviour could block on a system call, eat the machine's
memory or crash, in a child process with a timeout and a memory limit. The message is
one line on stderr naming the file, the key (or line) and the problem; nothing runs.
"""

from __future__ import annotations

import os
import socket
import stat
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import transportkit
from transportkit.cli import main
from transportkit.scenario import _budget, _runner, _spec
from transportkit.scenario._bounds import (
    MAX_COMPONENTS,
    MAX_EVENTS,
    MAX_FILE_BYTES,
    MAX_NODES,
    MAX_SAMPLES,
    MAX_TRACED_EVENTS,
)
from transportkit.scenario._runner import load
from transportkit.scenario._spec import ScenarioError

SHIPPED = Path(transportkit.__file__).parent / "scenarios"  # the scenario files in the package

pytestmark = pytest.mark.timeout(30)

GOOD = """
[scenario]
name = "ok"
duration = 1.0

[[component]]
name = "feed"
kind = "market_data_publisher"
node = "exchange"
bind = "tcp://*:5556"
"""

QUEUE = """
[[component]]
name = "queue"
kind = "paranoid_queue"
node = "broker"
frontend = "tcp://*:5570"
backend = "tcp://*:5571"
"""

WORKER = """
[[component]]
name = "worker"
kind = "paranoid_worker"
node = "host"
connect = "tcp://broker:5571"
stream = "orders"
"""

CLIENT = """
[[component]]
name = "orders"
kind = "order_client"
node = "gateway"
connect = "tcp://broker:5570"
"""

CLONE = """
[[component]]
name = "clone"
kind = "clone_server"
node = "exchange"
publisher = "tcp://*:5580"
snapshot = "tcp://*:5581"

[[component]]
name = "clone-desk"
kind = "clone_client"
node = "clone-desk"
source = "clone"
snapshot = "tcp://exchange:5581"
updates = "tcp://exchange:5580"
"""

SUBSCRIBER = """
[[component]]
name = "desk"
kind = "market_data_subscriber"
node = "desk"
source = "feed"
connect = "tcp://exchange:5556"
"""

CONFLATING = """
[[component]]
name = "strategy"
kind = "conflating_subscriber"
node = "trader"
source = "feed"
connect = "tcp://exchange:5556"
"""


FEED_2 = """
[[component]]
name = "feed-2"
kind = "market_data_publisher"
node = "exchange"
bind = "tcp://*:5557"
"""


def in_scenario(setting: str) -> Callable[[str], str]:
    """An edit adding ``setting`` to the [scenario] table."""
    return lambda text: text.replace("duration = 1.0\n", f"duration = 1.0\n{setting}\n", 1)


def head(setting: str) -> Callable[[str], str]:
    """An edit replacing the duration line of [scenario] with ``setting``."""
    return lambda text: text.replace("duration = 1.0\n", f"{setting}\n", 1)


def feed(setting: str) -> Callable[[str], str]:
    """An edit adding ``setting`` to the publisher (the last table of GOOD)."""
    return lambda text: text + setting + "\n"


def append(*tables: str) -> Callable[[str], str]:
    return lambda text: text + "".join(tables)


def link(latency: str) -> Callable[[str], str]:
    table = f'\n[[link]]\na = "exchange"\nb = "exchange"\nlatency = {latency}\n'
    return lambda text: text + table


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """``transportkit ARGV`` in this process: (status, stdout, stderr)."""
    try:
        status = main(list(argv))
    except SystemExit as exc:  # argparse
        status = exc.code if isinstance(exc.code, int) else 2
    out, err = capsys.readouterr()
    return status, out, err


def assert_one_clear_message(err: str, *needles: str) -> None:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err
    for needle in needles:
        assert needle in lines[0], lines[0]


def refused(
    capsys: pytest.CaptureFixture[str], path: Path, *needles: str, argv: tuple[str, ...] = ()
) -> str:
    """Run ``path``; assert exit 2, nothing run, one line naming the file and needles
    (an option, instead of the file, when ``argv`` is at fault)."""
    status, out, err = run_cli(capsys, "run", str(path), "--no-progress", *argv)
    assert status == 2, (status, out, err)
    assert out == ""  # nothing ran: no report
    blamed = needles[0] if argv and needles[0].startswith("--") else str(path)
    assert_one_clear_message(err, f"transportkit run: {blamed}", *needles)
    return err


def write(tmp_path: Path, text: str | bytes, name: str = "hostile.toml") -> Path:
    path = tmp_path / name
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


# -- the file itself ------------------------------------------------------------------


def test_a_file_that_is_not_utf8(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, GOOD.replace('"ok"', '"caf\xe9"').encode("latin-1"))
    refused(capsys, path, "line 3", "not UTF-8", "0xe9")


def test_a_binary_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, bytes(range(256)) * 64, "data.bin")
    refused(capsys, path, "not UTF-8")


def test_a_binary_file_that_happens_to_be_utf8(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, b"\x00\x01\x02\x7f" * 1000, "data.bin")
    refused(capsys, path, "not valid TOML")


def test_a_directory(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "scenario.toml"
    path.mkdir()
    refused(capsys, path, "is a directory")


def test_a_socket(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "scenario.toml"
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(path))
        refused(capsys, path, "is a socket")


def test_an_empty_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    refused(capsys, write(tmp_path, ""), "is empty")
    refused(capsys, write(tmp_path, "\n# nothing here\n  \n"), "key 'scenario'", "is required")


def test_a_file_larger_than_any_scenario(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    padding = "#" * (MAX_FILE_BYTES - len(GOOD) - 1) + "\n"
    assert load(write(tmp_path, GOOD + padding, "at-the-bound.toml")).name == "ok"
    path = write(tmp_path, GOOD + padding + "#\n")
    refused(capsys, path, "larger than 1,048,576 bytes")


def test_a_file_that_cannot_be_read(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write(tmp_path, GOOD)
    if os.geteuid() == 0:  # root reads any file: make the open fail as it would
        real_open = os.open

        def denied(file: Any, *args: Any, **kwargs: Any) -> int:
            if Path(file) == path:
                raise PermissionError(13, "Permission denied", str(file))
            return real_open(file, *args, **kwargs)

        monkeypatch.setattr(os, "open", denied)
    else:
        path.chmod(0)
    refused(capsys, path, "cannot read", "Permission denied")


@pytest.mark.skipif(not Path("/proc/self/mem").exists(), reason="Linux /proc only")
def test_a_file_whose_read_fails(capsys: pytest.CaptureFixture[str]) -> None:
    """/proc/self/mem is a regular file of size 0 whose read fails (EIO)."""
    refused(capsys, Path("/proc/self/mem"), "cannot read")


def _limit_memory() -> None:  # pragma: no cover - runs in the child
    import resource  # noqa: PLC0415

    resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))


def run_child(*argv: str, timeout: float = 20.0, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    """``python -m transportkit ARGV`` with a timeout and 2 GiB of address space."""
    streams = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE, **kwargs}
    return subprocess.run(
        [sys.executable, "-m", "transportkit", *argv],
        text=True,
        timeout=timeout,
        check=False,
        preexec_fn=_limit_memory,
        **streams,
    )


def test_dev_zero_is_refused_without_reading_it() -> None:
    """/dev/zero has size 0 and never ends: the old loader read it until MemoryError."""
    proc = run_child("run", "/dev/zero", "--no-progress")
    assert proc.returncode == 2, proc.stderr
    assert_one_clear_message(proc.stderr, "/dev/zero", "character device")


def test_a_fifo_is_refused_without_blocking(tmp_path: Path) -> None:
    """Opening a FIFO without a writer blocks: the old loader hung there."""
    path = tmp_path / "scenario.toml"
    os.mkfifo(path)
    proc = run_child("run", str(path), "--no-progress")
    assert proc.returncode == 2, proc.stderr
    assert_one_clear_message(proc.stderr, str(path), "FIFO")


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        (GOOD + "symbols = " + "[" * 50_000 + "]" * 50_000 + "\n", "nested more than 10"),
        (GOOD + "options = " + "{ a = " * 50_000 + "1" + " }" * 50_000 + "\n", "nested more"),
        (GOOD + "x = " + "[{a = " * 25_000 + "1" + "}]" * 25_000 + "\n", "nested more"),
        (GOOD + "x" + ".x" * 50_000 + " = 1\n", "more than 8 dotted parts"),
        (GOOD + "[" + "t." * 50_000 + "t]\n", "more than 8 dotted parts"),
    ],
    ids=["arrays", "inline-tables", "arrays-of-inline-tables", "dotted-key", "table-header"],
)
def test_toml_nested_50000_deep(tmp_path: Path, text: str, needle: str) -> None:
    """tomllib recurses (RecursionError) or goes quadratic (a minute for the dotted
    key): refused by a linear scan before parsing, in a child in case of a crash."""
    path = write(tmp_path, text)
    proc = run_child("run", str(path), "--no-progress")
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert_one_clear_message(proc.stderr, str(path), "line 11", needle)


@pytest.mark.parametrize(
    "text",
    [
        'a = "[[[[[[[[[[[[[[[[[[[["\n',
        "a = '{{{{{{{{{{{{{{{{{{{{{{{{'\n",
        'a = """\n[[[[[[[[[[[[[[[[[[[[[\n"""\n',
        "a = '''\n{{{{{{{{{{{{{{{{{{{{{{{{\n'''\n",
        'a = "\\"[[[[[[[[[[[[[[[[[[[[[[[[[["\n',
        "# [[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[\n",
        "a = [1, 2] # [[[[[[[[[[[[[[[[[[[[[[[[[\n",
        '"a.b.c.d.e.f.g.h.i.j" = 1\n',
        "a = 1.2\nb = [1.5, 2.5, 3.5, 4.5, 5.5, 6.5, 7.5, 8.5, 9.5, 10.5]\n",
        "[[a.b.c.d.e.f.g.h]]\n",
        "a = [[[[[[[[[[1]]]]]]]]]]\n",
    ],
)
def test_the_nesting_scan_follows_strings_and_comments(text: str) -> None:
    _spec.check_nesting(text, "f.toml")


@pytest.mark.parametrize(
    "text",
    [
        "a = [[[[[[[[[[[1]]]]]]]]]]]\n",
        'a = """x"""", [[[[[[[[[[[1]]]]]]]]]]]\n',  # a closing quote run of four
        "a = '''x'''', [[[[[[[[[[[1]]]]]]]]]]]\n",
        'a = "x\\\\", [[[[[[[[[[[1]]]]]]]]]]]\n',  # an escaped backslash ends the string
        "a = [\n# comment ]]]]\n[[[[[[[[[[1]]]]]]]]]]]\n",
        "a = " + "{b = " * 11 + "1" + "}" * 11 + "\n",
        "a = " + "[{b = " * 6 + "1" + "}]" * 6 + "\n",
        "a.b.c.d.e.f.g.h.i = 1\n",
        'a = {"x".y.z.w.v.u.t.s.r = 1}\n',
    ],
)
def test_the_nesting_scan_is_not_fooled(text: str) -> None:
    with pytest.raises(_spec.ScenarioError):
        _spec.check_nesting(text, "f.toml")


def test_the_shipped_scenarios_pass_the_nesting_scan() -> None:
    for path in sorted(SHIPPED.glob("*.toml")):
        _spec.check_nesting(path.read_text(encoding="utf-8"), str(path))


def test_an_integer_of_5000_digits(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    refused(capsys, write(tmp_path, feed("rate = " + "9" * 5000)(GOOD)), "4300 digits")


# -- numbers, names and counts -----------------------------------------------------------

HOSTILE: list[tuple[str, Callable[[str], str], list[str]]] = [
    # what hung the runner
    ("publisher-rate-1e12", feed("rate = 1e12"), ["'feed'", "'rate'", "<= 1e+06"]),
    ("burst-of-1e12", feed("[[component.burst]]\nat = 0.5\ncount = 1000000000000"),
     ["'feed' [[burst]] #1", "'count'", "<= 5000000"]),
    ("queue-heartbeat-1e-6-ms", append(QUEUE + "heartbeat_ms = 1e-6\n"),
     ["'queue'", "'heartbeat_ms'", ">= 1"]),
    ("worker-heartbeat-1e-6-ms", append(WORKER + "heartbeat_ms = 1e-6\n"),
     ["'worker'", "'heartbeat_ms'", ">= 1"]),
    ("duration-1e9", head("duration = 1e9"), ["[scenario]", "'duration'", "<= 3600"]),
    ("clone-rate-1e12", append(CLONE.replace('snapshot = "tcp://*:5581"\n',
                                             'snapshot = "tcp://*:5581"\nrate = 1e12\n', 1)),
     ["'clone'", "'rate'", "<= 100000"]),
    ("client-rate-1e12", append(QUEUE, CLIENT + "rate = 1e12\n"), ["'orders'", "'rate'"]),
    ("client-attempts-1e9", append(QUEUE, CLIENT + "attempts = 1000000000\n"),
     ["'orders'", "'attempts'", "<= 100"]),
    ("client-timeout-1e-300", append(QUEUE, CLIENT + "timeout_ms = 1e-300\n"),
     ["'orders'", "'timeout_ms'", ">= 0.01"]),
    ("clone-client-timeout-1e-9", append(CLONE + "timeout_ms = 1e-9\n"),
     ["'clone-desk'", "'timeout_ms'", ">= 1"]),
    ("poll-1e-9-ms", append(CONFLATING + "poll_ms = 1e-9\n"), ["'strategy'", "'poll_ms'"]),
    # what crashed in the middle of the run or failed only after it
    ("rate-of-400-digits", feed("rate = " + "9" * 400), ["'rate'", "999...999"]),
    ("bound-of-400-digits", append('\n[[invariant]]\nkind = "bound"\nstream = "feed"\n'
                                   'metric = "sent"\nat_least = ' + "9" * 400 + "\n"),
     ["[[invariant]] bound", "'at_least'", "999...999"]),
    ("lognormal-sigma-1e6", link("{ model = 'lognormal', median_us = 50, sigma = 1e6 }"),
     ["[[link]] #1.latency", "'sigma'", "<= 4"]),
    ("max-quantity-2-70", append(QUEUE, CLIENT + f"max_quantity = {2**70}\n"),
     ["'orders'", "'max_quantity'"]),
    ("symbol-with-a-space", feed('symbols = ["AAPL", "BRK A"]'), ["'symbols'", "whitespace"]),
    # accepted before, absurd
    ("rate-nan", feed("rate = nan"), ["'rate'", "got nan"]),
    ("rate-inf", feed("rate = inf"), ["'rate'", "got inf"]),
    ("rate-negative", feed("rate = -5"), ["'rate'", ">= 0"]),
    ("duration-zero", head("duration = 0"), ["'duration'", "> 0"]),
    ("duration-inf", head("duration = inf"), ["'duration'"]),
    ("drain-too-long", in_scenario("drain = 3600"), ["'drain'", "duration + drain"]),
    ("drain-negative", in_scenario("drain = -1"), ["'drain'"]),
    ("seed-negative", in_scenario("seed = -1"), ["'seed'"]),
    ("seed-2-64", in_scenario(f"seed = {2**64}"), ["'seed'"]),
    ("delay-1e300-us", in_scenario("latency = { model = 'constant', delay_us = 1e300 }"),
     ["'delay_us'", "<= 6e+07"]),
    ("uniform-high-inf", link("{ model = 'uniform', low_us = 1, high_us = inf }"),
     ["'high_us'"]),
    ("normal-stddev-1e300", link("{ model = 'normal', mean_us = 50, stddev_us = 1e300 }"),
     ["'stddev_us'"]),
    ("empirical-too-many-samples",
     link("{ model = 'empirical', samples_us = [" + "1," * (MAX_SAMPLES + 1) + "] }"),
     ["'samples_us'", "1 to 100000"]),
    ("processing-1e300-us", append(SUBSCRIBER + "processing_us = 1e300\n"),
     ["'desk'", "'processing_us'"]),
    ("service-inf", append(WORKER + "service_us = inf\n"), ["'service_us'"]),
    ("liveness-1e9", append(WORKER + "liveness = 1000000000\n"), ["'liveness'", "<= 100"]),
    ("capital-1e300", append('\n[[component]]\nname = "risk"\nkind = "risk_server"\n'
                             'node = "r"\nbind = "tcp://*:5555"\ncapital = 1e300\n'),
     ["'risk'", "'capital'"]),
    ("percentile-1000", append('\n[[invariant]]\nkind = "latency"\nstream = "feed"\n'
                               "percentile = 1000\nmax_us = 10\n"),
     ["[[invariant]] latency", "'percentile'", "<= 100"]),
    ("fault-after-the-end", append('\n[[fault]]\nat = 100\nkind = "crash"\nnode = "exchange"\n'),
     ["[[fault]] #1", "'at'", "after the run ends at 2 s"]),
    ("burst-after-the-load", feed("[[component.burst]]\nat = 5\ncount = 10"),
     ["'feed'", "'burst'", "never be sent"]),
    ("sndhwm-2-40", feed(f"options = {{ sndhwm = {2**40} }}"), ["'options'", "32 bits"]),
    ("routing-id-of-1000-bytes", feed(f"options = {{ routing_id = '{'r' * 1000}' }}"),
     ["'options'", "1 to 255 bytes"]),
    ("name-of-200000-chars", lambda t: t.replace('name = "feed"', f'name = "{"f" * 200_000}"'),
     ["[[component]] #1", "'name'", "at most 100"]),
    ("name-with-escape-codes", lambda t: t.replace('name = "feed"', 'name = "f\\u001b[2Je"'),
     ["'name'", "printable"]),
    ("endpoint-of-100000-chars", lambda t: t.replace("tcp://*:5556", "tcp://" + "x" * 100_000),
     ["'bind'", "at most 256"]),
    ("description-of-100000-chars", in_scenario(f'description = "{"d" * 100_000}"'),
     ["'description'", "at most 1000"]),
    ("too-many-symbols", feed("symbols = [" + '"S",' * 1001 + "]"), ["'symbols'", "at most 1000"]),
    ("too-many-bursts", feed("[[component.burst]]\nat = 0.1\ncount = 1\n" * 1001),
     ["'feed'", "'burst'", "at most 1000"]),
    ("too-many-links",
     append(*(['\n[[link]]\na = "exchange"\nb = "exchange"\nlatency = { model = "constant", '
               "delay_us = 1 }\n"] * 4097)),
     ["'link'", "at most 4096"]),
    ("too-many-faults",
     append(*(['\n[[fault]]\nat = 0.5\nkind = "crash"\nnode = "exchange"\n'] * 1001)),
     ["'fault'", "at most 1000"]),
    ("too-many-invariants",
     append(*(['\n[[invariant]]\nkind = "bound"\nstream = "feed"\nmetric = "sent"\n'
               "at_least = 1\n"] * 1001)),
     ["'invariant'", "at most 1000"]),
    ("too-many-nodes",
     append(*(f'\n[[component]]\nname = "r{i}"\nkind = "risk_server"\nnode = "n{i}"\n'
              f'bind = "tcp://*:{6000 + i}"\n' for i in range(MAX_NODES))),
     ["'r63'", "'node'", "at most 64 nodes"]),
    ("too-many-process-nodes",
     append(*(f'\n[[component]]\nname = "r{i}"\nkind = "risk_server"\nnode = "n{i}"\n'
              f'bind = "tcp://*:{6000 + i}"\n\n[[node]]\nname = "n{i}"\nprocess = true\n'
              for i in range(17))),
     ["[[node]] 'n16'", "'process'", "at most 16"]),
    ("too-many-child-restarts",
     append('\n[[node]]\nname = "exchange"\nprocess = true\n',
            *(['\n[[fault]]\nat = 0.5\nkind = "restart"\nnode = "exchange"\n'] * 64)),
     ["[[fault]] #64", "'node'", "at most 64"]),
    # the estimated cost of the whole run
    ("burst-over-the-traced-budget", feed("[[component.burst]]\nat = 0.5\ncount = 2000000"),
     ["'feed'", "'burst'", f"{MAX_TRACED_EVENTS:,} allowed", "record_trace = false"]),
    ("burst-over-the-budget",
     lambda t: feed("[[component.burst]]\nat = 0.5\ncount = 5000000")(
         in_scenario("record_trace = false")(t)),
     ["'feed'", "'burst'", f"{MAX_EVENTS:,} allowed"]),
    ("fan-out-over-the-budget",
     lambda t: feed("rate = 100000")(in_scenario("record_trace = false")(t)).replace(
         "duration = 1.0", "duration = 10.0") + "".join(
             SUBSCRIBER.replace('"desk"', f'"desk{i}"') for i in range(5)),
     ["'feed'", "'rate'", "delivered to 5 subscriber(s)"]),
    ("heartbeats-over-the-budget", lambda t: append(QUEUE + "heartbeat_ms = 1\n", WORKER)(
         t.replace("duration = 1.0", "duration = 1000.0")),
     ["'heartbeat_ms'", "a heartbeat every 1 ms"]),
    ("ticks-over-the-budget", lambda t: t.replace(
         "duration = 1.0", "duration = 3000.0\nrecord_trace = false") + FEED_2,
     ["[scenario]", "'duration'", "ticks of 2 market_data_publisher(s)"]),
    ("unlimited-queues", lambda t: feed("rate = 100000\noptions = { sndhwm = 0 }")(
         t.replace("duration = 1.0", "duration = 10.0\nrecord_trace = false"))
     + SUBSCRIBER + "options = { rcvhwm = 0 }\n",
     ["'desk'", "'options'", "wait in queues", "0 (unlimited)"]),
]  # fmt: skip


@pytest.mark.parametrize(("edit", "needles"), [c[1:] for c in HOSTILE], ids=[c[0] for c in HOSTILE])
def test_a_hostile_setting_is_refused_before_the_run(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    edit: Callable[[str], str],
    needles: list[str],
) -> None:
    refused(capsys, write(tmp_path, edit(GOOD)), *needles)


def test_the_hostile_settings_edit_a_valid_file(tmp_path: Path) -> None:
    """GOOD and each table the cases add are valid on their own (so each case is
    refused for its setting, not for something else)."""
    scenario = load(write(tmp_path, GOOD + QUEUE + WORKER + CLIENT + CLONE + SUBSCRIBER
                          + CONFLATING))  # fmt: skip
    assert len(scenario.components) == 8


def components(count: int, *, inline: bool = True) -> str:
    """A scenario of ``count`` risk servers on one node."""
    if inline:
        items = ",".join(
            f'{{name="{i}",kind="risk_server",node="n",bind="b"}}' for i in range(count)
        )
        return f'component = [{items}]\n[scenario]\nname = "many"\nduration = 1.0\n'
    body = "".join(
        f'[[component]]\nname = "{i}"\nkind = "risk_server"\nnode = "n"\nbind = "b"\n'
        for i in range(count)
    )
    return '[scenario]\nname = "many"\nduration = 1.0\n' + body


def test_20000_components_are_refused_quickly(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The old loader's duplicate-name check was quadratic (8,000 components: 2.1 s)
    and then ran them all; the count is now checked before any component is read."""
    text = components(20_000)
    assert len(text.encode()) <= MAX_FILE_BYTES
    refused(capsys, write(tmp_path, text), "'component'", f"at most {MAX_COMPONENTS}")


def _profile_calls(data: dict[str, Any], limit: int) -> int:
    """Python calls made validating ``data`` (sys.setprofile events), at most ``limit``."""
    parsers = {kind: comp.parse for kind, comp in _runner.COMPONENTS.items()}
    checks = {kind: parse for kind, (parse, _) in _runner.INVARIANTS.items()}
    count = 0

    class TooMany(Exception):
        pass

    def profile(_frame: object, event: str, _arg: object) -> None:
        nonlocal count
        if event == "call":
            count += 1
            if count > limit:
                raise TooMany

    sys.setprofile(profile)
    try:
        _spec.parse_scenario(data, "many.toml", parsers, checks)
    except TooMany:
        pass
    finally:
        sys.setprofile(None)
    return count


def test_validation_is_linear_in_the_number_of_components(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Count the Python calls that validating 2,000 and 20,000 components makes: ten
    times the components must cost about ten times the calls (a quadratic check, such
    as the old duplicate-name scan, costs a hundred times). Counting calls, not time,
    keeps this exact on a loaded machine."""
    monkeypatch.setattr(_spec, "MAX_COMPONENTS", 100_000, raising=False)

    def data(count: int) -> dict[str, Any]:
        return {
            "scenario": {"name": "many", "duration": 1.0},
            "component": [
                {"name": f"c{i}", "kind": "risk_server", "node": "n", "bind": "b"}
                for i in range(count)
            ],
        }

    small = _profile_calls(data(2_000), limit=10**9)
    large = _profile_calls(data(20_000), limit=15 * small)
    assert large <= 12 * small, (small, large)


@pytest.mark.parametrize("inline", [True, False], ids=["inline", "tables"])
def test_many_components_load_within_the_bound(tmp_path: Path, inline: bool) -> None:
    scenario = load(write(tmp_path, components(MAX_COMPONENTS, inline=inline)))
    assert len(scenario.components) == MAX_COMPONENTS


def test_duplicate_names_are_still_found(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = components(10, inline=False) + components(1, inline=False).split("1.0\n", 1)[1]
    refused(capsys, write(tmp_path, text), "[[component]] '0'", "duplicate component name")


# -- the command line --------------------------------------------------------------------


@pytest.fixture
def scenario_file(tmp_path: Path) -> Path:
    return write(tmp_path, GOOD, "good.toml")


def _unwritable_dir(tmp_path: Path) -> Iterator[Path]:
    if os.geteuid() == 0:  # root writes anywhere but where the kernel says no
        yield Path("/sys")
        return
    directory = tmp_path / "read-only"
    directory.mkdir()
    directory.chmod(stat.S_IRUSR | stat.S_IXUSR)
    try:
        yield directory
    finally:
        directory.chmod(stat.S_IRWXU)


@pytest.fixture
def unwritable_dir(tmp_path: Path) -> Iterator[Path]:
    yield from _unwritable_dir(tmp_path)


@pytest.mark.parametrize("option", ["--trace", "--plot"])
def test_an_output_into_a_missing_directory_is_refused_before_the_run(
    scenario_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], option: str
) -> None:
    target = tmp_path / "no-such-dir" / "out"
    refused(capsys, scenario_file, option, "does not exist", argv=(option, str(target)))


@pytest.mark.parametrize("option", ["--trace", "--plot"])
def test_an_output_that_is_a_directory_is_refused(
    scenario_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], option: str
) -> None:
    refused(capsys, scenario_file, option, "is a directory", argv=(option, str(tmp_path)))


@pytest.mark.parametrize("option", ["--trace", "--plot"])
def test_an_output_that_cannot_be_written_is_refused(
    scenario_file: Path,
    unwritable_dir: Path,
    capsys: pytest.CaptureFixture[str],
    option: str,
) -> None:
    target = unwritable_dir / "out"
    refused(capsys, scenario_file, option, "cannot create", argv=(option, str(target)))
    assert not target.exists()


def test_an_output_under_a_file_is_refused(
    scenario_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = scenario_file / "out.json"
    refused(capsys, scenario_file, "--trace", "not a directory", argv=("--trace", str(target)))


def test_an_output_that_is_a_fifo_is_refused(
    scenario_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Opening a FIFO without a reader for writing blocks: refused before the run."""
    fifo = tmp_path / "trace.json"
    os.mkfifo(fifo)
    refused(capsys, scenario_file, "--trace", "FIFO", argv=("--trace", str(fifo)))


@pytest.mark.parametrize("option", ["--trace", "--plot"])
def test_an_output_that_is_the_scenario_file_is_refused(
    scenario_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], option: str
) -> None:
    """The old command ran, then overwrote the scenario with the trace (--trace) or
    failed on the .toml suffix with a traceback (--plot)."""
    text = scenario_file.read_text(encoding="utf-8")
    refused(capsys, scenario_file, option, "is the scenario file",
            argv=(option, str(scenario_file)))  # fmt: skip
    assert scenario_file.read_text(encoding="utf-8") == text


def test_trace_and_plot_into_the_same_file_are_refused(
    scenario_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    same = str(tmp_path / "out")
    refused(capsys, scenario_file, "--trace and --plot", "same file",
            argv=("--trace", same, "--plot", same))  # fmt: skip


def test_an_existing_output_is_kept_when_the_run_is_refused(
    scenario_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Checking an output path creates nothing and truncates nothing."""
    existing = tmp_path / "old.json"
    existing.write_text("keep me", encoding="utf-8")
    fresh = tmp_path / "fresh.png"
    bad = write(tmp_path, GOOD.replace("duration = 1.0", "duration = 0"), "bad.toml")
    refused(capsys, bad, "'duration'", argv=("--trace", str(existing), "--plot", str(fresh)))
    assert existing.read_text(encoding="utf-8") == "keep me"
    assert not fresh.exists()


def test_trace_on_zmq_is_refused_before_the_run(
    scenario_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status, out, err = run_cli(
        capsys, "run", str(scenario_file), "--backend", "zmq", "--trace", str(tmp_path / "t")
    )
    assert (status, out) == (2, "")
    assert_one_clear_message(err, "--trace", "sim backend only")


@pytest.mark.parametrize("seed", ["-1", str(2**64), "1e3", "nan"])
def test_a_seed_out_of_range_is_refused(
    scenario_file: Path, capsys: pytest.CaptureFixture[str], seed: str
) -> None:
    status, out, err = run_cli(capsys, "run", str(scenario_file), "--seed", seed)
    assert (status, out) == (2, "")
    assert "--seed" in err and "Traceback" not in err


def test_trace_of_a_run_too_large_to_trace_is_refused_before_the_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A scenario that may run untraced (record_trace = false) but not be traced."""
    text = in_scenario("record_trace = false")(GOOD) + "rate = 200000\n"
    path = write(tmp_path, text.replace("duration = 1.0", "duration = 10.0"))
    assert load(path).record_trace is False  # loads: 2 million events, untraced
    err = refused(capsys, path, "'rate'", f"{MAX_TRACED_EVENTS:,} allowed",
                  argv=("--trace", str(tmp_path / "trace.json")))  # fmt: skip
    assert "record_trace" in err
    assert not (tmp_path / "trace.json").exists()


def test_a_zmq_run_needing_more_open_files_than_allowed_is_refused(
    scenario_file: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    needed = _budget.open_files_needed(load(scenario_file))
    monkeypatch.setattr(_runner, "_open_files_limit", lambda: needed - 1)
    status, out, err = run_cli(capsys, "run", str(scenario_file), "--backend", "zmq")
    assert (status, out) == (2, "")
    assert_one_clear_message(err, str(scenario_file), "open files", f"({needed - 1})")


def test_a_report_that_cannot_be_written_is_one_message(scenario_file: Path) -> None:
    """stdout on a full disk (/dev/full): one message and exit 4 (an output failed after
    the run; it was 2, the status of an invalid file), not a traceback."""
    if not Path("/dev/full").exists():
        pytest.skip("needs /dev/full (Linux)")
    with open("/dev/full", "w", encoding="utf-8") as full:
        proc = run_child("run", str(scenario_file), "--json", stdout=full, stderr=subprocess.PIPE)
    assert proc.returncode == 4, proc.stderr
    assert_one_clear_message(proc.stderr, "cannot write the report", "No space left")


def test_max_events_raises_the_time_budget_on_purpose_and_only_that(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    long_run = write(
        tmp_path,
        feed("[[component.burst]]\nat = 0.5\ncount = 5000000")(
            in_scenario("record_trace = false")(GOOD)
        ),
    )
    refused(capsys, long_run, f"{MAX_EVENTS:,} allowed", "--max-events")
    assert len(load(long_run, max_events=10 * MAX_EVENTS).components) >= 1
    traced = write(tmp_path, feed("[[component.burst]]\nat = 0.5\ncount = 2000000")(GOOD))
    with pytest.raises(ScenarioError, match=f"{MAX_TRACED_EVENTS:,} allowed"):
        load(traced, max_events=10 * MAX_EVENTS)  # the trace's memory bound stays
    status, _, err = run_cli(capsys, "run", str(long_run), "--max-events", "0")
    assert status == 2
    assert "--max-events" in err
