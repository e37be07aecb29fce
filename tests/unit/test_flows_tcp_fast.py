"""TCP tap fast path: event-driven ACK reflection, delayed pure ACKs, socket tuning.

These pin the behaviour docs/performance.md ("TCP tap path: profile notes")
explains: the guest must learn what the peer acknowledged when the peer
acknowledges it (an error-queue event, SO_TIMESTAMPING TX_ACK), not at the
next ACK_POLL_S tick; a pure ACK for less than one MSS waits a little for the
peer's answer to carry it; window changes alone only make an ACK when they
matter; host sockets get a send buffer large enough for the window we
announce.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from typing import Any

import pytest

from passt.flows import tcp as tcp_mod
from passt.flows import tcp_decide, tcp_kernel, tcp_state, tcp_timers
from tests.unit.tcp_fakes import (
    G4,
    LO4,
    Guest,
    Server,
    gather,
    make_handler,
    open_conn,
    pump,
)


def the_conn(h: Any) -> Any:
    (conn,) = h.flows.values()
    return conn


def acked_by_us(g: Any) -> int:
    """Bytes of guest data our ACKs cover so far."""
    acked: int = (g.snd_una - g.isn - 1) & 0xFFFFFFFF
    return acked


def run_slow_peer(ack_events: bool) -> tuple[int, int, float]:
    """A guest overruns a peer that is not reading; the peer starts reading; how soon do our ACKs follow?

    Returns (bytes sent, bytes acked before the peer read, seconds until all was acked or -1).
    """
    release = threading.Event()

    def script(conn: socket.socket) -> None:
        release.wait(20)
        while conn.recv(1 << 20):
            pass

    ctx, tap, h = make_handler(ack_events=ack_events)
    srv = Server(4, script, rcvbuf=4096)
    try:
        g = open_conn(ctx, tap, h, 4, srv.port)
        blob = os.urandom(400_000)
        for off in range(0, len(blob), 50_000):
            g.send_data(blob[off : off + 50_000])
        assert pump(ctx, lambda: srv.conns != [], timeout=5)
        # Let the kernel settle: the peer's window closes, data waits unacknowledged.
        pump(ctx, lambda: False, timeout=0.2, step=lambda: g.absorb(g.take()))
        before = acked_by_us(g)
        release.set()
        t0 = time.monotonic()
        done = pump(ctx, lambda: g.absorb(g.take()) >= 0 and g.snd_una == g.snd_nxt, timeout=0.8)
        return len(blob), before, (time.monotonic() - t0) if done else -1.0
    finally:
        release.set()
        h.close()
        srv.close()


@pytest.mark.conformance("tcp.ack-as-peer-acks")
def test_ack_follows_peer_ack_without_poll_timer(monkeypatch: pytest.MonkeyPatch) -> None:
    """The guest's ACK follows the peer's as it happens: a peer ACK wakes us (TX_ACK), no poll timer needed."""
    monkeypatch.setattr(tcp_timers, "ACK_POLL_S", 30.0)  # the fallback poll can't help here
    sent, before, took = run_slow_peer(ack_events=True)
    assert before < sent  # the peer had not acknowledged everything: we had not ACKed it either
    assert 0 <= took < 0.5


def test_without_ack_events_only_the_poll_timer_acks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Control for the test above: without TX_ACK events and with the poll pushed away, the ACKs stall."""
    monkeypatch.setattr(tcp_timers, "ACK_POLL_S", 30.0)
    sent, before, took = run_slow_peer(ack_events=False)
    assert before < sent
    assert took < 0  # nothing told us the peer acknowledged


def test_host_socket_tuning() -> None:
    """Host sockets: TCP_NODELAY at once; the requested SO_SNDBUF (doubled by the kernel) and
    ACK timestamps only once the guest sends in bulk (short flows skip those system calls)."""
    ctx, tap, h = make_handler(sndbuf=1 << 20)

    def script(conn: socket.socket) -> None:
        while conn.recv(1 << 16):
            pass

    srv = Server(4, script)
    try:
        g = open_conn(ctx, tap, h, 4, srv.port)
        sock = the_conn(h).sock
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1
        with open("/proc/sys/net/core/wmem_max", encoding="ascii") as f:
            wmem_max = int(f.read())
        bulk_sndbuf = 2 * min(1 << 20, wmem_max)
        assert sock.getsockopt(socket.SOL_SOCKET, tcp_kernel.SO_TIMESTAMPING) == 0
        g.send_data(b"q" * 100)
        pump(ctx, lambda: g.absorb(g.take()) >= 0 and g.snd_una == g.snd_nxt, timeout=2)
        assert sock.getsockopt(socket.SOL_SOCKET, tcp_kernel.SO_TIMESTAMPING) == 0
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF) != bulk_sndbuf
        blob = os.urandom(tcp_decide.BULK_BYTES)
        for off in range(0, len(blob), 16384):
            g.send_data(blob[off : off + 16384])
            pump(ctx, lambda: g.absorb(g.take()) >= 0 and g.snd_una == g.snd_nxt, timeout=2)
        assert pump(ctx, lambda: g.absorb(g.take()) >= 0 and g.snd_una == g.snd_nxt, timeout=3)
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF) == bulk_sndbuf
        flags = sock.getsockopt(socket.SOL_SOCKET, tcp_kernel.SO_TIMESTAMPING)
        assert flags == tcp_kernel.ACK_TSTAMP_FLAGS
    finally:
        h.close()
        srv.close()


def test_default_sndbuf_is_half_the_autotuning_ceiling() -> None:
    """Asked for: half of tcp_wmem's maximum, which the kernel doubles to the autotuning ceiling."""
    with open("/proc/sys/net/ipv4/tcp_wmem", encoding="ascii") as f:
        ceiling = int(f.read().split()[2])
    assert tcp_kernel.default_sndbuf() == ceiling // 2


def test_connect_answered_in_the_same_turn() -> None:
    """A handshake the kernel completes inside connect() gets its SYN-ACK without another loop turn."""
    ctx, tap, h = make_handler()
    srv = Server(4, lambda conn: conn.recv(10))
    try:
        g = Guest(ctx, tap, h, 4, G4, 41000, LO4, srv.port)
        g.syn()  # from_tap only: the loop does not run
        segs = g.take()
        assert len(segs) == 1 and segs[0].flags == "SA"
        assert segs[0].ack == (g.isn + 1) & 0xFFFFFFFF
    finally:
        h.close()
        srv.close()


def test_small_request_ack_rides_on_the_answer(monkeypatch: pytest.MonkeyPatch) -> None:
    """A 1-byte request gets no pure ACK of its own: the peer's answer carries the ACK (TCP_RR)."""
    monkeypatch.setattr(tcp_timers, "ACK_DELAY_S", 5.0)  # never fires during the test

    def script(conn: socket.socket) -> None:
        while data := conn.recv(100):
            conn.sendall(data.upper())

    ctx, tap, h = make_handler()
    srv = Server(4, script)
    try:
        g = open_conn(ctx, tap, h, 4, srv.port)
        segs: list[Any] = []

        def answered() -> bool:
            return gather(g, segs) and any(s.payload for s in segs)

        for req in (b"a", b"b", b"c"):
            g.send_data(req)
            segs.clear()
            assert pump(ctx, answered)
            assert len(segs) == 1  # the answer, and nothing before it
            assert segs[0].payload == req.upper()
            assert segs[0].ack == g.snd_nxt  # the answer acknowledges the request
            g.absorb(segs)
    finally:
        h.close()
        srv.close()


def test_small_segment_ack_delayed_at_most_ack_delay() -> None:
    """Without an answer, the pure ACK for a small segment still comes, after about ACK_DELAY_S."""
    release = threading.Event()

    def script(conn: socket.socket) -> None:
        conn.recv(100)
        release.wait(10)

    ctx, tap, h = make_handler()
    srv = Server(4, script)
    try:
        g = open_conn(ctx, tap, h, 4, srv.port)
        t0 = time.monotonic()
        g.send_data(b"x" * 10)
        ctx.loop.run_once(0)
        assert [s for s in g.take() if s.ack == g.snd_nxt] == []  # not in the same turn
        segs: list[Any] = []
        assert pump(ctx, lambda: gather(g, segs) and any(s.ack == g.snd_nxt for s in segs), timeout=1)
        took = time.monotonic() - t0
        assert tcp_timers.ACK_DELAY_S * 0.9 <= took < 0.2
        assert all(s.payload == b"" for s in segs)
    finally:
        release.set()
        h.close()
        srv.close()


def test_full_segment_acked_in_the_same_turn() -> None:
    """Bulk data (a full MSS or more acknowledged) is ACKed at once, never delayed."""

    def script(conn: socket.socket) -> None:
        while conn.recv(1 << 20):
            pass

    ctx, tap, h = make_handler(tap_mtu=1500)
    srv = Server(4, script)
    try:
        g = open_conn(ctx, tap, h, 4, srv.port, mss=1460)
        g.send_data(os.urandom(1460))
        # Loopback: the peer's kernel ACKs inside send(); one turn reflects it.
        assert pump(ctx, lambda: g.absorb(g.take()) >= 0 and g.snd_una == g.snd_nxt, timeout=1)
        # (pump turns use 5 ms selects: well below ACK_POLL_S, and no delayed-ACK wait)
    finally:
        h.close()
        srv.close()


def _spy_tcp_info(monkeypatch: pytest.MonkeyPatch) -> list[socket.socket]:
    """The sockets TcpHandler asks TCP_INFO of, from now on (the real call still runs)."""
    calls: list[socket.socket] = []
    real = tcp_kernel.tcp_info

    def spy(sock: socket.socket) -> bytes:
        calls.append(sock)
        return real(sock)

    monkeypatch.setattr(tcp_mod, "tcp_info", spy)
    return calls


def test_guest_fin_after_acked_data_is_acked_without_tcp_info(monkeypatch: pytest.MonkeyPatch) -> None:
    """Request, answer, guest FIN, peer closes (TCP_CRR's close): the guest's FIN is acknowledged
    by our FIN, in one frame, and no TCP_INFO call was needed after the answer."""

    monkeypatch.setattr(tcp_timers, "ACK_DELAY_S", 5.0)  # the peer's FIN comes first, however slow

    def script(conn: socket.socket) -> None:
        conn.sendall(conn.recv(10).upper())
        conn.recv(10)  # EOF: the server closes at once
        conn.close()

    ctx, tap, h = make_handler()
    srv = Server(4, script)
    try:
        g = open_conn(ctx, tap, h, 4, srv.port)
        segs: list[Any] = []
        g.send_data(b"q")
        assert pump(ctx, lambda: gather(g, segs) and any(s.payload for s in segs))
        g.absorb(segs)
        assert the_conn(h).ack_off == the_conn(h).rcvd == 1
        calls = _spy_tcp_info(monkeypatch)
        g.send("FA")
        g.snd_nxt += 1
        segs = []
        assert pump(ctx, lambda: gather(g, segs) and any(s.ack == g.snd_nxt for s in segs))
        ctx.loop.run_once(0.05)
        gather(g, segs)
        acking = [s.flags for s in segs if s.ack == g.snd_nxt]
        assert len(acking) == 1 and "F" in acking[0], acking  # our FIN, and no pure ACK besides
        assert calls == []
    finally:
        h.close()
        srv.close()


def test_guest_fin_ack_not_held_when_peer_stays_open() -> None:
    """Half-close: the peer keeps its side open, so the ACK of the guest's FIN goes out on its own
    within ACK_DELAY_S, and the flow stays open for the peer's data."""

    release = threading.Event()

    def script(conn: socket.socket) -> None:
        conn.recv(10)  # EOF
        release.wait(5)
        conn.sendall(b"late")

    ctx, tap, h = make_handler()
    srv = Server(4, script)
    try:
        g = open_conn(ctx, tap, h, 4, srv.port)
        g.send("FA")
        g.snd_nxt += 1
        segs: list[Any] = []
        t0 = time.monotonic()
        assert pump(ctx, lambda: gather(g, segs) and any(s.ack == g.snd_nxt for s in segs))
        assert time.monotonic() - t0 < 0.5
        assert not any("F" in s.flags for s in segs)
        g.absorb(segs)
        release.set()
        got: list[Any] = []
        assert pump(ctx, lambda: gather(g, got) and any(s.payload for s in got))
        assert b"".join(s.payload for s in got) == b"late"
    finally:
        release.set()
        h.close()
        srv.close()


def test_handshake_ack_needs_no_service(monkeypatch: pytest.MonkeyPatch) -> None:
    """The guest's ACK of our SYN-ACK, alone: no TCP_INFO, no deferred service, no frame
    (tcp_decide.quiet_ack); the flow still carries data both ways afterwards."""

    def script(conn: socket.socket) -> None:
        conn.sendall(conn.recv(10).upper())

    ctx, tap, h = make_handler()
    srv = Server(4, script)
    try:
        g = Guest(ctx, tap, h, 4, G4, 41001, LO4, srv.port)
        g.syn()
        segs = g.take()
        assert [s.flags for s in segs] == ["SA"]
        g.on_synack(segs[0])
        calls = _spy_tcp_info(monkeypatch)
        g.ack()
        conn = the_conn(h)
        assert conn.state & tcp_state.ESTABLISHED
        assert not conn.dirty and h._dirty == []
        ctx.loop.run_once(0)
        assert calls == [] and g.take() == []
        g.send_data(b"hi")
        got: list[Any] = []
        assert pump(ctx, lambda: gather(g, got) and any(s.payload for s in got))
        assert b"".join(s.payload for s in got) == b"HI"
        assert calls  # the data asked for the peer's ACK
    finally:
        h.close()
        srv.close()


def test_last_ack_of_a_close_closes_inline() -> None:
    """TCP_CRR's close: the guest's ACK of our FIN (after its own FIN was acknowledged) ends the
    flow inside from_tap, without waiting for the turn's service."""

    def script(conn: socket.socket) -> None:
        conn.sendall(conn.recv(10).upper())
        conn.recv(10)  # EOF
        conn.close()

    ctx, tap, h = make_handler()
    srv = Server(4, script)
    try:
        g = open_conn(ctx, tap, h, 4, srv.port)
        got: list[Any] = []
        g.send_data(b"q")
        assert pump(ctx, lambda: gather(g, got) and any(s.payload for s in got))
        g.absorb(got, ack=False)
        g.send("FA")
        g.snd_nxt += 1
        got = []
        assert pump(ctx, lambda: gather(g, got) and any("F" in s.flags for s in got))
        (fin,) = [s for s in got if "F" in s.flags]
        assert fin.ack == g.snd_nxt  # our FIN carries the ACK of the guest's
        assert h.flow_count() == 1
        g.absorb(got, ack=False)
        g.send("A")  # from_tap only: the loop does not run
        assert h.flow_count() == 0 and h._dirty == []
        assert ctx.counters.events.get("tcp_closed") == 1
    finally:
        h.close()
        srv.close()


def test_guest_syn_arms_one_timer(monkeypatch: pytest.MonkeyPatch) -> None:
    """A connect done inside connect() arms only the SYN-ACK's RTO (no handshake timer to cancel);
    one still in progress arms the handshake timeout."""
    srv = Server(4, lambda conn: conn.recv(10), count=2)
    ctx, tap, h = make_handler()
    try:
        g = Guest(ctx, tap, h, 4, G4, 41002, LO4, srv.port)
        g.syn()
        conn = the_conn(h)
        assert conn.state & tcp_state.SYNACK_SENT
        assert conn.timer is not None and conn.timer.deadline == conn.rto_deadline
        live = [t for _, _, t in ctx.loop._timers if not t.cancelled]
        assert [t for _, _, t in ctx.loop._timers if t.cancelled] == [] and conn.timer in live
        monkeypatch.setattr(h, "_connected_now", lambda conn: 0)  # as if the peer were far away
        g2 = Guest(ctx, tap, h, 4, G4, 41003, LO4, srv.port)
        g2.syn()
        (slow,) = [c for c in h.flows.values() if c is not conn]
        assert slow.state & tcp_state.CONNECTING
        assert slow.timer is not None and slow.timer.deadline == slow.syn_deadline
    finally:
        h.close()
        srv.close()
