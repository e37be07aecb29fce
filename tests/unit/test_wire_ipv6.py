"""wire/ipv6.py against scapy."""

from __future__ import annotations

import pytest
from scapy.compat import raw
from scapy.layers.inet import UDP
from scapy.layers.inet6 import (
    ICMPv6EchoRequest,
    IPv6,
    IPv6ExtHdrDestOpt,
    IPv6ExtHdrFragment,
    IPv6ExtHdrHopByHop,
    IPv6ExtHdrRouting,
)

from passt.wire.errors import ParseError
from passt.wire.ipv6 import (
    MAX_EXT_HEADERS,
    PROTO_ICMPV6,
    PROTO_UDP,
    build_ipv6,
    is_link_local,
    parse_ipv6,
    solicited_node,
)
from tests.unit.conftest import check_prefixes

SRC = "fe80::5054:ff:fe12:3456"
DST = "2001:db8::1"
PACKET = raw(
    IPv6(src=SRC, dst=DST, hlim=64, tc=0x28, fl=0x12345) / UDP(sport=1, dport=2) / b"hello"
)


def test_parse_ipv6_whole() -> None:
    hdr, proto, l4 = parse_ipv6(memoryview(PACKET))
    assert (hdr.traffic_class, hdr.flow_label, hdr.hop_limit, hdr.next_header) == (
        0x28,
        0x12345,
        64,
        PROTO_UDP,
    )
    assert hdr.payload_len == 13 and proto == PROTO_UDP
    assert hdr.src == bytes.fromhex("fe80000000000000505400fffe123456")
    assert hdr.dst == bytes.fromhex("20010db8000000000000000000000001")
    assert bytes(l4) == PACKET[40:]


def test_parse_ipv6_prefixes() -> None:
    check_prefixes(parse_ipv6, PACKET)


def test_parse_ipv6_trailing_bytes() -> None:
    _, _, l4 = parse_ipv6(memoryview(PACKET + b"\0" * 10))
    assert bytes(l4) == PACKET[40:]


def test_parse_ipv6_skips_extension_headers() -> None:
    pkt = raw(
        IPv6(src=SRC, dst=DST)
        / IPv6ExtHdrHopByHop()
        / IPv6ExtHdrDestOpt()
        / IPv6ExtHdrRouting()
        / ICMPv6EchoRequest(id=1, seq=2)
    )
    hdr, proto, l4 = parse_ipv6(memoryview(pkt))
    assert hdr.next_header == 0 and proto == PROTO_ICMPV6
    assert bytes(l4) == pkt[-8:] and l4[0] == 128
    check_prefixes(parse_ipv6, pkt)


def test_parse_ipv6_extension_chain_bounded() -> None:
    ok = IPv6(src=SRC, dst=DST)
    for _ in range(MAX_EXT_HEADERS):
        ok = ok / IPv6ExtHdrDestOpt()
    parse_ipv6(memoryview(raw(ok / UDP())))
    with pytest.raises(ParseError):
        parse_ipv6(memoryview(raw(ok / IPv6ExtHdrDestOpt() / UDP())))


@pytest.mark.parametrize(
    "pkt",
    [
        raw(IPv6(version=4) / UDP()),
        raw(IPv6(plen=100) / UDP()),
        raw(IPv6() / IPv6ExtHdrFragment() / UDP()),
        raw(IPv6(nh=0) / b"\x11"),
        raw(IPv6(nh=0) / b"\x11\x05\0\0\0\0\0\0"),
    ],
    ids=["version", "payload-length", "fragment", "short-ext", "ext-beyond-payload"],
)
def test_parse_ipv6_refuses(pkt: bytes) -> None:
    with pytest.raises(ParseError):
        parse_ipv6(memoryview(pkt))


def test_ipv6_build_parse_build() -> None:
    hdr, proto, l4 = parse_ipv6(memoryview(PACKET))
    buf = bytearray(len(PACKET))
    end = build_ipv6(
        buf,
        0,
        src=hdr.src,
        dst=hdr.dst,
        next_header=proto,
        payload_len=len(l4),
        hop_limit=hdr.hop_limit,
        flow_label=hdr.flow_label,
        traffic_class=hdr.traffic_class,
    )
    assert end == 40
    buf[40:] = l4
    assert bytes(buf) == PACKET
    pkt = IPv6(bytes(buf))
    assert (pkt.src, pkt.dst, pkt.hlim, pkt.tc, pkt.fl, pkt.plen) == (
        SRC,
        DST,
        64,
        0x28,
        0x12345,
        13,
    )


def test_address_helpers() -> None:
    assert is_link_local(bytes.fromhex("fe80000000000000505400fffe123456"))
    assert is_link_local(bytes.fromhex("febf0000000000000000000000000001"))
    assert not is_link_local(bytes.fromhex("20010db8000000000000000000000001"))
    assert solicited_node(bytes.fromhex("20010db8000000000000000000abcdef")) == bytes.fromhex(
        "ff0200000000000000000001ffabcdef"
    )
