"""The plugin's fixtures are namespaced: they never take over a project's own."""

from __future__ import annotations

import pytest

pytest_plugins = ["pytester"]


def test_a_projects_own_backend_and_harness_fixtures_are_left_alone(
    pytester: pytest.Pytester,
) -> None:
    pytester.makeconftest(
        """
        import pytest

        @pytest.fixture
        def backend():
            return "postgres"

        @pytest.fixture
        def harness(backend):
            return {"db": backend}
        """
    )
    pytester.makepyfile(
        """
        def test_mine(backend, harness):
            assert backend == "postgres"
            assert harness == {"db": "postgres"}
        """
    )
    result = pytester.runpytest("-v", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["*test_mine PASSED*"])  # one item, no [sim]/[zmq]


def test_tk_backend_runs_a_test_once_per_backend_and_tk_harness_follows_it(
    pytester: pytest.Pytester,
) -> None:
    pytester.makepyfile(
        """
        import pytest

        def test_each(tk_backend, tk_harness):
            assert tk_harness.name == tk_backend

        @pytest.mark.tk_backends("sim")
        def test_sim_only(tk_backend):
            assert tk_backend == "sim"
        """
    )
    result = pytester.runpytest("-v", "-p", "no:cacheprovider", "--strict-markers")
    result.assert_outcomes(passed=3)
    result.stdout.fnmatch_lines_random(
        ["*test_each?sim? PASSED*", "*test_each?zmq? PASSED*", "*test_sim_only?sim? PASSED*"]
    )
