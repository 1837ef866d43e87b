"""Command-line example programs for the patterns, on the zmq backend.

Each module runs as ``python -m transportkit.examples.<name> --help``; servers
print ``READY <endpoint>`` once bound (what :class:`transportkit.testing.ChildProcess`
waits for).
"""
