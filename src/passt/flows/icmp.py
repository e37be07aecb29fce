"""ICMP and ICMPv6 echo through unprivileged "ping" sockets.

An unprivileged process cannot send raw ICMP, but Linux (since 2.6.30) has
ping sockets: socket(AF_INET, SOCK_DGRAM, IPPROTO_ICMP) and the ICMPv6
counterpart.  The kernel treats the echo identifier as the socket's "port":
it rewrites the identifier of what we send to the bound port, fills in the
checksum, and delivers to us only the echo replies carrying that identifier,
as ICMP header plus payload (no IP header).

    guest --echo request (id I, seq S)--> from_tap --sendto--> ping socket bound to port I
    remote --echo reply--> ping socket --recv_into--> id := I, checksum --> guest

One flow per (af, guest identifier, remote address), each with its own
socket bound to the guest's identifier (notes.icmp.id-preserved), so the
remote sees the identifier the guest chose.  Ping sockets are created with
SO_REUSEADDR set, which would let two sockets share an identifier and steal
each other's replies (the kernel matches replies on identifier and local
address only), so we clear it.  When bind() then fails (identifier already
taken by another socket on the host, including our own flow for the same
identifier towards another remote, or a restrictive SELinux policy) the socket stays unbound, the kernel picks an identifier on the
first send, and replies are mapped back to the guest's identifier
(notes.icmp.fallback-id): the remote then sees a different, but unique,
identifier.  Replies always carry the guest's identifier and sequence
number and come from the remote the guest pinged; ICMPv6 checksums include
the pseudo-header (RFC 4443 section 2.3).

Creating a ping socket fails with EACCES when our group is outside
/proc/sys/net/ipv4/ping_group_range (icmp(7)); we then log one warning per
process and count every dropped request (notes.icmp.ping-group-range).

Limits: flows idle for ICMP_TIMEOUT_S (60 s) are closed by one periodic
timer; the table is bounded; at most ICMP_BATCH replies are read per event.
Only echo requests are forwarded: other ICMP types from the guest are dropped
and counted (NDP never gets here, the dispatcher hands it to the services).
Echo requests to loopback or multicast/broadcast destinations are dropped
unless `loopback_dst` is set (tests), for the reason given in udp.py.
"""

from __future__ import annotations

import errno
import logging
import socket
import struct
from typing import Final

from passt.context import Context
from passt.flows import nat
from passt.flows.outbound import Outbound
from passt.flows.sockets import SOCK_FAMILY, SocketFactory, dst_forwardable, link_scope, sockaddr_of
from passt.flows.table import FLOW_MAX, FlowTable, expire_idle
from passt.flows.udp import L4_OFF6, ip4_fixed_sum, write_l2l3
from passt.loop import EVENT_READ, Timer
from passt.wire.checksum import csum_partial, finish, pseudo_sum6
from passt.wire.icmp import (
    ICMP_ECHO_HLEN,
    ICMP_ECHO_REPLY,
    ICMP_ECHO_REQUEST,
    ICMPV6_ECHO_REPLY,
    ICMPV6_ECHO_REQUEST,
    PROTO_ICMPV6,
)
from passt.wire.ipv4 import PROTO_ICMP

log = logging.getLogger("passt")

#: Idle timeout of an echo flow.
ICMP_TIMEOUT_S: Final = 60.0
#: How often the single expiry timer scans the table.
ICMP_TIMER_INTERVAL_S: Final = 5.0
#: Replies read per readiness event.
ICMP_BATCH: Final = 32


_ECHO: Final = struct.Struct("!BBHHH")
_ID: Final = struct.Struct("!H")

_ping_warned = False


def _warn_ping_group_range() -> None:
    """One warning per process: ping sockets are refused by ping_group_range."""
    global _ping_warned
    if not _ping_warned:
        _ping_warned = True
        log.warning(
            "passt: can't create ICMP echo (ping) sockets: permission denied; "
            "check /proc/sys/net/ipv4/ping_group_range includes our group, see icmp(7)"
        )


class IcmpFlow:
    """One echo flow: the guest's identifier towards one remote."""

    __slots__ = ("key", "af", "guest_id", "remote", "guest_addr", "sock", "fallback", "last",
                 "ip4_sum", "psum", "sockaddr")  # fmt: skip

    def __init__(
        self, key: tuple[int, int, bytes], sock: socket.socket, *, guest_addr: bytes,
        fallback: bool, now: float, scope: int,
    ) -> None:  # fmt: skip
        af, gid, remote = key
        self.key = key
        self.af = af
        #: The identifier the guest used; every reply carries it back.
        self.guest_id = gid
        self.remote = remote
        self.sock = sock
        #: True when bind() to the guest's identifier failed (kernel-chosen id).
        self.fallback = fallback
        self.last = now
        self.sockaddr = sockaddr_of(af, remote, 0, scope)
        self.guest_addr = b""
        self.ip4_sum = 0
        self.psum = 0
        self.set_guest_addr(guest_addr)

    def set_guest_addr(self, addr: bytes) -> None:
        """Destination of replies (the request's source); header sums follow it."""
        self.guest_addr = addr
        if self.af == 4:
            self.ip4_sum = ip4_fixed_sum(self.remote, addr, PROTO_ICMP)
        else:
            self.psum = pseudo_sum6(self.remote, addr, PROTO_ICMPV6, 0)


class IcmpHandler:
    """Echo requests from the guest through ping sockets (an L4Handler)."""

    def __init__(
        self,
        ctx: Context,
        *,
        timeout_s: float = ICMP_TIMEOUT_S,
        timer_interval_s: float = ICMP_TIMER_INTERVAL_S,
        capacity: int = FLOW_MAX,
        loopback_dst: bool = False,
        socket_factory: SocketFactory = socket.socket,
    ) -> None:
        self.ctx = ctx
        self.timeout_s = timeout_s
        self.timer_interval_s = timer_interval_s
        self.loopback_dst = loopback_dst
        self._socket = socket_factory
        #: Where new echo flows really go, and from which source (flows/outbound.py).
        self._out = Outbound.from_config(ctx.conf)
        self.flows: FlowTable[tuple[int, int, bytes], IcmpFlow] = FlowTable(capacity)
        self._timer: Timer | None = None
        self._buf = bytearray(L4_OFF6 + 65535)
        self._mv = memoryview(self._buf)
        mtu = ctx.conf.tap_mtu
        self._room4 = max(0, min(65535 - 20, mtu - 20))
        self._room6 = max(0, min(65535, mtu - 40))
        self._rx = self._mv[L4_OFF6 : L4_OFF6 + max(self._room4, self._room6)]

    # guest -> host ---------------------------------------------------------
    def from_tap(self, af: int, src: bytes, dst: bytes, l4: memoryview, now: float) -> None:
        """Send one echo request from the guest; anything else is dropped and counted."""
        counters = self.ctx.counters
        if not self.ctx.conf.icmp:
            counters.drop("icmp_disabled")
            return
        if len(l4) < ICMP_ECHO_HLEN:
            counters.drop("icmp_short")
            return
        kind, code, _, ident, _ = _ECHO.unpack_from(l4, 0)
        if kind != (ICMP_ECHO_REQUEST if af == 4 else ICMPV6_ECHO_REQUEST):
            counters.drop("icmp_type")
            return
        if code != 0:
            counters.drop("icmp_code")
            return
        key = (af, ident, dst)
        flow = self.flows.get(key)
        if flow is None:
            flow = self._open(key, src, now)
            if flow is None:
                return
        elif flow.guest_addr != src:
            flow.set_guest_addr(src)
        flow.last = now
        try:
            flow.sock.sendto(l4, flow.sockaddr)
        except BlockingIOError:
            counters.drop("icmp_send_eagain")
        except OSError:
            counters.drop("icmp_send_error")

    def _open(self, key: tuple[int, int, bytes], src: bytes, now: float) -> IcmpFlow | None:
        """A new echo flow with a ping socket bound to the guest's identifier; None: dropped."""
        af, ident, dst = key
        counters = self.ctx.counters
        if not dst_forwardable(af, dst):
            counters.drop("icmp_dst_invalid")
            return None
        if not self.loopback_dst and nat.is_loopback(af, dst):
            counters.drop("icmp_dst_loopback")
            return None
        if len(self.flows) >= self.flows.capacity:
            counters.drop("icmp_flow_table_full")
            return None
        family = SOCK_FAMILY[af]
        proto = socket.IPPROTO_ICMP if af == 4 else socket.IPPROTO_ICMPV6
        real = self._out.target(af, dst, 0, dns=False)
        try:
            sock = self._socket(family, socket.SOCK_DGRAM, proto)
        except OSError as e:
            if e.errno in (errno.EACCES, errno.EPERM):
                _warn_ping_group_range()
                counters.drop("icmp_no_ping_socket")
            else:
                counters.drop("icmp_socket_error")
            return None
        sock.setblocking(False)
        fallback = False
        try:
            # Ping sockets are created shareable (SO_REUSEADDR set): two sockets on
            # one identifier would then see each other's replies, so refuse to share.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 0)
            self._out.bind_icmp(sock, af, real, ident)
        except OSError:
            # Stay unbound: the kernel picks a free identifier on first send.
            fallback = True
            counters.event("icmp_id_fallback")
            try:  # but -o/--outbound-if* still hold (identifier 0: the kernel's choice)
                self._out.bind_icmp(sock, af, real, 0)
            except OSError:
                sock.close()
                counters.drop("icmp_outbound_bind")
                return None
        flow = IcmpFlow(key, sock, guest_addr=src, fallback=fallback, now=now,
                        scope=link_scope(self.ctx.conf.out_ifname, af, dst))  # fmt: skip
        flow.sockaddr = sockaddr_of(af, real, 0, link_scope(self.ctx.conf.out_ifname, af, real))
        self.flows.add(key, flow)
        self.ctx.loop.register(sock.fileno(), EVENT_READ, lambda _m, t: self._sock_ready(flow, t))
        counters.event("icmp_flow")
        self._arm(now)
        return flow

    # host -> guest ---------------------------------------------------------
    def _sock_ready(self, flow: IcmpFlow, now: float) -> None:
        """Echo replies on a flow's ping socket: restore the guest's id, frame each."""
        sock = flow.sock
        rx = self._rx
        counters = self.ctx.counters
        af = flow.af
        room = self._room4 if af == 4 else self._room6
        reply = ICMP_ECHO_REPLY if af == 4 else ICMPV6_ECHO_REPLY
        buf = self._buf
        mv = self._mv
        ctx = self.ctx
        for _ in range(ICMP_BATCH):
            try:
                n = sock.recv_into(rx, 0, socket.MSG_TRUNC)
            except BlockingIOError:
                return
            except OSError:
                counters.drop("icmp_recv_error")
                continue
            if n > room:
                counters.drop("icmp_too_big")
                continue
            if n < ICMP_ECHO_HLEN or buf[L4_OFF6] != reply:
                counters.drop("icmp_reply_bad")
                continue
            flow.last = now
            _ID.pack_into(buf, L4_OFF6 + 4, flow.guest_id)
            _ID.pack_into(buf, L4_OFF6 + 2, 0)
            msg = mv[L4_OFF6 : L4_OFF6 + n]
            if af == 4:
                csum = finish(csum_partial(msg))
                proto = PROTO_ICMP
            else:
                csum = finish(csum_partial(msg, flow.psum + n))
                proto = PROTO_ICMPV6
            _ID.pack_into(buf, L4_OFF6 + 2, csum)
            start = write_l2l3(buf, af, ctx.guest.mac, ctx.conf.our_mac, flow.remote,
                               flow.guest_addr, proto, n, flow.ip4_sum)  # fmt: skip
            ctx.send(bytes(mv[start : L4_OFF6 + n]))

    # lifetime ----------------------------------------------------------------
    def _arm(self, now: float) -> None:
        if self._timer is None:
            self._timer = self.ctx.loop.call_at(now + self.timer_interval_s, self._on_timer)

    def _on_timer(self, now: float) -> None:
        self._timer = None
        self.expire(now)
        if len(self.flows):
            self._arm(now)

    def expire(self, now: float) -> int:
        """Close flows idle for longer than the timeout; returns how many."""
        return expire_idle(self.flows, now - self.timeout_s, self._close)

    def _close(self, flow: IcmpFlow) -> None:
        self.flows.remove(flow.key)
        self.ctx.loop.unregister(flow.sock.fileno())
        flow.sock.close()

    def tap_reset(self) -> None:
        """The guest went away: close every flow."""
        for flow in self.flows.values():
            self._close(flow)
        if self._timer is not None:
            self.ctx.loop.cancel(self._timer)
            self._timer = None

    def flow_count(self) -> int:
        return len(self.flows)
