"""The test suite on every supported interpreter: ``nox`` (or ``nox -s tests-3.13``).

Each session makes its own virtualenv with that interpreter (found on PATH as
``python3.11``, ``python3.12``, ``python3.13``), installs transportkit with its
development extra (every other extra, and the test tools; building the C accelerator
for that interpreter), and runs the README's test command, ``pytest``, passing on any
arguments: ``nox -s tests-3.12 -- -x -k golden``. The golden trace hashes in
``tests/scenarios/golden`` are shared by all three.

``nox -s tests_lowest`` (not run by default) runs the suite against the lowest
releases of the two core dependencies that ``pyproject.toml`` admits, on Python 3.11
(pyzmq 26.0 has no wheels for 3.13): ``nox -s tests_lowest -- tests/zmq_backend``.
"""

from __future__ import annotations

import nox

PYTHONS = ["3.11", "3.12", "3.13"]
LOWEST = ["pyzmq==26.0.0", "simpy==4.1.0"]
"""The lower bounds of ``dependencies`` in ``pyproject.toml``, pinned."""

nox.options.sessions = ["tests"]
nox.options.default_venv_backend = "venv"
nox.options.error_on_missing_interpreters = True


@nox.session(python=PYTHONS)
def tests(session: nox.Session) -> None:
    """Install transportkit with its dev extra and run pytest."""
    session.install("-q", "-e", ".[dev]")
    session.run("pytest", *session.posargs)


@nox.session(python="3.11")
def tests_lowest(session: nox.Session) -> None:
    """Run pytest with the core dependencies at their lower bounds."""
    session.install("-q", "-e", ".[dev]", *LOWEST)
    session.run("pytest", *session.posargs)
