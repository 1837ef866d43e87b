"""pytest plugin (registered as ``transportkit``): every backend, every seed, replays.

Every name the plugin gives pytest starts with ``tk_``, so it never takes over a
fixture, marker or option of the project under test (a fixture of its own called
``backend`` or ``harness`` is left alone).

Fixtures and markers:

- ``tk_backend``: a test that takes this fixture runs once per backend, with ids
  ``[sim]`` and ``[zmq]``; its value is the backend's name. Mark a test
  ``@pytest.mark.tk_backends("sim")`` to limit it to some backends.
- ``tk_harness``: a fresh :class:`~transportkit.testing.Harness` on the test's
  backend (``tk_backend``), closed after the test. Tests using Hypothesis open their
  own with :func:`~transportkit.testing.open_harness` per example instead.

For tests written with :func:`~transportkit.testing.sim_test`:

- ``--tk-seed=S`` runs exactly seed ``S`` of each selected ``@sim_test`` (the replay);
- ``--tk-seeds=N`` runs seeds 0 to N-1 instead of each test's own count (1 to
  1,000,000; tests listing their seeds keep them);
- a failing seed is shrunk (at most 200 re-runs and 5 s by default, the
  ``@sim_test(shrink=..., shrink_seconds=...)`` arguments); ``--tk-shrink=N`` makes it
  at most N re-runs in every test (0: no shrinking) and ``--tk-shrink-seconds=S`` at
  most S real seconds;
- a failing seed's report has a section with its replay line
  (``replay: pytest <test> --tk-seed=S``), the shrunk run (``shrunk: FIFO except step
  11 (index 1), and a 1 s partition between desk and exchange at t=4.0``) and its
  replay line (``replay shrunk: pytest <test> --tk-replay=<folder>/shrunk.json``), the
  last 20 trace events before the failure and the failure folder,
  ``.transportkit/failures/<test id>-<seed>/`` under pytest's rootdir, holding
  ``trace.json`` (Perfetto), ``schedule.json``, ``faults.json``, ``failure.json`` and
  ``shrunk.json``. The newest 50 folders are kept. The ini options
  ``tk_failures_dir`` and ``tk_keep_failures`` change the place and the count. The end
  of the run lists every failing seed's replay lines again (and the junit XML has them
  as the test's ``tk_replay`` and ``tk_replay_shrunk`` properties);
- ``--tk-replay=PATH`` runs the selected ``@sim_test`` once with the seed, schedule and
  faults of a ``shrunk.json`` or of a failure folder (its original run), and skips the
  other ``@sim_test`` items (those of another test, and every zmq run). A replay
  saves no failure folder and does not shrink.
"""

from __future__ import annotations

import math
from collections.abc import Generator, Iterator
from typing import Any

import pytest

from transportkit.testing._harness import BACKENDS, Harness, open_harness
from transportkit.testing._simtest import (
    MAX_SEEDS,
    MAX_SHRINK_RUNS,
    REPLAY_ATTRIBUTE,
    REPORT_ATTRIBUTE,
)
from transportkit.testing._simtest_failures import (
    DEFAULT_FAILURES_DIR,
    DEFAULT_KEEP_FAILURES,
    load_replay,
)


def pytest_addoption(parser: pytest.Parser) -> None:
    """Register the ``--tk-*`` options and the failure-folder ini options."""
    group = parser.getgroup("transportkit", "transportkit simulation tests (@sim_test)")
    group.addoption(
        "--tk-seed",
        type=int,
        default=None,
        metavar="S",
        help="run exactly seed S of each @sim_test (replay a failure)",
    )
    group.addoption(
        "--tk-seeds",
        type=int,
        default=None,
        metavar="N",
        help=f"run seeds 0..N-1 of each @sim_test that counts its seeds (1..{MAX_SEEDS})",
    )
    group.addoption(
        "--tk-replay",
        default=None,
        metavar="PATH",
        help="run the selected @sim_test once with the seed, schedule and faults of a "
        "shrunk.json or of a failure folder (its original run)",
    )
    group.addoption(
        "--tk-shrink",
        type=int,
        default=None,
        metavar="N",
        help=f"shrink a failing @sim_test seed with at most N re-runs (0..{MAX_SHRINK_RUNS}; "
        "0: do not shrink); default: each test's shrink= (200)",
    )
    group.addoption(
        "--tk-shrink-seconds",
        type=float,
        default=None,
        metavar="S",
        help="shrink a failing @sim_test seed for at most S real seconds; "
        "default: each test's shrink_seconds= (5)",
    )
    parser.addini(
        "tk_failures_dir",
        f"where @sim_test failure folders go, from the rootdir (default {DEFAULT_FAILURES_DIR})",
        default=DEFAULT_FAILURES_DIR,
    )
    parser.addini(
        "tk_keep_failures",
        f"how many @sim_test failure folders to keep, newest first "
        f"(default {DEFAULT_KEEP_FAILURES})",
        default=str(DEFAULT_KEEP_FAILURES),
    )


def pytest_configure(config: pytest.Config) -> None:
    """Register the ``tk_backends`` marker and check the options."""
    config.addinivalue_line(
        "markers", "tk_backends(*names): run this test only on the named backends (sim, zmq)"
    )
    count = config.getoption("tk_seeds", None)
    if count is not None and not 1 <= count <= MAX_SEEDS:
        raise pytest.UsageError(f"--tk-seeds must be 1 to {MAX_SEEDS}, got {count}")
    keep = str(config.getini("tk_keep_failures")).strip()
    if not keep.isdigit():
        raise pytest.UsageError(f"tk_keep_failures must be a count (0 or more), got {keep!r}")
    runs = config.getoption("tk_shrink", None)
    if runs is not None and not 0 <= runs <= MAX_SHRINK_RUNS:
        raise pytest.UsageError(f"--tk-shrink must be 0 to {MAX_SHRINK_RUNS}, got {runs}")
    seconds = config.getoption("tk_shrink_seconds", None)
    if seconds is not None and not (seconds > 0 and math.isfinite(seconds)):
        raise pytest.UsageError(f"--tk-shrink-seconds must be positive, got {seconds}")
    path = config.getoption("tk_replay", None)
    if path is not None:
        for other in ("tk_seed", "tk_seeds"):
            if config.getoption(other, None) is not None:
                flag = "--" + other.replace("_", "-")
                raise pytest.UsageError(f"--tk-replay replays one run: it excludes {flag}")
        try:
            record = load_replay(path)
        except ValueError as exc:
            raise pytest.UsageError(f"--tk-replay={path}: {exc}") from None
        setattr(config, REPLAY_ATTRIBUTE, record)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Parametrize ``tk_backend`` over the backends the test allows."""
    if "tk_backend" not in metafunc.fixturenames:
        return
    spec = getattr(metafunc.function, "_transportkit_sim_test", None)
    allowed = BACKENDS if spec is None else spec.backends
    marker = metafunc.definition.get_closest_marker("tk_backends")
    names = [b for b in BACKENDS if b in allowed and (marker is None or b in marker.args)]
    metafunc.parametrize("tk_backend", names, ids=names, scope="session")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Add a failing seed's replay line, trace tail and folder to its report."""
    report = yield
    excinfo = call.excinfo
    if excinfo is not None:
        found: Any = getattr(excinfo.value, REPORT_ATTRIBUTE, None)
        if found is not None:
            seed, replay, text, replay_shrunk = found
            report.sections.append((f"transportkit sim_test: seed {seed} failed", text))
            report.user_properties.append(("tk_replay", replay))
            if replay_shrunk:
                report.user_properties.append(("tk_replay_shrunk", replay_shrunk))
    return report


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """List the replay commands of every failing ``@sim_test`` seed at the end."""
    labels = {"tk_replay": "replay", "tk_replay_shrunk": "replay shrunk"}
    replays = [
        f"{labels[name]}: {value}"
        for report in terminalreporter.stats.get("failed", [])
        for name, value in getattr(report, "user_properties", ())
        if name in labels
    ]
    if replays:
        terminalreporter.section("transportkit: replay the failing seeds")
        for line in replays:
            terminalreporter.line(line)


@pytest.fixture
def tk_harness(tk_backend: str) -> Iterator[Harness]:
    """A fresh harness on the test's backend, closed after the test."""
    with open_harness(tk_backend) as h:
        yield h
