"""SIGTERM ends a test run the way Ctrl-C does: with every fixture's teardown.

A caller that stops the suite (a CI time limit, `timeout(1)`, a developer's
`kill`) sends SIGTERM, which by default ends Python at once: no finalizer
runs, so the namespaces, the passt/pasta under test and the servers that the
running tests started stay behind.  Raised as KeyboardInterrupt instead, it
lets pytest unwind as it does for SIGINT: the running test's and the
session's fixtures are torn down, and pytest exits with status 2
(interrupted).  A second SIGTERM ends the process at once, as before.
"""

from __future__ import annotations

import signal
from types import FrameType

import pytest


def _interrupt(signum: int, _frame: FrameType | None) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    raise KeyboardInterrupt(f"signal {signum}: tearing down")


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    """In the controller and in every xdist worker (each runs pytest_configure)."""
    signal.signal(signal.SIGTERM, _interrupt)
