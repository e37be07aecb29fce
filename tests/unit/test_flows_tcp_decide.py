"""tcp_decide: the TCP translation's rules, driven with numbers only (no socket, no handler).

Each table row is a flow's starting numbers, one input (a guest segment's
fields, the kernel's numbers, or a timer firing) and the action and fields
expected after it.  Sequence numbers are written as offsets: a guest
segment's seq is G + 1 + offset, its ack I + 1 + offset (G, I: the ISNs).
"""

from __future__ import annotations

import ast
import inspect
import itertools
import re
from types import ModuleType
from typing import Any

import pytest

from passt.flows import tcp_decide as d
from passt.flows import tcp_state
from passt.flows.tcp_decide import TcpFlow
from passt.flows.tcp_state import (
    CONNECTING,
    ESTABLISHED,
    FIN_ACKED,
    FIN_SENT,
    GUEST_FIN,
    GUEST_FIN_ACKED,
    SOCK_EOF,
    SYN_SENT,
    SYNACK_SENT,
)
from passt.wire import tcp as wire_tcp
from passt.wire.tcp import ACK, FIN, PSH, RST, SYN, TcpSegment

EST = ESTABLISHED
I = 1_000_000  # our ISN  # noqa: E741
G = 7_000_000  # the guest's ISN
NOW = 100.0


def flow(**fields: Any) -> TcpFlow:
    """An established IPv4 flow with MSS 1460, no window scaling, then `fields` applied."""
    c = TcpFlow(4, I, NOW)
    c.state = EST
    c.g_isn = G
    c.mss = 1460
    c.wnd_from_guest = c.wnd_raw_from_guest = 65535
    for name, value in fields.items():
        setattr(c, name, value)
    return c


def gseq(off: int) -> int:
    return (G + 1 + off) & 0xFFFFFFFF


def gack(off: int) -> int:
    return (I + 1 + off) & 0xFFFFFFFF


def seg(flags: int, seq: int = 0, ack: int = 0, window: int = 65535, mss: int = 0, wscale: int = -1) -> TcpSegment:
    return TcpSegment(40000, 80, seq, ack, flags, window, 20, mss, wscale)


def check(c: TcpFlow, want: dict[str, Any]) -> None:
    got = {name: getattr(c, name) for name in want}
    assert got == want


# the module itself -------------------------------------------------------------------
_TABLE_ROW = re.compile(r"^ {4}(?:[a-z_]+)?\s+([A-Z][A-Z_]+)\s+(-?\d+)\s+\S", re.M)
_ACTION_PREFIXES = ("HS_", "A_", "D_", "T_", "Q_", "P_", "E_", "TM_", "ROOM_")


def test_docstring_table_matches_the_constants() -> None:
    """Every action the decisions return is in the module docstring's table, with its value."""
    doc = d.__doc__ or ""
    rows = {name: int(value) for name, value in _TABLE_ROW.findall(doc)}
    consts = {
        name: value
        for name, value in vars(d).items()
        if name.startswith(_ACTION_PREFIXES) and isinstance(value, int)
    }
    assert rows == consts


def test_table_names_the_decisions_that_exist() -> None:
    doc = d.__doc__ or ""
    section = doc[doc.index("decision           returns") : doc.index("State bits and transitions")]
    names = re.findall(r"^ {4}([a-z_]+)\s", section, re.M)
    assert names and all(inspect.isfunction(getattr(d, n, None)) for n in names)


_EVENT_ROW = re.compile(r"^ {4}(EV_[A-Z_]+)\s+([a-z_]+)\s", re.M)


def test_event_table_matches_the_code() -> None:
    """The docstring's "fired by" table is exactly the set of (event, function) pairs in the code."""
    rows = set(_EVENT_ROW.findall(d.__doc__ or ""))
    events = {name for name in vars(tcp_state) if name.startswith("EV_")}
    assert {ev for ev, _ in rows} == events
    used = {
        (ev, name)
        for name, fn in vars(d).items()
        if inspect.isfunction(fn) and fn.__module__ == d.__name__
        for ev in events
        if re.search(rf"\b{ev}\b", inspect.getsource(fn))
    }
    assert rows == used


@pytest.mark.parametrize("module", [d, tcp_state, wire_tcp])
def test_decisions_import_no_io(module: ModuleType) -> None:
    """h11's rule: the rules (and what they import) touch no socket, select, os or time."""
    tree = ast.parse(inspect.getsource(module))
    imported: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module.split(".")[0])
    assert not imported & {"socket", "select", "selectors", "os", "time"}


# handshake -------------------------------------------------------------------------------
#: (state, segment, action, state after, need_ack after)
HANDSHAKE: list[tuple[int, TcpSegment, int, int, bool]] = [
    (CONNECTING, seg(SYN, G), d.HS_DUP_SYN, CONNECTING, False),
    (CONNECTING, seg(SYN, G + 5), d.HS_EARLY, CONNECTING, False),
    (CONNECTING, seg(ACK, gseq(0), gack(0)), d.HS_EARLY, CONNECTING, False),
    (SYNACK_SENT, seg(SYN, G), d.HS_RESEND_SYNACK, SYNACK_SENT, False),
    (SYNACK_SENT, seg(SYN, G + 9), d.HS_SYN_MISMATCH, SYNACK_SENT, False),
    (SYNACK_SENT, seg(PSH, gseq(0)), d.HS_NO_ACK, SYNACK_SENT, False),
    (SYNACK_SENT, seg(ACK, gseq(0), gack(5)), d.HS_BAD_ACK, SYNACK_SENT, False),
    (SYNACK_SENT, seg(ACK, gseq(0), gack(0)), d.HS_CONTINUE, EST, False),
    (SYNACK_SENT, seg(ACK | PSH, gseq(0), gack(0)), d.HS_CONTINUE, EST, False),
    (SYN_SENT, seg(ACK, gseq(0), gack(0)), d.HS_NOT_SYNACK, SYN_SENT, False),
    (SYN_SENT, seg(SYN, G), d.HS_NOT_SYNACK, SYN_SENT, False),
    (SYN_SENT, seg(SYN | ACK, G, gack(1)), d.HS_BAD_ACK, SYN_SENT, False),
    (SYN_SENT, seg(SYN | ACK, G, gack(0)), d.HS_SYNACK, EST, True),
]


@pytest.mark.parametrize(("state", "segment", "action", "after", "need_ack"), HANDSHAKE)
def test_handshake_segment(state: int, segment: TcpSegment, action: int, after: int, need_ack: bool) -> None:
    c = flow(state=state, g_isn=G, rto=4.0, rto_deadline=NOW + 4)
    assert d.handshake_segment(c, segment, 1460) == action
    assert c.state == after
    assert c.need_ack is need_ack
    if after == EST:  # established: the RTO starts over; TCP_INFO only after the guest's SYN-ACK
        check(c, {"rto": d.RTO_INIT_S, "rto_deadline": 0.0, "info_due": action == d.HS_SYNACK})


#: The guest's SYN options -> (mss, ws_from_guest, ws_to_guest, wnd_from_guest)
SYN_OPTIONS = [
    (dict(mss=1400, wscale=7, window=29200), (1400, 7, d.OUR_WS, 29200)),  # SYN windows are never scaled
    (dict(mss=9000, wscale=7), (1460, 7, d.OUR_WS, 65535)),  # ours is smaller
    (dict(mss=1400), (1400, 0, 0, 65535)),  # no WS from the guest: none from us either
    (dict(), (d.MSS_DEFAULT4, 0, 0, 65535)),  # no MSS: RFC 9293's default
]


@pytest.mark.parametrize(("opts", "want"), SYN_OPTIONS)
def test_guest_syn_takes_its_options(opts: dict[str, int], want: tuple[int, int, int, int]) -> None:
    c = TcpFlow(4, I, NOW)
    d.guest_syn(c, seg(SYN, G, **opts), 1460)
    assert c.state == CONNECTING and c.g_isn == G
    assert (c.mss, c.ws_from_guest, c.ws_to_guest, c.wnd_from_guest) == want


def test_ipv6_default_mss() -> None:
    c = TcpFlow(6, I, NOW)
    d.guest_syn(c, seg(SYN, G), 1440)
    assert c.mss == d.MSS_DEFAULT6


@pytest.mark.parametrize(("snd_wnd", "wnd"), [(-1, d.SND_WND_FALLBACK), (0, 65535), (1000, 1000), (10**6, 65535)])
def test_initial_window(snd_wnd: int, wnd: int) -> None:
    assert d.initial_window(snd_wnd) == wnd


def test_connect_then_synack_then_ack() -> None:
    """The guest-side open as the driver runs it: SYN, connect() done, SYN-ACK, ACK."""
    c = TcpFlow(4, I, NOW)
    d.guest_syn(c, seg(SYN, G, mss=1460, wscale=7), 1460)
    d.connected(c, 1, NOW + 0.001)
    assert c.state == SYNACK_SENT and c.acked_base == 1 and c.rto_deadline == NOW + 0.001 + d.RTO_INIT_S
    assert d.synack_sent(c, 65535) == (G + 1) & 0xFFFFFFFF
    assert (c.wnd_raw, c.wnd_sent) == (65535 >> d.OUR_WS, 65535 >> d.OUR_WS)
    assert d.handshake_segment(c, seg(ACK, gseq(0), gack(0)), 1460) == d.HS_CONTINUE
    assert c.state == EST


def test_accepted_flow_sends_syn_and_arms_rto() -> None:
    c = TcpFlow(6, I, NOW)
    d.accepted(c, 1440, 1, NOW)
    check(c, {"state": SYN_SENT, "mss": 1440, "acked_base": 1, "rto_deadline": NOW + d.RTO_INIT_S})


# RSTs -----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("flags", "plen", "want"),
    [
        (ACK, 10, (gack(3), 0, RST)),  # seq = their ACK
        (ACK | FIN, 0, (gack(3), 0, RST)),
        (0, 10, (0, gseq(0) + 10, RST | ACK)),  # ack = their seq + length
        (FIN, 0, (0, gseq(0) + 1, RST | ACK)),
        (SYN | FIN, 5, (0, gseq(0) + 7, RST | ACK)),
    ],
)
def test_rst_for_unknown(flags: int, plen: int, want: tuple[int, int, int]) -> None:
    assert d.rst_for_unknown(flags, gseq(0), gack(3), plen) == want


@pytest.mark.parametrize(
    ("state", "want"),
    [
        (CONNECTING, (0, G + 1, RST | ACK)),
        (SYN_SENT, (I + 1, 0, RST)),
        (EST, (gack(10), gseq(20), RST | ACK)),
        (EST | SOCK_EOF | FIN_SENT, (gack(11), gseq(20), RST | ACK)),  # our FIN counts
    ],
)
def test_rst_for_flow(state: int, want: tuple[int, int, int]) -> None:
    assert d.rst_for(flow(state=state, sent=10, ack_off=20)) == want


# guest ACKs ------------------------------------------------------------------------------
#: (fields before, (seq offset, ack offset, window, flags, plen), return, fields after)
ACKS: list[tuple[dict[str, Any], tuple[int, int, int, int, int], int, dict[str, Any]]] = [
    # a new ACK: acked moves, the bytes are to drop, the RTO restarts for the rest
    (
        dict(sent=3000, snd_max=3000, rto=4.0, retries=2, dup_acks=2),
        (0, 1000, 500, ACK, 0),
        0,
        dict(acked=1000, to_drop=1000, rto=d.RTO_INIT_S, retries=0, dup_acks=0, rto_deadline=NOW + 1, wnd_from_guest=500),
    ),
    # everything acked: no RTO
    (dict(sent=3000, snd_max=3000), (0, 3000, 500, ACK, 0), 0, dict(acked=3000, to_drop=3000, rto_deadline=0.0)),
    # an ACK beyond a rewind's `sent` (sent < snd_max): sent follows; the next push arms the RTO
    (dict(sent=0, snd_max=3000), (0, 2000, 500, ACK, 0), 0, dict(acked=2000, sent=2000, rto_deadline=0.0)),
    # an ACK of data never sent: ACK back, count
    (dict(sent=1000, snd_max=1000), (0, 1001, 500, ACK, 0), d.A_UNSENT, dict(acked=0, need_ack=True, wnd_from_guest=65535)),
    # an old ACK (before `acked`): no news at all, not even the window
    (dict(acked=2000, sent=3000, snd_max=3000), (0, 1000, 500, ACK, 0), 0, dict(acked=2000, wnd_from_guest=65535)),
    # duplicate ACKs: the third asks for a fast retransmit
    (dict(sent=3000, snd_max=3000, dup_acks=1), (0, 0, 65535, ACK, 0), 0, dict(dup_acks=2, retransmit=False)),
    (dict(sent=3000, snd_max=3000, dup_acks=2), (0, 0, 65535, ACK, 0), d.A_FAST_RETRANSMIT, dict(dup_acks=3, retransmit=True)),
    # not duplicates: window changed, payload, or nothing outstanding
    (dict(sent=3000, snd_max=3000, dup_acks=2), (0, 0, 1000, ACK, 0), 0, dict(dup_acks=2, wnd_from_guest=1000)),
    (dict(sent=3000, snd_max=3000, dup_acks=2), (0, 0, 65535, ACK, 10), 0, dict(dup_acks=2)),
    (dict(dup_acks=2), (0, 0, 65535, ACK, 0), 0, dict(dup_acks=2)),
    # the window is scaled by the guest's shift
    (dict(ws_from_guest=7), (0, 0, 100, ACK, 0), 0, dict(wnd_from_guest=100 << 7, wnd_raw_from_guest=100)),
    # our FIN acked: state FIN_ACKED, the FIN's sequence number is not data
    (
        dict(state=EST | SOCK_EOF | FIN_SENT, sent=500, snd_max=500, fin_off=500),
        (0, 501, 500, ACK, 0),
        0,
        dict(state=EST | SOCK_EOF | FIN_SENT | FIN_ACKED, acked=500, to_drop=500, rto_deadline=0.0),
    ),
    # ... even after a rewind cleared FIN_SENT (tcp_state EV_FIN_RESEND): it comes back with FIN_ACKED
    (
        dict(state=EST | SOCK_EOF, sent=200, snd_max=500, fin_off=500),
        (0, 501, 500, ACK, 0),
        0,
        dict(state=EST | SOCK_EOF | FIN_SENT | FIN_ACKED, acked=500, sent=500),
    ),
    # a keep-alive probe (seq = rcv_nxt - 1) gets an ACK
    (dict(rcvd=100), (99, 0, 65535, ACK, 0), 0, dict(need_ack=True)),
    (dict(rcvd=100), (100, 0, 65535, ACK, 0), 0, dict(need_ack=False)),
]


@pytest.mark.parametrize(("before", "segment", "ret", "after"), ACKS)
def test_ack_from_guest(
    before: dict[str, Any], segment: tuple[int, int, int, int, int], ret: int, after: dict[str, Any]
) -> None:
    c = flow(**before)
    seq, ack, window, flags, plen = segment
    assert d.ack_from_guest(c, gseq(seq), gack(ack), window, flags, plen, NOW) == ret
    check(c, after)


# guest data ------------------------------------------------------------------------------
#: (fields before, seq offset, flags, plen, returned skip or D_*, need_ack after)
DATA: list[tuple[dict[str, Any], int, int, int, int, bool]] = [
    (dict(rcvd=100), 100, ACK, 50, 0, False),  # in order: all of it
    (dict(rcvd=100), 80, ACK, 50, 20, False),  # overlaps what the socket took: the new part
    (dict(rcvd=100), 50, ACK, 50, d.D_NONE, True),  # all old: ACK
    (dict(rcvd=100), 50, ACK | FIN, 50, 50, False),  # old data, new FIN: the FIN goes on
    (dict(rcvd=100), 150, ACK, 50, d.D_OUT_OF_ORDER, True),  # a hole: duplicate ACK
    (dict(rcvd=100), 100, ACK | FIN, 0, 0, False),  # a FIN alone
    (dict(rcvd=100, state=EST | GUEST_FIN), 100, ACK, 10, d.D_NONE, True),  # after its FIN
    (dict(rcvd=0xFFFFFFFF - G), 0xFFFFFFFF - G, ACK, 10, 0, False),  # seq wraps past 2**32
]


@pytest.mark.parametrize(("before", "seq", "flags", "plen", "ret", "need_ack"), DATA)
def test_data_from_guest(before: dict[str, Any], seq: int, flags: int, plen: int, ret: int, need_ack: bool) -> None:
    c = flow(**before)
    assert d.data_from_guest(c, gseq(seq), flags, plen) == ret
    assert c.need_ack is need_ack


#: (fields before, want, sent, fin, bits, fields after)
TAKEN: list[tuple[dict[str, Any], int, int, int, int, dict[str, Any]]] = [
    (dict(), 100, 100, 0, 0, dict(rcvd=100, info_due=True, sndbuf_full=False)),
    (dict(), 100, 40, 0, d.T_SNDBUF_FULL, dict(rcvd=40, sndbuf_full=True, ack_all=True)),
    # short send with FIN: the FIN waits for the retransmission
    (dict(), 100, 40, FIN, d.T_SNDBUF_FULL, dict(rcvd=40, state=EST)),
    # FIN, the peer has acknowledged everything: acked at once, no TCP_INFO needed
    (dict(), 0, 0, FIN, d.T_SHUTDOWN, dict(state=EST | GUEST_FIN | GUEST_FIN_ACKED, info_due=False)),
    # FIN after unacknowledged data: TCP_INFO will tell
    (dict(), 10, 10, FIN, d.T_SHUTDOWN, dict(state=EST | GUEST_FIN, info_due=True)),
    # BULK_BYTES from the guest: bulk socket options, SO_MEMINFO again
    (dict(rcvd=d.BULK_BYTES - 10, sndbuf=1 << 20), 10, 10, 0, d.T_TUNE_BULK, dict(bulk=True, sndbuf=0)),
    (dict(rcvd=d.BULK_BYTES, bulk=True, sndbuf=5), 10, 10, 0, 0, dict(sndbuf=5)),
]


@pytest.mark.parametrize(("before", "want", "sent", "fin", "bits", "after"), TAKEN)
def test_data_taken(before: dict[str, Any], want: int, sent: int, fin: int, bits: int, after: dict[str, Any]) -> None:
    c = flow(**before)
    assert d.data_taken(c, want, sent, fin) == bits
    check(c, after)


def test_synchronized_syn_gets_a_challenge_ack() -> None:
    c = flow()
    d.synchronized_syn(c)
    assert c.need_ack


# the peer's view ------------------------------------------------------------------------
#: (fields before, bytes_acked, snd_wnd, room, fields after)
REFLECT: list[tuple[dict[str, Any], int, int, int, dict[str, Any]]] = [
    # ACK what the peer acked (minus the SYN's byte), the peer's window
    (dict(rcvd=5000, acked_base=1), 3001, 60000, -1, dict(ack_off=3000, wnd_raw=60000)),
    # never beyond what the socket took
    (dict(rcvd=5000, acked_base=1), 9001, 60000, -1, dict(ack_off=5000)),
    # ACK numbers never go back
    (dict(rcvd=5000, ack_off=4000, acked_base=1), 3001, 60000, -1, dict(ack_off=4000)),
    # the right edge is capped at accepted + free buffer: room 1000 with 2000 unacked -> 3000
    (dict(rcvd=5000, acked_base=1), 3001, 60000, 1000, dict(wnd_raw=3000)),
    (dict(rcvd=5000, acked_base=1), 3001, 60000, 10**6, dict(wnd_raw=60000)),
    # scaled, and clamped to the 16-bit field
    (dict(ws_to_guest=8), 1, 1 << 20, -1, dict(wnd_raw=(1 << 20) >> 8)),
    (dict(), 1, 1 << 20, -1, dict(wnd_raw=65535)),
    # after a short send: ACK all the socket took, whatever the peer says
    (dict(rcvd=5000, acked_base=1, ack_all=True), 1001, 60000, -1, dict(ack_off=5000, ack_all=False)),
    # the guest's FIN is acknowledged with its last byte
    (dict(state=EST | GUEST_FIN, rcvd=100, acked_base=1), 101, 1000, -1, dict(state=EST | GUEST_FIN | GUEST_FIN_ACKED)),
    (dict(state=EST | GUEST_FIN, rcvd=100, acked_base=1), 100, 1000, -1, dict(state=EST | GUEST_FIN)),
]


@pytest.mark.parametrize(("before", "bytes_acked", "snd_wnd", "room", "after"), REFLECT)
def test_reflect_peer(before: dict[str, Any], bytes_acked: int, snd_wnd: int, room: int, after: dict[str, Any]) -> None:
    c = flow(**before)
    d.reflect_peer(c, bytes_acked, snd_wnd, room)
    check(c, after)


def test_reflect_fallback_fixed_window_ack_on_enqueue() -> None:
    c = flow(rcvd=700, ws_to_guest=8, ack_all=True)
    assert d.reflect_fallback(c) is True
    check(c, {"ack_off": 700, "wnd_raw": d.SND_WND_FALLBACK >> 8, "no_tcpinfo": True})
    assert d.reflect_fallback(c) is False  # counted once


@pytest.mark.parametrize(
    ("sndbuf", "ratio", "outq", "room"),
    [
        (0, 0.5, 0, d.ROOM_MEASURE),  # buffer size not known yet
        (80000, 0.5, 1000, 39000),  # nearly empty: estimated
        (80000, 0.5, -5, 40000),  # the peer acked our SYN's byte too
        (80000, 0.5, 10000, d.ROOM_MEASURE),  # an eighth or more in flight: measure
    ],
)
def test_room_estimate(sndbuf: int, ratio: float, outq: int, room: int) -> None:
    assert d.room_estimate(flow(sndbuf=sndbuf, truesize_ratio=ratio), outq) == room


@pytest.mark.parametrize(
    ("sndbuf", "queued", "outq", "room", "ratio"),
    [
        (100000, 40000, 20000, 30000, 0.5),  # measured payload/truesize ratio 0.5
        (100000, 10000, 9500, 81000, d.TRUESIZE_RATIO_MAX),  # never better than the cap
        (100000, 40000, 1000, 15000, d.TRUESIZE_RATIO_MIN),  # nor worse than the floor
        (100000, 0, 0, 30000, 0.3),  # an empty queue says nothing: the last ratio stays
        (100000, 120000, 50000, 0, 50000 / 120000),  # over-full: no room
    ],
)
def test_room_measured(sndbuf: int, queued: int, outq: int, room: int, ratio: float) -> None:
    c = flow(truesize_ratio=0.3)
    assert d.room_measured(c, sndbuf, queued, outq) == room
    assert c.sndbuf == sndbuf and c.truesize_ratio == ratio


@pytest.mark.parametrize(("sndbuf", "queued", "low"), [(90, 60, False), (90, 61, True), (100, 0, False)])
def test_sndbuf_low(sndbuf: int, queued: int, low: bool) -> None:
    assert d.sndbuf_low(sndbuf, queued) is low


@pytest.mark.parametrize(
    ("raw", "sent", "news"),
    [
        (100, 100, False),  # unchanged
        (0, 100, True),  # closes: the guest must stop
        (100, 0, True),  # reopens after zero
        (100, -1, True),  # nothing announced yet
        (90, 100, False),  # shrinks a little: waits for the next ACK
        (110, 100, False),  # grows by a tenth
        (125, 100, True),  # grows by a quarter (and more than two MSS)
        (5, 4, False),  # a quarter, but less than two MSS (256-byte units)
    ],
)
def test_window_news(raw: int, sent: int, news: bool) -> None:
    """Window-only updates: sent when the window closes, reopens or grows by a quarter, not for jitter."""
    assert d.window_news(flow(wnd_raw=raw, wnd_sent=sent, ws_to_guest=8)) is news


# one flow's turn -------------------------------------------------------------------------
#: (fields before, plan bits, fields after)
PLANS: list[tuple[dict[str, Any], int, dict[str, Any]]] = [
    (dict(), 0, dict()),
    (dict(state=SYNACK_SENT, info_due=True, sock_pending=True), 0, dict(info_due=True)),
    (dict(info_due=True), d.P_INFO, dict(info_due=False)),
    (dict(nudge=True), d.P_INFO, dict()),
    (dict(need_ack=True), 0, dict()),  # nothing the peer could still acknowledge
    (dict(need_ack=True, rcvd=10), d.P_INFO, dict()),
    (dict(sock_pending=True), d.P_PUSH, dict()),
    (dict(sock_pending=True, state=EST | SOCK_EOF | FIN_SENT), 0, dict()),  # all peeked already
    # a rewind: back to the guest's ACK, our FIN to be sent again after the data
    (
        dict(retransmit=True, acked=100, sent=900, dup_acks=3, state=EST | SOCK_EOF | FIN_SENT, fin_off=900),
        d.P_REWIND | d.P_PUSH,
        dict(retransmit=False, sent=100, dup_acks=0, state=EST | SOCK_EOF, sock_pending=True),
    ),
]


@pytest.mark.parametrize(("before", "bits", "after"), PLANS)
def test_service_plan(before: dict[str, Any], bits: int, after: dict[str, Any]) -> None:
    c = flow(**before)
    assert d.service_plan(c) == bits
    check(c, after)


#: (fields before, budget, rto_deadline after)
BUDGETS: list[tuple[dict[str, Any], int, float]] = [
    (dict(wnd_from_guest=10000, sent=3000, acked=1000), 8000, 0.0),
    (dict(wnd_from_guest=2000, sent=3000, acked=1000), 0, 0.0),  # window full
    (dict(wnd_from_guest=0), 0, NOW + d.RTO_INIT_S),  # zero window: probe at RTO
    (dict(wnd_from_guest=0, rto_deadline=NOW + 0.5), 0, NOW + 0.5),
    (dict(wnd_from_guest=1 << 30, peek_off=False), d.SCRATCH_BYTES, 0.0),  # no peek offset: scratch bound
]


@pytest.mark.parametrize(("before", "budget", "deadline"), BUDGETS)
def test_push_budget(before: dict[str, Any], budget: int, deadline: float) -> None:
    c = flow(**before)
    assert d.push_budget(c, NOW) == budget
    assert c.rto_deadline == deadline


@pytest.mark.parametrize(
    ("rdhup", "got", "want", "again", "pending"),
    [(False, 100, 100, False, True), (False, 50, 100, False, False), (True, 50, 100, True, True)],
)
def test_pushed(rdhup: bool, got: int, want: int, again: bool, pending: bool) -> None:
    c = flow(sent=10, snd_max=10, rdhup=rdhup, sock_pending=True, wnd_raw=300)
    assert d.pushed(c, got, want, gseq(0), NOW) is again
    check(c, {"sent": 10 + got, "snd_max": 10 + got, "ack_sent": gseq(0), "wnd_sent": 300})
    assert c.sock_pending is pending and c.rto_deadline == NOW + d.RTO_INIT_S


def test_sock_eof_sends_fin_after_the_data() -> None:
    c = flow(sent=500, snd_max=400, sock_pending=True, ack_off=7)
    d.sock_eof(c, NOW)
    check(c, {"state": EST | SOCK_EOF | FIN_SENT, "fin_off": 500, "snd_max": 500, "sock_pending": False})
    assert c.ack_sent == gseq(7) and c.seq_nxt() == gack(501)


#: (fields before, turn_end's ACK part); ack_off sets the ACK number, ack_sent the last one sent
ACK_PLANS: list[tuple[dict[str, Any], int]] = [
    (dict(ack_sent=gseq(0)), 0),  # nothing new
    (dict(ack_sent=gseq(0), need_ack=True), 1),
    (dict(ack_sent=gseq(0), ack_off=100), d.E_DELAY),  # less than an MSS: may ride on data
    (dict(ack_sent=gseq(0), ack_off=1460), 1),  # a full MSS: now
    (dict(ack_sent=-1), 1),  # first ACK ever
    (dict(ack_sent=gseq(0), nudge=True), d.DUP_ACK_THRESHOLD),  # three duplicates
    (dict(ack_sent=gseq(0), nudge=True, ack_off=5), d.DUP_ACK_THRESHOLD + 1),  # the new ACK, then three copies
    (dict(ack_sent=gseq(0), wnd_raw=0, wnd_sent=100), 1),  # window closes
    (dict(ack_sent=gseq(0), wnd_raw=90, wnd_sent=100), 0),  # window jitter
    # the ACK of the guest's FIN waits for ours, unless ours went already
    (dict(ack_sent=gseq(0), ack_off=0, state=EST | GUEST_FIN | GUEST_FIN_ACKED), d.E_DELAY),
    (dict(ack_sent=gseq(0), ack_off=0, state=EST | GUEST_FIN | GUEST_FIN_ACKED | SOCK_EOF | FIN_SENT), 1),
]


@pytest.mark.parametrize(("before", "plan"), ACK_PLANS)
def test_turn_end_ack(before: dict[str, Any], plan: int) -> None:
    c = flow(**{"wnd_raw": 100, "wnd_sent": 100, **before})
    assert d.turn_end(c) & (d.E_ACKS | d.E_DELAY) == plan
    assert not c.need_ack and not c.nudge


def test_ack_sent_records_what_left() -> None:
    c = flow(ack_off=30, wnd_raw=77)
    assert d.ack_sent(c) == gseq(30)
    check(c, {"ack_sent": gseq(30), "wnd_sent": 77})


#: (fields before, quiet_ack's answer); flow() plus: our last ACK and window went out unchanged
QUIET: list[tuple[dict[str, Any], int]] = [
    (dict(), d.Q_NONE),  # the handshake ACK, a repeated ACK: nothing to do
    (dict(state=SYNACK_SENT), d.Q_SERVICE),  # not established
    (dict(to_drop=5), d.Q_SERVICE),  # acked bytes to drop
    (dict(retransmit=True), d.Q_SERVICE),
    (dict(info_due=True), d.Q_SERVICE),
    (dict(need_ack=True), d.Q_SERVICE),  # keep-alive, ACK of unsent data
    (dict(nudge=True), d.Q_SERVICE),
    (dict(sock_pending=True), d.Q_SERVICE),  # socket data to peek
    (dict(sock_pending=True, state=EST | SOCK_EOF | FIN_SENT), d.Q_NONE),  # all peeked, FIN out
    (dict(ack_sent=gseq(-1)), d.Q_SERVICE),  # an ACK is owed (or held)
    (dict(wnd_raw=0), d.Q_SERVICE),  # window closed since the last ACK: news, and polls
    (dict(wnd_raw=95), d.Q_NONE),  # window jitter is no news
    (dict(rcvd=10), d.Q_SERVICE),  # guest data waits for the peer's ACK
    (dict(state=EST | GUEST_FIN), d.Q_SERVICE),  # the guest's FIN does
    (dict(state=EST | GUEST_FIN | GUEST_FIN_ACKED), d.Q_NONE),
    (dict(state=EST | SOCK_EOF | FIN_SENT | FIN_ACKED), d.Q_NONE),  # half closed: the guest may still send
    (dict(state=EST | GUEST_FIN | GUEST_FIN_ACKED | SOCK_EOF | FIN_SENT | FIN_ACKED), d.Q_CLOSE),
    (dict(state=EST | GUEST_FIN | GUEST_FIN_ACKED | SOCK_EOF | FIN_SENT | FIN_ACKED, to_drop=1), d.Q_SERVICE),
]


def _quiet_flow(**fields: Any) -> TcpFlow:
    c = flow(wnd_raw=100, wnd_sent=100)
    c.ack_sent = c.ack_num()
    for name, value in fields.items():
        setattr(c, name, value)
    if c.state & GUEST_FIN_ACKED and "ack_sent" not in fields:
        c.ack_sent = c.ack_num()
    return c


@pytest.mark.parametrize(("before", "answer"), QUIET)
def test_quiet_ack(before: dict[str, Any], answer: int) -> None:
    assert d.quiet_ack(_quiet_flow(**before)) == answer


def _copy(c: TcpFlow) -> TcpFlow:
    n = TcpFlow(c.af, c.isn, NOW)
    for name in TcpFlow.__slots__:
        setattr(n, name, getattr(c, name))
    return n


def test_quiet_ack_skips_only_services_that_do_nothing() -> None:
    """Over every combination of the fields the service looks at: Q_NONE only where the
    service's decisions would do nothing (no drop, plan 0, turn_end 0), Q_CLOSE only where
    they would only close; and quiet_ack changes nothing in the flow."""
    states = [EST, EST | GUEST_FIN, EST | GUEST_FIN | GUEST_FIN_ACKED, EST | SOCK_EOF | FIN_SENT,
              EST | SOCK_EOF | FIN_SENT | FIN_ACKED, EST | GUEST_FIN | GUEST_FIN_ACKED | SOCK_EOF | FIN_SENT,
              EST | GUEST_FIN | GUEST_FIN_ACKED | SOCK_EOF | FIN_SENT | FIN_ACKED, SYNACK_SENT]
    bools = ("retransmit", "info_due", "need_ack", "nudge", "sock_pending")
    seen = {d.Q_NONE: 0, d.Q_CLOSE: 0, d.Q_SERVICE: 0}
    for state, to_drop, rcvd, owed, wnd, flags in itertools.product(
        states, (0, 3), (0, 10), (False, True), ((100, 100), (95, 100), (0, 100), (200, 100), (0, 0)),
        itertools.product((False, True), repeat=len(bools)),
    ):
        c = flow(state=state, to_drop=to_drop, rcvd=rcvd, ack_off=0, wnd_raw=wnd[0], wnd_sent=wnd[1])
        for name, value in zip(bools, flags, strict=True):
            setattr(c, name, value)
        c.ack_sent = (c.ack_num() - (1 if owed else 0)) & 0xFFFFFFFF
        before = {name: getattr(c, name) for name in TcpFlow.__slots__}
        q = d.quiet_ack(c)
        assert {name: getattr(c, name) for name in TcpFlow.__slots__} == before
        seen[q] += 1
        if q == d.Q_SERVICE:
            continue
        probe = _copy(c)
        assert probe.to_drop == 0
        assert d.service_plan(probe) == 0
        assert d.turn_end(probe) == (d.E_CLOSE if q == d.Q_CLOSE else 0)
    assert all(seen.values())


#: (fields before, turn_end's close and poll bits)
DONE: list[tuple[dict[str, Any], int]] = [
    (dict(wnd_raw=100), 0),
    (dict(state=EST | GUEST_FIN | GUEST_FIN_ACKED | SOCK_EOF | FIN_SENT | FIN_ACKED), d.E_CLOSE),
    (dict(wnd_raw=100, rcvd=10), d.E_POLL),  # guest data waits for the peer's ACK
    (dict(wnd_raw=100, state=EST | GUEST_FIN), d.E_POLL),  # the guest's FIN does
    (dict(wnd_raw=0), d.E_POLL),  # our window is shut
    (dict(wnd_raw=0, state=EST | GUEST_FIN | GUEST_FIN_ACKED), 0),
]


@pytest.mark.parametrize(("before", "bits"), DONE)
def test_turn_end_close_and_poll(before: dict[str, Any], bits: int) -> None:
    assert d.turn_end(flow(**before)) & (d.E_CLOSE | d.E_POLL) == bits


def test_sock_events() -> None:
    c = flow(wnd_raw=1000, ws_to_guest=0)  # a small window: TCP_INFO news wanted
    d.sock_readable(c, False)
    check(c, {"sock_pending": True, "info_due": True, "rdhup": False})
    c = flow(wnd_raw=65535)
    d.sock_readable(c, True)
    check(c, {"sock_pending": True, "info_due": False, "rdhup": True})
    c = flow(sndbuf_full=True)
    d.sock_writable(c)
    check(c, {"sndbuf_full": False, "nudge": True})


def test_delayed_ack_due() -> None:
    c = flow(ack_sent=gseq(0), ack_off=10)
    assert d.delayed_ack_due(c) and c.need_ack
    c = flow(ack_sent=gseq(10), ack_off=10)
    assert not d.delayed_ack_due(c) and not c.need_ack


# timers -------------------------------------------------------------------------------------
#: (fields before, now, action, fields after); RTO 1 s unless set
TIMERS: list[tuple[dict[str, Any], float, int, dict[str, Any]]] = [
    (dict(state=CONNECTING, syn_deadline=NOW + 10), NOW + 10, d.TM_SYN_TIMEOUT, dict()),
    (dict(state=CONNECTING, syn_deadline=NOW + 10), NOW + 1, d.TM_REARM, dict(timer_at=NOW + 10)),
    (
        dict(state=SYNACK_SENT, syn_deadline=NOW + 10, rto_deadline=NOW + 1),
        NOW + 1,
        d.TM_RESEND_SYNACK,
        dict(rto=2.0, rto_deadline=NOW + 3, timer_at=NOW + 3),
    ),
    (
        dict(state=SYN_SENT, syn_deadline=NOW + 10, rto_deadline=NOW + 1, rto=8.0),
        NOW + 1,
        d.TM_RESEND_SYN,
        dict(rto=16.0, timer_at=NOW + 10),
    ),
    (dict(last_activity=NOW), NOW + d.ACT_TIMEOUT_S, d.TM_IDLE, dict()),
    (dict(last_activity=NOW, state=EST | GUEST_FIN), NOW + d.FIN_TIMEOUT_S, d.TM_IDLE, dict()),
    (dict(last_activity=NOW), NOW + 5, d.TM_REARM, dict(timer_at=NOW + d.ACT_TIMEOUT_S)),
    # RTO with data outstanding: retransmit, back off
    (
        dict(last_activity=NOW, snd_max=100, rto_deadline=NOW + 1),
        NOW + 1,
        d.TM_RETRANSMIT,
        dict(retransmit=True, retries=1, rto=2.0, rto_deadline=NOW + 3, timer_at=NOW + 3),
    ),
    (dict(last_activity=NOW, snd_max=100, rto_deadline=NOW + 1, retries=d.MAX_RETRANS), NOW + 1, d.TM_GIVE_UP, dict()),
    # our FIN unacknowledged counts as outstanding
    (
        dict(last_activity=NOW, state=EST | SOCK_EOF | FIN_SENT, rto_deadline=NOW + 1),
        NOW + 1,
        d.TM_RETRANSMIT,
        dict(retransmit=True),
    ),
    # zero window with data waiting: probe
    (
        dict(last_activity=NOW, wnd_from_guest=0, sock_pending=True, rto_deadline=NOW + 1),
        NOW + 1,
        d.TM_PROBE,
        dict(rto=2.0, rto_deadline=NOW + 3, retransmit=False),
    ),
    # nothing outstanding: the RTO is off
    (dict(last_activity=NOW, rto_deadline=NOW + 1), NOW + 1, d.TM_REARM, dict(rto_deadline=0.0)),
]


@pytest.mark.parametrize(("before", "now", "action", "after"), TIMERS)
def test_on_timer(before: dict[str, Any], now: float, action: int, after: dict[str, Any]) -> None:
    c = flow(**before)
    assert d.on_timer(c, now) == action
    check(c, after)


# a whole connection ---------------------------------------------------------------------------
def test_request_response_close_with_numbers_only() -> None:
    """Open, one request and answer, both FINs: the decisions alone, as the driver calls them."""
    c = TcpFlow(4, I, NOW)
    d.guest_syn(c, seg(SYN, G, mss=1460, wscale=7), 1460)
    d.connected(c, 1, NOW)
    d.synack_sent(c, 65535)
    assert d.handshake_segment(c, seg(ACK, gseq(0), gack(0), 512), 1460) == d.HS_CONTINUE
    assert d.ack_from_guest(c, gseq(0), gack(0), 512, ACK, 0, NOW) == 0
    # the guest's request: 100 bytes, all taken by the socket
    assert d.ack_from_guest(c, gseq(0), gack(0), 512, ACK | PSH, 100, NOW) == 0
    assert d.data_from_guest(c, gseq(0), ACK | PSH, 100) == 0
    assert d.data_taken(c, 100, 100, 0) == 0
    assert d.service_plan(c) == d.P_INFO
    d.reflect_peer(c, 1 + 100, 64000, d.room_estimate(c, 0))  # the peer acked it at once
    assert c.ack_off == 100
    assert d.turn_end(c) == d.E_DELAY  # waits for the answer to carry it
    # the answer: 300 bytes and the peer's FIN
    d.sock_readable(c, True)
    assert d.service_plan(c) & d.P_PUSH
    assert d.push_budget(c, NOW) == 512 << 7
    assert d.pushed(c, 300, 512 << 7, c.ack_num(), NOW) is True  # short, peer closed: peek again
    d.sock_eof(c, NOW)
    assert c.state == EST | SOCK_EOF | FIN_SENT
    # the guest acks it all, FIN included, and sends its FIN
    assert d.ack_from_guest(c, gseq(100), gack(301), 512, ACK | FIN, 0, NOW) == 0
    assert c.state & FIN_ACKED and c.to_drop == 300
    assert d.data_from_guest(c, gseq(100), ACK | FIN, 0) == 0
    assert d.data_taken(c, 0, 0, FIN) == d.T_SHUTDOWN
    assert c.state & GUEST_FIN_ACKED  # all its data was acked already
    assert d.turn_end(c) == 1 | d.E_CLOSE  # the FIN's ACK goes now (ours is out), then the close
    assert d.ack_sent(c) == gseq(101)
