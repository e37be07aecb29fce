"""wire/udp.py against scapy."""

from __future__ import annotations

import pytest
from scapy.compat import raw
from scapy.layers.inet import IP, UDP
from scapy.layers.inet6 import IPv6

from passt.wire.errors import ParseError
from passt.wire.udp import (
    build_udp,
    parse_udp,
    set_udp_checksum4,
    set_udp_checksum6,
    udp_checksum_ok4,
    udp_checksum_ok6,
)
from tests.unit.conftest import check_prefixes

S4 = bytes([192, 0, 2, 1])
D4 = bytes([192, 0, 2, 2])
S6 = bytes.fromhex("fe800000000000000000000000000001")
D6 = bytes.fromhex("20010db8000000000000000000000002")
SEG4 = raw(IP(src="192.0.2.1", dst="192.0.2.2") / UDP(sport=68, dport=67) / b"hello")[20:]
SEG6 = raw(IPv6(src="fe80::1", dst="2001:db8::2") / UDP(sport=546, dport=547) / b"hello!")[40:]


def test_parse_udp_whole() -> None:
    hdr, payload = parse_udp(memoryview(SEG4))
    assert (hdr.sport, hdr.dport, hdr.length) == (68, 67, 13)
    assert bytes(payload) == b"hello"


def test_parse_udp_prefixes_and_trailing() -> None:
    check_prefixes(parse_udp, SEG4)
    _, payload = parse_udp(memoryview(SEG4 + b"pad"))
    assert bytes(payload) == b"hello"


@pytest.mark.parametrize("length", [0, 7, 14, 0xFFFF])
def test_parse_udp_bad_length(length: int) -> None:
    seg = bytearray(SEG4)
    seg[4:6] = length.to_bytes(2, "big")
    with pytest.raises(ParseError):
        parse_udp(memoryview(bytes(seg)))


def test_checksum_verify() -> None:
    assert udp_checksum_ok4(memoryview(SEG4), S4, D4)
    assert udp_checksum_ok6(memoryview(SEG6), S6, D6)
    assert not udp_checksum_ok4(memoryview(SEG4), S4, S4)
    assert not udp_checksum_ok6(memoryview(SEG6), S6, S6)
    zero = bytearray(SEG4)
    zero[6:8] = b"\0\0"
    assert udp_checksum_ok4(memoryview(bytes(zero)), S4, D4), "zero means no checksum over IPv4"
    zero6 = bytearray(SEG6)
    zero6[6:8] = b"\0\0"
    assert not udp_checksum_ok6(memoryview(bytes(zero6)), S6, D6), "zero is invalid over IPv6"


def test_build_parse_build_with_checksums() -> None:
    hdr, payload = parse_udp(memoryview(SEG4))
    buf = bytearray(len(SEG4))
    assert build_udp(buf, 0, sport=hdr.sport, dport=hdr.dport, payload_len=len(payload)) == 8
    buf[8:] = payload
    set_udp_checksum4(buf, 0, len(buf), S4, D4)
    assert bytes(buf) == SEG4
    hdr6, payload6 = parse_udp(memoryview(SEG6))
    buf6 = bytearray(len(SEG6))
    build_udp(buf6, 0, sport=hdr6.sport, dport=hdr6.dport, payload_len=len(payload6))
    buf6[8:] = payload6
    set_udp_checksum6(buf6, 0, len(buf6), S6, D6)
    assert bytes(buf6) == SEG6


def test_zero_checksum_sent_as_ffff() -> None:
    # Search a payload whose checksum computes to zero: then 0xFFFF must be stored.
    for word in range(0x10000):
        buf = bytearray(10)
        build_udp(buf, 0, sport=1, dport=2, payload_len=2)
        buf[8:10] = word.to_bytes(2, "big")
        value = set_udp_checksum4(buf, 0, 10, S4, D4)
        if value == 0xFFFF:
            pkt = IP(raw(IP(src="192.0.2.1", dst="192.0.2.2") / UDP(bytes(buf))))
            assert pkt[UDP].chksum == 0xFFFF
            assert udp_checksum_ok4(memoryview(bytes(buf)), S4, D4)
            return
    pytest.fail("no zero-checksum payload found")
