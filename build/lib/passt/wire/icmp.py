"""ICMP (RFC 792) and ICMPv6 (RFC 4443) message headers: echo, and the NDP types.

ICMP echo is what the ping flows translate; NDP messages (RFC 4861, types
133..137) go to services/ndp.py, whose bodies are parsed in wire/ndp.py.
ICMPv4 checksums cover the message only; ICMPv6 ones add the IPv6
pseudo-header (RFC 4443 section 2.3).
"""

from __future__ import annotations

import struct
from typing import Final, NamedTuple

from passt.wire.checksum import checksum, csum_partial, finish, pseudo_sum6
from passt.wire.errors import ParseError

ICMP_HLEN: Final = 4
ICMP_ECHO_HLEN: Final = 8

# ICMP (IPv4) types
ICMP_ECHO_REPLY: Final = 0
ICMP_DEST_UNREACH: Final = 3
ICMP_ECHO_REQUEST: Final = 8
ICMP_TIME_EXCEEDED: Final = 11

# ICMPv6 types
ICMPV6_DEST_UNREACH: Final = 1
ICMPV6_PACKET_TOO_BIG: Final = 2
ICMPV6_TIME_EXCEEDED: Final = 3
ICMPV6_PARAM_PROBLEM: Final = 4
ICMPV6_ECHO_REQUEST: Final = 128
ICMPV6_ECHO_REPLY: Final = 129
NDP_ROUTER_SOLICIT: Final = 133
NDP_ROUTER_ADVERT: Final = 134
NDP_NEIGHBOR_SOLICIT: Final = 135
NDP_NEIGHBOR_ADVERT: Final = 136
NDP_REDIRECT: Final = 137

PROTO_ICMPV6: Final = 58

_HDR: Final = struct.Struct("!BBH")
_ECHO: Final = struct.Struct("!BBHHH")
_CSUM: Final = struct.Struct("!H")


class IcmpHeader(NamedTuple):
    """The 4 bytes every ICMP/ICMPv6 message starts with."""

    type: int
    code: int
    checksum: int


class IcmpEcho(NamedTuple):
    """An echo request or reply (ICMP 8/0, ICMPv6 128/129)."""

    type: int
    code: int
    checksum: int
    #: Identifier (the "port" of a ping socket).
    ident: int
    seq: int
    #: Everything after the 8-byte header.
    data: memoryview


def parse_icmp(msg: memoryview) -> IcmpHeader:
    """Parse the type/code/checksum of any ICMP or ICMPv6 message."""
    if len(msg) < ICMP_HLEN:
        raise ParseError("short icmp header")
    typ, code, csum = _HDR.unpack_from(msg, 0)
    return IcmpHeader(typ, code, csum)


def parse_icmp_echo(msg: memoryview) -> IcmpEcho:
    """Parse an echo message (the caller checks the type it expects)."""
    if len(msg) < ICMP_ECHO_HLEN:
        raise ParseError("short icmp echo")
    typ, code, csum, ident, seq = _ECHO.unpack_from(msg, 0)
    return IcmpEcho(typ, code, csum, ident, seq, msg[ICMP_ECHO_HLEN:])


def build_icmp_echo(
    buf: bytearray, off: int, *, type: int, ident: int, seq: int, code: int = 0
) -> int:
    """Write an echo header (checksum zero) at `off`; returns off + 8.

    Put the data after it, then call set_icmp4_checksum / set_icmpv6_checksum.
    """
    _ECHO.pack_into(buf, off, type, code, 0, ident, seq)
    return off + ICMP_ECHO_HLEN


def set_icmp4_checksum(buf: bytearray, off: int, length: int) -> int:
    """Compute and store the checksum of the `length`-byte ICMP message at `off`."""
    _CSUM.pack_into(buf, off + 2, 0)
    value = checksum(memoryview(buf)[off : off + length])
    _CSUM.pack_into(buf, off + 2, value)
    return value


def set_icmpv6_checksum(buf: bytearray, off: int, length: int, src: bytes, dst: bytes) -> int:
    """Compute and store the checksum of the `length`-byte ICMPv6 message at `off`."""
    _CSUM.pack_into(buf, off + 2, 0)
    seg = memoryview(buf)[off : off + length]
    value = finish(csum_partial(seg, pseudo_sum6(src, dst, PROTO_ICMPV6, length)))
    _CSUM.pack_into(buf, off + 2, value)
    return value


def icmp4_checksum_ok(msg: memoryview) -> bool:
    """True when an ICMP message's checksum verifies."""
    return len(msg) >= ICMP_HLEN and csum_partial(msg) == 0xFFFF


def icmpv6_checksum_ok(msg: memoryview, src: bytes, dst: bytes) -> bool:
    """True when an ICMPv6 message's checksum verifies with the pseudo-header."""
    return (
        len(msg) >= ICMP_HLEN
        and csum_partial(msg, pseudo_sum6(src, dst, PROTO_ICMPV6, len(msg))) == 0xFFFF
    )
