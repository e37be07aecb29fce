"""pasta's tap back-end reading frames: a lone frame after silence, bursts until EAGAIN.

A UNIX datagram socketpair stands in for the tap descriptor: like the tap,
each read returns one whole datagram (here: a virtio-net header and a frame).
"""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from passt.counters import Counters
from passt.tap import tuntap
from passt.tap.tuntap import VNET_HDR_LEN, TunTap


def _frame(i: int) -> bytes:
    return bytes(VNET_HDR_LEN) + bytes([i]) * 60


@pytest.fixture
def pair() -> Iterator[tuple[TunTap, socket.socket]]:
    ours, guest = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    tap = TunTap(ours.detach(), Counters())
    yield tap, guest
    tap.close()
    guest.close()


def test_tuntap_after_silence_reads_one_frame(pair: tuple[TunTap, socket.socket]) -> None:
    tap, guest = pair
    for i in range(3):
        guest.send(_frame(i))
    frames = tap.read_frames()
    assert [bytes(f[:1]) for f in frames] == [b"\0"]
    # the rest is read at once on the next call (the loop's epoll still reports the tap)
    frames = tap.read_frames()
    assert [bytes(f[:1]) for f in frames] == [b"\1", b"\2"]
    assert not tap.closed


def test_tuntap_busy_reads_until_empty(
    pair: tuple[TunTap, socket.socket], monkeypatch: pytest.MonkeyPatch
) -> None:
    tap, guest = pair
    monkeypatch.setattr(tuntap, "IDLE_S", 1e9)  # never idle: every call reads the whole queue
    for i in range(5):
        guest.send(_frame(i))
    assert [f[0] for f in tap.read_frames()] == [0, 1, 2, 3, 4]
    guest.send(_frame(7))
    assert [f[0] for f in tap.read_frames()] == [7]  # lone frame: poll(0) said nothing more
    assert tap.read_frames() == []
    assert tap.counters.drops["tap_short"] == 0


def test_tuntap_short_frames_counted(pair: tuple[TunTap, socket.socket]) -> None:
    tap, guest = pair
    guest.send(bytes(VNET_HDR_LEN + 4))
    guest.send(_frame(1))
    assert [f[0] for f in tap.read_frames()] == [1]
    assert tap.counters.drops["tap_short"] == 1
    assert not tap.closed
