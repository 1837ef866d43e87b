"""The RuleBasedStateMachine example of ``transportkit.testing.stateful``, run with a
small budget: traffic and faults against a simulated Majordomo deployment, stepped
with ``run_for`` between rules, invariants checked after each step."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, Phase, settings
from hypothesis.stateful import run_state_machine_as_test

from transportkit import Message, TaskFailed
from transportkit.testing.stateful import MajordomoMachine

MajordomoMachine.TestCase.settings = settings(
    max_examples=8,
    stateful_step_count=12,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestMajordomoMachine = MajordomoMachine.TestCase


@pytest.mark.slow
def test_the_majordomo_machine_with_a_large_budget() -> None:
    run_state_machine_as_test(
        MajordomoMachine,
        settings=settings(
            max_examples=200,
            stateful_step_count=30,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow],
        ),
    )


class _WrongReply(MajordomoMachine):
    """A service bug: the second request of an example gets the first one's reply."""

    def handle(self, body: Message) -> Message:
        return [b"echo", b"r0"] if body == [b"r1"] else super().handle(body)


class _CrashingClient(MajordomoMachine):
    """A client bug: the request task dies on its reply, and nobody awaits it."""

    async def _request(self, client: str, body: bytes) -> None:
        await super()._request(client, body)
        if body.startswith(b"r"):  # the rules' requests (not teardown's, run as main)
            raise RuntimeError(f"client bug on {body!r}")


BUGS = [
    pytest.param(_WrongReply, AssertionError, id="wrong-reply", marks=pytest.mark.slow),  # ~8 s
    pytest.param(_CrashingClient, TaskFailed, id="crashing-client"),
]


@pytest.mark.parametrize(("machine", "error"), BUGS)
def test_the_machine_finds_a_bug_and_shrinks_it_to_a_few_steps(
    machine: type[MajordomoMachine], error: type[BaseException]
) -> None:
    with pytest.raises(error) as caught:
        run_state_machine_as_test(machine, settings=_budget())
    program = "\n".join(getattr(caught.value, "__notes__", []))
    # Shrunk to the requests that show it: no fault and no wait rule left.
    assert program.count("state.send_request(") == (2 if machine is _WrongReply else 1), program
    for rule in ("crash_worker", "restart_worker", "partition", "repair", "wait"):
        assert f"state.{rule}(" not in program, program


def _budget() -> settings:
    return settings(
        max_examples=10,
        stateful_step_count=8,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow],
        phases=[Phase.generate, Phase.shrink],
        report_multiple_bugs=False,
        # The same examples in every run: how far Hypothesis shrinks depends on where it
        # starts, and a test of how far it shrinks must not depend on luck.
        derandomize=True,
    )
