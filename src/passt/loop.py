"""The single-threaded event loop: epoll for descriptors, a heap for timers.

Each registration stores its handler with the descriptor (passt's epoll_ref):
one wake-up reads the clock once, dispatches every ready descriptor, runs due
timers, then runs deferred work (passt's post_handler) such as flushing the
tap's out batch, so frames produced by many events leave in one write.

A descriptor can be suspended for a while (`suspend`): taken out of the
selector and put back by a timer.  A level-triggered source that stays ready
but cannot be served (a listener while accept() fails with EMFILE) would
otherwise wake every turn and spin at 100 % CPU.

Waiting: epoll directly (the `selectors` wrapper costs several microseconds
a call).  After a turn that handled events the loop polls without blocking
for up to BUSY_POLL_S (50 us), yielding the CPU between polls, before it
sleeps: in request/response traffic the answer usually arrives within tens
of microseconds, and a vCPU that went idle is slow to wake (TCP_RR 5 000 ->
8 000+ transactions/s on the bench, bulk throughput unchanged).  An idle loop
never spins: the budget is only granted by a turn that did work.

Bounds: timers are cancelled lazily (a cancelled entry stays in the heap until
popped); the heap is compacted when more than half of it is cancelled.
"""

from __future__ import annotations

import heapq
import itertools
import select
import selectors
import time
from collections.abc import Callable
from os import sched_yield
from typing import Final

#: Handler for a ready descriptor: (selector event mask, now).
Handler = Callable[[int, float], None]
#: Timer or deferred callback: (now).
TimerCallback = Callable[[float], None]

EVENT_READ: Final = selectors.EVENT_READ
EVENT_WRITE: Final = selectors.EVENT_WRITE

#: Longest we sleep with nothing scheduled, so signals and bugs stay visible.
MAX_SLEEP_S: Final = 1.0
#: After a turn that did work, poll (timeout 0) this long before blocking.
BUSY_POLL_S: Final = 50e-6


class Timer:
    """A scheduled callback; `cancel()` makes it a no-op."""

    __slots__ = ("deadline", "callback", "cancelled")

    def __init__(self, deadline: float, callback: TimerCallback) -> None:
        self.deadline = deadline
        self.callback = callback
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class EventLoop:
    """epoll + timer heap + deferred (post-handler) work."""

    def __init__(self, *, busy_poll: float = BUSY_POLL_S) -> None:
        self._ep = select.epoll()
        #: fd -> (selector events, handler): what `selectors` would keep, without its per-call wrapping.
        self._fds: dict[int, tuple[int, Handler]] = {}
        self._timers: list[tuple[float, int, Timer]] = []
        self._seq = itertools.count()
        self._cancelled = 0
        self._deferred: list[TimerCallback] = []
        self._deferred_set: set[TimerCallback] = set()
        self._running = False
        #: stop() was called, perhaps by a signal before run() started: run() returns at once.
        self._stop_requested = False
        self._busy_poll = busy_poll
        #: Spin budget for the next wait: `busy_poll` after a turn with events, else 0.
        self._spin = 0.0
        #: Suspended descriptors: fd -> (events, handler, timer that re-registers it).
        self._suspended: dict[int, tuple[int, Handler, Timer]] = {}
        #: Clock reading of the current wake-up (time.monotonic()).
        self.now = time.monotonic()

    # descriptors -------------------------------------------------------
    def register(self, fd: int, events: int, handler: Handler) -> None:
        """Watch `fd` for `events`, calling `handler(events, now)` when ready."""
        if fd in self._fds or fd in self._suspended:
            raise KeyError(f"{fd} is already registered")
        self._ep.register(fd, _to_epoll(events))
        self._fds[fd] = (events, handler)

    def modify(self, fd: int, events: int, handler: Handler) -> None:
        """Change what `fd` is watched for (call only when interest changes)."""
        held = self._suspended.get(fd)
        if held is not None:
            self._suspended[fd] = (events, handler, held[2])
            return
        old = self._fds[fd]
        if old[0] != events:
            self._ep.modify(fd, _to_epoll(events))
        self._fds[fd] = (events, handler)

    def set_events(self, fd: int, events: int) -> bool:
        """Change what `fd` is watched for, keeping its handler; False: `fd` is not watched."""
        entry = self._fds.get(fd)
        if entry is None:
            held = self._suspended.get(fd)
            if held is None:
                return False
            self._suspended[fd] = (events, held[1], held[2])
            return True
        if entry[0] != events:
            self._ep.modify(fd, _to_epoll(events))
            self._fds[fd] = (events, entry[1])
        return True

    def unregister(self, fd: int) -> None:
        """Stop watching `fd`; unknown descriptors are ignored."""
        held = self._suspended.pop(fd, None)
        if held is not None:
            self.cancel(held[2])
            return
        if self._fds.pop(fd, None) is not None:
            try:
                self._ep.unregister(fd)
            except (OSError, ValueError):
                pass  # already closed: the kernel forgot it

    def suspend(self, fd: int, delay: float) -> bool:
        """Stop watching `fd` for `delay` seconds, then watch it again as before.

        For a source that stays ready while it cannot be served (a listener
        whose accept() fails with EMFILE/ENFILE).  `unregister` during the
        pause cancels the re-registration.  False: `fd` was not watched.
        """
        if fd in self._suspended:
            return True
        entry = self._fds.get(fd)
        if entry is None:
            return False
        self.unregister(fd)
        events, handler = entry

        def resume(_now: float) -> None:
            if self._suspended.pop(fd, None) is not None:
                self.register(fd, events, handler)

        self._suspended[fd] = (events, handler, self.call_later(delay, resume))
        return True

    def is_suspended(self, fd: int) -> bool:
        return fd in self._suspended

    def is_registered(self, fd: int) -> bool:
        return fd in self._fds or fd in self._suspended

    @property
    def registered_count(self) -> int:
        return len(self._fds) + len(self._suspended)

    # timers --------------------------------------------------------------
    def call_at(self, deadline: float, callback: TimerCallback) -> Timer:
        """Run `callback(now)` once the monotonic clock reaches `deadline`."""
        timer = Timer(deadline, callback)
        heapq.heappush(self._timers, (deadline, next(self._seq), timer))
        return timer

    def call_later(self, delay: float, callback: TimerCallback) -> Timer:
        return self.call_at(time.monotonic() + delay, callback)

    def cancel(self, timer: Timer) -> None:
        if not timer.cancelled:
            timer.cancel()
            self._cancelled += 1
            if self._cancelled > 64 and self._cancelled * 2 > len(self._timers):
                self._timers = [t for t in self._timers if not t[2].cancelled]
                heapq.heapify(self._timers)
                self._cancelled = 0

    def defer(self, callback: TimerCallback) -> None:
        """Run `callback(now)` after this wake-up's events (once, however often asked)."""
        if callback not in self._deferred_set:
            self._deferred_set.add(callback)
            self._deferred.append(callback)

    # running -------------------------------------------------------------
    def stop(self) -> None:
        """End run() after the current turn; called before run(), run() returns at once."""
        self._running = False
        self._stop_requested = True

    def run_once(self, timeout: float | None = None) -> None:
        """One wake-up: wait, dispatch descriptors, due timers, deferred work."""
        if self._deferred:
            wait: float = 0.0
        elif self._timers:
            wait = max(0.0, min(self._timers[0][0] - time.monotonic(), MAX_SLEEP_S))
        else:
            wait = MAX_SLEEP_S
        if timeout is not None:
            wait = min(wait, timeout)
        poll = self._ep.poll
        try:
            if wait > 0.0 and self._spin > 0.0:
                ready = poll(0)
                if not ready:
                    end = time.monotonic() + self._spin
                    while not ready and time.monotonic() < end:
                        sched_yield()
                        ready = poll(0)
                    if not ready:
                        ready = poll(wait)
            else:
                ready = poll(wait)
        except InterruptedError:
            ready = []
        self._spin = self._busy_poll if ready else 0.0
        now = self.now = time.monotonic()
        fds = self._fds
        masks = _MASKS
        for fd, ev in ready:
            entry = fds.get(fd)
            if entry is None:
                continue  # unregistered by an earlier handler of this turn
            handler = entry[1]
            handler(masks[ev & _EPOLL_BITS] & entry[0], now)
        timers = self._timers
        while timers and timers[0][0] <= now:
            _, _, timer = heapq.heappop(timers)
            if timer.cancelled:
                self._cancelled -= 1
                continue
            timer.cancelled = True
            timer.callback(now)
        while self._deferred:
            deferred = self._deferred
            self._deferred = []
            self._deferred_set.clear()
            for callback in deferred:
                callback(now)

    def run(self) -> None:
        """Run until `stop()`."""
        self._running = not self._stop_requested
        while self._running:
            self.run_once()

    def close(self) -> None:
        self._ep.close()


_EPOLLIN: Final = select.EPOLLIN
_EPOLLOUT: Final = select.EPOLLOUT


#: What epoll reports for the events we register: IN, PRI, OUT, ERR, HUP.
_EPOLL_BITS: Final = 0x1F


def _selector_mask(ev: int) -> int:
    """epoll's report as selector events: ERR/HUP wake both readers and writers (as `selectors`)."""
    mask = 0
    if ev & ~_EPOLLIN:
        mask |= EVENT_WRITE
    if ev & ~_EPOLLOUT:
        mask |= EVENT_READ
    return mask


#: _selector_mask of every combination of _EPOLL_BITS, looked up once per ready descriptor.
_MASKS: Final = tuple(_selector_mask(ev) for ev in range(_EPOLL_BITS + 1))


def _to_epoll(events: int) -> int:
    mask = 0
    if events & EVENT_READ:
        mask |= _EPOLLIN
    if events & EVENT_WRITE:
        mask |= _EPOLLOUT
    return mask
