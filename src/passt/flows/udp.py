"""UDP translation between the guest's L2 frames and host sockets.

Two kinds of flow share one bounded table, keyed by the guest-side 5-tuple
(af, guest address, guest port, peer address as the guest sees it, peer port):

    outbound (the guest started it)
        guest --UDP frame--> from_tap --send()--> own socket, connect()ed to the peer
        peer --datagram--> own socket --recv_into--> UDP frame --> guest
    inbound (-u: a host peer P sent to a forwarded port L)
        P --datagram--> listener (fwd.py) --listen_ready--> UDP frame --> guest
              src = host_src_to_guest(P), dst = host_dst_to_guest(L) : target port
        guest --reply--> from_tap --sendmsg(PKTINFO = L)--> listener --> P
              (leaves from the bound port and from the address P sent to)

The inbound flow remembers P's real socket address, so replies the guest
sends to the gateway (the translated source) go back to the loopback or local
address they came from: that is the man page's "port-wise" gateway-to-loopback
rule (see nat.py), and nothing else maps the gateway.  An inbound datagram
whose guest-side tuple collides with an outbound flow replaces it (the man
page: the mapping holds once traffic from a local source was forwarded).

Frames to the guest are built in one preallocated buffer with the payload
received straight into it at a fixed offset (62 = Ethernet + IPv6 + UDP; an
IPv4 frame simply starts 20 bytes later), checksummed in full (numpy sum,
zero sent as 0xFFFF) and handed to the tap as one `bytes` copy, since the
tap queues frames until the deferred flush.  Checksums of guest datagrams
are not verified: a tap with offloads hands them over partial.

Limits: idle flows expire after UDP_TIMEOUT_S (180 s, as upstream) on one
periodic timer; under pressure (the table full, or socket() failing with
EMFILE/ENFILE because a guest opened flows by the thousand) a new outbound
flow takes the place of the oldest outbound flow that never got a reply and
was idle UDP_EVICT_UNANSWERED_S, or was idle UDP_EVICT_IDLE_S whatever it got
(`_evict`, at most UDP_EVICT_SCAN candidates looked at per new flow), so a
flooding guest cannot lock itself out of new flows (DNS!) for 180 s; at most UDP_BATCH datagrams are read per readiness event so
one busy socket cannot starve the loop; datagrams that would not fit the tap
MTU are dropped and counted; the table is bounded (full: drop and count).
Guest traffic to destinations that are not unicast is dropped
(`sockets.dst_forwardable`), and so is traffic to loopback destinations unless `loopback_dst` is set
(a guest never legitimately addresses our loopback; letting it would open
host-loopback-only services, which the NOTES rule keeps closed).  DHCP and
DHCPv6 server ports belong to the services (the dispatcher sends them there);
if one reaches us anyway it is dropped.  ICMP port unreachable errors are not
translated back to the guest (counted as udp_refused).
"""

from __future__ import annotations

import errno
import logging
import socket
import struct
from collections import deque
from collections.abc import Set
from typing import Final

from passt.context import Context
from passt.flows import nat
from passt.flows.outbound import Outbound
from passt.flows.sockets import (
    PKTINFO_SPACE,
    SOCK_FAMILY,
    Ancillary,
    SockAddr,
    SocketFactory,
    dst_forwardable,
    link_scope,
    parse_sockaddr,
    pktinfo_addr,
    pktinfo_cmsg,
    sockaddr_of,
)
from passt.flows.table import FLOW_MAX, FlowTable, expire_idle
from passt.loop import EVENT_READ, Timer
from passt.wire.checksum import csum_partial, finish, pseudo_sum4, pseudo_sum6
from passt.wire.eth import ETH_HLEN, ETH_P_IP, ETH_P_IPV6
from passt.wire.udp import PROTO_UDP, UDP_HLEN

log = logging.getLogger("passt")

#: Idle timeout of a UDP flow (upstream passt uses 180 s too).
UDP_TIMEOUT_S: Final = 180.0
#: How often the single expiry timer scans the table.
UDP_TIMER_INTERVAL_S: Final = 10.0
#: Datagrams read per readiness event before yielding to the loop.
UDP_BATCH: Final = 64
#: Under pressure, an outbound flow that never got a reply may be recycled after this idle time...
UDP_EVICT_UNANSWERED_S: Final = 1.0
#: ...and any outbound flow after this one (both far below UDP_TIMEOUT_S).
UDP_EVICT_IDLE_S: Final = 30.0
#: Eviction candidates examined per new flow: bounds the work one datagram can cause.
UDP_EVICT_SCAN: Final = 32

#: Offset of the L4 header in the shared buffer: an IPv6 frame starts at 0,
#: an IPv4 frame at L4_OFF6 - L4_OFF4 = 20.
L4_OFF6: Final = ETH_HLEN + 40
L4_OFF4: Final = ETH_HLEN + 20
FRAME_OFF4: Final = L4_OFF6 - L4_OFF4
PAYLOAD_OFF: Final = L4_OFF6 + UDP_HLEN
#: Largest UDP payloads IP allows (65535 minus headers counted by the length fields).
MAX_PAYLOAD4: Final = 65535 - 20 - UDP_HLEN
MAX_PAYLOAD6: Final = 65535 - UDP_HLEN


_UDP: Final = struct.Struct("!HHHH")
_CSUM: Final = struct.Struct("!H")
_ETH_IP4: Final = struct.Struct("!6s6sHBBHHHBBH4s4s")
_ETH_IP6: Final = struct.Struct("!6s6sHIHBB16s16s")

_DHCP_PORT4: Final = 67
_DHCP_PORT6: Final = 547

def ip4_fixed_sum(src: bytes, dst: bytes, proto: int) -> int:
    """One's complement sum of the IPv4 header words that do not change per frame.

    Version/IHL 0x45, DF set, TTL 255, identification and TOS zero: adding the
    total length and complementing gives the header checksum.
    """
    return pseudo_sum4(src, dst, 0, 0) + 0x4500 + 0x4000 + (0xFF00 | proto)


def write_l2l3(
    buf: bytearray,
    af: int,
    dst_mac: bytes,
    src_mac: bytes,
    src: bytes,
    dst: bytes,
    proto: int,
    l4_len: int,
    ip4_sum: int,
) -> int:
    """Write Ethernet + IP headers ending at the fixed L4 offset; returns the frame start.

    `ip4_sum` is `ip4_fixed_sum(src, dst, proto)` (ignored for IPv6).
    """
    if af == 4:
        tot = 20 + l4_len
        _ETH_IP4.pack_into(
            buf, FRAME_OFF4, dst_mac, src_mac, ETH_P_IP,
            0x45, 0, tot, 0, 0x4000, 255, proto, finish(ip4_sum + tot), src, dst,
        )  # fmt: skip
        return FRAME_OFF4
    _ETH_IP6.pack_into(
        buf, 0, dst_mac, src_mac, ETH_P_IPV6, 0x60000000, l4_len, proto, 255, src, dst
    )
    return 0


class UdpFlow:
    """One UDP flow: guest-side tuple, host socket, precomputed header sums."""

    __slots__ = (
        "key", "af", "guest_addr", "guest_port", "peer_addr", "peer_port", "sock",
        "inbound", "host_peer", "cmsg", "last", "ip4_sum", "psum", "replied",
    )  # fmt: skip

    def __init__(
        self,
        key: tuple[int, bytes, int, bytes, int],
        sock: socket.socket,
        *,
        inbound: bool,
        now: float,
        host_peer: SockAddr | None = None,
        cmsg: Ancillary | None = None,
    ) -> None:
        af, gaddr, gport, paddr, pport = key
        self.key = key
        self.af = af
        #: Guest address and port (destination of frames to the guest).
        self.guest_addr = gaddr
        self.guest_port = gport
        #: Peer address and port as the guest sees them (source of frames to the guest).
        self.peer_addr = paddr
        self.peer_port = pport
        #: outbound: our own connected socket; inbound: the listener (owned by fwd.py).
        self.sock = sock
        self.inbound = inbound
        #: inbound only: the real host-side peer, where guest replies go.
        self.host_peer = host_peer
        #: inbound only: PKTINFO ancillary data so replies leave from the address P used.
        self.cmsg = cmsg or []
        self.last = now
        #: A datagram came back on this flow (eviction prefers flows that never got one).
        self.replied = False
        self.ip4_sum = ip4_fixed_sum(paddr, gaddr, PROTO_UDP) if af == 4 else 0
        if af == 4:
            self.psum = pseudo_sum4(paddr, gaddr, PROTO_UDP, 0)
        else:
            self.psum = pseudo_sum6(paddr, gaddr, PROTO_UDP, 0)


class UdpHandler:
    """UDP flows between guest frames and host sockets (an L4Handler)."""

    def __init__(
        self,
        ctx: Context,
        *,
        local_addrs: Set[bytes] = frozenset(),
        timeout_s: float = UDP_TIMEOUT_S,
        timer_interval_s: float = UDP_TIMER_INTERVAL_S,
        capacity: int = FLOW_MAX,
        loopback_dst: bool = False,
        socket_factory: SocketFactory = socket.socket,
    ) -> None:
        self.ctx = ctx
        #: Every address of the host (packed), for the NOTES "local" test.
        self.local_addrs = local_addrs
        self.timeout_s = timeout_s
        self.timer_interval_s = timer_interval_s
        #: Allow guest datagrams to loopback destinations (tests; see module doc).
        self.loopback_dst = loopback_dst
        self._socket = socket_factory
        #: Where new guest flows really go, and from which source (flows/outbound.py).
        self._out = Outbound.from_config(ctx.conf)
        self.flows: FlowTable[tuple[int, bytes, int, bytes, int], UdpFlow] = FlowTable(capacity)
        self._timer: Timer | None = None
        self._buf = bytearray(PAYLOAD_OFF + MAX_PAYLOAD6)
        self._mv = memoryview(self._buf)
        mtu = ctx.conf.tap_mtu
        #: Largest payload per family that still fits the tap MTU.
        self._room4 = max(0, min(MAX_PAYLOAD4, mtu - 20 - UDP_HLEN))
        self._room6 = max(0, min(MAX_PAYLOAD6, mtu - 40 - UDP_HLEN))
        room = max(self._room4, self._room6)
        self._rx = self._mv[PAYLOAD_OFF : PAYLOAD_OFF + room]
        self._rx_list = [self._rx]
        #: Outbound flow keys, oldest first, for `_evict` (may hold stale keys; compacted).
        self._order: deque[tuple[int, bytes, int, bytes, int]] = deque()

    # guest -> host ---------------------------------------------------------
    def from_tap(self, af: int, src: bytes, dst: bytes, l4: memoryview, now: float) -> None:
        """Forward one UDP datagram from the guest; malformed ones are dropped and counted."""
        counters = self.ctx.counters
        if not self.ctx.conf.udp:
            counters.drop("udp_disabled")
            return
        n = len(l4)
        if n < UDP_HLEN:
            counters.drop("udp_short")
            return
        sport, dport, ulen, _ = _UDP.unpack_from(l4, 0)
        if ulen < UDP_HLEN or ulen > n:
            counters.drop("udp_bad_length")
            return
        key = (af, src, sport, dst, dport)
        flow = self.flows.get(key)
        if flow is None:
            flow = self._open_outbound(key, now)
            if flow is None:
                return
        flow.last = now
        payload = l4[UDP_HLEN:ulen]
        try:
            if flow.inbound:
                flow.sock.sendmsg([payload], flow.cmsg, 0, flow.host_peer)
            else:
                flow.sock.send(payload)
        except BlockingIOError:
            counters.drop("udp_send_eagain")
        except OSError as e:
            counters.drop("udp_refused" if e.errno == errno.ECONNREFUSED else "udp_send_error")

    def _open_outbound(self, key: tuple[int, bytes, int, bytes, int], now: float) -> UdpFlow | None:
        """A new guest-initiated flow with its own connected socket; None: dropped."""
        af, src, sport, dst, dport = key
        counters = self.ctx.counters
        if (af == 4 and dport == _DHCP_PORT4) or (af == 6 and dport == _DHCP_PORT6):
            counters.drop("udp_dhcp")
            return None
        if dport == 0 or sport == 0:
            counters.drop("udp_port_zero")
            return None
        if not dst_forwardable(af, dst):
            counters.drop("udp_dst_invalid")
            return None
        if not self.loopback_dst and nat.is_loopback(af, dst):
            counters.drop("udp_dst_loopback")
            return None
        if len(self.flows) >= self.flows.capacity and not self._evict(now):
            counters.drop("udp_flow_table_full")
            return None
        try:
            sock = self._socket(SOCK_FAMILY[af], socket.SOCK_DGRAM, 0)
        except OSError as e:
            if e.errno not in (errno.EMFILE, errno.ENFILE) or not self._evict(now):
                counters.drop("udp_socket_error")
                return None
            try:
                sock = self._socket(SOCK_FAMILY[af], socket.SOCK_DGRAM, 0)
            except OSError:
                counters.drop("udp_socket_error")
                return None
        real = self._out.target(af, dst, dport, dns=True)
        try:
            sock.setblocking(False)
            self._out.connect(sock, af, real, sockaddr_of(af, real, dport,
                                                          link_scope(self.ctx.conf.out_ifname, af, real)))
        except OSError:
            sock.close()
            counters.drop("udp_connect_error")
            return None
        flow = UdpFlow(key, sock, inbound=False, now=now)
        self.flows.add(key, flow)
        order = self._order
        order.append(key)
        if len(order) > 2 * len(self.flows) + 64:
            flows = self.flows
            self._order = deque(dict.fromkeys(k for k in order if k in flows))
        self.ctx.loop.register(sock.fileno(), EVENT_READ, lambda _m, t: self._sock_ready(flow, t))
        counters.event("udp_flow_out")
        self._arm(now)
        return flow

    # host -> guest ---------------------------------------------------------
    def _sock_ready(self, flow: UdpFlow, now: float) -> None:
        """Replies on an outbound flow's socket: read a bounded batch, frame each."""
        sock = flow.sock
        rx = self._rx
        room = self._room4 if flow.af == 4 else self._room6
        counters = self.ctx.counters
        for _ in range(UDP_BATCH):
            try:
                n = sock.recv_into(rx, 0, socket.MSG_TRUNC)
            except BlockingIOError:
                return
            except OSError as e:
                counters.drop("udp_refused" if e.errno == errno.ECONNREFUSED else "udp_recv_error")
                continue
            if n > room:
                counters.drop("udp_too_big")
                continue
            flow.last = now
            flow.replied = True
            self._to_tap(flow, n)

    def listen_ready(self, sock: socket.socket, target_port: int, now: float) -> None:
        """Datagrams on a -u listener: open or refresh inbound flows and frame each."""
        rx_list = self._rx_list
        counters = self.ctx.counters
        for _ in range(UDP_BATCH):
            try:
                n, anc, flags, peer = sock.recvmsg_into(rx_list, PKTINFO_SPACE, 0)
            except BlockingIOError:
                return
            except OSError:
                counters.drop("udp_recv_error")
                continue
            if flags & socket.MSG_TRUNC:
                counters.drop("udp_too_big")
                continue
            try:
                af, paddr, pport = parse_sockaddr(peer)
            except (OSError, ValueError, IndexError):
                counters.drop("udp_bad_peer")
                continue
            if n > (self._room4 if af == 4 else self._room6):
                counters.drop("udp_too_big")
                continue
            flow = self._inbound_flow(sock, target_port, af, paddr, pport, peer, anc, now)
            if flow is None:
                continue
            flow.last = now
            self._to_tap(flow, n)

    def _inbound_flow(
        self,
        sock: socket.socket,
        target_port: int,
        af: int,
        paddr: bytes,
        pport: int,
        peer: SockAddr,
        anc: Ancillary,
        now: float,
    ) -> UdpFlow | None:
        """Find or create the inbound flow for a datagram from `peer`; None: dropped."""
        ldst = self._local_dst(sock, af, anc)
        ctx = self.ctx
        gsrc = nat.host_src_to_guest(ctx.conf, af, paddr, self.local_addrs)
        gdst = nat.host_dst_to_guest(ctx.guest, af, ldst, self.local_addrs)
        key = (af, gdst, target_port, gsrc, pport)
        flow = self.flows.get(key)
        if flow is not None:
            if flow.inbound and flow.sock is sock and flow.host_peer == peer:
                return flow
            self._close(flow)
        if len(self.flows) >= self.flows.capacity:
            ctx.counters.drop("udp_flow_table_full")
            return None
        if not dst_forwardable(af, ldst):
            cmsg = []
        elif sock.family == socket.AF_INET6:
            cmsg = pktinfo_cmsg(socket.IPPROTO_IPV6, ldst if af == 6 else nat.V4MAPPED_PREFIX + ldst)
        else:
            cmsg = pktinfo_cmsg(socket.IPPROTO_IP, ldst)
        flow = UdpFlow(key, sock, inbound=True, now=now, host_peer=peer, cmsg=cmsg)
        self.flows.add(key, flow)
        ctx.counters.event("udp_flow_in")
        self._arm(now)
        return flow

    @staticmethod
    def _local_dst(sock: socket.socket, af: int, anc: Ancillary) -> bytes:
        """The address the peer sent to: from PKTINFO, else the listener's bound address."""
        info = pktinfo_addr(anc)
        if info is not None:
            level, addr = info
            return nat.unmap_v4(addr)[1] if level == socket.IPPROTO_IPV6 else addr
        try:
            name = sock.getsockname()
            return parse_sockaddr(name)[1]
        except (OSError, ValueError):
            return bytes(4) if af == 4 else bytes(16)

    def _to_tap(self, flow: UdpFlow, n: int) -> None:
        """Frame `n` payload bytes waiting at PAYLOAD_OFF and queue them to the guest."""
        buf = self._buf
        ulen = UDP_HLEN + n
        _UDP.pack_into(buf, L4_OFF6, flow.peer_port, flow.guest_port, ulen, 0)
        csum = finish(csum_partial(self._mv[L4_OFF6 : L4_OFF6 + ulen], flow.psum + ulen)) or 0xFFFF
        _CSUM.pack_into(buf, L4_OFF6 + 6, csum)
        ctx = self.ctx
        start = write_l2l3(
            buf, flow.af, ctx.guest.mac, ctx.conf.our_mac, flow.peer_addr, flow.guest_addr,
            PROTO_UDP, ulen, flow.ip4_sum,
        )  # fmt: skip
        ctx.send(bytes(self._mv[start : L4_OFF6 + ulen]))

    # lifetime ----------------------------------------------------------------
    def _arm(self, now: float) -> None:
        if self._timer is None:
            self._timer = self.ctx.loop.call_at(now + self.timer_interval_s, self._on_timer)

    def _on_timer(self, now: float) -> None:
        self._timer = None
        self.expire(now)
        if len(self.flows):
            self._arm(now)

    def _evict(self, now: float) -> bool:
        """Recycle one idle outbound flow for a new one; False when none qualifies.

        Looks at no more than UDP_EVICT_SCAN of the oldest outbound flows;
        those still in use go to the back of the line.
        """
        order = self._order
        flows = self.flows
        unanswered = now - UDP_EVICT_UNANSWERED_S
        idle = now - UDP_EVICT_IDLE_S
        for _ in range(min(len(order), UDP_EVICT_SCAN)):
            key = order.popleft()
            flow = flows.get(key)
            if flow is None or flow.inbound:
                continue  # closed already (stale key), or not ours to recycle
            if flow.last <= idle or (not flow.replied and flow.last <= unanswered):
                self._close(flow)
                self.ctx.counters.event("udp_flow_evicted")
                return True
            order.append(key)
        return False

    def expire(self, now: float) -> int:
        """Close flows idle for longer than the timeout; returns how many."""
        return expire_idle(self.flows, now - self.timeout_s, self._close)

    def _close(self, flow: UdpFlow) -> None:
        self.flows.remove(flow.key)
        if not flow.inbound:
            self.ctx.loop.unregister(flow.sock.fileno())
            flow.sock.close()

    def forget_listener(self, sock: socket.socket) -> None:
        """A -u listener is about to close: drop the inbound flows that use it."""
        for flow in self.flows.values():
            if flow.inbound and flow.sock is sock:
                self._close(flow)

    def tap_reset(self) -> None:
        """The guest went away: close every flow (listeners stay with fwd.py)."""
        for flow in self.flows.values():
            self._close(flow)
        self._order.clear()
        if self._timer is not None:
            self.ctx.loop.cancel(self._timer)
            self._timer = None

    def flow_count(self) -> int:
        return len(self.flows)
