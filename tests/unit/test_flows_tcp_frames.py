"""The frame ring's ownership rule: queued slots belong to the tap until rewind()."""

from __future__ import annotations

import pytest

from passt.flows.tcp_frames import RING_SLOTS_MIN, FrameRing


def test_frame_ring_slots_handed_over_until_rewind() -> None:
    ring = FrameRing(offload=False, tap_mtu=1500)
    assert len(ring.slots) >= RING_SLOTS_MIN and ring.used == 0
    ring.used = 3
    ring.used = 5  # more frames queued this turn
    with pytest.raises(AssertionError):
        ring.used = 4  # slot 4 is still queued in the tap
    with pytest.raises(AssertionError):
        ring.used = len(ring.slots) + 1
    ring.rewind()  # the tap flushed: every slot is free again
    assert ring.used == 0
    ring.used = 1
