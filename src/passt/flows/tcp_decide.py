"""TCP translation rules, sans-IO: guest segment and kernel numbers in, actions out.

Every decision of the TCP translation lives here, as plain functions over a
flow's numbers (`TcpFlow`).  They take the fields of a guest segment (seq,
ack, window, flags, payload length), the numbers the host kernel reports
for the socket (tcpi_bytes_acked, tcpi_snd_wnd, SO_SNDBUF, queued bytes)
and `now`; they update the flow record in place and return a small int
saying what the driver (tcp.py) must do with its sockets and the tap.
Nothing here imports socket, select, os or time, nothing allocates on the
per-segment path (the record is the flow's own, returns are ints), and
every state change goes through `tcp_state.next_state`.

The rules (man page DESCRIPTION and NOTES):

- ACK towards the guest = what the real peer acknowledged (tcpi_bytes_acked
  minus its value at the handshake), never more than the socket accepted
  (`reflect_peer`).  After a short send() we ACK exactly what the socket
  took (`ack_all`) and, once it is writable, send three duplicate ACKs
  (`nudge`) so the guest fast-retransmits from the hole.
- Window towards the guest = the peer's (tcpi_snd_wnd), its right edge
  capped at what the socket accepted plus the free send buffer (SO_MEMINFO,
  free truesize scaled by the observed payload/truesize ratio): a guest
  honouring it never overruns send().  Without snd_wnd in TCP_INFO (Linux
  < 5.3): SND_WND_FALLBACK and ACK on enqueue.  A window change alone is
  worth a pure ACK only when it closes, reopens or grows by a quarter
  (`window_news`).
- A pure ACK covering less than one MSS waits up to ACK_DELAY_S for a
  data frame to carry it; so does the ACK of the guest's FIN while our FIN
  is still to come (`turn_end`).
- Guest ACKs advance `acked`; the acknowledged bytes are then dropped from
  the socket (`to_drop`).  Three duplicate ACKs, or the RTO (RTO_INIT_S
  doubling to RTO_MAX_S, reset after MAX_RETRANS tries), rewind the peek
  to the guest's last ACK (`rewind`).  A zero guest window stops the peek
  and gets a probe at RTO.
- Guest payload in sequence goes to send() as is (`data_from_guest` says
  which bytes, `data_taken` what the socket's answer means); out of order
  or old data gets an ACK only.  A SYN once synchronized gets a challenge
  ACK (RFC 5961 section 4), a keep-alive probe an ACK.
- Timeouts (`on_timer`): handshake SYN_TIMEOUT_S, idle ACT_TIMEOUT_S once
  established, FIN_TIMEOUT_S once either side closed.

What each decision returns, and what the driver does with it (a unit test
checks this table against the constants below):

    decision           returns            value  driver action
    --------           -------            -----  -------------
    handshake_segment  HS_CONTINUE        0      go on with ACK and data processing
                       HS_DUP_SYN         2      count a duplicate SYN
                       HS_RESEND_SYNACK   3      count it, SYN-ACK again
                       HS_EARLY           4      drop: segment before our SYN-ACK
                       HS_SYN_MISMATCH    5      drop: SYN with another ISN
                       HS_NO_ACK          6      drop: no ACK flag
                       HS_BAD_ACK         7      drop, RST with seq = the segment's ack
                       HS_NOT_SYNACK      8      drop: we expected a SYN-ACK
                       HS_SYNACK          9      established by the guest's SYN-ACK: mark
    ack_from_guest     A_UNSENT           1      count an ACK of data never sent
                       A_FAST_RETRANSMIT  2      count a fast retransmit
    data_from_guest    D_NONE             -1     write nothing (an ACK may be due)
                       D_OUT_OF_ORDER     -2     write nothing, count it
                       (n >= 0)                  write payload[n:] to the socket
    data_taken         T_TUNE_BULK        1      set the bulk socket options
                       T_SNDBUF_FULL      2      count a short send()
                       T_SHUTDOWN         4      shutdown(SHUT_WR): the guest's FIN
    quiet_ack          Q_SERVICE          0      mark the flow for this turn's service
                       Q_NONE             1      nothing to do (no mark, no service)
                       Q_CLOSE            2      close the flow now (both FINs acked)
    service_plan       P_REWIND           1      peek offset back to the head, count
                       P_INFO             2      read TCP_INFO, then `reflect_peer`
                       P_PUSH             4      peek and send data (`push_budget`)
    turn_end           E_ACKS             7      (mask) send that many copies of a pure ACK
                       E_DELAY            8      hold the ACK (delayed-ACK list)
                       E_CLOSE            16     close the flow (both FINs acked)
                       E_POLL             32     re-read TCP_INFO in ACK_POLL_S
    on_timer           TM_REARM           0      arm the timer at `timer_at`
                       TM_SYN_TIMEOUT     1      reset: handshake timed out
                       TM_RESEND_SYNACK   2      SYN-ACK again, re-arm
                       TM_RESEND_SYN      3      SYN again, re-arm
                       TM_IDLE            4      reset: idle timeout
                       TM_GIVE_UP         5      reset: too many retransmissions
                       TM_RETRANSMIT      6      mark the flow (rewind at service), re-arm
                       TM_PROBE           7      zero-window probe (seq - 1), re-arm
    room_estimate      ROOM_MEASURE       -2     read SO_MEMINFO, then `room_measured`

State bits and transitions: tcp_state (its docstring holds that table).
Which decision fires which of its events (each through `next_state`; a
unit test checks this table against the code too):

    event               fired by          when
    -----               --------          ----
    EV_GUEST_SYN        guest_syn         a guest SYN for no flow, connect() started
    EV_SOCK_ACCEPTED    accepted          a -t connection accepted, our SYN goes out
    EV_CONNECTED        connected         the host connect() succeeded, SYN-ACK goes out
    EV_HANDSHAKE_DONE   established       the guest's ACK of our SYN-ACK, or its SYN-ACK
    EV_GUEST_FIN        data_taken        the guest's FIN, after all its data went to send()
    EV_GUEST_FIN_ACKED  ack_guest_fin     the peer acknowledged all the guest's data
    EV_SOCK_EOF         sock_eof          a zero-length peek: the peer closed
    EV_FIN_SENT         sock_eof          our FIN follows the last byte peeked
    EV_FIN_ACKED        ack_from_guest    a guest ACK covers our FIN
    EV_FIN_RESEND       rewind            a retransmission rewinds before our FIN
Offsets: host-to-guest (`sent`, `acked`, `snd_max`, `fin_off`) count data
bytes after our ISN + 1, guest-to-host (`rcvd`, `ack_off`) bytes after the
guest's ISN + 1; they are unbounded ints, only the wire is modulo 2**32.
"""

from __future__ import annotations

from typing import Final

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
from passt.wire.tcp import ACK, FIN, RST, SYN, TcpSegment

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
DUP_ACK_THRESHOLD: Final = 3
#: Guest-to-host bytes after which a flow counts as bulk and gets SO_SNDBUF and ACK events.
BULK_BYTES: Final = 64 << 10
#: A window below this may hold a guest back (its sender-side silly window
#: avoidance waits for min(MSS, half the largest window seen)): keep asking
#: TCP_INFO for news while ours is this small, even with nothing to acknowledge.
WINDOW_SMALL: Final = 16384
#: Bytes in flight when the socket has no peek offset: the driver peeks them
#: again into a scratch buffer of this size, so they are capped to it.
SCRATCH_BYTES: Final = 16 << 20

_M: Final = 0xFFFFFFFF
_NEG: Final = 0x80000000

# handshake_segment
HS_CONTINUE: Final = 0
HS_DUP_SYN: Final = 2
HS_RESEND_SYNACK: Final = 3
HS_EARLY: Final = 4
HS_SYN_MISMATCH: Final = 5
HS_NO_ACK: Final = 6
HS_BAD_ACK: Final = 7
HS_NOT_SYNACK: Final = 8
HS_SYNACK: Final = 9
# ack_from_guest (bits)
A_UNSENT: Final = 1
A_FAST_RETRANSMIT: Final = 2
# data_from_guest
D_NONE: Final = -1
D_OUT_OF_ORDER: Final = -2
# data_taken (bits)
T_TUNE_BULK: Final = 1
T_SNDBUF_FULL: Final = 2
T_SHUTDOWN: Final = 4
# quiet_ack
Q_SERVICE: Final = 0
Q_NONE: Final = 1
Q_CLOSE: Final = 2
# service_plan (bits)
P_REWIND: Final = 1
P_INFO: Final = 2
P_PUSH: Final = 4
# turn_end (bits; the low ones count ACK copies, at most DUP_ACK_THRESHOLD + 1)
E_ACKS: Final = 7
E_DELAY: Final = 8
E_CLOSE: Final = 16
E_POLL: Final = 32
# on_timer
TM_REARM: Final = 0
TM_SYN_TIMEOUT: Final = 1
TM_RESEND_SYNACK: Final = 2
TM_RESEND_SYN: Final = 3
TM_IDLE: Final = 4
TM_GIVE_UP: Final = 5
TM_RETRANSMIT: Final = 6
TM_PROBE: Final = 7
# room_estimate
ROOM_MEASURE: Final = -2


class TcpFlow:
    """A translated connection's numbers: sequence state both ways, windows, timers, flags.

    The driver's `tcp.TcpConn` extends it with the socket, the frame
    template and its timer handle; the decisions below read and write only
    these fields.
    """

    __slots__ = (
        "af", "state", "isn", "sent", "acked", "snd_max", "fin_off", "to_drop",
        "wnd_from_guest", "wnd_raw_from_guest", "ws_from_guest", "mss", "dup_acks",
        "g_isn", "rcvd", "ack_off", "ack_sent", "wnd_raw", "wnd_sent", "ws_to_guest",
        "acked_base", "no_tcpinfo", "peek_off", "truesize_ratio", "sndbuf",
        "sock_pending", "rdhup", "need_ack", "nudge", "sndbuf_full", "ack_all", "info_due",
        "retransmit", "bulk", "rto", "retries", "rto_deadline", "syn_deadline",
        "last_activity", "timer_at",
    )  # fmt: skip

    def __init__(self, af: int, isn: int, now: float, sndbuf: int = 0) -> None:
        #: Address family, 4 or 6.
        self.af = af
        #: tcp_state bits.
        self.state = 0
        #: Our initial sequence number towards the guest (RFC 6528: random).
        self.isn = isn
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
        #: Bulk options (SO_SNDBUF, ACK events) set: BULK_BYTES came from the guest.
        self.bulk = False
        self.rto = RTO_INIT_S
        self.retries = 0
        #: When the oldest unacked segment (or SYN, or window probe) is due again; 0: none.
        self.rto_deadline = 0.0
        self.syn_deadline = now + SYN_TIMEOUT_S
        self.last_activity = now
        #: When `on_timer` wants to run next (set by it).
        self.timer_at = 0.0

    def seq_nxt(self) -> int:
        """Sequence number of the next new byte we send the guest (after our FIN if sent)."""
        extra = 1 if self.state & FIN_SENT else 0
        return (self.isn + 1 + self.sent + extra) & _M

    def ack_num(self) -> int:
        """ACK number matching `ack_off` (plus the guest's FIN once acknowledged)."""
        extra = 1 if self.state & GUEST_FIN_ACKED else 0
        return (self.g_isn + 1 + self.ack_off + extra) & _M


# connection setup ----------------------------------------------------------------
def syn_params(c: TcpFlow, seg: TcpSegment, our_mss: int) -> None:
    """MSS and window scaling from the guest's SYN or SYN-ACK (RFC 7323 section 2.2)."""
    guest_mss = seg.mss or (MSS_DEFAULT4 if c.af == 4 else MSS_DEFAULT6)
    c.mss = max(1, min(our_mss, guest_mss))
    if seg.wscale >= 0:
        c.ws_from_guest = seg.wscale
        c.ws_to_guest = OUR_WS
    else:
        c.ws_from_guest = 0
        c.ws_to_guest = 0
    c.wnd_raw_from_guest = seg.window
    c.wnd_from_guest = seg.window  # never scaled in a SYN (RFC 7323 section 2.2)


def guest_syn(c: TcpFlow, seg: TcpSegment, our_mss: int) -> None:
    """A new flow from the guest's SYN (the driver has started the host connect())."""
    c.state = next_state(0, EV_GUEST_SYN)
    c.g_isn = seg.seq
    syn_params(c, seg, our_mss)


def accepted(c: TcpFlow, our_mss: int, acked_base: int, now: float) -> None:
    """A new flow from a host connection we accepted: our SYN goes to the guest now."""
    c.state = next_state(0, EV_SOCK_ACCEPTED)
    c.mss = our_mss
    c.acked_base = acked_base
    c.rto_deadline = now + c.rto


def connected(c: TcpFlow, acked_base: int, now: float) -> None:
    """The host connect() succeeded: our SYN-ACK goes to the guest now."""
    c.acked_base = acked_base
    c.state = next_state(c.state, EV_CONNECTED)
    c.rto_deadline = now + c.rto


def initial_window(snd_wnd: int) -> int:
    """Window for our SYN/SYN-ACK (never scaled): the peer's, at most 65535 (-1: not known)."""
    if snd_wnd < 0:
        return SND_WND_FALLBACK
    return min(snd_wnd, 65535) if snd_wnd else 65535


def synack_sent(c: TcpFlow, wnd: int) -> int:
    """Our SYN-ACK with window `wnd` leaves now; returns its ACK number."""
    ack = (c.g_isn + 1) & _M
    c.ack_sent = ack
    c.wnd_raw = c.wnd_sent = wnd >> c.ws_to_guest
    return ack


def established(c: TcpFlow) -> None:
    """Both handshakes done.

    No TCP_INFO is due for it: our SYN-ACK (or SYN) announced the peer's
    window as read at connect time, the ACK number cannot have moved (the
    guest sent nothing yet), and the first guest data asks for TCP_INFO
    anyway (`data_taken`).  The guest's handshake ACK alone then needs no
    service (`quiet_ack`: one TCP_INFO and one pass less per connection).
    """
    c.state = next_state(c.state, EV_HANDSHAKE_DONE)
    c.rto = RTO_INIT_S
    c.retries = 0
    c.rto_deadline = 0.0


def handshake_segment(c: TcpFlow, seg: TcpSegment, our_mss: int) -> int:
    """A guest segment (no RST) while a handshake is open: an HS_* action."""
    state = c.state
    flags = seg.flags
    if state & CONNECTING:
        return HS_DUP_SYN if flags & SYN and seg.seq == c.g_isn else HS_EARLY
    if state & SYNACK_SENT:
        if flags & SYN and not flags & ACK:
            return HS_RESEND_SYNACK if seg.seq == c.g_isn else HS_SYN_MISMATCH
        if not flags & ACK:
            return HS_NO_ACK
        if seg.ack != (c.isn + 1) & _M:
            return HS_BAD_ACK
        established(c)
        return HS_CONTINUE
    # SYN_SENT: we sent a SYN for a -t connection, expecting SYN-ACK.
    if flags & (SYN | ACK) != SYN | ACK:
        return HS_NOT_SYNACK
    if seg.ack != (c.isn + 1) & _M:
        return HS_BAD_ACK
    c.g_isn = seg.seq
    syn_params(c, seg, our_mss)
    established(c)
    c.need_ack = True
    c.info_due = True
    return HS_SYNACK


def rst_for_unknown(flags: int, seq: int, ack: int, plen: int) -> tuple[int, int, int]:
    """(seq, ack, flags) of our RST for a segment matching no flow (RFC 9293 section 3.10.7.1)."""
    if flags & ACK:
        return ack, 0, RST
    seglen = plen + (1 if flags & SYN else 0) + (1 if flags & FIN else 0)
    return 0, seq + seglen, RST | ACK


def rst_for(c: TcpFlow) -> tuple[int, int, int]:
    """(seq, ack, flags) of the RST that aborts flow `c` towards the guest."""
    if c.state & CONNECTING:
        return 0, c.g_isn + 1, RST | ACK
    if c.state & SYN_SENT:
        return c.isn + 1, 0, RST
    return c.seq_nxt(), c.ack_num(), RST | ACK


# guest -> host ----------------------------------------------------------------------
def synchronized_syn(c: TcpFlow) -> None:
    """A SYN once synchronized: challenge ACK (RFC 5961 section 4)."""
    c.need_ack = True


def ack_from_guest(c: TcpFlow, seq: int, ack: int, window: int, flags: int, plen: int, now: float) -> int:
    """The ACK, window and keep-alive part of a guest segment (with ACK set): A_* bits.

    Advances `acked` (and `to_drop`) for new ACKs, counts duplicates (three
    set `retransmit`), takes the guest's window; an ACK of data never sent,
    a keep-alive probe (seq = rcv_nxt - 1, RFC 9293 section 3.8.4) or a
    pure segment before our data set `need_ack`.
    """
    if plen == 0 and not flags & FIN and ((seq - c.g_isn - 1 - c.rcvd) & _M) == _M:
        c.need_ack = True
    base = (c.isn + 1 + c.acked) & _M
    delta = (ack - base) & _M
    if delta & _NEG:
        return 0  # old ACK (reordered): neither ack nor window news
    outstanding = c.snd_max - c.acked + (1 if c.fin_off >= 0 else 0)
    if delta > outstanding:
        c.need_ack = True
        return A_UNSENT
    ret = 0
    if delta:
        fin_off = c.fin_off
        new = c.acked + delta
        if fin_off >= 0 and new > fin_off:
            new = fin_off
            if not c.state & FIN_ACKED:  # (a repeated ACK of our FIN: no news)
                c.state = next_state(c.state, EV_FIN_ACKED)
        c.to_drop += new - c.acked
        c.acked = new
        if c.sent < new:
            c.sent = new
        c.dup_acks = 0
        c.retries = 0
        c.rto = RTO_INIT_S
        if c.sent > c.acked or c.state & FIN_SENT and not c.state & FIN_ACKED:
            c.rto_deadline = now + c.rto
        else:
            c.rto_deadline = 0.0
    elif plen == 0 and not flags & (SYN | FIN) and window == c.wnd_raw_from_guest and c.sent > c.acked:
        c.dup_acks += 1
        if c.dup_acks == DUP_ACK_THRESHOLD:
            c.retransmit = True
            ret = A_FAST_RETRANSMIT
    c.wnd_raw_from_guest = window
    c.wnd_from_guest = window << c.ws_from_guest
    return ret


def data_from_guest(c: TcpFlow, seq: int, flags: int, plen: int) -> int:
    """Guest payload or FIN: offset of the first new byte to write (D_* when none)."""
    if c.state & GUEST_FIN:
        c.need_ack = True  # retransmission after its FIN
        return D_NONE
    delta = (seq - c.g_isn - 1 - c.rcvd) & _M
    if not delta:
        return 0
    if not delta & _NEG:
        c.need_ack = True  # duplicate ACK: the guest fills the gap
        return D_OUT_OF_ORDER
    skip = (_M + 1) - delta
    if skip >= plen and not (flags & FIN and skip == plen):
        c.need_ack = True  # all old
        return D_NONE
    return skip


def data_taken(c: TcpFlow, want: int, sent: int, fin: int) -> int:
    """The socket took `sent` of the `want` new bytes (`fin`: the segment had FIN): T_* bits."""
    ret = 0
    if want:
        c.rcvd += sent
        c.info_due = True
        if not c.bulk and c.rcvd >= BULK_BYTES:
            c.bulk = True
            c.sndbuf = 0  # re-read SO_MEMINFO: the buffer grows now
            ret = T_TUNE_BULK
        if sent < want:
            c.sndbuf_full = True
            c.ack_all = True
            return ret | T_SNDBUF_FULL
    if fin:
        c.state = next_state(c.state, EV_GUEST_FIN)
        # With every byte already acknowledged by the peer, the FIN is
        # acknowledged without asking TCP_INFO (TCP_CRR closes).  The ACK
        # itself may wait a little (`turn_end`): the peer's own FIN
        # usually follows at once and carries it.
        if not ack_guest_fin(c):
            c.info_due = True
        ret |= T_SHUTDOWN
    return ret


def quiet_ack(c: TcpFlow) -> int:
    """A guest segment without payload or FIN went through `ack_from_guest`: does it need a service?

    Q_NONE when this turn's service would do nothing for the flow: nothing
    to drop (`to_drop`) or retransmit, no TCP_INFO due, no socket data to
    peek, no ACK owed or held (`turn_end` would return 0: same ACK number,
    no window news, no TCP_INFO poll wanted).  Q_CLOSE when the only thing
    left is the close: the segment acknowledged our FIN after the guest's
    FIN was acknowledged, with nothing to drop and no ACK owed (the last
    ACK of a TCP_CRR transaction).  Otherwise Q_SERVICE.  Only reads the
    flow, so the driver may ask for every such segment; it asks only for
    flows not already marked this turn (their service runs anyway).
    """
    state = c.state
    if (
        c.to_drop
        or not state & ESTABLISHED
        or c.retransmit
        or c.info_due
        or c.need_ack
        or c.nudge
        or c.sock_pending and not state & FIN_SENT
        or c.ack_num() != c.ack_sent
        or c.wnd_raw != c.wnd_sent and window_news(c)
    ):
        return Q_SERVICE
    if state & GUEST_FIN_ACKED and state & FIN_ACKED:
        return Q_CLOSE
    if c.rcvd > c.ack_off or state & GUEST_FIN and not state & GUEST_FIN_ACKED:
        return Q_SERVICE  # guest data (or its FIN) waits for the peer's ACK: TCP_INFO polls
    if c.wnd_raw == 0 and not state & GUEST_FIN:
        return Q_SERVICE  # our window is shut: polls watch it
    return Q_NONE


def ack_guest_fin(c: TcpFlow) -> bool:
    """A guest FIN counts as acknowledged once the peer acknowledged all the guest's data; True if so."""
    state = c.state
    if not state & GUEST_FIN or c.ack_off < c.rcvd:
        return False
    if not state & GUEST_FIN_ACKED:
        c.state = next_state(state, EV_GUEST_FIN_ACKED)
    return True


# host socket events --------------------------------------------------------------------
def sock_readable(c: TcpFlow, hup: bool) -> None:
    """The socket has news to read (data, EOF or reset when `hup`)."""
    c.sock_pending = True
    # The peer's data carries its ACK: reflect it in the frames we build,
    # unless it has nothing left to acknowledge and the window we announced
    # is not small enough to hold the guest back (a close after
    # request/response: one TCP_INFO less).
    if c.ack_off < c.rcvd or (c.wnd_raw << c.ws_to_guest) < WINDOW_SMALL:
        c.info_due = True
    if hup:
        c.rdhup = True


def sock_writable(c: TcpFlow) -> None:
    """The socket is writable again: after a short send(), duplicate ACKs go out."""
    if c.sndbuf_full:
        c.sndbuf_full = False
        c.nudge = True


# the peer's view, reflected ------------------------------------------------------------
def room_estimate(c: TcpFlow, outq: int) -> int:
    """Payload bytes the send buffer can still take, without a system call; ROOM_MEASURE if it must.

    With little unacknowledged (an eighth of the buffer) the exact queue
    size hardly matters: the last SO_SNDBUF seen and the unacked byte count
    answer (request/response traffic).
    """
    sndbuf = c.sndbuf
    if sndbuf and outq * 8 < sndbuf:
        return int(sndbuf * c.truesize_ratio) - max(outq, 0)
    return ROOM_MEASURE


def room_measured(c: TcpFlow, sndbuf: int, queued: int, outq: int) -> int:
    """Payload bytes the send buffer can take, from SO_MEMINFO's SO_SNDBUF and queued truesize."""
    c.sndbuf = sndbuf
    if queued > 0 and outq > 0:
        # Remember the last measurement: an empty queue says nothing, and
        # falling back to the default would make the window jump around.
        ratio = min(TRUESIZE_RATIO_MAX, max(TRUESIZE_RATIO_MIN, outq / queued))
        c.truesize_ratio = ratio
    else:
        ratio = c.truesize_ratio
    free = sndbuf - queued
    return int(free * ratio) if free > 0 else 0


def sndbuf_low(sndbuf: int, queued: int) -> bool:
    """Less than a third of the buffer free: we are the limit (poll(POLLOUT) so autotuning may grow it)."""
    return (sndbuf - queued) * 2 < queued


def reflect_peer(c: TcpFlow, bytes_acked: int, snd_wnd: int, room: int) -> None:
    """ACK what the peer acknowledged, announce its window capped by `room` (-1: unknown).

    `bytes_acked`/`snd_wnd`: TCP_INFO's tcpi_bytes_acked and tcpi_snd_wnd;
    `room`: payload bytes the send buffer can still take.
    """
    peer_acked = bytes_acked - c.acked_base
    rcvd = c.rcvd
    ack_off = peer_acked if peer_acked < rcvd else rcvd
    if c.ack_all:
        # The socket refused part of a segment (see data_taken): ACK what
        # it took, so duplicate ACKs point the guest at the hole.
        c.ack_all = False
        ack_off = rcvd
    wnd = snd_wnd
    if room >= 0:
        room += rcvd - max(ack_off, c.ack_off)
        if room < wnd:
            wnd = room
    if ack_off > c.ack_off:
        c.ack_off = ack_off
    if c.state & GUEST_FIN:
        ack_guest_fin(c)
    raw = wnd >> c.ws_to_guest
    c.wnd_raw = raw if raw < 65535 else 65535


def reflect_fallback(c: TcpFlow) -> bool:
    """TCP_INFO without snd_wnd: fixed window, ACK what the socket took; True the first time."""
    first = not c.no_tcpinfo
    c.no_tcpinfo = True
    if c.rcvd > c.ack_off:
        c.ack_off = c.rcvd
    ack_guest_fin(c)
    raw = SND_WND_FALLBACK >> c.ws_to_guest
    c.wnd_raw = raw if raw < 65535 else 65535
    return first


def window_news(c: TcpFlow) -> bool:
    """Is a window change alone (same ACK number) worth a pure ACK?

    Only a window that closes to zero, reopens, or grows by at least a
    quarter (and two MSS): the send-buffer estimate moves a little every
    turn, and a guest receiving several ACKs with the same number, whose
    windows differ, can count them as duplicates once its stack coalesces
    them (Linux merges queued pure ACKs), then retransmits for nothing.
    A smaller shrink waits for the next ACK that moves anyway.
    """
    raw = c.wnd_raw
    sent = c.wnd_sent
    if raw == sent:
        return False
    if raw == 0 or sent <= 0:
        return True
    grow = (raw - sent) << c.ws_to_guest
    return grow >= 2 * c.mss and grow * 4 >= sent << c.ws_to_guest


# one flow's turn -----------------------------------------------------------------------
def rewind(c: TcpFlow) -> None:
    """Retransmit from the guest's last ACK (the driver moves the peek offset back)."""
    c.retransmit = False
    c.dup_acks = 0
    c.sent = c.acked
    if c.state & FIN_SENT and not c.state & FIN_ACKED:
        # Resent after the data; fin_off still accepts late ACKs (tcp_state: EV_FIN_RESEND).
        c.state = next_state(c.state, EV_FIN_RESEND)
    c.sock_pending = True


def service_plan(c: TcpFlow) -> int:
    """What this turn's service of an established flow does first: P_* bits (after the drop)."""
    if not c.state & ESTABLISHED:
        return 0
    ret = 0
    if c.retransmit:
        rewind(c)
        ret = P_REWIND
    # A pure ACK needs fresh TCP_INFO only while the peer still owes an
    # acknowledgement (ack_off < rcvd): otherwise its number cannot move.
    if c.info_due or c.nudge or (c.need_ack and c.ack_off < c.rcvd):
        c.info_due = False
        ret |= P_INFO
    if c.sock_pending and not c.state & FIN_SENT:
        ret |= P_PUSH
    return ret


def push_budget(c: TcpFlow, now: float) -> int:
    """Bytes we may peek and send now: the guest's window minus bytes in flight (<= 0: none).

    A zero window arms the RTO for a probe.
    """
    in_flight = c.sent - c.acked
    avail = c.wnd_from_guest - in_flight
    if avail <= 0:
        if c.wnd_from_guest == 0 and not c.rto_deadline:
            c.rto_deadline = now + c.rto  # zero-window probe
        return 0
    if not c.peek_off:
        room = SCRATCH_BYTES - in_flight
        if room <= 0:
            return 0
        if room < avail:
            avail = room
    return avail


def pushed(c: TcpFlow, got: int, want: int, ack: int, now: float) -> bool:
    """`got` of `want` peeked bytes went to the guest with ACK `ack`; True: peek again (EOF next)."""
    c.sent += got
    if c.sent > c.snd_max:
        c.snd_max = c.sent
    c.ack_sent = ack
    c.wnd_sent = c.wnd_raw
    if not c.rto_deadline:
        c.rto_deadline = now + c.rto
    if got < want:
        c.sock_pending = c.rdhup  # peer closed: the next peek reads the EOF
        return c.rdhup
    return False


def sock_eof(c: TcpFlow, now: float) -> None:
    """End of stream and everything peeked: our FIN goes after the last byte.

    The driver sends FIN|ACK with seq ISN + 1 + `fin_off`, ack `ack_sent`, window `wnd_raw`.
    """
    c.sock_pending = False
    c.state = next_state(next_state(c.state, EV_SOCK_EOF), EV_FIN_SENT)
    c.ack_sent = c.ack_num()
    c.wnd_sent = c.wnd_raw
    c.fin_off = c.sent
    if c.sent > c.snd_max:
        c.snd_max = c.sent
    if not c.rto_deadline:
        c.rto_deadline = now + c.rto


def turn_end(c: TcpFlow) -> int:
    """The end of a flow's turn: its pure ACK (copies now, or delayed), close, TCP_INFO poll.

    Returns the number of pure ACK copies to send now (E_ACKS bits: 0 for
    none) or E_DELAY, plus E_CLOSE when both directions are closed, or
    E_POLL while guest data (or its FIN) waits for the peer's ACK or our
    window is shut.  Clears `need_ack` and `nudge`.  One call: it runs
    once per flow and turn.
    """
    state = c.state
    ack = (c.g_isn + 1 + c.ack_off + (1 if state & GUEST_FIN_ACKED else 0)) & _M
    ret = 0
    if c.need_ack or c.nudge or (c.wnd_raw != c.wnd_sent and window_news(c)):
        ret = 1
        if c.nudge:
            ret = DUP_ACK_THRESHOLD + (0 if ack == c.ack_sent else 1)
        c.need_ack = False
        c.nudge = False
    elif ack != c.ack_sent:
        ret = 1
        small = c.ack_sent >= 0 and ((ack - c.ack_sent) & _M) < c.mss
        # A guest FIN's ACK waits too while our FIN is still to come (it
        # will carry the ACK: one frame less per close); once ours is out,
        # the flow may end this turn, so the last ACK goes now.
        if small and not (state & GUEST_FIN and state & FIN_SENT):
            ret = E_DELAY
    if state & GUEST_FIN_ACKED and state & FIN_ACKED:
        return ret | E_CLOSE
    if c.rcvd > c.ack_off or (state & GUEST_FIN and not state & GUEST_FIN_ACKED):
        return ret | E_POLL  # guest data waits for the peer's ACK
    if c.wnd_raw == 0 and not state & GUEST_FIN:
        return ret | E_POLL  # our window is shut: watch for it to open
    return ret


def ack_sent(c: TcpFlow) -> int:
    """A pure ACK leaves now: returns its ACK number (window `wnd_raw`, seq `seq_nxt()`)."""
    ack = c.ack_num()
    c.ack_sent = ack
    c.wnd_sent = c.wnd_raw
    return ack


def delayed_ack_due(c: TcpFlow) -> bool:
    """The delayed-ACK time is up: does the ACK still need sending (no frame carried it)?"""
    if c.ack_num() != c.ack_sent:
        c.need_ack = True
        return True
    return False


def on_timer(c: TcpFlow, now: float) -> int:
    """The flow's timer fired: a TM_* action; `timer_at` is when to run again (unless reset)."""
    state = c.state
    if state & HANDSHAKE:
        if now >= c.syn_deadline:
            return TM_SYN_TIMEOUT
        ret = TM_REARM
        if state & (SYNACK_SENT | SYN_SENT) and c.rto_deadline and now >= c.rto_deadline:
            ret = TM_RESEND_SYNACK if state & SYNACK_SENT else TM_RESEND_SYN
            c.rto = min(c.rto * 2, RTO_MAX_S)
            c.rto_deadline = now + c.rto
        nxt = c.syn_deadline
        if c.rto_deadline and c.rto_deadline < nxt:
            nxt = c.rto_deadline
        c.timer_at = nxt
        return ret
    idle = FIN_TIMEOUT_S if state & (GUEST_FIN | SOCK_EOF) else ACT_TIMEOUT_S
    if now - c.last_activity >= idle:
        return TM_IDLE
    ret = TM_REARM
    if c.rto_deadline and now >= c.rto_deadline:
        if c.snd_max > c.acked or (state & FIN_SENT and not state & FIN_ACKED):
            c.retries += 1
            if c.retries > MAX_RETRANS:
                return TM_GIVE_UP
            c.rto = min(c.rto * 2, RTO_MAX_S)
            c.rto_deadline = now + c.rto
            c.retransmit = True
            ret = TM_RETRANSMIT
        elif c.wnd_from_guest == 0 and c.sock_pending:
            # Zero-window probe: an out-of-window ACK makes the guest announce its window.
            c.rto = min(c.rto * 2, RTO_MAX_S)
            c.rto_deadline = now + c.rto
            ret = TM_PROBE
        else:
            c.rto_deadline = 0.0
    nxt = c.last_activity + idle
    if c.rto_deadline and c.rto_deadline < nxt:
        nxt = c.rto_deadline
    c.timer_at = nxt
    return ret
