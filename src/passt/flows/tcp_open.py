"""Opening TCP flows both ways: a guest SYN (socket, connect()) and an accepted host connection.

Functions over the `TcpHandler` that owns the flows (they use its table,
templates and epoll registration); the per-flow numbers are set by
`tcp_decide.guest_syn` / `tcp_decide.accepted`.

    guest SYN   -> checks (destination, loopback, table room) -> socket(), tune_new,
                   connect_ex() towards the outbound target -> flow CONNECTING;
                   connect() done at once (local peer): SYN-ACK in the same call
    -t listener -> accept() up to ACCEPT_BATCH -> accept_socket -> flow SYN_SENT,
                   our SYN to the guest; EMFILE/ENFILE: the listener rests
                   ACCEPT_BACKOFF_S (it stays readable: a level-triggered loop
                   would retry, and fail, every turn)

Refusals: a guest SYN that cannot be served gets an RST (or is dropped
for a destination that is never forwarded); an accepted connection that
cannot be served is reset by the caller.  Each refusal has a counter.
"""

from __future__ import annotations

import errno
import select
import socket
from typing import TYPE_CHECKING, Final

from passt.flows import nat
from passt.flows import tcp_decide as d
from passt.flows.sockets import close_rst, dst_forwardable, link_scope
from passt.flows.tcp_frames import build_control
from passt.flows.tcp_kernel import info_bytes_acked
from passt.flows.tcp_state import CONNECTING
from passt.wire.tcp import ACK, RST, SYN, TcpSegment

if TYPE_CHECKING:
    from passt.flows.tcp import FlowKey, TcpHandler

ACCEPT_BATCH: Final = 64
#: A listener whose accept() failed for lack of descriptors rests this long.
ACCEPT_BACKOFF_S: Final = 0.1


def new_from_tap(h: TcpHandler, af: int, src: bytes, dst: bytes, seg: TcpSegment, plen: int, now: float) -> None:
    """A segment for no known flow: a SYN opens one, anything else gets an RST."""
    counters = h.ctx.counters
    flags = seg.flags
    if flags & RST:
        counters.drop("tcp_rst_unknown")
        return
    if flags & (SYN | ACK) != SYN:
        counters.drop("tcp_unknown_flow")
        rst_unknown(h, af, src, dst, seg, plen)
        return
    if not dst_forwardable(af, dst):
        counters.drop("tcp_bad_dst")
        return
    if not h.loopback_dst and nat.is_loopback(af, dst):
        counters.drop("tcp_dst_loopback")
        return
    if len(h.flows) >= h.flows.capacity:
        counters.drop("tcp_flow_table_full")
        rst_unknown(h, af, src, dst, seg, plen)
        return
    family = socket.AF_INET if af == 4 else socket.AF_INET6
    try:
        sock = h._socket(family, socket.SOCK_STREAM | socket.SOCK_NONBLOCK, 0)
    except OSError:
        counters.drop("tcp_socket")
        rst_unknown(h, af, src, dst, seg, plen)
        return
    if sock.gettimeout() != 0.0:
        sock.setblocking(False)
    h._tune(sock)
    out = h._out
    real = out.target(af, dst, seg.dport, dns=True)
    host = socket.inet_ntop(family, real)
    addr: tuple[str, int] | tuple[str, int, int, int]
    if af == 4:
        addr = (host, seg.dport)
    else:
        addr = (host, seg.dport, 0, link_scope(h.ctx.conf.out_ifname, af, real))
    rc = out.connect_ex(sock, af, real, addr)
    if rc not in (0, errno.EINPROGRESS):
        sock.close()
        counters.event("tcp_connect_failed")
        rst_unknown(h, af, src, dst, seg, plen)
        return
    key: FlowKey = (af, src, seg.sport, dst, seg.dport)
    tpl = h._template(af, dst, src, seg.dport, seg.sport)
    conn = h._new_conn(key, sock, tpl, now)
    d.guest_syn(conn, seg, h._our_mss4 if af == 4 else h._our_mss6)
    if not h._register(conn):
        rst_unknown(h, af, src, dst, seg, plen)
        return
    counters.event("tcp_open_from_guest")
    if rc == 0:
        h._connect_done(conn, now)
    else:
        revents = h._connected_now(conn)
        if revents:
            h._connect_done(conn, now, clean=not revents & (select.POLLERR | select.POLLHUP))
    # Still connecting: the handshake timeout.  (A connect done at once
    # armed the SYN-ACK's RTO, which comes first: arming both would cost
    # a timer and a cancel per connection.)
    if conn.state & CONNECTING and not conn.closed:
        h._arm(conn, conn.syn_deadline)


def rst_unknown(h: TcpHandler, af: int, src: bytes, dst: bytes, seg: TcpSegment, plen: int) -> None:
    """RFC 9293 section 3.10.7.1: RST for a segment that matches no connection."""
    tpl = h._template(af, dst, src, seg.dport, seg.sport)
    seq, ack, flags = d.rst_for_unknown(seg.flags, seg.seq, seg.ack, plen)
    h.ctx.send(build_control(tpl, seq, ack, flags, 0))


def listen_ready(h: TcpHandler, lsock: socket.socket, target_port: int, now: float) -> None:
    """A -t listener is readable: accept up to ACCEPT_BATCH connections, SYN each to the guest."""
    ctx = h.ctx
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
        if not accept_socket(h, sock, target_port, now):
            close_rst(sock)


def accept_socket(h: TcpHandler, sock: socket.socket, target_port: int, now: float) -> bool:
    """Take an accepted host connection (TcpHandler.accept_socket); True: `h` owns `sock`."""
    ctx = h.ctx
    counters = ctx.counters
    sock.setblocking(False)
    if not h._enabled:
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
    if len(h.flows) >= h.flows.capacity:
        counters.drop("tcp_flow_table_full")
        return False
    gsrc = nat.host_src_to_guest(ctx.conf, af, paddr, h.local_addrs)
    gdst = nat.host_dst_to_guest(ctx.guest, af, laddr, h.local_addrs)
    key: FlowKey = (af, gdst, target_port, gsrc, int(peer[1]))
    if key in h.flows:
        counters.drop("tcp_flow_collision")
        return False
    h._tune(sock)
    tpl = h._template(af, gsrc, gdst, key[4], target_port)
    conn = h._new_conn(key, sock, tpl, now)
    info = h._sock_ready(conn)
    d.accepted(conn, h._our_mss4 if af == 4 else h._our_mss6, info_bytes_acked(info), now)
    if not h._register(conn):
        return True  # already closed with a reset
    counters.event("tcp_open_from_sock")
    h._send_syn(conn, info)
    h._arm(conn, conn.rto_deadline)
    return True
