"""TCP translation: guest segments <-> host stream sockets, without buffering data.

Each TCP connection of the guest is mirrored by one host socket.  We run no
TCP stack of our own: the host kernel does congestion control, retransmission
to the real peer and reassembly; we only translate, and reflect one side's
observed parameters to the other (man page DESCRIPTION):

    guest --segment--> from_tap --send()--> socket --> real peer
       ^                 ACK = what the *peer* acked (TCP_INFO tcpi_bytes_acked)
       |                 window = peer's window (tcpi_snd_wnd), capped by free send buffer
       |
    guest <--frames--  _push <--recvmsg_into(MSG_PEEK, SO_PEEK_OFF)-- socket <-- real peer
                         data stays queued in the socket until the guest ACKs it;
                         a guest ACK drops that many bytes (recv MSG_TRUNC)

Host to guest (`_push`).  Data is peeked, at the socket's peek offset
(SO_PEEK_OFF, option 42: the kernel advances it on peeks and moves it back as
we drop bytes), straight into the payload area of preallocated frame slots
(`tcp_frames.FrameRing`), one scatter `recvmsg_into` for the whole burst,
as much as the guest's scaled window minus bytes in flight allows.  With an
offloading tap a slot holds up to ~64 KiB, sent with `send_gso` (partial
checksum, gso_size = MSS); otherwise MSS-sized frames with full checksums.
Retransmission is a rewind: peek offset back to 0 (= the guest's last ACK),
on RTO (1 s, doubling to 32 s, RST after 6 tries) or 3 duplicate ACKs.  With
a zero guest window we stop reading and probe (an ACK with seq - 1) at RTO.
Without SO_PEEK_OFF (Linux < 6.10 for TCP) we peek from the start each time,
the bytes already in flight going into a scratch buffer (bounded by
SCRATCH_BYTES: the in-flight amount is capped to it).

Guest to host (`from_tap`).  Payload goes to `send()` as is; only the bytes
the socket accepted count as received: the rest the guest will retransmit.
The window we announce keeps a guest that honours it within the free send
buffer (SO_MEMINFO), so a short `send()` means a guest ignoring it: we then
ACK exactly what the socket took and, once it is writable again, send three
duplicate ACKs so the guest fast-retransmits from the hole.  The ACK
we announce follows what the real peer acknowledged, read through TCP_INFO
after every batch of guest segments and whenever the peer acknowledges
something: host sockets carry SO_TIMESTAMPING with TX_ACK, so the kernel
queues a (payload-less) notification on the socket's error queue when the
peer ACKs the last byte of each send(), which wakes our epoll with EPOLLERR;
we drain the queue and re-read TCP_INFO in the same turn.  On a veth or
loopback path the peer's ACK often arrives inside send() already.  An
ACK_POLL_S (10 ms) poll stays as a safety net while guest data is
unacknowledged or our window is zero (notifications are charged to the
receive buffer and dropped when it is full).  Host sockets get SO_SNDBUF =
half of tcp_wmem's maximum (both options only once the guest has sent
BULK_BYTES: short request/response flows skip their system calls and the
per-send notifications): the window is capped by free send buffer, so a
guest honouring it never fills the buffer, and the kernel's autotuning, which
grows the buffer only after it ran full, would leave it at its initial
~64 KiB for the whole connection (seen: lock-step 34 KiB windows, 0.2-0.9
Gbit/s).  A pure ACK that
covers less than one MSS of new data waits up to ACK_DELAY_S (1 ms) for a
data frame to carry it (request/response: the peer's answer; the ACK of the
guest's FIN likewise waits for our FIN while the peer has not closed), and a window
change alone makes an ACK only when it closes, reopens or grows by a quarter
(`_window_news`).  Where TCP_INFO is too short to carry tcpi_snd_wnd (Linux
< 5.3), we fall back, as the man page's NOTES say, to a fixed 14600-byte
window and ACK on enqueue.

Event sources.  Host sockets live in an inner edge-triggered epoll whose
descriptor is the only thing registered with the loop: one readiness event
per new data, ACK notification or state change, no interest toggling while
data waits in the socket for the guest's ACK (level triggering would spin
there).  A guest SYN whose connect() completes at once (local peers) is
answered in the same turn.  Socket
events and guest segments only mark a flow dirty; all socket I/O and frame
building happen once per loop turn in `_post` (deferred work), so a burst of
guest ACKs costs one drop, one peek and one TCP_INFO per flow.

State: bits in `TcpConn.state`, changed only through `tcp_state.next_state`
with a named event (its docstring holds the full table, which a unit test
checks against the code):

    guest SYN --> CONNECTING --connect() ok--> SYNACK_SENT --guest ACK--+
                  CONNECTING --refused/unreachable/timeout--> RST to guest, closed
    -t accept --> SYN_SENT ---------------guest SYN-ACK-----------------+--> ESTABLISHED
                  SYN_SENT --guest RST / timeout--> socket reset, closed
    ESTABLISHED, then per direction:
        guest -> host: GUEST_FIN (shutdown(SHUT_WR) done) --peer acked it all--> GUEST_FIN_ACKED
        host -> guest: SOCK_EOF --> FIN_SENT --guest ACK--> FIN_ACKED
                                    FIN_SENT --retransmission (rewind)--> cleared, FIN resent
                                    after the data (EV_FIN_RESEND: the one backward step)
    GUEST_FIN_ACKED and FIN_ACKED together close the flow.
    RST either way closes the flow (SO_LINGER 0 towards the host peer).

Timeouts: handshake SYN_TIMEOUT_S (10 s), idle ACT_TIMEOUT_S (2 h, as
upstream) once established, FIN_TIMEOUT_S (60 s idle) once either side has
closed.  Bounds: the flow table (FlowTable capacity; full -> RST/refuse and
count), ACCEPT_BATCH accepts and EPOLL_BATCH socket events per wake-up, the
frame ring per turn.  Not implemented (man page LIMITATIONS): SACK,
timestamps (PAWS/RTTM); urgent data is passed as ordinary data.
"""

from __future__ import annotations

import errno
import functools
import os
import select
import socket
from collections.abc import Callable, Set
from typing import Final

from passt.context import Context
from passt.flows import nat
from passt.flows.outbound import Outbound
from passt.flows.sockets import SocketFactory, close_rst, dst_forwardable, link_scope
from passt.flows.table import FLOW_MAX, FlowTable
from passt.flows.tcp_frames import FrameRing, FrameTemplate, build_control, gso_payload_cap
from passt.flows.tcp_kernel import (
    TCP_INFO_LEN,
    TI_ACKED_WND,
    TI_BYTES_ACKED_OFF,
    default_sndbuf,
    drain_errqueue,
    info_bytes_acked,
    info_snd_wnd,
    meminfo,
    poll_out,
    set_peek_off,
    tcp_info,
    tune_bulk,
    tune_new,
)
from passt.flows.tcp_state import (
    CONNECTING,
    ESTABLISHED,
    EV_CONNECTED,
    EV_FIN_ACKED,
    EV_FIN_RESEND,
    EV_FIN_SENT,
    EV_GUEST_FIN,
    EV_GUEST_FIN_ACKED,
    EV_GUEST_SYN,
    EV_HANDSHAKE_DONE,
    EV_SOCK_ACCEPTED,
    EV_SOCK_EOF,
    FIN_ACKED,
    FIN_SENT,
    GUEST_FIN,
    GUEST_FIN_ACKED,
    HANDSHAKE,
    SOCK_EOF,
    SYN_SENT,
    SYNACK_SENT,
    next_state,
)
from passt.loop import EVENT_READ, Timer
from passt.tap.base import GSO_NONE, GSO_TCPV4, GSO_TCPV6
from passt.wire.errors import ParseError
from passt.wire.tcp import (
    ACK,
    FIN,
    PSH,
    RST,
    SYN,
    TCP_CSUM_OFF,
    TcpSegment,
    parse_tcp,
    syn_options,
)

FlowKey = tuple[int, bytes, int, bytes, int]

#: Payload per truesize byte assumed before the queue tells us (small skbs cost ~2x).
TRUESIZE_RATIO_DEFAULT: Final = 0.5
TRUESIZE_RATIO_MIN: Final = 0.25
#: Never assume better than this: skb overhead plus the kernel's own rounding.
TRUESIZE_RATIO_MAX: Final = 0.9

#: RFC 9293 section 3.7.1 / RFC 8200 section 5 defaults when the guest sends no MSS.
MSS_DEFAULT4: Final = 536
MSS_DEFAULT6: Final = 1220
#: Our window scale shift: windows up to 16 MiB in 256-byte units.
OUR_WS: Final = 8
#: Fixed window when TCP_INFO lacks snd_wnd (man page NOTES; RFC 6928's 10 * 1460).
SND_WND_FALLBACK: Final = 14600

RTO_INIT_S: Final = 1.0
RTO_MAX_S: Final = 32.0
#: Retransmissions of one segment (or SYN) before we give up and reset.
MAX_RETRANS: Final = 6
SYN_TIMEOUT_S: Final = 10.0
ACT_TIMEOUT_S: Final = 7200.0
FIN_TIMEOUT_S: Final = 60.0
#: How often to re-read TCP_INFO while guest data waits for the peer's ACK.
ACK_POLL_S: Final = 0.01
#: How long a pure ACK for less than one MSS may wait for data to ride on.
ACK_DELAY_S: Final = 0.001
DUP_ACK_THRESHOLD: Final = 3
ACCEPT_BATCH: Final = 64
#: A listener whose accept() failed for lack of descriptors rests this long.
ACCEPT_BACKOFF_S: Final = 0.1
EPOLL_BATCH: Final = 256
#: Scratch for MSG_TRUNC drops and peeks without SO_PEEK_OFF (virtual until touched).
SCRATCH_BYTES: Final = 16 << 20
#: Bytes of randomness fetched at once for initial sequence numbers.
RANDOM_POOL_BYTES: Final = 4096
#: Guest-to-host bytes after which a flow counts as bulk and gets SO_SNDBUF and ACK events.
BULK_BYTES: Final = 64 << 10

_M: Final = 0xFFFFFFFF
_NEG: Final = 0x80000000

_EP_IN: Final = select.EPOLLIN
_EP_OUT: Final = select.EPOLLOUT
_EP_ERR: Final = select.EPOLLERR
_EP_HUP: Final = select.EPOLLHUP
_EP_RDHUP: Final = select.EPOLLRDHUP
_EP_MASK: Final = _EP_IN | _EP_OUT | _EP_RDHUP | select.EPOLLET
#: A window below this may hold a guest back (its sender-side silly window
#: avoidance waits for min(MSS, half the largest window seen)): keep asking
#: TCP_INFO for news while ours is this small, even with nothing to acknowledge.
WINDOW_SMALL: Final = 16384

# State bits and the transition table live in tcp_state; the bits are
# re-exported above ("X as X") because control/flows.py and tests read them as tcp.X.

_INF: Final = float("inf")


class TcpConn:
    """One translated connection: host socket, sequence state both ways, timers.

    Host-to-guest offsets (`sent`, `acked`, `snd_max`, `fin_off`) count data
    bytes after our ISN + 1; guest-to-host offsets (`rcvd`, `ack_off`) count
    bytes after the guest's ISN + 1.  They are unbounded ints; only the wire
    is modulo 2**32.
    """

    __slots__ = (
        "key", "af", "sock", "fd", "tpl", "state", "closed",
        "isn", "sent", "acked", "snd_max", "fin_off", "to_drop",
        "wnd_from_guest", "wnd_raw_from_guest", "ws_from_guest", "mss", "dup_acks",
        "g_isn", "rcvd", "ack_off", "ack_sent", "wnd_raw", "wnd_sent", "ws_to_guest",
        "acked_base", "no_tcpinfo", "peek_off", "truesize_ratio", "sndbuf", "in_delack",
        "sock_pending", "rdhup", "need_ack", "nudge", "sndbuf_full", "ack_all", "info_due",
        "retransmit", "dirty", "in_poll", "bulk",
        "timer", "timer_cb", "rto", "retries", "rto_deadline", "syn_deadline",
        "last_activity",
    )  # fmt: skip

    def __init__(self, key: FlowKey, sock: socket.socket, tpl: FrameTemplate, now: float, sndbuf: int = 0) -> None:
        #: (af, guest address, guest port, remote address as the guest sees it, remote port).
        self.key = key
        self.af = key[0]
        self.sock = sock
        self.fd = sock.fileno()
        self.tpl = tpl
        self.state = 0
        self.closed = False
        #: Our initial sequence number towards the guest (RFC 6528: random).
        self.isn = _RANDOM.u32()
        #: Data bytes sent to the guest (next to send), acked by it, highest sent.
        self.sent = 0
        self.acked = 0
        self.snd_max = 0
        #: Offset of our FIN; -1 until sent.
        self.fin_off = -1
        #: Bytes the guest acked that are still in the socket.
        self.to_drop = 0
        #: Guest's window in bytes (scaled), its raw field and shift; its MSS.
        self.wnd_from_guest = 0
        self.wnd_raw_from_guest = 0
        self.ws_from_guest = 0
        self.mss = MSS_DEFAULT4
        self.dup_acks = 0
        #: Guest's ISN; bytes from the guest the socket accepted; bytes we ACK.
        self.g_isn = 0
        self.rcvd = 0
        self.ack_off = 0
        #: Last ACK number / window field sent to the guest (-1: nothing yet).
        self.ack_sent = -1
        self.wnd_raw = 0
        self.wnd_sent = -1
        #: Shift applied to the window we announce (0 unless both sides sent WS).
        self.ws_to_guest = 0
        #: tcpi_bytes_acked when the connection was established (the SYN counts on active opens).
        self.acked_base = 0
        #: TCP_INFO without snd_wnd seen: fixed window, ACK on enqueue.
        self.no_tcpinfo = False
        #: SO_PEEK_OFF works on this socket.
        self.peek_off = True
        #: Payload bytes per byte of send-buffer truesize, as last measured.
        self.truesize_ratio = TRUESIZE_RATIO_DEFAULT
        #: SO_SNDBUF as last seen (SO_MEMINFO, at first the handler's fresh-socket figure); 0: not known yet.
        self.sndbuf = sndbuf
        #: Waiting in the handler's delayed-ACK list.
        self.in_delack = False
        #: The socket may hold data not peeked yet (edge-triggered readiness seen).
        self.sock_pending = False
        #: The peer closed or reset: a short peek means end of stream.
        self.rdhup = False
        #: Send an ACK this turn even if nothing changed (dup, keepalive, handshake).
        self.need_ack = False
        #: Send duplicate ACKs so the guest retransmits what the socket refused.
        self.nudge = False
        self.sndbuf_full = False
        #: ACK everything the socket accepted at the next update (after a partial send).
        self.ack_all = False
        #: Re-read TCP_INFO this turn.
        self.info_due = False
        self.retransmit = False
        self.dirty = False
        self.in_poll = False
        #: Bulk options (SO_SNDBUF, ACK events) set: BULK_BYTES came from the guest.
        self.bulk = False
        self.timer: Timer | None = None
        self.timer_cb: Callable[[float], None] | None = None
        self.rto = RTO_INIT_S
        self.retries = 0
        #: When the oldest unacked segment (or SYN, or window probe) is due again; 0: none.
        self.rto_deadline = 0.0
        self.syn_deadline = now + SYN_TIMEOUT_S
        self.last_activity = now

    def seq_nxt(self) -> int:
        """Sequence number of the next new byte we send the guest (after our FIN if sent)."""
        extra = 1 if self.state & FIN_SENT else 0
        return (self.isn + 1 + self.sent + extra) & _M

    def ack_num(self) -> int:
        """ACK number matching `ack_off` (plus the guest's FIN once acknowledged)."""
        extra = 1 if self.state & GUEST_FIN_ACKED else 0
        return (self.g_isn + 1 + self.ack_off + extra) & _M


class TcpHandler:
    """TCP flows between guest frames and host sockets (an L4Handler)."""

    def __init__(
        self,
        ctx: Context,
        *,
        local_addrs: Set[bytes] = frozenset(),
        capacity: int = FLOW_MAX,
        loopback_dst: bool = False,
        socket_factory: SocketFactory = socket.socket,
        sndbuf: int | None = None,
        ack_events: bool = True,
    ) -> None:
        self.ctx = ctx
        #: Every address of the host (packed), for the NOTES address translation.
        self.local_addrs = local_addrs
        #: Allow guest connections to loopback destinations (tests; see udp.py's reasoning).
        self.loopback_dst = loopback_dst
        self._socket = socket_factory
        #: SO_SNDBUF asked for on host sockets (0: leave the kernel's autotuning alone).
        self._sndbuf = default_sndbuf() if sndbuf is None else sndbuf
        #: Send buffer of a fresh connection's socket, learned from the first
        #: SO_MEMINFO read: new connections start from it (one system call
        #: less per connection; see `_sndbuf_room`).
        self._fresh_sndbuf = 0
        #: Ask the kernel to report peer ACKs on the error queue (SO_TIMESTAMPING TX_ACK).
        self._ack_events = ack_events
        self.flows: FlowTable[FlowKey, TcpConn] = FlowTable(capacity)
        self._by_fd: dict[int, TcpConn] = {}
        self._ep = select.epoll()
        ctx.loop.register(self._ep.fileno(), EVENT_READ, self._on_epoll)
        self._dirty: list[TcpConn] = []
        self._poll: list[TcpConn] = []
        self._poll_timer: Timer | None = None
        self._starved: list[TcpConn] = []
        self._starved_timer: Timer | None = None
        self._ring: FrameRing | None = None
        self._scratch: bytearray | None = None
        self._views: list[memoryview] = []
        self._poll_out = select.poll()
        #: Landing place for error-queue reads (OPT_TSONLY: no payload comes back).
        self._errbuf = bytearray(1)
        #: Flows whose error queue held more than a batch this turn.
        self._errq_more: list[TcpConn] = []
        self._delack: list[TcpConn] = []
        self._delack_timer: Timer | None = None
        conf = ctx.conf
        self._our_mss4 = max(64, min(65535, conf.tap_mtu - 40))
        self._our_mss6 = max(64, min(65535, conf.tap_mtu - 60))
        self._enabled = conf.tcp
        #: Where new guest connections really go, and from which source (flows/outbound.py).
        self._out = Outbound.from_config(conf)

    # public ----------------------------------------------------------------
    def flow_count(self) -> int:
        return len(self.flows)

    def tap_reset(self) -> None:
        """The guest went away: reset every host socket, forget every flow."""
        for conn in self.flows.values():
            self._close(conn, rst=True)

    def close(self) -> None:
        """Release everything (tests and shutdown)."""
        self.tap_reset()
        self.ctx.loop.unregister(self._ep.fileno())
        self._ep.close()

    # guest -> host -----------------------------------------------------------
    def from_tap(self, af: int, src: bytes, dst: bytes, l4: memoryview, now: float) -> None:
        """One TCP segment from the guest; never raises on bad input."""
        counters = self.ctx.counters
        if not self._enabled:
            counters.drop("tcp_disabled")
            return
        try:
            seg = parse_tcp(l4)
        except ParseError as e:
            counters.drop(str(e))
            return
        if seg.sport == 0 or seg.dport == 0:
            counters.drop("tcp_port_zero")
            return
        conn = self.flows.get((af, src, seg.sport, dst, seg.dport))
        if conn is None:
            self._new_from_tap(af, bytes(src), bytes(dst), seg, len(l4) - seg.hdr_len, now)
            return
        conn.last_activity = now
        state = conn.state
        flags = seg.flags
        if flags & RST:
            counters.event("tcp_rst_from_guest")
            self._close(conn, rst=True)
            return
        if state & HANDSHAKE:
            if not self._handshake_from_tap(conn, seg):
                return
        elif flags & SYN:
            # RFC 5961 section 4: a SYN in a synchronized state gets a challenge ACK.
            conn.need_ack = True
            self._mark(conn)
            return
        if not flags & ACK:
            counters.drop("tcp_no_ack")
            return
        self._ack_from_tap(conn, seg, len(l4) - seg.hdr_len, now)
        plen = len(l4) - seg.hdr_len
        if plen or flags & FIN:
            self._data_from_tap(conn, seg, l4[seg.hdr_len :], plen)
        elif ((seg.seq - conn.g_isn - 1 - conn.rcvd) & _M) == _M:
            # Keep-alive probe (seq = rcv_nxt - 1, RFC 9293 section 3.8.4): answer it.
            conn.need_ack = True
        self._mark(conn)

    def _new_from_tap(
        self, af: int, src: bytes, dst: bytes, seg: TcpSegment, plen: int, now: float
    ) -> None:
        """A segment for no known flow: a SYN opens one, anything else gets an RST."""
        ctx = self.ctx
        counters = ctx.counters
        flags = seg.flags
        if flags & RST:
            counters.drop("tcp_rst_unknown")
            return
        if flags & (SYN | ACK) != SYN:
            counters.drop("tcp_unknown_flow")
            self._rst_unknown(af, src, dst, seg, plen)
            return
        if not dst_forwardable(af, dst):
            counters.drop("tcp_bad_dst")
            return
        if not self.loopback_dst and nat.is_loopback(af, dst):
            counters.drop("tcp_dst_loopback")
            return
        if len(self.flows) >= self.flows.capacity:
            counters.drop("tcp_flow_table_full")
            self._rst_unknown(af, src, dst, seg, plen)
            return
        family = socket.AF_INET if af == 4 else socket.AF_INET6
        try:
            sock = self._socket(family, socket.SOCK_STREAM | socket.SOCK_NONBLOCK, 0)
        except OSError:
            counters.drop("tcp_socket")
            self._rst_unknown(af, src, dst, seg, plen)
            return
        if sock.gettimeout() != 0.0:
            sock.setblocking(False)
        self._tune(sock)
        real = self._out.target(af, dst, seg.dport, dns=True)
        host = socket.inet_ntop(family, real)
        addr: tuple[str, int] | tuple[str, int, int, int]
        if af == 4:
            addr = (host, seg.dport)
        else:
            addr = (host, seg.dport, 0, link_scope(self.ctx.conf.out_ifname, af, real))
        rc = self._out.connect_ex(sock, af, real, addr)
        if rc not in (0, errno.EINPROGRESS):
            sock.close()
            counters.event("tcp_connect_failed")
            self._rst_unknown(af, src, dst, seg, plen)
            return
        key: FlowKey = (af, src, seg.sport, dst, seg.dport)
        tpl = self._template(af, dst, src, seg.dport, seg.sport)
        conn = TcpConn(key, sock, tpl, now, self._fresh_sndbuf)
        conn.state = next_state(0, EV_GUEST_SYN)
        conn.g_isn = seg.seq
        self._syn_params(conn, seg, offered_ws=seg.wscale >= 0)
        conn.wnd_raw_from_guest = seg.window
        conn.wnd_from_guest = seg.window  # never scaled in a SYN (RFC 7323 section 2.2)
        if not self._register(conn):
            self._rst_unknown(af, src, dst, seg, plen)
            return
        counters.event("tcp_open_from_guest")
        self._arm(conn, conn.syn_deadline)
        if rc == 0:
            self._connect_done(conn, now)
        else:
            revents = self._connected_now(conn)
            if revents:
                self._connect_done(conn, now, clean=not revents & (select.POLLERR | select.POLLHUP))

    def _syn_params(self, conn: TcpConn, seg: TcpSegment, *, offered_ws: bool) -> None:
        """MSS and window scaling from the guest's SYN or SYN-ACK (RFC 7323 section 2.2)."""
        ours = self._our_mss4 if conn.af == 4 else self._our_mss6
        guest_mss = seg.mss or (MSS_DEFAULT4 if conn.af == 4 else MSS_DEFAULT6)
        conn.mss = max(1, min(ours, guest_mss))
        if offered_ws:
            conn.ws_from_guest = max(seg.wscale, 0)
            conn.ws_to_guest = OUR_WS
        else:
            conn.ws_from_guest = 0
            conn.ws_to_guest = 0

    def _handshake_from_tap(self, conn: TcpConn, seg: TcpSegment) -> bool:
        """Segments during the handshake; True when the segment goes on to normal processing."""
        state = conn.state
        flags = seg.flags
        counters = self.ctx.counters
        if state & CONNECTING:
            if flags & SYN and seg.seq == conn.g_isn:
                counters.event("tcp_dup_syn")
            else:
                counters.drop("tcp_early_segment")
            return False
        if state & SYNACK_SENT:
            if flags & SYN and not flags & ACK:
                if seg.seq == conn.g_isn:
                    counters.event("tcp_dup_syn")
                    self._send_synack(conn)
                else:
                    counters.drop("tcp_syn_mismatch")
                return False
            if not flags & ACK:
                counters.drop("tcp_no_ack")
                return False
            if seg.ack != (conn.isn + 1) & _M:
                counters.drop("tcp_bad_handshake_ack")
                self._send_rst_for(conn, seg.ack)
                return False
            self._established(conn)
            return True
        # SYN_SENT: we sent a SYN for a -t connection, expecting SYN-ACK.
        if flags & (SYN | ACK) != SYN | ACK:
            counters.drop("tcp_expected_synack")
            return False
        if seg.ack != (conn.isn + 1) & _M:
            counters.drop("tcp_bad_handshake_ack")
            self._send_rst_for(conn, seg.ack)
            return False
        conn.g_isn = seg.seq
        self._syn_params(conn, seg, offered_ws=seg.wscale >= 0)
        conn.wnd_raw_from_guest = seg.window
        conn.wnd_from_guest = seg.window
        self._established(conn)
        conn.need_ack = True
        conn.info_due = True
        self._mark(conn)
        return False

    def _established(self, conn: TcpConn) -> None:
        conn.state = next_state(conn.state, EV_HANDSHAKE_DONE)
        conn.info_due = True
        conn.rto = RTO_INIT_S
        conn.retries = 0
        conn.rto_deadline = 0.0
        self.ctx.counters.event("tcp_established")

    def _ack_from_tap(self, conn: TcpConn, seg: TcpSegment, plen: int, now: float) -> None:
        """Guest ACK of our data: advance, drop later, detect duplicates, update its window."""
        base = (conn.isn + 1 + conn.acked) & _M
        delta = (seg.ack - base) & _M
        if delta & _NEG:
            return  # old ACK (reordered): neither ack nor window news
        outstanding = conn.snd_max - conn.acked + (1 if conn.fin_off >= 0 else 0)
        if delta > outstanding:
            self.ctx.counters.drop("tcp_ack_unsent")
            conn.need_ack = True
            return
        window = seg.window << conn.ws_from_guest
        if delta:
            fin_off = conn.fin_off
            new = conn.acked + delta
            if fin_off >= 0 and new > fin_off:
                new = fin_off
                if not conn.state & FIN_ACKED:  # (a repeated ACK of our FIN: no news)
                    conn.state = next_state(conn.state, EV_FIN_ACKED)
            conn.to_drop += new - conn.acked
            conn.acked = new
            if conn.sent < new:
                conn.sent = new
            conn.dup_acks = 0
            conn.retries = 0
            conn.rto = RTO_INIT_S
            if conn.sent > conn.acked or conn.state & FIN_SENT and not conn.state & FIN_ACKED:
                conn.rto_deadline = now + conn.rto
            else:
                conn.rto_deadline = 0.0
        elif (
            plen == 0
            and not seg.flags & (SYN | FIN)
            and seg.window == conn.wnd_raw_from_guest
            and conn.sent > conn.acked
        ):
            conn.dup_acks += 1
            if conn.dup_acks == DUP_ACK_THRESHOLD:
                conn.retransmit = True
                self.ctx.counters.event("tcp_fast_retransmit")
        conn.wnd_raw_from_guest = seg.window
        conn.wnd_from_guest = window

    def _data_from_tap(self, conn: TcpConn, seg: TcpSegment, payload: memoryview, plen: int) -> None:
        """Guest payload and FIN: to the socket, as much as it takes."""
        if conn.state & GUEST_FIN:
            conn.need_ack = True  # retransmission after its FIN
            return
        expected = (conn.g_isn + 1 + conn.rcvd) & _M
        delta = (seg.seq - expected) & _M
        skip = 0
        if delta:
            if not delta & _NEG:
                self.ctx.counters.drop("tcp_out_of_order")
                conn.need_ack = True  # duplicate ACK: the guest fills the gap
                return
            skip = (_M + 1) - delta
            if skip >= plen and not (seg.flags & FIN and skip == plen):
                conn.need_ack = True  # all old
                return
        sent = 0
        if skip < plen:
            want = plen - skip
            try:
                sent = conn.sock.send(payload[skip:], socket.MSG_NOSIGNAL)
            except BlockingIOError:
                sent = 0
            except OSError:
                self._reset(conn)
                return
            conn.rcvd += sent
            conn.info_due = True
            if not conn.bulk and conn.rcvd >= BULK_BYTES:
                self._tune_bulk(conn)
            if sent < want:
                conn.sndbuf_full = True
                conn.ack_all = True
                self.ctx.counters.event("tcp_sndbuf_full")
                return
        if seg.flags & FIN:
            conn.state = next_state(conn.state, EV_GUEST_FIN)
            # With every byte already acknowledged by the peer, the FIN is
            # acknowledged without asking TCP_INFO (TCP_CRR closes).  The ACK
            # itself may wait a little (`_service`): the peer's own FIN
            # usually follows at once and carries it.
            if not _ack_guest_fin(conn):
                conn.info_due = True
            try:
                conn.sock.shutdown(socket.SHUT_WR)
            except OSError:
                pass

    def _rst_unknown(self, af: int, src: bytes, dst: bytes, seg: TcpSegment, plen: int) -> None:
        """RFC 9293 section 3.10.7.1: RST for a segment that matches no connection."""
        tpl = self._template(af, dst, src, seg.dport, seg.sport)
        if seg.flags & ACK:
            frame = build_control(tpl, seg.ack, 0, RST, 0)
        else:
            seglen = plen + (1 if seg.flags & SYN else 0) + (1 if seg.flags & FIN else 0)
            frame = build_control(tpl, 0, seg.seq + seglen, RST | ACK, 0)
        self.ctx.send(frame)

    # host -> guest: connection setup ----------------------------------------------
    def listen_ready(self, lsock: socket.socket, target_port: int, now: float) -> None:
        """A -t listener is readable: accept up to ACCEPT_BATCH connections, SYN each to the guest."""
        ctx = self.ctx
        counters = ctx.counters
        for _ in range(ACCEPT_BATCH):
            try:
                sock, _peer = lsock.accept()
            except BlockingIOError:
                return
            except OSError as e:
                counters.drop("tcp_accept")
                if e.errno in (errno.EMFILE, errno.ENFILE):
                    # The connection stays queued and the listener readable: a
                    # level-triggered loop would retry (and fail) every turn.
                    counters.event("tcp_accept_backoff")
                    ctx.loop.suspend(lsock.fileno(), ACCEPT_BACKOFF_S)
                return
            if not self.accept_socket(sock, target_port, now):
                close_rst(sock)

    def accept_socket(self, sock: socket.socket, target_port: int, now: float) -> bool:
        """Take an accepted host connection towards the guest's `target_port` (SYN to the guest).

        True: the handler owns `sock` now.  False: refused (TCP disabled, no
        guest, family disabled, table full, key collision); the caller still
        owns `sock` and should reset it.  Used by `listen_ready` and by
        pasta's splice handler for non-loopback peers.
        """
        ctx = self.ctx
        counters = ctx.counters
        sock.setblocking(False)
        if not self._enabled:
            counters.drop("tcp_disabled")
            return False
        if ctx.tap is None:
            counters.drop("no_guest")
            return False
        try:
            peer = sock.getpeername()
            local = sock.getsockname()
        except OSError:
            counters.drop("tcp_accept")
            return False
        if sock.family == socket.AF_INET6:
            af, paddr = nat.unmap_v4(socket.inet_pton(socket.AF_INET6, peer[0]))
            _, laddr = nat.unmap_v4(socket.inet_pton(socket.AF_INET6, local[0]))
        else:
            af = 4
            paddr = socket.inet_pton(socket.AF_INET, peer[0])
            laddr = socket.inet_pton(socket.AF_INET, local[0])
        if (ctx.conf.ip4 if af == 4 else ctx.conf.ip6) is None:
            counters.drop("tcp_family_disabled")
            return False
        if len(self.flows) >= self.flows.capacity:
            counters.drop("tcp_flow_table_full")
            return False
        gsrc = nat.host_src_to_guest(ctx.conf, af, paddr, self.local_addrs)
        gdst = nat.host_dst_to_guest(ctx.guest, af, laddr, self.local_addrs)
        key: FlowKey = (af, gdst, target_port, gsrc, int(peer[1]))
        if key in self.flows:
            counters.drop("tcp_flow_collision")
            return False
        self._tune(sock)
        tpl = self._template(af, gsrc, gdst, key[4], target_port)
        conn = TcpConn(key, sock, tpl, now, self._fresh_sndbuf)
        conn.state = next_state(0, EV_SOCK_ACCEPTED)
        conn.mss = self._our_mss4 if af == 4 else self._our_mss6
        info = self._sock_ready(conn)
        if not self._register(conn):
            return True  # already closed with a reset
        counters.event("tcp_open_from_sock")
        opts = syn_options(self._our_mss4 if af == 4 else self._our_mss6, OUR_WS)
        ctx.send(build_control(tpl, conn.isn, 0, SYN, self._initial_window(conn, info), opts))
        conn.rto_deadline = now + conn.rto
        self._arm(conn, conn.rto_deadline)
        return True

    def _tune(self, sock: socket.socket) -> None:
        """Host socket options for the translated data path (see the module doc).

        TCP_NODELAY: the guest already decided segment boundaries (its own
        Nagle ran); delaying them again would add an RTT to request/response.
        SO_SNDBUF: the window we announce is capped by free send buffer, so a
        guest honouring it never fills the buffer and the kernel's autotuning
        (which grows it only after the buffer ran full) never starts; asking
        for half of tcp_wmem's maximum gives the size autotuning would reach.
        SO_TIMESTAMPING TX_ACK: an error-queue event when the peer ACKs each
        send's last byte, so we reflect ACKs as they happen, not on a timer.
        The last two only matter once the guest sends in bulk and cost two
        system calls per connection, plus an error-queue wake-up per send:
        they wait for BULK_BYTES of guest data (`_tune_bulk`), so short
        request/response flows (TCP_CRR) never pay for them.
        """
        tune_new(sock)

    def _tune_bulk(self, conn: TcpConn) -> None:
        """The guest sends in bulk: full send buffer and ACK events (see `_tune`)."""
        conn.bulk = True
        conn.sndbuf = 0  # re-read SO_MEMINFO: the buffer grows now
        tune_bulk(conn.sock, self._sndbuf, self._ack_events)

    def _register(self, conn: TcpConn) -> bool:
        """Enter a new flow in the table and the inner epoll; False (socket reset) on failure."""
        if not self.flows.add(conn.key, conn):
            self.ctx.counters.drop("tcp_flow_table_full")
            close_rst(conn.sock)
            return False
        try:
            self._ep.register(conn.fd, _EP_MASK)
        except OSError:
            self.ctx.counters.drop("tcp_epoll")
            self.flows.remove(conn.key)
            close_rst(conn.sock)
            return False
        self._by_fd[conn.fd] = conn
        return True

    def _sock_ready(self, conn: TcpConn) -> bytes:
        """A connected socket: set the peek offset, note the TCP_INFO baseline (returned)."""
        if not set_peek_off(conn.sock):
            conn.peek_off = False
            self.ctx.counters.event("tcp_no_peek_off")
        info = tcp_info(conn.sock)
        conn.acked_base = info_bytes_acked(info)
        return info

    def _connected_now(self, conn: TcpConn) -> int:
        """Did the handshake already finish (a local or veth peer answers inside connect())?

        Answering the guest's SYN in this turn instead of at the next epoll
        wake-up saves one loop turn per connection (TCP_CRR).  A zero-timeout
        poll() sees writable (or an error) once the connect has completed.
        Returns the poll events (0: still in progress).
        """
        return poll_out(self._poll_out, conn.fd)

    def _connect_done(self, conn: TcpConn, now: float, *, clean: bool = False) -> None:
        """The host connect() finished: SYN-ACK to the guest, or RST on failure.

        `clean`: poll() reported writable without error or hang-up, so
        SO_ERROR has nothing to tell (one system call less per connection).
        """
        err = 0
        if not clean:
            try:
                err = conn.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            except OSError as e:
                err = e.errno or errno.EIO
        if err:
            self.ctx.counters.event("tcp_connect_failed")
            frame = build_control(conn.tpl, 0, conn.g_isn + 1, RST | ACK, 0)
            self.ctx.send(frame)
            self._close(conn, rst=False)
            return
        info = self._sock_ready(conn)
        conn.state = next_state(conn.state, EV_CONNECTED)
        self._send_synack(conn, info)
        conn.rto_deadline = now + conn.rto
        self._arm(conn, conn.rto_deadline)

    def _initial_window(self, conn: TcpConn, info: bytes | None = None) -> int:
        """Window for our SYN/SYN-ACK (never scaled): the peer's, at most 65535."""
        if info is None:
            info = tcp_info(conn.sock)
        wnd = info_snd_wnd(info)
        if wnd < 0:
            return SND_WND_FALLBACK
        return min(wnd, 65535) if wnd else 65535

    def _send_synack(self, conn: TcpConn, info: bytes | None = None) -> None:
        ours = self._our_mss4 if conn.af == 4 else self._our_mss6
        opts = syn_options(ours, conn.ws_to_guest if conn.ws_to_guest else -1)
        wnd = self._initial_window(conn, info)
        ack = (conn.g_isn + 1) & _M
        self.ctx.send(build_control(conn.tpl, conn.isn, ack, SYN | ACK, wnd, opts))
        conn.ack_sent = ack
        conn.wnd_raw = conn.wnd_sent = wnd >> conn.ws_to_guest

    def _send_syn(self, conn: TcpConn) -> None:
        ours = self._our_mss4 if conn.af == 4 else self._our_mss6
        opts = syn_options(ours, OUR_WS)
        self.ctx.send(build_control(conn.tpl, conn.isn, 0, SYN, self._initial_window(conn), opts))

    # host socket events ---------------------------------------------------------
    def _on_epoll(self, _mask: int, now: float) -> None:
        try:
            events = self._ep.poll(0, EPOLL_BATCH)
        except OSError:
            return
        by_fd = self._by_fd
        for fd, ev in events:
            conn = by_fd.get(fd)
            if conn is None:
                continue
            conn.last_activity = now
            if conn.state & CONNECTING:
                if ev & (_EP_OUT | _EP_ERR | _EP_HUP):
                    self._connect_done(conn, now)
                if conn.closed:
                    continue
            elif ev & _EP_ERR:
                # Without a hang-up this is an ACK notification (SO_TIMESTAMPING
                # TX_ACK): TCP reports its own errors (reset, timeout) with
                # EPOLLHUP, as tcp_done() shuts the socket down both ways.  The
                # queue must be emptied every time: notifications are charged
                # to the receive buffer, and once it is full the kernel drops
                # them silently, and with them our wake-ups.
                conn.info_due = True
                self._drain_errqueue(conn)
                if ev & (_EP_HUP | _EP_RDHUP):
                    try:
                        err = conn.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                    except OSError as e:
                        err = e.errno or errno.EIO
                    if err:
                        self.ctx.counters.event("tcp_sock_error")
                        self._reset(conn)
                        continue
            if ev & (_EP_IN | _EP_RDHUP | _EP_HUP):
                conn.sock_pending = True
                # The peer's data carries its ACK: reflect it in the frames we
                # build, unless it has nothing left to acknowledge and the window
                # we announced is not small enough to hold the guest back (a
                # close after request/response: one TCP_INFO less).
                if conn.ack_off < conn.rcvd or (conn.wnd_raw << conn.ws_to_guest) < WINDOW_SMALL:
                    conn.info_due = True
                if ev & (_EP_RDHUP | _EP_HUP):
                    conn.rdhup = True
            if ev & _EP_OUT and conn.sndbuf_full:
                conn.sndbuf_full = False
                conn.nudge = True
            self._mark(conn)

    def _drain_errqueue(self, conn: TcpConn) -> None:
        """Discard queued ACK notifications, at most a batch per turn (tcp_kernel.drain_errqueue)."""
        if drain_errqueue(conn.sock, self._errbuf):
            return
        # More than a batch: finish next turn (the epoll edge is spent).
        self._errq_more.append(conn)
        self._mark(conn)

    # per-turn work ----------------------------------------------------------------
    def _mark(self, conn: TcpConn) -> None:
        """Queue `conn` for this turn's deferred `_post`."""
        if not conn.dirty:
            conn.dirty = True
            self._dirty.append(conn)
            if len(self._dirty) == 1:
                self.ctx.loop.defer(self._post)

    def _post(self, now: float) -> None:
        if self._errq_more:
            more = self._errq_more
            self._errq_more = []
            for conn in more:
                if not conn.closed:
                    self._drain_errqueue(conn)
        dirty = self._dirty
        self._dirty = []
        for conn in dirty:
            conn.dirty = False
            if not conn.closed:
                self._service(conn, now)

    def _service(self, conn: TcpConn, now: float) -> None:
        """All socket I/O of one flow for this turn: drop, ACK reflection, data, FIN, close."""
        if conn.to_drop:
            if not self._drop_acked(conn):
                return
        state = conn.state
        if not state & ESTABLISHED:
            return
        if conn.retransmit:
            self._rewind(conn)
        # A pure ACK needs fresh TCP_INFO only while the peer still owes an
        # acknowledgement (ack_off < rcvd): otherwise its number cannot move.
        if conn.info_due or conn.nudge or (conn.need_ack and conn.ack_off < conn.rcvd):
            conn.info_due = False
            self._update_ack(conn)
            if conn.closed:
                return
        if conn.sock_pending and not conn.state & FIN_SENT:
            self._push(conn, now)
            if conn.closed:
                return
        ack = conn.ack_num()
        if conn.need_ack or conn.nudge or _window_news(conn):
            copies = 1
            if conn.nudge:
                copies = DUP_ACK_THRESHOLD + (0 if ack == conn.ack_sent else 1)
            self._send_ack(conn, copies)
        elif ack != conn.ack_sent:
            small = conn.ack_sent >= 0 and ((ack - conn.ack_sent) & _M) < conn.mss
            # A guest FIN's ACK waits too while our FIN is still to come (it
            # will carry the ACK: one frame less per close); once ours is
            # out, the flow may end this turn, so the last ACK goes now.
            if small and not (conn.state & GUEST_FIN and conn.state & FIN_SENT):
                self._delay_ack(conn, now)
            else:
                self._send_ack(conn)
        conn.need_ack = False
        conn.nudge = False
        state = conn.state
        if state & GUEST_FIN_ACKED and state & FIN_ACKED:
            self.ctx.counters.event("tcp_closed")
            self._close(conn, rst=False)
            return
        if conn.rcvd > conn.ack_off or (state & GUEST_FIN and not state & GUEST_FIN_ACKED):
            self._want_poll(conn, now)
        elif conn.wnd_raw == 0 and not state & GUEST_FIN:
            self._want_poll(conn, now)
        if conn.rto_deadline:
            self._arm(conn, conn.rto_deadline)

    def _drop_acked(self, conn: TcpConn) -> bool:
        """Discard the bytes the guest acknowledged from the socket (MSG_TRUNC: no copy)."""
        scratch = self._scratch_buf()
        n = conn.to_drop
        sock = conn.sock
        while n > 0:
            chunk = min(n, len(scratch))
            try:
                got = sock.recv_into(scratch, chunk, socket.MSG_TRUNC)
            except BlockingIOError:
                got = 0
            except OSError:
                self._reset(conn)
                return False
            if got <= 0:
                break
            n -= got
        if n:
            # The kernel holds less than the guest acked: it acked data we never sent.
            self.ctx.counters.drop("tcp_drop_short")
        conn.to_drop = 0
        return True

    def _rewind(self, conn: TcpConn) -> None:
        """Retransmit from the guest's last ACK: peek offset back to the socket's head."""
        conn.retransmit = False
        conn.dup_acks = 0
        conn.sent = conn.acked
        if conn.state & FIN_SENT and not conn.state & FIN_ACKED:
            # Resent after the data; fin_off still accepts late ACKs (tcp_state: EV_FIN_RESEND).
            conn.state = next_state(conn.state, EV_FIN_RESEND)
        if conn.peek_off and not set_peek_off(conn.sock):
            conn.peek_off = False
        conn.sock_pending = True
        self.ctx.counters.event("tcp_retransmit")

    def _update_ack(self, conn: TcpConn) -> None:
        """Reflect the peer: ACK what it acknowledged, announce its window (man page NOTES).

        The window is the peer's (tcpi_snd_wnd) as long as the socket's send
        buffer can hold it: its right edge is capped at what the socket has
        accepted plus the free send buffer (SO_MEMINFO: SO_SNDBUF minus the
        queued truesize, scaled by the observed payload/truesize ratio), so a
        guest honouring our window does not overrun `send()`.  When we are the
        limit (less than a third of the buffer free), a zero-timeout poll()
        for POLLOUT marks the socket SOCK_NOSPACE, the condition under which
        the kernel grows an autotuned send buffer on the next ACKs.
        """
        sock = conn.sock
        info = b"" if conn.no_tcpinfo else tcp_info(sock)
        if len(info) < TCP_INFO_LEN:
            if not conn.no_tcpinfo:
                conn.no_tcpinfo = True
                self.ctx.counters.event("tcp_snd_wnd_fallback")
            ack_off = conn.rcvd
            wnd = SND_WND_FALLBACK
        else:
            bytes_acked, snd_wnd = TI_ACKED_WND.unpack_from(info, TI_BYTES_ACKED_OFF)
            peer_acked = int(bytes_acked) - conn.acked_base
            ack_off = min(peer_acked, conn.rcvd)
            if conn.ack_all:
                # The socket refused part of a segment (see _data_from_tap): ACK
                # what it took, so duplicate ACKs point the guest at the hole.
                conn.ack_all = False
                ack_off = conn.rcvd
            wnd = int(snd_wnd)
            room = self._sndbuf_room(conn, conn.rcvd - peer_acked)
            if room >= 0:
                room += conn.rcvd - max(ack_off, conn.ack_off)
                if room < wnd:
                    wnd = room
        if ack_off > conn.ack_off:
            conn.ack_off = ack_off
        _ack_guest_fin(conn)
        raw = wnd >> conn.ws_to_guest
        conn.wnd_raw = raw if raw < 65535 else 65535

    def _sndbuf_room(self, conn: TcpConn, outq: int) -> int:
        """Payload bytes the send buffer can still take; -1 when unknown.

        With little unacknowledged (an eighth of the buffer) the exact
        queue size hardly matters: the last SO_SNDBUF seen and the unacked
        byte count answer without a system call (request/response traffic).
        """
        sndbuf_known = conn.sndbuf
        if sndbuf_known and outq * 8 < sndbuf_known:
            # Nearly empty: estimate the queue from the bytes in it.
            ratio = conn.truesize_ratio
            return int(sndbuf_known * ratio) - max(outq, 0)
        mem = meminfo(conn.sock)
        if mem is None:
            return -1
        sndbuf, queued = mem
        conn.sndbuf = sndbuf
        if not conn.bulk and not self._fresh_sndbuf:
            self._fresh_sndbuf = sndbuf
        if queued > 0 and outq > 0:
            # Remember the last measurement: an empty queue says nothing, and
            # falling back to the default would make the window jump around.
            ratio = min(TRUESIZE_RATIO_MAX, max(TRUESIZE_RATIO_MIN, outq / queued))
            conn.truesize_ratio = ratio
        else:
            ratio = conn.truesize_ratio
        free = sndbuf - queued
        if free * 2 < queued:
            poll_out(self._poll_out, conn.fd)  # marks SOCK_NOSPACE
        return int(free * ratio) if free > 0 else 0

    def _send_ack(self, conn: TcpConn, copies: int = 1) -> None:
        ack = conn.ack_num()
        frame = build_control(conn.tpl, conn.seq_nxt(), ack, ACK, conn.wnd_raw)
        for _ in range(copies):
            self.ctx.send(frame)
        conn.ack_sent = ack
        conn.wnd_sent = conn.wnd_raw

    def _push(self, conn: TcpConn, now: float) -> None:
        """Peek new socket data into frame slots and queue them, within the guest's window."""
        tap = self.ctx.tap
        if tap is None:
            return
        offload = tap.offload
        ring = self._ring_for(offload)
        in_flight = conn.sent - conn.acked
        avail = conn.wnd_from_guest - in_flight
        if avail <= 0:
            if conn.wnd_from_guest == 0 and not conn.rto_deadline:
                conn.rto_deadline = now + conn.rto  # zero-window probe
            return
        if not conn.peek_off:
            room = SCRATCH_BYTES - in_flight
            if room <= 0:
                return
            avail = min(avail, room)
        tpl = conn.tpl
        if tpl.guest_mac is not self.ctx.guest.mac:
            tpl = conn.tpl = self._retemplate(conn)
        mss = conn.mss
        cap = gso_payload_cap(conn.af, mss) if offload else mss
        slots = ring.slots
        first = ring.used
        nslots = len(slots)
        if first >= nslots:
            self._starve(conn, now)
            return
        views = self._views
        views.clear()
        hl = tpl.hdr_len
        want = 0
        i = first
        while avail > 0 and i < nslots:
            n = cap if avail >= cap else avail
            views.append(slots[i][hl : hl + n])
            i += 1
            avail -= n
            want += n
        sock = conn.sock
        try:
            if conn.peek_off:
                if len(views) == 1:
                    got = sock.recv_into(views[0], want, socket.MSG_PEEK)
                else:
                    got = sock.recvmsg_into(views, 0, socket.MSG_PEEK)[0]
            else:
                scratch = self._scratch_buf()
                views.insert(0, memoryview(scratch)[:in_flight])
                got = sock.recvmsg_into(views, 0, socket.MSG_PEEK)[0] - in_flight
                if got == 0 and not conn.rdhup:
                    got = -1
        except BlockingIOError:
            got = -1
        except OSError:
            views.clear()
            self._reset(conn)
            return
        views.clear()
        if got < 0:
            conn.sock_pending = False
            return
        if got == 0:
            conn.sock_pending = False
            conn.state = next_state(conn.state, EV_SOCK_EOF)
            self._send_fin(conn, now)
            return
        seq = conn.isn + 1 + conn.sent
        ack = conn.ack_num()
        wnd = conn.wnd_raw
        l4 = tpl.l4_off
        send = self.ctx.send
        send_gso = self.ctx.send_gso
        gso_type = GSO_TCPV4 if conn.af == 4 else GSO_TCPV6
        remaining = got
        i = first
        while remaining > 0:
            n = cap if remaining > cap else remaining
            slot = slots[i]
            remaining -= n
            flen = tpl.fill(slot, n, seq & _M, ack, ACK if remaining else ACK | PSH, wnd, offload)
            if offload:
                send_gso(
                    slot[:flen],
                    csum_start=l4,
                    csum_offset=TCP_CSUM_OFF,
                    gso_type=gso_type if n > mss else GSO_NONE,
                    gso_size=mss,
                    hdr_len=hl,
                )
            else:
                send(slot[:flen])
            seq += n
            i += 1
        ring.used = i
        self.ctx.loop.defer(self._rewind_ring)
        conn.sent += got
        if conn.sent > conn.snd_max:
            conn.snd_max = conn.sent
        conn.ack_sent = ack
        conn.wnd_sent = wnd
        if not conn.rto_deadline:
            conn.rto_deadline = now + conn.rto
        if got < want:
            conn.sock_pending = conn.rdhup  # peer closed: the next peek reads the EOF
            if conn.rdhup:
                self._push(conn, now)
        elif i >= nslots:
            self._starve(conn, now)

    def _send_fin(self, conn: TcpConn, now: float) -> None:
        """Host EOF and everything peeked: FIN to the guest after the last byte."""
        ack = conn.ack_num()
        frame = build_control(
            conn.tpl, conn.isn + 1 + conn.sent, ack, FIN | ACK, conn.wnd_raw
        )
        self.ctx.send(frame)
        conn.ack_sent = ack
        conn.wnd_sent = conn.wnd_raw
        conn.fin_off = conn.sent
        conn.state = next_state(conn.state, EV_FIN_SENT)
        if conn.sent > conn.snd_max:
            conn.snd_max = conn.sent
        if not conn.rto_deadline:
            conn.rto_deadline = now + conn.rto

    def _send_rst_for(self, conn: TcpConn, seq: int) -> None:
        self.ctx.send(build_control(conn.tpl, seq, 0, RST, 0))

    def _reset(self, conn: TcpConn) -> None:
        """Abort: RST to the guest, RST to the host peer, forget the flow."""
        if conn.closed:
            return
        if conn.state & CONNECTING:
            frame = build_control(conn.tpl, 0, conn.g_isn + 1, RST | ACK, 0)
        elif conn.state & SYN_SENT:
            frame = build_control(conn.tpl, conn.isn + 1, 0, RST, 0)
        else:
            frame = build_control(conn.tpl, conn.seq_nxt(), conn.ack_num(), RST | ACK, 0)
        self.ctx.send(frame)
        self.ctx.counters.event("tcp_reset")
        self._close(conn, rst=True)

    def _close(self, conn: TcpConn, *, rst: bool) -> None:
        """Close the socket (with RST when `rst`), cancel timers, forget the flow."""
        if conn.closed:
            return
        conn.closed = True
        # No EPOLL_CTL_DEL: closing the (never duplicated) descriptor removes
        # it from the inner epoll, one system call less per connection.
        if rst:
            close_rst(conn.sock)
        else:
            conn.sock.close()
        if conn.timer is not None:
            self.ctx.loop.cancel(conn.timer)
            conn.timer = None
        conn.timer_cb = None
        self.flows.remove(conn.key)
        self._by_fd.pop(conn.fd, None)

    # timers -------------------------------------------------------------------
    def _arm(self, conn: TcpConn, deadline: float) -> None:
        """Make sure the flow's timer fires no later than `deadline` (lazy: one Timer per flow)."""
        timer = conn.timer
        if timer is not None:
            if not timer.cancelled and timer.deadline <= deadline:
                return
            self.ctx.loop.cancel(timer)
        cb = conn.timer_cb
        if cb is None:
            cb = conn.timer_cb = functools.partial(self._on_timer, conn)
        conn.timer = self.ctx.loop.call_at(deadline, cb)

    def _on_timer(self, conn: TcpConn, now: float) -> None:
        conn.timer = None
        if conn.closed:
            return
        state = conn.state
        counters = self.ctx.counters
        if state & HANDSHAKE:
            if now >= conn.syn_deadline:
                counters.event("tcp_syn_timeout")
                self._reset(conn)
                return
            if state & (SYNACK_SENT | SYN_SENT) and conn.rto_deadline and now >= conn.rto_deadline:
                if state & SYNACK_SENT:
                    self._send_synack(conn)
                else:
                    self._send_syn(conn)
                conn.rto = min(conn.rto * 2, RTO_MAX_S)
                conn.rto_deadline = now + conn.rto
            nxt = conn.syn_deadline
            if conn.rto_deadline and conn.rto_deadline < nxt:
                nxt = conn.rto_deadline
            self._arm(conn, nxt)
            return
        idle = FIN_TIMEOUT_S if state & (GUEST_FIN | SOCK_EOF) else ACT_TIMEOUT_S
        if now - conn.last_activity >= idle:
            counters.event("tcp_idle_timeout")
            self._reset(conn)
            return
        if conn.rto_deadline and now >= conn.rto_deadline:
            outstanding = conn.snd_max > conn.acked or (state & FIN_SENT and not state & FIN_ACKED)
            if outstanding:
                conn.retries += 1
                if conn.retries > MAX_RETRANS:
                    counters.event("tcp_retrans_timeout")
                    self._reset(conn)
                    return
                conn.rto = min(conn.rto * 2, RTO_MAX_S)
                conn.rto_deadline = now + conn.rto
                conn.retransmit = True
                self._mark(conn)
            elif conn.wnd_from_guest == 0 and conn.sock_pending:
                # Zero-window probe: an out-of-window ACK makes the guest announce its window.
                probe = build_control(
                    conn.tpl, (conn.seq_nxt() - 1) & _M, conn.ack_num(), ACK, conn.wnd_raw
                )
                self.ctx.send(probe)
                counters.event("tcp_window_probe")
                conn.rto = min(conn.rto * 2, RTO_MAX_S)
                conn.rto_deadline = now + conn.rto
            else:
                conn.rto_deadline = 0.0
        nxt = conn.last_activity + idle
        if conn.rto_deadline and conn.rto_deadline < nxt:
            nxt = conn.rto_deadline
        self._arm(conn, nxt)

    def _delay_ack(self, conn: TcpConn, now: float) -> None:
        """Hold a pure ACK for a small segment up to ACK_DELAY_S (RFC 9293 section 3.8.6.3).

        A request from the guest is usually answered by the peer within
        microseconds: the answer's data frame then carries the ACK, and the
        guest's stack handles one frame instead of two (TCP_RR).  Bulk data
        (a full MSS or more newly acknowledged) is never delayed.
        """
        if conn.in_delack:
            return
        conn.in_delack = True
        self._delack.append(conn)
        if self._delack_timer is None:
            self._delack_timer = self.ctx.loop.call_at(now + ACK_DELAY_S, self._on_delack)

    def _on_delack(self, _now: float) -> None:
        self._delack_timer = None
        conns = self._delack
        self._delack = []
        for conn in conns:
            conn.in_delack = False
            if not conn.closed and conn.ack_num() != conn.ack_sent:
                conn.need_ack = True
                self._mark(conn)

    def _want_poll(self, conn: TcpConn, now: float) -> None:
        """Re-read TCP_INFO in ACK_POLL_S: guest data waits for the peer's ACK, or window is 0."""
        if conn.in_poll:
            return
        conn.in_poll = True
        self._poll.append(conn)
        if self._poll_timer is None:
            self._poll_timer = self.ctx.loop.call_at(now + ACK_POLL_S, self._on_poll)

    def _on_poll(self, _now: float) -> None:
        self._poll_timer = None
        conns = self._poll
        self._poll = []
        for conn in conns:
            conn.in_poll = False
            if not conn.closed:
                conn.info_due = True
                self._mark(conn)

    def _starve(self, conn: TcpConn, now: float) -> None:
        """The frame ring is used up this turn: continue next turn."""
        self._starved.append(conn)
        if self._starved_timer is None:
            self._starved_timer = self.ctx.loop.call_at(now, self._on_starved)

    def _on_starved(self, _now: float) -> None:
        self._starved_timer = None
        conns = self._starved
        self._starved = []
        for conn in conns:
            if not conn.closed:
                self._mark(conn)

    # helpers --------------------------------------------------------------------
    def _ring_for(self, offload: bool) -> FrameRing:
        ring = self._ring
        if ring is None or ring.offload != offload:
            ring = self._ring = FrameRing(offload=offload, tap_mtu=self.ctx.conf.tap_mtu)
        return ring

    def _rewind_ring(self, _now: float) -> None:
        """Deferred after the tap flush: the slots queued this turn are free again."""
        if self._ring is not None:
            self._ring.rewind()

    def _scratch_buf(self) -> bytearray:
        scratch = self._scratch
        if scratch is None:
            scratch = self._scratch = bytearray(SCRATCH_BYTES)
        return scratch

    def _template(self, af: int, src: bytes, dst: bytes, sport: int, dport: int) -> FrameTemplate:
        ctx = self.ctx
        return FrameTemplate(af, ctx.guest.mac, ctx.conf.our_mac, src, dst, sport, dport)

    def _retemplate(self, conn: TcpConn) -> FrameTemplate:
        """The guest's MAC changed since the flow began: rebuild its template."""
        af, gaddr, gport, raddr, rport = conn.key
        return self._template(af, raddr, gaddr, rport, gport)


def _ack_guest_fin(conn: TcpConn) -> bool:
    """A guest FIN counts as acknowledged once the peer acknowledged all the guest's data; True if so."""
    state = conn.state
    if not state & GUEST_FIN or conn.ack_off < conn.rcvd:
        return False
    if not state & GUEST_FIN_ACKED:
        conn.state = next_state(state, EV_GUEST_FIN_ACKED)
    return True


def _window_news(conn: TcpConn) -> bool:
    """Is a window change alone (same ACK number) worth a pure ACK?

    Only a window that closes to zero, reopens, or grows by at least a
    quarter (and two MSS): the send-buffer estimate moves a little every
    turn, and a guest receiving several ACKs with the same number, whose
    windows differ, can count them as duplicates once its stack coalesces
    them (Linux merges queued pure ACKs), then retransmits for nothing.
    A smaller shrink waits for the next ACK that moves anyway.
    """
    raw = conn.wnd_raw
    sent = conn.wnd_sent
    if raw == sent:
        return False
    if raw == 0 or sent <= 0:
        return True
    grow = (raw - sent) << conn.ws_to_guest
    return grow >= 2 * conn.mss and grow * 4 >= sent << conn.ws_to_guest


class _RandomPool:
    """Random 32-bit numbers from the kernel's CSPRNG, fetched in blocks (one getrandom per 1024 ISNs)."""

    __slots__ = ("buf", "off")

    def __init__(self) -> None:
        self.buf = b""
        self.off = 0

    def u32(self) -> int:
        off = self.off
        if off + 4 > len(self.buf):
            self.buf = os.urandom(RANDOM_POOL_BYTES)
            off = 0
        self.off = off + 4
        return int.from_bytes(self.buf[off : off + 4], "big")


_RANDOM: Final = _RandomPool()
