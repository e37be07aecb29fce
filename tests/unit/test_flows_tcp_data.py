"""TCP data path: bulk both ways, no buffering, window and ACK reflection, retransmission.

Byte-exact checks (SHA-256) over 8 MiB each way between a scripted guest and
real loopback servers, with and without tap offload; the conformance tests
prove the man page's "no stateful data buffering", "reflecting the observed
window and acknowledged data" and the TCP_INFO-before-5.3 fallback.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import socket
import struct
import termios
import threading
import time
from typing import Any

import pytest

from passt.flows import tcp as tcp_mod
from passt.flows import tcp_decide, tcp_kernel, tcp_state
from tests.unit.tcp_fakes import (
    G4,
    LO4,
    Guest,
    Sender,
    Server,
    gather,
    make_handler,
    nfds,
    open_conn,
    pump,
)

MIB = 1 << 20


def fionread(sock: socket.socket) -> int:
    """Bytes waiting in a socket's receive queue."""
    buf = fcntl.ioctl(sock.fileno(), termios.FIONREAD, b"\0\0\0\0")
    n: int = struct.unpack("i", buf)[0]
    return n


def the_conn(h: Any) -> Any:
    (conn,) = h.flows.values()
    return conn


def sender_script(data: bytes) -> Any:
    def script(conn: socket.socket) -> None:
        conn.sendall(data)
        conn.close()

    return script


def sink_script(conn: socket.socket) -> tuple[int, str]:
    digest = hashlib.sha256()
    total = 0
    while chunk := conn.recv(1 << 20):
        digest.update(chunk)
        total += len(chunk)
    conn.close()
    return total, digest.hexdigest()


BULK_CASES = [
    pytest.param(4, False, 65520, 8 * MIB, id="v4-mtu65520"),
    pytest.param(6, False, 65520, 8 * MIB, id="v6-mtu65520"),
    pytest.param(4, False, 1500, 1 * MIB, id="v4-mtu1500"),
    pytest.param(4, True, 1500, 8 * MIB, id="v4-offload-mtu1500"),
    pytest.param(6, True, 65520, 8 * MIB, id="v6-offload-mtu65520"),
]


@pytest.mark.parametrize(("af", "offload", "mtu", "size"), BULK_CASES)
def test_bulk_host_to_guest_byte_exact(af: int, offload: bool, mtu: int, size: int) -> None:
    """Host data reaches the guest byte-exact, in frames within MSS (or GSO bounds)."""
    data = os.urandom(size)
    ctx, tap, h = make_handler(offload=offload, tap_mtu=mtu)
    srv = Server(af, sender_script(data))
    before = nfds()
    try:
        g = open_conn(ctx, tap, h, af, srv.port, mss=mtu - (40 if af == 4 else 60))
        mss = g.peer_mss_for_gso()
        assert pump(ctx, lambda: g.got_fin, timeout=60, step=lambda: g.absorb(g.take()))
        assert g.nreceived == size
        assert g.digest.hexdigest() == hashlib.sha256(data).hexdigest()
        sizes = [len(s.payload) for s in g.segs if s.payload]
        if offload:
            assert max(sizes) <= 65535 - 40
            if mtu == 1500:
                assert max(sizes) > mss  # real GSO frames were built
        else:
            assert max(sizes) <= mss
        g.send("FA")
        g.snd_nxt += 1
        assert pump(ctx, lambda: h.flow_count() == 0, step=lambda: g.absorb(g.take()))
        srv.join()
        assert nfds() == before
    finally:
        h.close()
        srv.close()


@pytest.mark.parametrize(("af", "offload", "mtu", "size"), BULK_CASES)
def test_bulk_guest_to_host_byte_exact(af: int, offload: bool, mtu: int, size: int) -> None:
    """Guest data reaches the host peer byte-exact; ACKs follow what the peer acknowledged."""
    data = os.urandom(size)
    ctx, tap, h = make_handler(offload=offload, tap_mtu=mtu)
    srv = Server(af, sink_script)
    try:
        g = open_conn(ctx, tap, h, af, srv.port)
        tx = Sender(g, data, chunk=min(g.peer_mss, 65000) if not offload else 64000)
        assert pump(ctx, lambda: tx.done, timeout=90, step=tx.step)
        g.send("FA")
        g.snd_nxt += 1
        srv.join()
        assert srv.results == [(size, hashlib.sha256(data).hexdigest())]
        assert pump(ctx, lambda: g.got_fin, step=lambda: g.absorb(g.take()))
        assert pump(ctx, lambda: h.flow_count() == 0, step=lambda: g.absorb(g.take()))
    finally:
        h.close()
        srv.close()


@pytest.mark.conformance("tcp.no-buffering")
def test_host_data_stays_in_socket_until_guest_acks() -> None:
    """No user-space buffering: sent-but-unacked data stays in the kernel socket until the guest ACKs it."""
    # Less than the default receive buffer: the kernel must be able to hold all of it.
    data = os.urandom(60_000)
    release = threading.Event()

    def script(conn: socket.socket) -> None:
        conn.sendall(data)
        release.wait(10)
        conn.close()

    ctx, tap, h = make_handler(tap_mtu=1500)
    srv = Server(4, script)
    try:
        g = open_conn(ctx, tap, h, 4, srv.port, mss=1460)
        sock = the_conn(h).sock
        assert pump(ctx, lambda: g.absorb(g.take(), ack=False) >= 0 and g.nreceived == len(data), timeout=10)
        # Everything went to the guest, yet all of it is still queued in the host socket.
        assert fionread(sock) == len(data)
        g.send("A", ack=g.peer_isn + 1 + 25_000)
        assert pump(ctx, lambda: fionread(sock) == len(data) - 25_000)
        g.ack()
        assert pump(ctx, lambda: fionread(sock) == 0)
        assert g.digest.hexdigest() == hashlib.sha256(data).hexdigest()
    finally:
        release.set()
        h.close()
        srv.close()


def test_host_data_sent_only_within_guest_window() -> None:
    """We never have more unacknowledged data towards the guest than its window allows."""
    data = os.urandom(300_000)
    ctx, tap, h = make_handler(tap_mtu=1500)
    srv = Server(4, sender_script(data))
    try:
        g = open_conn(ctx, tap, h, 4, srv.port, mss=1460, rcv_wnd=40_000)
        g.ack()  # announce the small window
        pump(ctx, lambda: False, timeout=0.2, step=lambda: g.absorb(g.take(), ack=False))
        assert 0 < g.nreceived <= 40_000
        g.ack()
        assert pump(ctx, lambda: g.got_fin, timeout=20, step=lambda: g.absorb(g.take()))
        assert g.digest.hexdigest() == hashlib.sha256(data).hexdigest()
    finally:
        h.close()
        srv.close()


@pytest.mark.conformance("tcp.window-reflect", "tcp.ack-as-peer-acks")
def test_window_and_ack_reflect_the_peer() -> None:
    """The window announced to the guest is the peer's (zero when it stops reading), and ACKs cover only what the peer acknowledged."""
    release = threading.Event()
    drained: list[int] = []

    def script(conn: socket.socket) -> None:
        release.wait(20)
        total = 0
        while chunk := conn.recv(1 << 20):
            total += len(chunk)
        drained.append(total)

    ctx, tap, h = make_handler()
    srv = Server(4, script, rcvbuf=4096)
    try:
        g = open_conn(ctx, tap, h, 4, srv.port)
        conn = the_conn(h)
        # A guest ignoring our window: 600 kB the socket accepts but the peer cannot take.
        blob = os.urandom(600_000)
        for off in range(0, len(blob), 60_000):
            g.send_data(blob[off : off + 60_000])
        assert pump(ctx, lambda: srv.conns != [], timeout=5)
        peer = srv.conns[0]

        def settled() -> bool:
            g.absorb(g.take())
            acked = (g.snd_una - g.isn - 1) & 0xFFFFFFFF
            return g.segs[-1].window == 0 and acked == fionread(peer)

        assert pump(ctx, settled, timeout=10)
        acked = (g.snd_una - g.isn - 1) & 0xFFFFFFFF
        # The kernel accepted far more than the peer acknowledged: our ACK followed the peer.
        assert 0 < acked < len(blob)
        assert conn.rcvd > acked
        # Zero window reflected; the peer reads, the window opens and everything gets acked.
        release.set()
        assert pump(ctx, lambda: g.absorb(g.take()) >= 0 and g.snd_una == g.snd_nxt, timeout=10)
        assert g.segs[-1].window > 0
        # At rest, the announced window equals TCP_INFO's snd_wnd (capped by SO_SNDBUF), scaled.
        time.sleep(0.05)
        g.send("A", seq=g.snd_nxt - 1)  # keep-alive: forces a fresh ACK
        answer: list[Any] = []
        assert pump(ctx, lambda: gather(g, answer) and bool(answer), timeout=2)
        info = conn.sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 232)
        snd_wnd = struct.unpack_from("I", info, 228)[0]
        sndbuf = conn.sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF)
        assert answer[-1].window == min(min(snd_wnd, sndbuf) >> tcp_decide.OUR_WS, 65535) > 0
        accepted = conn.rcvd
        g.send("FA")
        g.snd_nxt += 1
        srv.join()
        assert drained == [accepted]
    finally:
        release.set()
        h.close()
        srv.close()


@pytest.mark.conformance("tcp.snd_wnd-fallback")
def test_snd_wnd_fallback_fixed_window_ack_on_enqueue(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without tcpi_snd_wnd (Linux < 5.3) the window is a fixed 14600 bytes and data is ACKed once enqueued."""
    release = threading.Event()

    def script(conn: socket.socket) -> None:
        release.wait(20)
        while conn.recv(1 << 20):
            pass

    ctx, tap, h = make_handler()
    # A pre-5.3 kernel: struct tcp_info ends before tcpi_snd_wnd.
    monkeypatch.setattr(tcp_mod, "tcp_info", lambda sock: bytes(192))
    srv = Server(4, script, rcvbuf=4096)
    try:
        g = open_conn(ctx, tap, h, 4, srv.port)
        synack = g.segs[0]
        assert synack.window == tcp_decide.SND_WND_FALLBACK
        blob = os.urandom(100_000)
        g.send_data(blob[:50_000])
        g.send_data(blob[50_000:])
        segs: list[Any] = []
        assert pump(ctx, lambda: gather(g, segs) and bool(segs) and segs[-1].ack == g.snd_nxt)
        # ACKed on enqueue although the peer (not reading, 4 KiB buffer) cannot have acked it.
        assert segs[-1].ack == g.snd_nxt
        assert segs[-1].window == tcp_decide.SND_WND_FALLBACK >> tcp_decide.OUR_WS
        assert ctx.counters.events["tcp_snd_wnd_fallback"] == 1
    finally:
        release.set()
        h.close()
        srv.close()


def test_fast_retransmit_after_dropped_segment() -> None:
    """A segment the guest lost is re-peeked from the socket after three duplicate ACKs."""
    data = os.urandom(30_000)
    ctx, tap, h = make_handler(tap_mtu=1500)
    srv = Server(4, sender_script(data))
    try:
        g = open_conn(ctx, tap, h, 4, srv.port, mss=1460)
        segs: list[Any] = []
        assert pump(ctx, lambda: gather(g, segs) and sum(len(s.payload) for s in segs) >= 5 * 1460)
        lost = next(s for s in segs if s.payload)
        segs.remove(lost)
        g.absorb(segs, ack=False)  # everything after the hole is out of order: ignored
        assert g.nreceived == 0
        for _ in range(3):
            g.ack()  # duplicate ACKs for the lost segment's sequence number
        assert pump(ctx, lambda: g.got_fin, timeout=10, step=lambda: g.absorb(g.take()))
        assert g.digest.hexdigest() == hashlib.sha256(data).hexdigest()
        assert ctx.counters.events["tcp_fast_retransmit"] >= 1
        assert sum(1 for s in g.segs if s.seq == lost.seq and s.payload) >= 1
    finally:
        h.close()
        srv.close()


def test_retransmit_after_our_fin_resends_data_then_fin() -> None:
    """Lost data before our FIN: the rewind clears FIN_SENT (tcp_state EV_FIN_RESEND), data then FIN go again.

    Without the backward step the flow would not peek again (FIN_SENT
    stops `_push`) and the guest would never get the bytes it lost.
    """
    data = os.urandom(3000)
    ctx, tap, h = make_handler(tap_mtu=1500)
    srv = Server(4, sender_script(data))
    try:
        g = open_conn(ctx, tap, h, 4, srv.port, mss=1460)
        first: list[Any] = []
        assert pump(ctx, lambda: gather(g, first) and any("F" in s.flags for s in first))
        fin = next(s for s in first if "F" in s.flags)
        assert fin.seq == (g.rcv_nxt + len(data)) & 0xFFFFFFFF
        conn = next(iter(h.flows.values()))
        assert conn.state & tcp_state.FIN_SENT
        for _ in range(3):
            g.ack()  # every data segment and the FIN lost: duplicate ACKs
        again: list[Any] = []
        assert pump(ctx, lambda: gather(g, again) and any("F" in s.flags for s in again))
        assert again[0].payload and again[0].seq == g.rcv_nxt  # from the hole, not after the FIN
        assert next(s for s in again if "F" in s.flags).seq == fin.seq
        g.absorb(again)
        assert g.got_fin and g.digest.hexdigest() == hashlib.sha256(data).hexdigest()
        assert conn.state & tcp_state.FIN_ACKED
        g.send_data(b"", flags="FA")
        assert pump(ctx, lambda: h.flow_count() == 0, step=lambda: g.absorb(g.take()))
    finally:
        h.close()
        srv.close()


def test_rto_retransmit_when_guest_silent() -> None:
    """Unacknowledged data is sent again after the retransmission timeout (1 s)."""
    data = os.urandom(5000)
    ctx, tap, h = make_handler(tap_mtu=1500)
    srv = Server(4, sender_script(data))
    try:
        g = open_conn(ctx, tap, h, 4, srv.port, mss=1460)
        first: list[Any] = []
        assert pump(ctx, lambda: gather(g, first) and any(s.payload for s in first))
        t0 = time.monotonic()
        again: list[Any] = []
        assert pump(ctx, lambda: gather(g, again) and any(s.payload for s in again), timeout=3)
        assert time.monotonic() - t0 >= 0.8
        seq0 = next(s for s in first if s.payload).seq
        assert next(s for s in again if s.payload).seq == seq0
        g.absorb(again)
        assert pump(ctx, lambda: g.got_fin, timeout=5, step=lambda: g.absorb(g.take()))
        assert g.digest.hexdigest() == hashlib.sha256(data).hexdigest()
    finally:
        h.close()
        srv.close()


def test_zero_window_from_guest_stops_then_probes() -> None:
    """A zero guest window stops the data; a probe at RTO learns the reopened window."""
    data = os.urandom(100_000)
    ctx, tap, h = make_handler(tap_mtu=1500)
    srv = Server(4, sender_script(data))
    try:
        g = open_conn(ctx, tap, h, 4, srv.port, mss=1460, rcv_wnd=128 * 128)
        assert pump(ctx, lambda: g.absorb(g.take(), ack=False) >= 0 and g.nreceived >= 128 * 128)
        assert g.nreceived == 128 * 128
        g.send("A", window=0)  # everything received, window closed
        pump(ctx, lambda: False, timeout=0.3)
        assert [s for s in g.take() if s.payload] == []
        probe: list[Any] = []
        assert pump(ctx, lambda: gather(g, probe) and bool(probe), timeout=3)
        assert probe[0].payload == b"" and probe[0].seq == (g.rcv_nxt - 1) & 0xFFFFFFFF
        assert ctx.counters.events["tcp_window_probe"] == 1
        g.rcv_wnd = 4 << 20
        g.ack()  # the probe's answer: window open again
        assert pump(ctx, lambda: g.got_fin, timeout=10, step=lambda: g.absorb(g.take()))
        assert g.digest.hexdigest() == hashlib.sha256(data).hexdigest()
    finally:
        h.close()
        srv.close()


class NoPeekOffSocket(socket.socket):
    """A socket as on kernels before TCP supported SO_PEEK_OFF."""

    def setsockopt(self, level: int, opt: int, value: Any, *rest: Any) -> None:
        if level == socket.SOL_SOCKET and opt == tcp_kernel.SO_PEEK_OFF:
            raise OSError(95, "Operation not supported")
        super().setsockopt(level, opt, value, *rest)


def test_without_so_peek_off_data_still_exact() -> None:
    """Without SO_PEEK_OFF, in-flight bytes are peeked into scratch: data and retransmits stay exact."""
    data = os.urandom(2 * MIB)
    ctx, tap, h = make_handler(socket_factory=NoPeekOffSocket)
    srv = Server(4, sender_script(data))
    try:
        g = open_conn(ctx, tap, h, 4, srv.port)
        assert not the_conn(h).peek_off
        segs: list[Any] = []
        assert pump(ctx, lambda: gather(g, segs) and len([s for s in segs if s.payload]) >= 2)
        data_segs = [s for s in segs if s.payload]
        g.absorb(data_segs[1:], ack=False)  # lose the first one
        for _ in range(3):
            g.ack()
        assert pump(ctx, lambda: g.got_fin, timeout=20, step=lambda: g.absorb(g.take()))
        assert g.digest.hexdigest() == hashlib.sha256(data).hexdigest()
        assert ctx.counters.events["tcp_no_peek_off"] == 1
    finally:
        h.close()
        srv.close()


def test_thousand_short_connections_leave_nothing_behind() -> None:
    """1000 open/exchange/close cycles: flow count and descriptors return to idle."""
    n = 1000

    def script(conn: socket.socket) -> None:
        data = b""
        while chunk := conn.recv(100):
            data += chunk
        conn.sendall(data.upper())
        conn.close()

    ctx, tap, h = make_handler()
    srv = Server(4, script, count=n)
    before = nfds()

    def cycle(i: int) -> None:
        g = Guest(ctx, tap, h, 4, G4, 20000 + i, LO4, srv.port)
        g.syn()
        got: list[Any] = []
        assert pump(ctx, lambda: gather(g, got) and bool(got))
        g.on_synack(got[0])
        g.send_data(b"ping", flags="FPA")
        assert pump(ctx, lambda: g.got_fin, step=lambda: g.absorb(g.take()))
        assert pump(ctx, lambda: h.flow_count() == 0, step=lambda: g.absorb(g.take()))
        assert bytes(g.digest.digest()) == hashlib.sha256(b"PING").digest()

    try:
        for i in range(n):
            cycle(i)
        srv.join()
        assert h.flow_count() == 0
        srv.conns.clear()
        assert nfds() == before
        assert ctx.loop.registered_count == 1  # only the handler's epoll
    finally:
        h.close()
        srv.close()


class SmallSndbufSocket(socket.socket):
    """A host socket with an 8 KiB send buffer, so a guest ignoring our window overruns it."""

    def __init__(self, family: int, type: int, proto: int = 0) -> None:
        super().__init__(family, type, proto)
        self.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 8192)


def test_partial_send_acks_only_accepted_and_nudges_retransmit() -> None:
    """When the socket takes part of a segment, only that part is ACKed; duplicate ACKs then ask for the rest."""
    release = threading.Event()
    results: list[tuple[int, str]] = []

    def script(conn: socket.socket) -> None:
        release.wait(20)
        results.append(sink_script(conn))

    ctx, tap, h = make_handler(socket_factory=SmallSndbufSocket, sndbuf=0)
    srv = Server(4, script, rcvbuf=4096)
    blob = os.urandom(300_000)
    try:
        g = open_conn(ctx, tap, h, 4, srv.port)
        conn = the_conn(h)
        tx = Sender(g, blob, chunk=10_000, stall_s=5)
        for off in range(0, len(blob), 10_000):  # ignoring the window
            g.send_data(blob[off : off + 10_000])
        assert ctx.counters.events["tcp_sndbuf_full"] >= 1
        accepted = conn.rcvd
        assert 0 < accepted < len(blob)
        hole = (g.isn + 1 + accepted) & 0xFFFFFFFF
        acks: list[Any] = []
        assert pump(ctx, lambda: gather(g, acks) and any(a.ack == hole for a in acks))
        # Nothing beyond what the socket took is ever acknowledged.
        assert all(((a.ack - hole) & 0xFFFFFFFF) == 0 or ((hole - a.ack) & 0xFFFFFFFF) < 1 << 31 for a in acks)
        release.set()
        assert pump(ctx, lambda: gather(g, acks) and sum(a.ack == hole for a in acks) >= 1 + 3, timeout=5)
        g.absorb(acks, ack=False)
        g.snd_nxt = g.snd_una  # the guest's fast retransmit after three duplicate ACKs
        assert g.snd_una == hole
        assert pump(ctx, lambda: tx.done, timeout=30, step=tx.step)
        g.send("FA")
        g.snd_nxt += 1
        srv.join()
        assert results == [(len(blob), hashlib.sha256(blob).hexdigest())]
    finally:
        release.set()
        h.close()
        srv.close()
