"""Socket-side plumbing every flow shares: factories, socket addresses, PKTINFO, resets.

The flows (tcp, tcp_splice, udp, udp_splice, icmp) and the listeners (fwd)
all open host or namespace sockets, turn packed addresses into Python socket
addresses and back, and sometimes close with a reset.  Those pieces live
here once, so no flow imports helpers from a sibling protocol's module:

    packed (af, addr, port) --sockaddr_of--> ("a.b.c.d", port) / ("x::y", port, 0, scope)
    socket address --parse_sockaddr--> (af, packed, port), v4-mapped unmapped
    listener ancillary data --pktinfo_addr--> the address a datagram was sent to
                            <--pktinfo_cmsg-- so a reply leaves from it

`dst_forwardable` is the one rule for which guest destinations a flow may
open a socket to (the decision and its reasons: docs/conformance_catalogue.toml,
`flows.dst-forwardable`).  Loopback destinations are a separate, NOTES-driven
rule (`nat.is_loopback`), applied by each flow after this one.

Nothing here keeps state; every function is cheap enough for a new flow, and
none is called per packet.
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Callable
from typing import Final

from passt.flows import nat

#: Creates a socket (family, type, proto): `socket.socket`, or the namespace helper's `socket`.
SocketFactory = Callable[[int, int, int], socket.socket]
#: A Python socket address as the socket module gives and takes it.
SockAddr = tuple[str, int] | tuple[str, int, int, int]
#: Ancillary data as `recvmsg` returns it and `sendmsg` takes it.
Ancillary = list[tuple[int, int, bytes]]

#: An address family as the dispatcher gives it (4 or 6) to the socket family.
SOCK_FAMILY: Final = {4: socket.AF_INET, 6: socket.AF_INET6}

#: Loopback addresses a spliced flow connects to on the other side.
LOOPBACK4: Final = "127.0.0.1"
LOOPBACK6: Final = "::1"

#: Linux IP_PKTINFO (not exported by Python's socket module).
IP_PKTINFO: Final = 8
#: Room for one IP_PKTINFO or IPV6_PKTINFO message (the larger: 20 bytes).
PKTINFO_SPACE: Final = socket.CMSG_SPACE(20)

_IN6_PKTINFO: Final = struct.Struct("16sI")
_IN_PKTINFO: Final = struct.Struct("i4s4s")
_LINGER_RST: Final = struct.pack("ii", 1, 0)
_ANY6: Final = bytes(16)


def sockaddr_of(af: int, addr: bytes, port: int, scope: int = 0) -> SockAddr:
    """A Python socket address for a packed address (`scope`: IPv6 interface index)."""
    if af == 4:
        return (socket.inet_ntop(socket.AF_INET, addr), port)
    return (socket.inet_ntop(socket.AF_INET6, addr), port, 0, scope)


def parse_sockaddr(sa: SockAddr) -> tuple[int, bytes, int]:
    """(af, packed address, port) from a socket address, IPv4-mapped unmapped.

    Raises OSError or ValueError for a host part that is no address.
    """
    host = sa[0]
    if ":" not in host:
        return 4, socket.inet_pton(socket.AF_INET, host), sa[1]
    if "%" in host:
        host = host.split("%", 1)[0]
    af, packed = nat.unmap_v4(socket.inet_pton(socket.AF_INET6, host))
    return af, packed, sa[1]


def is_loopback_peer(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and ::ffff:127.x.y.z (a socket address's host part)."""
    return host.startswith("127.") or host == "::1" or host.startswith("::ffff:127.")


def peer_family(host: str) -> int:
    """The family to use on the other side: IPv4 for IPv4 and v4-mapped peers."""
    if ":" not in host or host.startswith("::ffff:") and "." in host:
        return socket.AF_INET
    return socket.AF_INET6


def dst_forwardable(af: int, dst: bytes) -> bool:
    """May a guest flow towards `dst` get a socket?  False: drop and count.

    IPv4 (RFC 6890 registry, RFC 1122 section 3.2.1.3): no "this network"
    0.0.0.0/8 (never a destination; Linux would take 0.0.0.0 as the host
    itself), no multicast 224.0.0.0/4, no reserved 240.0.0.0/4 and its
    limited broadcast 255.255.255.255.  IPv6: no unspecified ::, no
    multicast ff00::/8, no IPv4-mapped ::ffff:0:0/96 (RFC 4291 section
    2.5.5.2: not for the wire).
    """
    if af == 4:
        return 0 < dst[0] < 224
    return dst[0] != 0xFF and dst != _ANY6 and dst[:12] != nat.V4MAPPED_PREFIX


def link_scope(out_ifname: str, af: int, addr: bytes) -> int:
    """Scope id for a link-local IPv6 destination: the host's outbound interface; else 0."""
    if af != 6 or not nat.is_link_local6(addr):
        return 0
    try:
        return socket.if_nametoindex(out_ifname)
    except OSError:
        return 0


def enable_pktinfo(sock: socket.socket) -> None:
    """Ask for the destination address of each datagram on a UDP listener.

    The -u path needs it to translate loopback destinations (and to pick the
    IPv6 link-local address) and to send replies from that same address.  On
    a dual-stack socket IPV6_RECVPKTINFO also covers IPv4 (as v4-mapped).
    """
    if sock.family == socket.AF_INET6:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_RECVPKTINFO, 1)
    else:
        sock.setsockopt(socket.IPPROTO_IP, IP_PKTINFO, 1)


def pktinfo_addr(anc: Ancillary) -> tuple[int, bytes] | None:
    """(level, address) a datagram was sent to, from its PKTINFO; None: none received.

    The level is IPPROTO_IPV6 (16-byte address, v4-mapped for IPv4 peers of a
    dual-stack listener) or IPPROTO_IP (4 bytes).
    """
    for level, kind, data in anc:
        if level == socket.IPPROTO_IPV6 and kind == socket.IPV6_PKTINFO and len(data) >= 16:
            return level, bytes(data[:16])
        if level == socket.IPPROTO_IP and kind == IP_PKTINFO and len(data) >= 12:
            return level, bytes(data[8:12])
    return None


def pktinfo_cmsg(level: int, addr: bytes) -> Ancillary:
    """Ancillary data making a datagram leave from `addr` (16 bytes for IPPROTO_IPV6, else 4)."""
    if level == socket.IPPROTO_IPV6:
        return [(level, socket.IPV6_PKTINFO, _IN6_PKTINFO.pack(addr, 0))]
    return [(level, IP_PKTINFO, _IN_PKTINFO.pack(0, addr, bytes(4)))]


def close_rst(sock: socket.socket) -> None:
    """Close so the peer sees a reset (SO_LINGER with a zero timeout)."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RST)
    except OSError:
        pass
    sock.close()
