"""ARP over Ethernet for IPv4 (RFC 826): the only variant a guest sends us.

`parse_arp` accepts exactly hardware type 1 (Ethernet), protocol type 0x0800,
hardware length 6 and protocol length 4; anything else has a different
layout and is refused.  The 28-byte body is read at fixed offsets.
"""

from __future__ import annotations

import struct
from typing import Final, NamedTuple

from passt.wire.errors import ParseError

ARP_LEN: Final = 28
ARP_HRD_ETHER: Final = 1
ARP_PRO_IP: Final = 0x0800
ARP_OP_REQUEST: Final = 1
ARP_OP_REPLY: Final = 2

_ARP: Final = struct.Struct("!HHBBH6s4s6s4s")


class ArpPacket(NamedTuple):
    """An Ethernet/IPv4 ARP packet."""

    op: int
    #: Sender hardware (MAC) and protocol (IPv4) addresses.
    sha: bytes
    spa: bytes
    #: Target hardware and protocol addresses.
    tha: bytes
    tpa: bytes


def parse_arp(pkt: memoryview) -> ArpPacket:
    """Parse an Ethernet/IPv4 ARP packet (the bytes after the Ethernet header)."""
    if len(pkt) < ARP_LEN:
        raise ParseError("short arp")
    hrd, pro, hln, pln, op, sha, spa, tha, tpa = _ARP.unpack_from(pkt, 0)
    if hrd != ARP_HRD_ETHER or pro != ARP_PRO_IP or hln != 6 or pln != 4:
        raise ParseError("arp not ethernet/ipv4")
    return ArpPacket(op, sha, spa, tha, tpa)


def build_arp(
    buf: bytearray, off: int, *, op: int, sha: bytes, spa: bytes, tha: bytes, tpa: bytes
) -> int:
    """Write an Ethernet/IPv4 ARP packet at `off`; returns off + 28."""
    _ARP.pack_into(buf, off, ARP_HRD_ETHER, ARP_PRO_IP, 6, 4, op, sha, spa, tha, tpa)
    return off + ARP_LEN
