"""Keyword checks that say what to write instead.

Two helpers for public callables whose keyword errors Python cannot make helpful:
:func:`check_keywords`, for keywords forwarded through ``**options`` to another
callable (Python would blame the inner callable, and late), and :func:`renamed`, for a
keyword that was renamed (Python would only say it is unexpected).
"""

from __future__ import annotations

import difflib
import functools
import inspect
from collections.abc import Callable, Iterable
from typing import Any, ParamSpec, TypeVar

__all__ = ["RETRIES_COUNTED_ATTEMPTS", "accepted_keywords", "check_keywords", "renamed"]

P = ParamSpec("P")
R = TypeVar("R")


def accepted_keywords(func: Callable[..., Any]) -> tuple[str, ...]:
    """The names ``func`` accepts as keywords (positional-or-keyword and keyword-only)."""
    kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    return tuple(
        name
        for name, param in inspect.signature(func).parameters.items()
        if param.kind in kinds and name != "self"
    )


def check_keywords(given: Iterable[str], accepted: Iterable[str], *, where: str) -> None:
    """Raise TypeError for the first name of ``given`` not in ``accepted``.

    Args:
        given: The keywords a caller passed.
        accepted: Every keyword that makes sense there.
        where: What was called, for the message (``"sim_test()"``).

    Raises:
        TypeError: ``"{where} got an unexpected keyword argument 'x'; did you mean
            'y'?"`` (the suggestion when a known name is close).
    """
    known = sorted(set(accepted))
    for name in given:
        if name not in known:
            close = difflib.get_close_matches(name, known, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise TypeError(f"{where} got an unexpected keyword argument {name!r}{hint}")


def renamed(
    old: str, new: str, why: str, convert: Callable[[Any], Any] = lambda value: value
) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Make keyword ``old`` of the decorated callable an error that says what to write.

    The decorated callable keeps its signature (type checkers and ``inspect`` see the
    new name only). Passing ``old=value`` raises TypeError, naming ``new`` and the
    value to give it (``convert(value)``: the same value, unless the meaning changed
    with the name).

    Args:
        old: The keyword that no longer exists.
        new: Its replacement.
        why: Why, in a few words, for the message.
        convert: The ``new`` value that does what ``old=value`` did.
    """

    def decorate(func: Callable[P, R]) -> Callable[P, R]:
        owner = func.__qualname__.removesuffix(".__init__")

        @functools.wraps(func)
        def checked(*args: P.args, **kwargs: P.kwargs) -> R:
            if old in kwargs:
                value = kwargs[old]
                try:
                    advice = f"; write {new}={convert(value)!r}"
                except Exception:
                    advice = ""
                raise TypeError(f"{owner}(): {old}= is now {new}= ({why}){advice}")
            return func(*args, **kwargs)

        return checked

    return decorate


RETRIES_COUNTED_ATTEMPTS = (
    "it counts every send of a request, the first included, and always did: "
    "retries=3 meant three sends"
)
"""Why ``retries=`` became ``attempts=`` on the request clients (for :func:`renamed`)."""
