"""UDP flows: guest datagrams to real loopback sockets and back, and the -u path.

Real sockets on 127.0.0.1 / ::1 only; anything that would leave the machine
goes through a recording socket that never sends.  Frames to the guest are
captured by FakeTap and dissected with scapy.
"""

from __future__ import annotations

import os
import socket
import time
from typing import Any

import pytest
from scapy.layers.inet import IP, UDP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import Ether

from passt.config import FwdMode, PortFwd
from passt.flows.fwd import Forwarder
from passt.flows.udp import UdpHandler
from tests.unit.conftest import GUEST_MAC_STR, OUR_MAC_STR, assert_checksums
from tests.unit.fakes import (
    G4,
    G6,
    GW4,
    GW6,
    free_port,
    guest_udp,
    make_ctx,
    packed,
    pump,
    udp_server,
)


def open_sockets() -> set[str]:
    """The socket:[inode] names of every descriptor this process holds."""
    out = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            out.add(os.readlink(f"/proc/self/fd/{fd}"))
        except OSError:
            pass
    return out


# guest -> world ------------------------------------------------------------


@pytest.mark.parametrize("af", [4, 6])
def test_udp_echo_roundtrip(af: int) -> None:
    """A guest datagram reaches a loopback server; the reply frame comes from it, checksummed."""
    ctx, tap = make_ctx()
    udp = UdpHandler(ctx, loopback_dst=True)
    srv = udp_server(af)
    sport = srv.getsockname()[1]
    lo = "127.0.0.1" if af == 4 else "::1"
    guest = G4 if af == 4 else G6
    udp.from_tap(
        af, packed(af, guest), packed(af, lo), guest_udp(af, guest, lo, 40000, sport, b"ping"), 0.0
    )
    data, peer = srv.recvfrom(100)
    assert data == b"ping"
    srv.sendto(b"pong!" * 100, peer)
    assert pump(ctx, lambda: len(tap.frames) == 1)
    pkt = Ether(tap.frames[0])
    assert pkt.src == OUR_MAC_STR and pkt.dst == GUEST_MAC_STR
    ip = pkt[IP] if af == 4 else pkt[IPv6]
    assert (ip.src, ip.dst) == (lo, guest)
    assert (pkt[UDP].sport, pkt[UDP].dport) == (sport, 40000)
    assert pkt[UDP].len == 8 + 500
    assert bytes(pkt[UDP].payload) == b"pong!" * 100
    assert pkt[UDP].chksum != 0
    assert_checksums(tap.frames[0])
    assert udp.flow_count() == 1
    # a second datagram reuses the flow (same host socket, so the same peer port)
    udp.from_tap(
        af, packed(af, guest), packed(af, lo), guest_udp(af, guest, lo, 40000, sport, b"2"), 0.0
    )
    data2, peer2 = srv.recvfrom(100)
    assert (data2, peer2) == (b"2", peer)
    assert udp.flow_count() == 1
    udp.tap_reset()
    srv.close()


def test_udp_batch_read() -> None:
    """Several queued replies are all framed in one readiness event, in order."""
    ctx, tap = make_ctx()
    udp = UdpHandler(ctx, loopback_dst=True)
    srv = udp_server(4)
    port = srv.getsockname()[1]
    udp.from_tap(
        4,
        packed(4, G4),
        packed(4, "127.0.0.1"),
        guest_udp(4, G4, "127.0.0.1", 5000, port, b"x"),
        0.0,
    )
    _, peer = srv.recvfrom(10)
    for i in range(10):
        srv.sendto(bytes([i]) * 3, peer)
    time.sleep(0.05)
    ctx.loop.run_once(0.5)
    assert [bytes(Ether(f)[UDP].payload) for f in tap.frames] == [bytes([i]) * 3 for i in range(10)]
    udp.tap_reset()
    srv.close()


def test_udp_reply_too_big_for_mtu_dropped() -> None:
    """A reply that would exceed the tap MTU is dropped and counted, not truncated."""
    ctx, tap = make_ctx(tap_mtu=1500)
    udp = UdpHandler(ctx, loopback_dst=True)
    srv = udp_server(4)
    port = srv.getsockname()[1]
    udp.from_tap(
        4,
        packed(4, G4),
        packed(4, "127.0.0.1"),
        guest_udp(4, G4, "127.0.0.1", 5000, port, b"x"),
        0.0,
    )
    _, peer = srv.recvfrom(10)
    srv.sendto(b"a" * 1473, peer)
    srv.sendto(b"b" * 1472, peer)
    assert pump(ctx, lambda: len(tap.frames) == 1)
    assert len(Ether(tap.frames[0])[IP]) == 1500
    assert ctx.counters.drops["udp_too_big"] == 1
    udp.tap_reset()
    srv.close()


@pytest.mark.parametrize(
    ("l4", "reason"),
    [
        (b"\x00\x01\x00\x02\x00", "udp_short"),
        (b"\x00\x01\x00\x02\x00\x07\x00\x00", "udp_bad_length"),
        (b"\x00\x01\x00\x02\x00\x20\x00\x00abc", "udp_bad_length"),
    ],
)
def test_udp_malformed_dropped(l4: bytes, reason: str) -> None:
    """Short headers and length fields that lie are dropped and counted; no flow appears."""
    ctx, _ = make_ctx()
    udp = UdpHandler(ctx, loopback_dst=True)
    udp.from_tap(4, packed(4, G4), packed(4, "127.0.0.1"), memoryview(l4), 0.0)
    assert ctx.counters.drops[reason] == 1
    assert udp.flow_count() == 0


@pytest.mark.parametrize(
    ("af", "dst", "dport", "reason"),
    [
        (4, "127.0.0.1", 9, "udp_dst_loopback"),
        (6, "::1", 9, "udp_dst_loopback"),
        (4, "255.255.255.255", 9, "udp_dst_invalid"),
        (4, "224.0.0.251", 5353, "udp_dst_invalid"),
        (6, "ff02::fb", 5353, "udp_dst_invalid"),
        (4, GW4, 67, "udp_dhcp"),
        (6, "ff02::1:2", 547, "udp_dhcp"),
        (4, GW4, 0, "udp_port_zero"),
    ],
)
def test_udp_unforwardable_destinations(af: int, dst: str, dport: int, reason: str) -> None:
    """Loopback (by default), multicast/broadcast, DHCP server and port 0 destinations are dropped."""
    ctx, _ = make_ctx()
    udp = UdpHandler(ctx)
    guest = G4 if af == 4 else G6
    udp.from_tap(
        af, packed(af, guest), packed(af, dst), guest_udp(af, guest, dst, 68, dport, b"x"), 0.0
    )
    assert ctx.counters.drops[reason] == 1
    assert udp.flow_count() == 0


@pytest.mark.conformance("opt.no-udp")
def test_udp_disabled_drops_and_no_listeners() -> None:
    """--no-udp: guest datagrams are dropped and no -u listener is bound."""
    port = free_port()
    ctx, _ = make_ctx(udp=False, udp_in=PortFwd(mode=FwdMode.SPEC, ports=((port, port),)))
    udp = UdpHandler(ctx, loopback_dst=True)
    fwd = Forwarder(ctx, tcp=None, udp=udp, scan_ns_ports=None)
    fwd.start()
    assert fwd.listening() == {}
    udp.from_tap(
        4, packed(4, G4), packed(4, "127.0.0.1"), guest_udp(4, G4, "127.0.0.1", 1, 2, b"x"), 0.0
    )
    assert ctx.counters.drops["udp_disabled"] == 1
    assert udp.flow_count() == 0


class RecordingSocket(socket.socket):
    """A UDP socket that records connect()/send() instead of touching the network."""

    connected: Any = None
    sent: list[bytes]

    def connect(self, address: Any) -> None:
        self.connected = address
        self.sent = []

    def send(self, data: Any, flags: int = 0) -> int:
        self.sent.append(bytes(data))
        return len(data)


@pytest.mark.conformance("notes.nat.gateway-to-loopback")
def test_new_guest_flow_to_gateway_goes_to_gateway() -> None:
    """Guest traffic to the gateway with no host-initiated flow goes to the gateway itself, not loopback."""
    ctx, _ = make_ctx()
    made: list[RecordingSocket] = []

    def factory(family: int, kind: int, proto: int) -> socket.socket:
        s = RecordingSocket(family, kind, proto)
        made.append(s)
        return s

    udp = UdpHandler(ctx, socket_factory=factory)
    udp.from_tap(4, packed(4, G4), packed(4, GW4), guest_udp(4, G4, GW4, 4000, 53, b"q"), 0.0)
    assert made[0].connected == (GW4, 53)
    assert made[0].sent == [b"q"]
    udp.tap_reset()


# -u: host -> guest -----------------------------------------------------------


@pytest.mark.conformance("opt.udp-ports", "notes.nat.src-gateway", "notes.nat.dst-loopback",
                         "notes.nat.gateway-to-loopback", "ports.ipv6-also-ipv4")  # fmt: skip
def test_forwarded_port_ipv4_loopback_client() -> None:
    """-u L:T: a client on 127.0.0.1 -> 127.0.0.10:L reaches guest T from the gateway; the reply returns from 127.0.0.10:L."""
    listen, target = free_port(), 5353
    ctx, tap = make_ctx(udp_in=PortFwd(mode=FwdMode.SPEC, ports=((listen, target),)))
    ctx.guest.learn_addr4(packed(4, G4))  # observed differs from configured 192.0.2.3
    udp = UdpHandler(ctx)
    fwd = Forwarder(ctx, tcp=None, udp=udp, scan_ns_ports=None)
    fwd.start()
    assert fwd.listening()[("udp", listen)].family == socket.AF_INET6
    cli = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    cli.settimeout(2)
    cli.bind(("127.0.0.1", 0))
    cli.connect(("127.0.0.10", listen))
    cport = cli.getsockname()[1]
    cli.send(b"hello guest")
    assert pump(ctx, lambda: len(tap.frames) == 1)
    pkt = Ether(tap.frames[0])
    assert (pkt[IP].src, pkt[IP].dst) == (GW4, G4)
    assert (pkt[UDP].sport, pkt[UDP].dport) == (cport, target)
    assert bytes(pkt[UDP].payload) == b"hello guest"
    assert_checksums(tap.frames[0])
    # the guest answers the gateway: it goes back to the loopback client, from the bound port
    udp.from_tap(
        4, packed(4, G4), packed(4, GW4), guest_udp(4, G4, GW4, target, cport, b"hi host"), 1.0
    )
    data, src = cli.recvfrom(100)  # a connected socket only accepts 127.0.0.10:listen
    assert (data, src) == (b"hi host", ("127.0.0.10", listen))
    assert udp.flow_count() == 1
    fwd.stop()
    assert udp.flow_count() == 0
    cli.close()


@pytest.mark.conformance("opt.udp-ports", "notes.nat.src-gateway", "notes.nat.dst-loopback")
def test_forwarded_port_ipv6_loopback_client() -> None:
    """-u over ::1: the guest sees the IPv6 gateway as source and its observed global address as destination."""
    listen, target = free_port(), 7000
    ctx, tap = make_ctx(udp_in=PortFwd(mode=FwdMode.SPEC, ports=((listen, target),)))
    ctx.guest.learn_addr6(packed(6, G6))
    udp = UdpHandler(ctx)
    fwd = Forwarder(ctx, tcp=None, udp=udp, scan_ns_ports=None)
    fwd.start()
    cli = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    cli.settimeout(2)
    cli.connect(("::1", listen))
    cport = cli.getsockname()[1]
    cli.send(b"v6")
    assert pump(ctx, lambda: len(tap.frames) == 1)
    pkt = Ether(tap.frames[0])
    assert (pkt[IPv6].src, pkt[IPv6].dst) == (GW6, G6)
    assert (pkt[UDP].sport, pkt[UDP].dport) == (cport, target)
    assert_checksums(tap.frames[0])
    udp.from_tap(
        6, packed(6, G6), packed(6, GW6), guest_udp(6, G6, GW6, target, cport, b"back"), 1.0
    )
    assert cli.recvfrom(100)[:2] == (b"back", ("::1", listen, 0, 0))
    fwd.stop()
    cli.close()


def test_forwarded_flow_refreshed_not_duplicated() -> None:
    """Repeated datagrams from one client use one inbound flow."""
    listen = free_port()
    ctx, tap = make_ctx(udp_in=PortFwd(mode=FwdMode.SPEC, ports=((listen, listen),)))
    udp = UdpHandler(ctx)
    fwd = Forwarder(ctx, tcp=None, udp=udp, scan_ns_ports=None)
    fwd.start()
    cli = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    for i in range(3):
        cli.sendto(bytes([i]), ("127.0.0.1", listen))
    assert pump(ctx, lambda: len(tap.frames) == 3)
    assert udp.flow_count() == 1
    assert Ether(tap.frames[0])[IP].dst == "192.0.2.3"  # nothing observed: configured address
    fwd.stop()
    cli.close()


# lifetime --------------------------------------------------------------------


def test_flow_expiry_frees_sockets() -> None:
    """Idle flows are closed by expiry: their sockets leave /proc/self/fd and the loop."""
    ctx, _ = make_ctx()
    udp = UdpHandler(ctx, loopback_dst=True)
    srv = udp_server(4)
    port = srv.getsockname()[1]
    base_reg = ctx.loop.registered_count
    for sport in range(6000, 6005):
        l4 = guest_udp(4, G4, "127.0.0.1", sport, port, b"x")
        udp.from_tap(4, packed(4, G4), packed(4, "127.0.0.1"), l4, 10.0)
    assert udp.flow_count() == 5
    inodes = {f"socket:[{os.fstat(f.sock.fileno()).st_ino}]" for f in udp.flows.values()}
    assert len(inodes) == 5 and inodes <= open_sockets()
    assert ctx.loop.registered_count == base_reg + 5
    assert udp.expire(10.0 + 179.0) == 0
    assert udp.expire(10.0 + 181.0) == 5
    assert udp.flow_count() == 0
    assert not inodes & open_sockets()
    assert ctx.loop.registered_count == base_reg
    srv.close()


def test_flow_expiry_timer_driven() -> None:
    """One periodic timer expires idle flows without anyone calling expire()."""
    ctx, _ = make_ctx()
    udp = UdpHandler(ctx, loopback_dst=True, timeout_s=0.05, timer_interval_s=0.05)
    srv = udp_server(4)
    port = srv.getsockname()[1]
    l4 = guest_udp(4, G4, "127.0.0.1", 6000, port, b"x")
    udp.from_tap(4, packed(4, G4), packed(4, "127.0.0.1"), l4, ctx.loop.now)
    assert udp.flow_count() == 1
    assert pump(ctx, lambda: udp.flow_count() == 0, timeout=2.0)
    srv.close()


def test_flow_table_bound() -> None:
    """Past the table's capacity new flows are dropped and counted; existing ones keep working."""
    ctx, _ = make_ctx()
    udp = UdpHandler(ctx, loopback_dst=True, capacity=2)
    srv = udp_server(4)
    port = srv.getsockname()[1]
    for sport in (1001, 1002, 1003):
        l4 = guest_udp(4, G4, "127.0.0.1", sport, port, b"%d" % sport)
        udp.from_tap(4, packed(4, G4), packed(4, "127.0.0.1"), l4, 0.0)
    assert udp.flow_count() == 2
    assert ctx.counters.drops["udp_flow_table_full"] == 1
    got = {srv.recvfrom(10)[0] for _ in range(2)}
    assert got == {b"1001", b"1002"}
    udp.tap_reset()
    assert udp.flow_count() == 0
    srv.close()
