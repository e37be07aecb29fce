"""IPv6 headers (RFC 8200): parse what the guest sends, build what we send it.

`parse_ipv6` bounds the payload by Payload Length and walks the extension
headers a guest may legitimately put before an upper layer we handle:
Hop-by-Hop Options (0; MLD reports carry one), Routing (43) and Destination
Options (60).  It stops at the first other Next Header value and returns it
with what follows, so the caller sees (protocol, upper-layer bytes).

Limits: at most MAX_EXT_HEADERS extension headers (a hostile chain cannot
make us loop long); Fragment (44) is refused, as in IPv4; jumbograms (Payload
Length 0 with a Jumbo option) are not supported: Payload Length 0 means no
payload.
"""

from __future__ import annotations

import struct
from typing import Final, NamedTuple

from passt.wire.errors import ParseError
from passt.wire.ipv4 import IP_TTL

IPV6_HLEN: Final = 40
PROTO_HOPOPTS: Final = 0
PROTO_TCP: Final = 6
PROTO_UDP: Final = 17
PROTO_ROUTING: Final = 43
PROTO_FRAGMENT: Final = 44
PROTO_ICMPV6: Final = 58
PROTO_NONE: Final = 59
PROTO_DSTOPTS: Final = 60

#: Bound on the extension-header walk (a normal packet has at most 2 or 3).
MAX_EXT_HEADERS: Final = 8

IPV6_ANY: Final = bytes(16)
#: ff02::1, all nodes on the link.
IPV6_ALL_NODES: Final = bytes.fromhex("ff020000000000000000000000000001")
#: ff02::2, all routers on the link.
IPV6_ALL_ROUTERS: Final = bytes.fromhex("ff020000000000000000000000000002")

#: Version 6, traffic class and flow label 0: the first word of every header we build.
IPV6_VTCFL: Final = 6 << 28

#: The IPv6 header layout (also used by wire/l2l3's combined headers).
IPV6_STRUCT: Final = struct.Struct("!IHBB16s16s")
_IPV6: Final = IPV6_STRUCT
_SKIPPED: Final = frozenset((PROTO_HOPOPTS, PROTO_ROUTING, PROTO_DSTOPTS))


class IPv6Header(NamedTuple):
    """The fixed IPv6 header."""

    traffic_class: int
    flow_label: int
    #: Payload Length field: everything after the fixed header.
    payload_len: int
    #: Next Header of the fixed header (may be an extension header).
    next_header: int
    hop_limit: int
    #: Source address, packed (16 bytes).
    src: bytes
    #: Destination address, packed (16 bytes).
    dst: bytes


#: tuple.__new__ skips the NamedTuple constructor's Python frame (the dispatcher parses every frame).
_new: Final = tuple.__new__


def parse_ipv6(packet: memoryview) -> tuple[IPv6Header, int, memoryview]:
    """Parse an IPv6 packet into (header, upper-layer protocol, upper-layer bytes).

    Raises ParseError for a short packet, a version other than 6, a Payload
    Length beyond the bytes present, a truncated or overlong extension-header
    chain, and a Fragment header.
    """
    n = len(packet)
    if n < IPV6_HLEN:
        raise ParseError("short ipv6 header")
    vtcfl, payload_len, next_header, hop_limit, src, dst = _IPV6.unpack_from(packet, 0)
    if vtcfl >> 28 != 6:
        raise ParseError("ipv6 version")
    if payload_len > n - IPV6_HLEN:
        raise ParseError("ipv6 payload length")
    hdr = _new(IPv6Header, ((vtcfl >> 20) & 0xFF, vtcfl & 0xFFFFF, payload_len, next_header, hop_limit, src, dst))
    body = packet[IPV6_HLEN : IPV6_HLEN + payload_len]
    proto = next_header
    off = 0
    count = 0
    while proto in _SKIPPED:
        if count == MAX_EXT_HEADERS:
            raise ParseError("too many ipv6 extension headers")
        if off + 2 > payload_len:
            raise ParseError("short ipv6 extension header")
        ext_len = (body[off + 1] + 1) << 3
        if off + ext_len > payload_len:
            raise ParseError("short ipv6 extension header")
        proto = body[off]
        off += ext_len
        count += 1
    if proto == PROTO_FRAGMENT:
        raise ParseError("fragment")
    return hdr, proto, body if off == 0 else body[off:]


def build_ipv6(
    buf: bytearray,
    off: int,
    *,
    src: bytes,
    dst: bytes,
    next_header: int,
    payload_len: int,
    hop_limit: int = IP_TTL,
    flow_label: int = 0,
    traffic_class: int = 0,
) -> int:
    """Write a 40-byte IPv6 header at `off`; returns off + 40."""
    _IPV6.pack_into(
        buf,
        off,
        IPV6_VTCFL | ((traffic_class & 0xFF) << 20) | (flow_label & 0xFFFFF),
        payload_len,
        next_header,
        hop_limit,
        src,
        dst,
    )
    return off + IPV6_HLEN


def is_link_local(addr: bytes) -> bool:
    """fe80::/10."""
    return addr[0] == 0xFE and (addr[1] & 0xC0) == 0x80


def solicited_node(addr: bytes) -> bytes:
    """The solicited-node multicast address of `addr` (RFC 4291 section 2.7.1)."""
    return b"\xff\x02" + bytes(9) + b"\x01\xff" + bytes(addr[13:16])
