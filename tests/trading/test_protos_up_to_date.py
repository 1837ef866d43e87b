"""The checked-in generated protobuf code matches a fresh regeneration."""

from __future__ import annotations

import difflib
import importlib.util
from pathlib import Path

import pytest

from transportkit.trading import _codegen
from transportkit.trading._pb import trading_pb2


def test_generated_protobuf_code_is_up_to_date(tmp_path: Path) -> None:
    if importlib.util.find_spec("grpc_tools") is None:
        pytest.fail(
            "grpcio-tools is needed to check that transportkit/trading/_pb is up to date: "
            "pip install -e '.[dev]'"
        )
    _codegen.generate(tmp_path)
    stale = []
    for name in _codegen.GENERATED_FILES:
        fresh = (tmp_path / name).read_text(encoding="utf-8")
        checked_in = (_codegen.PACKAGE_DIR / name).read_text(encoding="utf-8")
        if fresh != checked_in:
            diff = difflib.unified_diff(
                checked_in.splitlines(keepends=True),
                fresh.splitlines(keepends=True),
                f"checked-in _pb/{name}",
                f"regenerated _pb/{name}",
            )
            stale.append("".join(diff))
    assert not stale, (
        "transportkit/trading/_pb is stale; run `python -m transportkit.trading._codegen` "
        "and commit the result.\n" + "\n".join(stale)
    )


def test_generated_code_imports_with_the_installed_protobuf_runtime() -> None:
    order = trading_pb2.Order(id="1", symbol="AAPL", side=trading_pb2.SIDE_BUY, quantity=5)
    assert trading_pb2.Order.FromString(order.SerializeToString()) == order
    assert type(order).__module__ == "transportkit.trading._pb.trading_pb2"
