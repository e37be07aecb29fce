"""Bounded flow table shared by the L4 handlers.

Every flow (TCP connection, UDP 5-tuple, ICMP echo identifier) lives in one
dict keyed by a tuple; the table refuses new entries past `capacity` so a
guest flooding SYNs or UDP flows cannot grow memory without bound (the caller
drops and counts).  Idle expiry is the caller's job (it knows its timeouts).
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Final, Generic, Protocol, TypeVar

#: Default bound: upstream passt allows 2**17 flows in total; we keep it per protocol.
FLOW_MAX: Final = 1 << 17

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class Timestamped(Protocol):
    """A flow that records when it last carried traffic."""

    last: float


T = TypeVar("T", bound=Timestamped)


class FlowTable(Generic[K, V]):
    """A dict with a hard size bound."""

    __slots__ = ("_flows", "capacity")

    def __init__(self, capacity: int = FLOW_MAX) -> None:
        self._flows: dict[K, V] = {}
        self.capacity = capacity

    def get(self, key: K) -> V | None:
        return self._flows.get(key)

    def add(self, key: K, flow: V) -> bool:
        """Insert; False when the table is full (nothing changes then)."""
        if len(self._flows) >= self.capacity and key not in self._flows:
            return False
        self._flows[key] = flow
        return True

    def remove(self, key: K) -> V | None:
        return self._flows.pop(key, None)

    def __len__(self) -> int:
        return len(self._flows)

    def __contains__(self, key: object) -> bool:
        return key in self._flows

    def values(self) -> list[V]:
        """A snapshot of the flows (safe to remove while iterating it)."""
        return list(self._flows.values())


def expire_idle(table: FlowTable[K, T], limit: float, close: Callable[[T], None]) -> int:
    """Close (with `close`) every flow whose last traffic is older than `limit`; returns how many."""
    closed = 0
    for flow in table.values():
        if flow.last < limit:
            close(flow)
            closed += 1
    return closed
