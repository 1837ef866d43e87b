"""The deterministic SimPy backend: ZeroMQ modelled in virtual time.

Build a :class:`Simulation`, take a :class:`Node` (a :class:`~transportkit.Network`) per
simulated process, and run unmodified ``async def`` trading logic with
:meth:`Simulation.run`; step the same world with :meth:`Simulation.run_for` and
:meth:`Simulation.run_until` (tasks live across calls) and end it with
:meth:`Simulation.close`. A task's unhandled exception fails the call with
:class:`~transportkit.TaskFailed`; :func:`allow_failure` (or ``Node.spawn(...,
may_fail=True)``) declares a task that may fail, recorded in
:attr:`Simulation.task_failures`. Latency, HWM drops, slow joiners, disconnects, partitions and
crashes are modelled; the same seed always gives the same run and the same trace hash.

What is modelled, and how (the choices where libzmq is inexact):

- An inproc path from a sender to a receiver holds at most SNDHWM + RCVHWM messages
  (libzmq's inproc capacity). An ipc or tcp path also holds what fits in the kernel's
  socket buffers between the two pipes: a byte budget per direction from the sockets'
  ``sndbuf``/``rcvbuf`` (tcp only, as in libzmq) or Linux's defaults, each message
  charged its ZMTP bytes (ipc: the kernel's per-write overhead too), and a sender sees
  what left its pipe only every ``(hwm + 1) // 2`` messages (libzmq's pipe
  notifications). See ``_kernel`` for the model and its stated tolerance against real
  libzmq (docs/simulator.md, "Kernel socket buffers").
- A tcp endpoint's host is checked. On connect it must name a node, or be
  ``localhost``/``127.0.0.1``/``::1``/``*``/``0.0.0.0`` for the connecting node itself;
  a host that names no node (resolved again at each attempt, so a node created later
  is found) or a port nobody bound on that node is retried every reconnect interval
  and never connected, traced as ``connect-failed`` with the reason (``unknown host``,
  ``nothing bound``). As in libzmq 4.3, ``connect()`` itself succeeds; an unknown
  host's monitor shows ``CONNECT_RETRIED`` only, a port nobody bound
  ``CONNECT_DELAYED`` then ``CONNECT_RETRIED`` (libzmq's ``CLOSED`` between attempts
  is not modelled). On bind the host must be the node's name or a local address; any
  of them listens on that port of the node for every node (loopback-only binds are not
  modelled), and two nodes may bind the same port. A wildcard-port bind returns the
  endpoint with the node's name (``tcp://exchange:49152``), connectable from any node.
- ipc paths are global to the simulation (one filesystem); inproc names are local to a
  node.
- inproc follows libzmq 4.3's pipes (measured on 4.3.5 in
  ``tests/sim_backend/test_sim_inproc.py``): the connecting socket makes the pipe at
  ``connect()``, bound or not, so ``immediate`` does not apply (SNDHWM messages queue
  for a later binder), and its ``conflate`` is the pipe's, both ways (a binder's has
  no effect). When the binder closes, the pipe ends: what the connecter had queued to
  it is lost and counted in its ``stats.dropped``, its sends find no pipe (PUSH,
  DEALER, REQ and PAIR block, a PUB sends to nobody), and it never connects again,
  even to a new binder of the name, unless ``connect()`` is called again (the old
  endpoint is forgotten: ``disconnect()`` raises EndpointError). What either side
  wrote before closing stays readable by the other, whatever the linger (one pipe),
  unless the node crashed. Monitors (and ``log_connections``) report nothing for
  inproc, as in libzmq (the trace still records connects and disconnects). inproc
  has no handshake: a connecter of a kind the binder cannot talk to (a PUSH to a
  PUB), or a DEALER whose routing id the binding ROUTER already has, gets a pipe
  nobody reads, so what it queues (up to its SNDHWM; libzmq takes SNDHWM plus the
  binder's RCVHWM) is counted as dropped; a second PAIR's pipe ends as when the
  binder closes.
- No queue that can no longer drain takes a message silently. Over ipc/tcp with
  ``reconnect_ivl`` 0 or -1 a dropped connection ends its pipe as over inproc (its
  queue is lost and counted, sends no longer go there); a connect whose only attempt
  failed keeps its pipe (unless ``immediate``), as libzmq does, and accepts up to
  SNDHWM messages that no later bind receives: the sim counts each in
  ``stats.dropped`` (libzmq loses them silently).
- Connecting takes one link delay; subscriptions take one more to reach a publisher
  (the slow joiner); inproc connects and subscribes at once.
- Reconnect attempts follow ``reconnect_ivl`` doubling up to ``reconnect_ivl_max``,
  without libzmq's jitter; as in libzmq, an interval of 0 or -1 never retries.
- A partition holds traffic (as TCP retransmission would) and delivers it on repair;
  with ZMTP heartbeats configured the connection is dropped after the heartbeat timeout.
  A peer's crash is noticed one link delay later, or, across a partition, on repair.
- ``maxmsgsize`` applies as in libzmq 4.3: to each frame (not to a message's total),
  over ipc and tcp only (never inproc). A frame over the limit loses its message,
  counted in the receiver's ``stats.dropped`` and traced as a ``maxmsgsize`` drop,
  and drops the connection like any other dropped connection (what is in flight
  behind it is lost; DISCONNECTED on both monitors); a connecting sender reconnects,
  a connecting receiver does not (libzmq ends a session on a protocol error).
- CURVE security (``curve_*`` options, :meth:`Node.start_authenticator`) follows
  libzmq 4.3.5, whose monitor events and retries were measured for each case (see
  ``Wire._handshake`` and :mod:`transportkit.sim_backend._auth`): over ipc and tcp a
  connection's ends must agree (a CURVE client and a CURVE server; plaintext against
  CURVE fails both ends with ``HANDSHAKE_FAILED_PROTOCOL``), the client's server key
  must be the server's public key (else ``HANDSHAKE_FAILED_PROTOCOL`` on the server,
  ``HANDSHAKE_FAILED_NO_DETAIL`` on the client, which retries), and the server's
  node's authenticator, if one runs, must allow the client's key and address (the
  client node's name over tcp, empty over ipc; else ``HANDSHAKE_FAILED_AUTH`` (400,
  or 500 if the policy's ``decide`` raised) on both ends, decided by
  :meth:`AuthPolicy.decide <transportkit.security.AuthPolicy.decide>` as on the zmq
  backend). The handshake (HELLO, WELCOME, INITIATE, READY) takes two round
  trips of the links after the connection forms. A refused or mismatched client does
  not retry (libzmq ends the session after a protocol error): its queue is lost,
  counted in ``stats.dropped``. Nothing passes before a handshake succeeds; each
  failure is traced as ``handshake-failed`` with its reason, each decision as
  ``zap``. inproc is never secured: CURVE options have no effect there.
- A conflating receiver keeps one frame, as libzmq 4.3 does: of a multipart message only
  the last frame survives (and a conflating SUB filters on that frame), counted in the
  receiver's ``stats.truncated`` and traced as ``truncated``.
- XPUB and XSUB follow libzmq 4.3's ``xpub.cpp`` and ``xsub.cpp`` (the model is in
  ``SimXPublisher``/``SimXSubscriber``). A pipe's subscriptions at a PUB or XPUB are a
  set; a SUB or XSUB counts its own and sends an unsubscription only when the last one
  goes, and on a new connection sends each prefix once, in byte order. A pipe ends
  when its connection ends on the binding side (a subscriber's disconnect, close,
  crash or dropped connection) or its endpoint is given up on the connecting side; an
  XPUB then sees the unsubscriptions of the prefixes only that pipe held (all of them
  with ``xpub_verboser``). Not modelled: libzmq completes a ``disconnect()``,
  attaches an accepted connection (so sends an XPUB's welcome), and has a connecting
  SUB or XSUB resend its subscriptions after a reconnect, only when that socket's
  thread next uses it; the sim does all three at once. While a connecting SUB is
  disconnected it sends nothing: on the reconnect it sends what it is subscribed to
  then, so a subscription made and undone meanwhile never reaches the XPUB (libzmq
  queues both in the pipe and delivers them). An XPUB's received messages are not bounded
  (libzmq's pending queue is not either); unread ones are counted in
  ``stats.dropped`` at close. A PUB discards (and counts) the data an XSUB sends it.

Scheduling (``Simulation(seed, scheduler=...)``, :mod:`transportkit.sim_backend._sched`):
FIFO by default, as asyncio; ``"random"`` and ``"pct"`` reorder the asyncio callbacks
that are ready at once (never SimPy events, so per-pipe FIFO and multipart atomicity
hold), record the choices that differ from FIFO in ``sim.schedule`` and the trace, and
replay them with :class:`ReplayScheduler`; :func:`shrink` reduces a failing run to the
fewest choices and faults. ``Simulation.always`` and ``Simulation.eventually`` check
invariants after every step and raise :class:`~transportkit.InvariantViolation`.

What a run refuses. While the world advances (:meth:`Simulation.run`, ``run_for``,
``run_until``, ``close``), in the thread running it, these
raise :class:`~transportkit.SimulationError` naming the call and what to use instead
(``asyncio.sleep``, ``asyncio.create_task`` or ``Node.spawn``, ``asyncio.Event`` and the
other asyncio primitives, a simulated node and its sockets):

- ``time.sleep`` of a positive duration; ``uuid.uuid1`` (the real clock and this
  machine's address: use ``uuid.uuid4``, seeded in a run);
- starting a thread: ``threading.Thread.start`` (so ``Timer``),
  ``_thread.start_new_thread``, ``ThreadPoolExecutor.submit``, the loop's
  ``run_in_executor`` (so ``asyncio.to_thread``);
- waits that would block on ``threading.Event.wait``, ``Condition.wait`` (and
  ``wait_for``), ``Semaphore``/``BoundedSemaphore`` acquisition, ``Barrier.wait``,
  ``Thread.join``, ``queue.Queue.get``/``put`` (and its subclasses),
  ``concurrent.futures.Future.result``/``exception``;
- processes: ``subprocess.Popen`` (so ``run``, ``call``, ``check_output``, ``os.popen``),
  ``Popen.wait``/``communicate`` on a running child, ``os.system``, ``os.fork``,
  ``os.forkpty``, ``os.posix_spawn``/``posix_spawnp`` (so ``os.spawn*``),
  ``multiprocessing.Process.start``, ``ProcessPoolExecutor.submit``, the loop's
  subprocess methods (so ``asyncio.create_subprocess_exec``);
- real network I/O: ``connect``, ``connect_ex``, ``accept`` and every send and receive
  method of ``socket.socket``, blocking or not; ``socket.create_connection``; name
  resolution (``getaddrinfo``, ``gethostbyname``, ``gethostbyname_ex``,
  ``gethostbyaddr``, ``getnameinfo``); ``select.select`` and the ``selectors``
  selectors' ``select`` with a timeout that can wait; the loop's ``add_reader``,
  ``add_writer``, ``create_connection``, ``create_server`` and ``getaddrinfo`` (so
  pyzmq's asyncio sockets); pyzmq's ``Socket.send``/``recv`` (and the multipart,
  string, JSON and pickle forms), ``Socket.poll``, ``Poller.poll``, ``zmq.proxy``,
  ``zmq.proxy_steerable`` and ``zmq.device``; the zmq backend's sockets' sends,
  receives and polls (blocking, asyncio and monitors).

Calls that cannot wait still work: a zero timeout, an event already set, an item already
in the queue, a free semaphore, ``time.sleep(0)``; so do creating, binding and closing
sockets. A refused call fails the run even if the code caught the error, or lost it in a
task nobody awaits (the run then raises a SimulationError whose cause is the first
refusal). Other threads are not affected, and the originals are restored when the run
ends, however it ends; runs in several threads at once are each guarded.

What is not refused, because the guards replace Python attributes and C code does not
look them up: acquiring a ``threading.Lock`` or ``RLock``, ``queue.SimpleQueue``, a
function imported by name before the run (``from time import sleep`` keeps the
original: call ``time.sleep``), reads and writes on an ``ssl.SSLSocket`` or on files,
pipes and the terminal (``input()``), ``os.wait*``, ``os.exec*``, work handed to a
``multiprocessing`` pool that existed before the run, and pyzmq or the zmq backend
imported for the first time inside the run.

Clocks and randomness are answered from the run instead (in its thread; other threads
get the real ones): ``time.monotonic``, ``time.perf_counter`` and their ``_ns`` forms
read virtual seconds since the simulation began (``loop.time()``), ``time.time`` and
``time.time_ns`` read :data:`VIRTUAL_EPOCH` (2026-01-01T00:00:00Z) plus virtual time (so
do ``gmtime``, ``localtime``, ``ctime``, ``asctime`` and ``strftime`` without a time,
``clock_gettime`` of the real-time and monotonic clocks, and ``logging``'s timestamps,
while each log record also gets a ``sim_time`` attribute: see :mod:`transportkit._log`);
the global ``random`` functions, ``random.SystemRandom``, ``secrets``, ``os.urandom``,
``os.getrandom`` and so ``uuid.uuid4`` draw from :attr:`Simulation.global_rng`, and an
unseeded ``random.Random()`` is seeded from it. ``datetime.now()`` (C, reading the system
clock itself), ``time.process_time``, and clocks imported by name before the run
(``from time import monotonic``) are not intercepted. On Python 3.11,
``asyncio.wait_for`` and ``asyncio.gather`` schedule as on 3.12, so that a run's trace
is the same on 3.11, 3.12 and 3.13. The details are in
:mod:`transportkit.sim_backend._guards`.
"""

from transportkit.sim_backend._auth import SimAuthenticator
from transportkit.sim_backend._faults import (
    FAULT_KINDS,
    Crash,
    DropConnection,
    Fault,
    FaultSchedule,
    Hold,
    Partition,
    Release,
    Repair,
    Restart,
    SetLatency,
    apply_fault,
    schedule_faults,
)
from transportkit.sim_backend._guards import VIRTUAL_EPOCH
from transportkit.sim_backend._latency import (
    Constant,
    Empirical,
    LatencyModel,
    LogNormal,
    Normal,
    Uniform,
)
from transportkit.sim_backend._loop import SimEventLoop
from transportkit.sim_backend._run import TaskFailure, allow_failure
from transportkit.sim_backend._sched import (
    FifoScheduler,
    PCTScheduler,
    RandomScheduler,
    ReplayScheduler,
    Schedule,
    Scheduler,
)
from transportkit.sim_backend._shrink import Shrunk, shrink
from transportkit.sim_backend._topology import Link
from transportkit.sim_backend._trace import Trace, TraceEvent
from transportkit.sim_backend._world import Node, Simulation

__all__ = [
    "FAULT_KINDS",
    "VIRTUAL_EPOCH",
    "Constant",
    "Crash",
    "DropConnection",
    "Empirical",
    "Fault",
    "FaultSchedule",
    "FifoScheduler",
    "Hold",
    "LatencyModel",
    "Link",
    "LogNormal",
    "Node",
    "Normal",
    "PCTScheduler",
    "Partition",
    "RandomScheduler",
    "Release",
    "Repair",
    "ReplayScheduler",
    "Restart",
    "Schedule",
    "Scheduler",
    "SetLatency",
    "Shrunk",
    "SimAuthenticator",
    "SimEventLoop",
    "Simulation",
    "TaskFailure",
    "Trace",
    "TraceEvent",
    "Uniform",
    "allow_failure",
    "apply_fault",
    "schedule_faults",
    "shrink",
]
