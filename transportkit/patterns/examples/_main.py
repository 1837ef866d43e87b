"""The entry point every example program shares."""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

__all__ = ["run_main"]


def run_main(
    parse_args: Callable[[Sequence[str] | None], argparse.Namespace],
    run: Callable[[argparse.Namespace], Coroutine[Any, Any, int]],
    argv: Sequence[str] | None,
) -> int:
    """Parse ``argv``, run the example's coroutine, and return its exit status
    (130 on Ctrl-C, as a shell would report it).
    """
    try:
        return asyncio.run(run(parse_args(argv)))
    except KeyboardInterrupt:
        return 130
