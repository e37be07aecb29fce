"""Ethernet II framing (IEEE 802.3 with an EtherType, no VLAN tags).

Every frame to or from the guest starts with a 14-byte header: destination
MAC, source MAC, EtherType.  We never see a frame check sequence (the tap and
the stream socket carry frames without it) and we do not pad short frames to
60 bytes: virtio-net and tap devices accept them as they are.

802.1Q tagged frames (EtherType 0x8100) parse fine here; their EtherType is
simply not one the dispatcher knows, so they are dropped there.
"""

from __future__ import annotations

import struct
from typing import Final, NamedTuple

from passt.wire.errors import ParseError

ETH_HLEN: Final = 14
ETH_ALEN: Final = 6
ETH_P_IP: Final = 0x0800
ETH_P_ARP: Final = 0x0806
ETH_P_IPV6: Final = 0x86DD

#: Broadcast destination (ARP requests, DHCP broadcast replies).
ETH_BROADCAST: Final = b"\xff" * 6

#: The Ethernet header layout (also the start of wire/l2l3's combined headers).
ETH_STRUCT: Final = struct.Struct("!6s6sH")
_ETH: Final = ETH_STRUCT


class EthHeader(NamedTuple):
    """An Ethernet II header."""

    #: Destination MAC (6 bytes).
    dst: bytes
    #: Source MAC (6 bytes).
    src: bytes
    #: EtherType (ETH_P_*), host order.
    ethertype: int


def parse_eth(frame: memoryview) -> EthHeader:
    """Parse the Ethernet header at the start of `frame`; the payload starts at ETH_HLEN."""
    if len(frame) < ETH_HLEN:
        raise ParseError("short ethernet frame")
    dst, src, ethertype = _ETH.unpack_from(frame, 0)
    return EthHeader(dst, src, ethertype)


def eth_src(frame: memoryview) -> bytes:
    """The source MAC of a frame at least ETH_HLEN long (the dispatcher checked the length)."""
    return bytes(frame[ETH_ALEN : 2 * ETH_ALEN])


def build_eth(buf: bytearray, off: int, dst: bytes, src: bytes, ethertype: int) -> int:
    """Write an Ethernet header at `off`; returns the offset just after it."""
    _ETH.pack_into(buf, off, dst, src, ethertype)
    return off + ETH_HLEN


def ipv6_multicast_mac(addr: bytes) -> bytes:
    """The MAC an IPv6 multicast address maps to (RFC 2464 section 7: 33:33 + low 32 bits)."""
    return b"\x33\x33" + bytes(addr[12:16])
