"""Drop and event counters: every frame we refuse is counted by reason.

A plain dict keyed by short reason strings; incrementing is one dict update,
cheap enough for the error path (the fast path does not touch it).
"""

from __future__ import annotations

from collections import Counter


class Counters:
    """Counts of dropped frames and notable events, by reason."""

    __slots__ = ("drops", "events")

    def __init__(self) -> None:
        self.drops: Counter[str] = Counter()
        self.events: Counter[str] = Counter()

    def drop(self, reason: str) -> None:
        """Count one dropped frame."""
        self.drops[reason] += 1

    def event(self, name: str) -> None:
        """Count one event (a lease handed out, a flow opened...)."""
        self.events[name] += 1

    @property
    def dropped(self) -> int:
        return sum(self.drops.values())
