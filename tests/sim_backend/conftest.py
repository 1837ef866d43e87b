"""Shared constants for the sim backend tests: every test body runs in virtual time."""

from __future__ import annotations

TCP = "tcp://127.0.0.1:*"
"""A wildcard tcp endpoint to bind."""

VIRTUAL_LIMIT = 7200.0
"""Virtual seconds a test body may run: a bug that loops in virtual time (retrying for
ever, say) fails the test with Timeout instead of spinning until pytest's wall timeout."""
