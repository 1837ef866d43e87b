"""``transportkit`` itself: its subcommands in --help, --version, options before the
subcommand, unknown commands, and ``transportkit scenarios``."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

import transportkit
from transportkit.cli import COMMANDS, ExitCode, main
from transportkit.scenario import resolve_scenario, shipped_scenarios


def exits(argv: list[str]) -> int:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    code = exc.value.code
    assert isinstance(code, int)
    return code


def test_help_lists_every_subcommand_and_the_exit_statuses(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """It listed only {demo}."""
    assert exits(["--help"]) == 0
    out = capsys.readouterr().out
    for name in ("run", "sweep", "scenarios", "demo", "bench"):
        assert re.search(rf"\n  {name} +\w", out), name  # a line: the name, its help
    assert set(COMMANDS) == {"run", "sweep", "scenarios", "demo", "bench"}
    for status in ("0 ", "1 ", "2 ", "3 ", "4 ", "130 "):
        assert f"\n  {status}" in out, status
    assert not re.search(r"\bthe seed\b", out)  # a document users never see


@pytest.mark.parametrize("command", ["run", "sweep", "scenarios", "demo"])
def test_each_subcommand_help_ends_with_the_exit_statuses(
    command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert exits([command, "--help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: transportkit {command}")
    assert "exit status:" in out and "130  interrupted" in out
    assert not re.search(r"\bthe seed\b", out)


def test_version_is_the_package_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert exits(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"transportkit {transportkit.__version__}"


def test_options_before_the_subcommand_go_to_it(
    tiny: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``transportkit --backend zmq run X`` said "invalid choice: 'run'"."""
    assert main(["--seed", "11", "run", str(tiny), "--json", "--no-progress"]) == 0
    assert json.loads(capsys.readouterr().out)["seed"] == 11
    # --backend reached run: run refuses --seed on zmq, before running anything.
    assert main(["--backend", "zmq", "run", str(tiny), "--seed", "1"]) == ExitCode.USAGE
    assert "--seed applies to the sim backend only" in capsys.readouterr().err


def test_an_option_the_subcommand_does_not_take_says_which_command(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert exits(["--json", "scenarios"]) == ExitCode.USAGE
    err = capsys.readouterr().err
    assert "transportkit scenarios" in err and "unrecognized arguments: --json" in err


@pytest.mark.parametrize(
    ("word", "hint"),
    [("rn", "did you mean transportkit run?"), ("trading_day", "transportkit run trading_day")],
)
def test_an_unknown_command_is_a_usage_error_with_a_hint(
    word: str, hint: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([word]) == ExitCode.USAGE
    err = capsys.readouterr().err
    assert f"unknown command {word!r}" in err and hint in err
    assert "Traceback" not in err


def test_scenarios_lists_every_shipped_file_with_its_description(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["scenarios"]) == 0
    lines = capsys.readouterr().out.splitlines()
    folder = Path(transportkit.__file__).parent / "scenarios"
    names = sorted(p.stem for p in folder.glob("*.toml"))
    assert [line.split()[0] for line in lines] == names
    assert "trading_day" in names
    for line, item in zip(lines, shipped_scenarios(), strict=True):
        assert item.description and line.endswith(item.description)
        assert len(item.description) <= 200 and "\n" not in item.description


def test_scenarios_paths_are_the_package_files(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["scenarios", "--paths"]) == 0
    for line in capsys.readouterr().out.splitlines():
        name, path = line.split(maxsplit=1)
        assert Path(path).is_file() and Path(path).name == f"{name}.toml"


def test_python_dash_m_transportkit_help_lists_the_commands() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "transportkit", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert "scenarios" in proc.stdout and "sweep" in proc.stdout


def test_resolve_scenario_finds_a_shipped_file_and_leaves_paths_alone(tmp_path: Path) -> None:
    found = resolve_scenario("trading_day")
    assert found.name == "trading_day.toml" and found.is_file()
    assert found.parent == Path(transportkit.__file__).parent / "scenarios"
    assert resolve_scenario(str(tmp_path / "mine.toml")) == tmp_path / "mine.toml"
    assert resolve_scenario("mine.toml") == Path("mine.toml")  # a path, even if missing


def test_the_command_loads_no_optional_dependency_until_a_subcommand_needs_it() -> None:
    """``transportkit --help`` and ``--version`` work with the core alone: the demo's
    trading components (protobuf) and the runner's histograms load when they run."""
    code = (
        "import sys; from transportkit.cli import main\n"
        "try:\n    main(['--version'])\nexcept SystemExit:\n    pass\n"
        "print(','.join(m for m in ('transportkit.trading', 'google.protobuf', "
        "'hdrhistogram', 'tqdm', 'transportkit.scenario') if m in sys.modules))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode == 0, proc.stderr
    version, loaded = proc.stdout.splitlines()
    assert version == f"transportkit {transportkit.__version__}"
    assert loaded == "", loaded


def test_bench_rounds_out_of_range_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    """``--rounds 0`` and ``--rounds -5`` ran one round, silently."""
    for bad in ("0", "-5", "1001"):
        assert exits(["bench", "--rounds", bad]) == ExitCode.USAGE
        assert "--rounds: must be from 1 to 1,000" in capsys.readouterr().err
