"""TCP flow state: the bits of `TcpConn.state` and the one function that changes them.

A translated connection has no TCP stack of its own, so its state is not
RFC 9293's eleven states but what the translation must remember about the two
handshakes (guest's and host socket's) and the two closes (one per
direction).  It is a set of bits; every change goes through `next_state`
with a named event, and the table below is the whole list of changes:

    event               requires (any of)      forbids          sets                 clears
    -----               -----------------      -------          ----                 ------
    EV_GUEST_SYN        (no bit: new flow)     -                CONNECTING           -
    EV_SOCK_ACCEPTED    (no bit: new flow)     -                SYN_SENT             -
    EV_CONNECTED        CONNECTING             -                SYNACK_SENT          CONNECTING
    EV_HANDSHAKE_DONE   SYNACK_SENT, SYN_SENT  -                ESTABLISHED          all handshake
    EV_GUEST_FIN        ESTABLISHED            GUEST_FIN        GUEST_FIN            -
    EV_GUEST_FIN_ACKED  GUEST_FIN              GUEST_FIN_ACKED  GUEST_FIN_ACKED      -
    EV_SOCK_EOF         ESTABLISHED            -                SOCK_EOF             -
    EV_FIN_SENT         SOCK_EOF               FIN_SENT         FIN_SENT             -
    EV_FIN_ACKED        SOCK_EOF               FIN_ACKED        FIN_ACKED, FIN_SENT  -
    EV_FIN_RESEND       FIN_SENT               FIN_ACKED        -                    FIN_SENT

As a picture (one flow; the two close columns are independent):

    guest SYN --> CONNECTING --connect() ok--> SYNACK_SENT --guest ACK--+
    -t accept --> SYN_SENT ----------------guest SYN-ACK----------------+--> ESTABLISHED
                                                                              |
         guest -> host:  GUEST_FIN --peer acked all guest data--> GUEST_FIN_ACKED
         host -> guest:  SOCK_EOF --all peeked--> FIN_SENT --guest ACK--> FIN_ACKED
                                                  |     ^
                                     retransmit   |     | FIN resent after the data,
                                     (rewind)     v     | or the guest ACKs the old FIN
                                                (FIN_SENT cleared)
    GUEST_FIN_ACKED and FIN_ACKED: closed.  RST either way, or a timeout: closed.

The backward step, EV_FIN_RESEND: a retransmission rewinds to the guest's
last ACK (`sent = acked`), which lies before our FIN.  FIN_SENT must go
then: while it is set `tcp_decide.service_plan` does not peek (the data after `acked`
would never be resent) and `seq_nxt` counts the FIN (our ACKs would carry a
sequence number one past the data being resent).  The FIN goes again after
the data (EV_FIN_SENT once more); an ACK covering the first FIN arriving
meanwhile sets FIN_SENT back with FIN_ACKED (fin_off keeps its offset).
EV_SOCK_EOF may repeat for the same reason (the peek after the resent data
sees the end of stream again): it changes nothing then.

"Closed" is not a bit: `tcp.TcpConn.closed` is set once, by `TcpHandler._close`.
The decisions that fire these events are in tcp_decide.
A table lookup and an assert per change, about once per state per
connection: nothing here runs per segment.
"""

from __future__ import annotations

from typing import Final, NamedTuple

# state bits
CONNECTING: Final = 0x001
SYNACK_SENT: Final = 0x002
SYN_SENT: Final = 0x004
ESTABLISHED: Final = 0x008
SOCK_EOF: Final = 0x010
FIN_SENT: Final = 0x020
FIN_ACKED: Final = 0x040
GUEST_FIN: Final = 0x080
GUEST_FIN_ACKED: Final = 0x100
HANDSHAKE: Final = CONNECTING | SYNACK_SENT | SYN_SENT

STATE_NAMES: Final = (
    (CONNECTING, "CONNECTING"), (SYNACK_SENT, "SYNACK_SENT"), (SYN_SENT, "SYN_SENT"),
    (ESTABLISHED, "ESTABLISHED"), (SOCK_EOF, "SOCK_EOF"), (FIN_SENT, "FIN_SENT"),
    (FIN_ACKED, "FIN_ACKED"), (GUEST_FIN, "GUEST_FIN"), (GUEST_FIN_ACKED, "GUEST_FIN_ACKED"),
)  # fmt: skip

# events (plain ints: an IntEnum member lookup costs ~10x a module constant)
EV_GUEST_SYN: Final = 0
EV_SOCK_ACCEPTED: Final = 1
EV_CONNECTED: Final = 2
EV_HANDSHAKE_DONE: Final = 3
EV_GUEST_FIN: Final = 4
EV_GUEST_FIN_ACKED: Final = 5
EV_SOCK_EOF: Final = 6
EV_FIN_SENT: Final = 7
EV_FIN_ACKED: Final = 8
EV_FIN_RESEND: Final = 9


class Transition(NamedTuple):
    """One row of the table: when an event may happen and what it changes."""

    name: str
    #: At least one of these bits must be set; 0: the flow must be new (state 0).
    requires: int
    #: None of these may be set.
    forbids: int
    sets: int
    clears: int


#: Indexed by event number; the module docstring shows the same table.
TRANSITIONS: Final = (
    Transition("guest SYN", 0, 0, CONNECTING, 0),
    Transition("host connection accepted", 0, 0, SYN_SENT, 0),
    Transition("host connect() done", CONNECTING, 0, SYNACK_SENT, CONNECTING),
    Transition("handshake done", SYNACK_SENT | SYN_SENT, 0, ESTABLISHED, HANDSHAKE),
    Transition("guest FIN", ESTABLISHED, GUEST_FIN, GUEST_FIN, 0),
    Transition("guest FIN acked by peer", GUEST_FIN, GUEST_FIN_ACKED, GUEST_FIN_ACKED, 0),
    Transition("host socket EOF", ESTABLISHED, 0, SOCK_EOF, 0),
    Transition("FIN sent to guest", SOCK_EOF, FIN_SENT, FIN_SENT, 0),
    Transition("guest acked our FIN", SOCK_EOF, FIN_ACKED, FIN_ACKED | FIN_SENT, 0),
    Transition("rewind before our FIN", FIN_SENT, FIN_ACKED, 0, FIN_SENT),
)  # fmt: skip


#: The same rows as plain tuples (requires, forbids, sets, clears): unpacked once per change.
_ROWS: Final = tuple((t.requires, t.forbids, t.sets, t.clears) for t in TRANSITIONS)


def allowed(state: int, event: int) -> bool:
    """May `event` happen in `state` (the table's requires/forbids columns)?"""
    t = TRANSITIONS[event]
    if t.requires == 0:
        return state == 0
    return bool(state & t.requires) and not state & t.forbids


def next_state(state: int, event: int) -> int:
    """The state after `event`: the only place state bits change.

    An event the table does not allow in `state` is a broken invariant of
    tcp_decide (it checks the conditions first), hence an assert.  The
    check is `allowed` written out (no second call per transition).
    """
    requires, forbids, sets, clears = _ROWS[event]
    assert (state & requires if requires else state == 0) and not state & forbids, (
        f"TCP {TRANSITIONS[event].name} in {describe(state)}"
    )
    return (state & ~clears) | sets


def describe(state: int) -> str:
    """State bits by name, for logs and assertion messages ("-" for none)."""
    return "|".join(name for bit, name in STATE_NAMES if state & bit) or "-"
