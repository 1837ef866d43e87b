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
- a failing seed's report has a section with its replay line
  (``replay: pytest <test> --tk-seed=S``), the last 20 trace events before the
  failure and the failure folder, ``.transportkit/failures/<test id>-<seed>/`` under
  pytest's rootdir, holding ``trace.json`` (Perfetto), ``schedule.json``,
  ``faults.json`` and ``failure.json``. The newest 50 folders are kept. The ini
  options ``tk_failures_dir`` and ``tk_keep_failures`` change the place and the count.
  The end of the run lists every failing seed's replay line again (and the junit XML
  has it as the test's ``tk_replay`` property).
"""

from __future__ import annotations

from collections.abc import Generator, Iterator
from typing import Any

import pytest

from transportkit.testing._harness import BACKENDS, Harness, open_harness
from transportkit.testing._simtest import MAX_SEEDS, REPORT_ATTRIBUTE
from transportkit.testing._simtest_failures import DEFAULT_FAILURES_DIR, DEFAULT_KEEP_FAILURES


def pytest_addoption(parser: pytest.Parser) -> None:
    """Register ``--tk-seed``, ``--tk-seeds`` and the failure-folder ini options."""
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
            seed, replay, text = found
            report.sections.append((f"transportkit sim_test: seed {seed} failed", text))
            report.user_properties.append(("tk_replay", replay))
    return report


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """List the replay command of every failing ``@sim_test`` seed at the end."""
    replays = [
        value
        for report in terminalreporter.stats.get("failed", [])
        for name, value in getattr(report, "user_properties", ())
        if name == "tk_replay"
    ]
    if replays:
        terminalreporter.section("transportkit: replay the failing seeds")
        for replay in replays:
            terminalreporter.line(f"replay: {replay}")


@pytest.fixture
def tk_harness(tk_backend: str) -> Iterator[Harness]:
    """A fresh harness on the test's backend, closed after the test."""
    with open_harness(tk_backend) as h:
        yield h
