"""The ``peers`` figure: transportkit's simulator against other deterministic-simulation
libraries for asyncio (seedloop, simloop, simloom), on the same three workloads.

Every measurement runs in a fresh process (:mod:`transportkit._bench._peers_worker`),
so no library pays for another's imports, caches or garbage; the variants of a
workload run in interleaved rounds, and a ratio is the median over rounds of
``peer wall time / transportkit wall time`` (higher: transportkit faster).

transportkit runs in two modes, FIFO (the default scheduler) and exploring
(``scheduler="random"``). The peers run in the modes they have: seedloop is FIFO only,
simloop's only scheduler is seeded (a random choice among ready callbacks, like
transportkit's exploring mode), simloom's default is a random walk (it has no FIFO
mode). A peer that cannot be imported by the worker interpreter (not installed; all
three need Python >= 3.12) is reported absent with the reason, and its ratios and
target rows are left out.

The echo workload uses PAIR sockets over tcp on transportkit: the peers offer a
point-to-point connection (simloop's and simloom's asyncio streams) or an addressed
datagram endpoint (seedloop), with no request/reply state machine and no routing
envelope, and PAIR is the ZeroMQ socket of that shape.
"""

from __future__ import annotations

import functools
import json
import subprocess
import sys
from typing import Any, Final

from transportkit._bench._common import (
    BenchConfig,
    check_target,
    interleaved,
    median,
    paired_ratio,
    ratio,
)
from transportkit._bench._peers_worker import LATENCY_S, SUBSCRIBERS, expected_events

__all__ = ["TARGETS", "checks", "format_lines", "peer_status", "run"]

TARGETS: Final[dict[str, tuple[str, float]]] = {
    "peers_vs_seedloop": (">=", 1.5),
    "peers_explore_vs_simloop": (">=", 3.0),
}

PEERS: Final = ("seedloop", "simloop", "simloom")

VARIANTS: Final[dict[str, tuple[str, str]]] = {
    "seedloop": ("seedloop", "fifo"),
    "tk_fifo": ("tk", "fifo"),
    "tk_explore": ("tk", "explore"),
    "simloop": ("simloop", "explore"),
    "simloom": ("simloom", "explore"),
}
"""Variant name -> (library, mode), in the order of a round: each target's pair is
adjacent (seedloop next to tk FIFO, tk exploring next to simloop)."""

RATIOS: Final[dict[str, tuple[str, str]]] = {
    "tk_fifo_vs_seedloop": ("tk_fifo", "seedloop"),
    "tk_explore_vs_simloop": ("tk_explore", "simloop"),
    "tk_explore_vs_simloom": ("tk_explore", "simloom"),
    "tk_fifo_vs_simloop": ("tk_fifo", "simloop"),
    "tk_fifo_vs_simloom": ("tk_fifo", "simloom"),
}
"""Ratio name -> (transportkit variant, peer variant): peer wall / transportkit wall."""

_TARGET_RATIOS: Final = {
    "peers_vs_seedloop": ("tk_fifo_vs_seedloop", "seedloop"),
    "peers_explore_vs_simloop": ("tk_explore_vs_simloop", "simloop"),
}

MODE_NAMES: Final = {
    "seedloop": "FIFO (its only mode)",
    "tk_fifo": "FIFO (default scheduler)",
    "tk_explore": 'exploring (scheduler="random")',
    "simloop": "seeded scheduling (its only mode)",
    "simloom": "random walk (default; it has no FIFO mode)",
}

_PROBE: Final = """
import json, sys
from importlib import metadata
out = {}
for name in %r:
    try:
        __import__(name)
        out[name] = {"available": True, "version": metadata.version(name), "reason": ""}
    except Exception as exc:
        error = type(exc).__name__ + ": " + str(exc)
        out[name] = {"available": False, "version": "", "error": error}
print(json.dumps({"python": sys.version.split()[0], "peers": out}))
"""


def absence_reason(python_version: str, error: str) -> str:
    """Why a peer cannot run, for the report: the Python it needs, or the import error."""
    major_minor = tuple(int(part) for part in python_version.split(".")[:2])
    if major_minor < (3, 12):
        return f"not installed (needs Python >= 3.12); the worker runs Python {python_version}"
    if error.startswith("ModuleNotFoundError"):
        return "not installed (pip install 'transportkit[bench]')"
    return f"cannot be imported ({error})"


def _python(config: BenchConfig) -> str:
    return config.peers_python or sys.executable


def peer_status(config: BenchConfig) -> dict[str, Any]:
    """Which peers the worker interpreter can import: ``python`` (its version) and
    ``peers`` (name -> ``available``, ``version``, ``reason``).

    Raises:
        RuntimeError: the worker interpreter did not answer (not found, crashed, or
            over ``peers_run_timeout_s``).
    """
    try:
        done = subprocess.run(
            [_python(config), "-c", _PROBE % (PEERS,)],
            capture_output=True,
            text=True,
            timeout=config.peers_run_timeout_s,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise RuntimeError(f"the peers' interpreter {_python(config)!r} failed: {exc}") from exc
    if done.returncode != 0:
        raise RuntimeError(
            f"the peers' interpreter {_python(config)!r} failed: {done.stderr.strip()}"
        )
    status: dict[str, Any] = json.loads(done.stdout)
    for info in status["peers"].values():
        if not info["available"]:
            info["reason"] = absence_reason(status["python"], info.pop("error"))
    return status


def _measure(config: BenchConfig, lib: str, workload: str, n: int, mode: str) -> dict[str, Any]:
    cmd = [_python(config), "-m", "transportkit._bench._peers_worker", lib, workload, str(n), mode]
    try:
        done = subprocess.run(
            cmd, capture_output=True, text=True, timeout=config.peers_run_timeout_s, check=False
        )
    except subprocess.TimeoutExpired as exc:
        raise RuntimeError(
            f"peers: {lib} {workload} ({mode}) ran over {config.peers_run_timeout_s} s"
        ) from exc
    if done.returncode != 0:
        raise RuntimeError(f"peers: {lib} {workload} ({mode}) failed: {done.stderr.strip()}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    if result["events"] != result["expected"]:  # the worker checks too; never trust one side
        raise RuntimeError(
            f"peers: {lib} {workload} counted {result['events']} of {result['expected']}"
        )
    return result


def _counts(config: BenchConfig) -> dict[str, int]:
    return {
        "echo": config.peers_echo_round_trips,
        "fanout": config.peers_fanout_messages,
        "timers": config.peers_timer_wakeups,
    }


def run(config: BenchConfig) -> dict[str, Any]:
    """Measure every workload on transportkit (both modes) and on every importable peer.

    Raises:
        RuntimeError: a run failed, ran over ``peers_run_timeout_s``, or counted other
            than what it sent (a message missing).
    """
    status = peer_status(config)
    available = {name for name, info in status["peers"].items() if info["available"]}
    variants = {
        name: (lib, mode)
        for name, (lib, mode) in VARIANTS.items()
        if lib == "tk" or lib in available
    }
    workloads: dict[str, Any] = {}
    for workload, n in _counts(config).items():
        runs = interleaved(
            {
                name: functools.partial(_measure, config, lib, workload, n, mode)
                for name, (lib, mode) in variants.items()
            },
            config.rounds,
        )
        walls = {name: [r["wall_s"] for r in rs] for name, rs in runs.items()}
        expected = expected_events(workload, n)
        workloads[workload] = {
            "n": n,
            "expected_events": expected,
            "events": {name: rs[0]["events"] for name, rs in runs.items()},
            "wall_s": walls,
            "median_wall_s": {name: median(w) for name, w in walls.items()},
            "events_per_s": {name: ratio(expected, median(w)) for name, w in walls.items()},
            "virtual_s": {name: rs[0]["virtual_s"] for name, rs in runs.items()},
            "ratios": {
                rname: paired_ratio(walls[peer], walls[tk])
                for rname, (tk, peer) in RATIOS.items()
                if tk in walls and peer in walls
            },
        }
    return {
        "python": status["python"],
        "peers": status["peers"],
        "modes": {name: MODE_NAMES[name] for name in variants},
        "latency_us": LATENCY_S * 1e6,
        "subscribers": SUBSCRIBERS,
        "echo_sockets": "PAIR over tcp",
        "rounds": config.rounds,
        "workloads": workloads,
    }


_TITLES: Final = {
    "echo": "echo, {n:,} lockstep round trips",
    "fanout": "fan-out, 1 publisher to {s} subscribers, {n:,} messages each",
    "timers": "timers, 100 tasks, {n:,} wake-ups",
}


def format_lines(figure: dict[str, Any]) -> list[str]:
    """The figure as Markdown lines: the peers, one row per workload and variant, and
    the paired ratios (peer wall / transportkit wall).
    """
    if "workloads" not in figure:
        return []
    lines = [
        f"### Deterministic-simulation peers ({figure['latency_us']:.0f} us one-way latency; "
        f"worker Python {figure['python']}; interleaved rounds: {figure['rounds']}, "
        "each run in a fresh process)",
        "",
    ]
    for name, info in figure["peers"].items():
        if info["available"]:
            lines.append(f"- {name} {info['version']}: {MODE_NAMES[name]}")
        else:
            lines.append(f"- {name}: {info['reason']}")
    lines += [
        f"- transportkit: {MODE_NAMES['tk_fifo']} and {MODE_NAMES['tk_explore']}; "
        f"echo over {figure['echo_sockets']}",
        "",
        "| workload | variant | mode | median wall s | events/s | events | virtual s |",
        "|---|---|---|---:|---:|---:|---:|",
    ]
    for workload, fig in figure["workloads"].items():
        title = _TITLES[workload].format(n=fig["n"], s=figure["subscribers"])
        for i, name in enumerate(fig["median_wall_s"]):
            lines.append(
                f"| {title if i == 0 else ''} | {name} | {figure['modes'][name]} | "
                f"{fig['median_wall_s'][name]:.3f} | {fig['events_per_s'][name]:,.0f} | "
                f"{fig['events'][name]:,} | {fig['virtual_s'][name]:.3f} |"
            )
    names = [r for r in RATIOS if any(r in f["ratios"] for f in figure["workloads"].values())]
    if names:
        lines += [
            "",
            "Paired ratios, peer wall / transportkit wall (median of rounds; higher: "
            "transportkit faster):",
            "",
            "| workload | " + " | ".join(names) + " |",
            "|---|" + "---:|" * len(names),
        ]
        for workload, fig in figure["workloads"].items():
            cells = " | ".join(
                f"{fig['ratios'][r]:.2f}" if r in fig["ratios"] else "" for r in names
            )
            lines.append(f"| {workload} | {cells} |")
    else:
        lines += ["", "No peer could run, so no ratios (see above)."]
    return [*lines, ""]


def checks(figure: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per workload and target whose peer ran; none for an absent peer (the
    figure's text says why it is absent).
    """
    rows: list[dict[str, Any]] = []
    for target, (rname, peer) in _TARGET_RATIOS.items():
        if not figure.get("peers", {}).get(peer, {}).get("available"):
            continue
        tk_variant = RATIOS[rname][0]
        for workload, fig in figure["workloads"].items():
            rows.append(
                check_target(
                    TARGETS, target, f"{workload} {tk_variant}/{peer}", fig["ratios"][rname]
                )
            )
    return rows
