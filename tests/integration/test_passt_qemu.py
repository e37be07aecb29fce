"""passt with real QEMU guests: the socket, qrap, DHCP/SLAAC, pcap, traffic, reconnection.

passt runs in the test's host namespace; the guest's only link is passt's
socket.  The guest is the Debian kernel with a busybox initramfs
(harness.qemu), under KVM where it works, else TCG.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from harness.netns import HOST_ADDR4, WAN_ADDR4, WAN_ADDR6, Topology
from harness.netns.topology import DNS_ADDR4, HOST_ADDR6, WAN_GW4
from harness.qemu.guest import QemuGuest
from tests.integration.conftest import accepts_unix, read_bound

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
    # what passt should pick: the first two paths in order that nothing accepts on (a stale file counts as free)
    expected = [p for n in range(1, 65) if not accepts_unix(p := f"/tmp/passt_{n}.socket")][:2]
    first = topo.popen(topo.host, [passt_bin, "-f"], stderr=subprocess.PIPE)
    second = None
    path1 = path2 = ""
    try:
        path1 = read_bound(first)
        second = topo.popen(topo.host, [passt_bin, "-f"], stderr=subprocess.PIPE)
        path2 = read_bound(second)
        assert path1 == expected[0], f"[passt.socket-probe] first free was {expected[0]}, passt bound {path1}"
        assert path2 == expected[1], f"[passt.socket-probe] next free was {expected[1]}, passt bound {path2}"
    finally:
        for proc in (first, second):
            if proc is not None:
                proc.terminate()
                proc.wait(10)
        _remove_default_sockets(path1, path2)


def _dhcp_options(dhcp: Any) -> dict[str, Any]:
    """scapy's DHCP options as a dict (its list also holds bare markers such as "end")."""
    return dict(o[:2] for o in dhcp.options if isinstance(o, tuple))


def _remove_default_sockets(*paths: str) -> None:
    """Remove the /tmp/passt_N.socket files a test's passt left: as root it runs as nobody
    and cannot unlink its root-owned file in sticky /tmp (C passt never unlinks it)."""
    for path in paths:
        if path.startswith("/tmp/passt_"):
            Path(path).unlink(missing_ok=True)


@pytest.mark.conformance(
    "opt.socket", "opt.pcap", "dhcp.yiaddr", "dhcp.option3.router", "dns.passt-resolvconf",
    "passt.qemu-unix-socket", "dhcp.handshake",
)
def test_stream_guest_gets_lease_and_pcap_shows_frames(topo: Topology, passt_bin: str, sock: str,
                                                       tmp_path: Path) -> None:
    """A QEMU guest on -netdev stream leases the host's address with resolv.conf DNS; -p captures its frames."""
    from scapy.layers.dhcp import DHCP
    from scapy.layers.l2 import Ether
    from scapy.utils import rdpcap

    pcap = tmp_path / "cap.pcap"
    Passt(topo, passt_bin, sock, "-p", str(pcap))
    with QemuGuest(net_args=_stream_netdev(sock), netns=None) as guest:
        out = guest.check(f"{UDHCPC} 2>&1; ip -o -4 addr show dev eth0; ip -4 route; cat /etc/resolv.conf", timeout=60)
    assert f"inet {HOST_ADDR4}/24" in out, f"[dhcp.yiaddr, passt.qemu-unix-socket, opt.socket] {out}"
    assert f"default via {WAN_GW4}" in out, f"[dhcp.option3.router] {out}"
    assert "nameserver 10.77.1.53" in out, f"[dns.passt-resolvconf] {out}"
    frames = rdpcap(str(pcap))
    dhcp = [f for f in frames if f.haslayer(DHCP) and f[Ether].src == GUEST_MAC]
    assert dhcp, f"[opt.pcap] no guest DHCP frame captured: {[f.summary() for f in frames[:10]]}"
    kinds = [_dhcp_options(f[DHCP])["message-type"] for f in frames if f.haslayer(DHCP)]
    assert kinds[:4] == [1, 2, 3, 5], f"[dhcp.handshake] DISCOVER, OFFER, REQUEST, ACK: {kinds}"


@pytest.mark.xdist_group("default-socket")
@pytest.mark.conformance("passt.qrap", "example.passt.qrap", "passt.socket-probe")
def test_qrap_connects_old_style_qemu(topo: Topology, passt_bin: str, qrap_bin: str) -> None:
    """`qrap 5 qemu-system-x86_64 ... -net socket,fd=5 -net nic,model=virtio` finds passt's default socket."""
    proc = topo.popen(topo.host, [passt_bin, "-f"], stderr=subprocess.PIPE)
    path = ""
    try:
        path = read_bound(proc)
        net = ["-net", "socket,fd=5", "-net", f"nic,model=virtio,macaddr={GUEST_MAC}"]
        with QemuGuest(net_args=net, qemu_argv_prefix=[qrap_bin, "5"]) as guest:
            out = guest.check(f"{UDHCPC} 2>&1; ip -o -4 addr show dev eth0", timeout=60)
        assert f"inet {HOST_ADDR4}/24" in out, out
    finally:
        proc.terminate()
        proc.wait(10)
        _remove_default_sockets(path)


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


GUEST_MAC2 = "52:54:00:12:34:57"

HOOK4 = r"""#!/bin/sh
for v in ip mask router dns search; do eval "echo LEASE_${interface}_$v=\\\"\$$v\\\""; done
exec /etc/udhcpc/default.script "$@"
"""

HOOK6 = r"""#!/bin/sh
case "$reason" in
BOUND6|RENEW6|REBIND6|REBOOT6)
    ip -6 addr add "$new_ip6_address/${new_ip6_prefixlen:-128}" dev "$interface"
    echo "DH6 $reason $new_ip6_address/${new_ip6_prefixlen:-128}" ;;
esac
exit 0
"""


def _guest_leases(out: str) -> dict[str, str]:
    found = {}
    for line in out.splitlines():
        if line.startswith("LEASE_"):
            key, _, value = line[6:].partition("=")
            found[key] = value.strip('"')
    return found


@pytest.mark.conformance(
    "example.passt.log-lines", "example.passt.ip-address", "passt.unprivileged",
    "search.passt-resolvconf", "dns.passt-resolvconf", "opt.dns.empty-disables",
    "opt.search.empty-disables",
)
def test_man_page_passt_session_as_nobody(topo: Topology, passt_bin: str, tmp_path: Path) -> None:
    """The EXAMPLES session with passt run as nobody: udhcpc, SLAAC, dhclient -6, and passt's log lines.

    The guest has a second NIC on a second passt started with -D "" -S "": its lease carries no
    resolver and no search list, while the first one has /etc/resolv.conf's (passt's default).
    """
    from tests.integration.conftest import unprivileged

    shared = Path(tempfile.mkdtemp(prefix="pt-passt-"))  # nobody must create the sockets here
    shared.chmod(0o777)
    try:
        socks = [str(shared / "a.socket"), str(shared / "b.socket")]
        first = topo.popen(topo.host, unprivileged([passt_bin, "-f", "-s", socks[0]]), stdout=subprocess.DEVNULL)
        topo.popen(topo.host, unprivileged([passt_bin, "-f", "-q", "-s", socks[1], "-D", "", "-S", ""]))
        for s in socks:
            _wait_socket(s)
        net = [*_stream_netdev(socks[0]),
               "-netdev", f"stream,id=n1,server=off,addr.type=unix,addr.path={socks[1]}",
               "-device", f"virtio-net-pci,netdev=n1,mac={GUEST_MAC2}"]
        files = {"etc/h4.sh": HOOK4.encode(), "etc/h6.sh": HOOK6.encode()}
        with QemuGuest(net_args=net, extra_binaries=["/sbin/dhclient"], extra_files=files) as guest:
            out = guest.check(
                "mkdir -p /var/lib/dhcp /etc/dhcp; touch /etc/dhcp/dhclient.conf; "
                "sysctl -qw net.ipv6.conf.eth0.accept_dad=0; ip link set eth0 up; ip link set eth1 up; "
                "udhcpc -f -q -n -t 5 -T 1 -O search -i eth1 -s /etc/h4.sh 2>&1; "
                "cp /etc/resolv.conf /tmp/resolv.eth1; "
                "udhcpc -f -q -n -t 5 -T 1 -O search -i eth0 -s /etc/h4.sh 2>&1; "
                "for i in $(seq 100); do ip -6 route | grep -q '^default.*eth0' && break; sleep 0.1; done; "
                "dhclient -6 -1 -cf /etc/dhcp/dhclient.conf -lf /tmp/l6 -pf /tmp/p6 -sf /etc/h6.sh eth0 2>&1; "
                "kill $(cat /tmp/p6) 2>/dev/null; ping -6 -c 1 -W 3 fd77::1; "
                "echo ADDR; ip address show dev eth0; echo RESOLV1; cat /etc/resolv.conf; "
                "echo RESOLV2; cat /tmp/resolv.eth1", timeout=90)
        first.terminate()
        assert first.stderr is not None
        log = first.stderr.read().decode()
    finally:
        shutil.rmtree(shared, ignore_errors=True)
    leases = _guest_leases(out)
    assert "eth0_ip" in leases, out + log
    assert leases["eth0_ip"] == HOST_ADDR4 and leases["eth0_mask"] == "24", \
        f"[passt.unprivileged] passt as nobody leases the host's address: {out}"
    assert leases["eth0_dns"].split() == [DNS_ADDR4] and leases["eth0_search"].split() == ["example.test"], \
        f"[dns.passt-resolvconf, search.passt-resolvconf] resolv.conf's: {out}"
    assert leases["eth1_ip"] == HOST_ADDR4 and leases["eth1_dns"] == "" and leases["eth1_search"] == "", \
        f"[opt.dns.empty-disables, opt.search.empty-disables] -D \"\" -S \"\": {out}"
    addr = out.split("ADDR", 1)[1].split("RESOLV1")[0]
    assert f"inet {HOST_ADDR4}/24" in addr, f"[example.passt.ip-address] {addr}"
    assert f"inet6 {HOST_ADDR6}/128 scope global" in addr, f"[example.passt.ip-address] DHCPv6: {out}"
    assert re.search(r"inet6 fd77::[0-9a-f:]+/64 scope global dynamic", addr), \
        f"[example.passt.ip-address] SLAAC: {addr}"
    assert re.search(r"inet6 fe80::[0-9a-f:]+/64 scope link", addr), f"[example.passt.ip-address] {addr}"
    assert "1 packets received" in out or "1 received" in out, out
    resolv2 = out.split("RESOLV2", 1)[1]
    assert "nameserver" not in resolv2 and "search" not in resolv2, \
        f"[opt.dns.empty-disables, opt.search.empty-disables] {resolv2}"
    # passt's log while the guest configured itself, one line per exchange
    # (NDP's per-packet lines are debug since issue 11: not shown without -d)
    for line in ("DHCP: ack to request",
                 "DHCPv6: received SOLICIT, sending ADVERTISE",
                 "DHCPv6: received REQUEST/RENEW/CONFIRM, sending REPLY"):
        assert f"passt: {line}" in log, f"[example.passt.log-lines] no '{line}': {log}"


@pytest.mark.conformance("ports.passt-all", "opt.tcp-ports")
def test_tcp_all_forwards_every_non_ephemeral_port(topo: Topology, passt_bin: str, sock: str) -> None:
    """-t all: passt listens on free ports below the ephemeral range, skipping a bound one; wan reaches the guest.

    Port 20001 is held by another process first and must be skipped without a word.  Where
    RLIMIT_NOFILE is below the ~32k ports (20000 here, and root can't raise the hard limit in
    this container), ports 1-12000 at least must be forwarded (a quarter of the descriptors is kept
    for connections) and the guest must still be served.
    """
    lo, hi = (int(x) for x in Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
    holder = topo.popen(topo.host, ["socat", "TCP-LISTEN:20001,reuseaddr", "STDOUT"])
    topo.wait_listening(topo.host, 20001)
    proc = topo.popen(topo.host, [passt_bin, "-f", "-q", "-s", sock, "-t", "all", "-u", "none"],
                      stdout=subprocess.DEVNULL)
    _wait_socket(sock)
    try:
        with QemuGuest(net_args=_stream_netdev(sock), extra_binaries=["/usr/bin/socat"]) as guest:
            lease = guest.check(f"{UDHCPC} 2>&1; ip -o -4 addr show dev eth0", timeout=60)
            assert f"inet {HOST_ADDR4}/24" in lease, lease
            guest.check("(socat TCP-LISTEN:12000,reuseaddr 'SYSTEM:echo all-ok' &); "
                        "for i in $(seq 100); do netstat -ltn | grep -q ':12000 ' && break; sleep 0.05; done",
                        timeout=30)
            res = topo.run(topo.wan, ["socat", "-t", "3", "-", f"TCP:{HOST_ADDR4}:12000"], input="", timeout=30)
            assert res.stdout.strip() == "all-ok", res.stderr
        ports: dict[int, str] = {}
        for line in topo.run(topo.host, ["ss", "-Hltnp"]).stdout.splitlines():
            ports[int(line.split()[3].rsplit(":", 1)[1])] = line
        ours = {p for p, line in ports.items() if "socat" not in line}
        assert set(range(1, 12001)) <= ours
        assert "socat" in ports[20001]
        assert not any(lo <= p <= hi for p in ours)
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=20)
        holder.terminate()
    assert b"20001" not in (err or b"")
