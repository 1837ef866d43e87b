"""The test suite on every supported interpreter: ``nox`` (or ``nox -s tests-3.13``).

Each session makes its own virtualenv with that interpreter (found on PATH as
``python3.11``, ``python3.12``, ``python3.13``), installs transportkit with its test
extras (building the C accelerator for that interpreter), and runs the README's test
command, ``pytest``, passing on any arguments: ``nox -s tests-3.12 -- -x -k golden``.
The golden trace hashes in ``tests/scenarios/golden`` are shared by all three.
"""

from __future__ import annotations

import nox

PYTHONS = ["3.11", "3.12", "3.13"]

nox.options.sessions = ["tests"]
nox.options.default_venv_backend = "venv"
nox.options.error_on_missing_interpreters = True


@nox.session(python=PYTHONS)
def tests(session: nox.Session) -> None:
    """Install transportkit with its test extras and run pytest."""
    session.install("-q", "-e", ".[test]")
    session.run("pytest", *session.posargs)
