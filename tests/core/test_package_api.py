"""The package's public names: exported, documented, and backend-free."""

from __future__ import annotations

import inspect
import subprocess
import sys

import transportkit
import transportkit.patterns
import transportkit.scenario
import transportkit.sim_backend
import transportkit.testing
import transportkit.zmq_backend

PACKAGES = [
    transportkit,
    transportkit.sim_backend,
    transportkit.zmq_backend,
    transportkit.testing,
    transportkit.patterns,
    transportkit.scenario,
]


def test_all_lists_exactly_the_public_names_each_package_defines() -> None:
    for package in PACKAGES:
        exported = set(package.__all__)
        public = {n for n in vars(package) if not n.startswith("_") and n != "annotations"}
        modules = {n for n in public if inspect.ismodule(getattr(package, n))}
        assert exported == public - modules | ({"__version__"} & exported), package.__name__


def test_every_public_class_and_function_has_a_docstring() -> None:
    for package in PACKAGES:
        for name in package.__all__:
            obj = getattr(package, name)
            if inspect.isclass(obj) or inspect.isfunction(obj):
                assert inspect.getdoc(obj), f"{package.__name__}.{name} has no docstring"


def test_interfaces_import_no_backend() -> None:
    code = (
        "import sys, transportkit; "
        "bad = [m for m in ('zmq', 'simpy') if m in sys.modules]; "
        "print(','.join(bad))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
