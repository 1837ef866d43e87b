"""Small scenarios for the command-line tests: a second or less of wall time each."""

from __future__ import annotations

from pathlib import Path

import pytest

TINY = """
[scenario]
name = "tiny"
description = "a feed to two desks through one fault of every kind"
seed = 3
duration = 2.0
drain = 0.5

[[component]]
name = "feed"
kind = "market_data_publisher"
node = "exchange"
bind = "tcp://*:5556"
rate = 200

[[component]]
name = "desk-1-md"
kind = "market_data_subscriber"
node = "desk-1"
source = "feed"
connect = "tcp://exchange:5556"

[[component]]
name = "desk-2-md"
kind = "market_data_subscriber"
node = "desk-2"
source = "feed"
connect = "tcp://exchange:5556"

[[fault]]
at = 0.5
kind = "crash"
node = "desk-1"

[[fault]]
at = 0.8
kind = "restart"
node = "desk-1"

[[fault]]
at = 1.0
kind = "partition"
a = "exchange"
b = "desk-2"

[[fault]]
at = 1.25
kind = "repair"
a = "exchange"
b = "desk-2"

[[fault]]
at = 1.3
kind = "hold"
a = "exchange"
b = "desk-2"
both_ways = false

[[fault]]
at = 1.4
kind = "release"
a = "exchange"
b = "desk-2"
both_ways = false

[[fault]]
at = 1.5
kind = "drop_connection"
a = "desk-1"
b = "exchange"

[[fault]]
at = 1.6
kind = "set_latency"
a = "exchange"
b = "desk-1"
latency = { model = "constant", delay_us = 20000 }

[[fault]]
at = 1.8
kind = "set_latency"
a = "exchange"
b = "desk-1"

[[invariant]]
kind = "bound"
description = "the feed ran"
stream = "feed"
metric = "sent"
at_least = 100

[[invariant]]
kind = "latency"
description = "desk-2 P99 under a second"
stream = "feed"
receiver = "desk-2-md"
percentile = 99
max_us = 1000000
"""

FAILING = TINY.replace("at_least = 100\n", "at_least = 1000000000\n")


@pytest.fixture
def tiny(tmp_path: Path) -> Path:
    """A passing scenario file (about 0.1 s of wall time on the sim)."""
    path = tmp_path / "tiny.toml"
    path.write_text(TINY, encoding="utf-8")
    return path


@pytest.fixture
def failing(tmp_path: Path) -> Path:
    """The same scenario with an invariant that cannot hold."""
    path = tmp_path / "failing.toml"
    path.write_text(FAILING, encoding="utf-8")
    return path


@pytest.fixture
def shipped_tiny(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The package's scenario folder replaced by one holding ``tiny`` and ``failing``."""
    folder = tmp_path / "shipped"
    folder.mkdir()
    (folder / "tiny.toml").write_text(TINY, encoding="utf-8")
    (folder / "failing.toml").write_text(FAILING, encoding="utf-8")
    from transportkit.scenario import _catalog  # noqa: PLC0415 - after conftest loads

    monkeypatch.setattr(_catalog, "_folder", lambda: folder)
    return folder
