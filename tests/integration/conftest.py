"""Fixtures for integration tests: the topology and the programs under test.

Every test gets fresh namespaces (harness.netns.Topology), removed afterwards
even when the test fails.  The programs are the console scripts installed next
to the running interpreter (the nox virtualenv), never Debian's C passt/pasta
that may also be on PATH.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.netns import Topology
from harness.netns.topology import cleanup_stale

BIN = Path(sys.executable).parent


def program(name: str) -> str:
    """Absolute path of our console script `name` (passt, pasta, qrap)."""
    path = BIN / name
    if not path.exists():
        pytest.fail(f"{path} missing: install the project (pip install -e .)")
    return str(path)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session", autouse=True)
def _root_and_stale() -> None:
    if os.geteuid() != 0:
        pytest.skip("integration tests need root (namespaces, tap devices)")
    cleanup_stale()


@pytest.fixture
def topo() -> Iterator[Topology]:
    with Topology() as t:
        yield t


@pytest.fixture
def pasta_bin() -> str:
    return program("pasta")


@pytest.fixture
def passt_bin() -> str:
    return program("passt")


@pytest.fixture
def qrap_bin() -> str:
    return program("qrap")


def need(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        pytest.fail(f"{tool} not installed: run scripts/test-all (installs Debian packages)")
    return path
