"""tcp_state: the transition table, driven with plain ints (no socket, no handler)."""

from __future__ import annotations

import re

import pytest

from passt.flows import tcp_state as ts
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
    next_state,
)

EST = ESTABLISHED

#: (state before, event, state after): every row of the table, and the repeats it allows.
ALLOWED: list[tuple[int, int, int]] = [
    (0, ts.EV_GUEST_SYN, CONNECTING),
    (0, ts.EV_SOCK_ACCEPTED, SYN_SENT),
    (CONNECTING, ts.EV_CONNECTED, SYNACK_SENT),
    (SYNACK_SENT, ts.EV_HANDSHAKE_DONE, EST),
    (SYN_SENT, ts.EV_HANDSHAKE_DONE, EST),
    (EST, ts.EV_GUEST_FIN, EST | GUEST_FIN),
    (EST | GUEST_FIN, ts.EV_GUEST_FIN_ACKED, EST | GUEST_FIN | GUEST_FIN_ACKED),
    (EST, ts.EV_SOCK_EOF, EST | SOCK_EOF),
    (EST | SOCK_EOF, ts.EV_SOCK_EOF, EST | SOCK_EOF),  # again after a rewind: no change
    (EST | SOCK_EOF, ts.EV_FIN_SENT, EST | SOCK_EOF | FIN_SENT),
    (EST | SOCK_EOF | FIN_SENT, ts.EV_FIN_ACKED, EST | SOCK_EOF | FIN_SENT | FIN_ACKED),
    # the backward step: a rewind before our FIN clears FIN_SENT ...
    (EST | SOCK_EOF | FIN_SENT, ts.EV_FIN_RESEND, EST | SOCK_EOF),
    # ... then the FIN goes again, or an ACK of the first one sets FIN_SENT back with FIN_ACKED
    (EST | SOCK_EOF, ts.EV_FIN_ACKED, EST | SOCK_EOF | FIN_SENT | FIN_ACKED),
    (EST | GUEST_FIN | SOCK_EOF, ts.EV_FIN_SENT, EST | GUEST_FIN | SOCK_EOF | FIN_SENT),
]

#: (state, event) pairs the table refuses: each would be a bug in tcp.py.
REFUSED: list[tuple[int, int]] = [
    (CONNECTING, ts.EV_GUEST_SYN),  # only a new flow
    (EST, ts.EV_SOCK_ACCEPTED),
    (SYN_SENT, ts.EV_CONNECTED),  # no connect() on an accepted socket
    (CONNECTING, ts.EV_HANDSHAKE_DONE),  # the guest's ACK needs our SYN-ACK first
    (EST, ts.EV_HANDSHAKE_DONE),
    (SYNACK_SENT, ts.EV_GUEST_FIN),  # FIN only once established
    (EST | GUEST_FIN, ts.EV_GUEST_FIN),  # a second guest FIN is a retransmission
    (EST, ts.EV_GUEST_FIN_ACKED),
    (EST | GUEST_FIN | GUEST_FIN_ACKED, ts.EV_GUEST_FIN_ACKED),
    (SYN_SENT, ts.EV_SOCK_EOF),
    (EST, ts.EV_FIN_SENT),  # no FIN before the socket's EOF
    (EST | SOCK_EOF | FIN_SENT, ts.EV_FIN_SENT),
    (EST, ts.EV_FIN_ACKED),
    (EST | SOCK_EOF | FIN_SENT | FIN_ACKED, ts.EV_FIN_ACKED),
    (EST | SOCK_EOF, ts.EV_FIN_RESEND),  # nothing to take back
    (EST | SOCK_EOF | FIN_SENT | FIN_ACKED, ts.EV_FIN_RESEND),  # an acked FIN is never resent
]


@pytest.mark.parametrize(("before", "event", "after"), ALLOWED)
def test_transition(before: int, event: int, after: int) -> None:
    assert ts.allowed(before, event)
    assert next_state(before, event) == after, ts.describe(next_state(before, event))


@pytest.mark.parametrize(("state", "event"), REFUSED)
def test_refused_transition_is_a_broken_invariant(state: int, event: int) -> None:
    assert not ts.allowed(state, event)
    with pytest.raises(AssertionError, match=re.escape(ts.TRANSITIONS[event].name)):
        next_state(state, event)


def test_every_event_is_tested_both_ways() -> None:
    events = range(len(ts.TRANSITIONS))
    assert {e for _, e, _ in ALLOWED} == set(events)
    assert {e for _, e in REFUSED} == set(events)


@pytest.mark.parametrize(
    "events",
    [
        # guest opens, host closes first, guest closes
        [ts.EV_GUEST_SYN, ts.EV_CONNECTED, ts.EV_HANDSHAKE_DONE, ts.EV_SOCK_EOF, ts.EV_FIN_SENT,
         ts.EV_FIN_ACKED, ts.EV_GUEST_FIN, ts.EV_GUEST_FIN_ACKED],
        # -t connection, guest closes first, our FIN lost once
        [ts.EV_SOCK_ACCEPTED, ts.EV_HANDSHAKE_DONE, ts.EV_GUEST_FIN, ts.EV_GUEST_FIN_ACKED,
         ts.EV_SOCK_EOF, ts.EV_FIN_SENT, ts.EV_FIN_RESEND, ts.EV_SOCK_EOF, ts.EV_FIN_SENT,
         ts.EV_FIN_ACKED],
    ],
)  # fmt: skip
def test_whole_lives_end_with_both_fins_acked(events: list[int]) -> None:
    """Both closes acknowledged is the one end state (TcpHandler._service closes the flow)."""
    state = 0
    for ev in events:
        state = next_state(state, ev)
    assert state == ESTABLISHED | SOCK_EOF | FIN_SENT | FIN_ACKED | GUEST_FIN | GUEST_FIN_ACKED


def _bits(cell: str) -> int:
    cell = cell.strip()
    if cell in ("-", ""):
        return 0
    if cell.startswith("("):
        return 0
    if cell == "all handshake":
        return ts.HANDSHAKE
    return sum(getattr(ts, name) for name in re.split(r",\s*", cell))


def test_docstring_table_matches_the_code() -> None:
    """The table a reader sees in tcp_state's docstring is TRANSITIONS, row by row."""
    doc = ts.__doc__ or ""
    rows = [line for line in doc.splitlines() if re.match(r"\s+EV_[A-Z_]+\s", line)]
    assert len(rows) == len(ts.TRANSITIONS)
    for line in rows:
        name = line.split()[0]
        # columns: event, requires, forbids, sets, clears (split on 2+ spaces)
        cells = re.split(r"\s{2,}", line.strip())
        assert len(cells) == 5, line
        t = ts.TRANSITIONS[getattr(ts, name)]
        assert (_bits(cells[1]), _bits(cells[2]), _bits(cells[3]), _bits(cells[4])) == (
            t.requires, t.forbids, t.sets, t.clears), line  # fmt: skip


def test_describe() -> None:
    assert ts.describe(0) == "-"
    assert ts.describe(ESTABLISHED | GUEST_FIN) == "ESTABLISHED|GUEST_FIN"
