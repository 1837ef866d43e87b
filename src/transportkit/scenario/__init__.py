"""Scenarios: a trading topology, its load, its faults and its invariants, in one file.

Load a TOML scenario with :func:`load` (a file's path, or the name of one shipped with
the package: :func:`shipped_scenarios` lists them, :func:`resolve_scenario` finds
one), run it with :func:`run_scenario` on the sim backend (virtual time,
deterministic: the default) or on real ZeroMQ sockets, and read the
:class:`RunResult` or its report (:func:`report_text`, :func:`report_json`). The
command line is ``transportkit run SCENARIO`` (``transportkit scenarios`` lists the
shipped ones).

:func:`sweep` runs a scenario once per seed in parallel, through any
``concurrent.futures.Executor`` (a process pool by default, a Dask cluster's), and
returns a :class:`SweepResult` whose failures carry their replay commands; its
command line is ``transportkit sweep SCENARIO --seeds N --jobs J``.
"""

from transportkit._extras import requires_extra as _requires_extra

with _requires_extra("scenarios", "transportkit.scenario"):
    from transportkit.scenario._catalog import ShippedScenario, resolve_scenario, shipped_scenarios
    from transportkit.scenario._components import COMPONENTS, ComponentKind
    from transportkit.scenario._export import write_chrome_trace, write_plot
    from transportkit.scenario._invariants import CUSTOM_CHECKS, INVARIANTS, Verdict
    from transportkit.scenario._metrics import Load, Metrics, Receipt, Stream
    from transportkit.scenario._report import (
        SCHEMA_VERSION,
        fault_dict,
        fault_text,
        report_dict,
        report_json,
        report_text,
    )
    from transportkit.scenario._runner import RunResult, load, run_scenario
    from transportkit.scenario._spec import Scenario, ScenarioError
    from transportkit.scenario._sweep import (
        FAULT_KINDS,
        SweepResult,
        default_wall_budget,
        replay_command,
        swarm_fault_kinds,
        sweep,
        with_fault_kinds,
    )
    from transportkit.scenario._sweep_types import SeedResult

__all__ = [
    "COMPONENTS",
    "CUSTOM_CHECKS",
    "FAULT_KINDS",
    "INVARIANTS",
    "SCHEMA_VERSION",
    "ComponentKind",
    "Load",
    "Metrics",
    "Receipt",
    "RunResult",
    "Scenario",
    "ScenarioError",
    "SeedResult",
    "ShippedScenario",
    "Stream",
    "SweepResult",
    "Verdict",
    "default_wall_budget",
    "fault_dict",
    "fault_text",
    "load",
    "replay_command",
    "report_dict",
    "report_json",
    "report_text",
    "resolve_scenario",
    "run_scenario",
    "shipped_scenarios",
    "swarm_fault_kinds",
    "sweep",
    "with_fault_kinds",
    "write_chrome_trace",
    "write_plot",
]
