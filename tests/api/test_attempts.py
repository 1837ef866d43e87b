"""One name per thing: every request client counts ``attempts`` (sends of a request,
the first included), and the old ``retries`` keyword is an error that says what to
write, in the API, the scenario files and the example programs."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from transportkit import Network, ServiceUnavailableError
from transportkit.examples import bstarcli, lpclient, mdclient, riskclient
from transportkit.patterns import (
    BinaryStarClient,
    LazyPirateClient,
    MajordomoClient,
    TitanicClient,
)
from transportkit.scenario._runner import load
from transportkit.scenario._spec import ScenarioError
from transportkit.sim_backend import Simulation
from transportkit.trading import ReliableRiskClient


def _make(cls: type, **kwargs: Any) -> object:
    net = Simulation(seed=0).node("c")
    if cls is BinaryStarClient:
        return cls(net, ("tcp://a:1", "tcp://b:1"), **kwargs)
    return cls(net, "tcp://a:1", **kwargs)


@pytest.mark.parametrize(
    ("cls", "write"),
    [
        (LazyPirateClient, "attempts=3"),
        (MajordomoClient, "attempts=3"),
        (TitanicClient, "attempts=3"),
        (ReliableRiskClient, "attempts=3"),
        # retries counted the sends after the first here: the same behaviour is one more
        (BinaryStarClient, "attempts=4"),
    ],
)
def test_the_old_retries_keyword_says_what_to_write(cls: type, write: str) -> None:
    with pytest.raises(TypeError, match=r"retries= is now attempts=") as caught:
        _make(cls, retries=3)
    assert str(caught.value).endswith(f"write {write}")
    assert str(caught.value).startswith(f"{cls.__name__}()")


@pytest.mark.parametrize(
    "cls", [LazyPirateClient, MajordomoClient, TitanicClient, ReliableRiskClient, BinaryStarClient]
)
def test_attempts_is_checked(cls: type) -> None:
    with pytest.raises(ValueError, match="attempts"):
        _make(cls, attempts=0)


async def _count_requests(net: Network, endpoint: str, seen: list[float]) -> None:
    """A server that takes requests and never answers: it records when each came."""
    with net.router(bind=endpoint) as router:
        while True:
            await router.recv()
            seen.append(asyncio.get_running_loop().time())


def _run_until_given_up(make_client: Any, request: Any, endpoints: tuple[str, ...]) -> list[int]:
    """How many sends each server saw before the client gave up."""
    sim = Simulation(seed=0)
    seen: list[list[float]] = [[] for _ in endpoints]
    for i, ep in enumerate(endpoints):

        async def serve(n: Network, ep: str = ep, s: list[float] = seen[i]) -> None:
            await _count_requests(n, ep, s)

        sim.node(f"srv{i}", main=serve)
    client_net = sim.node("cli")

    async def main() -> None:
        with make_client(client_net) as client, pytest.raises(ServiceUnavailableError):
            await request(client)

    sim.run(main(), timeout=120.0)
    return [len(s) for s in seen]


def test_attempts_3_is_three_sends_on_the_lazy_pirate_client() -> None:
    sends = _run_until_given_up(
        lambda n: LazyPirateClient(n, "tcp://srv0:5555", timeout=0.5, attempts=3),
        lambda c: c.request([b"x"]),
        ("tcp://*:5555",),
    )
    assert sends == [3]


def test_attempts_3_is_three_sends_on_the_majordomo_client() -> None:
    sends = _run_until_given_up(
        lambda n: MajordomoClient(n, "tcp://srv0:5555", timeout=0.5, attempts=3),
        lambda c: c.request(b"echo", [b"x"]),
        ("tcp://*:5555",),
    )
    assert sends == [3]


def test_attempts_4_is_four_sends_alternating_on_the_binary_star_client() -> None:
    sends = _run_until_given_up(
        lambda n: BinaryStarClient(
            n, ("tcp://srv0:5555", "tcp://srv1:5556"), timeout=0.5, settle_delay=0.1, attempts=4
        ),
        lambda c: c.request([b"x"]),
        ("tcp://*:5555", "tcp://*:5556"),
    )
    assert sends == [2, 2]


SCENARIO = """
[scenario]
name = "attempts"
duration = 1.0

[[component]]
name = "risk"
kind = "risk_server"
node = "risk-host"
bind = "tcp://*:5555"

[[component]]
name = "orders"
kind = "risk_client"
node = "desk"
connect = "tcp://risk-host:5555"
rate = 10
{key} = 2
"""


def test_a_scenario_file_says_attempts_and_refuses_retries(tmp_path: Path) -> None:
    good = tmp_path / "good.toml"
    good.write_text(SCENARIO.format(key="attempts"))
    scenario = load(good)
    (client,) = [c for c in scenario.components if c.name == "orders"]
    assert client.params.attempts == 2

    old = tmp_path / "old.toml"
    old.write_text(SCENARIO.format(key="retries"))
    with pytest.raises(ScenarioError) as caught:
        load(old)
    message = str(caught.value)
    assert "'retries'" in message
    assert "is now 'attempts'" in message
    assert message.endswith("write attempts = 2")


@pytest.mark.parametrize(
    ("program", "write"),
    [(lpclient, "--attempts 2"), (riskclient, "--attempts 2"), (mdclient, "--attempts 2"),
     (bstarcli, "--attempts 3")],
)  # fmt: skip
def test_the_example_clients_say_attempts(
    program: Any, write: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert program.parse_args(["--attempts", "5"]).attempts == 5
    with pytest.raises(SystemExit) as caught:
        program.parse_args(["--retries", "2"])
    assert caught.value.code == 2
    err = capsys.readouterr().err
    assert "--retries is now --attempts" in err
    assert err.rstrip().endswith(write)


def test_the_old_constant_name_still_reads_and_names_the_new_one() -> None:
    """``REQUEST_RETRIES`` was removed without a word: an upgrade failed with a bare
    ImportError. It reads as REQUEST_ATTEMPTS, with a warning that names it."""
    from transportkit.patterns import lazy_pirate  # noqa: PLC0415

    with pytest.warns(DeprecationWarning, match="REQUEST_RETRIES is now REQUEST_ATTEMPTS"):
        assert lazy_pirate.REQUEST_RETRIES == lazy_pirate.REQUEST_ATTEMPTS == 3
    with pytest.raises(AttributeError, match="no attribute 'REQUEST_SOMETHING'"):
        _ = lazy_pirate.REQUEST_SOMETHING  # type: ignore[attr-defined]
