"""The scenario's Clone server lets its clients see the loss of the last updates.

12/CHP's HUGZ carry sequence 0, so a client whose last updates before a quiet spell
were lost cannot tell; the scenario component runs its server with
``extensions=True`` (HUGZ carry the server's sequence), since both ends are
transportkit's. Here the feed stops updating at 1 s, its last updates are held on the
link and then thrown away with the connection (``discard_queues``): only a HUGZ with
the sequence shows the desk what it missed.
"""

from __future__ import annotations

from pathlib import Path

from transportkit.scenario import load, run_scenario

TAIL_LOSS = """
[scenario]
name = "clone-tail-loss"
description = "the last updates before the feed goes quiet are lost"
seed = 3
duration = 1.0
drain = 1.5

[[component]]
name = "feed"
kind = "clone_server"
node = "exchange"
publisher = "tcp://*:5557"
snapshot = "tcp://*:5556"
symbols = ["AAPL", "MSFT"]
rate = 50
heartbeat_ms = 100

[[component]]
name = "desk"
kind = "clone_client"
node = "desk"
source = "feed"
snapshot = "tcp://exchange:5556"
updates = "tcp://exchange:5557"
timeout_ms = 5000

[[fault]]
at = 0.8
kind = "hold"
a = "exchange"
b = "desk"

[[fault]]
at = 1.1
kind = "drop_connection"
a = "exchange"
b = "desk"
discard_queues = true

[[fault]]
at = 1.2
kind = "release"
a = "exchange"
b = "desk"

[[invariant]]
kind = "check"
description = "the desk converges on the server's map"
check = "clone_converged"
"""


def test_a_desk_that_lost_the_feeds_last_updates_resyncs_and_converges(tmp_path: Path) -> None:
    path = tmp_path / "tail.toml"
    path.write_text(TAIL_LOSS, encoding="utf-8")
    result = run_scenario(load(path))
    verdicts = {v.description: v for v in result.verdicts}
    assert verdicts["the desk converges on the server's map"].passed, result.verdicts
    assert result.passed
