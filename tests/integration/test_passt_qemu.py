"""passt with real QEMU guests: the socket, qrap, DHCP/SLAAC, pcap, traffic, reconnection.

passt runs in the test's host namespace; the guest's only link is passt's
socket.  The guest is the Debian kernel with a busybox initramfs
(harness.qemu), under KVM where it works, else TCG.
"""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.netns import HOST_ADDR4, WAN_ADDR4, WAN_ADDR6, Topology
from harness.netns.topology import WAN_GW4
from harness.qemu.guest import QemuGuest

pytestmark = pytest.mark.qemu

GUEST_MAC = "52:54:00:12:34:56"
UDHCPC = "ip link set eth0 up; udhcpc -f -q -n -t 5 -T 1 -i eth0"


def _stream_netdev(sock: str) -> list[str]:
    return [
        "-netdev", f"stream,id=n0,server=off,addr.type=unix,addr.path={sock}",
        "-device", f"virtio-net-pci,netdev=n0,mac={GUEST_MAC}",
    ]


def _wait_socket(path: str, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if os.path.exists(path):
            return
        time.sleep(0.02)
    raise TimeoutError(f"passt did not bind {path}")


class Passt:
    """A passt process in the host namespace with its socket path."""

    def __init__(self, topo: Topology, passt_bin: str, sock: str, *args: str) -> None:
        self.proc = topo.popen(topo.host, [passt_bin, "-f", "-s", sock, *args])
        self.sock = sock
        _wait_socket(sock)


@pytest.fixture
def sock(tmp_path: Path) -> Iterator[str]:
    path = str(tmp_path / "passt.socket")
    yield path


@pytest.mark.xdist_group("default-socket")
@pytest.mark.conformance("passt.socket-probe")
def test_socket_probe_takes_first_free(topo: Topology, passt_bin: str) -> None:
    """Without -s, passt binds the first of /tmp/passt_1..64.socket nobody accepts on; a second passt takes another."""
    first = topo.popen(topo.host, [passt_bin, "-f"], stdout=subprocess.PIPE)
    second = None
    try:
        path1 = _read_bound(first)
        second = topo.popen(topo.host, [passt_bin, "-f"], stdout=subprocess.PIPE)
        path2 = _read_bound(second)
        assert re.fullmatch(r"/tmp/passt_([1-9]|[1-5][0-9]|6[0-4])\.socket", path1)
        assert re.fullmatch(r"/tmp/passt_([1-9]|[1-5][0-9]|6[0-4])\.socket", path2)
        assert path1 != path2
    finally:
        first.terminate()
        if second is not None:
            second.terminate()


def _read_bound(proc: subprocess.Popen[bytes]) -> str:
    assert proc.stdout is not None
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        line = proc.stdout.readline().decode()
        if not line:
            break
        m = re.search(r"UNIX domain socket bound at (\S+)", line)
        if m:
            return m.group(1)
    raise AssertionError("passt printed no socket path")


@pytest.mark.conformance("passt.socket-probe", "opt.socket", "opt.pcap", "example.passt.summary",
                         "dhcp.yiaddr", "dhcp.option3.router", "dhcp.option6.dns", "dns.passt-resolvconf")
def test_stream_guest_gets_lease_and_pcap_shows_frames(topo: Topology, passt_bin: str, sock: str,
                                                       tmp_path: Path) -> None:
    """A QEMU guest on -netdev stream leases the host's address with resolv.conf DNS; -p captures its frames."""
    from scapy.all import DHCP, Ether, rdpcap

    pcap = tmp_path / "cap.pcap"
    Passt(topo, passt_bin, sock, "-p", str(pcap))
    with QemuGuest(net_args=_stream_netdev(sock), netns=None) as guest:
        out = guest.check(f"{UDHCPC} 2>&1; ip -o -4 addr show dev eth0; ip -4 route; cat /etc/resolv.conf", timeout=60)
    assert f"inet {HOST_ADDR4}/24" in out, out
    assert f"default via {WAN_GW4}" in out, out
    assert "nameserver 10.77.1.53" in out, out
    frames = rdpcap(str(pcap))
    dhcp = [f for f in frames if f.haslayer(DHCP) and f[Ether].src == GUEST_MAC]
    assert dhcp, [f.summary() for f in frames[:10]]
    assert dict(o for o in dhcp[0][DHCP].options if isinstance(o, tuple))["message-type"] == 1


@pytest.mark.xdist_group("default-socket")
@pytest.mark.conformance("passt.qrap", "example.passt.qrap", "passt.socket-probe")
def test_qrap_connects_old_style_qemu(topo: Topology, passt_bin: str, qrap_bin: str) -> None:
    """`qrap 5 qemu-system-x86_64 ... -net socket,fd=5 -net nic,model=virtio` finds passt's default socket."""
    proc = topo.popen(topo.host, [passt_bin, "-f"], stdout=subprocess.PIPE)
    try:
        _read_bound(proc)
        net = ["-net", "socket,fd=5", "-net", f"nic,model=virtio,macaddr={GUEST_MAC}"]
        with QemuGuest(net_args=net, qemu_argv_prefix=[qrap_bin, "5"]) as guest:
            out = guest.check(f"{UDHCPC} 2>&1; ip -o -4 addr show dev eth0", timeout=60)
        assert f"inet {HOST_ADDR4}/24" in out, out
    finally:
        proc.terminate()


@pytest.mark.conformance("passt.reconnect")
def test_next_guest_served_after_disconnect(topo: Topology, passt_bin: str, sock: str) -> None:
    """When a guest goes away, passt waits for and serves the next one."""
    Passt(topo, passt_bin, sock)
    for _ in range(2):
        with QemuGuest(net_args=_stream_netdev(sock)) as guest:
            out = guest.check(f"{UDHCPC} 2>&1; ip -o -4 addr show dev eth0", timeout=60)
        assert f"inet {HOST_ADDR4}/24" in out, out


@pytest.mark.conformance("ndp.ra.prefix", "tcp.no-buffering", "example.pasta.ping")
def test_guest_slaac_ping_and_http(topo: Topology, passt_bin: str, sock: str, tmp_path: Path) -> None:
    """The guest configures IPv6 from the RA, pings wan over IPv4 and IPv6, and downloads 4 MiB intact."""
    data = os.urandom(4 << 20)
    (tmp_path / "www").mkdir()
    (tmp_path / "www" / "blob").write_bytes(data)
    topo.start_http(tmp_path / "www")
    Passt(topo, passt_bin, sock)
    with QemuGuest(net_args=_stream_netdev(sock)) as guest:
        guest.check(f"{UDHCPC} >/dev/null 2>&1", timeout=60)
        out6 = guest.check(
            "for i in $(seq 100); do ip -6 route | grep -q '^default' && break; sleep 0.1; done; "
            "ip -o -6 addr show dev eth0; ip -6 route", timeout=30)
        assert re.search(r"inet6 fd77::[0-9a-f:]+/64 scope global", out6), out6
        ping = guest.check(f"ping -c 2 -W 2 {WAN_ADDR4} && ping -6 -c 2 -W 2 {WAN_ADDR6}", timeout=30)
        assert "0% packet loss" in ping
        digest = guest.check(f"wget -q -O - http://{WAN_ADDR4}:8080/blob | sha256sum", timeout=120)
    assert digest.split()[0] == hashlib.sha256(data).hexdigest()
