"""Errors that suggest: an unknown keyword names the closest known one, wherever Python
alone would give a bare or misleading error."""

from __future__ import annotations

import pytest

from transportkit import OptionError, SocketOptions, TransportError, UnknownOptionError
from transportkit.metrics import MetricsRegistry
from transportkit.sim_backend import Simulation
from transportkit.testing import check_determinism, sim_test

SUGGESTS_SNDHWM = "unknown socket option 'sndhvm'; did you mean 'sndhwm'?"


def test_constructing_options_with_a_typo_suggests_the_option() -> None:
    with pytest.raises(UnknownOptionError) as caught:
        SocketOptions(sndhvm=1)  # type: ignore[call-arg]
    assert str(caught.value) == SUGGESTS_SNDHWM
    # Caught as what it is (an option error) and as what Python raises for a keyword.
    assert isinstance(caught.value, OptionError)
    assert isinstance(caught.value, TransportError)
    assert isinstance(caught.value, TypeError)


def test_construction_replace_and_from_mapping_give_the_same_error() -> None:
    messages = []
    for make in (
        lambda: SocketOptions(sndhvm=1),  # type: ignore[call-arg]
        lambda: SocketOptions().replace(sndhvm=1),
        lambda: SocketOptions.from_mapping({"sndhvm": 1}),
    ):
        with pytest.raises(UnknownOptionError) as caught:
            make()
        messages.append(str(caught.value))
    assert messages == [SUGGESTS_SNDHWM] * 3


def test_a_name_close_to_nothing_gets_no_suggestion_and_good_options_still_work() -> None:
    with pytest.raises(UnknownOptionError, match=r"^unknown socket option 'banana'$"):
        SocketOptions(banana=1)  # type: ignore[call-arg]
    options = SocketOptions(sndhwm=10, linger=5)
    assert (options.sndhwm, options.linger) == (10, 5)
    assert options.replace(rcvhwm=3).rcvhwm == 3
    with pytest.raises(OptionError, match="'sndhwm' must be >= 0"):
        SocketOptions(sndhwm=-5)  # a bad value is still an OptionError, not a TypeError


def test_sim_test_names_its_own_keyword_for_a_typo_at_decoration_time() -> None:
    # Without the check, 'backend' went to Simulation(), which raised when the test ran
    # and named Simulation.__init__, a function the user never called.
    with pytest.raises(TypeError, match=r"sim_test\(\).*'backend'; did you mean 'backends'\?"):
        sim_test(backend=("sim", "zmq"))


def test_sim_test_suggests_a_simulation_option() -> None:
    with pytest.raises(TypeError, match=r"'latancy'; did you mean 'latency'\?"):
        sim_test(seeds=1, latancy=None)


def test_check_determinism_suggests_a_simulation_option() -> None:
    async def main() -> None:
        return None

    def build(sim: Simulation) -> object:
        return main()

    with pytest.raises(TypeError, match=r"check_determinism\(\).*did you mean 'shuffle_ties'"):
        check_determinism(build, shufle_ties=True)  # type: ignore[arg-type]


def test_a_registry_latency_histogram_suggests_its_option() -> None:
    registry = MetricsRegistry()
    with pytest.raises(TypeError, match=r"latency\(\).*'bukets'; did you mean 'buckets'\?"):
        registry.latency("orders", bukets=(0.001,))
    assert registry.latency("orders", buckets=(0.001,)) is registry.latency("orders")
