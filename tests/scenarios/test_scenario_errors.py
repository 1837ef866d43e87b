"""A malformed scenario file gets an error naming the file, the key and the problem."""

from __future__ import annotations

from pathlib import Path

import pytest

from transportkit.cli import main
from transportkit.scenario import ScenarioError, load

TYPO = ["'duration'", "is required", "'durration': a typo?"]
LATENCY = '[scenario]\nlatency = { model = "gaussian" }'
FAULT = '\n[[fault]]\nat = 1.0\nkind = "crash"\nnode = "nowhere"\n'
INVARIANT = '\n[[invariant]]\nkind = "bound"\nstream = "feed"\nmetric = "sent"\n'

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


@pytest.mark.parametrize(
    ("edit", "needles"),
    [
        (lambda t: t.replace('name = "ok"\n', ""), ["[scenario]", "'name'", "is required"]),
        (lambda t: t.replace("duration = 1.0", "duration = -1"), ["'duration'", "> 0"]),
        (lambda t: t.replace("duration = 1.0", "durration = 1.0"), TYPO),
        (lambda t: t.replace("market_data_publisher", "market_data_pub"), ["'kind'", "one of"]),
        (lambda t: t + 'rate = "fast"\n', ["'feed'", "'rate'", "a number"]),
        (lambda t: t + "options = { sndhwm = -1 }\n", ["'options'", "sndhwm"]),
        (lambda t: t + "options = { sndhmw = 10 }\n", ["'options'", "did you mean 'sndhwm'"]),
        (lambda t: t.replace("[scenario]", LATENCY), ["'model'", "one of"]),
        (lambda t: t + FAULT, ["nowhere", "no component"]),
        (lambda t: t + INVARIANT, ["at_least"]),
        (lambda t: t.replace("[scenario]", "[scenario"), ["not valid TOML"]),
        (lambda t: t.split("[[component]]")[0], ["at least one [[component]]"]),
    ],
    ids=[
        "missing-name", "negative-duration", "typo", "unknown-kind", "bad-rate", "bad-option",
        "unknown-option", "bad-latency-model", "fault-unknown-node", "invariant-without-bound",
        "bad-toml", "no-components",
    ],
)  # fmt: skip
def test_errors_name_the_file_the_key_and_the_problem(
    tmp_path: Path, edit: object, needles: list[str]
) -> None:
    path = tmp_path / "broken.toml"
    path.write_text(edit(GOOD), encoding="utf-8")  # type: ignore[operator]
    with pytest.raises(ScenarioError) as info:
        load(path)
    message = str(info.value)
    assert str(path) in message
    for needle in needles:
        assert needle in message, message


def test_the_good_scenario_loads(tmp_path: Path) -> None:
    path = tmp_path / "good.toml"
    path.write_text(GOOD, encoding="utf-8")
    assert load(path).components[0].name == "feed"


def test_cli_reports_a_bad_file_with_exit_status_two(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["run", str(tmp_path / "missing.toml")]) == 2
    assert "no such scenario file" in capsys.readouterr().err
