"""IPv4 headers (RFC 791): parse what the guest sends, build what we send it.

Parsing bounds the payload by the header's Total Length, so Ethernet padding
after a short packet never reaches the L4 code, and refuses what we do not
handle: fragments (every L4 path here needs whole datagrams; the guest's
stack fragments only when asked to send more than its MTU, which we set) and
options are skipped by honouring IHL.  The header checksum is not verified by
`parse_ipv4` (guests' kernels always fill it, and the TCP fast path should not
pay for it); `ipv4_header_ok` does it where wanted (the L2 services).

`build_ipv4` always writes a 20-byte header without options and fills its
checksum, so a built header is complete.
"""

from __future__ import annotations

import struct
from typing import Final, NamedTuple

from passt.wire.checksum import checksum, csum_partial
from passt.wire.errors import ParseError

IPV4_HLEN: Final = 20
PROTO_ICMP: Final = 1
PROTO_TCP: Final = 6
PROTO_UDP: Final = 17

#: Flags/fragment-offset bits: Don't Fragment, More Fragments, the offset.
IP_DF: Final = 0x4000
IP_MF: Final = 0x2000
IP_OFFMASK: Final = 0x1FFF

IPV4_BROADCAST: Final = b"\xff\xff\xff\xff"
IPV4_ANY: Final = bytes(4)

#: Version 4, IHL 5: the first byte of every header we build (no options).
IPV4_VIHL: Final = 0x45
#: TTL (IPv4) and hop limit (IPv6) of everything we send the guest.
IP_TTL: Final = 255

#: The IPv4 header layout (also used by wire/l2l3's combined headers).
IPV4_STRUCT: Final = struct.Struct("!BBHHHBBH4s4s")
_IPV4: Final = IPV4_STRUCT
_CSUM: Final = struct.Struct("!H")


class IPv4Header(NamedTuple):
    """An IPv4 header; options (if any) are skipped, not kept."""

    #: Header length in bytes (IHL * 4, 20..60).
    header_len: int
    tos: int
    #: Total Length field: header plus payload.
    total_len: int
    ident: int
    #: Flags and fragment offset as one 16-bit field.
    flags_frag: int
    ttl: int
    proto: int
    #: Source address, packed (4 bytes).
    src: bytes
    #: Destination address, packed (4 bytes).
    dst: bytes


#: tuple.__new__ skips the NamedTuple constructor's Python frame (a per-frame cost: the dispatcher parses every frame).
_new: Final = tuple.__new__


def parse_ipv4(packet: memoryview) -> tuple[IPv4Header, memoryview]:
    """Parse an IPv4 header; returns it and the L4 payload bounded by Total Length.

    Raises ParseError for a short packet, a version other than 4, IHL < 5, a
    Total Length shorter than the header or longer than the bytes present,
    and for any fragment (MF set or a non-zero offset).
    """
    n = len(packet)
    if n < IPV4_HLEN:
        raise ParseError("short ipv4 header")
    vihl, tos, total_len, ident, flags_frag, ttl, proto, _csum, src, dst = _IPV4.unpack_from(
        packet, 0
    )
    if vihl >> 4 != 4:
        raise ParseError("ipv4 version")
    header_len = (vihl & 0x0F) << 2
    if header_len < IPV4_HLEN:
        raise ParseError("ipv4 header length")
    if total_len < header_len or total_len > n:
        raise ParseError("ipv4 total length")
    if flags_frag & (IP_MF | IP_OFFMASK):
        raise ParseError("fragment")
    hdr = _new(IPv4Header, (header_len, tos, total_len, ident, flags_frag, ttl, proto, src, dst))
    return hdr, packet[header_len:total_len]


def ipv4_header_ok(packet: memoryview, header_len: int) -> bool:
    """True when the header checksum over the first `header_len` bytes verifies."""
    if header_len < IPV4_HLEN or len(packet) < header_len:
        return False
    return csum_partial(packet[:header_len]) == 0xFFFF


def build_ipv4(
    buf: bytearray,
    off: int,
    *,
    src: bytes,
    dst: bytes,
    proto: int,
    payload_len: int,
    ttl: int = IP_TTL,
    ident: int = 0,
    tos: int = 0,
    dont_fragment: bool = True,
) -> int:
    """Write a 20-byte IPv4 header with its checksum at `off`; returns off + 20."""
    _IPV4.pack_into(
        buf,
        off,
        IPV4_VIHL,
        tos,
        IPV4_HLEN + payload_len,
        ident,
        IP_DF if dont_fragment else 0,
        ttl,
        proto,
        0,
        src,
        dst,
    )
    _CSUM.pack_into(buf, off + 10, checksum(memoryview(buf)[off : off + IPV4_HLEN]))
    return off + IPV4_HLEN
