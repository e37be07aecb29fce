"""UDP headers (RFC 768), and their checksum over IPv4 and IPv6.

`parse_udp` bounds the payload by the UDP Length field, which must fit in the
IP payload it came in (extra bytes after it are ignored, as RFC 768 allows).
Checksums are left to the caller: `udp_checksum_ok4/6` verify, and
`set_udp_checksum4/6` fill one in a built datagram.  Over IPv4 a zero checksum
means "none" (accepted); over IPv6 it is invalid (RFC 8200 section 8.1).  A
computed checksum of zero is sent as 0xFFFF.
"""

from __future__ import annotations

import struct
from typing import Final, NamedTuple

from passt.wire.checksum import csum_partial, finish, pseudo_sum4, pseudo_sum6
from passt.wire.errors import ParseError

UDP_HLEN: Final = 8
PROTO_UDP: Final = 17

_UDP: Final = struct.Struct("!HHHH")
_CSUM: Final = struct.Struct("!H")


class UDPHeader(NamedTuple):
    """A UDP header."""

    sport: int
    dport: int
    #: Length field: header plus payload.
    length: int
    checksum: int


def parse_udp(seg: memoryview) -> tuple[UDPHeader, memoryview]:
    """Parse a UDP header; returns it and the payload bounded by the Length field."""
    n = len(seg)
    if n < UDP_HLEN:
        raise ParseError("short udp header")
    sport, dport, length, csum = _UDP.unpack_from(seg, 0)
    if length < UDP_HLEN or length > n:
        raise ParseError("udp length")
    return UDPHeader(sport, dport, length, csum), seg[UDP_HLEN:length]


def build_udp(
    buf: bytearray, off: int, *, sport: int, dport: int, payload_len: int, checksum: int = 0
) -> int:
    """Write a UDP header at `off`; returns off + 8.  Fill the checksum afterwards."""
    _UDP.pack_into(buf, off, sport, dport, UDP_HLEN + payload_len, checksum)
    return off + UDP_HLEN


def set_udp_checksum4(buf: bytearray, off: int, length: int, src: bytes, dst: bytes) -> int:
    """Compute and store the checksum of the `length`-byte datagram at `off` over IPv4."""
    _CSUM.pack_into(buf, off + 6, 0)
    seg = memoryview(buf)[off : off + length]
    value = finish(csum_partial(seg, pseudo_sum4(src, dst, PROTO_UDP, length))) or 0xFFFF
    _CSUM.pack_into(buf, off + 6, value)
    return value


def set_udp_checksum6(buf: bytearray, off: int, length: int, src: bytes, dst: bytes) -> int:
    """Compute and store the checksum of the `length`-byte datagram at `off` over IPv6."""
    _CSUM.pack_into(buf, off + 6, 0)
    seg = memoryview(buf)[off : off + length]
    value = finish(csum_partial(seg, pseudo_sum6(src, dst, PROTO_UDP, length))) or 0xFFFF
    _CSUM.pack_into(buf, off + 6, value)
    return value


def udp_checksum_ok4(seg: memoryview, src: bytes, dst: bytes) -> bool:
    """Verify a whole datagram (as bounded by its Length) over IPv4; 0 means unchecked."""
    if len(seg) < UDP_HLEN:
        return False
    if seg[6] == 0 and seg[7] == 0:
        return True
    return csum_partial(seg, pseudo_sum4(src, dst, PROTO_UDP, len(seg))) == 0xFFFF


def udp_checksum_ok6(seg: memoryview, src: bytes, dst: bytes) -> bool:
    """Verify a whole datagram over IPv6, where a zero checksum is not allowed."""
    if len(seg) < UDP_HLEN or (seg[6] == 0 and seg[7] == 0):
        return False
    return csum_partial(seg, pseudo_sum6(src, dst, PROTO_UDP, len(seg))) == 0xFFFF
