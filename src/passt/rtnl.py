"""Just enough rtnetlink (rtnetlink(7)) for start-up: dumps, one address, one route, link set.

Two parts, as elsewhere in passt:

    encode_* / decode_*  sans-IO: request bytes out, typed records in
                         (linux/netlink.h, linux/rtnetlink.h, if_link.h,
                         if_addr.h); no socket here
    Rtnl                 a thin NETLINK_ROUTE socket: send one request,
                         read replies up to NLMSG_DONE or the ACK

Covers what hostinfo (the host's links, addresses, default routes), netconf
(the namespace helper: MTU, MAC, link up, address, default route) and
runtime.local_addresses need, nothing else.  We wrote it instead of using
pyroute2 because importing pyroute2 took ~120 ms of pasta's start-up.

A kernel error ACK (NLMSG_ERROR with a negative code) is raised as OSError
with that errno, so callers handle it as any other failed system call.
"""

from __future__ import annotations

import os
import socket
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from enum import IntEnum
from typing import Final

# A reply that doesn't decode (short, or a length field past the bytes) is the
# project's one error for untrusted bytes; callers may name it rtnl.ParseError.
from passt.wire.errors import ParseError as ParseError


class Msg(IntEnum):
    """nlmsg_type values used here."""

    NOOP = 1
    ERROR = 2
    DONE = 3
    NEWLINK = 16
    GETLINK = 18
    SETLINK = 19
    NEWADDR = 20
    GETADDR = 22
    NEWROUTE = 24
    GETROUTE = 26


NLM_F_REQUEST: Final = 0x001
NLM_F_MULTI: Final = 0x002
NLM_F_ACK: Final = 0x004
NLM_F_DUMP: Final = 0x300
NLM_F_EXCL: Final = 0x200
NLM_F_CREATE: Final = 0x400

IFF_UP: Final = 0x1

IFLA_ADDRESS: Final = 1
IFLA_IFNAME: Final = 3
IFLA_MTU: Final = 4

IFA_ADDRESS: Final = 1
IFA_LOCAL: Final = 2
IFA_FLAGS: Final = 8

RTA_DST: Final = 1
RTA_OIF: Final = 4
RTA_GATEWAY: Final = 5
RTA_PRIORITY: Final = 6
RTA_MULTIPATH: Final = 9
RTA_TABLE: Final = 15

RT_TABLE_MAIN: Final = 254
RTN_UNICAST: Final = 1
RT_SCOPE_UNIVERSE: Final = 0
#: rtm_protocol of routes we add: "ip route" shows them as "proto static".
RTPROT_STATIC: Final = 4
#: rtm_flags / rtnh_flags: the gateway is reachable on the link even outside its prefix.
RTNH_F_ONLINK: Final = 0x4

_NLMSGHDR: Final = struct.Struct("=IHHII")  # len, type, flags, seq, pid
_NLMSGERR: Final = struct.Struct("=i")  # error, then the request's header
_IFINFOMSG: Final = struct.Struct("=BxHiII")  # family, type, index, flags, change
_IFADDRMSG: Final = struct.Struct("=BBBBI")  # family, prefixlen, flags, scope, index
_RTMSG: Final = struct.Struct("=BBBBBBBBI")  # family, dst_len, src_len, tos, table, protocol, scope, type, flags
_RTATTR: Final = struct.Struct("=HH")  # len, type
_RTNEXTHOP: Final = struct.Struct("=HBBi")  # len, flags, hops, ifindex
_U32: Final = struct.Struct("=I")

#: Bytes read per recv: the kernel's dump skbs stay below 32 KiB.
RECV_SIZE: Final = 65536


def _align(n: int) -> int:
    return (n + 3) & ~3


@dataclass(frozen=True, slots=True)
class Link:
    index: int
    ifname: str
    #: IFLA_ADDRESS (6 bytes for Ethernet); None when the link has none (tun, some ip tunnels).
    mac: bytes | None
    mtu: int | None
    flags: int


@dataclass(frozen=True, slots=True)
class Addr:
    family: int
    prefixlen: int
    #: IFA_FLAGS when present (32 bits), else ifa_flags (8 bits).
    flags: int
    scope: int
    index: int
    #: IFA_ADDRESS and IFA_LOCAL, packed (differ only on point-to-point links).
    address: bytes | None
    local: bytes | None


@dataclass(frozen=True, slots=True)
class Nexthop:
    oif: int
    gateway: bytes | None


@dataclass(frozen=True, slots=True)
class Route:
    family: int
    dst_len: int
    #: RTA_TABLE when present (tables above 255), else rtm_table.
    table: int
    type: int
    scope: int
    oif: int | None
    gateway: bytes | None
    #: RTA_PRIORITY (the metric), 0 when absent.
    priority: int
    multipath: tuple[Nexthop, ...] = ()


# -- encode ------------------------------------------------------------------


def _attr(kind: int, value: bytes) -> bytes:
    raw = _RTATTR.pack(_RTATTR.size + len(value), kind) + value
    return raw + bytes(_align(len(raw)) - len(raw))


def _message(kind: int, flags: int, seq: int, body: bytes) -> bytes:
    return _NLMSGHDR.pack(_NLMSGHDR.size + len(body), kind, flags, seq, 0) + body


def encode_dump(kind: Msg, seq: int, family: int = socket.AF_UNSPEC) -> bytes:
    """A dump request: Msg.GETLINK, GETADDR or GETROUTE, all families by default."""
    if kind is Msg.GETLINK:
        body = _IFINFOMSG.pack(family, 0, 0, 0, 0)
    elif kind is Msg.GETADDR:
        body = _IFADDRMSG.pack(family, 0, 0, 0, 0)
    elif kind is Msg.GETROUTE:
        body = _RTMSG.pack(family, 0, 0, 0, 0, 0, 0, 0, 0)
    else:
        raise ValueError(f"no dump of {kind!r}")
    return _message(kind, NLM_F_REQUEST | NLM_F_DUMP, seq, body)


def encode_get_link(seq: int, *, ifname: str) -> bytes:
    """RTM_GETLINK of one link by name (ENODEV in the ACK if there is none)."""
    body = _IFINFOMSG.pack(socket.AF_UNSPEC, 0, 0, 0, 0) + _attr(IFLA_IFNAME, ifname.encode() + b"\0")
    return _message(Msg.GETLINK, NLM_F_REQUEST, seq, body)


def encode_set_link(seq: int, index: int, *, up: bool | None = None, mtu: int | None = None,
                    mac: bytes | None = None) -> bytes:
    """RTM_SETLINK: change only what is given (up/down, MTU, MAC)."""
    flags = change = 0
    if up is not None:
        flags, change = (IFF_UP if up else 0), IFF_UP
    body = _IFINFOMSG.pack(socket.AF_UNSPEC, 0, index, flags, change)
    if mtu is not None:
        body += _attr(IFLA_MTU, _U32.pack(mtu))
    if mac is not None:
        body += _attr(IFLA_ADDRESS, mac)
    return _message(Msg.SETLINK, NLM_F_REQUEST | NLM_F_ACK, seq, body)


def encode_new_addr(seq: int, index: int, address: bytes, prefixlen: int, *, flags: int = 0) -> bytes:
    """RTM_NEWADDR of a packed IPv4 (4 bytes) or IPv6 (16 bytes) address; EEXIST if present."""
    family = socket.AF_INET if len(address) == 4 else socket.AF_INET6
    body = _IFADDRMSG.pack(family, prefixlen, flags & 0xFF, RT_SCOPE_UNIVERSE, index)
    if family == socket.AF_INET:
        body += _attr(IFA_LOCAL, address)
    body += _attr(IFA_ADDRESS, address)
    if flags > 0xFF:
        body += _attr(IFA_FLAGS, _U32.pack(flags))
    return _message(Msg.NEWADDR, NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL, seq, body)


def encode_new_route(seq: int, oif: int, gateway: bytes, *, onlink: bool = False) -> bytes:
    """RTM_NEWROUTE of a default route via a packed gateway, main table; EEXIST if present."""
    family = socket.AF_INET if len(gateway) == 4 else socket.AF_INET6
    body = _RTMSG.pack(family, 0, 0, 0, RT_TABLE_MAIN, RTPROT_STATIC, RT_SCOPE_UNIVERSE, RTN_UNICAST,
                       RTNH_F_ONLINK if onlink else 0)
    body += _attr(RTA_GATEWAY, gateway) + _attr(RTA_OIF, _U32.pack(oif))
    return _message(Msg.NEWROUTE, NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL, seq, body)


# -- decode ------------------------------------------------------------------


def parse_messages(data: bytes | memoryview) -> Iterator[tuple[int, int, int, memoryview]]:
    """(type, flags, seq, payload) of each netlink message in one datagram."""
    view = memoryview(data)
    off = 0
    while off + _NLMSGHDR.size <= len(view):
        length, kind, flags, seq, _pid = _NLMSGHDR.unpack_from(view, off)
        if length < _NLMSGHDR.size or off + length > len(view):
            raise ParseError(f"netlink message length {length} at {off} past {len(view)} bytes")
        yield int(kind), int(flags), int(seq), view[off + _NLMSGHDR.size:off + length]
        off += _align(length)


def parse_attrs(view: memoryview) -> dict[int, memoryview]:
    """Attributes by type (the last one wins on repeats); the nested flag bit is masked off."""
    attrs: dict[int, memoryview] = {}
    off = 0
    while off + _RTATTR.size <= len(view):
        length, kind = _RTATTR.unpack_from(view, off)
        if length < _RTATTR.size or off + length > len(view):
            raise ParseError(f"attribute length {length} at {off} past {len(view)} bytes")
        attrs[int(kind) & 0x3FFF] = view[off + _RTATTR.size:off + length]
        off += _align(length)
    return attrs


def parse_error(payload: memoryview) -> int:
    """Errno of an NLMSG_ERROR payload: 0 for a plain ACK, else positive."""
    if len(payload) < _NLMSGERR.size:
        raise ParseError("short NLMSG_ERROR")
    (error,) = _NLMSGERR.unpack_from(payload)
    return -int(error)


def _u32(attrs: dict[int, memoryview], kind: int) -> int | None:
    raw = attrs.get(kind)
    if raw is None or len(raw) < 4:
        return None
    (value,) = _U32.unpack_from(raw)
    return int(value)


def _raw(attrs: dict[int, memoryview], kind: int) -> bytes | None:
    raw = attrs.get(kind)
    return bytes(raw) if raw is not None else None


def decode_link(payload: memoryview) -> Link:
    if len(payload) < _IFINFOMSG.size:
        raise ParseError("short ifinfomsg")
    _family, _type, index, flags, _change = _IFINFOMSG.unpack_from(payload)
    attrs = parse_attrs(payload[_IFINFOMSG.size:])
    name = bytes(attrs.get(IFLA_IFNAME, b"")).split(b"\0", 1)[0]
    return Link(index=int(index), ifname=name.decode(errors="replace"), mac=_raw(attrs, IFLA_ADDRESS),
                mtu=_u32(attrs, IFLA_MTU), flags=int(flags))


def decode_addr(payload: memoryview) -> Addr:
    if len(payload) < _IFADDRMSG.size:
        raise ParseError("short ifaddrmsg")
    family, prefixlen, flags, scope, index = _IFADDRMSG.unpack_from(payload)
    attrs = parse_attrs(payload[_IFADDRMSG.size:])
    flags32 = _u32(attrs, IFA_FLAGS)
    return Addr(family=int(family), prefixlen=int(prefixlen),
                flags=flags32 if flags32 is not None else int(flags), scope=int(scope), index=int(index),
                address=_raw(attrs, IFA_ADDRESS), local=_raw(attrs, IFA_LOCAL))


def _decode_multipath(view: memoryview) -> tuple[Nexthop, ...]:
    hops: list[Nexthop] = []
    off = 0
    while off + _RTNEXTHOP.size <= len(view):
        length, _flags, _hops, ifindex = _RTNEXTHOP.unpack_from(view, off)
        if length < _RTNEXTHOP.size or off + length > len(view):
            raise ParseError(f"nexthop length {length} at {off} past {len(view)} bytes")
        attrs = parse_attrs(view[off + _RTNEXTHOP.size:off + length])
        hops.append(Nexthop(oif=int(ifindex), gateway=_raw(attrs, RTA_GATEWAY)))
        off += _align(length)
    return tuple(hops)


def decode_route(payload: memoryview) -> Route:
    if len(payload) < _RTMSG.size:
        raise ParseError("short rtmsg")
    family, dst_len, _src_len, _tos, table, _proto, scope, kind, _flags = _RTMSG.unpack_from(payload)
    attrs = parse_attrs(payload[_RTMSG.size:])
    table32 = _u32(attrs, RTA_TABLE)
    mp = attrs.get(RTA_MULTIPATH)
    return Route(family=int(family), dst_len=int(dst_len), table=table32 if table32 is not None else int(table),
                 type=int(kind), scope=int(scope), oif=_u32(attrs, RTA_OIF), gateway=_raw(attrs, RTA_GATEWAY),
                 priority=_u32(attrs, RTA_PRIORITY) or 0,
                 multipath=_decode_multipath(mp) if mp is not None else ())


# -- socket ------------------------------------------------------------------


class Rtnl:
    """A NETLINK_ROUTE socket of the current network namespace; one request at a time."""

    def __init__(self) -> None:
        self._sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC,
                                   socket.NETLINK_ROUTE)
        self._sock.bind((0, 0))
        self._seq = 0

    def __enter__(self) -> Rtnl:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._sock.close()

    def _next_seq(self) -> int:
        self._seq += 1
        return self._seq

    def _exchange(self, request: bytes, seq: int) -> Iterator[tuple[int, memoryview]]:
        """Send `request`; yield (type, payload) of its replies until DONE or the ACK.

        An error ACK raises OSError(errno).  Messages with another seq
        (none are expected on this private socket) are skipped.
        """
        self._sock.send(request)
        while True:
            data, _anc, msg_flags, _addr = self._sock.recvmsg(RECV_SIZE)
            if msg_flags & socket.MSG_TRUNC:
                raise OSError(0, "netlink reply truncated")
            for kind, _flags, rseq, payload in parse_messages(data):
                if rseq != seq:
                    continue
                if kind == Msg.DONE:
                    return
                if kind == Msg.ERROR:
                    err = parse_error(payload)
                    if err:
                        raise OSError(err, os.strerror(err))
                    return
                yield kind, payload

    def _dump(self, kind: Msg, family: int) -> Iterator[memoryview]:
        seq = self._next_seq()
        for _kind, payload in self._exchange(encode_dump(kind, seq, family), seq):
            yield payload

    def links(self) -> list[Link]:
        return [decode_link(p) for p in self._dump(Msg.GETLINK, socket.AF_UNSPEC)]

    def addrs(self, family: int = socket.AF_UNSPEC) -> list[Addr]:
        return [decode_addr(p) for p in self._dump(Msg.GETADDR, family)]

    def routes(self, family: int = socket.AF_UNSPEC) -> list[Route]:
        return [decode_route(p) for p in self._dump(Msg.GETROUTE, family)]

    def link(self, ifname: str) -> Link:
        """The link named `ifname`; OSError(ENODEV) if there is none."""
        seq = self._next_seq()
        for kind, payload in self._exchange(encode_get_link(seq, ifname=ifname), seq):
            if kind == Msg.NEWLINK:
                return decode_link(payload)
        raise OSError(19, os.strerror(19))  # ENODEV: an ACK with no link

    def _request(self, request: bytes, seq: int) -> None:
        for _ in self._exchange(request, seq):
            pass

    def set_link(self, index: int, *, up: bool | None = None, mtu: int | None = None,
                 mac: bytes | None = None) -> None:
        seq = self._next_seq()
        self._request(encode_set_link(seq, index, up=up, mtu=mtu, mac=mac), seq)

    def add_addr(self, index: int, address: bytes, prefixlen: int, *, flags: int = 0) -> None:
        seq = self._next_seq()
        self._request(encode_new_addr(seq, index, address, prefixlen, flags=flags), seq)

    def add_default_route(self, oif: int, gateway: bytes, *, onlink: bool = False) -> None:
        seq = self._next_seq()
        self._request(encode_new_route(seq, oif, gateway, onlink=onlink), seq)
