"""transportkit.metrics: sockets, pattern stats and latency, as dicts and over HTTP."""

from __future__ import annotations

import asyncio
import json
import math
import random
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from hdrh.histogram import HdrHistogram
from prometheus_client.parser import text_string_to_metric_families

from transportkit import Network, Socket, SocketKind, metrics
from transportkit.metrics import (
    DEFAULT_LATENCY_BUCKETS,
    LatencyHistogram,
    MetricsRegistry,
    MetricsServer,
    start_http_server,
)
from transportkit.patterns.freelance import FreelanceClient, FreelanceServer
from transportkit.patterns.lazy_pirate import LazyPirateClient, ServeStats, serve_requests
from transportkit.patterns.load_balancing import LoadBalancingBroker
from transportkit.patterns.majordomo import MajordomoBroker, MajordomoClient, MajordomoWorker
from transportkit.sim_backend import Constant, Simulation
from transportkit.testing import Harness
from transportkit.zmq_backend import ZmqNetwork

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(server: MetricsServer) -> Samples:
    """GET the endpoint over HTTP and parse the exposition into {(name, labels): value}."""
    assert server.address == "127.0.0.1"
    with urllib.request.urlopen(server.url, timeout=5) as response:
        assert response.status == 200
        text = response.read().decode()
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def socket_labels(net: str, sock: Socket, name: str) -> tuple[tuple[str, str], ...]:
    return tuple(
        sorted(
            {
                "network": net,
                "kind": sock.kind.value,
                "socket": name,
                "endpoint": sock.last_endpoint or "",
            }.items()
        )
    )


def echo(body: list[bytes]) -> list[bytes]:
    return body


@pytest.fixture
def registry() -> MetricsRegistry:
    return MetricsRegistry()


@pytest.fixture
def server(registry: MetricsRegistry) -> Iterator[MetricsServer]:
    with start_http_server(0, registry=registry) as srv:
        yield srv


ROUND_TRIPS = 40


def lazy_pirate_traffic(
    harness: Harness, registry: MetricsRegistry
) -> tuple[LazyPirateClient, Socket, ServeStats, asyncio.Task[Any]]:
    """A Lazy Pirate client and a REP server, ROUND_TRIPS requests; everything left open."""
    srv, cli = harness.network("srv"), harness.network("cli")
    registry.watch_network(srv)
    registry.watch_network(cli)
    stats = ServeStats()
    registry.watch(stats, name="echo-server")

    async def main() -> tuple[LazyPirateClient, Socket, asyncio.Task[Any]]:
        rep = srv.worker(bind=harness.bind_endpoint())
        endpoint = rep.last_endpoint
        assert endpoint is not None
        task = asyncio.ensure_future(serve_requests(rep, echo, stats=stats))
        client = LazyPirateClient(cli, endpoint, timeout=2.0)
        registry.watch(client, name="risk")
        for i in range(ROUND_TRIPS):
            assert await client.request([b"%d" % i]) == [b"%d" % i]
        return client, rep, task

    client, rep, task = harness.run(main())
    return client, rep, stats, task


def test_a_scrape_over_http_shows_what_the_sockets_and_patterns_counted(
    tk_harness: Harness, registry: MetricsRegistry, server: MetricsServer
) -> None:
    client, rep, stats, _task = lazy_pirate_traffic(tk_harness, registry)
    req = client._socket
    assert req is not None
    samples = scrape(server)

    for net, sock, name in (("srv", rep, "rep0"), ("cli", req, "req0")):
        labels = socket_labels(net, sock, name)
        sent = samples[("transportkit_socket_messages_sent_total", labels)]
        received = samples[("transportkit_socket_messages_received_total", labels)]
        assert (sent, received) == (sock.stats.sent, sock.stats.received) == (40, 40)
        dropped = samples.get(("transportkit_socket_messages_dropped_total", labels))
        truncated = samples.get(("transportkit_socket_messages_truncated_total", labels))
        if tk_harness.exact_drops:  # the sim counts them
            assert (dropped, truncated) == (sock.stats.dropped, sock.stats.truncated) == (0, 0)
        else:  # libzmq does not say: unknown is absent, never 0
            assert sock.stats.dropped is None and sock.stats.truncated is None
            assert dropped is None and truncated is None
        assert samples[("transportkit_sockets_open", (("kind", sock.kind.value), ("network", net)))]

    risk = (("name", "risk"),)
    for counter in ("requests", "replies", "retries", "failures"):
        value = samples[(f"transportkit_lazy_pirate_client_{counter}_total", risk)]
        assert value == getattr(client.stats, counter)
    assert client.stats.replies == ROUND_TRIPS
    served = samples[("transportkit_serve_served_total", (("name", "echo-server"),))]
    assert served == stats.served == ROUND_TRIPS

    assert samples[("transportkit_request_latency_seconds_count", risk)] == ROUND_TRIPS
    inf = (("le", "+Inf"), ("name", "risk"))
    assert samples[("transportkit_request_latency_seconds_bucket", inf)] == ROUND_TRIPS
    total = samples[("transportkit_request_latency_seconds_sum", risk)]
    assert 0 < total < ROUND_TRIPS * 2.0
    p99 = samples[("transportkit_request_latency_hdr_seconds", (*risk, ("quantile", "0.99")))]
    assert 0 < p99 <= 2.0


def test_a_closed_socket_is_gone_from_the_next_scrape(
    tk_harness: Harness, registry: MetricsRegistry, server: MetricsServer
) -> None:
    client, rep, _stats, _task = lazy_pirate_traffic(tk_harness, registry)
    req = client._socket
    assert req is not None
    req_labels = socket_labels("cli", req, "req0")
    assert ("transportkit_socket_messages_sent_total", req_labels) in scrape(server)
    client.close()
    samples = scrape(server)
    assert ("transportkit_socket_messages_sent_total", req_labels) not in samples
    rep_labels = socket_labels("srv", rep, "rep0")
    assert samples[("transportkit_socket_messages_sent_total", rep_labels)] == ROUND_TRIPS
    assert [s["socket"] for s in registry.as_dict()["sockets"]] == ["rep0"]
    # The pattern's counters stay: they are the client's, not its socket's.
    assert samples[("transportkit_lazy_pirate_client_replies_total", (("name", "risk"),))] == 40


def test_the_dict_form_is_plain_json_in_a_stable_order(
    tk_harness: Harness, registry: MetricsRegistry
) -> None:
    client, rep, stats, _task = lazy_pirate_traffic(tk_harness, registry)
    first = registry.as_dict()
    again = registry.as_dict()
    assert json.dumps(first) == json.dumps(again)  # same keys, same order
    assert json.loads(json.dumps(first)) == first
    assert list(first) == ["networks", "sockets", "patterns", "latency"]
    unknown = None if not tk_harness.exact_drops else 0
    assert first["networks"] == {
        net: {
            "sockets_open": 1,
            "sockets_closed": 0,
            "messages_sent": ROUND_TRIPS,
            "messages_received": ROUND_TRIPS,
            "messages_dropped": unknown,
            "messages_truncated": unknown,
        }
        for net in ("cli", "srv")
    }
    assert first["sockets"] == [
        {
            "network": "cli",
            "socket": "req0",
            "kind": "REQ",
            "endpoint": rep.last_endpoint,
            "messages_sent": ROUND_TRIPS,
            "messages_received": ROUND_TRIPS,
            "messages_dropped": unknown,
            "messages_truncated": unknown,
        },
        {
            "network": "srv",
            "socket": "rep0",
            "kind": "REP",
            "endpoint": rep.last_endpoint,
            "messages_sent": ROUND_TRIPS,
            "messages_received": ROUND_TRIPS,
            "messages_dropped": unknown,
            "messages_truncated": unknown,
        },
    ]
    assert list(first["patterns"]) == ["echo-server", "risk"]
    assert first["patterns"]["risk"] == {
        "pattern": "lazy_pirate_client",
        "counters": {"requests": 40, "replies": 40, "retries": 0, "failures": 0, "mismatched": 0},
        "gauges": {},
    }
    assert first["patterns"]["echo-server"]["counters"]["served"] == stats.served
    latency = first["latency"]["risk"]
    assert list(latency) == [
        "count",
        "sum_seconds",
        "min_seconds",
        "max_seconds",
        "mean_seconds",
        "p50_seconds",
        "p90_seconds",
        "p99_seconds",
        "p99_9_seconds",
        "out_of_range",
    ]
    assert latency["count"] == ROUND_TRIPS
    assert (
        0
        < latency["min_seconds"]
        <= latency["p50_seconds"]
        <= latency["p90_seconds"]
        <= latency["p99_seconds"]
        <= latency["p99_9_seconds"]
    )
    assert latency["p99_9_seconds"] <= latency["max_seconds"] * 1.001 < 2.0
    assert latency["min_seconds"] <= latency["mean_seconds"] <= latency["max_seconds"]
    client.close()


def test_lazy_pirate_latency_on_the_sim_is_the_round_trip_of_the_links() -> None:
    """200 us each way: every one of N round trips takes 400 us of virtual time."""
    sim = Simulation(seed=3, latency=Constant(200e-6))
    srv, cli = sim.node("srv"), sim.node("cli")
    histogram = LatencyHistogram()

    async def main() -> None:
        with srv.worker(bind="tcp://*:5555") as rep:
            task = asyncio.ensure_future(serve_requests(rep, echo))
            with LazyPirateClient(cli, "tcp://srv:5555", latency_observer=histogram) as client:
                for _ in range(25):
                    await client.request([b"x"])
            task.cancel()

    sim.run(main())
    assert histogram.count == 25
    data = histogram._read()[3]
    # The first request also waits for the connection (one more crossing of the link).
    assert data["max_seconds"] == pytest.approx(600e-6, rel=1e-9)
    assert data["min_seconds"] == pytest.approx(400e-6, rel=1e-9)
    assert data["sum_seconds"] == pytest.approx(24 * 400e-6 + 600e-6, rel=1e-9)
    for key in ("p50_seconds", "p90_seconds"):
        assert data[key] == pytest.approx(400e-6, rel=1e-3)  # HDR: 3 significant digits
    for key in ("p99_seconds", "p99_9_seconds"):
        assert data[key] == pytest.approx(600e-6, rel=1e-3)
    _count, _total, cumulative, _ = histogram._read()
    at = DEFAULT_LATENCY_BUCKETS.index(500e-6)
    assert cumulative[at - 1] == 0 and cumulative[at] == 24 and cumulative[at + 1] == 25


def test_majordomo_and_freelance_clients_record_each_answered_round_trip() -> None:
    sim = Simulation(seed=5, latency=Constant(100e-6))
    registry = MetricsRegistry()
    broker_node, worker_node, cli = sim.node("broker"), sim.node("worker"), sim.node("cli")

    async def main() -> dict[str, Any]:
        broker = MajordomoBroker(broker_node, "tcp://*:5555")
        broker.bind()
        broker_task = asyncio.ensure_future(broker.run())
        worker = MajordomoWorker(worker_node, "tcp://broker:5555", b"echo")
        worker_task = asyncio.ensure_future(worker.serve(echo))
        mdp = MajordomoClient(cli, "tcp://broker:5555", timeout=1.0)
        registry.watch(mdp, name="mdp")
        registry.watch(broker, name="broker")
        for _ in range(12):
            assert await mdp.request(b"echo", [b"x"]) == [b"x"]
        fl_server = FreelanceServer(
            worker_node, bind="tcp://*:6000", endpoint="tcp://worker:6000", handler=echo
        )
        fl_task = asyncio.ensure_future(fl_server.run())
        freelance = FreelanceClient(cli, ["tcp://worker:6000"])
        registry.watch(freelance, name="freelance")
        for _ in range(7):
            assert await freelance.request([b"y"]) == [b"y"]
        result = registry.as_dict()
        for closeable in (mdp, freelance, fl_server, worker):
            closeable.close()
        broker.stop()
        for task in (broker_task, worker_task, fl_task):
            task.cancel()
        return result

    result = sim.run(main(), timeout=30)
    assert result["latency"]["mdp"]["count"] == 12
    assert result["latency"]["freelance"]["count"] == 7
    # client -> broker -> worker and back: 4 hops of 100 us.
    assert result["latency"]["mdp"]["p50_seconds"] == pytest.approx(400e-6, rel=1e-3)
    assert result["latency"]["freelance"]["p50_seconds"] == pytest.approx(200e-6, rel=1e-3)
    broker_dict = result["patterns"]["broker"]
    assert broker_dict["pattern"] == "majordomo_broker"
    assert broker_dict["counters"]["replies"] == 12
    assert broker_dict["gauges"]["pending_requests"] == 0
    assert broker_dict["services"] == {"echo": {"workers": 1, "queued_requests": 0}}


def test_queue_depths_a_pattern_knows_are_gauges() -> None:
    """A request with no worker waits in the Majordomo broker; ready workers in a LB broker."""
    sim = Simulation(seed=1)
    node, cli = sim.node("b"), sim.node("cli")
    registry = MetricsRegistry()
    tasks: list[asyncio.Task[None]] = []

    async def main() -> None:
        broker = MajordomoBroker(node, "tcp://*:5555")
        broker.bind()
        tasks.append(asyncio.ensure_future(broker.run()))
        lb = LoadBalancingBroker(node, frontend="tcp://*:5556", backend="tcp://*:5557")
        tasks.append(asyncio.ensure_future(lb.run()))
        registry.watch(broker, name="mdp")
        registry.watch(lb, name="lb")
        req = cli.requester(connect="tcp://b:5555")
        worker = cli.requester(connect="tcp://b:5557")
        await req.send([b"MDPC01", b"orders", b"buy"])
        await worker.send([b"READY"])
        await asyncio.sleep(0.1)

    sim.run(main())  # the brokers wait on; the simulation's close ends them
    data = registry.as_dict()
    with start_http_server(0, registry=registry) as server:
        samples = scrape(server)
    sim.close()
    mdp = data["patterns"]["mdp"]
    assert mdp["gauges"]["pending_requests"] == 1
    assert mdp["gauges"]["pending_bytes"] > 0
    assert mdp["services"] == {"orders": {"workers": 0, "queued_requests": 1}}
    labels = (("name", "mdp"), ("service", "orders"))
    assert samples[("transportkit_majordomo_broker_service_queued_requests", labels)] == 1
    assert samples[("transportkit_majordomo_broker_pending_requests", (("name", "mdp"),))] == 1
    assert data["patterns"]["lb"]["gauges"]["waiting_workers"] == 1
    name = "transportkit_load_balancing_broker_waiting_workers"
    assert samples[(name, (("name", "lb"),))] == 1


def test_zmq_blocking_sockets_and_named_sockets_are_exported(registry: MetricsRegistry) -> None:
    with ZmqNetwork(name="desk") as net:
        registry.watch_network(net)
        pull = net.blocking(SocketKind.PULL, bind="tcp://127.0.0.1:*")
        endpoint = pull.last_endpoint
        assert endpoint is not None
        push = net.pusher(connect=endpoint)
        registry.name_socket(push, "orders-out")

        async def send() -> None:
            for _ in range(5):
                await push.send([b"order"])

        asyncio.run(send())
        for _ in range(5):
            assert pull.recv(timeout=5.0) == [b"order"]
        with start_http_server(0, registry=registry) as server:
            samples = scrape(server)
        labels = socket_labels("desk", push, "orders-out")  # type: ignore[arg-type]
        assert samples[("transportkit_socket_messages_sent_total", labels)] == 5
        pull_labels = tuple(
            sorted(
                {"network": "desk", "kind": "PULL", "socket": "pull0", "endpoint": endpoint}.items()
            )
        )
        assert samples[("transportkit_socket_messages_received_total", pull_labels)] == 5
        push.close()
        pull.close()
        assert registry.as_dict()["sockets"] == []


def test_latency_histogram_bounds_and_buckets() -> None:
    histogram = LatencyHistogram(buckets=(1e-4, 1e-3), highest_seconds=1.0)
    for value in (1e-4, 1e-4, 5e-4, 1e-3, 0.5, -1.0, math.nan, 30.0, math.inf):
        histogram(value)
    count, total, cumulative, data = histogram._read()
    assert count == 9
    # exactly 100 us is in le=100us; -1 and NaN count as 0; 30 s and inf are clamped to 1 s
    assert cumulative == [4, 6, 9]
    assert data["out_of_range"] == histogram.out_of_range == 2
    assert data["max_seconds"] == 1.0 and data["min_seconds"] == 0.0
    assert total == pytest.approx(2e-4 + 5e-4 + 1e-3 + 0.5 + 2.0)
    assert histogram.percentile(100) == pytest.approx(1.0, rel=1e-3)
    histogram.reset()
    assert histogram.count == 0 and histogram.percentile(50) is None
    assert histogram._read()[3]["p99_seconds"] is None
    for bad in ((), (1e-3, 1e-4), (0.0, 1.0), (1.0, math.inf)):
        with pytest.raises(ValueError, match="buckets"):
            LatencyHistogram(buckets=bad)
    with pytest.raises(ValueError, match="highest_seconds"):
        LatencyHistogram(highest_seconds=0)
    with pytest.raises(ValueError, match="significant_figures"):
        LatencyHistogram(significant_figures=6)
    with pytest.raises(ValueError, match="percent"):
        histogram.percentile(101)


def test_watch_refuses_what_it_cannot_export(registry: MetricsRegistry) -> None:
    with pytest.raises(TypeError, match="no stats dataclass"):
        registry.watch(object(), name="x")
    stats = ServeStats()
    registry.watch(stats, name="a")
    registry.watch(stats, name="a")  # the same object again: fine
    with pytest.raises(ValueError, match="already watched"):
        registry.watch(ServeStats(), name="a")
    with pytest.raises(ValueError, match="pattern"):
        registry.watch(ServeStats(), name="b", pattern="Bad-Name")
    with pytest.raises(ValueError, match="counter"):  # one name, two metric types
        registry.watch(ServeStats(), name="b", gauges={"served": lambda: 1})
    registry.unwatch("a")
    assert registry.as_dict()["patterns"] == {}
    with pytest.raises(ValueError, match="already exists"):
        registry.latency("h")
        registry.latency("h", highest_seconds=2.0)

    class Unlisted(Network):
        name = "unlisted"

        def _open(self, kind: SocketKind, options: Any) -> Socket:
            raise NotImplementedError

        def time_ns(self) -> int:
            return 0

        def close(self) -> None:
            pass

    with pytest.raises(NotImplementedError, match="does not list its sockets"):
        registry.watch_network(Unlisted())
    sim = Simulation(seed=1)
    node = sim.node("n")
    registry.watch_network(node)
    registry.watch_network(node)  # again, same label: nothing changes
    with pytest.raises(ValueError, match="already watched as 'n'"):
        registry.watch_network(node, name="other")
    with pytest.raises(ValueError, match="a network is already watched as 'n'"):
        registry.watch_network(sim.node("m"), name="n")
    assert len(node._socket_observers) == 1
    sim.close()


def test_a_user_gauge_and_a_set_observer_are_kept(registry: MetricsRegistry) -> None:
    sim = Simulation(seed=2)
    mine = LatencyHistogram()
    client = LazyPirateClient(sim.node("cli"), "tcp://srv:5555", latency_observer=mine)
    registry.watch(client, name="c", gauges={"depth": lambda: 7, "broken": lambda: 1 // 0})
    assert client.latency_observer is mine
    assert registry.latency("c") is mine
    assert registry.as_dict()["patterns"]["c"]["gauges"] == {"depth": 7}
    bare = LazyPirateClient(sim.node("cli2"), "tcp://srv:5555")
    registry.watch(bare, name="bare", latency=False)
    assert bare.latency_observer is None
    sim.close()


def test_without_prometheus_client_the_dict_form_works_and_prometheus_says_which_extra(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "prometheus_client", None)
    registry = MetricsRegistry()
    registry.watch(ServeStats(served=3), name="s")
    assert registry.as_dict()["patterns"]["s"]["counters"]["served"] == 3
    for call in (
        lambda: start_http_server(0, registry=registry),
        registry.prometheus_collector,
    ):
        with pytest.raises(ImportError, match=r"pip install 'transportkit\[metrics\]'"):
            call()


def test_importing_the_module_does_not_import_prometheus_client() -> None:
    code = (
        "import sys; sys.modules['prometheus_client'] = None; "
        "import transportkit.metrics as m; r = m.MetricsRegistry(); print(r.as_dict())"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert out.stdout.strip() == "{'networks': {}, 'sockets': [], 'patterns': {}, 'latency': {}}"


def test_the_server_stops_and_frees_its_port(registry: MetricsRegistry) -> None:
    server = start_http_server(0, registry=registry)
    url = server.url
    assert scrape(server) is not None
    with pytest.raises(OSError):  # the port is taken: said at once, not at the first scrape
        start_http_server(server.port, registry=registry)
    server.close()
    server.close()  # idempotent
    with pytest.raises(OSError):
        urllib.request.urlopen(url, timeout=2)
    with pytest.raises(TypeError, match="MetricsRegistry"):
        start_http_server(0, registry=object())  # type: ignore[arg-type]


def test_the_public_names_exist_are_documented_and_backend_free() -> None:
    for name in metrics.__all__:
        obj = getattr(metrics, name)
        if isinstance(obj, type) or callable(obj):
            assert (obj.__doc__ or "").strip(), name
    code = (
        "import sys, transportkit.metrics; "
        "print(','.join(m for m in ('zmq', 'simpy', 'transportkit.patterns') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert out.stdout.strip() == ""


@pytest.mark.parametrize("layout", ["inline", "record_value"])
def test_percentiles_are_those_of_hdrhistogram_itself(
    layout: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    if layout == "record_value":  # what an hdrh with another counts layout gets
        monkeypatch.setattr(metrics, "_hdr_layout", lambda hdr, highest: None)
    rng = random.Random(12)
    values = [rng.lognormvariate(-8, 1.5) for _ in range(3000)]  # ~0.3 ms median, long tail
    ours = LatencyHistogram()
    assert (ours._layout is None) == (layout == "record_value")
    reference = HdrHistogram(1, 60_000_000_000, 3)
    for value in values:
        ours(value)
        reference.record_value(round(value * 1e9))
    for percent in (0.0, 1.0, 50.0, 90.0, 99.0, 99.9):
        assert ours.percentile(percent) == reference.get_value_at_percentile(percent) / 1e9
    assert ours.percentile(100) == round(max(values) * 1e9) / 1e9  # capped at the true max
    data = ours._read()[3]
    assert data["p99_9_seconds"] == reference.get_value_at_percentile(99.9) / 1e9
    assert data["count"] == 3000
    assert data["sum_seconds"] == pytest.approx(sum(values), rel=1e-6)


def test_a_crashed_sim_node_takes_its_sockets_out_of_the_metrics() -> None:
    sim = Simulation(seed=4)
    registry = MetricsRegistry()
    a, b = sim.node("a"), sim.node("b")
    registry.watch_network(a)
    registry.watch_network(b)

    async def main() -> None:
        a.publisher(bind="tcp://*:5556")
        b.subscriber(connect="tcp://a:5556")
        await asyncio.sleep(0.01)

    sim.run(main())
    assert [(s["network"], s["socket"]) for s in registry.as_dict()["sockets"]] == [
        ("a", "pub0"),
        ("b", "sub0"),
    ]
    sim.crash("a")
    assert [(s["network"], s["socket"]) for s in registry.as_dict()["sockets"]] == [("b", "sub0")]
    sim.close()


def test_network_totals_count_the_sockets_closed_between_two_scrapes(
    tk_harness: Harness, registry: MetricsRegistry, server: MetricsServer
) -> None:
    """Short-lived sockets (a Lazy Pirate retry opens a new REQ) still count."""
    srv, cli = tk_harness.network("srv"), tk_harness.network("cli")
    registry.watch_network(cli)
    puller = srv.puller(bind=tk_harness.bind_endpoint())
    endpoint = puller.last_endpoint
    assert endpoint is not None

    async def main() -> None:
        for _ in range(3):
            with cli.pusher(connect=endpoint) as push:
                for _ in range(4):
                    await push.send([b"tick"])
                for _ in range(4):
                    assert await puller.recv(timeout=5.0) == [b"tick"]
        # one more, still open at the scrape
        push = cli.pusher(connect=endpoint)
        await push.send([b"tick"])
        assert await puller.recv(timeout=5.0) == [b"tick"]

    tk_harness.run(main())
    samples = scrape(server)
    cli_label = (("network", "cli"),)
    assert samples[("transportkit_network_messages_sent_total", cli_label)] == 13
    assert samples[("transportkit_network_sockets_closed_total", cli_label)] == 3
    assert samples[("transportkit_sockets_open", (("kind", "PUSH"), ("network", "cli")))] == 1
    networks = registry.as_dict()["networks"]
    assert networks["cli"]["messages_sent"] == 13
    assert (networks["cli"]["sockets_open"], networks["cli"]["sockets_closed"]) == (1, 3)
    # the one open PUSH is the fourth the registry saw on that network
    [row] = registry.as_dict()["sockets"]
    assert (row["socket"], row["messages_sent"]) == ("push3", 1)
    registry.unwatch_network(cli)
    assert registry.as_dict()["networks"] == {}
    puller.close()


def test_scrapes_from_the_http_thread_while_requests_run_on_zmq(
    registry: MetricsRegistry, server: MetricsServer
) -> None:
    """Reads from another thread during traffic: every scrape parses, counters never go back."""
    seen: list[float] = []
    errors: list[BaseException] = []

    def scraper(stop: threading.Event) -> None:
        try:
            while not stop.is_set():
                samples = scrape(server)
                seen.append(
                    samples.get(
                        ("transportkit_network_messages_sent_total", (("network", "cli"),)), 0
                    )
                )
        except BaseException as exc:
            errors.append(exc)

    with ZmqNetwork(name="srv") as srv, ZmqNetwork(name="cli") as cli:
        registry.watch_network(srv)
        registry.watch_network(cli)

        async def main() -> None:
            rep = srv.worker(bind="tcp://127.0.0.1:*")
            endpoint = rep.last_endpoint
            assert endpoint is not None
            task = asyncio.ensure_future(serve_requests(rep, echo))
            with LazyPirateClient(cli, endpoint, timeout=2.0) as client:
                registry.watch(client, name="c")
                for i in range(300):
                    await client.request([b"%d" % i])
            task.cancel()
            rep.close()

        stop = threading.Event()
        thread = threading.Thread(target=scraper, args=(stop,))
        thread.start()
        try:
            asyncio.run(asyncio.wait_for(main(), 20))
        finally:
            stop.set()
            thread.join(10)
    assert errors == []
    assert len(seen) >= 2
    assert seen == sorted(seen)
    assert registry.as_dict()["networks"]["cli"]["messages_sent"] == 300
    assert registry.as_dict()["latency"]["c"]["count"] == 300


def test_help_lines_come_from_the_stats_docstrings(
    registry: MetricsRegistry, server: MetricsServer
) -> None:
    sim = Simulation(seed=1)
    registry.watch(LazyPirateClient(sim.node("c"), "tcp://srv:5555"), name="risk")
    with urllib.request.urlopen(server.url, timeout=5) as response:
        text = response.read().decode()
    assert (
        "# HELP transportkit_lazy_pirate_client_retries_total Resends after a timeout "
        "(attempts beyond each request's first).\n"
    ) in text
    with pytest.raises(ValueError, match="not be one of"):
        registry.watch(ServeStats(), name="s", pattern="socket")
    sim.close()
