"""What a scenario file may ask for, and why: every bound the loader enforces.

A file that passes validation must run to its end in bounded time and memory on both
backends, so every count, number and string in it is bounded here, and the load the
file describes is estimated before the run (:mod:`transportkit.scenario._budget`).
The figures behind the bounds were measured on a shared 2-core VM (Python 3.11):

- The sim costs about 10 us of wall time per *event*: a message sent, a message
  delivered, or a timer wake-up (``scenarios/market_data_million.toml``: one million
  updates sent and delivered and 10,000 publisher ticks in 21 s).
  :data:`MAX_EVENTS` bounds a run at about 50 s of sim time.
- A recorded trace keeps each send, delivery and connection change: about 17 bytes
  an event as recorded, about 160 once its events are read (``--trace``, a plot);
  :data:`MAX_TRACED_EVENTS` bounds it at about 160 MB at the most.
- A message queued in the sim (a publisher's send that no subscriber has read yet)
  costs about 0.7 KB (500,000 queued: 392 MB peak RSS); :data:`MAX_QUEUED` bounds the
  queues there. On zmq the high-water marks bound the same queues in libzmq.
- On zmq every node is a ZeroMQ context with its own I/O thread, and every component
  opens one to three sockets: 64 nodes running 256 components peaked at 1,065 open
  file descriptors, and a run is refused before it starts when its estimate exceeds
  the process's limit of open files.
- The zmq backend runs in real time, so a run lasts ``duration + drain`` seconds:
  :data:`MAX_RUN_SECONDS` (an hour) is also the ceiling of the latency histograms.
"""

from __future__ import annotations

from typing import Final

MAX_FILE_BYTES: Final = 1 << 20
"""Largest scenario file (1 MiB). The shipped ones are 1.5 to 4.5 KB; 1 MiB holds the
largest scenario the other bounds allow (256 components, 100,000 latency samples)."""

MAX_NESTING: Final = 10
"""Deepest nesting of arrays and inline tables (TOML's parser recurses on them; the
scenario format needs two levels)."""

MAX_KEY_PARTS: Final = 8
"""Most parts of a dotted key or a table header (``component.burst`` has two)."""

MAX_NAME_CHARS: Final = 100
"""Longest name: scenario, component, node, stream, symbol, metric."""

MAX_TEXT_CHARS: Final = 256
"""Longest other string (an endpoint, a socket's routing id)."""

MAX_DESCRIPTION_CHARS: Final = 1000
"""Longest description (of the scenario, of an invariant)."""

MAX_LIST_ITEMS: Final = 1000
"""Most entries of a list of names (a component's ``symbols``)."""

MAX_SAMPLES: Final = 100_000
"""Most samples of an empirical latency model."""

MAX_COMPONENTS: Final = 256
"""Most ``[[component]]`` tables (the flagship has 10)."""

MAX_NODES: Final = 64
"""Most nodes (distinct ``node`` names of the components)."""

MAX_PROCESS_NODES: Final = 16
"""Most nodes with ``process = true``: each is a Python interpreter of its own on zmq
(about 35 MB) that must say READY within 20 s on a machine it shares."""

MAX_CHILD_STARTS: Final = 64
"""Most child processes a run may start on zmq: the process nodes and every restart
fault aimed at one of them."""

MAX_LINKS: Final = 4096
"""Most ``[[link]]`` tables (64 nodes make 2,016 pairs)."""

MAX_FAULTS: Final = 1000
"""Most ``[[fault]]`` tables."""

MAX_INVARIANTS: Final = 1000
"""Most ``[[invariant]]`` tables."""

MAX_BURSTS: Final = 1000
"""Most ``[[component.burst]]`` tables of one publisher."""

MAX_RUN_SECONDS: Final = 3600.0
"""Longest run, ``duration + drain`` (seconds of virtual time on the sim, of real time
on zmq)."""

MAX_SEED: Final = 2**63 - 1
"""Largest seed (seeds are integers from 0)."""

MAX_LATENCY_US: Final = 60_000_000.0
"""Largest latency parameter in microseconds (60 s one way: far beyond any network)."""

MAX_SIGMA: Final = 4.0
"""Largest log-normal ``sigma`` (P99 over 10,000 times the median; a sample must stay
a finite float)."""

MAX_SERVICE_US: Final = 60_000_000.0
"""Largest per-message service or processing time in microseconds (60 s)."""

MAX_PUBLISH_RATE: Final = 1_000_000.0
"""Largest ``market_data_publisher`` rate per second: 1,000 updates back to back per
1 ms tick, above what one PUB socket sends on zmq (about 500,000 a second)."""

MAX_REQUEST_RATE: Final = 100_000.0
"""Largest rate per second of the request clients and of a Clone server's updates."""

MIN_HEARTBEAT_MS: Final = 1.0
"""Shortest heartbeat interval (ZeroMQ's heartbeats have millisecond resolution)."""

MIN_INTERVAL_MS: Final = 0.01
"""Shortest timeout or polling interval in milliseconds (10 us)."""

MAX_INTERVAL_MS: Final = MAX_RUN_SECONDS * 1000
"""Longest timeout, heartbeat or polling interval in milliseconds (the longest run)."""

MAX_ATTEMPTS: Final = 100
"""Most sends of a Lazy Pirate request (a request client's ``attempts``)."""

MAX_LIVENESS: Final = 100
"""Largest Paranoid Pirate liveness (heartbeats missed before a peer is dead)."""

MAX_QUANTITY: Final = 1_000_000_000
"""Largest order quantity and position limit (shares)."""

MAX_CAPITAL: Final = 1e13
"""Largest risk capital (a double still counts its cents exactly)."""

MAX_LATENCY_BOUND_US: Final = MAX_RUN_SECONDS * 1e6
"""Largest latency an invariant may ask about (the histograms stop at an hour)."""

MAX_EVENTS: Final = 5_000_000
"""Most events (messages sent, messages delivered, timer wake-ups) a run may cost, as
estimated from its rates, bursts, intervals and fan-out: about 50 s on the sim."""

MAX_TRACED_EVENTS: Final = 1_000_000
"""Most events when the trace is recorded (``record_trace``, the default, or
``--trace``): about 17 MB of trace as recorded, 160 MB once its events are read."""

MAX_QUEUED: Final = 500_000
"""Most messages that may wait in queues at once, as allowed by the high-water marks
of publishers and subscribers (0 means unlimited: then what is sent) and, over ipc and
tcp, the kernel's socket buffers between them."""
