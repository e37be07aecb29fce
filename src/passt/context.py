r"""The runtime context every handler shares: config, guest state, loop, tap.

One `Context` exists per process.  The dispatcher (`dispatch.py`) hands each
parsed guest frame to a service or an L4 handler; handlers send frames back
through `ctx.tap` (which may be None in passt while no guest is connected:
then frames are dropped and counted) and create host sockets themselves.
The context holds no handlers: they need it, so they are built after it and
handed to the dispatcher (runtime.py), not set on it later.

    tap --read_frames()--> dispatch.from_tap --> services.* / flows.{tcp,udp,icmp}.from_tap
    flows/services --ctx.send()/ctx.send_gso()--> tap out batch --(deferred) flush
                                                                  \--(tap writable) flush

Write interest: a flush the guest cannot take whole (a short `sendmsg` on
passt's stream socket) leaves frames queued in the tap.  `flush_tap` then
adds EVENT_WRITE to the tap's registration, so the rest leaves as soon as
the guest reads, not at some later event or timer; once drained, interest
goes back to EVENT_READ alone (a writable socket would wake every turn).
The tap's loop handler (runtime.py) calls `flush_tap` on EVENT_WRITE.
"""

from __future__ import annotations

from typing import Protocol

from passt.config import Config
from passt.counters import Counters
from passt.guest import GuestState
from passt.loop import EVENT_READ, EVENT_WRITE, EventLoop
from passt.tap.base import Buffer, TapBackend


class L4Handler(Protocol):
    """What the dispatcher calls for TCP, UDP and ICMP frames from the guest."""

    def from_tap(self, af: int, src: bytes, dst: bytes, l4: memoryview, now: float) -> None:
        """Handle one L4 segment from the guest.

        `af` is 4 or 6; `src`/`dst` are the packed IP addresses; `l4` is the
        L4 header plus payload, bounded by the IP header's length field (the
        L4 header itself is not validated yet: the handler must check it).
        """
        ...

    def tap_reset(self) -> None:
        """The guest link went away (passt): drop every flow bound to it."""
        ...


class Context:
    """Process-wide runtime state."""

    __slots__ = ("conf", "guest", "loop", "counters", "tap", "_write_watched")

    def __init__(self, conf: Config, loop: EventLoop) -> None:
        self.conf = conf
        self.guest = GuestState.from_config(conf)
        self.loop = loop
        self.counters = Counters()
        #: The connected guest link; None while passt waits for a guest.
        self.tap: TapBackend | None = None
        #: The tap whose registration holds EVENT_WRITE (frames wait in it); None: read only.
        self._write_watched: TapBackend | None = None

    def send(self, frame: Buffer) -> None:
        """Queue a complete frame to the guest and make sure it is flushed this turn."""
        tap = self.tap
        if tap is None:
            self.counters.drop("no_guest")
            return
        tap.send(frame)
        self.loop.defer(self.flush_tap)

    def send_gso(
        self,
        frame: Buffer,
        *,
        csum_start: int,
        csum_offset: int,
        gso_type: int,
        gso_size: int,
        hdr_len: int,
    ) -> None:
        """Queue an offloaded frame (only when `tap.offload`); see TapBackend.send_gso."""
        tap = self.tap
        if tap is None:
            self.counters.drop("no_guest")
            return
        tap.send_gso(
            frame,
            csum_start=csum_start,
            csum_offset=csum_offset,
            gso_type=gso_type,
            gso_size=gso_size,
            hdr_len=hdr_len,
        )
        self.loop.defer(self.flush_tap)

    def flush_tap(self, _now: float) -> None:
        """Write the tap's out batch; watch the tap for writability while frames remain."""
        tap = self.tap
        if tap is None:
            return
        tap.flush()
        if tap.pending():
            if self._write_watched is not tap and self.loop.set_events(tap.fileno(), EVENT_READ | EVENT_WRITE):
                self._write_watched = tap
        elif self._write_watched is not None:
            self._write_watched = None
            self.loop.set_events(tap.fileno(), EVENT_READ)
