"""TCP splice (pasta's loopback bypass) on real loopback sockets in this namespace.

The "other side" factory is plain socket.socket: the target socket is made
here, so a test only needs loopback.  Topology of every test:

    client --connect--> our listener L (127.0.0.1 or ::1) --listen_ready-->
        SpliceHandler --connect--> server S (same loopback, target port)

Clients and servers run in threads with blocking sockets while the main
thread turns the event loop.
"""

from __future__ import annotations

import errno
import fcntl
import gc
import hashlib
import os
import socket
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from passt.config import Mode
from passt.context import Context
from passt.flows import tcp_splice
from passt.flows.tcp_splice import (
    PIPE_SIZE,
    SpliceHandler,
    loopback_or_wildcard,
    make_pipe,
    parse_loopback_ports,
)
from passt.loop import EVENT_READ
from tests.unit.fakes import make_ctx, pump

LO: dict[int, str] = {socket.AF_INET: "127.0.0.1", socket.AF_INET6: "::1"}


def open_fds() -> int:
    """Descriptors open in this process (after collecting other tests' garbage)."""
    gc.collect()
    return len(os.listdir("/proc/self/fd"))


class Bench:
    """A SpliceHandler behind a listener, a target server, and the loop to turn."""

    def __init__(self, family: int = socket.AF_INET, *, fallback: Any = None, **kw: Any) -> None:
        ctx, _ = make_ctx(mode=Mode.PASTA)
        self.ctx: Context = ctx
        self.handler = SpliceHandler(ctx, target_socket=socket.socket, fallback=fallback, **kw)
        self.family = family
        self.server = socket.socket(family, socket.SOCK_STREAM)
        self.server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.server.bind((LO[family], 0))
        self.server.listen(128)
        self.server.setblocking(False)
        self.target_port: int = self.server.getsockname()[1]
        self.lsock = socket.socket(family, socket.SOCK_STREAM)
        self.lsock.bind((LO[family], 0))
        self.lsock.listen(128)
        self.lsock.setblocking(False)
        self.port: int = self.lsock.getsockname()[1]
        handler, lsock, target = self.handler, self.lsock, self.target_port
        ctx.loop.register(lsock.fileno(), EVENT_READ, lambda _m, now: handler.listen_ready(lsock, target, now))

    def connect(self) -> tuple[socket.socket, socket.socket]:
        """A client connected through the splice, and the server's end of it."""
        client = socket.create_connection((LO[self.family], self.port), timeout=5)
        got: list[socket.socket] = []

        def accepted() -> bool:
            if not got:
                try:
                    got.append(self.server.accept()[0])
                except BlockingIOError:
                    return False
            return not any(c.connecting for c in self.handler.conns.values())

        assert self.pump(accepted, 5)
        got[0].settimeout(5)
        return client, got[0]

    def recv(self, sock: socket.socket, n: int) -> bytes:
        """Exactly `n` bytes from `sock`, turning the loop while waiting."""
        buf = bytearray()
        sock.setblocking(False)

        def done() -> bool:
            while len(buf) < n:
                try:
                    chunk = sock.recv(n - len(buf))
                except BlockingIOError:
                    return False
                if not chunk:
                    raise EOFError
                buf.extend(chunk)
            return True

        assert self.pump(done, 5)
        sock.settimeout(5)
        return bytes(buf)

    def pump(self, cond: Callable[[], bool], timeout: float = 5.0) -> bool:
        return pump(self.ctx, cond, timeout)

    def run_threads(self, *targets: Callable[[], None], timeout: float = 60.0) -> None:
        """Run `targets` in threads while turning the loop; re-raise their failures."""
        errors: list[BaseException] = []

        def wrap(fn: Callable[[], None]) -> Callable[[], None]:
            def run() -> None:
                try:
                    fn()
                except BaseException as e:  # noqa: BLE001 - reported to the test thread
                    errors.append(e)

            return run

        threads = [threading.Thread(target=wrap(fn), daemon=True) for fn in targets]
        for t in threads:
            t.start()
        assert self.pump(lambda: not any(t.is_alive() for t in threads), timeout), "threads stuck"
        if errors:
            raise errors[0]

    def close(self) -> None:
        self.handler.close()
        self.ctx.loop.unregister(self.lsock.fileno())
        self.lsock.close()
        self.server.close()
        self.ctx.loop.close()


@pytest.fixture
def bench() -> Iterator[Bench]:
    b = Bench()
    yield b
    b.close()


def recv_all(sock: socket.socket) -> bytes:
    """Everything until EOF."""
    chunks: list[bytes] = []
    while True:
        data = sock.recv(1 << 20)
        if not data:
            return b"".join(chunks)
        chunks.append(data)


# data ------------------------------------------------------------------------


@pytest.mark.parametrize("family", [socket.AF_INET, socket.AF_INET6], ids=["ipv4", "ipv6"])
@pytest.mark.conformance("notes.pasta.splice")
def test_splice_32mib_both_directions_byte_exact(family: int) -> None:
    """32 MiB each way at once through a spliced connection arrive byte for byte."""
    b = Bench(family)
    try:
        client, server = b.connect()
        up = os.urandom(32 << 20)
        down = os.urandom(32 << 20)
        got: dict[str, bytes] = {}

        def client_send() -> None:
            client.sendall(up)
            client.shutdown(socket.SHUT_WR)

        def client_recv() -> None:
            got["down"] = recv_all(client)

        def server_send() -> None:
            server.sendall(down)
            server.shutdown(socket.SHUT_WR)

        def server_recv() -> None:
            got["up"] = recv_all(server)

        b.run_threads(client_send, client_recv, server_send, server_recv)
        assert hashlib.sha256(got["up"]).digest() == hashlib.sha256(up).digest()
        assert hashlib.sha256(got["down"]).digest() == hashlib.sha256(down).digest()
        assert len(got["up"]) == len(up) and len(got["down"]) == len(down)
        client.close()
        server.close()
        assert b.pump(lambda: b.handler.flow_count() == 0)
        assert b.ctx.counters.events.get("tcp_splice_close", 0) == 1
    finally:
        b.close()


def test_server_sees_loopback_peer_and_splice_uses_no_python_copy(bench: Bench, monkeypatch: pytest.MonkeyPatch) -> None:
    """The target sees a loopback peer; the data moved only through os.splice (no recv/send)."""
    client, server = bench.connect()
    assert server.getpeername()[0] == "127.0.0.1"
    calls = {"n": 0}
    real = os.splice

    def counting(*a: Any, **kw: Any) -> int:
        calls["n"] += 1
        return real(*a, **kw)

    monkeypatch.setattr(os, "splice", counting)
    client.sendall(b"x" * 100000)
    buf = bench.recv(server, 100000)
    assert buf == b"x" * 100000
    assert calls["n"] >= 2
    client.close()
    server.close()


def test_pipes_enlarged_to_pipe_size(bench: Bench) -> None:
    """Each direction gets its own pipe of PIPE_SIZE (1 MiB) bytes."""
    client, server = bench.connect()
    (conn,) = bench.handler.conns.values()
    assert conn.cap == [PIPE_SIZE, PIPE_SIZE]
    assert len({conn.pr[0], conn.pw[0], conn.pr[1], conn.pw[1]}) == 4
    for d in (0, 1):
        assert fcntl.fcntl(conn.pw[d], fcntl.F_GETPIPE_SZ) == PIPE_SIZE
        assert os.get_blocking(conn.pr[d]) is False
        assert os.get_blocking(conn.pw[d]) is False
    for s in conn.socks:
        assert s.getblocking() is False
        assert s.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
    client.close()
    server.close()


def test_pipe_falls_back_silently(monkeypatch: pytest.MonkeyPatch) -> None:
    """When F_SETPIPE_SZ is refused the pipe keeps the kernel's default size, no error."""
    real = fcntl.fcntl

    def refuse(fd: int, cmd: int, arg: int = 0) -> int:
        if cmd == fcntl.F_SETPIPE_SZ:
            raise PermissionError(errno.EPERM, "no")
        return int(real(fd, cmd, arg))

    monkeypatch.setattr(fcntl, "fcntl", refuse)
    r, w, cap = make_pipe(PIPE_SIZE)
    try:
        assert cap == real(w, fcntl.F_GETPIPE_SZ) == 65536
    finally:
        os.close(r)
        os.close(w)


def test_blocked_reader_no_busy_loop(bench: Bench, monkeypatch: pytest.MonkeyPatch) -> None:
    """A target that stops reading fills the pipe, then no splice call happens until it reads again."""
    client, server = bench.connect()
    client.setblocking(False)
    data = os.urandom(64 << 20)
    sent = 0
    # fill everything: client buffer, pipe, server buffer
    for _ in range(200):
        try:
            sent += client.send(data[sent : sent + (1 << 20)])
        except BlockingIOError:
            pass
        bench.ctx.loop.run_once(0.01)
    (conn,) = bench.handler.conns.values()
    assert conn.pending[0] > 0
    assert conn.registered[0] is False  # A: nothing to read for (pipe full), nothing to write
    assert conn.mask[1] & tcp_splice._EP_OUT
    calls = {"n": 0}
    real = os.splice

    def counting(*a: Any, **kw: Any) -> int:
        calls["n"] += 1
        return real(*a, **kw)

    monkeypatch.setattr(os, "splice", counting)
    for _ in range(30):
        bench.ctx.loop.run_once(0.01)
    assert calls["n"] == 0
    # the reader resumes: everything arrives in order
    client.setblocking(True)
    got = bytearray()

    def reader() -> None:
        while len(got) < sent:
            chunk = server.recv(1 << 20)
            assert chunk
            got.extend(chunk)

    bench.run_threads(reader)
    assert bytes(got) == data[:sent]
    client.close()
    server.close()


# half-close, reset ---------------------------------------------------------


@pytest.mark.parametrize("first", ["client", "server"])
@pytest.mark.conformance("notes.pasta.splice")
def test_half_close_passes_through(bench: Bench, first: str) -> None:
    """One side's FIN reaches the other as EOF while the reverse direction keeps working."""
    client, server = bench.connect()
    closer, other = (client, server) if first == "client" else (server, client)
    closer.sendall(b"last words")
    closer.shutdown(socket.SHUT_WR)
    got: dict[str, bytes] = {}

    def other_reads() -> None:
        got["eof"] = recv_all(other)

    bench.run_threads(other_reads)
    assert got["eof"] == b"last words"
    assert bench.handler.flow_count() == 1  # still open the other way
    other.sendall(b"reply after EOF")
    other.shutdown(socket.SHUT_WR)

    def closer_reads() -> None:
        got["reply"] = recv_all(closer)

    bench.run_threads(closer_reads)
    assert got["reply"] == b"reply after EOF"
    assert bench.pump(lambda: bench.handler.flow_count() == 0)
    assert bench.ctx.counters.events.get("tcp_splice_close") == 1
    client.close()
    server.close()


@pytest.mark.parametrize("first", ["client", "server"])
def test_reset_propagates(bench: Bench, first: str) -> None:
    """A reset on one side (SO_LINGER 0 close) resets the other side's connection too."""
    client, server = bench.connect()
    closer, other = (client, server) if first == "client" else (server, client)
    closer.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\0\0\0\0\0\0\0")
    closer.close()
    assert bench.pump(lambda: bench.handler.flow_count() == 0)
    assert bench.ctx.counters.events.get("tcp_splice_reset") == 1
    other.settimeout(2)
    with pytest.raises(ConnectionResetError):
        other.recv(100)
    other.close()


def test_refused_target_resets_client() -> None:
    """Nobody listens on the target port: the accepted client is reset and nothing leaks."""
    b = Bench()
    try:
        b.server.close()  # the target port is now closed
        base = open_fds()
        client = socket.create_connection(("127.0.0.1", b.port), timeout=5)
        assert b.pump(lambda: b.ctx.counters.drops.get("tcp_splice_connect", 0) == 1)
        with pytest.raises(ConnectionResetError):
            client.recv(10)
        client.close()
        assert b.handler.flow_count() == 0
        assert open_fds() == base
    finally:
        b.close()


# resources -----------------------------------------------------------------


def test_fds_back_to_baseline_after_1000_connections(bench: Bench) -> None:
    """1000 spliced connections (50 at a time), each echoing once: every descriptor is closed after."""
    c0, s0 = bench.connect()  # warm up lazily created objects
    c0.close()
    s0.close()
    assert bench.pump(lambda: bench.handler.flow_count() == 0)
    base = open_fds()
    for _ in range(20):
        pairs = [bench.connect() for _ in range(50)]
        assert bench.handler.flow_count() == 50
        for i, (c, _s) in enumerate(pairs):
            c.sendall(b"%d" % i)
        for i, (c, s) in enumerate(pairs):
            assert bench.recv(s, len(b"%d" % i)) == b"%d" % i
            s.close()
            c.close()
        assert bench.pump(lambda: bench.handler.flow_count() == 0)
    assert open_fds() == base
    ev = bench.ctx.counters.events
    assert ev.get("tcp_splice_open") == 1001
    assert ev.get("tcp_splice_close", 0) + ev.get("tcp_splice_reset", 0) == 1001


def test_table_full_resets_new_connections() -> None:
    """Past capacity a new connection is reset and counted; existing ones are untouched."""
    b = Bench(capacity=1)
    try:
        c1, s1 = b.connect()
        c2 = socket.create_connection(("127.0.0.1", b.port), timeout=5)
        assert b.pump(lambda: b.ctx.counters.drops.get("tcp_splice_table_full", 0) == 1)
        with pytest.raises(ConnectionResetError):
            c2.recv(10)
        c1.sendall(b"ok")
        assert b.recv(s1, 2) == b"ok"
        for s in (c1, s1, c2):
            s.close()
    finally:
        b.close()


# peers and fallback ----------------------------------------------------------


def test_non_loopback_peer_goes_to_fallback(monkeypatch: pytest.MonkeyPatch) -> None:
    """With a fallback, a connection whose peer is not loopback is handed over, not spliced."""
    taken: list[tuple[socket.socket, int]] = []

    def fallback(sock: socket.socket, target: int, now: float) -> bool:
        taken.append((sock, target))
        return True

    b = Bench(fallback=fallback)
    try:
        monkeypatch.setattr(tcp_splice, "is_loopback_peer", lambda host: False)
        client = socket.create_connection(("127.0.0.1", b.port), timeout=5)
        assert b.pump(lambda: len(taken) == 1)
        assert taken[0][1] == b.target_port
        assert b.handler.flow_count() == 0
        # a refused hand-over resets the client
        taken[0][0].close()
        client.close()
    finally:
        b.close()


# auto scan of the host's loopback ------------------------------------------------

_TCP_TABLE = """\
  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:1452 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1
   1: 00000000:0016 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 2 1
   2: 0200000A:0050 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 3 1
   3: 0100007F:1F90 0100007F:C000 01 00000000:00000000 00:00000000 00000000     0        0 4 1
"""
_TCP6_TABLE = """\
  sl  local_address                         remote_address                        st
   0: 00000000000000000000000001000000:1F91 00000000000000000000000000000000:0000 0A
   1: 00000000000000000000000000000000:1F92 00000000000000000000000000000000:0000 0A
   2: 0000000000000000FFFF00000100007F:1F93 00000000000000000000000000000000:0000 0A
   3: 000080FE00000000000000000100000A:1F94 00000000000000000000000000000000:0000 0A
"""


@pytest.mark.conformance("opt.tcp-ns")
def test_scan_counts_loopback_and_wildcard_listeners_only() -> None:
    """-T auto: listeners on 127.x, 0.0.0.0, ::1, :: and ::ffff:127.x count; others and non-listeners don't."""
    assert parse_loopback_ports(_TCP_TABLE, tcp=True) == {0x1452, 0x16}
    assert parse_loopback_ports(_TCP6_TABLE, tcp=True) == {0x1F91, 0x1F92, 0x1F93}


def test_scan_udp_unconnected_only() -> None:
    """-U auto: bound, unconnected UDP sockets on loopback or wildcard."""
    table = (
        "  sl  local_address rem_address   st\n"
        "   0: 0100007F:0035 00000000:0000 07\n"
        "   1: 0100007F:0036 0100007F:1234 01\n"
        "   2: 0100000A:0037 00000000:0000 07\n"
        "garbage\n"
        "   3: zz:yy 00000000:0000 07\n"
    )
    assert parse_loopback_ports(table, tcp=False) == {0x35}


def test_scan_live_sees_our_loopback_listener() -> None:
    """The live scan of this namespace finds a listener we just bound on 127.0.0.1."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen()
    try:
        assert s.getsockname()[1] in tcp_splice.scan_loopback_ports(True)
    finally:
        s.close()


def test_loopback_or_wildcard() -> None:
    assert loopback_or_wildcard(socket.inet_pton(socket.AF_INET, "127.0.0.53"))
    assert not loopback_or_wildcard(socket.inet_pton(socket.AF_INET, "10.0.0.1"))
    assert loopback_or_wildcard(socket.inet_pton(socket.AF_INET6, "::"))
    assert not loopback_or_wildcard(socket.inet_pton(socket.AF_INET6, "::ffff:10.0.0.1"))


def test_handler_close_resets_open_connections(bench: Bench) -> None:
    """close() resets live connections and releases their descriptors."""
    client, server = bench.connect()
    base = open_fds()
    bench.handler.close()
    bench.handler = SpliceHandler(bench.ctx, target_socket=socket.socket)  # for the fixture's close
    # 2 sockets, 4 pipe ends and the old epoll closed; the new handler's epoll opened
    assert open_fds() == base - 6
    server.settimeout(2)
    with pytest.raises(ConnectionResetError):
        server.recv(10)
    client.close()
    server.close()
