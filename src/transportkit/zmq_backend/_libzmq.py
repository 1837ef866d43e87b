"""The libzmq that pyzmq loaded, for the few functions pyzmq does not expose.

pyzmq 27 offers ``Context.term()`` (``zmq_ctx_term``: wait until every socket is
closed) but not ``zmq_ctx_shutdown``, which makes every blocking call on the
context's sockets return ETERM at once and waits for nothing: the one safe way to end
a call that another thread is blocked in. :func:`shutdown_context` calls it through
ctypes, on the very libzmq pyzmq uses (never a second copy).
"""

from __future__ import annotations

import ctypes
import functools
import os
from typing import Any

import zmq

__all__ = ["loaded_libzmq", "shutdown_context"]


@functools.cache
def loaded_libzmq() -> ctypes.CDLL:
    """A ctypes handle on the libzmq pyzmq loaded (bundled or system), version-checked.

    Opening pyzmq's already-loaded backend module again (RTLD_NOLOAD: never a new
    copy) gives a handle whose symbol lookups search the libraries it depends on:
    exactly the libzmq pyzmq resolved. Functions called through it release the GIL.

    Raises:
        OSError: The backend module cannot be reopened.
        RuntimeError: The libzmq found is not the version pyzmq reports.
    """
    from zmq.backend.cython import _zmq  # noqa: PLC0415

    mode = getattr(os, "RTLD_NOLOAD", 0) | getattr(os, "RTLD_NOW", 0)
    lib = ctypes.CDLL(_zmq.__file__, mode=mode)
    version = lib.zmq_version
    version.restype = None
    parts = [ctypes.c_int() for _ in range(3)]
    version(*(ctypes.byref(p) for p in parts))
    found = tuple(p.value for p in parts)
    if found != zmq.zmq_version_info():
        raise RuntimeError(f"found libzmq {found}, pyzmq uses {zmq.zmq_version_info()}")
    return lib


@functools.cache
def _shutdown_function() -> Any:
    function = loaded_libzmq().zmq_ctx_shutdown
    function.argtypes = [ctypes.c_void_p]
    function.restype = ctypes.c_int
    return function


def shutdown_context(ctx: zmq.Context[Any]) -> bool:
    """``zmq_ctx_shutdown(ctx)``: wake every blocking call on ``ctx``'s sockets with ETERM.

    Any later operation on those sockets but ``close`` fails with ETERM too, and no
    socket can be made on ``ctx`` any more. The sockets stay open: ``ctx.term()``
    still waits until each one is closed. Calling it again, or on a terminated
    context, does nothing.

    Returns:
        True if the context was shut down (or already terminated); False if
        ``zmq_ctx_shutdown`` cannot be reached through ctypes on this platform.
    """
    if ctx.closed:
        return True
    try:
        function = _shutdown_function()
    except (OSError, AttributeError, RuntimeError):
        return False
    function(ctx.underlying)  # 0, or EFAULT for a context already gone: either way, done
    return True
