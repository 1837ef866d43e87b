"""Run with an interpreter that has transportkit and its core dependencies only.

Prints one JSON object: a REQ/REP round trip on each backend, what importing each
module that needs an extra raised, the optional distributions that are present, and
the accelerator's state. The tests in this folder run it in fresh virtualenvs.
"""

from __future__ import annotations

import asyncio
import importlib
import importlib.util
import json
import sys

from transportkit import Network, SocketOptions
from transportkit.sim_backend import Simulation
from transportkit.zmq_backend import ZmqNetwork, accelerated

NEEDS_AN_EXTRA = (
    "transportkit.trading",
    "transportkit.scenario",
    "transportkit.metrics",
    "transportkit.testing.strategies",
    "transportkit.testing.stateful",
)
OPTIONAL_MODULES = ("hypothesis", "google.protobuf", "tqdm", "hdrh", "matplotlib")


async def round_trip(server_net: Network, client_net: Network, endpoint: str) -> list[bytes]:
    """One request and its reply; the server binds ``endpoint`` (a wildcard port works)."""
    options = SocketOptions(rcvtimeo=5000, sndtimeo=5000, linger=0)
    with server_net.worker(options=options) as rep:
        bound = rep.bind(endpoint)
        with client_net.requester(connect=bound, options=options) as req:
            request = asyncio.ensure_future(req.request([b"AAPL", b"100"]))
            frames = await rep.recv()
            await rep.send([frames[0], b"approved"])
            return list(await request)


def _present(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ImportError:
        return False


def main() -> None:
    """Print the JSON report on stdout; with ``--smoke``, fail unless all is well.

    ``--smoke`` (cibuildwheel's test of each wheel) exits non-zero unless both round
    trips return the request's reply and, except on Windows (where the accelerator is
    not used), the C accelerator is active.
    """
    sim = Simulation(seed=3)
    sim_reply = sim.run(round_trip(sim.node("risk"), sim.node("trader"), "tcp://risk:5555"))
    with ZmqNetwork() as net:
        zmq_reply = asyncio.run(asyncio.wait_for(round_trip(net, net, "tcp://127.0.0.1:*"), 10))
    errors = {}
    for name in NEEDS_AN_EXTRA:
        try:
            importlib.import_module(name)
        except ImportError as exc:
            errors[name] = [type(exc).__name__, str(exc), isinstance(exc, ImportError)]
        else:
            errors[name] = None
    acceleration = accelerated()
    report = {
        "sim": [frame.decode() for frame in sim_reply],
        "zmq": [frame.decode() for frame in zmq_reply],
        "errors": errors,
        "present": sorted(m for m in OPTIONAL_MODULES if _present(m)),
        "accelerated": [bool(acceleration), acceleration.active, acceleration.reason],
        "prefix": sys.prefix,
    }
    print(json.dumps(report))
    if "--smoke" in sys.argv[1:]:
        expected = ["AAPL", "approved"]
        if report["sim"] != expected or report["zmq"] != expected:
            raise SystemExit(f"round trip failed: {report}")
        if sys.platform != "win32" and not acceleration:
            raise SystemExit(f"the C accelerator is not active: {acceleration.reason}")


if __name__ == "__main__":
    main()
