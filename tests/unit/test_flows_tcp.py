"""TCP translation: handshakes, resets, closes, timeouts and hostile input.

A scripted guest (tcp_fakes.Guest) talks to TcpHandler through
from_tap; real servers listen on 127.0.0.1 / ::1 in threads; every frame to
the guest is dissected by scapy and its checksums verified.
"""

from __future__ import annotations

import random
import socket
import time
from typing import Any

import pytest

from passt.flows import icmp as icmp_mod
from passt.flows import sockets, tcp_decide, tcp_open, tcp_state
from passt.flows import tcp as tcp_mod
from passt.flows import udp as udp_mod
from tests.unit.conftest import GUEST_MAC_STR, OUR_MAC_STR
from tests.unit.tcp_fakes import (
    G4,
    G6,
    GW4,
    GW6,
    LO4,
    LO6,
    Guest,
    Seg,
    Server,
    build_l4,
    make_handler,
    nfds,
    open_conn,
    packed,
    pump,
)


def listener(af: int) -> socket.socket:
    s = socket.socket(socket.AF_INET if af == 4 else socket.AF_INET6, socket.SOCK_STREAM)
    s.bind((LO4 if af == 4 else LO6, 0))
    s.listen(128)
    return s


def closed_port(af: int) -> int:
    """A loopback port with nothing listening (bound then closed)."""
    s = socket.socket(socket.AF_INET if af == 4 else socket.AF_INET6, socket.SOCK_STREAM)
    s.bind((LO4 if af == 4 else LO6, 0))
    port: int = s.getsockname()[1]
    s.close()
    return port


def established(h: tcp_mod.TcpHandler, srv: Server) -> bool:
    """The server accepted and every flow of `h` is established (handshake done both ways)."""
    flows = list(h.flows.values())
    return bool(srv.conns) and bool(flows) and all(c.state & tcp_state.ESTABLISHED for c in flows)


def wait_segs(g: Guest, cond: Any = None, timeout: float = 3.0) -> list[Seg]:
    got: list[Seg] = []

    def done() -> bool:
        got.extend(g.take())
        return bool(got) if cond is None else bool(cond(got))

    assert pump(g.ctx, done, timeout), f"no frames; have {got}"
    return got


@pytest.mark.parametrize("af", [4, 6])
def test_guest_syn_gets_synack_with_mss_and_wscale(af: int) -> None:
    """A guest SYN opens a host socket; once connected the guest gets SYN-ACK with our MSS and window scale."""
    ctx, tap, h = make_handler(tap_mtu=1500)
    srv = listener(af)
    try:
        g = Guest(ctx, tap, h, af, G4 if af == 4 else G6, 40001, LO4 if af == 4 else LO6,
                  srv.getsockname()[1], mss=1400, wscale=7)
        g.syn()
        seg = wait_segs(g)[0]
        assert seg.flags == "SA"
        assert seg.ack == g.isn + 1
        assert seg.options["MSS"] == (1460 if af == 4 else 1440)
        assert seg.options["WScale"] == tcp_decide.OUR_WS
        assert "SAckOK" not in seg.options and "Timestamp" not in seg.options
        assert (seg.src, seg.sport) == (g.raddr, g.rport)
        assert (seg.dst, seg.dport) == (g.gaddr, g.gport)
        assert seg.ttl == 255 and seg.df
        assert (seg.eth_src, seg.eth_dst) == (OUR_MAC_STR, GUEST_MAC_STR)
        assert 0 < seg.window <= 65535
        assert h.flow_count() == 1
        # Complete the handshake: the host server got a real connection.
        g.on_synack(seg)
        g.ack()
        conn, _ = srv.accept()
        conn.close()
    finally:
        h.close()
        srv.close()


def test_guest_syn_without_wscale_gets_none() -> None:
    """Window scaling is only used when the guest offers it (RFC 7323 section 2.2)."""
    ctx, tap, h = make_handler()
    srv = listener(4)
    try:
        g = Guest(ctx, tap, h, 4, G4, 40002, LO4, srv.getsockname()[1], wscale=-1)
        g.syn()
        seg = wait_segs(g)[0]
        assert "WScale" not in seg.options
        assert seg.options["MSS"] == 65480
    finally:
        h.close()
        srv.close()


@pytest.mark.parametrize("af", [4, 6])
def test_refused_port_gets_rst(af: int) -> None:
    """A connection the host refuses is reset towards the guest; nothing is left open."""
    ctx, tap, h = make_handler()
    before = nfds()
    port = closed_port(af)
    g = Guest(ctx, tap, h, af, G4 if af == 4 else G6, 40003, LO4 if af == 4 else LO6, port)
    g.syn()
    seg = wait_segs(g)[0]
    assert "R" in seg.flags and "A" in seg.flags
    assert seg.ack == g.isn + 1
    assert pump(ctx, lambda: h.flow_count() == 0)
    assert nfds() == before
    h.close()


def test_duplicate_syn_tolerated_and_synack_resent() -> None:
    """Duplicate SYNs neither open a second socket nor change our ISN."""
    ctx, tap, h = make_handler()
    srv = listener(4)
    try:
        g = Guest(ctx, tap, h, 4, G4, 40004, LO4, srv.getsockname()[1])
        g.syn()
        g.syn()  # before the connect completes
        first = wait_segs(g)[0]
        assert first.flags == "SA"
        g.syn()  # after SYN-ACK: answered again, same ISN
        again = wait_segs(g)[0]
        assert again.flags == "SA" and again.seq == first.seq and again.ack == first.ack
        assert h.flow_count() == 1
        assert ctx.counters.events["tcp_dup_syn"] >= 1
    finally:
        h.close()
        srv.close()


def test_unknown_flow_ack_gets_rst() -> None:
    """A non-SYN segment for no connection gets an RST with seq = its ACK (RFC 9293 3.10.7.1)."""
    ctx, tap, h = make_handler()
    g = Guest(ctx, tap, h, 4, G4, 40005, LO4, 9)
    g.send("A", seq=5, ack=777777)
    seg = wait_segs(g)[0]
    assert seg.flags == "R" and seg.seq == 777777
    # ...and an RST for an unknown flow is not answered.
    g.send("R", seq=5, ack=0)
    ctx.loop.run_once(0.01)
    assert g.take() == []
    h.close()


def test_unknown_flow_fin_without_ack_gets_rst_ack() -> None:
    ctx, tap, h = make_handler()
    g = Guest(ctx, tap, h, 6, G6, 40006, LO6, 9)
    g.send("F", seq=100, ack=0, payload=b"abc")
    seg = wait_segs(g)[0]
    assert seg.flags == "RA" and seg.seq == 0 and seg.ack == 104
    h.close()


@pytest.mark.conformance("opt.no-tcp")
def test_no_tcp_drops_guest_segments_silently() -> None:
    """--no-tcp: TCP packets from the guest are silently dropped: no socket, no reply."""
    ctx, tap, h = make_handler(tcp=False)
    srv = listener(4)
    try:
        before = nfds()
        g = Guest(ctx, tap, h, 4, G4, 40007, LO4, srv.getsockname()[1])
        g.syn()
        g.send("A", seq=1, ack=1)
        for _ in range(5):
            ctx.loop.run_once(0.01)
        assert tap.frames == []
        assert h.flow_count() == 0
        assert nfds() == before
        assert ctx.counters.drops["tcp_disabled"] == 2
        srv.settimeout(0.05)
        with pytest.raises(TimeoutError):
            srv.accept()
    finally:
        h.close()
        srv.close()


@pytest.mark.conformance("opt.no-tcp")
def test_no_tcp_accepts_no_host_connection() -> None:
    """--no-tcp: no TCP connection is accepted host-side (the handler refuses what it is handed)."""
    ctx, tap, h = make_handler(tcp=False)
    srv = listener(4)
    srv.setblocking(False)
    cli = socket.create_connection(srv.getsockname())
    try:
        h.listen_ready(srv, 8080, time.monotonic())
        cli.settimeout(2)
        with pytest.raises(ConnectionResetError):
            cli.recv(1)
        assert tap.frames == [] and h.flow_count() == 0
    finally:
        cli.close()
        h.close()
        srv.close()


@pytest.mark.parametrize("af", [4, 6])
def test_fin_both_ways_half_close(af: int) -> None:
    """Guest FIN becomes shutdown(SHUT_WR) (half-close); host EOF becomes a FIN after the data."""

    def script(conn: socket.socket) -> bytes:
        data = b""
        while chunk := conn.recv(65536):
            data += chunk
        conn.sendall(b"reply after half-close")  # our receive side still works
        conn.close()
        return data

    ctx, tap, h = make_handler()
    srv = Server(af, script)
    before = nfds()
    try:
        g = open_conn(ctx, tap, h, af, srv.port)
        g.send_data(b"hello", flags="PA")
        g.send("FA")
        g.snd_nxt += 1
        segs = wait_segs(g, lambda s: any("F" in x.flags for x in s))
        g.keep = True
        g.absorb(segs)
        assert bytes(g.received) == b"reply after half-close"
        assert g.got_fin
        # Our ACK covers the guest's FIN once the peer acked it.
        assert pump(ctx, lambda: h.flow_count() == 0, step=lambda: g.absorb(g.take()))
        assert any(s.ack == g.snd_nxt for s in g.segs)
        srv.join()
        assert srv.results == [b"hello"]
        assert nfds() == before - 0  # the flow's socket is gone
    finally:
        h.close()
        srv.close()


def test_host_closes_first_then_guest() -> None:
    """Host EOF first: FIN to the guest; the guest's later FIN closes the flow."""

    def script(conn: socket.socket) -> bytes:
        conn.sendall(b"x" * 1000)
        conn.shutdown(socket.SHUT_WR)
        data = b""
        while chunk := conn.recv(65536):
            data += chunk
        conn.close()
        return data

    ctx, tap, h = make_handler()
    srv = Server(4, script)
    try:
        g = open_conn(ctx, tap, h, 4, srv.port)
        assert pump(ctx, lambda: g.got_fin, step=lambda: g.absorb(g.take()))
        assert g.nreceived == 1000
        assert h.flow_count() == 1  # half-closed: the guest may still send
        g.send_data(b"late data", flags="PA")
        g.send("FA")
        g.snd_nxt += 1
        assert pump(ctx, lambda: h.flow_count() == 0, step=lambda: g.absorb(g.take()))
        srv.join()
        assert srv.results == [b"late data"]
    finally:
        h.close()
        srv.close()


def test_rst_from_guest_resets_host_socket() -> None:
    """A guest RST closes the host socket with a reset; the peer sees ECONNRESET."""

    def script(conn: socket.socket) -> str:
        try:
            conn.recv(10)
        except ConnectionResetError:
            return "reset"
        return "eof"

    ctx, tap, h = make_handler()
    srv = Server(4, script)
    before = nfds()
    try:
        g = open_conn(ctx, tap, h, 4, srv.port)
        g.send("R")
        assert h.flow_count() == 0
        srv.join()
        assert srv.results == ["reset"]
        assert nfds() == before + len(srv.conns)  # only the server's own socket remains
    finally:
        h.close()
        srv.close()


def test_rst_from_host_resets_guest() -> None:
    """A reset from the host peer reaches the guest as RST and ends the flow."""

    def script(conn: socket.socket) -> None:
        conn.recv(10)
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\1\0\0\0\0\0\0\0")
        conn.close()

    ctx, tap, h = make_handler()
    srv = Server(4, script)
    try:
        g = open_conn(ctx, tap, h, 4, srv.port)
        g.send_data(b"go")
        segs = wait_segs(g, lambda s: any("R" in x.flags for x in s))
        rst = next(x for x in segs if "R" in x.flags)
        assert rst.seq == g.rcv_nxt
        assert h.flow_count() == 0
        srv.join()
    finally:
        h.close()
        srv.close()


def test_keepalive_probe_gets_ack() -> None:
    """A guest keep-alive (seq = snd_nxt - 1, no data) is answered with an ACK."""
    ctx, tap, h = make_handler()
    srv = Server(4, lambda c: c.recv(1))
    try:
        g = open_conn(ctx, tap, h, 4, srv.port)
        assert pump(ctx, lambda: established(h, srv))
        g.take()
        g.send("A", seq=g.snd_nxt - 1)
        seg = wait_segs(g)[0]
        assert seg.flags == "A" and seg.ack == g.snd_nxt and seg.seq == g.rcv_nxt
    finally:
        h.close()
        srv.close()


def test_flow_table_full_rsts_new_syn() -> None:
    """The flow table is bounded: past capacity a guest SYN is reset and counted."""
    ctx, tap, h = make_handler(capacity=1)
    srv = listener(4)
    try:
        open_conn(ctx, tap, h, 4, srv.getsockname()[1], gport=41000)
        g2 = Guest(ctx, tap, h, 4, G4, 41001, LO4, srv.getsockname()[1])
        g2.syn()
        seg = wait_segs(g2)[0]
        assert seg.flags == "RA"
        assert ctx.counters.drops["tcp_flow_table_full"] == 1
        assert h.flow_count() == 1
    finally:
        h.close()
        srv.close()


def test_tap_reset_closes_every_flow() -> None:
    def script(conn: socket.socket) -> str:
        try:
            conn.recv(10)
        except ConnectionResetError:
            return "reset"
        return "eof"

    ctx, tap, h = make_handler()
    srv = Server(4, script, count=2)
    before = nfds()
    try:
        open_conn(ctx, tap, h, 4, srv.port, gport=42000)
        open_conn(ctx, tap, h, 4, srv.port, gport=42001)
        assert h.flow_count() == 2
        h.tap_reset()
        assert h.flow_count() == 0
        srv.join()
        assert srv.results == ["reset", "reset"]
        assert nfds() == before + len(srv.conns)
    finally:
        h.close()
        srv.close()


def test_synack_retransmitted_when_guest_silent() -> None:
    """Our SYN-ACK is retransmitted (RTO 1 s) while the guest does not ACK it."""
    ctx, tap, h = make_handler()
    srv = listener(4)
    try:
        g = Guest(ctx, tap, h, 4, G4, 40010, LO4, srv.getsockname()[1])
        g.syn()
        first = wait_segs(g)[0]
        t0 = time.monotonic()
        again = wait_segs(g, timeout=3)[0]
        assert time.monotonic() - t0 >= 0.9
        assert again.flags == "SA" and again.seq == first.seq
    finally:
        h.close()
        srv.close()


def test_host_side_syn_timeout_resets_client(monkeypatch: pytest.MonkeyPatch) -> None:
    """A -t connection the guest never answers is reset after the SYN timeout."""
    monkeypatch.setattr(tcp_decide, "SYN_TIMEOUT_S", 0.3)
    ctx, tap, h = make_handler()
    srv = listener(4)
    srv.setblocking(False)
    cli = socket.create_connection(srv.getsockname())
    try:
        h.listen_ready(srv, 8080, time.monotonic())
        assert h.flow_count() == 1
        assert pump(ctx, lambda: h.flow_count() == 0, timeout=3)
        cli.settimeout(2)
        with pytest.raises(ConnectionResetError):
            cli.recv(1)
        assert ctx.counters.events["tcp_syn_timeout"] == 1
    finally:
        cli.close()
        h.close()
        srv.close()


@pytest.mark.parametrize("af", [4, 6])
def test_listen_ready_syn_from_gateway_then_data(af: int) -> None:
    """A -t connection from loopback reaches the guest as a SYN from the gateway to the guest address."""
    ctx, tap, h = make_handler()
    srv = listener(af)
    srv.setblocking(False)
    cli = socket.create_connection(srv.getsockname()[:2])
    cport = cli.getsockname()[1]
    try:
        h.listen_ready(srv, 8080, time.monotonic())
        g = Guest(ctx, tap, h, af, G4 if af == 4 else G6, 8080, GW4 if af == 4 else GW6, cport)
        syn = wait_segs(g)[0]
        assert syn.flags == "S"
        assert syn.src == (GW4 if af == 4 else GW6)
        assert syn.dst == (G4 if af == 4 else G6)
        assert (syn.sport, syn.dport) == (cport, 8080)
        assert syn.options["MSS"] == (65480 if af == 4 else 65460)
        assert syn.options["WScale"] == tcp_decide.OUR_WS
        # Guest answers SYN-ACK; we complete with an ACK.
        g.peer_isn = syn.seq
        g.rcv_nxt = syn.seq + 1
        g.peer_ws = tcp_decide.OUR_WS
        g.send("SA", seq=g.isn, ack=syn.seq + 1, window=65535, options=[("MSS", 1460), ("WScale", 7)])
        g.snd_nxt = g.snd_una = g.isn + 1
        ack = wait_segs(g)[0]
        assert ack.flags == "A" and ack.ack == g.isn + 1 and ack.seq == syn.seq + 1
        # Data both ways.
        cli.sendall(b"from client")
        assert pump(ctx, lambda: g.nreceived == 11, step=lambda: g.absorb(g.take()))
        g.send_data(b"from guest")
        cli.settimeout(2)
        assert cli.recv(100) == b"from guest"
        cli.close()
        assert pump(ctx, lambda: g.got_fin, step=lambda: g.absorb(g.take()))
        g.send("FA")
        g.snd_nxt += 1
        assert pump(ctx, lambda: h.flow_count() == 0, step=lambda: g.absorb(g.take()))
    finally:
        cli.close()
        h.close()
        srv.close()


def test_listen_ready_guest_rst_resets_client() -> None:
    """The guest refusing a -t connection (RST to our SYN) resets the host client."""
    ctx, tap, h = make_handler()
    srv = listener(4)
    srv.setblocking(False)
    cli = socket.create_connection(srv.getsockname())
    cport = cli.getsockname()[1]
    try:
        h.listen_ready(srv, 8081, time.monotonic())
        g = Guest(ctx, tap, h, 4, G4, 8081, GW4, cport)
        syn = wait_segs(g)[0]
        g.send("RA", seq=0, ack=syn.seq + 1)
        assert h.flow_count() == 0
        cli.settimeout(2)
        with pytest.raises(ConnectionResetError):
            cli.recv(1)
    finally:
        cli.close()
        h.close()
        srv.close()


def test_listen_ready_accepts_a_bounded_batch() -> None:
    ctx, tap, h = make_handler()
    srv = listener(4)
    srv.setblocking(False)
    clients = [socket.create_connection(srv.getsockname()) for _ in range(tcp_open.ACCEPT_BATCH + 3)]
    try:
        time.sleep(0.05)
        h.listen_ready(srv, 8082, time.monotonic())
        assert h.flow_count() == tcp_open.ACCEPT_BATCH
        h.listen_ready(srv, 8082, time.monotonic())
        assert h.flow_count() == tcp_open.ACCEPT_BATCH + 3
    finally:
        for c in clients:
            c.close()
        h.close()
        srv.close()


def test_malformed_segments_dropped_and_counted() -> None:
    """Truncated headers and bad data offsets are dropped with a counter, never raised."""
    ctx, tap, h = make_handler()
    src, dst = packed(4, G4), packed(4, LO4)
    h.from_tap(4, src, dst, memoryview(b"\x00" * 10), time.monotonic())
    bad = bytearray(build_l4(4, G4, LO4, sport=1, dport=2, flags="S"))
    bad[12] = 0x30  # data offset 3
    h.from_tap(4, src, dst, memoryview(bytes(bad)), time.monotonic())
    bad[12] = 0xF0  # data offset 15 > 20 bytes
    h.from_tap(4, src, dst, memoryview(bytes(bad)), time.monotonic())
    assert ctx.counters.drops["tcp_short"] == 1
    assert ctx.counters.drops["tcp_doff"] == 2
    assert tap.frames == [] and h.flow_count() == 0
    h.close()


def test_syn_to_bad_destinations_dropped() -> None:
    ctx, tap, h = make_handler(loopback_dst=False)
    src = packed(4, G4)
    for dst in ("255.255.255.255", "224.0.0.1", "0.0.0.0", "0.0.0.1", LO4):
        l4 = build_l4(4, G4, dst, sport=1000, dport=80, flags="S")
        h.from_tap(4, src, packed(4, dst), memoryview(l4), time.monotonic())
    l4 = build_l4(6, G6, "::ffff:127.0.0.1", sport=1000, dport=80, flags="S")
    h.from_tap(6, packed(6, G6), packed(6, "::ffff:127.0.0.1"), memoryview(l4), time.monotonic())
    assert h.flow_count() == 0 and tap.frames == []
    assert ctx.counters.drops["tcp_bad_dst"] == 5
    assert ctx.counters.drops["tcp_dst_loopback"] == 1
    h.close()


#: One address per class, with the decision flows/sockets.py records for it
#: (docs/conformance_catalogue.toml `flows.dst-forwardable`): TCP applies the same rule.
TCP_DESTINATIONS: list[tuple[str, bool]] = [
    ("0.0.0.0", False), ("0.1.2.3", False),  # "this network" 0/8
    ("10.1.2.3", True), ("127.0.0.1", True),  # loopback: the NOTES rule, not this one
    ("169.254.1.1", True), ("223.255.255.254", True),
    ("224.0.0.1", False), ("239.255.255.250", False),  # multicast 224/4
    ("240.0.0.1", False), ("254.1.2.3", False),  # reserved 240/4 (TCP took these before)
    ("255.255.255.255", False),  # limited broadcast
    ("::", False), ("::1", True), ("fe80::1", True), ("fc00::1", True), ("2001:db8::1", True),
    ("ff02::1", False), ("ff0e::1", False),  # multicast
    ("::ffff:192.0.2.1", False),  # IPv4-mapped (RFC 4291 section 2.5.5.2)
]  # fmt: skip


@pytest.mark.parametrize(("dst", "ok"), TCP_DESTINATIONS)
def test_syn_destination_rule_per_address_class(dst: str, ok: bool) -> None:
    """A guest SYN to each address class: the shared rule decides, a socket is asked for only if it allows."""
    asked: list[int] = []

    def no_socket(family: int, kind: int, proto: int) -> socket.socket:
        asked.append(family)
        raise OSError("no sockets in this test")

    af = 6 if ":" in dst else 4
    gsrc = G4 if af == 4 else G6
    ctx, tap, h = make_handler(socket_factory=no_socket)
    try:
        assert sockets.dst_forwardable(af, packed(af, dst)) is ok
        l4 = build_l4(af, gsrc, dst, sport=1000, dport=80, flags="S")
        h.from_tap(af, packed(af, gsrc), packed(af, dst), memoryview(l4), time.monotonic())
        assert h.flow_count() == 0
        if ok:
            assert asked and ctx.counters.drops["tcp_socket"] == 1
            assert "tcp_bad_dst" not in ctx.counters.drops
            assert len(tap.frames) == 1  # RST: no socket for it
        else:
            assert not asked and ctx.counters.drops["tcp_bad_dst"] == 1
            assert tap.frames == []
    finally:
        h.close()


def test_tcp_and_udp_share_one_destination_rule() -> None:
    """TCP, UDP and ICMP call the same function, so the rule cannot drift apart."""
    for module in (tcp_open, udp_mod, icmp_mod):
        assert vars(module)["dst_forwardable"] is sockets.dst_forwardable, module.__name__


def test_fuzz_segments_into_live_flow_never_raise() -> None:
    """Garbage aimed at a live flow is only ever dropped or answered; nothing escapes."""
    ctx, tap, h = make_handler()
    srv = Server(4, lambda c: c.recv(1 << 20))
    before_flows = 0
    try:
        g = open_conn(ctx, tap, h, 4, srv.port)
        rng = random.Random(11)
        base = build_l4(4, G4, LO4, sport=g.gport, dport=g.rport, seq=g.snd_nxt, ack=g.rcv_nxt,
                        flags="PA", payload=b"z" * 30)
        src, dst = packed(4, G4), packed(4, LO4)
        for _ in range(2000):
            data = bytearray(base)
            for _ in range(rng.randint(1, 4)):
                data[rng.randrange(20)] = rng.randrange(256)
            if rng.random() < 0.3:
                del data[rng.randrange(len(data)) :]
            h.from_tap(4, src, dst, memoryview(bytes(data)), time.monotonic())
            if rng.random() < 0.05:
                ctx.loop.run_once(0)
        for _ in range(5):
            ctx.loop.run_once(0.01)
        assert h.flow_count() >= before_flows
    finally:
        h.close()
        srv.close()


def test_out_of_order_guest_data_not_sent_and_dup_acked() -> None:
    """Data beyond a gap is not written to the socket; the guest gets a duplicate ACK."""
    ctx, tap, h = make_handler()
    got: list[bytes] = []

    def script(conn: socket.socket) -> None:
        conn.settimeout(1)
        try:
            while chunk := conn.recv(100):
                got.append(chunk)
        except TimeoutError:
            pass

    srv = Server(4, script)
    try:
        g = open_conn(ctx, tap, h, 4, srv.port)
        assert pump(ctx, lambda: established(h, srv))
        g.take()
        g.send("PA", seq=g.snd_nxt + 5, payload=b"later")
        seg = wait_segs(g)[0]
        assert seg.flags == "A" and seg.ack == g.snd_nxt
        g.send_data(b"first")
        g.send_data(b"later")
        srv.join()
        assert b"".join(got) == b"firstlater"
    finally:
        h.close()
        srv.close()
