"""pasta's loopback bypass for TCP: socket -> pipe -> socket with splice(2).

Man page NOTES, "Handling of local traffic in pasta": a local connection to a
forwarded port is not translated into frames for the tap.  pasta opens a
socket of the same kind on the other side and moves the data between the two
sockets with splice(2), so the payload never enters Python (nor user space):

    accepted socket A                          target socket B
    (the side that connected to our listener)  (we connect it to the other side's loopback)

        A --splice--> pipe[0] --splice--> B        direction 0: A -> B
        A <--splice-- pipe[1] <--splice-- B        direction 1: B -> A

Who uses it (wiring in runtime.py, pasta only):

    -t (host -> namespace): a connection accepted by a -t listener whose peer
        is loopback (127.0.0.0/8, ::1, ::ffff:127.x) gets a socket created in
        the namespace (NsHelper.socket) connected to the namespace's 127.0.0.1
        or ::1 (the peer's family) at the target port.  Other peers go to the
        `fallback` (TcpHandler: through the tap).
    -T (namespace -> host): listeners that pasta binds inside the namespace
        (127.0.0.1 and ::1 only, see runtime.py) accept; we connect a host
        socket to the host's 127.0.0.1 or ::1 at the target port.

Exposure: the bypass only ever connects to the target port of a listener we
bound for a forwarded port, so nothing else on the other side's loopback
becomes reachable.

Data path of one direction (`_pump`), repeated until a budget is spent:

    1. pipe holds bytes: splice(pipe -> dst, pending).  EAGAIN: dst is full,
       so wait for EPOLLOUT on dst and stop reading src (the pipe is the only
       buffer: it never grows beyond its size).
    2. pipe empty and src at EOF: shutdown(dst, SHUT_WR) once (half-close
       passes through: the other direction keeps flowing).
    3. splice(src -> pipe, pipe size).  EAGAIN with an empty pipe means src
       has nothing: wait for EPOLLIN on src.  0 is EOF.

Sockets are watched through one inner level-triggered epoll whose descriptor
is the only thing registered with the loop (as tcp.py does): masks are
changed with one epoll_ctl only when a side's interest changes, and a side
with no interest is taken out of the epoll, because EPOLLHUP is reported
whatever the mask (a half-closed side waiting for the other one to drain
would otherwise wake us up at every turn).  SPLICE_F_NONBLOCK on every call,
both sockets O_NONBLOCK, pipes O_NONBLOCK.

Ends: when both directions have seen EOF, drained their pipe and shut the
write side, both sockets and all four pipe ends are closed.  An error on
either socket (EPOLLERR, ECONNRESET or EPIPE from splice) closes both with
SO_LINGER 0, so the peer on the other side sees a reset too (RST
propagation).  A target that refuses (or does not answer within
CONNECT_TIMEOUT_S) makes us reset the accepted socket: the client sees its
connection reset right after it was accepted.

Pipes: one per direction, created once the target is connected, enlarged
with F_SETPIPE_SZ to PIPE_SIZE (1 MiB, the default
/proc/sys/fs/pipe-max-size); when that fails (an unprivileged user beyond
pipe-user-pages-soft) the kernel's default 64 KiB pipe is used silently.  A
bigger pipe means fewer splice calls, hence fewer trips through Python, per
byte; measured figures are in docs/architecture.md.

Both sockets get TCP_NODELAY: we relay what the application wrote as soon as
it arrives; Nagle on our side would add a delay the application never asked
for (and measurably hurts request/response latency).

Bounds: the table (`capacity`, each connection holds 6 descriptors; full:
the accepted connection is reset and counted), ACCEPT_BATCH accepts per
listener wake-up, EPOLL_BATCH events per wake-up, PUMP_BUDGET_BYTES per
direction per event so one fast connection cannot starve the others (level
triggering brings us back).  No idle timeout: a spliced connection lives as
long as its two endpoints keep it, as with a direct loopback connection.
"""

from __future__ import annotations

import errno
import fcntl
import os
import select
import socket
import sys
from collections.abc import Callable
from typing import Final

from passt import log
from passt.context import Context
from passt.flows.sockets import (
    LOOPBACK4,
    LOOPBACK6,
    SocketFactory,
    close_rst,
    is_loopback_peer,
    peer_family,
)
from passt.flows.table import FLOW_MAX, FlowTable
from passt.flows.tcp import ACCEPT_BACKOFF_S
from passt.loop import EVENT_READ, Timer

#: Hands a non-loopback accepted socket to the tap path; False: refused (we reset it).
AcceptFallback = Callable[[socket.socket, int, float], bool]

#: Size each pipe is enlarged to (default /proc/sys/fs/pipe-max-size).
PIPE_SIZE: Final = 1 << 20
#: Bytes moved per direction per event before yielding to the loop.
PUMP_BUDGET_BYTES: Final = 16 << 20
#: Connections accepted per listener wake-up.
ACCEPT_BATCH: Final = 64
#: Socket events handled per wake-up.
EPOLL_BATCH: Final = 256
#: A target that neither accepts nor refuses within this is given up.
CONNECT_TIMEOUT_S: Final = 10.0

SPLICE_FLAGS: Final = os.SPLICE_F_MOVE | os.SPLICE_F_NONBLOCK

_EP_IN: Final = select.EPOLLIN
_EP_OUT: Final = select.EPOLLOUT
_EP_ERR: Final = select.EPOLLERR
_EP_HUP: Final = select.EPOLLHUP


#: Errors from splice() or connect() that mean the connection is gone (reset both sides).
_CONN_ERRORS: Final = frozenset(
    {errno.ECONNRESET, errno.EPIPE, errno.ETIMEDOUT, errno.ECONNREFUSED, errno.ENOTCONN,
     errno.EHOSTUNREACH, errno.ENETUNREACH, errno.ECONNABORTED}
)  # fmt: skip


def make_pipe(size: int) -> tuple[int, int, int]:
    """A non-blocking pipe, enlarged to `size` when allowed: (read fd, write fd, capacity)."""
    r, w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        cap = fcntl.fcntl(w, fcntl.F_SETPIPE_SZ, size)
    except OSError:
        try:
            cap = fcntl.fcntl(w, fcntl.F_GETPIPE_SZ)
        except OSError:
            cap = 1 << 16
    return r, w, cap


class SpliceConn:
    """One spliced connection: two sockets, two pipes, per-direction state.

    Index 0 is the accepted socket (A), 1 the target socket (B); direction d
    reads side d and writes side 1 - d through pipe d.
    """

    __slots__ = (
        "socks", "fds", "pr", "pw", "cap", "pending", "eof", "shut", "mask", "registered",
        "connecting", "closed", "timer", "family",
    )  # fmt: skip

    def __init__(self, a: socket.socket, b: socket.socket, family: int) -> None:
        self.socks = (a, b)
        self.fds = (a.fileno(), b.fileno())
        #: Pipe ends per direction (-1 until connected).
        self.pr = [-1, -1]
        self.pw = [-1, -1]
        #: Pipe capacity per direction (bytes).
        self.cap = [0, 0]
        #: Bytes sitting in each direction's pipe.
        self.pending = [0, 0]
        #: Direction d has read EOF from its source (side d).
        self.eof = [False, False]
        #: Direction d has shut the write side of its destination (side 1 - d).
        self.shut = [False, False]
        #: Current epoll mask per side (meaningful only while registered).
        self.mask = [0, 0]
        self.registered = [False, False]
        self.connecting = True
        self.closed = False
        self.timer: Timer | None = None
        #: Family of the target connection (AF_INET or AF_INET6).
        self.family = family


class SpliceHandler:
    """Spliced TCP connections for one direction of pasta's loopback bypass.

    `target_socket` makes the socket on the other side (the namespace helper's socket for
    -t, socket.socket for -T); `fallback` receives accepted connections whose
    peer is not loopback (None: every connection is spliced).
    """

    def __init__(
        self,
        ctx: Context,
        *,
        target_socket: SocketFactory,
        fallback: AcceptFallback | None = None,
        capacity: int = FLOW_MAX,
        pipe_size: int = PIPE_SIZE,
        name: str = "tcp_splice",
    ) -> None:
        self.ctx = ctx
        self._socket = target_socket
        self.fallback = fallback
        self.pipe_size = pipe_size
        self.name = name
        self.conns: FlowTable[int, SpliceConn] = FlowTable(capacity)
        self._by_fd: dict[int, SpliceConn] = {}
        self._ep = select.epoll()
        ctx.loop.register(self._ep.fileno(), EVENT_READ, self._on_epoll)
        self._ev_open = f"{name}_open"
        self._ev_close = f"{name}_close"
        self._ev_reset = f"{name}_reset"

    # public ---------------------------------------------------------------
    def flow_count(self) -> int:
        return len(self.conns)

    def listen_ready(self, lsock: socket.socket, target_port: int, now: float) -> None:
        """A listener is readable: accept a batch; splice loopback peers, hand the rest over."""
        counters = self.ctx.counters
        fallback = self.fallback
        for _ in range(ACCEPT_BATCH):
            try:
                sock, peer = lsock.accept()
            except BlockingIOError:
                return
            except OSError as e:
                counters.drop(f"{self.name}_accept")
                if e.errno in (errno.EMFILE, errno.ENFILE):
                    # the listener stays readable: pause it rather than spin
                    self.ctx.loop.suspend(lsock.fileno(), ACCEPT_BACKOFF_S)
                return
            host: str = peer[0]
            if fallback is not None and not is_loopback_peer(host):
                if not fallback(sock, target_port, now):
                    close_rst(sock)
                continue
            self.splice(sock, peer_family(host), target_port, now)

    def splice(self, sock: socket.socket, family: int, target_port: int, now: float) -> bool:
        """Connect a target socket of `family` to the other side's loopback and join the two.

        False: refused (table full, socket or connect failure); `sock` is reset then.
        """
        counters = self.ctx.counters
        if len(self.conns) >= self.conns.capacity:
            counters.drop(f"{self.name}_table_full")
            close_rst(sock)
            return False
        try:
            target = self._socket(family, socket.SOCK_STREAM, 0)
        except OSError:
            counters.drop(f"{self.name}_socket")
            close_rst(sock)
            return False
        try:
            sock.setblocking(False)
            target.setblocking(False)
            _nodelay(sock)
            _nodelay(target)
            dst = LOOPBACK4 if family == socket.AF_INET else LOOPBACK6
            err = target.connect_ex((dst, target_port))
        except OSError:
            err = errno.EINVAL
        if err not in (0, errno.EINPROGRESS):
            counters.drop(f"{self.name}_connect")
            target.close()
            close_rst(sock)
            return False
        conn = SpliceConn(sock, target, family)
        self.conns.add(conn.fds[0], conn)
        self._by_fd[conn.fds[0]] = conn
        self._by_fd[conn.fds[1]] = conn
        counters.event(self._ev_open)
        if err == 0:
            self._connected(conn)
        else:
            self._set_mask(conn, 1, _EP_OUT)
            conn.timer = self.ctx.loop.call_at(now + CONNECT_TIMEOUT_S, lambda _t: self._connect_timeout(conn))
        return True

    def close(self) -> None:
        """Reset every connection and release the epoll (tests, shutdown)."""
        for conn in self.conns.values():
            self._close(conn, rst=True)
        self.ctx.loop.unregister(self._ep.fileno())
        self._ep.close()

    # events -----------------------------------------------------------------
    def _on_epoll(self, _mask: int, now: float) -> None:
        by_fd = self._by_fd
        for fd, ev in self._ep.poll(0, EPOLL_BATCH):
            conn = by_fd.get(fd)
            if conn is None or conn.closed:
                continue
            side = 0 if fd == conn.fds[0] else 1
            if conn.connecting:
                if side == 1:
                    self._connect_done(conn)
                continue
            if ev & _EP_ERR:
                self._close(conn, rst=True)
                continue
            if ev & _EP_HUP:
                # Both directions of this side are shut: let both pumps find out how.
                if not self._pump(conn, side) or not self._pump(conn, 1 - side):
                    continue
            else:
                if ev & _EP_IN and not self._pump(conn, side):
                    continue
                if ev & _EP_OUT and not self._pump(conn, 1 - side):
                    continue
            self._update(conn)

    def _connect_done(self, conn: SpliceConn) -> None:
        try:
            err = conn.socks[1].getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        except OSError as e:
            err = e.errno or errno.EIO
        if err:
            self.ctx.counters.drop(f"{self.name}_connect")
            self._close(conn, rst=True)
            return
        self._connected(conn)

    def _connect_timeout(self, conn: SpliceConn) -> None:
        conn.timer = None
        if conn.connecting and not conn.closed:
            self.ctx.counters.drop(f"{self.name}_connect_timeout")
            self._close(conn, rst=True)

    def _connected(self, conn: SpliceConn) -> None:
        """Target connected: make the pipes, start moving both ways."""
        conn.connecting = False
        if conn.timer is not None:
            self.ctx.loop.cancel(conn.timer)
            conn.timer = None
        try:
            for d in (0, 1):
                conn.pr[d], conn.pw[d], conn.cap[d] = make_pipe(self.pipe_size)
        except OSError:
            self.ctx.counters.drop(f"{self.name}_pipe")
            self._close(conn, rst=True)
            return
        if self._pump(conn, 0) and self._pump(conn, 1):
            self._update(conn)

    # data ---------------------------------------------------------------------
    def _pump(self, conn: SpliceConn, d: int) -> bool:
        """Move data for direction d until it blocks or the budget is spent; False: conn closed."""
        if conn.shut[d]:
            return True
        src = conn.fds[d]
        dst = conn.fds[1 - d]
        pr = conn.pr[d]
        pw = conn.pw[d]
        cap = conn.cap[d]
        pending = conn.pending[d]
        budget = PUMP_BUDGET_BYTES
        splice = os.splice
        try:
            while True:
                if pending:
                    try:
                        n = splice(pr, dst, pending, flags=SPLICE_FLAGS)
                    except BlockingIOError:
                        break
                    pending -= n
                    if pending:
                        continue
                if conn.eof[d]:
                    _shutdown_wr(conn.socks[1 - d])
                    conn.shut[d] = True
                    break
                if budget <= 0:
                    break
                try:
                    n = splice(src, pw, cap, flags=SPLICE_FLAGS)
                except BlockingIOError:
                    break
                if n == 0:
                    conn.eof[d] = True
                    continue
                pending += n
                budget -= n
        except OSError as e:
            conn.pending[d] = pending
            if e.errno not in _CONN_ERRORS:
                if log.debug_enabled:
                    log.debug(f"{self.name}: splice error {e}")
            self._close(conn, rst=True)
            return False
        conn.pending[d] = pending
        if conn.shut[0] and conn.shut[1]:
            self._close(conn, rst=False)
            return False
        return True

    def _update(self, conn: SpliceConn) -> None:
        """Set each side's epoll interest from the state of both directions."""
        for s in (0, 1):
            mask = 0
            # direction s reads side s: wanted while its pipe is empty and no EOF seen
            if not conn.eof[s] and conn.pending[s] == 0:
                mask |= _EP_IN
            # direction 1 - s writes side s: wanted while its pipe holds bytes
            if conn.pending[1 - s] and not conn.shut[1 - s]:
                mask |= _EP_OUT
            self._set_mask(conn, s, mask)

    def _set_mask(self, conn: SpliceConn, side: int, mask: int) -> None:
        """Change one side's interest with a single epoll_ctl, only when it changes."""
        fd = conn.fds[side]
        if conn.registered[side]:
            if mask == conn.mask[side]:
                return
            if mask:
                self._ep.modify(fd, mask)
            else:
                self._ep.unregister(fd)
                conn.registered[side] = False
        elif mask:
            self._ep.register(fd, mask)
            conn.registered[side] = True
        conn.mask[side] = mask

    # teardown ---------------------------------------------------------------------
    def _close(self, conn: SpliceConn, *, rst: bool) -> None:
        """Release both sockets and the pipes; `rst` resets both peers (SO_LINGER 0)."""
        if conn.closed:
            return
        conn.closed = True
        if conn.timer is not None:
            self.ctx.loop.cancel(conn.timer)
            conn.timer = None
        for s in (0, 1):
            if conn.registered[s]:
                try:
                    self._ep.unregister(conn.fds[s])
                except OSError:
                    pass
                conn.registered[s] = False
            self._by_fd.pop(conn.fds[s], None)
        for d in (0, 1):
            for fd in (conn.pr[d], conn.pw[d]):
                if fd >= 0:
                    os.close(fd)
            conn.pr[d] = conn.pw[d] = -1
        for sock in conn.socks:
            if rst:
                close_rst(sock)
            else:
                sock.close()
        self.conns.remove(conn.fds[0])
        self.ctx.counters.event(self._ev_reset if rst else self._ev_close)


def _nodelay(sock: socket.socket) -> None:
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except OSError:
        pass


def _shutdown_wr(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_WR)
    except OSError:
        pass


# AUTO scan of the host's loopback ---------------------------------------------------

#: /proc/net/tcp state of a listening socket; UDP's "unconnected" state.
_TCP_LISTEN: Final = 0x0A
_UDP_UNCONNECTED: Final = 0x07


def _proc_addr(hexaddr: str) -> bytes:
    """Packed address of a /proc/net hex address (32-bit words in host byte order)."""
    raw = bytes.fromhex(hexaddr)
    if sys.byteorder == "big":
        return raw
    return b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))


def loopback_or_wildcard(addr: bytes) -> bool:
    """127/8, 0.0.0.0, ::1, :: and ::ffff:127.x (packed)."""
    if len(addr) == 4:
        return addr[0] == 127 or addr == bytes(4)
    if addr == bytes(16) or addr == bytes(15) + b"\x01":
        return True
    return addr[:12] == bytes(10) + b"\xff\xff" and addr[12] == 127


def parse_loopback_ports(text: str, *, tcp: bool) -> set[int]:
    """Ports listening (TCP) or bound unconnected (UDP) on loopback or wildcard, from one table."""
    ports: set[int] = set()
    want = _TCP_LISTEN if tcp else _UDP_UNCONNECTED
    for line in text.splitlines()[1:]:
        fields = line.split()
        if len(fields) < 4:
            continue
        local, remote, state_s = fields[1], fields[2], fields[3]
        addr_s, _, port_s = local.rpartition(":")
        try:
            state = int(state_s, 16)
            port = int(port_s, 16)
            addr = _proc_addr(addr_s)
            rport = int(remote.rpartition(":")[2], 16)
        except ValueError:
            continue
        if state != want or port == 0 or (not tcp and rport != 0):
            continue
        if len(addr) in (4, 16) and loopback_or_wildcard(addr):
            ports.add(port)
    return ports


def scan_loopback_ports(tcp: bool, proc_net: str = "/proc/self/net") -> set[int]:
    """Ports bound on this namespace's loopback or wildcard (the -T/-U `auto` set)."""
    names = ("tcp", "tcp6") if tcp else ("udp", "udp6")
    ports: set[int] = set()
    for name in names:
        try:
            with open(f"{proc_net}/{name}", encoding="ascii", errors="replace") as f:
                ports |= parse_loopback_ports(f.read(), tcp=tcp)
        except OSError:
            continue
    return ports
