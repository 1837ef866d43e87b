"""Regenerate the checked-in protobuf code from ``protos/`` (a developer tool).

Run ``python -m transportkit.trading._codegen`` from the repository root after editing
``protos/transportkit/trading/v1/trading.proto``. It needs grpcio-tools (in the ``dev``
extra), which bundles ``protoc``; the protobuf runtime must be at least as new
as the ``protoc`` that generated the code (the generated module checks this on import).
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Final

__all__ = ["GENERATED_FILES", "PROTO", "generate", "main"]

REPO_ROOT: Final = Path(__file__).resolve().parents[3]
PROTO_ROOT: Final = REPO_ROOT / "protos"
PROTO: Final = "transportkit/trading/v1/trading.proto"
PACKAGE_DIR: Final = Path(__file__).resolve().parent / "_pb"

_PROTOC_MODULE: Final = "transportkit.trading.v1.trading_pb2"
_PACKAGE_MODULE: Final = "transportkit.trading._pb.trading_pb2"

GENERATED_FILES: Final = ("trading_pb2.py", "trading_pb2.pyi")
"""The files :func:`generate` writes, relative to the ``_pb`` package."""


def generate(out_dir: Path, proto_root: Path = PROTO_ROOT) -> list[Path]:
    """Generate the ``_pb`` modules into ``out_dir`` and return the files written.

    protoc names the module after the proto's path (``transportkit.trading.v1``); the
    code is moved into ``transportkit.trading._pb`` and its module name rewritten to
    match, so that messages pickle and repr under the module that really holds them.

    Raises:
        RuntimeError: grpcio-tools is not installed, or protoc failed (its stderr is
            in the message).
    """
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [
            sys.executable,
            "-m",
            "grpc_tools.protoc",
            f"-I{proto_root}",
            f"--python_out={tmp}",
            f"--pyi_out={tmp}",
            str(proto_root / PROTO),
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            detail = proc.stderr.strip() or proc.stdout.strip()
            if "No module named grpc_tools" in detail:
                detail = "grpcio-tools is not installed: pip install -e '.[dev]'"
            raise RuntimeError(f"protoc failed on {PROTO}: {detail}")
        produced = Path(tmp) / Path(PROTO).parent
        out_dir.mkdir(parents=True, exist_ok=True)
        written = []
        for name in GENERATED_FILES:
            text = (produced / name).read_text(encoding="utf-8")
            text = text.replace(f"'{_PROTOC_MODULE}'", f"'{_PACKAGE_MODULE}'")
            target = out_dir / name
            target.write_text(text, encoding="utf-8")
            written.append(target)
        return written


def main() -> int:
    """Regenerate the checked-in code in place; return a process exit status."""
    for path in generate(PACKAGE_DIR):
        print(f"wrote {path.relative_to(REPO_ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
