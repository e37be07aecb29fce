"""Neighbor Discovery messages (RFC 4861) and their options, after the ICMPv6 header.

Each NDP message is an ICMPv6 message (wire/icmp.py has the types) with a
fixed body and then options, each a type byte, a length byte in units of 8
octets (including the two bytes), and data.  RFC 4861 section 4.6 says a
zero-length option invalidates the whole message (it would make a receiver
loop forever), and so does an option running past the end: both raise
ParseError here.  At most MAX_NDP_OPTIONS options are read.

Builders return the ICMPv6 message as bytes with a zero checksum; the
service puts it in a frame and fills the checksum (needs the addresses).
This is the slow path (a handful of messages a minute), so bytes are fine.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from typing import Final, NamedTuple

from passt.wire.dhcp import encode_domain_names
from passt.wire.errors import ParseError
from passt.wire.icmp import (
    NDP_NEIGHBOR_ADVERT,
    NDP_NEIGHBOR_SOLICIT,
    NDP_ROUTER_ADVERT,
    NDP_ROUTER_SOLICIT,
)

# option types
OPT_SOURCE_LLADDR: Final = 1
OPT_TARGET_LLADDR: Final = 2
OPT_PREFIX_INFO: Final = 3
OPT_REDIRECTED_HDR: Final = 4
OPT_MTU: Final = 5
OPT_RDNSS: Final = 25
OPT_DNSSL: Final = 31

#: Router Advertisement flags (RFC 4861 section 4.2): Managed, Other configuration.
RA_FLAG_MANAGED: Final = 0x80
RA_FLAG_OTHER: Final = 0x40
#: Neighbor Advertisement flags (RFC 4861 section 4.4): Router, Solicited, Override.
NA_FLAG_ROUTER: Final = 0x80000000
NA_FLAG_SOLICITED: Final = 0x40000000
NA_FLAG_OVERRIDE: Final = 0x20000000
#: Prefix Information flags (RFC 4861 section 4.6.2): on-Link, Autonomous.
PREFIX_FLAG_ONLINK: Final = 0x80
PREFIX_FLAG_AUTO: Final = 0x40

INFINITE_LIFETIME: Final = 0xFFFFFFFF
#: RS and NA/NS fixed parts after the 4-byte ICMPv6 header.
RS_LEN: Final = 8
NS_LEN: Final = 24
RA_LEN: Final = 16
#: Bound on options read from one message (a 64 KiB message could hold 8191).
MAX_NDP_OPTIONS: Final = 64
#: RDNSS/DNSSL length is one byte of 8-octet units.
MAX_OPTION_BYTES: Final = 255 * 8

_NS: Final = struct.Struct("!BBHI16s")
_RA: Final = struct.Struct("!BBHBBHII")
_PREFIX: Final = struct.Struct("!BBBBIII16s")
_MTU: Final = struct.Struct("!BBHI")
_LIFETIME_OPT: Final = struct.Struct("!BBHI")


class NdpOption(NamedTuple):
    """One NDP option: its type and its data (the bytes after type and length)."""

    type: int
    data: memoryview


class NeighborMessage(NamedTuple):
    """A Neighbor Solicitation or Advertisement."""

    type: int
    code: int
    #: The 32-bit word after the checksum (flags for NA, reserved for NS).
    flags: int
    #: Target address, packed.
    target: bytes
    options: list[NdpOption]


class RouterSolicit(NamedTuple):
    """A Router Solicitation."""

    code: int
    options: list[NdpOption]


def parse_ndp_options(view: memoryview) -> list[NdpOption]:
    """Split the option area of an NDP message; ParseError on a zero or overlong length."""
    out: list[NdpOption] = []
    n = len(view)
    i = 0
    while i < n:
        if len(out) == MAX_NDP_OPTIONS:
            raise ParseError("too many ndp options")
        if i + 2 > n:
            raise ParseError("truncated ndp option")
        length = view[i + 1] << 3
        if length == 0:
            raise ParseError("zero-length ndp option")
        if i + length > n:
            raise ParseError("ndp option length")
        out.append(NdpOption(view[i], view[i + 2 : i + length]))
        i += length
    return out


def parse_neighbor(msg: memoryview) -> NeighborMessage:
    """Parse a Neighbor Solicitation or Advertisement (the whole ICMPv6 message)."""
    if len(msg) < NS_LEN:
        raise ParseError("short neighbor message")
    typ, code, _csum, flags, target = _NS.unpack_from(msg, 0)
    if typ not in (NDP_NEIGHBOR_SOLICIT, NDP_NEIGHBOR_ADVERT):
        raise ParseError("not a neighbor message")
    return NeighborMessage(typ, code, flags, target, parse_ndp_options(msg[NS_LEN:]))


def parse_router_solicit(msg: memoryview) -> RouterSolicit:
    """Parse a Router Solicitation (the whole ICMPv6 message)."""
    if len(msg) < RS_LEN:
        raise ParseError("short router solicitation")
    if msg[0] != NDP_ROUTER_SOLICIT:
        raise ParseError("not a router solicitation")
    return RouterSolicit(msg[1], parse_ndp_options(msg[RS_LEN:]))


def find_lladdr(options: list[NdpOption], opt_type: int) -> bytes | None:
    """The MAC in the first source/target link-layer option; None if absent or not 6 bytes."""
    for opt in options:
        if opt.type == opt_type:
            return bytes(opt.data) if len(opt.data) == 6 else None
    return None


def build_neighbor_advert(*, flags: int, target: bytes, options: bytes = b"") -> bytes:
    """A Neighbor Advertisement message (checksum zero)."""
    return _NS.pack(NDP_NEIGHBOR_ADVERT, 0, 0, flags, target) + options


def build_neighbor_solicit(*, target: bytes, options: bytes = b"") -> bytes:
    """A Neighbor Solicitation message (checksum zero)."""
    return _NS.pack(NDP_NEIGHBOR_SOLICIT, 0, 0, 0, target) + options


def build_router_advert(
    *,
    cur_hop_limit: int,
    flags: int,
    router_lifetime: int,
    reachable_time: int = 0,
    retrans_timer: int = 0,
    options: bytes = b"",
) -> bytes:
    """A Router Advertisement message (checksum zero)."""
    head = _RA.pack(
        NDP_ROUTER_ADVERT,
        0,
        0,
        cur_hop_limit,
        flags,
        router_lifetime,
        reachable_time,
        retrans_timer,
    )
    return head + options


def opt_lladdr(opt_type: int, mac: bytes) -> bytes:
    """Source (1) or target (2) link-layer address option for an Ethernet MAC."""
    return bytes((opt_type, 1)) + mac


def opt_prefix(*, prefix: bytes, prefix_len: int, flags: int, valid: int, preferred: int) -> bytes:
    """Prefix Information option (RFC 4861 section 4.6.2)."""
    return _PREFIX.pack(OPT_PREFIX_INFO, 4, prefix_len, flags, valid, preferred, 0, prefix)


def opt_mtu(mtu: int) -> bytes:
    """MTU option (RFC 4861 section 4.6.4)."""
    return _MTU.pack(OPT_MTU, 1, 0, mtu)


def opt_rdnss(lifetime: int, servers: Iterable[bytes]) -> bytes:
    """Recursive DNS Server option (RFC 8106 section 5.1); b"" when there is none.

    At most 127 servers fit the one-byte length.
    """
    addrs = b"".join(list(servers)[:127])
    if not addrs:
        return b""
    return _LIFETIME_OPT.pack(OPT_RDNSS, 1 + len(addrs) // 8, 0, lifetime) + addrs


def opt_dnssl(lifetime: int, names: Iterable[str]) -> bytes:
    """DNS Search List option (RFC 8106 section 5.2), uncompressed, zero-padded to 8 octets.

    Names that do not fit the option's 2040-byte bound are left out; b"" when
    nothing is left.
    """
    data = b""
    for name in names:
        encoded = encode_domain_names((name,), compress=False)
        if encoded and 8 + len(data) + len(encoded) <= MAX_OPTION_BYTES:
            data += encoded
    if not data:
        return b""
    data += bytes(-(8 + len(data)) % 8)
    return _LIFETIME_OPT.pack(OPT_DNSSL, (8 + len(data)) // 8, 0, lifetime) + data


def parse_router_advert(msg: memoryview) -> tuple[int, int, int, list[NdpOption]]:
    """Parse a Router Advertisement into (cur hop limit, flags, router lifetime, options)."""
    if len(msg) < RA_LEN:
        raise ParseError("short router advertisement")
    typ, _code, _csum, hop, flags, lifetime, _reach, _retrans = _RA.unpack_from(msg, 0)
    if typ != NDP_ROUTER_ADVERT:
        raise ParseError("not a router advertisement")
    return hop, flags, lifetime, parse_ndp_options(msg[RA_LEN:])
