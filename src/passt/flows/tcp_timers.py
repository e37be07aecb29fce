"""TCP's handler-wide timer lists: delayed ACKs, TCP_INFO polls, flows the frame ring starved.

Each flow has its own timer for handshake, RTO and idle deadlines
(`TcpHandler._arm`, decisions in `tcp_decide.on_timer`).  The three waits
here are shared instead: many flows wait the same short time, so one
loop timer per list serves them all, and a flow is in each list at most
once (its `in_delack` / `in_poll` flag; starved flows are few and cleared
every turn).  Each list's timer, when it fires, only marks the flows for
the driver's deferred service (`mark`); no socket is touched here.

    list      wait          why
    ----      ----          ---
    delack    ACK_DELAY_S   a pure ACK for a small segment waits for a data frame to carry it
    poll      ACK_POLL_S    guest data waits for the peer's ACK, or our window is 0:
                            re-read TCP_INFO (a safety net under the ACK events)
    starved   next turn     the frame ring was used up this turn
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Final

from passt.flows.tcp_decide import delayed_ack_due
from passt.loop import EventLoop, Timer

if TYPE_CHECKING:
    from passt.flows.tcp import TcpConn

#: How often to re-read TCP_INFO while guest data waits for the peer's ACK.
ACK_POLL_S: Final = 0.01
#: How long a pure ACK for less than one MSS may wait for data to ride on.
ACK_DELAY_S: Final = 0.001


class TcpTimers:
    """The three shared waits of a TcpHandler; `mark` queues a flow for the driver's service."""

    __slots__ = ("_loop", "_mark", "_delack", "_delack_timer", "_poll", "_poll_timer", "_starved", "_starved_timer")

    def __init__(self, loop: EventLoop, mark: Callable[[TcpConn], None]) -> None:
        self._loop = loop
        self._mark = mark
        self._delack: list[TcpConn] = []
        self._delack_timer: Timer | None = None
        self._poll: list[TcpConn] = []
        self._poll_timer: Timer | None = None
        self._starved: list[TcpConn] = []
        self._starved_timer: Timer | None = None

    def delay_ack(self, conn: TcpConn, now: float) -> None:
        """Hold a pure ACK for a small segment up to ACK_DELAY_S (RFC 9293 section 3.8.6.3).

        A request from the guest is usually answered by the peer within
        microseconds: the answer's data frame then carries the ACK, and the
        guest's stack handles one frame instead of two (TCP_RR).  Bulk data
        (a full MSS or more newly acknowledged) is never delayed.
        """
        if conn.in_delack:
            return
        conn.in_delack = True
        self._delack.append(conn)
        if self._delack_timer is None:
            self._delack_timer = self._loop.call_at(now + ACK_DELAY_S, self._on_delack)

    def _on_delack(self, _now: float) -> None:
        self._delack_timer = None
        conns = self._delack
        self._delack = []
        for conn in conns:
            conn.in_delack = False
            if not conn.closed and delayed_ack_due(conn):
                self._mark(conn)

    def want_poll(self, conn: TcpConn, now: float) -> None:
        """Re-read TCP_INFO in ACK_POLL_S: guest data waits for the peer's ACK, or window is 0."""
        if conn.in_poll:
            return
        conn.in_poll = True
        self._poll.append(conn)
        if self._poll_timer is None:
            self._poll_timer = self._loop.call_at(now + ACK_POLL_S, self._on_poll)

    def _on_poll(self, _now: float) -> None:
        self._poll_timer = None
        conns = self._poll
        self._poll = []
        for conn in conns:
            conn.in_poll = False
            if not conn.closed:
                conn.info_due = True
                self._mark(conn)

    def starve(self, conn: TcpConn, now: float) -> None:
        """The frame ring is used up this turn: continue next turn."""
        self._starved.append(conn)
        if self._starved_timer is None:
            self._starved_timer = self._loop.call_at(now, self._on_starved)

    def _on_starved(self, _now: float) -> None:
        self._starved_timer = None
        conns = self._starved
        self._starved = []
        for conn in conns:
            if not conn.closed:
                self._mark(conn)
