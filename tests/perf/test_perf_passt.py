"""passt with a QEMU guest, both directions, against Debian's C passt in the same run.

The guest (harness.qemu: host kernel, busybox initramfs, 1 vCPU, TCG where KVM does not work)
leases its address from passt over ``-netdev stream`` and runs iperf3 against wan::

    guest eth0 (virtio-net) --unix stream--> passt (HOST netns) --veth--> WAN iperf3 :5201

Under TCG the guest's CPU is the bottleneck, so these numbers say "no collapse", not "passt's
ceiling". There is no "direct" for a VM; our passt's gate compares with C passt instead.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path
from typing import Final

import pytest

from harness.netns import WAN_ADDR4, Topology
from harness.perf import CLK_TCK, NA, OK, PATHS, Measurement, parse_iperf3, tool_cpu_ticks
from harness.qemu import GuestError, QemuGuest
from tests.perf.conftest import (
    C_PASST,
    PAUSE_S,
    RUNS,
    SECONDS,
    WAN_IPERF,
    Bench,
    installed,
    measure_together,
    our_program,
    passt_gate,
    serve_iperf,
    start_passt,
)

pytestmark = pytest.mark.qemu

GUEST_MAC: Final = "52:54:00:12:34:56"
UDHCPC: Final = "udhcpc -f -q -n -t 5 -T 1 -i eth0"
VM_MTU: Final = 65520
"""passt's default MTU, which it hands out by DHCP; recorded with the measurement."""
DIRECTIONS: Final = {"vm_up": "", "vm_down": " -R"}


def _measure_vm(bench: Bench, impl: str) -> dict[str, Measurement]:
    """Both directions for one passt (cached in the bench), booting one guest for them."""
    got = {p: bench.results.get(impl, p, VM_MTU) for p in DIRECTIONS}
    if all(m is not None for m in got.values()):
        return {p: m for p, m in got.items() if m is not None}
    binary = our_program("passt") if impl == "ours" else installed(C_PASST)
    ms = {p: Measurement(impl, p, VM_MTU, PATHS[p].unit) for p in DIRECTIONS}
    return measure_together(bench, ms, binary, lambda: _run_vm(bench, binary or "", impl, ms),
                            (GuestError,))


def _run_vm(bench: Bench, binary: str, impl: str, ms: dict[str, Measurement]) -> None:
    logdir = bench.out / "logs"
    logdir.mkdir(parents=True, exist_ok=True)
    log = logdir / f"passt-{impl}.log"
    with Topology("pvm") as topo, tempfile.TemporaryDirectory(prefix="pperf-vm-") as tmp:
        # C passt started as root drops to nobody before it binds its socket
        os.chmod(tmp, 0o1777)
        sock = Path(tmp) / "passt.socket"
        serve_iperf(topo, topo.wan, WAN_IPERF)
        proc = start_passt(topo, binary, sock, log)
        net = ["-netdev", f"stream,id=n0,server=off,addr.type=unix,addr.path={sock}",
               "-device", f"virtio-net-pci,netdev=n0,mac={GUEST_MAC}"]
        with QemuGuest(net_args=net, extra_binaries=["/usr/bin/iperf3"]) as guest:
            lease = guest.run(f"ip link set eth0 up; {UDHCPC} 2>&1", timeout=60)
            if lease.rc != 0:
                raise GuestError(f"no DHCP lease from passt: {lease.output[-800:]}")
            for path, flag in DIRECTIONS.items():
                m = ms[path]
                cmd = (f"iperf3 -J -t {SECONDS:g} --connect-timeout 3000 -c {WAN_ADDR4} "
                       f"-p {WAN_IPERF}{flag}")
                for _ in range(RUNS):
                    if proc.poll() is not None:
                        m.errors.append(f"passt exited with {proc.returncode}")
                        break
                    c0, t0 = tool_cpu_ticks(proc.pid), time.monotonic()
                    try:
                        out = guest.run(cmd, timeout=SECONDS + 25).output
                    except GuestError as e:
                        m.errors.append(str(e).splitlines()[0])
                        continue
                    c1, t1 = tool_cpu_ticks(proc.pid), time.monotonic()
                    res = parse_iperf3(out)
                    if res.error is not None:
                        m.errors.append(res.error)
                        continue
                    m.values.append(res.bps / 1e9)
                    if res.retransmits is not None:
                        m.add_extra("retr", res.retransmits)
                    m.add_extra("zero_intervals", res.zero_intervals)
                    m.add_extra("cpu_pct", (c1 - c0) / CLK_TCK / (t1 - t0) * 100)
                    time.sleep(PAUSE_S)
            bench.results.meta[f"vm_accel_{impl}"] = guest.accel_used
            if guest.boot_seconds is not None:
                bench.results.meta[f"vm_boot_s_{impl}"] = f"{guest.boot_seconds:.1f}"


@pytest.mark.parametrize("path", list(DIRECTIONS))
def test_c_passt_baseline(bench: Bench, path: str) -> None:
    """Debian's C passt with the same guest (n/a when not installed)."""
    m = _measure_vm(bench, "c")[path]
    if m.status == NA:
        pytest.skip(f"C passt: n/a ({m.note})")
    assert m.status == OK, f"C passt failed on {path}: {m.note}"


@pytest.mark.parametrize("path", list(DIRECTIONS))
def test_passt_gate(bench: Bench, path: str) -> None:
    """Our passt does not collapse: every run completes, no 0 bit/s interval, >= MIN_RATIO of C."""
    passt_gate(_measure_vm(bench, "ours")[path], _measure_vm(bench, "c")[path])
