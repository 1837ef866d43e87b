"""Scenarios: a trading topology, its load, its faults and its invariants, in one file.

Load a TOML scenario with :func:`load`, run it with :func:`run_scenario` on the sim
backend (virtual time, deterministic: the default) or on real ZeroMQ sockets, and read
the :class:`RunResult` or its report (:func:`report_text`, :func:`report_json`). The
command line is ``transportkit run SCENARIO``.
"""

from transportkit.scenario._components import COMPONENTS, ComponentKind
from transportkit.scenario._export import write_chrome_trace, write_plot
from transportkit.scenario._invariants import CUSTOM_CHECKS, INVARIANTS, Verdict
from transportkit.scenario._metrics import Metrics, Receipt, Stream
from transportkit.scenario._report import report_dict, report_json, report_text
from transportkit.scenario._runner import RunResult, load, run_scenario
from transportkit.scenario._spec import Scenario, ScenarioError

__all__ = [
    "COMPONENTS",
    "CUSTOM_CHECKS",
    "INVARIANTS",
    "ComponentKind",
    "Metrics",
    "Receipt",
    "RunResult",
    "Scenario",
    "ScenarioError",
    "Stream",
    "Verdict",
    "load",
    "report_dict",
    "report_json",
    "report_text",
    "run_scenario",
    "write_chrome_trace",
    "write_plot",
]
