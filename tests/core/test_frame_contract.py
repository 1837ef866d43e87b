"""One frame contract (``transportkit._socket.check_frames``) on every send path.

Each path sends every case below: the zmq backend's blocking socket through the C
accelerator, through the pure-pyzmq fallback and through the zero-copy send, its
asyncio socket through both, and the sim. What a path sends must be what the contract
says (a frame is sent as its memory), and what it refuses must be refused with the
same FrameError message on every path, without sending anything.
"""

from __future__ import annotations

import array
import asyncio
import collections
import itertools
import re
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pytest

from transportkit import FrameError, Pusher, SocketKind
from transportkit._socket import check_frames
from transportkit.sim_backend import Simulation
from transportkit.zmq_backend import ZmqNetwork, _accel, accelerated


class Lying(Sequence[bytes]):
    """A Sequence whose len() disagrees with its items."""

    def __init__(self, items: list[bytes], length: int) -> None:
        self._items, self._length = items, length

    def __len__(self) -> int:
        return self._length

    def __getitem__(self, index: Any) -> Any:
        return self._items[index]


class Honest(Lying):
    def __init__(self, items: list[bytes]) -> None:
        super().__init__(items, len(items))


def _released() -> memoryview:
    view = memoryview(b"gone")
    view.release()
    return view


def _fortran() -> np.ndarray[Any, Any]:
    return np.asfortranarray(np.arange(6, dtype=np.uint8).reshape(2, 3))


# id -> (make the message, the frames it must arrive as, or a FrameError match)
CASES: dict[str, tuple[Callable[[], object], list[bytes] | str]] = {
    # Messages that are sent.
    "list": (lambda: [b"a", b""], [b"a", b""]),
    "tuple": (lambda: (b"a", b"b"), [b"a", b"b"]),
    "deque": (lambda: collections.deque([b"a", b"b"]), [b"a", b"b"]),
    "sequence subclass": (lambda: Honest([b"a", b"b"]), [b"a", b"b"]),
    "bytearray frame": (lambda: [bytearray(b"ab")], [b"ab"]),
    "memoryview frame": (lambda: [memoryview(b"abcd")[1:3]], [b"bc"]),
    "int array frame": (
        lambda: [array.array("i", [1, 2])],
        [array.array("i", [1, 2]).tobytes()],
    ),
    "C-ordered 2-D array": (
        lambda: [np.arange(6, dtype=np.uint8).reshape(2, 3)],
        [bytes(range(6))],
    ),
    "1-D float array": (lambda: [np.ones(2)], [np.ones(2).tobytes()]),
    "empty array": (lambda: [np.zeros((0, 3), order="F")], [b""]),
    "Fortran row (also C-contiguous)": (
        lambda: [np.asfortranarray(np.arange(3, dtype=np.uint8).reshape(1, 3))],
        [bytes(range(3))],
    ),
    # Messages that are refused.
    "empty list": (lambda: [], "at least one frame"),
    "empty tuple": (lambda: (), "at least one frame"),
    "single bytes": (lambda: b"raw", "got a single bytes"),
    "single bytearray": (lambda: bytearray(b"raw"), "got a single bytearray"),
    "single memoryview": (lambda: memoryview(b"raw"), "got a single memoryview"),
    "single str": (lambda: "text", "got a single str"),
    "single array": (lambda: array.array("b", [1]), "got a single array"),
    "single ndarray": (lambda: np.zeros(3), "got a single ndarray"),
    "dict": (lambda: {b"a": 1, b"b": 2}, "got dict"),
    "dict keys": ({b"a": 1}.keys, "got dict_keys"),
    "set": (lambda: {b"a"}, "got set"),
    "generator": (lambda: (f for f in [b"a", b"b"]), "got generator"),
    "iterator": (lambda: iter([b"a"]), "got list_iterator"),
    "None": (lambda: None, "got NoneType"),
    "len too short": (lambda: Lying([b"a", b"b"], 1), "len\\(\\) is 1 but iterating it gives 2"),
    "len too long": (lambda: Lying([b"a", b"b"], 3), "len\\(\\) is 3 but iterating it gives 2"),
    "range": (lambda: range(2), "frame 0 is int 0"),
    # Frames that are refused (the good frame before them must not be sent).
    "str frame": (lambda: [b"ok", "text"], "frame 1 is str 'text'"),
    "int frame": (lambda: [b"ok", 42], "frame 1 is int 42"),
    "None frame": (lambda: [b"ok", None], "frame 1 is NoneType"),
    "strided memoryview": (
        lambda: [b"ok", memoryview(bytearray(b"abcdef"))[::2]],
        "frame 1 is a memoryview whose memory is not C-contiguous",
    ),
    "Fortran-ordered array": (
        lambda: [b"ok", _fortran()],
        "frame 1 is a ndarray whose memory is not C-contiguous",
    ),
    "non-contiguous slice": (
        lambda: [b"ok", np.arange(12, dtype=np.uint8).reshape(3, 4)[:, ::2]],
        "frame 1 is a ndarray whose memory is not C-contiguous",
    ),
    "released memoryview": (
        lambda: (b"ok", _released()),
        "frame 1 is a memoryview whose buffer cannot be read",
    ),
}

Outcome = tuple[str, Any]
_names = itertools.count()


def _refused(exc: FrameError) -> str:
    return str(exc).split("cannot send: ", 1)[-1]


async def _async_outcomes(push: Pusher, pull: Any) -> dict[str, Outcome]:
    """Each case's outcome: ("sent", frames received), ("refused", FrameError message)
    or, for a path that breaks the contract, what happened instead."""
    results: dict[str, Outcome] = {}
    for name, (make, _) in CASES.items():
        try:
            await push.send(make())  # type: ignore[arg-type]
        except FrameError as exc:
            results[name] = ("refused", _refused(exc))
        except Exception as exc:
            results[name] = (f"raised {type(exc).__name__}", str(exc))
        else:
            results[name] = ("sent", await pull.recv(timeout=2))
            continue
        await push.send([b"marker"])
        if (got := await pull.recv(timeout=2)) != [b"marker"]:
            results[name] = ("refused, but sent part of it first", got)
    return results


def _blocking_outcomes(net: ZmqNetwork, *, copy: bool) -> dict[str, Outcome]:
    endpoint = f"inproc://frames-{next(_names)}"
    pull = net.blocking(SocketKind.PULL, bind=endpoint)
    push = net.blocking(SocketKind.PUSH, connect=endpoint)
    results: dict[str, Outcome] = {}
    for name, (make, _) in CASES.items():
        try:
            push.send(make(), copy=copy)  # type: ignore[arg-type]
        except FrameError as exc:
            results[name] = ("refused", _refused(exc))
        except Exception as exc:
            results[name] = (f"raised {type(exc).__name__}", str(exc))
        else:
            results[name] = ("sent", pull.recv(timeout=2))
            continue
        push.send([b"marker"])
        if (got := pull.recv(timeout=2)) != [b"marker"]:
            results[name] = ("refused, but sent part of it first", got)
    return results


def _zmq_async_outcomes(net: ZmqNetwork) -> dict[str, Outcome]:
    async def main() -> dict[str, Outcome]:
        endpoint = f"inproc://frames-{next(_names)}"
        with net.puller(bind=endpoint) as pull, net.pusher(connect=endpoint) as push:
            return await _async_outcomes(push, pull)

    return asyncio.run(asyncio.wait_for(main(), 30))


def _sim_outcomes() -> dict[str, Outcome]:
    sim = Simulation(seed=1)
    node = sim.node("n")

    async def main() -> dict[str, Outcome]:
        with node.puller(bind="inproc://f") as pull, node.pusher(connect="inproc://f") as push:
            return await _async_outcomes(push, pull)

    return sim.run(main(), timeout=60)


def _implementations() -> list[Any]:
    params = [pytest.param((_accel.py_recv_message, _accel.py_send_message), id="py")]
    if accelerated()[0]:
        params.append(pytest.param((_accel.recv_message, _accel.send_message), id="c"))
    return params


@pytest.fixture(params=_implementations())
def zmq_impl(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    recv_message, send_message = request.param
    monkeypatch.setattr(_accel, "recv_message", recv_message)
    monkeypatch.setattr(_accel, "send_message", send_message)
    if recv_message is _accel.py_recv_message:
        monkeypatch.setattr(_accel, "wait", _accel.py_wait)
    return "py" if recv_message is _accel.py_recv_message else "c"


def _check(results: dict[str, Outcome]) -> None:
    wrong = {}
    for name, (make, expected) in CASES.items():
        kind, got = results[name]
        if isinstance(expected, list):
            if (kind, got) != ("sent", expected):
                wrong[name] = f"{kind} {got!r}, expected sent {expected!r}"
            continue
        try:
            check_frames(make())
            contract = "(check_frames accepts it)"
        except FrameError as exc:
            contract = str(exc)
        if kind != "refused" or got != contract or not re.search(expected, got):
            wrong[name] = f"{kind} {got!r}, expected {expected!r}: {contract!r}"
    assert not wrong, "\n".join(f"{name}: {what}" for name, what in wrong.items())


def test_check_frames_is_the_contract() -> None:
    for name, (make, expected) in CASES.items():
        if isinstance(expected, list):
            frames = check_frames(make())
            assert [bytes(memoryview(f)) for f in frames] == expected, name
        else:
            with pytest.raises(FrameError, match=expected):
                check_frames(make())


def test_check_frames_returns_a_list_iterated_once() -> None:
    calls = []

    class Counting(Honest):
        def __getitem__(self, index: Any) -> Any:
            calls.append(index)
            return super().__getitem__(index)

    assert check_frames(Counting([b"a", b"b"])) == [b"a", b"b"]
    assert calls == [0, 1, 2]  # two items, then the IndexError that ends the iteration
    same = [b"x"]
    assert check_frames(same) is same


@pytest.mark.parametrize("copy", [True, False], ids=["copy", "zero-copy"])
def test_the_blocking_zmq_send_keeps_the_contract(zmq_impl: str, copy: bool) -> None:
    with ZmqNetwork() as net:
        _check(_blocking_outcomes(net, copy=copy))


def test_the_asyncio_zmq_send_keeps_the_contract(zmq_impl: str) -> None:
    with ZmqNetwork() as net:
        _check(_zmq_async_outcomes(net))


def test_the_sim_send_keeps_the_contract() -> None:
    _check(_sim_outcomes())


def test_every_path_refuses_with_the_same_message() -> None:
    """The sim's messages against the zmq ones, C and fallback, word for word."""
    sim = _sim_outcomes()
    with ZmqNetwork() as net:
        paths: dict[str, dict[str, Outcome]] = {"sim": sim}
        for impl in _implementations():
            recv_message, send_message = impl.values[0]
            with pytest.MonkeyPatch.context() as patch:
                patch.setattr(_accel, "recv_message", recv_message)
                patch.setattr(_accel, "send_message", send_message)
                paths[f"blocking-{impl.id}"] = _blocking_outcomes(net, copy=True)
                paths[f"async-{impl.id}"] = _zmq_async_outcomes(net)
    for name, results in paths.items():
        assert results == sim, f"{name} differs from the sim: " + str(
            {case: (results[case], sim[case]) for case in CASES if results[case] != sim[case]}
        )
