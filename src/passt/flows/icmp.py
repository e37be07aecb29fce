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

Latency: an echo is a lone frame after an idle spell, which is when the
interpreter is slowest (cold caches and TLB after the ping process ran on
the CPU: every Python step costs several times its warm price).  So the path
does as little as it can: the reply is read right after `sendto` (a near
remote has answered inside it), ICMPv4 checksums are patched for the
identifier (RFC 1624) instead of summed again (the kernel verified the
reply's), and the reply is written to the tap at once instead of by the
loop's deferred flush (for passt's stream socket that costs one `sendmsg`
per reply instead of per turn: ICMP is not bulk traffic).

Limits: flows idle for ICMP_TIMEOUT_S (60 s) are closed by one periodic
timer; the table is bounded; at most ICMP_BATCH replies are read per event.
Only echo requests are forwarded: other ICMP types from the guest are dropped
and counted (NDP never gets here, the dispatcher hands it to the services).
Echo requests to loopback or multicast/broadcast destinations are dropped
unless `loopback_dst` is set (tests), for the reason given in udp.py.
"""

from __future__ import annotations

import errno
import socket
import struct
from typing import Final

from passt import log
from passt.context import Context
from passt.flows import nat
from passt.flows.outbound import Outbound
from passt.flows.sockets import SOCK_FAMILY, SocketFactory, dst_forwardable, link_scope, sockaddr_of
from passt.flows.table import FLOW_MAX, FlowTable, expire_idle
from passt.loop import EVENT_READ, Timer
from passt.wire.checksum import csum_partial, finish, pseudo_sum6, replace16
from passt.wire.icmp import (
    ICMP_ECHO_HLEN,
    ICMP_ECHO_REPLY,
    ICMP_ECHO_REQUEST,
    ICMPV6_ECHO_REPLY,
    ICMPV6_ECHO_REQUEST,
    PROTO_ICMPV6,
)
from passt.wire.ipv4 import PROTO_ICMP
from passt.wire.l2l3 import L2L3_HLEN6, L2L3Template

#: Idle timeout of an echo flow.
ICMP_TIMEOUT_S: Final = 60.0
#: How often the single expiry timer scans the table.
ICMP_TIMER_INTERVAL_S: Final = 5.0
#: Replies read per readiness event.
ICMP_BATCH: Final = 32


_ECHO: Final = struct.Struct("!BBHHH")
_ID: Final = struct.Struct("!H")
_ID_SUM: Final = struct.Struct("!HH")

_ping_warned = False


def _warn_ping_group_range() -> None:
    """One warning per process: ping sockets are refused by ping_group_range."""
    global _ping_warned
    if not _ping_warned:
        _ping_warned = True
        log.warn(
            "can't create ICMP echo (ping) sockets: permission denied; "
            "check /proc/sys/net/ipv4/ping_group_range includes our group, see icmp(7)"
        )


class IcmpFlow:
    """One echo flow: the guest's identifier towards one remote."""

    __slots__ = ("key", "af", "guest_id", "remote", "guest_addr", "sock", "fallback", "last",
                 "our_mac", "tpl", "psum", "sockaddr")  # fmt: skip

    def __init__(
        self, key: tuple[int, int, bytes], sock: socket.socket, *, guest_addr: bytes,
        fallback: bool, now: float, scope: int, mac: bytes, our_mac: bytes,
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
        self.our_mac = our_mac
        self.guest_addr = guest_addr
        #: Ethernet + IP headers of replies (rebuilt when the guest's MAC or address changes).
        self.tpl = self._template(mac)
        #: ICMPv6 pseudo-header sum without the length (0 for ICMP, which has none).
        self.psum = pseudo_sum6(remote, guest_addr, PROTO_ICMPV6, 0) if af == 6 else 0

    def _template(self, mac: bytes) -> L2L3Template:
        proto = PROTO_ICMP if self.af == 4 else PROTO_ICMPV6
        return L2L3Template(self.af, mac, self.our_mac, self.remote, self.guest_addr, proto)

    def set_guest_addr(self, addr: bytes, mac: bytes) -> None:
        """Destination of replies (the request's source); headers and sums follow it."""
        self.guest_addr = addr
        self.tpl = self._template(mac)
        if self.af == 6:
            self.psum = pseudo_sum6(self.remote, addr, PROTO_ICMPV6, 0)

    def template(self, mac: bytes) -> L2L3Template:
        """The reply headers for the guest's current MAC."""
        tpl = self.tpl
        if tpl.dst_mac is not mac:
            tpl = self.tpl = self._template(mac)
        return tpl


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
        self._buf = bytearray(L2L3_HLEN6 + 65535)
        self._mv = memoryview(self._buf)
        mtu = ctx.conf.tap_mtu
        self._room4 = max(0, min(65535 - 20, mtu - 20))
        self._room6 = max(0, min(65535, mtu - 40))
        self._rx = self._mv[L2L3_HLEN6 : L2L3_HLEN6 + max(self._room4, self._room6)]

    # guest -> host ---------------------------------------------------------
    def from_tap(self, af: int, src: bytes, dst: bytes, l4: memoryview, now: float) -> None:
        """Send one echo request from the guest; anything else is dropped and counted."""
        ctx = self.ctx
        if not ctx.conf.icmp:
            ctx.counters.drop("icmp_disabled")
            return
        if len(l4) < ICMP_ECHO_HLEN:
            ctx.counters.drop("icmp_short")
            return
        kind, code, _, ident, _ = _ECHO.unpack_from(l4, 0)
        if kind != (ICMP_ECHO_REQUEST if af == 4 else ICMPV6_ECHO_REQUEST):
            ctx.counters.drop("icmp_type")
            return
        if code != 0:
            ctx.counters.drop("icmp_code")
            return
        key = (af, ident, dst)
        flow = self.flows.get(key)
        if flow is None:
            flow = self._open(key, src, now)
            if flow is None:
                return
        elif flow.guest_addr != src:
            flow.set_guest_addr(src, ctx.guest.mac)
        flow.last = now
        try:
            flow.sock.sendto(l4, flow.sockaddr)
        except BlockingIOError:
            ctx.counters.drop("icmp_send_eagain")
            return
        except OSError:
            ctx.counters.drop("icmp_send_error")
            return
        # A near remote (a namespace, the host itself) has answered inside sendto():
        # frame the reply now instead of one loop turn and epoll_wait later, and
        # write it at once rather than at the end of the turn (module doc).
        if self._reply_one(flow, now):
            ctx.flush_tap(now)

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
                        scope=link_scope(self.ctx.conf.out_ifname, af, dst),
                        mac=self.ctx.guest.mac, our_mac=self.ctx.conf.our_mac)  # fmt: skip
        flow.sockaddr = sockaddr_of(af, real, 0, link_scope(self.ctx.conf.out_ifname, af, real))
        self.flows.add(key, flow)
        self.ctx.loop.register(sock.fileno(), EVENT_READ, lambda _m, t: self._sock_ready(flow, t))
        counters.event("icmp_flow")
        self._arm(now)
        return flow

    # host -> guest ---------------------------------------------------------
    def _sock_ready(self, flow: IcmpFlow, now: float) -> None:
        """Echo replies on a flow's ping socket, at most ICMP_BATCH per event."""
        for _ in range(ICMP_BATCH):
            if not self._reply_one(flow, now):
                break
        self.ctx.flush_tap(now)

    def _reply_one(self, flow: IcmpFlow, now: float) -> bool:
        """Frame one echo reply for the guest with its own id; False: nothing was queued."""
        rx = self._rx
        try:
            n = flow.sock.recv_into(rx, 0, socket.MSG_TRUNC)
        except BlockingIOError:
            return False
        except OSError:
            self.ctx.counters.drop("icmp_recv_error")
            return True
        af = flow.af
        buf = self._buf
        if n > (self._room4 if af == 4 else self._room6):
            self.ctx.counters.drop("icmp_too_big")
            return True
        if n < ICMP_ECHO_HLEN or buf[L2L3_HLEN6] != (ICMP_ECHO_REPLY if af == 4 else ICMPV6_ECHO_REPLY):
            self.ctx.counters.drop("icmp_reply_bad")
            return True
        flow.last = now
        gid = flow.guest_id
        if af == 4:
            # The kernel checked the reply's checksum; only the identifier can change (fallback
            # flows): patch the sum for it (RFC 1624 eqn. 3) instead of summing the message again.
            csum, rid = _ID_SUM.unpack_from(buf, L2L3_HLEN6 + 2)
            if rid != gid:
                _ID_SUM.pack_into(buf, L2L3_HLEN6 + 2, replace16(csum, rid, gid), gid)
        else:
            # ICMPv6 sums the pseudo-header, whose destination (the guest) may differ from ours
            _ID_SUM.pack_into(buf, L2L3_HLEN6 + 2, 0, gid)
            _ID.pack_into(buf, L2L3_HLEN6 + 2, finish(csum_partial(self._mv[L2L3_HLEN6 : L2L3_HLEN6 + n],
                                                                    flow.psum + n)))  # fmt: skip
        start = flow.template(self.ctx.guest.mac).write(buf, L2L3_HLEN6, n)
        self.ctx.send(bytes(self._mv[start : L2L3_HLEN6 + n]))
        return True

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
