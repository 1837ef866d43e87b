"""The XPUB/XSUB conformance check, collected once per backend and transport."""

from __future__ import annotations

import pytest

from transportkit.testing import Harness, check_xpub_subscriptions


@pytest.mark.parametrize("transport", ["tcp", "inproc"])
def test_xpub_subscriptions(tk_harness: Harness, transport: str) -> None:
    check_xpub_subscriptions(tk_harness, transport=transport)
