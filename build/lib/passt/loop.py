"""The single-threaded event loop: `selectors` for descriptors, a heap for timers.

Each registration stores its handler with the descriptor (passt's epoll_ref):
one wake-up reads the clock once, dispatches every ready descriptor, runs due
timers, then runs deferred work (passt's post_handler) such as flushing the
tap's out batch, so frames produced by many events leave in one write.

Bounds: timers are cancelled lazily (a cancelled entry stays in the heap until
popped); the heap is compacted when more than half of it is cancelled.
"""

from __future__ import annotations

import heapq
import itertools
import selectors
import time
from collections.abc import Callable
from typing import Final

#: Handler for a ready descriptor: (selector event mask, now).
Handler = Callable[[int, float], None]
#: Timer or deferred callback: (now).
TimerCallback = Callable[[float], None]

EVENT_READ: Final = selectors.EVENT_READ
EVENT_WRITE: Final = selectors.EVENT_WRITE

#: Longest we sleep with nothing scheduled, so signals and bugs stay visible.
MAX_SLEEP_S: Final = 1.0


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
    """selectors + timer heap + deferred (post-handler) work."""

    def __init__(self) -> None:
        self._sel = selectors.DefaultSelector()
        self._timers: list[tuple[float, int, Timer]] = []
        self._seq = itertools.count()
        self._cancelled = 0
        self._deferred: list[TimerCallback] = []
        self._deferred_set: set[TimerCallback] = set()
        self._running = False
        #: Clock reading of the current wake-up (time.monotonic()).
        self.now = time.monotonic()

    # descriptors -------------------------------------------------------
    def register(self, fd: int, events: int, handler: Handler) -> None:
        """Watch `fd` for `events`, calling `handler(events, now)` when ready."""
        self._sel.register(fd, events, handler)

    def modify(self, fd: int, events: int, handler: Handler) -> None:
        """Change what `fd` is watched for (call only when interest changes)."""
        self._sel.modify(fd, events, handler)

    def unregister(self, fd: int) -> None:
        """Stop watching `fd`; unknown descriptors are ignored."""
        try:
            self._sel.unregister(fd)
        except (KeyError, ValueError):
            pass

    def is_registered(self, fd: int) -> bool:
        try:
            self._sel.get_key(fd)
        except (KeyError, ValueError):
            return False
        return True

    @property
    def registered_count(self) -> int:
        return len(self._sel.get_map())

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
        self._running = False

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
        ready = self._sel.select(wait)
        now = self.now = time.monotonic()
        for key, mask in ready:
            handler: Handler = key.data
            handler(mask, now)
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
        self._running = True
        while self._running:
            self.run_once()

    def close(self) -> None:
        self._sel.close()
