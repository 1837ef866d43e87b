"""The risk server and client programs (riskserver, riskclient): a SIGTERM while an
order is being judged, CURVE between the two programs over tcp, the metrics endpoint."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
from _sigterm_helpers import EXAMPLES, EXIT_BOUND, run_real, server, terminate

from transportkit import SocketOptions, Timeout
from transportkit.examples import keygen, riskclient, riskserver
from transportkit.examples._security import server_security
from transportkit.patterns._limits import DEFAULT_MAX_MESSAGE_BYTES
from transportkit.trading import DEMO_LIMITS, SIDE_BUY, Order, ValidationResult
from transportkit.zmq_backend import ZmqNetwork

OPTIONS = SocketOptions(linger=0)
CLIENT_TIMEOUT = 30.0
"""Seconds a riskclient run may take before the test fails (it never hangs)."""


def _endpoint(ready: str) -> str:
    return ready.split()[1].replace("0.0.0.0", "127.0.0.1")


def _order(order_id: str, quantity: int = 100) -> bytes:
    order = Order(id=order_id, symbol="AAPL", side=SIDE_BUY, quantity=quantity, price=190.0)
    return order.SerializeToString()


def _client(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", f"{EXAMPLES}.riskclient", *args],
        capture_output=True,
        text=True,
        timeout=CLIENT_TIMEOUT,
        check=False,
    )


async def _in_flight_then_new(endpoint: str, signal_when_busy: object) -> tuple[bytes, bool]:
    """Send one order, signal the server while it is judged, then send a new one."""
    with ZmqNetwork(name="riskserver-test") as net:
        first = net.requester(connect=endpoint, options=OPTIONS)
        await first.send([_order("in-flight")])
        await asyncio.to_thread(signal_when_busy)  # type: ignore[arg-type]
        second = net.requester(connect=endpoint, options=OPTIONS)
        await second.send([_order("after-sigterm")])
        reply = await first.recv(timeout=8.0)
        try:
            await second.recv(timeout=1.0)
            answered = True
        except Timeout:
            answered = False
        assert len(reply) == 1
        return reply[0], answered


def test_sigterm_answers_the_order_in_flight_refuses_new_ones_and_exits_0() -> None:
    with server("riskserver", "--bind", "tcp://127.0.0.1:*", "--service-time", "0.5") as child:
        assert child.ready_line is not None

        def signal_when_busy() -> None:
            child.wait_for_line("I: request in service", 10.0)
            terminate(child)

        reply, second_answered = run_real(
            _in_flight_then_new(_endpoint(child.ready_line), signal_when_busy)
        )
        verdict = ValidationResult.FromString(reply)
        assert verdict.order_id == "in-flight"
        assert verdict.approved
        assert not second_answered
        assert child.wait(EXIT_BOUND) == 0
        assert "STOPPED clean" in child.lines
        assert "I: 1 requests, 1 approved, 0 rejected" in child.lines


@pytest.mark.slow
def test_sigterm_past_the_shutdown_timeout_fails_the_order_with_the_error_reply() -> None:
    with server(
        "riskserver", "--bind", "tcp://127.0.0.1:*", "--service-time", "30",
        "--shutdown-timeout", "0.3",
    ) as child:  # fmt: skip
        assert child.ready_line is not None

        def signal_when_busy() -> None:
            child.wait_for_line("I: request in service", 10.0)
            terminate(child)

        reply, second_answered = run_real(
            _in_flight_then_new(_endpoint(child.ready_line), signal_when_busy)
        )
        assert reply == b""  # the plain Lazy Pirate error reply: no verdict
        assert not second_answered
        assert child.wait(EXIT_BOUND) == 0
        assert "STOPPED dropped" in child.lines


@pytest.mark.slow
def test_a_second_sigterm_forces_the_stop() -> None:
    with server(
        "riskserver", "--bind", "tcp://127.0.0.1:*", "--service-time", "30",
        "--shutdown-timeout", "60",
    ) as child:  # fmt: skip
        assert child.ready_line is not None

        def signal_twice() -> None:
            child.wait_for_line("I: request in service", 10.0)
            terminate(child)
            child.send_signal(signal.SIGTERM)

        async def go() -> None:
            with ZmqNetwork(name="riskserver-test") as net:
                req = net.requester(connect=_endpoint(child.ready_line or ""), options=OPTIONS)
                await req.send([_order("in-flight")])
                await asyncio.to_thread(signal_twice)

        run_real(go())
        assert child.wait(EXIT_BOUND) == 128 + signal.SIGTERM
        assert any(line.startswith("FORCED") for line in child.lines)


def test_curve_pair_over_tcp_and_an_unlisted_client_refused(tmp_path: Path) -> None:
    keys, allowed = tmp_path / "keys", tmp_path / "allowed"
    keys.mkdir()
    allowed.mkdir()
    assert keygen.main([str(keys), "server", "trader", "intruder"]) == 0
    (allowed / "trader.key").write_bytes((keys / "trader.key").read_bytes())
    with server(
        "riskserver", "--bind", "tcp://127.0.0.1:*",
        "--curve-secret", str(keys / "server.key_secret"), "--allow-keys", str(allowed),
    ) as child:  # fmt: skip
        assert child.ready_line is not None
        endpoint = _endpoint(child.ready_line)
        common = ["--connect", endpoint, "--curve-server-key", str(keys / "server.key")]
        trader = _client(
            *common, "--curve-secret", str(keys / "trader.key_secret"), "--count", "11"
        )
        assert trader.returncode == 0, trader.stdout + trader.stderr
        verdicts = [line for line in trader.stdout.splitlines() if line.startswith("VERDICT")]
        assert verdicts[:10] == [f"VERDICT rc-{n} approved" for n in range(1, 11)]
        assert verdicts[10] == "VERDICT rc-11 rejected: Position limit exceeded"
        assert "SUMMARY orders=11 verdicts=11 approved=10 rejected=1" in trader.stdout

        intruder = _client(
            *common, "--curve-secret", str(keys / "intruder.key_secret"),
            "--timeout", "0.3", "--attempts", "2",
        )  # fmt: skip
        assert intruder.returncode == 1, intruder.stdout + intruder.stderr
        assert "VERDICT" not in intruder.stdout
        assert "SUMMARY orders=1 verdicts=0" in intruder.stdout
        terminate(child)
        assert child.wait(EXIT_BOUND) == 0
        assert "I: 11 requests, 10 approved, 1 rejected" in child.lines


def test_metrics_port_exports_the_served_count_and_the_sockets() -> None:
    with server("riskserver", "--bind", "tcp://127.0.0.1:*", "--metrics-port", "0") as child:
        assert child.ready_line is not None
        url = next(line.split()[1] for line in child.lines if line.startswith("METRICS "))
        assert url.startswith("http://127.0.0.1:")

        async def three_orders() -> None:
            with ZmqNetwork(name="riskserver-test") as net:
                req = net.requester(connect=_endpoint(child.ready_line or ""), options=OPTIONS)
                for n in range(3):
                    await req.request([_order(f"m-{n}", quantity=400)], 8.0)

        run_real(three_orders())
        with urllib.request.urlopen(url, timeout=10.0) as response:
            text = response.read().decode()
        assert 'transportkit_risk_server_requests_total{name="risk"} 3.0' in text
        assert 'transportkit_risk_server_approved_total{name="risk"} 2.0' in text
        assert 'transportkit_risk_server_rejected_total{name="risk"} 1.0' in text
        assert 'network="riskserver"' in text
        terminate(child)
        assert child.wait(EXIT_BOUND) == 0


@pytest.mark.parametrize(
    "args",
    [
        ["--max-position", "AAPL"],
        ["--capital", "-1"],
        ["--capital", "2e15"],
        ["--service-time", "61"],
        ["--metrics-port", "70000"],
        ["--max-message-bytes", "0"],
    ],
)
def test_bad_flags_are_usage_errors(args: list[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        riskserver.parse_args(["--bind", "tcp://127.0.0.1:*", *args])
    assert exc.value.code == 2


@pytest.mark.parametrize(
    "args", [["--count", "0"], ["--timeout", "nan"], ["--attempts", "0"], ["--side", "x"]]
)
def test_bad_client_flags_are_usage_errors(args: list[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        riskclient.parse_args(args)
    assert exc.value.code == 2


def test_allow_keys_without_a_server_key_is_a_usage_error(tmp_path: Path) -> None:
    args = riskserver.parse_args(["--bind", "tcp://127.0.0.1:*", "--allow-keys", str(tmp_path)])
    with ZmqNetwork(name="riskserver-test") as net, pytest.raises(SystemExit) as exc:
        server_security(args, net)
    assert exc.value.code == 2


def test_the_default_limits_are_the_demo_limits() -> None:
    args = riskserver.parse_args([])
    assert args.limits == DEMO_LIMITS
    assert args.bind == "tcp://*:5555"
    assert args.max_message_bytes == DEFAULT_MAX_MESSAGE_BYTES
