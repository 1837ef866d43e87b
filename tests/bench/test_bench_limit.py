"""The ``limit`` figure: the C program builds, measures, never hangs, and is skipped cleanly.

No timing is asserted (the machine is shared): the counts, the shape, the skip.
"""

from __future__ import annotations

import math
import shutil
import subprocess
from collections.abc import Iterator
from importlib import resources
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("hdrh")

from transportkit._bench import _fig_limit
from transportkit._bench import run as run_bench
from transportkit._bench._common import BenchConfig
from transportkit._bench._report import format_report

TINY = BenchConfig.quick(rounds=1, limit_samples=50, warmup=5, limit_messages=300, timeout_s=10.0)

needs_cc = pytest.mark.skipif(_fig_limit.find_compiler() is None, reason="no C compiler")


@pytest.fixture(scope="module")
def program(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if _fig_limit.find_compiler() is None:
        pytest.skip("no C compiler")
    build = _fig_limit.build_program(tmp_path_factory.mktemp("limit"))
    assert build.program is not None, build.reason
    return build.program


@pytest.fixture(scope="module")
def figure() -> dict[str, Any]:
    if _fig_limit.find_compiler() is None:
        pytest.skip("no C compiler")
    return _fig_limit.run(TINY)


@needs_cc
def test_the_program_builds_against_the_libzmq_pyzmq_loaded(figure: dict[str, Any]) -> None:
    assert figure["built"] is True
    assert figure["cflags"] == "-O2 -Wall -Werror"
    assert Path(figure["libzmq"]).name.startswith("libzmq")
    assert Path(figure["libzmq"]).exists()


@needs_cc
def test_round_trip_shape_and_counts(figure: dict[str, Any]) -> None:
    rt = figure["round_trip"]
    assert set(rt["absolute"]) == {"c", "raw", "tk"}
    assert set(rt["ratios"]) == {"tk_vs_c", "raw_vs_c"}
    for row in (*rt["absolute"].values(), *rt["ratios"].values()):
        assert set(row) == {"p50_us", "p99_us"}
        assert all(math.isfinite(v) and v > 0 for v in row.values())
    # every client made exactly the round trips asked for, the C one included
    assert rt["round_trips"] == dict.fromkeys(("c", "raw", "tk"), TINY.limit_samples * TINY.rounds)


@needs_cc
def test_throughput_shape_and_counts(figure: dict[str, Any]) -> None:
    tp = figure["throughput"]
    assert set(tp["msgs_per_s"]) == {"c", "raw", "tk"}
    assert all(v > 0 for v in tp["msgs_per_s"].values())
    assert set(tp["ratios"]) == {"tk_vs_c", "raw_vs_c"}
    sent = TINY.limit_messages * TINY.rounds
    for received in tp["received"].values():
        assert received == {"messages": sent, "bytes": sent * 1024, "runs": TINY.rounds}


@needs_cc
def test_report_rows_and_targets(figure: dict[str, Any]) -> None:
    rows = _fig_limit.checks(figure)
    assert [r["target"] for r in rows] == ["limit_rtt_p50", "limit_throughput"]
    assert all(math.isfinite(r["value"]) for r in rows)
    text = "\n".join(_fig_limit.format_lines(figure))
    assert "| tk |" in text and "| c |" in text and "REP echo" in text


@needs_cc
def test_the_client_times_out_when_no_peer_answers(program: Path, tmp_path: Path) -> None:
    endpoint = f"ipc://{tmp_path}/nobody.ipc"
    result = subprocess.run(
        [str(program), "rtt", endpoint, "100", "0", "10", "200"],
        capture_output=True,
        text=True,
        timeout=20,
        check=False,
    )
    assert result.returncode == 3
    assert "timed out" in result.stderr


@needs_cc
def test_the_receiver_times_out_when_the_sender_dies(program: Path, tmp_path: Path) -> None:
    endpoint = f"ipc://{tmp_path}/pull.ipc"
    result = subprocess.run(
        [str(program), "recv", endpoint, "10", "200"],
        capture_output=True,
        text=True,
        timeout=20,
        check=False,
    )
    assert result.returncode == 3
    assert result.stdout.startswith("ready ipc://")
    assert "probe recv: timed out" in result.stderr


@needs_cc
def test_the_echo_peer_ends_when_its_stdin_closes(program: Path, tmp_path: Path) -> None:
    with subprocess.Popen(
        [str(program), "echo", f"ipc://{tmp_path}/echo.ipc", "1000"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    ) as proc:
        assert proc.stdout is not None and proc.stdin is not None
        assert proc.stdout.readline().startswith("ipc://")
        proc.stdin.close()
        assert proc.wait(10) == 0


@needs_cc
def test_usage_errors_exit_2(program: Path) -> None:
    for args in ([], ["rtt", "ipc://x"], ["send", "ipc://x", "-1", "10", "100"]):
        result = subprocess.run([str(program), *args], capture_output=True, timeout=10, check=False)
        assert result.returncode == 2


@pytest.fixture
def no_compiler(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    monkeypatch.setenv("CC", "/bin/false")
    empty = tmp_path / "bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    yield


def test_a_failing_compiler_skips_the_figure(no_compiler: None) -> None:
    figure = _fig_limit.run(TINY)
    assert figure["built"] is False
    assert figure["skipped"].startswith("/bin/false failed (exit 1)")
    assert "round_trip" not in figure
    rows = _fig_limit.checks(figure)
    assert [r["met"] for r in rows] == [False, False]
    assert all(math.isnan(r["value"]) and r["figure"].startswith("skipped") for r in rows)
    assert _fig_limit.format_lines(figure)[2].startswith("Skipped: /bin/false failed")


def test_no_compiler_on_path_skips_and_the_bench_goes_on(
    no_compiler: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CC")
    assert _fig_limit.find_compiler() is None
    report = run_bench(TINY, only=["limit"])
    assert report["limit"]["skipped"] == "no C compiler ($CC unset, no cc or gcc on PATH)"
    assert "Skipped: no C compiler" in format_report(report)


def test_a_finder_that_finds_nothing_skips() -> None:
    def builder(out: Path) -> _fig_limit.Build:
        return _fig_limit.build_program(out, compiler=lambda: None)

    figure = _fig_limit.run(TINY, builder=builder)
    assert figure == {
        "built": False,
        "compiler": "",
        "libzmq": "",
        "cflags": "-O2 -Wall -Werror",
        "skipped": "no C compiler ($CC unset, no cc or gcc on PATH)",
    }


def test_the_c_source_ships_in_the_package() -> None:
    source = resources.files("transportkit._bench").joinpath(_fig_limit.SOURCE)
    assert "zmq_send" in source.read_text()


@pytest.mark.slow
@pytest.mark.timeout(600)  # two processes under memcheck
@pytest.mark.skipif(shutil.which("valgrind") is None, reason="no valgrind")
def test_the_program_is_clean_under_memcheck(program: Path, tmp_path: Path) -> None:
    memcheck = ["valgrind", "--tool=memcheck", "--error-exitcode=9", "--leak-check=full", "-q"]
    endpoint = f"ipc://{tmp_path}/memcheck.ipc"
    with subprocess.Popen(
        [*memcheck, str(program), "echo", endpoint, "5000"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as peer:
        assert peer.stdout is not None and peer.stdin is not None
        resolved = peer.stdout.readline().strip()
        client = subprocess.run(
            [*memcheck, str(program), "rtt", resolved, "100", "5", "50", "5000"],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        peer.stdin.close()
        assert peer.wait(60) == 0, peer.stderr.read() if peer.stderr else ""
    assert client.returncode == 0, client.stderr
    assert len(client.stdout.split()) == 50
