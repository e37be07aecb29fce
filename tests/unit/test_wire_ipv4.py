"""wire/ipv4.py against scapy."""

from __future__ import annotations

import pytest
from scapy.compat import raw
from scapy.layers.inet import IP, UDP

from passt.wire.errors import ParseError
from passt.wire.ipv4 import IP_DF, PROTO_UDP, build_ipv4, ipv4_header_ok, parse_ipv4
from tests.unit.conftest import check_prefixes

SRC = bytes([192, 0, 2, 118])
DST = bytes([198, 51, 100, 7])
PACKET = raw(
    IP(src="192.0.2.118", dst="198.51.100.7", ttl=64, id=77, tos=0x10, flags="DF")
    / UDP()
    / (b"x" * 5)
)


def test_parse_ipv4_whole() -> None:
    hdr, l4 = parse_ipv4(memoryview(PACKET))
    assert (hdr.header_len, hdr.total_len, hdr.ttl, hdr.ident, hdr.tos) == (
        20,
        len(PACKET),
        64,
        77,
        0x10,
    )
    assert (hdr.proto, hdr.src, hdr.dst, hdr.flags_frag) == (PROTO_UDP, SRC, DST, IP_DF)
    assert bytes(l4) == PACKET[20:]
    assert ipv4_header_ok(memoryview(PACKET), 20)


def test_parse_ipv4_prefixes() -> None:
    check_prefixes(parse_ipv4, PACKET)


def test_parse_ipv4_trailing_bytes_cut_by_total_length() -> None:
    _, l4 = parse_ipv4(memoryview(PACKET + b"\0" * 18))
    assert bytes(l4) == PACKET[20:]


def test_parse_ipv4_options_skipped() -> None:
    pkt = raw(IP(src="192.0.2.118", dst="198.51.100.7", options=[b"\x01\x01\x01\x00"]) / b"data")
    hdr, l4 = parse_ipv4(memoryview(pkt))
    assert hdr.header_len == 24 and bytes(l4) == b"data"


@pytest.mark.parametrize(
    "pkt",
    [
        raw(IP(version=5) / b"abcd"),
        raw(IP(ihl=4) / b"abcd"),
        raw(IP(len=19) / b"abcd"),
        raw(IP(len=200) / b"abcd"),
        raw(IP(flags="MF") / b"abcd"),
        raw(IP(frag=10) / b"abcd"),
    ],
    ids=["version", "ihl", "total<ihl", "total>available", "more-fragments", "offset"],
)
def test_parse_ipv4_refuses(pkt: bytes) -> None:
    with pytest.raises(ParseError):
        parse_ipv4(memoryview(pkt))


def test_ipv4_header_ok_detects_corruption() -> None:
    bad = bytearray(PACKET)
    bad[8] ^= 1
    assert not ipv4_header_ok(memoryview(bytes(bad)), 20)
    assert not ipv4_header_ok(memoryview(PACKET[:19]), 20)


def test_ipv4_build_parse_build() -> None:
    buf = bytearray(20 + 4)
    end = build_ipv4(
        buf, 0, src=SRC, dst=DST, proto=PROTO_UDP, payload_len=4, ttl=64, ident=9, tos=4
    )
    assert end == 20
    buf[20:] = b"abcd"
    pkt = IP(bytes(buf))
    assert (pkt.src, pkt.dst, pkt.ttl, pkt.id, pkt.tos, pkt.len, pkt.proto) == (
        "192.0.2.118",
        "198.51.100.7",
        64,
        9,
        4,
        24,
        17,
    )
    assert pkt.flags == "DF"
    assert (
        pkt.chksum
        == IP(
            raw(IP(src=pkt.src, dst=pkt.dst, ttl=64, id=9, tos=4, flags="DF", proto=17) / b"abcd")
        ).chksum
    )
    hdr, payload = parse_ipv4(memoryview(bytes(buf)))
    again = bytearray(24)
    build_ipv4(
        again,
        0,
        src=hdr.src,
        dst=hdr.dst,
        proto=hdr.proto,
        payload_len=len(payload),
        ttl=hdr.ttl,
        ident=hdr.ident,
        tos=hdr.tos,
        dont_fragment=bool(hdr.flags_frag & IP_DF),
    )
    again[20:] = payload
    assert again == buf


def test_build_ipv4_at_offset_without_df() -> None:
    buf = bytearray(34)
    assert build_ipv4(buf, 14, src=SRC, dst=DST, proto=1, payload_len=0, dont_fragment=False) == 34
    pkt = IP(bytes(buf[14:]))
    assert pkt.flags == 0 and pkt.ttl == 255 and ipv4_header_ok(memoryview(bytes(buf[14:])), 20)
