"""Memory checkers on the C accelerator (slow: ``pytest -m slow tests/zmq_backend``).

- AddressSanitizer: the extension is built again with ``-fsanitize=address`` in a
  temporary directory, and the accelerator's tests (with the signal scenarios and the
  frame contract) run with it: ``sitecustomize`` puts it in ``sys.modules`` in place
  of the installed one, in the test process and in every child, and ``libasan`` is
  preloaded, since the interpreter is not built with it. ASan checks the extension's
  own memory accesses; it does not see what libzmq (not instrumented) does with a
  freed socket, and its quarantine keeps a freed socket's memory from being reused,
  so the use-after-free of a closed socket is not caught this way.
- valgrind memcheck sees every access, libzmq's too: the signal scenarios run under
  it on both paths, and no invalid access may involve libzmq, pyzmq or the extension.
  Before the fix of the closed-socket handling it reported ``Invalid read of size 4
  at zmq_msg_recv ... inside a block of size 1,880 free'd`` by libzmq's reaper.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from transportkit.zmq_backend import _accel

pytestmark = pytest.mark.slow

HERE = Path(__file__).parent
ROOT = HERE.parent.parent
SOURCE = Path(_accel.__file__).with_name("_accel_c.c")
MODULE = "transportkit.zmq_backend._accel_c"

SITECUSTOMIZE = f'''
"""Load the extension named by TK_TEST_ACCEL_SO in place of the installed one."""
import importlib.util
import os
import sys

_path = os.environ.get("TK_TEST_ACCEL_SO")
if _path:
    _spec = importlib.util.spec_from_file_location("{MODULE}", _path)
    _module = importlib.util.module_from_spec(_spec)
    _spec.loader.exec_module(_module)
    sys.modules["{MODULE}"] = _module
'''


def _libasan(gcc: str) -> str | None:
    found = subprocess.run(
        [gcc, "-print-file-name=libasan.so"], capture_output=True, text=True, check=False
    ).stdout.strip()
    return found if os.path.isabs(found) and os.path.exists(found) else None


@pytest.fixture(scope="module")
def asan_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    gcc = shutil.which("gcc")
    if gcc is None:
        pytest.skip("gcc is not installed: cannot build the extension with AddressSanitizer")
    libasan = _libasan(gcc)
    if libasan is None:
        pytest.skip("gcc has no libasan here (install libasan, e.g. the libasan8 package)")
    out = tmp_path_factory.mktemp("asan")
    target = out / f"_accel_c{sysconfig.get_config_var('EXT_SUFFIX')}"
    include = sysconfig.get_paths()["include"]
    flags = ["-shared", "-fPIC", "-g", "-O1", "-fno-omit-frame-pointer", "-fsanitize=address"]
    subprocess.run([gcc, *flags, f"-I{include}", str(SOURCE), "-o", str(target)], check=True)
    (out / "sitecustomize.py").write_text(SITECUSTOMIZE)
    env = dict(os.environ)
    env.pop("TRANSPORTKIT_PURE_PYTHON", None)
    env["PYTHONPATH"] = os.pathsep.join([str(out), *filter(None, [env.get("PYTHONPATH")])])
    env["TK_TEST_ACCEL_SO"] = str(target)
    env["LD_PRELOAD"] = libasan
    # Python itself "leaks" at exit; any other error ends the process with status 1
    # and is written to asan.<pid> in the directory (pytest would swallow stderr).
    (out / "reports").mkdir()
    env["ASAN_OPTIONS"] = f"detect_leaks=0:halt_on_error=1:log_path={out / 'reports' / 'asan'}"
    return env


def _asan_reports(env: dict[str, str]) -> str:
    reports = Path(env["TK_TEST_ACCEL_SO"]).parent / "reports"
    return "\n".join(path.read_text(errors="replace") for path in sorted(reports.iterdir()))


def test_the_address_sanitizer_build_is_the_one_in_use(asan_env: dict[str, str]) -> None:
    probe = (
        "import ctypes\n"
        "from transportkit.zmq_backend import _accel, accelerated\n"
        "asan = hasattr(ctypes.CDLL(None), '__asan_init')\n"
        "print(_accel._MODULE.__file__, accelerated()[0], asan)"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe],
        env=asan_env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    path, on, asan = result.stdout.split()
    assert path == asan_env["TK_TEST_ACCEL_SO"] and on == "True" and asan == "True"


@pytest.mark.timeout(900)
def test_the_accelerator_tests_pass_under_address_sanitizer(asan_env: dict[str, str]) -> None:
    tests = [
        HERE / "test_accel.py",
        HERE / "test_signals.py",
        HERE / "test_blocking.py",
        ROOT / "tests" / "core" / "test_frame_contract.py",
    ]
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *map(str, tests)],
        env=asan_env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=850,
        check=False,
    )
    output = result.stdout + result.stderr
    reports = _asan_reports(asan_env)
    assert not reports, reports[:8000]
    assert result.returncode == 0, output[-6000:]


_BLOCK_END = re.compile(r"^==\d+== ?$")
_ERROR = re.compile(r"^==\d+== (Invalid (read|write|free)|Mismatched free|Source and destination)")
_OURS = re.compile(r"libzmq|_zmq\.cpython|_accel_c")


def _memcheck_errors(log: str) -> list[str]:
    """The invalid-access reports of a memcheck log that involve zmq or the extension
    (the dynamic loader's own strncmp reads are valgrind noise)."""
    errors, block = [], list[str]()
    for line in log.splitlines():
        if _BLOCK_END.match(line):
            text = "\n".join(block)
            if block and _ERROR.match(block[0]) and _OURS.search(text):
                errors.append(text)
            block = []
        elif block or _ERROR.match(line):
            block.append(line)
    return errors


@pytest.mark.timeout(900)
@pytest.mark.parametrize("path", ["c", "py"])
def test_the_signal_scenarios_touch_no_freed_memory_under_valgrind(path: str) -> None:
    valgrind = shutil.which("valgrind")
    if valgrind is None:
        pytest.skip("valgrind is not installed")
    if path == "c" and not _accel.accelerated()[0]:
        pytest.skip("the C accelerator is not built here")
    env = dict(os.environ)
    env.pop("TRANSPORTKIT_PURE_PYTHON", None)
    if path == "py":
        env["TRANSPORTKIT_PURE_PYTHON"] = "1"
    env["PYTHONMALLOC"] = "malloc"  # so that memcheck sees Python's allocations too
    runs = ["recv:3", "recv-timed:3", "recv-buffers:3", "send:2", "async-behind-back:3"]
    memcheck = [valgrind, "--tool=memcheck", "--leak-check=no", "--num-callers=40"]
    result = subprocess.run(
        [*memcheck, sys.executable, str(HERE / "signal_scenarios.py"), *runs],
        env=env,
        capture_output=True,
        text=True,
        timeout=850,
        check=False,
    )
    errors = _memcheck_errors(result.stderr)
    assert not errors, "\n\n".join(errors)[:8000]
    assert result.returncode == 0, result.stderr[-3000:]
    outcomes = json.loads(result.stdout.strip().splitlines()[-1])
    assert outcomes == {
        "recv": {"closed / b kept": 3},
        "recv-timed": {"closed / b kept": 3},
        "recv-buffers": {"closed / b kept": 3},
        "send": {"closed / d got nothing": 2},
        "async-behind-back": {"closed": 3},
    }
