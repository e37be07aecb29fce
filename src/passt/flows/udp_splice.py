"""pasta's loopback bypass for UDP: datagrams moved socket to socket.

Man page NOTES, "Handling of local traffic in pasta": local UDP traffic to
a forwarded port does not cross the tap.  For each peer that sends to one
of our listeners we open a socket on the other side, connected to that
side's loopback at the target port, and copy datagrams between the two:

    peer P --datagram--> listener L (ours) --recvmsg_into--> buffer
           --send()--> flow socket S (other side, connect()ed to 127.0.0.1 / ::1 : target)
    target --reply--> S --recv_into--> buffer --sendmsg(to P, PKTINFO)--> L --> P

    -u (host -> namespace): L is the -u listener on the host, S is created in
        the namespace (NsHelper.socket).  Only loopback peers take this path;
        the others go to `fallback` (UdpHandler: through the tap).
    -U (namespace -> host): L is a listener pasta bound in the namespace
        (127.0.0.1 / ::1), S a host socket; every peer is spliced.

Flows are keyed by (listener, peer socket address): each peer gets its own
S, so the target sees a distinct source port per peer and its replies are
told apart without any table lookup (S is connected).  Replies leave L with
IP_PKTINFO / IPV6_PKTINFO set to the address P sent to (listeners ask for
PKTINFO, see fwd.py), so a client that connect()ed to 127.0.0.2 gets its
answer from 127.0.0.2.  S being connected also keeps it out of the `auto`
scans (they count unconnected sockets only).

Telling peers apart on a -u listener needs a peek (recvfrom with MSG_PEEK
and no buffer) before each datagram: a loopback one is read here, anything
else is left to the fallback, which reads its own batch.  That batch may
carry loopback datagrams queued behind a foreign one: they then take the tap
path (still delivered, with the NOTES address translation) -- a known
imprecision of mixed traffic on one port within one wake-up.

The man page names recvmmsg(2)/sendmmsg(2); Python's socket module has
neither, so each datagram costs one system call in and one out, in bounded
batches (UDP_BATCH per wake-up, read until EAGAIN).  Datagrams larger than
the buffer (65535 bytes, the IP maximum) cannot exist; truncated ones are
dropped and counted.

Bounds: the flow table (`capacity`; full: drop and count), idle timeout
UDP_TIMEOUT_S (180 s, as udp.py) checked by one periodic timer, UDP_BATCH
datagrams per readiness event.
"""

from __future__ import annotations

import errno
import functools
import socket
from typing import Final

from passt.context import Context
from passt.flows.fwd import UdpListenHandler
from passt.flows.sockets import (
    LOOPBACK4,
    LOOPBACK6,
    PKTINFO_SPACE,
    Ancillary,
    SockAddr,
    SocketFactory,
    is_loopback_peer,
    peer_family,
    pktinfo_addr,
    pktinfo_cmsg,
)
from passt.flows.table import FlowTable, expire_idle
from passt.loop import EVENT_READ, Timer

FlowKey = tuple[int, SockAddr]

#: Idle timeout of a spliced UDP flow (as udp.py and upstream).
UDP_TIMEOUT_S: Final = 180.0
#: How often the expiry timer scans the table.
UDP_TIMER_INTERVAL_S: Final = 10.0
#: Datagrams moved per readiness event before yielding to the loop.
UDP_BATCH: Final = 64
#: Default bound on flows: each holds one descriptor.
UDP_SPLICE_MAX: Final = 4096
#: Largest datagram payload (IPv6 jumbograms aside).
BUF_BYTES: Final = 65535


def reply_cmsg(anc: Ancillary) -> Ancillary:
    """Ancillary data making a reply leave from the address the datagram was sent to.

    Built from the PKTINFO the listener received; empty when there was none
    (the kernel then picks the source, which for a listener bound to one
    address is that address).
    """
    info = pktinfo_addr(anc)
    return [] if info is None else pktinfo_cmsg(*info)


class UdpSpliceFlow:
    """One peer of one listener and the connected socket that stands for it on the other side."""

    __slots__ = ("key", "lsock", "peer", "sock", "fd", "cmsg", "last")

    def __init__(
        self, key: FlowKey, lsock: socket.socket, peer: SockAddr, sock: socket.socket,
        cmsg: Ancillary, now: float,
    ) -> None:  # fmt: skip
        self.key = key
        #: Our listener: replies leave from it.
        self.lsock = lsock
        #: The peer's socket address as the listener reported it.
        self.peer = peer
        #: Socket on the other side, connected to its loopback at the target port.
        self.sock = sock
        self.fd = sock.fileno()
        #: PKTINFO for replies (source = the address the peer sent to).
        self.cmsg = cmsg
        self.last = now


class UdpSpliceHandler:
    """Spliced UDP flows for one direction of pasta's loopback bypass."""

    def __init__(
        self,
        ctx: Context,
        *,
        target_socket: SocketFactory,
        fallback: UdpListenHandler | None = None,
        timeout_s: float = UDP_TIMEOUT_S,
        timer_interval_s: float = UDP_TIMER_INTERVAL_S,
        capacity: int = UDP_SPLICE_MAX,
        name: str = "udp_splice",
    ) -> None:
        self.ctx = ctx
        self._socket = target_socket
        self.fallback = fallback
        self.timeout_s = timeout_s
        self.timer_interval_s = timer_interval_s
        self.name = name
        self.flows: FlowTable[FlowKey, UdpSpliceFlow] = FlowTable(capacity)
        self._timer: Timer | None = None
        self._buf = bytearray(BUF_BYTES)
        self._mv = memoryview(self._buf)
        self._rx_list = [self._mv]

    def flow_count(self) -> int:
        return len(self.flows)

    # peer -> target -----------------------------------------------------------
    def listen_ready(self, lsock: socket.socket, target_port: int, now: float) -> None:
        """Datagrams on a listener: loopback peers are spliced, others go to the fallback."""
        counters = self.ctx.counters
        fallback = self.fallback
        mv = self._mv
        lfd = lsock.fileno()
        for _ in range(UDP_BATCH):
            if fallback is not None:
                try:
                    _, peek = lsock.recvfrom(0, socket.MSG_PEEK)
                except BlockingIOError:
                    return
                except OSError:
                    peek = None
                if peek is not None and not is_loopback_peer(peek[0]):
                    fallback.listen_ready(lsock, target_port, now)
                    return
            try:
                n, anc, flags, peer = lsock.recvmsg_into(self._rx_list, PKTINFO_SPACE, 0)
            except BlockingIOError:
                return
            except OSError:
                counters.drop(f"{self.name}_recv")
                continue
            if flags & socket.MSG_TRUNC:
                counters.drop(f"{self.name}_too_big")
                continue
            key: FlowKey = (lfd, peer)
            flow = self.flows.get(key)
            if flow is None:
                flow = self._open(key, lsock, peer, anc, target_port, now)
                if flow is None:
                    continue
            flow.last = now
            try:
                flow.sock.send(mv[:n])
            except BlockingIOError:
                counters.drop(f"{self.name}_send_eagain")
            except OSError as e:
                counters.drop(f"{self.name}_refused" if e.errno == errno.ECONNREFUSED else f"{self.name}_send")

    def _open(
        self, key: FlowKey, lsock: socket.socket, peer: SockAddr,
        anc: Ancillary, target_port: int, now: float,
    ) -> UdpSpliceFlow | None:  # fmt: skip
        """A new flow with its own connected socket on the other side; None: dropped."""
        counters = self.ctx.counters
        if len(self.flows) >= self.flows.capacity:
            counters.drop(f"{self.name}_table_full")
            return None
        family = peer_family(peer[0])
        try:
            sock = self._socket(family, socket.SOCK_DGRAM, 0)
        except OSError:
            counters.drop(f"{self.name}_socket")
            return None
        try:
            sock.setblocking(False)
            sock.connect((LOOPBACK4 if family == socket.AF_INET else LOOPBACK6, target_port))
        except OSError:
            sock.close()
            counters.drop(f"{self.name}_connect")
            return None
        flow = UdpSpliceFlow(key, lsock, peer, sock, reply_cmsg(anc), now)
        self.flows.add(key, flow)
        self.ctx.loop.register(flow.fd, EVENT_READ, functools.partial(self._reply_ready, flow))
        counters.event(f"{self.name}_flow")
        if self._timer is None:
            self._timer = self.ctx.loop.call_at(now + self.timer_interval_s, self._on_timer)
        return flow

    # target -> peer -------------------------------------------------------------
    def _reply_ready(self, flow: UdpSpliceFlow, _mask: int, now: float) -> None:
        """Replies on a flow socket: send each to the peer from our listener."""
        sock = flow.sock
        lsock = flow.lsock
        mv = self._mv
        counters = self.ctx.counters
        for _ in range(UDP_BATCH):
            try:
                n = sock.recv_into(mv, BUF_BYTES, socket.MSG_TRUNC)
            except BlockingIOError:
                return
            except OSError as e:
                counters.drop(f"{self.name}_refused" if e.errno == errno.ECONNREFUSED else f"{self.name}_recv")
                continue
            if n > BUF_BYTES:
                counters.drop(f"{self.name}_too_big")
                continue
            flow.last = now
            try:
                lsock.sendmsg([mv[:n]], flow.cmsg, 0, flow.peer)
            except BlockingIOError:
                counters.drop(f"{self.name}_send_eagain")
            except OSError:
                counters.drop(f"{self.name}_send")

    # lifetime ----------------------------------------------------------------------
    def _on_timer(self, now: float) -> None:
        self._timer = None
        self.expire(now)
        if len(self.flows):
            self._timer = self.ctx.loop.call_at(now + self.timer_interval_s, self._on_timer)

    def expire(self, now: float) -> int:
        """Close flows idle for longer than the timeout; returns how many."""
        return expire_idle(self.flows, now - self.timeout_s, self._close)

    def _close(self, flow: UdpSpliceFlow) -> None:
        self.flows.remove(flow.key)
        self.ctx.loop.unregister(flow.fd)
        flow.sock.close()

    def forget_listener(self, sock: socket.socket) -> None:
        """A listener is about to close (AUTO rescan): drop its flows, tell the fallback too."""
        for flow in self.flows.values():
            if flow.lsock is sock:
                self._close(flow)
        if self.fallback is not None:
            self.fallback.forget_listener(sock)

    def close(self) -> None:
        """Close every flow (tests, shutdown); listeners belong to fwd.py."""
        for flow in self.flows.values():
            self._close(flow)
        if self._timer is not None:
            self.ctx.loop.cancel(self._timer)
            self._timer = None
