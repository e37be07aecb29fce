"""The dispatcher parses Ethernet and IP once and hands the parsed pieces on.

Frames whose IP header does not parse reach no service and no handler and move
one drop counter named for the reason; the rest arrive with the addresses and
L4 bytes the header bounds (IPv6 extension headers stepped over).
"""

from __future__ import annotations

import socket
from typing import Any

import pytest
from scapy.compat import raw
from scapy.layers.dhcp import BOOTP, DHCP
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.inet6 import IPv6, IPv6ExtHdrDestOpt, IPv6ExtHdrFragment, IPv6ExtHdrHopByHop
from scapy.layers.l2 import Ether

from passt.dispatch import Dispatcher
from passt.services.dhcp import DhcpService
from passt.wire.ipv4 import IPv4Header
from tests.unit.conftest import GUEST_MAC_STR, OUR_MAC_STR
from tests.unit.fakes import make_ctx

G4, W4 = "192.0.2.3", "203.0.113.9"
G6, W6 = "2001:db8:1::3", "2001:db8:77::9"


class Recorder:
    """An L4 handler that records what it is handed."""

    def __init__(self) -> None:
        self.calls: list[tuple[int, bytes, bytes, bytes]] = []

    def from_tap(self, af: int, src: bytes, dst: bytes, l4: memoryview, now: float) -> None:
        self.calls.append((af, src, dst, bytes(l4)))

    def tap_reset(self) -> None:
        pass


class RecordingService:
    def __init__(self) -> None:
        self.calls: list[tuple[Any, bytes]] = []

    def handle(self, frame: memoryview, iph: Any, l4: memoryview, /) -> bytes | None:
        self.calls.append((iph, bytes(l4)))
        return None


def _eth() -> Ether:
    return Ether(src=GUEST_MAC_STR, dst=OUR_MAC_STR)


def _setup() -> tuple[Any, Any, Recorder, RecordingService]:
    ctx, tap = make_ctx()
    rec = Recorder()
    svc = RecordingService()
    disp = Dispatcher(ctx, arp=None, dhcp=svc, ndp=svc, dhcpv6=svc, tcp=rec, udp=rec, icmp=rec)
    return ctx, disp, rec, svc


def _corrupt(frame: bytes, off: int, value: bytes) -> bytes:
    data = bytearray(frame)
    data[off : off + len(value)] = value
    return bytes(data)


UDP4 = raw(_eth() / IP(src=G4, dst=W4) / UDP(sport=5000, dport=53) / b"q")
UDP6 = raw(_eth() / IPv6(src=G6, dst=W6) / UDP(sport=5000, dport=53) / b"q")

BAD = {
    "eth-short": (UDP4[:13], "eth_short"),
    "ipv4-short": (UDP4[:14 + 19], "ipv4_short"),
    "ipv4-version": (_corrupt(UDP4, 14, b"\x65"), "ipv4_header"),
    "ipv4-ihl": (_corrupt(UDP4, 14, b"\x44"), "ipv4_header"),
    "ipv4-total-beyond-frame": (_corrupt(UDP4, 16, b"\xff\xff"), "ipv4_header"),
    "ipv4-total-below-header": (_corrupt(UDP4, 16, b"\x00\x13"), "ipv4_header"),
    "ipv4-more-fragments": (raw(_eth() / IP(src=G4, dst=W4, flags="MF") / UDP() / b"x"), "ipv4_fragment"),
    "ipv4-offset": (raw(_eth() / IP(src=G4, dst=W4, frag=8) / (b"x" * 8)), "ipv4_fragment"),
    "ipv6-short": (UDP6[:14 + 39], "ipv6_short"),
    "ipv6-version": (_corrupt(UDP6, 14, b"\x40"), "ipv6_header"),
    "ipv6-payload-beyond-frame": (_corrupt(UDP6, 18, b"\xff\xff"), "ipv6_header"),
    "ipv6-fragment": (raw(_eth() / IPv6(src=G6, dst=W6) / IPv6ExtHdrFragment() / UDP() / b"x"), "ipv6_fragment"),
    "ipv6-ext-chain": (raw(_eth() / IPv6(src=G6, dst=W6) / (IPv6ExtHdrDestOpt() / IPv6ExtHdrDestOpt()
                           / IPv6ExtHdrDestOpt() / IPv6ExtHdrDestOpt() / IPv6ExtHdrDestOpt() / IPv6ExtHdrDestOpt()
                           / IPv6ExtHdrDestOpt() / IPv6ExtHdrDestOpt() / IPv6ExtHdrDestOpt()) / UDP()), "ipv6_ext"),
    "ipv6-ext-cut": (raw(_eth() / IPv6(src=G6, dst=W6, plen=4, nh=60)) + b"\x11\x00\x00\x00", "ipv6_ext"),
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(BAD))
def test_bad_ip_headers_dropped_counted_reach_nothing(name: str) -> None:
    frame, reason = BAD[name]
    ctx, disp, rec, svc = _setup()
    disp.from_tap([memoryview(frame)], 0.0)
    assert rec.calls == [] and svc.calls == []
    assert dict(ctx.counters.drops) == {reason: 1}


@pytest.mark.parametrize("af", [4, 6])
def test_l4_bytes_bounded_by_ip_length_not_by_padding(af: int) -> None:
    """Ethernet padding after the datagram never reaches the handler."""
    ctx, disp, rec, _ = _setup()
    frame = UDP4 if af == 4 else UDP6
    disp.from_tap([memoryview(frame + b"\0" * 20)], 0.0)
    fam = socket.AF_INET if af == 4 else socket.AF_INET6
    src, dst = (G4, W4) if af == 4 else (G6, W6)
    ((got_af, got_src, got_dst, l4),) = rec.calls
    assert (got_af, got_src, got_dst) == (af, socket.inet_pton(fam, src), socket.inet_pton(fam, dst))
    assert len(l4) == 9 and l4[:4] == b"\x13\x88\x00\x35" and l4.endswith(b"q")
    assert not ctx.counters.drops


def test_ipv6_extension_headers_stepped_over() -> None:
    _, disp, rec, _ = _setup()
    frame = raw(_eth() / IPv6(src=G6, dst=W6) / IPv6ExtHdrHopByHop() / IPv6ExtHdrDestOpt()
                / TCP(sport=1, dport=2, flags="S"))  # fmt: skip
    disp.from_tap([memoryview(frame)], 0.0)
    ((_, _, _, l4),) = rec.calls
    assert len(l4) == 20 and l4[13] == 0x02


def test_services_get_the_parsed_header() -> None:
    """DHCP (UDP to 67) goes to the service with the IPv4 header already parsed, not to UDP."""
    _, disp, rec, svc = _setup()
    frame = raw(_eth() / IP(src="0.0.0.0", dst="255.255.255.255") / UDP(sport=68, dport=67)
                / BOOTP(chaddr=b"\x52\x54\x00\x12\x34\x56") / DHCP(options=[("message-type", "discover"), "end"]))  # fmt: skip
    disp.from_tap([memoryview(frame)], 0.0)
    assert rec.calls == []
    ((iph, l4),) = svc.calls
    assert isinstance(iph, IPv4Header) and iph.dst == b"\xff" * 4 and l4[2:4] == b"\x00\x43"


def test_dhcp_discover_answered_through_the_dispatcher() -> None:
    ctx, tap = make_ctx()
    svc = DhcpService(ctx.conf, ctx.guest, ctx.counters)
    disp = Dispatcher(ctx, arp=None, dhcp=svc, ndp=None, dhcpv6=None, tcp=None, udp=None, icmp=None)
    frame = raw(_eth() / IP(src="0.0.0.0", dst="255.255.255.255") / UDP(sport=68, dport=67)
                / BOOTP(chaddr=b"\x52\x54\x00\x12\x34\x56", xid=7)
                / DHCP(options=[("message-type", "discover"), "end"]))  # fmt: skip
    disp.from_tap([memoryview(frame)], 0.0)
    ctx.loop.run_once(0)
    (reply,) = tap.frames
    assert Ether(reply)[BOOTP].xid == 7 and Ether(reply)[BOOTP].yiaddr == "192.0.2.3"
