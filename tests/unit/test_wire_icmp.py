"""wire/icmp.py against scapy."""

from __future__ import annotations

import pytest
from scapy.compat import raw
from scapy.layers.inet import ICMP
from scapy.layers.inet6 import ICMPv6EchoReply, ICMPv6EchoRequest, IPv6

from passt.wire.errors import ParseError
from passt.wire.icmp import (
    ICMP_ECHO_REQUEST,
    ICMPV6_ECHO_REPLY,
    ICMPV6_ECHO_REQUEST,
    build_icmp_echo,
    icmp4_checksum_ok,
    icmpv6_checksum_ok,
    parse_icmp,
    parse_icmp_echo,
    set_icmp4_checksum,
    set_icmpv6_checksum,
)
from tests.unit.conftest import check_prefixes

ECHO4 = raw(ICMP(type=8, id=0x1234, seq=7) / b"ping data")
S6 = bytes.fromhex("fe800000000000000000000000000001")
D6 = bytes.fromhex("fe800000000000000000000000000002")
ECHO6 = raw(IPv6(src="fe80::1", dst="fe80::2") / ICMPv6EchoRequest(id=0x4321, seq=9, data=b"abc"))[
    40:
]


def test_parse_icmp_echo_whole() -> None:
    echo = parse_icmp_echo(memoryview(ECHO4))
    assert (echo.type, echo.code, echo.ident, echo.seq, bytes(echo.data)) == (
        8,
        0,
        0x1234,
        7,
        b"ping data",
    )
    assert icmp4_checksum_ok(memoryview(ECHO4))
    echo6 = parse_icmp_echo(memoryview(ECHO6))
    assert (echo6.type, echo6.ident, echo6.seq, bytes(echo6.data)) == (
        ICMPV6_ECHO_REQUEST,
        0x4321,
        9,
        b"abc",
    )
    assert icmpv6_checksum_ok(memoryview(ECHO6), S6, D6)
    assert not icmpv6_checksum_ok(memoryview(ECHO6), D6, S6[:15] + b"\x07")


def test_parse_icmp_prefixes() -> None:
    check_prefixes(parse_icmp_echo, ECHO4[:8])
    check_prefixes(parse_icmp, ECHO4[:4])
    assert parse_icmp(memoryview(ECHO4)).type == ICMP_ECHO_REQUEST
    with pytest.raises(ParseError):
        parse_icmp_echo(memoryview(ECHO4[:7]))


def test_icmp4_build_parse_build() -> None:
    echo = parse_icmp_echo(memoryview(ECHO4))
    buf = bytearray(len(ECHO4))
    assert build_icmp_echo(buf, 0, type=echo.type, ident=echo.ident, seq=echo.seq) == 8
    buf[8:] = echo.data
    set_icmp4_checksum(buf, 0, len(buf))
    assert bytes(buf) == ECHO4


def test_icmpv6_reply_checksum_matches_scapy() -> None:
    buf = bytearray(8 + 3)
    build_icmp_echo(buf, 0, type=ICMPV6_ECHO_REPLY, ident=5, seq=6)
    buf[8:] = b"xyz"
    set_icmpv6_checksum(buf, 0, len(buf), S6, D6)
    expect = raw(IPv6(src="fe80::1", dst="fe80::2") / ICMPv6EchoReply(id=5, seq=6, data=b"xyz"))[
        40:
    ]
    assert bytes(buf) == expect
