"""The simulator page's fidelity table points at checks that exist.

Each row of the table in ``docs/simulator.md`` names the tests that check it; a row
whose test was renamed or removed would claim a check nobody runs. The one refusal the
table claims that no other test covers (the sim backend's pgm/epgm) is checked here.
"""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import pytest

import transportkit.testing as testing
from transportkit import UnsupportedError
from transportkit.sim_backend import Simulation

ROOT = Path(__file__).resolve().parents[2]
PAGE = ROOT / "docs" / "simulator.md"


def fidelity_table() -> list[str]:
    text = PAGE.read_text(encoding="utf-8")
    section = text.split("## Fidelity against real libzmq", 1)[1].split("\n## ", 1)[0]
    return [line for line in section.splitlines() if line.startswith("| ") and "---" not in line][
        1:
    ]


def test_every_row_says_modelled_approximated_not_modelled_or_refused() -> None:
    rows = fidelity_table()
    assert len(rows) >= 20
    for row in rows:
        status = row.split("|")[2].strip()
        assert re.match(
            r"(modelled|approximated|not modelled|not in the sim|refused|the same)", status
        ), row


def test_every_test_the_table_names_exists() -> None:
    named = set()
    for row in fidelity_table():
        named.update(re.findall(r"`(tests/[\w/.]+)`", row))
    assert len(named) >= 15
    for path in sorted(named):
        assert (ROOT / path).exists(), path
    functions = {
        "check_" + name for row in fidelity_table() for name in re.findall(r"`check_(\w+)`", row)
    }
    assert functions and all(hasattr(testing, f) for f in functions), functions


@pytest.mark.parametrize("transport", ["pgm", "epgm"])
@pytest.mark.parametrize("how", ["bind", "connect"])
def test_the_sim_refuses_multicast(transport: str, how: str) -> None:
    with Simulation(seed=1) as sim:
        node = sim.node("exchange")

        async def main() -> None:
            with pytest.raises(UnsupportedError, match=transport):
                node.publisher(**{how: f"{transport}://eth0;239.192.1.1:5555"})
            await asyncio.sleep(0)

        sim.run(main())
