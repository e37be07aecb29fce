"""TCP translation, the driver: guest segments <-> host stream sockets, without buffering data.

Each TCP connection of the guest is mirrored by one host socket.  We run no
TCP stack of our own: the host kernel does congestion control, retransmission
to the real peer and reassembly; we only translate, and reflect one side's
observed parameters to the other (man page DESCRIPTION).  The rules of that
translation (what to ACK, which window, when to retransmit, when to close)
are in `tcp_decide`, sans-IO; the state bits in `tcp_state`; the socket
options in `tcp_kernel`; frame templates and slots in `tcp_frames`.  This
module only carries out what the decisions return:

    guest --segment--> from_tap --send()--> socket --> real peer
       ^                 ACK = what the *peer* acked (TCP_INFO tcpi_bytes_acked)
       |                 window = peer's window (tcpi_snd_wnd), capped by free send buffer
       |
    guest <--frames--  _push <--recvmsg_into(MSG_PEEK, SO_PEEK_OFF)-- socket <-- real peer
                         data stays queued in the socket until the guest ACKs it;
                         a guest ACK drops that many bytes (recv MSG_TRUNC)

Host to guest (`_push`).  Data is peeked, at the socket's peek offset
(SO_PEEK_OFF: the kernel advances it on peeks and moves it back as we drop
bytes), straight into the payload area of preallocated frame slots
(`tcp_frames.FrameRing`), one scatter `recvmsg_into` for the whole burst, as
much as `tcp_decide.push_budget` allows.  With an offloading tap a slot
holds up to ~64 KiB, sent with `send_gso` (partial checksum, gso_size =
MSS); otherwise MSS-sized frames with full checksums.  Retransmission is a
rewind: peek offset back to 0 (= the guest's last ACK).  Without
SO_PEEK_OFF (Linux < 6.10 for TCP) we peek from the start each time, the
bytes in flight going into a scratch buffer (SCRATCH_BYTES).

What runs when.  A guest segment is handled inline in `from_tap`: a SYN
creates the socket and starts connect() (a connect that completes at once,
local peers, is answered with the SYN-ACK in the same call), payload goes to
send() and a FIN to shutdown(SHUT_WR) right away, and the RSTs (unknown
flow, bad handshake ACK, send error) and a SYN-ACK resent for a duplicate
SYN leave at once.  What the guest's ACKs and the socket's news ask for is
deferred: the segment or socket event only updates the flow's numbers and
marks it dirty, and once per loop turn `_post` runs, per dirty flow, the
MSG_TRUNC drop, the rewind, TCP_INFO (and SO_MEMINFO), the peek and frames,
the pure ACK and FIN, and the close: a burst of guest ACKs costs one drop,
one peek and one TCP_INFO per flow.  A pure ACK that asks nothing of that
pass (the handshake ACK, an ACK of nothing new) is not marked at all, and
the ACK of our FIN that ends a flow closes it inline (`tcp_decide.quiet_ack`;
TCP_CRR: one pass in four less).  Host socket events are read from an
inner edge-triggered epoll whose descriptor is the only thing registered
with the loop (level triggering would spin on data waiting for the guest's
ACK); a connect() completing, an error-queue drain (SO_TIMESTAMPING TX_ACK
notifications of the peer's ACKs) and a reset on a socket error run inline
there, the rest is marked, except a writable edge nothing waits for.  Timers: one per flow (`tcp_decide.on_timer`),
and three handler-wide lists (delayed ACKs, TCP_INFO polls, flows the frame
ring starved) in `tcp_timers`.  Accepting `-t` connections: `tcp_accept`.

Bounds: the flow table (FlowTable capacity; full -> RST/refuse and count),
ACCEPT_BATCH accepts and EPOLL_BATCH socket events per wake-up, the frame
ring per turn.  Not implemented (man page LIMITATIONS): SACK, timestamps
(PAWS/RTTM); urgent data is passed as ordinary data.
"""

from __future__ import annotations

import errno
import functools
import mmap
import os
import select
import socket
from collections.abc import Callable, Set
from typing import Final

from passt.buffers import lazy_buffer
from passt.context import Context
from passt.flows import tcp_decide as d
from passt.flows.outbound import Outbound
from passt.flows.sockets import SocketFactory, close_rst
from passt.flows.table import FLOW_MAX, FlowTable
from passt.flows.tcp_decide import (
    E_ACKS,
    E_CLOSE,
    E_DELAY,
    E_POLL,
    SCRATCH_BYTES,
    SYN_TIMEOUT_S,
    TcpFlow,
    ack_from_guest,
    service_plan,
    turn_end,
)
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
from passt.flows.tcp_open import (
    ACCEPT_BACKOFF_S,
    ACCEPT_BATCH,
    accept_socket,
    listen_ready,
    new_from_tap,
)
from passt.flows.tcp_state import CONNECTING, ESTABLISHED, HANDSHAKE
from passt.flows.tcp_timers import TcpTimers
from passt.loop import EVENT_READ, Timer
from passt.tap.base import GSO_NONE, GSO_TCPV4, GSO_TCPV6
from passt.wire.errors import ParseError
from passt.wire.tcp import ACK, FIN, PSH, RST, SYN, TCP_CSUM_OFF, TcpSegment, parse_tcp, syn_options

__all__ = ["ACCEPT_BACKOFF_S", "ACCEPT_BATCH", "SYN_TIMEOUT_S", "FlowKey", "TcpConn", "TcpHandler"]

FlowKey = tuple[int, bytes, int, bytes, int]

EPOLL_BATCH: Final = 256
#: Bytes of randomness fetched at once for initial sequence numbers.
RANDOM_POOL_BYTES: Final = 4096

_M: Final = 0xFFFFFFFF

_EP_IN: Final = select.EPOLLIN
_EP_OUT: Final = select.EPOLLOUT
_EP_ERR: Final = select.EPOLLERR
_EP_HUP: Final = select.EPOLLHUP
_EP_RDHUP: Final = select.EPOLLRDHUP
_EP_MASK: Final = _EP_IN | _EP_OUT | _EP_RDHUP | select.EPOLLET


class TcpConn(TcpFlow):
    """One translated connection: the decisions' numbers (`TcpFlow`) plus socket, template, timer."""

    __slots__ = ("key", "sock", "fd", "tpl", "closed", "in_delack", "dirty", "in_poll", "timer", "timer_cb")

    def __init__(self, key: FlowKey, sock: socket.socket, tpl: FrameTemplate, now: float, sndbuf: int = 0) -> None:
        super().__init__(key[0], _RANDOM.u32(), now, sndbuf)
        #: (af, guest address, guest port, remote address as the guest sees it, remote port).
        self.key = key
        self.sock = sock
        self.fd = sock.fileno()
        self.tpl = tpl
        #: Set once, by `TcpHandler._close`.
        self.closed = False
        #: Waiting in the handler's delayed-ACK list / dirty list / TCP_INFO poll list.
        self.in_delack = False
        self.dirty = False
        self.in_poll = False
        self.timer: Timer | None = None
        self.timer_cb: Callable[[float], None] | None = None


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
        #: less per connection; see `tcp_decide.room_estimate`).
        self._fresh_sndbuf = 0
        #: Ask the kernel to report peer ACKs on the error queue (SO_TIMESTAMPING TX_ACK).
        self._ack_events = ack_events
        self.flows: FlowTable[FlowKey, TcpConn] = FlowTable(capacity)
        self._by_fd: dict[int, TcpConn] = {}
        self._ep = select.epoll()
        ctx.loop.register(self._ep.fileno(), EVENT_READ, self._on_epoll)
        self._dirty: list[TcpConn] = []
        self._timers = TcpTimers(ctx.loop, self._mark)
        self._ring: FrameRing | None = None
        self._scratch: mmap.mmap | None = None
        self._views: list[memoryview] = []
        self._poll_out = select.poll()
        #: Landing place for error-queue reads (OPT_TSONLY: no payload comes back).
        self._errbuf = bytearray(1)
        #: Flows whose error queue held more than a batch this turn.
        self._errq_more: list[TcpConn] = []
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

    def listen_ready(self, lsock: socket.socket, target_port: int, now: float) -> None:
        """A -t listener is readable: accept up to ACCEPT_BATCH connections, SYN each to the guest."""
        listen_ready(self, lsock, target_port, now)

    def accept_socket(self, sock: socket.socket, target_port: int, now: float) -> bool:
        """Take an accepted host connection towards the guest's `target_port` (SYN to the guest).

        True: the handler owns `sock` now.  False: refused (TCP disabled, no
        guest, family disabled, table full, key collision); the caller still
        owns `sock` and should reset it.  Used by `listen_ready` and by
        pasta's splice handler for non-loopback peers.
        """
        return accept_socket(self, sock, target_port, now)

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
        plen = len(l4) - seg.hdr_len
        if conn is None:
            new_from_tap(self, af, bytes(src), bytes(dst), seg, plen, now)
            return
        conn.last_activity = now
        flags = seg.flags
        if flags & RST:
            counters.event("tcp_rst_from_guest")
            self._close(conn, rst=True)
            return
        if conn.state & HANDSHAKE:
            if self._handshake_from_tap(conn, seg):
                return
        elif flags & SYN:
            d.synchronized_syn(conn)
            self._mark(conn)
            return
        if not flags & ACK:
            counters.drop("tcp_no_ack")
            return
        r = ack_from_guest(conn, seg.seq, seg.ack, seg.window, flags, plen, now)
        if r:
            if r & d.A_UNSENT:
                counters.drop("tcp_ack_unsent")
            else:
                counters.event("tcp_fast_retransmit")
        if plen or flags & FIN:
            skip = d.data_from_guest(conn, seg.seq, flags, plen)
            if skip >= 0:
                # Written inline (one call less per data segment): the new bytes to send().
                want = plen - skip
                sent = 0
                if want:
                    try:
                        sent = conn.sock.send(l4[seg.hdr_len + skip :], socket.MSG_NOSIGNAL)
                    except BlockingIOError:
                        sent = 0
                    except OSError:
                        self._reset(conn)
                        return
                r = d.data_taken(conn, want, sent, flags & FIN)
                if r:
                    self._data_taken(conn, r)
            elif skip == d.D_OUT_OF_ORDER:
                counters.drop("tcp_out_of_order")
        elif not conn.dirty:
            # A pure ACK: most ask nothing of this turn's service (the
            # handshake ACK, an ACK of nothing new), and the last one of a
            # close asks only for the close (tcp_decide.quiet_ack).
            q = d.quiet_ack(conn)
            if q == d.Q_NONE:
                if conn.rto_deadline:
                    self._arm(conn, conn.rto_deadline)
                return
            if q == d.Q_CLOSE:
                counters.event("tcp_closed")
                self._close(conn, rst=False)
                return
        self._mark(conn)

    def _data_taken(self, conn: TcpConn, r: int) -> None:
        """Carry out `tcp_decide.data_taken`'s bits: bulk options, a short send counted, SHUT_WR."""
        if r & d.T_TUNE_BULK:
            tune_bulk(conn.sock, self._sndbuf, self._ack_events)
        if r & d.T_SNDBUF_FULL:
            self.ctx.counters.event("tcp_sndbuf_full")
        if r & d.T_SHUTDOWN:
            try:
                conn.sock.shutdown(socket.SHUT_WR)
            except OSError:
                pass

    def _handshake_from_tap(self, conn: TcpConn, seg: TcpSegment) -> bool:
        """Segments during the handshake (tcp_decide.handshake_segment); True: nothing more to do."""
        r = d.handshake_segment(conn, seg, self._our_mss4 if conn.af == 4 else self._our_mss6)
        counters = self.ctx.counters
        if r == d.HS_CONTINUE:
            counters.event("tcp_established")
            return False
        if r == d.HS_SYNACK:
            counters.event("tcp_established")
            self._mark(conn)
        elif r == d.HS_DUP_SYN:
            counters.event("tcp_dup_syn")
        elif r == d.HS_RESEND_SYNACK:
            counters.event("tcp_dup_syn")
            self._send_synack(conn)
        elif r == d.HS_BAD_ACK:
            counters.drop("tcp_bad_handshake_ack")
            self.ctx.send(build_control(conn.tpl, seg.ack, 0, RST, 0))
        else:
            counters.drop(_HS_DROPS[r])
        return True

    # connection setup ---------------------------------------------------------------
    def _tune(self, sock: socket.socket) -> None:
        """Host socket options for the translated data path (tcp_kernel.tune_new).

        TCP_NODELAY: the guest already decided segment boundaries (its own
        Nagle ran); delaying them again would add an RTT to request/response.
        SO_SNDBUF (half of tcp_wmem's maximum: the window we announce is
        capped by free send buffer, so a guest honouring it never fills the
        buffer and the kernel's autotuning, which grows it only after it ran
        full, would leave it at ~64 KiB: seen, lock-step 34 KiB windows, 0.2-0.9
        Gbit/s) and SO_TIMESTAMPING TX_ACK (an error-queue event when the peer
        ACKs each send's last byte, so ACKs are reflected as they happen)
        wait for BULK_BYTES of guest data (`tcp_decide.data_taken`), so short
        request/response flows (TCP_CRR) never pay for them.  An ACK_POLL_S
        poll stays as a safety net (notifications are charged to the receive
        buffer and dropped when it is full).
        """
        tune_new(sock)

    def _new_conn(self, key: FlowKey, sock: socket.socket, tpl: FrameTemplate, now: float) -> TcpConn:
        return TcpConn(key, sock, tpl, now, self._fresh_sndbuf)

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
        """A connected socket: set the peek offset; returns TCP_INFO (the baseline for ACKs)."""
        if not set_peek_off(conn.sock):
            conn.peek_off = False
            self.ctx.counters.event("tcp_no_peek_off")
        return tcp_info(conn.sock)

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
            seq, ack, flags = d.rst_for(conn)
            self.ctx.send(build_control(conn.tpl, seq, ack, flags, 0))
            self._close(conn, rst=False)
            return
        info = self._sock_ready(conn)
        d.connected(conn, info_bytes_acked(info), now)
        self._send_synack(conn, info)
        self._arm(conn, conn.rto_deadline)

    def _send_synack(self, conn: TcpConn, info: bytes | None = None) -> None:
        ours = self._our_mss4 if conn.af == 4 else self._our_mss6
        opts = syn_options(ours, conn.ws_to_guest if conn.ws_to_guest else -1)
        wnd = d.initial_window(info_snd_wnd(tcp_info(conn.sock) if info is None else info))
        ack = d.synack_sent(conn, wnd)
        self.ctx.send(build_control(conn.tpl, conn.isn, ack, SYN | ACK, wnd, opts))

    def _send_syn(self, conn: TcpConn, info: bytes | None = None) -> None:
        opts = syn_options(self._our_mss4 if conn.af == 4 else self._our_mss6, d.OUR_WS)
        wnd = d.initial_window(info_snd_wnd(tcp_info(conn.sock) if info is None else info))
        self.ctx.send(build_control(conn.tpl, conn.isn, 0, SYN, wnd, opts))

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
                d.sock_readable(conn, bool(ev & (_EP_RDHUP | _EP_HUP)))
            elif not ev & _EP_ERR and not conn.sndbuf_full:
                # Writable only, and no short send() waits for it (the edge
                # after connect() or shutdown()): nothing for the service.
                continue
            if ev & _EP_OUT and conn.sndbuf_full:
                d.sock_writable(conn)
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
        plan = service_plan(conn)
        if not plan:
            if not conn.state & ESTABLISHED:
                return
        else:
            if plan & d.P_REWIND:
                if conn.peek_off and not set_peek_off(conn.sock):
                    conn.peek_off = False
                self.ctx.counters.event("tcp_retransmit")
            if plan & d.P_INFO:
                self._update_ack(conn)
                if conn.closed:
                    return
            if plan & d.P_PUSH:
                self._push(conn, now)
                if conn.closed:
                    return
        r = turn_end(conn)
        if r:
            copies = r & E_ACKS
            if copies:
                self._send_ack(conn, copies)
            elif r & E_DELAY:
                self._timers.delay_ack(conn, now)
            if r & E_CLOSE:
                self.ctx.counters.event("tcp_closed")
                self._close(conn, rst=False)
                return
            if r & E_POLL:
                self._timers.want_poll(conn, now)
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

    def _update_ack(self, conn: TcpConn) -> None:
        """Read the peer's view (TCP_INFO, SO_MEMINFO when needed) for `tcp_decide.reflect_peer`."""
        info = b"" if conn.no_tcpinfo else tcp_info(conn.sock)
        if len(info) < TCP_INFO_LEN:
            if d.reflect_fallback(conn):
                self.ctx.counters.event("tcp_snd_wnd_fallback")
            return
        bytes_acked, snd_wnd = TI_ACKED_WND.unpack_from(info, TI_BYTES_ACKED_OFF)
        bytes_acked = int(bytes_acked)
        outq = conn.rcvd - bytes_acked + conn.acked_base
        room = d.room_estimate(conn, outq)
        if room == d.ROOM_MEASURE:
            mem = meminfo(conn.sock)
            if mem is None:
                room = -1
            else:
                sndbuf, queued = mem
                if not conn.bulk and not self._fresh_sndbuf:
                    self._fresh_sndbuf = sndbuf
                room = d.room_measured(conn, sndbuf, queued, outq)
                if d.sndbuf_low(sndbuf, queued):
                    poll_out(self._poll_out, conn.fd)  # marks SOCK_NOSPACE: autotuning may grow
        d.reflect_peer(conn, bytes_acked, int(snd_wnd), room)

    def _send_ack(self, conn: TcpConn, copies: int = 1) -> None:
        ack = d.ack_sent(conn)
        frame = build_control(conn.tpl, conn.seq_nxt(), ack, ACK, conn.wnd_raw)
        for _ in range(copies):
            self.ctx.send(frame)

    def _push(self, conn: TcpConn, now: float) -> None:
        """Peek new socket data into frame slots and queue them, within `tcp_decide.push_budget`."""
        tap = self.ctx.tap
        if tap is None:
            return
        offload = tap.offload
        ring = self._ring_for(offload)
        avail = d.push_budget(conn, now)
        if avail <= 0:
            return
        tpl = conn.tpl
        if tpl.guest_mac is not self.ctx.guest.mac:
            tpl = conn.tpl = self._retemplate(conn)
        mss = conn.mss
        cap = gso_payload_cap(conn.af, mss) if offload else mss
        slots = ring.slots
        first = ring.used
        nslots = len(slots)
        if first >= nslots:
            self._timers.starve(conn, now)
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
                in_flight = conn.sent - conn.acked
                views.insert(0, memoryview(self._scratch_buf())[:in_flight])
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
            d.sock_eof(conn, now)
            frame = build_control(conn.tpl, conn.isn + 1 + conn.fin_off, conn.ack_sent, FIN | ACK, conn.wnd_raw)
            self.ctx.send(frame)
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
        if d.pushed(conn, got, want, ack, now):
            self._push(conn, now)
        elif got >= want and i >= nslots:
            self._timers.starve(conn, now)

    def _reset(self, conn: TcpConn) -> None:
        """Abort: RST to the guest, RST to the host peer, forget the flow."""
        if conn.closed:
            return
        seq, ack, flags = d.rst_for(conn)
        self.ctx.send(build_control(conn.tpl, seq, ack, flags, 0))
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

    # the flow's own timer -------------------------------------------------------------
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
        """Carry out `tcp_decide.on_timer`: resets, SYN/SYN-ACK again, retransmit, probe."""
        conn.timer = None
        if conn.closed:
            return
        r = d.on_timer(conn, now)
        if r:
            if r in _TM_RESETS:
                self.ctx.counters.event(_TM_RESETS[r])
                self._reset(conn)
                return
            if r == d.TM_RESEND_SYNACK:
                self._send_synack(conn)
            elif r == d.TM_RESEND_SYN:
                self._send_syn(conn)
            elif r == d.TM_RETRANSMIT:
                self._mark(conn)
            else:  # TM_PROBE: an out-of-window ACK makes the guest announce its window
                probe = build_control(conn.tpl, (conn.seq_nxt() - 1) & _M, conn.ack_num(), ACK, conn.wnd_raw)
                self.ctx.send(probe)
                self.ctx.counters.event("tcp_window_probe")
        self._arm(conn, conn.timer_at)

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

    def _scratch_buf(self) -> mmap.mmap:
        scratch = self._scratch
        if scratch is None:
            scratch = self._scratch = lazy_buffer(SCRATCH_BYTES)
        return scratch

    def _template(self, af: int, src: bytes, dst: bytes, sport: int, dport: int) -> FrameTemplate:
        ctx = self.ctx
        return FrameTemplate(af, ctx.guest.mac, ctx.conf.our_mac, src, dst, sport, dport)

    def _retemplate(self, conn: TcpConn) -> FrameTemplate:
        """The guest's MAC changed since the flow began: rebuild its template."""
        af, gaddr, gport, raddr, rport = conn.key
        return self._template(af, raddr, gaddr, rport, gport)


#: Drop counters of the handshake actions that only drop.
_HS_DROPS: Final = {
    d.HS_EARLY: "tcp_early_segment",
    d.HS_SYN_MISMATCH: "tcp_syn_mismatch",
    d.HS_NO_ACK: "tcp_no_ack",
    d.HS_NOT_SYNACK: "tcp_expected_synack",
}
#: Event counters of the timer actions that reset the flow.
_TM_RESETS: Final = {
    d.TM_SYN_TIMEOUT: "tcp_syn_timeout",
    d.TM_IDLE: "tcp_idle_timeout",
    d.TM_GIVE_UP: "tcp_retrans_timeout",
}


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
