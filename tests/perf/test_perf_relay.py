"""passt's socket path at full speed: a tap relayed to passt's socket, no virtual machine.

A QEMU guest under TCG is CPU-bound near 1 Gbit/s whatever passt does (test_perf_passt), so
it cannot show passt's own data path. Here ``framerelay`` (framerelay.c, built with gcc by
the fixture) stands in for QEMU: it creates a tap in a namespace of its own and carries its
frames to and from passt's UNIX socket with ``-netdev stream`` framing, so that namespace's
kernel is the guest::

    netns VM  eth0 (tap) <-framerelay-> passt.socket --> passt (HOST) --veth--> WAN
              10.77.0.2/24 via 10.77.0.1                                  iperf3 :5201, rr :7001

The guest side is configured statically with what passt's DHCP would hand out (the host's
address and gateway), so no lease client is part of the measurement. Paths: relay_up,
relay_down (iperf3), relay_rr, relay_crr (rr-client). Baselines: Debian's C passt and, when
``$PASST_PERF_PEER_PASST`` names one, another passt build ("peer"). Ours is gated like the
VM rows: collapse only (a failed run, a 0 bit/s interval, below MIN_RATIO of C passt).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Final

import pytest

from harness.netns import HOST_ADDR4, WAN_ADDR4, WAN_GW4, Topology
from harness.perf import PATHS, Measurement
from tests.perf.conftest import (
    C_PASST,
    PEER_PASST,
    WAN_IPERF,
    WAN_RR,
    Bench,
    Impl,
    ProcServed,
    check_baseline,
    installed,
    measure_together,
    our_program,
    passt_gate,
    serve_wan,
    start_passt,
    tune_for_crr,
)

SRC: Final = Path(__file__).with_name("framerelay.c")
RELAY_PATHS: Final = ("relay_up", "relay_down", "relay_rr", "relay_crr")
RELAY_MTU: Final = 65520
"""passt's default MTU; the tap in the VM namespace gets the same."""
GUEST_MAC: Final = "52:54:00:12:34:56"
READY_TIMEOUT_S: Final = 15.0
PING_TRIES: Final = 50
"""Gateway reachability probes (1 s timeout each) before the link counts as broken."""


class RelayError(RuntimeError):
    """The relay or the guest side did not come up; the message says which step."""


@pytest.fixture(scope="module")
def framerelay(tmp_path_factory: pytest.TempPathFactory) -> str:
    """framerelay.c built for this session."""
    gcc = shutil.which("gcc")
    if gcc is None:
        pytest.skip("gcc not installed: cannot build framerelay")
    out = tmp_path_factory.mktemp("relay") / "framerelay"
    res = subprocess.run([gcc, "-O2", "-Wall", "-Wextra", "-Werror", "-o", str(out), str(SRC)],
                         capture_output=True, text=True, check=False)
    assert res.returncode == 0, f"framerelay does not build:\n{res.stderr}"
    return str(out)


class RelayServed(ProcServed):
    """One passt behind the relay (what Bench.run_iperf / run_rr need of it)."""

    def __init__(self, impl: Impl, topo: Topology, vm: str, proc: subprocess.Popen[bytes],
                 log: Path) -> None:  # fmt: skip
        self.impl = impl
        self.topo = topo
        self.vm = vm
        self.proc = proc
        self.log = log

    @property
    def ns(self) -> str:
        return self.vm


def _binary(impl_key: str) -> str | None:
    if impl_key == "ours":
        return our_program("passt")
    if impl_key == "c":
        return installed(C_PASST)
    return installed(PEER_PASST) if PEER_PASST else None


def measure_relay(bench: Bench, relay: str, impl_key: str) -> dict[str, Measurement]:
    """Every relay path for one passt (cached in the bench), on one topology."""
    got = {p: bench.results.get(impl_key, p, RELAY_MTU) for p in RELAY_PATHS}
    if all(m is not None for m in got.values()):
        return {p: m for p, m in got.items() if m is not None}
    binary = _binary(impl_key)
    ms = {p: Measurement(impl_key, p, RELAY_MTU, PATHS[p].unit) for p in RELAY_PATHS}
    impl = Impl(impl_key, "passt", binary)
    return measure_together(bench, ms, binary, lambda: _run_relay(bench, relay, impl, ms),
                            (RelayError,))


def _run_relay(bench: Bench, relay: str, impl: Impl, ms: dict[str, Measurement]) -> None:
    assert impl.binary is not None
    logdir = bench.out / "logs"
    logdir.mkdir(parents=True, exist_ok=True)
    log = logdir / f"relay-passt-{impl.key}.log"
    with Topology("prly") as topo, tempfile.TemporaryDirectory(prefix="pperf-relay-") as tmp:
        vm = topo.host[: -len("-h")] + "-v"
        try:
            subprocess.run(["ip", "netns", "add", vm], check=True, capture_output=True)
            subprocess.run(["ip", "-n", vm, "link", "set", "lo", "up"], check=True)
            tune_for_crr(vm)
            serve_wan(topo)
            os.chmod(tmp, 0o1777)  # C passt started as root binds as nobody
            sock = Path(tmp) / "passt.socket"
            proc = start_passt(topo, impl.binary, sock, log)
            served = RelayServed(impl, topo, vm, proc, log)
            _attach_guest(topo, relay, vm, sock, Path(tmp), logdir / f"relay-{impl.key}.log")
            bench.run_iperf(served, ms["relay_up"], vm, ["-c", WAN_ADDR4, "-p", str(WAN_IPERF)])
            bench.run_iperf(served, ms["relay_down"], vm,
                            ["-c", WAN_ADDR4, "-p", str(WAN_IPERF), "-R"])  # fmt: skip
            bench.run_rr(served, ms["relay_rr"], "tcp_rr", WAN_ADDR4, WAN_RR)
            bench.run_rr(served, ms["relay_crr"], "tcp_crr", WAN_ADDR4, WAN_RR)
        finally:
            Topology.kill_all_in(vm)
            subprocess.run(["ip", "netns", "del", vm], capture_output=True, check=False)


def _attach_guest(topo: Topology, relay: str, vm: str, sock: Path, tmp: Path, log: Path) -> None:
    """Start the relay into `vm`, configure its tap as passt's DHCP would, wait for the gateway."""
    ready = tmp / "relay.ready"
    with open(log, "wb") as logf:
        proc = topo.popen(vm, [relay, str(sock), "eth0", str(ready)], stdout=logf.fileno(),
                          stderr=subprocess.STDOUT)
    deadline = time.monotonic() + READY_TIMEOUT_S
    while not ready.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RelayError(f"framerelay did not start: {log.read_text(errors='replace')[-500:]}")
        time.sleep(0.02)
    for argv in (["ip", "link", "set", "eth0", "address", GUEST_MAC, "mtu", str(RELAY_MTU), "up"],
                 ["ip", "addr", "add", f"{HOST_ADDR4}/24", "dev", "eth0"],
                 ["ip", "route", "add", "default", "via", WAN_GW4]):  # fmt: skip
        res = topo.run(vm, argv)
        if res.returncode != 0:
            raise RelayError(f"{' '.join(argv)}: {res.stderr.strip()}")
    for _ in range(PING_TRIES):
        if topo.run(vm, ["ping", "-c1", "-W1", WAN_ADDR4]).returncode == 0:
            return
    raise RelayError(f"no ping reply from {WAN_ADDR4} through the relay")


@pytest.mark.parametrize("path", RELAY_PATHS)
def test_c_passt_relay_baseline(bench: Bench, framerelay: str, path: str) -> None:
    """Debian's C passt behind the relay (n/a when not installed)."""
    check_baseline(measure_relay(bench, framerelay, "c")[path])


@pytest.mark.skipif(not PEER_PASST, reason="no peer passt ($PASST_PERF_PEER_PASST)")
@pytest.mark.parametrize("path", RELAY_PATHS)
def test_peer_passt_relay_baseline(bench: Bench, framerelay: str, path: str) -> None:
    """Another passt build, given by path, behind the relay."""
    check_baseline(measure_relay(bench, framerelay, "peer")[path])


@pytest.mark.parametrize("path", RELAY_PATHS)
def test_passt_relay_gate(bench: Bench, framerelay: str, path: str) -> None:
    """Our passt does not collapse behind the relay: every run completes, no 0 bit/s interval,
    at least MIN_RATIO of C passt's median in this run."""
    passt_gate(measure_relay(bench, framerelay, "ours")[path],
               measure_relay(bench, framerelay, "c")[path])
