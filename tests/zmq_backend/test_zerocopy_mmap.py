"""MappedFile: regions of a read-only mapping sent without a copy; never unmapped
while libzmq holds one. Real sockets, LINGER=0, every wait bounded.
"""

from __future__ import annotations

import mmap
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from transportkit import ClosedError, SocketKind, SocketOptions, Timeout, UnsupportedError
from transportkit.zmq_backend import BlockingSocket, MappedFile, ZmqNetwork

MB = 1 << 20
OPTS = SocketOptions(linger=0, rcvtimeo=2000, sndtimeo=2000)


@pytest.fixture
def data_file(tmp_path: Path) -> Path:
    path = tmp_path / "regions.bin"
    path.write_bytes(os.urandom(4 * MB + 123))
    return path


@pytest.fixture
def inproc(
    net: ZmqNetwork, endpoint_for: Callable[[str], str]
) -> Iterator[tuple[BlockingSocket, BlockingSocket]]:
    push = net.blocking(SocketKind.PUSH, options=OPTS)
    pull = net.blocking(SocketKind.PULL, options=OPTS)
    try:
        pull.connect(push.bind(endpoint_for("inproc")))
        yield push, pull
    finally:
        push.close()
        pull.close()


@pytest.mark.parametrize("transport", ["inproc", "ipc", "tcp"])
def test_received_bytes_are_the_regions(
    net: ZmqNetwork, endpoint_for: Callable[[str], str], data_file: Path, transport: str
) -> None:
    content = data_file.read_bytes()
    regions = [(0, MB), (MB + 7, MB), (3 * MB, MB + 123), (10, 100), (5, 0)]
    with (
        net.blocking(SocketKind.PUSH, options=OPTS) as push,
        net.blocking(SocketKind.PULL, options=OPTS) as pull,
        MappedFile(data_file) as mapped,
    ):
        pull.connect(push.bind(endpoint_for(transport)))
        assert mapped.size == len(content)
        for offset, length in regions:
            mapped.send(push, offset, length, prefix=[b"file", str(offset).encode()])
        for offset, length in regions:
            got = pull.recv_buffers(timeout=2.0)
            assert [bytes(f) for f in got] == [
                b"file",
                str(offset).encode(),
                content[offset : offset + length],
            ]
            del got
        assert mapped.read(MB, 16) == content[MB : MB + 16]
    assert mapped.closed


def test_close_with_a_region_in_flight_times_out_and_keeps_the_mapping(
    inproc: tuple[BlockingSocket, BlockingSocket], data_file: Path
) -> None:
    push, pull = inproc
    content = data_file.read_bytes()
    mapped = MappedFile(data_file)
    tracker = mapped.send(push, MB, MB)  # queued, unread: libzmq points into the map
    with pytest.raises(Timeout, match="1 region\\(s\\) still held by libzmq"):
        mapped.close(0.2)
    assert not mapped.closed and mapped.in_flight == 1 and not tracker.done
    with pytest.raises(ClosedError, match="closed"):
        mapped.send(push, 0, MB)  # closing: no new sends
    # The mapping is intact: the queued message still reads the file's bytes.
    [frame] = pull.recv_buffers(timeout=2.0)
    assert bytes(frame) == content[MB : 2 * MB]
    with pytest.raises(Timeout):
        mapped.close(0.05)  # the receiver's view is libzmq's message: still held
    del frame
    mapped.close(2.0)
    assert mapped.closed and tracker.done
    mapped.close()  # idempotent


def test_close_succeeds_once_the_socket_dropped_the_message(
    net: ZmqNetwork, endpoint_for: Callable[[str], str], data_file: Path
) -> None:
    push = net.blocking(SocketKind.PUSH, options=OPTS)
    pull = net.blocking(SocketKind.PULL, options=OPTS)
    try:
        pull.connect(push.bind(endpoint_for("inproc")))
        mapped = MappedFile(data_file)
        mapped.send(push, 0, 2 * MB)
        with pytest.raises(Timeout):
            mapped.close(0.05)
    finally:
        push.close()
        pull.close()  # LINGER=0: the queued message is dropped, libzmq lets go
    mapped.close(2.0)
    assert mapped.closed


def test_python_refuses_to_unmap_an_exported_mapping(data_file: Path) -> None:
    """What MappedFile designs around: mmap.close() with a live view raises."""
    with data_file.open("rb") as f:
        mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    view = memoryview(mm)[:10]
    with pytest.raises(BufferError):
        mm.close()
    view.release()
    mm.close()


def test_regions_are_checked_and_the_sim_refused(
    inproc: tuple[BlockingSocket, BlockingSocket], data_file: Path, tmp_path: Path
) -> None:
    push, _ = inproc
    with MappedFile(data_file) as mapped:
        size = mapped.size
        for offset, length in ((-1, 1), (0, size + 1), (size, 1), (0, -1)):
            with pytest.raises(ValueError, match=r"outside|ints"):
                mapped.send(push, offset, length)
        with pytest.raises(UnsupportedError, match="blocking socket"):
            mapped.send(object(), 0, 1)
    with pytest.raises(ClosedError):
        mapped.read(0, 1)
    empty = tmp_path / "empty"
    empty.write_bytes(b"")
    with pytest.raises(ValueError, match="empty"):
        MappedFile(empty)
    with pytest.raises(FileNotFoundError):
        MappedFile(tmp_path / "missing")
