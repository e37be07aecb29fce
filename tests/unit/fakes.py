"""Test doubles and helpers shared by the flow, dispatcher and service tests (no tests here).

    FakeTap      a TapBackend that records the frames that would go to the guest
    make_ctx     a Context with gateways 192.0.2.1 / 2001:db8:1::1 and a FakeTap
    pump         run a context's loop until a condition holds (bounded)
    to_service   hand a whole frame to a service the way the dispatcher does
    guest_udp, udp_server          a guest datagram's L4 bytes; a loopback UDP server
    CLI_HOST, cli_error            a man-page-shaped HostInfo; the ConfigError of an argv
    Addrs, build_seeds, Mutator    the fuzz corpus and its mutations (test_fuzz_frames, test_hostile)
"""

from __future__ import annotations

import random
import socket
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Interface, IPv6Address, IPv6Interface
from typing import Any, Final, Protocol

import pytest

from passt.cli import ConfigError, parse_args
from passt.config import Mode
from passt.context import Context
from passt.hostinfo import HostInfo
from passt.loop import EventLoop
from passt.tap.base import Buffer
from passt.wire.errors import ParseError
from passt.wire.eth import ETH_HLEN, ETH_P_ARP, ETH_P_IP, ETH_P_IPV6, parse_eth
from passt.wire.ipv4 import IPv4Header, parse_ipv4
from passt.wire.ipv6 import IPv6Header, parse_ipv6
from tests.unit.conftest import GUEST_MAC, make_config, make_ip4, make_ip6, refresh_checksums

G4 = "192.0.2.2"
G6 = "2001:db8:1::2"
GW4 = "192.0.2.1"
GW6 = "2001:db8:1::1"


class FakeTap:
    """A TapBackend that records what would go to the guest."""

    offload = False
    closed = False

    def __init__(self) -> None:
        self.frames: list[bytes] = []

    def fileno(self) -> int:
        return -1

    def read_frames(self) -> list[memoryview]:
        return []

    def send(self, frame: Buffer) -> None:
        self.frames.append(bytes(frame))

    def send_gso(self, frame: Buffer, **kw: int) -> None:
        raise AssertionError("no offload here")

    def flush(self) -> None:
        pass

    def pending(self) -> bool:
        return False

    def close(self) -> None:
        pass


def make_ctx(**overrides: Any) -> tuple[Context, FakeTap]:
    """A Context with gateway 192.0.2.1 / 2001:db8:1::1 and a recording tap."""
    values: dict[str, Any] = {
        "out_ifname": "lo",
        "ip4": make_ip4(addr=IPv4Address("192.0.2.3"), gateway=IPv4Address(GW4)),
        "ip6": make_ip6(addr=IPv6Address("2001:db8:1::3"), gateway=IPv6Address(GW6)),
    }
    values.update(overrides)
    ctx = Context(make_config(**values), EventLoop())
    tap = FakeTap()
    ctx.tap = tap
    ctx.guest.learn_mac(GUEST_MAC)
    return ctx, tap


def pump(ctx: Context, cond: Callable[[], bool], timeout: float = 2.0) -> bool:
    """Run the loop until `cond()` holds or `timeout` passes."""
    deadline = time.monotonic() + timeout
    while not cond() and time.monotonic() < deadline:
        ctx.loop.run_once(0.02)
    return cond()


def packed(af: int, addr: str) -> bytes:
    return socket.inet_pton(socket.AF_INET if af == 4 else socket.AF_INET6, addr)


def free_port(kind: int = socket.SOCK_DGRAM) -> int:
    with socket.socket(socket.AF_INET6, kind) as s:
        s.bind(("::", 0))
        port: int = s.getsockname()[1]
        return port



class _Service(Protocol):
    def handle(self, frame: memoryview, iph: Any, l4: memoryview, /) -> bytes | None: ...


def to_service(svc: Any, frame: bytes) -> bytes | None:
    """Parse Ethernet and IP once, as the dispatcher does, and hand the pieces to `svc`.

    ARP services get the frame alone.  A frame the dispatcher would drop before
    any service (short, bad IP header, fragment) returns None and reaches no service.
    """
    mv = memoryview(frame)
    try:
        eth = parse_eth(mv)
        if eth.ethertype == ETH_P_ARP:
            reply: bytes | None = svc.handle(mv)
            return reply
        iph: IPv4Header | IPv6Header
        if eth.ethertype == ETH_P_IP:
            iph, l4 = parse_ipv4(mv[ETH_HLEN:])
        elif eth.ethertype == ETH_P_IPV6:
            iph, _proto, l4 = parse_ipv6(mv[ETH_HLEN:])
        else:
            return None
    except ParseError:
        return None
    service: _Service = svc
    return service.handle(mv, iph, l4)


# --------------------------------------------------------------------------- command line

_CLI_ADDR4 = IPv4Address("192.168.1.118")
_CLI_ADDR6 = IPv6Address("2a02:6d40:3ca5:2001:b81d:fa4a:8cdd:cf17")
#: The host of the man page's EXAMPLES (eth0, 192.168.1.118/24 via 192.168.1.1,
#: a DHCPv6 /128 address, a link-local IPv6 gateway): no test depends on the machine.
CLI_HOST = HostInfo(
    ifname="eth0",
    mac=bytes.fromhex("2816ad39a9ea"),
    mtu=1500,
    addr4=_CLI_ADDR4,
    prefix4=24,
    gw4=IPv4Address("192.168.1.1"),
    addr6=_CLI_ADDR6,
    prefix6=128,
    gw6=IPv6Address("fe80::62e3:27ff:fe33:2b01"),
    all_addrs=(IPv4Address("127.0.0.1"), _CLI_ADDR4, IPv4Address("10.11.0.1"), IPv6Address("::1"), _CLI_ADDR6),
    dns4=(IPv4Address("127.0.0.53"), IPv4Address("192.168.1.1")),
    dns6=(IPv6Address("::1"), IPv6Address("2001:db8::53")),
    search=("redhat.com", "example.org"),
    route4=True,
    route6=True,
    ifname4="eth0",
    ifname6="eth0",
    all_ifaddrs=(
        IPv4Interface("127.0.0.1/8"),
        IPv4Interface("192.168.1.118/24"),
        IPv4Interface("10.11.0.1/20"),
        IPv6Interface("::1/128"),
        IPv6Interface("2a02:6d40:3ca5:2001:b81d:fa4a:8cdd:cf17/128"),
        IPv6Interface("2001:db8:5::7/56"),
    ),
)


def cli_error(mode: Mode, *argv: str, host: HostInfo = CLI_HOST) -> str:
    """The one-line ConfigError message for argv."""
    with pytest.raises(ConfigError) as info:
        parse_args(mode, list(argv), host=host)
    message = str(info.value)
    assert "\n" not in message and message.strip() == message and message
    return message


# --------------------------------------------------------------------------- UDP


def guest_udp(af: int, src: str, dst: str, sport: int, dport: int, payload: bytes) -> memoryview:
    """L4 bytes (header + payload) of a guest datagram, built and checksummed by scapy."""
    from scapy.compat import raw
    from scapy.layers.inet import IP, UDP
    from scapy.layers.inet6 import IPv6

    ip: Any = IP(src=src, dst=dst) if af == 4 else IPv6(src=src, dst=dst)
    pkt = raw(ip / UDP(sport=sport, dport=dport) / payload)
    return memoryview(pkt[20 if af == 4 else 40 :])


def udp_server(af: int) -> socket.socket:
    """A UDP socket on the loopback address of `af`, any port, 2 s timeout."""
    s = socket.socket(socket.AF_INET if af == 4 else socket.AF_INET6, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1" if af == 4 else "::1", 0))
    s.settimeout(2)
    return s


# --------------------------------------------------------------------------- fuzz seeds and mutator

#: Ports the seed frames aim at (the fuzz test's sink, echo and closed servers).
SINK_PORT: Final = 7001
ECHO_PORT: Final = 7002
CLOSED_PORT: Final = 7003
#: Largest frame either back-end may carry (65535 IP bytes + Ethernet).
MAX_FRAME: Final = 65535 + 14


@dataclass(frozen=True)
class Addrs:
    """Who is who in a seed corpus (strings as scapy takes them)."""

    guest_mac: str
    our_mac: str
    guest4: str
    gw4: str
    srv4: str
    unrouted4: str
    guest6: str
    gw6_ll: str
    srv6: str
    unrouted6: str
    guest_ll: str = "fe80::5054:ff:fe12:3456"


def build_seeds(a: Addrs, *, sink_port: int = SINK_PORT, echo_port: int = ECHO_PORT,
                closed_port: int = CLOSED_PORT) -> list[bytes]:  # fmt: skip
    """A few hundred valid (and a few deliberately odd) frames a guest could send."""
    from scapy.compat import raw
    from scapy.layers.dhcp import BOOTP, DHCP
    from scapy.layers.dhcp6 import (
        DUID_LL,
        DHCP6_InfoRequest,
        DHCP6_Request,
        DHCP6_Solicit,
        DHCP6OptClientId,
        DHCP6OptElapsedTime,
        DHCP6OptIA_NA,
        DHCP6OptOptReq,
        DHCP6OptRapidCommit,
        DHCP6OptServerId,
    )
    from scapy.layers.inet import ICMP, IP, TCP, UDP, IPOption_NOP, IPOption_RR
    from scapy.layers.inet6 import (
        ICMPv6EchoRequest,
        ICMPv6ND_NA,
        ICMPv6ND_NS,
        ICMPv6ND_RS,
        ICMPv6NDOptSrcLLAddr,
        IPv6,
        IPv6ExtHdrDestOpt,
        IPv6ExtHdrFragment,
        IPv6ExtHdrHopByHop,
        IPv6ExtHdrRouting,
    )
    from scapy.layers.l2 import ARP, Dot1Q, Ether
    from scapy.packet import Raw

    e = Ether(src=a.guest_mac, dst=a.our_mac)
    bc = Ether(src=a.guest_mac, dst="ff:ff:ff:ff:ff:ff")
    mc6 = Ether(src=a.guest_mac, dst="33:33:00:00:00:02")
    out: list[bytes] = []
    add = out.append
    mac_b = bytes.fromhex(a.guest_mac.replace(":", ""))

    # ARP: request for the gateway, for ourselves, gratuitous, reply, junk op
    for op, pdst, psrc in ((1, a.gw4, a.guest4), (1, a.guest4, a.guest4), (1, a.gw4, "0.0.0.0"),
                           (2, a.gw4, a.guest4), (7, a.gw4, a.guest4), (1, a.srv4, a.guest4)):
        add(raw(bc / ARP(op=op, hwsrc=a.guest_mac, psrc=psrc, pdst=pdst)))
    add(raw(bc / ARP(hwlen=8, plen=2, op=1)))

    # DHCP: discover, request (selecting and renewing), inform, release, decline, junk options
    bootp = BOOTP(chaddr=mac_b + bytes(10), xid=0x1234, flags=0x8000)
    ip_bc = IP(src="0.0.0.0", dst="255.255.255.255") / UDP(sport=68, dport=67)
    for opts in (
        [("message-type", "discover"), ("param_req_list", [1, 3, 6, 15, 26, 119]), "end"],
        [("message-type", "request"), ("requested_addr", a.guest4), ("server_id", a.gw4), "end"],
        [("message-type", "request"), ("requested_addr", "10.9.9.9"), "end"],
        [("message-type", "request"), "end"],
        [("message-type", "inform"), "end"],
        [("message-type", "release"), ("server_id", a.gw4), "end"],
        [("message-type", "decline"), ("requested_addr", a.guest4), "end"],
        [("message-type", "discover"), ("max_dhcp_size", 576), ("client_id", b"\x01" + mac_b), "end"],
        [("message-type", "discover"), ("hostname", b"x" * 255), "end"],
        [("message-type", 99), "end"],
        [("message-type", "discover"), (52, b"\x03"), "end"],  # overload: file and sname
    ):
        add(raw(bc / ip_bc / bootp / DHCP(options=opts)))
    add(raw(e / IP(src=a.guest4, dst=a.gw4) / UDP(sport=68, dport=67)
            / BOOTP(chaddr=mac_b, ciaddr=a.guest4) / DHCP(options=[("message-type", "request"), "end"])))

    # DHCPv6: solicit (with and without rapid commit), request, information-request
    duid = DUID_LL(lladdr=a.guest_mac)
    ip6_dh = mc6 / IPv6(src=a.guest_ll, dst="ff02::1:2") / UDP(sport=546, dport=547)
    common = DHCP6OptClientId(duid=duid) / DHCP6OptElapsedTime() / DHCP6OptOptReq(reqopts=[23, 24])
    add(raw(ip6_dh / DHCP6_Solicit(trid=1) / common / DHCP6OptIA_NA(iaid=1)))
    add(raw(ip6_dh / DHCP6_Solicit(trid=2) / common / DHCP6OptRapidCommit() / DHCP6OptIA_NA(iaid=1)))
    add(raw(ip6_dh / DHCP6_Request(trid=3) / common / DHCP6OptServerId(duid=DUID_LL(lladdr=a.our_mac))
            / DHCP6OptIA_NA(iaid=1)))
    add(raw(ip6_dh / DHCP6_InfoRequest(trid=4) / common))

    # NDP: RS, NS for the gateway, DAD probe, NA, with and without link-layer options
    lla = ICMPv6NDOptSrcLLAddr(lladdr=a.guest_mac)
    add(raw(mc6 / IPv6(src=a.guest_ll, dst="ff02::2", hlim=255) / ICMPv6ND_RS() / lla))
    add(raw(mc6 / IPv6(src="::", dst="ff02::2", hlim=255) / ICMPv6ND_RS()))
    add(raw(e / IPv6(src=a.guest_ll, dst="ff02::1:ff00:1", hlim=255) / ICMPv6ND_NS(tgt=a.gw6_ll) / lla))
    add(raw(e / IPv6(src=a.guest6, dst=a.gw6_ll, hlim=255) / ICMPv6ND_NS(tgt=a.srv6) / lla))
    add(raw(e / IPv6(src="::", dst="ff02::1:ff12:3456", hlim=255) / ICMPv6ND_NS(tgt=a.guest_ll)))
    add(raw(e / IPv6(src=a.guest_ll, dst="ff02::1", hlim=255) / ICMPv6ND_NA(tgt=a.guest_ll, R=0, S=0, O=1)))
    add(raw(e / IPv6(src=a.guest_ll, dst="ff02::2", hlim=64) / ICMPv6ND_RS()))

    # TCP: every combination of the six classic flags, both families, open and closed ports
    for af, src, dsts in ((4, a.guest4, (a.srv4, a.unrouted4, a.gw4)),
                          (6, a.guest6, (a.srv6, a.unrouted6, a.gw6_ll))):
        def ip_of(d: str, af: int = af, src: str = src) -> Any:
            return IP(src=src, dst=d) if af == 4 else IPv6(src=src, dst=d)

        for flags in range(64):
            for dst, dport in ((dsts[0], sink_port), (dsts[0], closed_port), (dsts[1], 80)):
                if dport != sink_port and flags % 4:
                    continue
                payload = b"data" * (flags % 3) if flags & 0x10 else b""
                add(raw(e / ip_of(dst) / TCP(sport=40000 + flags, dport=dport, flags=flags, seq=1000,
                                             ack=77 if flags & 0x10 else 0, window=65535)
                        / payload))
        tcp_opts: list[list[Any]] = [[("MSS", 1460), ("WScale", 7), ("SAckOK", b""), ("Timestamp", (1, 0))],
                     [("MSS", 0), ("WScale", 200)], [("NOP", None)] * 10, [("EOL", None)],
                     [(254, b"\x01" * 30)], [("MSS", 65535), ("WScale", 14)]]
        for opts in tcp_opts:
            add(raw(e / ip_of(dsts[0]) / TCP(sport=41000, dport=sink_port, flags="S", options=opts)))
        add(raw(e / ip_of(dsts[0]) / TCP(sport=41001, dport=sink_port, flags="PA", urgptr=3)
                / Raw(b"u" * 1000)))
        add(raw(e / ip_of(dsts[2]) / TCP(sport=41002, dport=22, flags="S")))

    # UDP: echo server, closed port, unrouted, DNS, port 0, empty and large payloads
    for src, dsts, ip_cls in ((a.guest4, (a.srv4, a.unrouted4, a.gw4), IP),
                              (a.guest6, (a.srv6, a.unrouted6, a.gw6_ll), IPv6)):
        for dst, sport, dport, size in ((dsts[0], 5000, echo_port, 10), (dsts[0], 5001, echo_port, 0),
                                        (dsts[0], 5002, echo_port, 1400), (dsts[0], 5003, closed_port, 8),
                                        (dsts[1], 5004, 53, 30), (dsts[2], 5005, 53, 30),
                                        (dsts[0], 0, echo_port, 4), (dsts[0], 5006, 0, 4)):
            add(raw(e / ip_cls(src=src, dst=dst) / UDP(sport=sport, dport=dport) / (b"p" * size)))
    add(raw(e / IP(src=a.guest4, dst=a.srv4) / UDP(sport=5007, dport=echo_port) / (b"B" * 8000)))
    add(raw(e / IP(src=a.guest4, dst="255.255.255.255") / UDP(sport=5008, dport=9)))
    add(raw(e / IP(src=a.guest4, dst="224.0.0.251") / UDP(sport=5353, dport=5353)))
    add(raw(e / IPv6(src=a.guest6, dst="ff02::fb") / UDP(sport=5353, dport=5353)))

    # ICMP: echo (v4/v6, small and big), other types, IPv4 options
    for dst in (a.srv4, a.unrouted4, a.gw4):
        add(raw(e / IP(src=a.guest4, dst=dst) / ICMP(id=0x4242, seq=1) / (b"x" * 56)))
    add(raw(e / IP(src=a.guest4, dst=a.srv4) / ICMP(id=7, seq=2) / (b"y" * 4000)))
    add(raw(e / IP(src=a.guest4, dst=a.srv4) / ICMP(type=13)))
    add(raw(e / IP(src=a.guest4, dst=a.srv4) / ICMP(type=3, code=3) / IP(src=a.srv4, dst=a.guest4)
            / UDP(sport=1, dport=2)))
    add(raw(e / IP(src=a.guest4, dst=a.srv4, options=[IPOption_NOP(), IPOption_RR()]) / ICMP(id=9)))
    add(raw(e / IP(src=a.guest4, dst=a.srv4, options=[IPOption_RR()]) / UDP(sport=5009, dport=echo_port)
            / b"opt"))
    for dst in (a.srv6, a.unrouted6):
        add(raw(e / IPv6(src=a.guest6, dst=dst) / ICMPv6EchoRequest(id=0x4243, seq=1, data=b"x" * 56)))
    add(raw(e / IPv6(src=a.guest_ll, dst=a.gw6_ll) / ICMPv6EchoRequest(id=5)))

    # IPv6 with extension headers: hop-by-hop, destination options, routing, fragment, chains
    for ext in (IPv6ExtHdrHopByHop(), IPv6ExtHdrDestOpt(), IPv6ExtHdrRouting(),
                IPv6ExtHdrHopByHop() / IPv6ExtHdrDestOpt() / IPv6ExtHdrRouting(),
                IPv6ExtHdrFragment(m=1), IPv6ExtHdrDestOpt() / IPv6ExtHdrFragment()):
        add(raw(e / IPv6(src=a.guest6, dst=a.srv6) / ext / UDP(sport=5010, dport=echo_port) / b"ext"))
        add(raw(e / IPv6(src=a.guest6, dst=a.srv6) / ext / TCP(sport=41003, dport=sink_port, flags="S")))
    chain: Any = IPv6ExtHdrDestOpt()
    for _ in range(10):
        chain = chain / IPv6ExtHdrDestOpt()
    add(raw(e / IPv6(src=a.guest6, dst=a.srv6) / chain / UDP(sport=5011, dport=echo_port)))

    # IPv4 fragments, odd ethertypes, VLAN tags, runts, jumbo
    add(raw(e / IP(src=a.guest4, dst=a.srv4, flags="MF") / UDP(sport=5012, dport=echo_port) / (b"f" * 64)))
    add(raw(e / IP(src=a.guest4, dst=a.srv4, frag=8) / (b"f" * 64)))
    add(raw(e / Dot1Q(vlan=5) / IP(src=a.guest4, dst=a.srv4) / UDP(sport=5013, dport=echo_port)))
    add(raw(e / IP(src=a.guest4, dst=a.srv4, proto=47) / (b"g" * 24)))
    add(raw(e / IPv6(src=a.guest6, dst=a.srv6, nh=59)))
    add(raw(Ether(src=a.guest_mac, dst=a.our_mac, type=0x88CC) / (b"l" * 46)))
    add(raw(e)[:14])
    add(raw(e / IP(src=a.guest4, dst=a.srv4) / UDP(sport=5014, dport=echo_port) / (b"J" * 60000)))
    add(raw(e / IPv6(src=a.guest6, dst=a.srv6) / TCP(sport=41004, dport=sink_port, flags="PA")
            / (b"J" * 65000)))
    return out


_U16: Final = struct.Struct("!H")
_BOUNDARY: Final = (0, 1, 2, 0x7F, 0x80, 0xFE, 0xFF)
_BOUNDARY16: Final = (0, 1, 7, 8, 19, 20, 21, 39, 40, 0x7FFF, 0x8000, 0xFFFE, 0xFFFF)


class Mutator:
    """Fast seeded mutations of Ethernet frames (bytearray operations only)."""

    def __init__(self, seeds: list[bytes], seed: int, *, fix_checksums: bool = True) -> None:
        self.seeds = seeds
        self.rng = random.Random(seed)
        self.fix_checksums = fix_checksums

    def frame(self, pool: list[bytes] | None = None) -> bytes:
        """One frame: usually a mutated seed, sometimes a seed as is or pure noise."""
        rng = self.rng
        seeds = pool if pool else self.seeds
        roll = rng.random()
        if roll < 0.04:
            return rng.choice(seeds)
        if roll < 0.06:
            return rng.randbytes(rng.choice((0, 1, 13, 14, 15, 33, 34, 53, 54, 60, rng.randrange(2000))))
        data = bytearray(rng.choice(seeds))
        for _ in range(1 + (rng.random() < 0.35) + (rng.random() < 0.1)):
            self._one(data)
        if self.fix_checksums and rng.random() < 0.2:
            # past the checksum checks of DHCP, DHCPv6 and NDP, into their option parsers
            return refresh_checksums(bytes(data))
        return bytes(data)

    def _one(self, data: bytearray) -> None:
        rng = self.rng
        n = len(data)
        op = rng.randrange(10)
        if op <= 1 and n:  # bit flips, biased to the headers
            span = min(n, 80) if rng.random() < 0.8 else n
            for _ in range(rng.randint(1, 4)):
                data[rng.randrange(span)] ^= 1 << rng.randrange(8)
        elif op == 2:  # truncation
            cut = rng.randrange(min(n, 90) + 1) if rng.random() < 0.7 else rng.randrange(n + 1)
            del data[cut:]
        elif op == 3:  # extension: trailing junk, rarely up to and past the largest frame
            if rng.random() < 0.02:
                data += bytes(rng.choice((MAX_FRAME - n, MAX_FRAME + 1 - n, 70000 - n, 1)))
            else:
                data += rng.randbytes(rng.randint(1, 64))
        elif op == 4 and n:  # boundary byte
            data[rng.randrange(min(n, 80))] = rng.choice(_BOUNDARY)
        elif op == 5:  # splice with another seed
            other = rng.choice(self.seeds)
            cut = rng.randrange(min(n, 80) + 1)
            data[cut:] = other[rng.randrange(len(other) + 1) if rng.random() < 0.3 else cut :]
        elif op == 6 and n >= 14:  # length fields: IP total/payload length, UDP length, IHL, TCP offset
            self._length(data)
        elif op == 7 and n:  # insertion
            pos = rng.randrange(n)
            data[pos:pos] = rng.randbytes(rng.randint(1, 12))
        elif op == 8 and n > 20:  # duplicate a chunk (repeated options)
            pos = rng.randrange(14, n)
            ln = rng.randint(1, 40)
            data[pos:pos] = data[pos : pos + ln]
        elif n >= 14:  # random 16-bit value at a random header offset
            pos = rng.randrange(12, min(n, 80) - 1) if n > 14 else 12
            _U16.pack_into(data, pos, rng.choice(_BOUNDARY16) if rng.random() < 0.5 else rng.randrange(65536))

    def _length(self, data: bytearray) -> None:
        rng = self.rng
        n = len(data)
        ethertype = (data[12] << 8) | data[13]
        val = rng.choice(_BOUNDARY16) if rng.random() < 0.6 else min(0xFFFF, max(0, n - 14 + rng.randint(-4, 4)))
        if ethertype == 0x0800 and n >= 34:
            ihl = (data[14] & 0xF) * 4
            which = rng.randrange(4)
            if which == 0:
                _U16.pack_into(data, 16, val)
            elif which == 1:
                data[14] = (data[14] & 0xF0) | rng.randrange(16)
            elif which == 2 and n >= 14 + ihl + 8:
                _U16.pack_into(data, 14 + ihl + 4, val & 0xFFFF)  # UDP length
            elif n >= 14 + ihl + 14:
                data[14 + ihl + 12] = rng.randrange(256)  # TCP data offset
        elif ethertype == 0x86DD and n >= 54:
            which = rng.randrange(3)
            if which == 0:
                _U16.pack_into(data, 18, val)
            elif which == 1 and n >= 62:
                _U16.pack_into(data, 58, val & 0xFFFF)  # UDP length (no extension header)
            elif n >= 68:
                data[54 + 12] = rng.randrange(256)
        else:
            _U16.pack_into(data, 12, rng.choice((0x0800, 0x86DD, 0x0806, 0x8100, 0x88CC)))
