"""pasta throughput and latency gates against baselines measured in the same run.

Baselines first (direct = the veth/loopback ceiling, Debian's C pasta, slirp4netns), then ours on
the same paths; see conftest.py for the topology and harness/perf.py for the measurements.
Only a collapse of ours fails (conftest.gate); every number is recorded in $PASST_PERF_OUT.
"""

from __future__ import annotations

import pytest

from tests.perf.conftest import DIRECT_PATHS, MTUS, PATHS_AT, Bench, check_baseline, gate

CASES = [pytest.param(mtu, path, id=f"{mtu}-{path}") for mtu in MTUS for path in PATHS_AT[mtu]]


@pytest.mark.parametrize("path", DIRECT_PATHS)
def test_direct_baseline(bench: Bench, path: str) -> None:
    """The no-tool ceiling: clients in the host namespace over the veth or its loopback."""
    check_baseline(bench.measure("direct", path, None))


@pytest.mark.parametrize(("mtu", "path"), CASES)
def test_c_pasta_baseline(bench: Bench, mtu: int, path: str) -> None:
    """Debian's C pasta on the same path (n/a when not installed)."""
    check_baseline(bench.measure("c", path, mtu))


@pytest.mark.parametrize(("mtu", "path"), CASES)
def test_slirp4netns_baseline(bench: Bench, mtu: int, path: str) -> None:
    """slirp4netns on the same path (n/a for -T splice, or when not installed)."""
    check_baseline(bench.measure("slirp4netns", path, mtu))


@pytest.mark.parametrize(("mtu", "path"), CASES)
def test_pasta_gate(bench: Bench, mtu: int, path: str) -> None:
    """Our pasta does not collapse: >= MIN_RATIO of direct, every run completes, no TCP stall."""
    gate(bench, path, mtu)
