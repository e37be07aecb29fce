"""passt's stream tap in the loop: frames a short sendmsg leaves behind leave on EVENT_WRITE.

The guest end of a UNIX socketpair stops reading until the tap's sendmsg comes
up short; from then on every read by the guest must be answered by the loop's
write event (no timer, no later frame, no deferred flush in between), until the
queue is empty and the tap is watched for reading only again.
"""

from __future__ import annotations

import socket
import struct

from passt.config import FwdMode, PortFwd
from passt.loop import EVENT_READ, EVENT_WRITE
from passt.runtime import Runtime
from passt.tap.stream import StreamTap
from tests.unit.conftest import make_config

FRAME_LEN = 16 << 10
#: 4 MiB of frames: far more than a 64 KiB send buffer takes.
FRAMES = 256


class CountingTap(StreamTap):
    """A StreamTap that counts its flushes."""

    flushes = 0

    def flush(self) -> None:
        self.flushes += 1
        super().flush()


def frame(i: int) -> bytes:
    return struct.pack("!I", i) + bytes([i & 0xFF]) * (FRAME_LEN - 4)


def drain(sock: socket.socket, into: bytearray) -> int:
    """Read what the guest end has now (non-blocking); the byte count."""
    got = 0
    while True:
        try:
            chunk = sock.recv(1 << 20)
        except BlockingIOError:
            return got
        if not chunk:
            return got
        into += chunk
        got += len(chunk)


def test_stream_tap_short_write_drains_on_write_event() -> None:
    # no IPv6: no NDP, so no RA timer that could flush for us
    rt = Runtime(make_config(ip6=None, tcp_in=PortFwd(mode=FwdMode.NONE), udp_in=PortFwd(mode=FwdMode.NONE)))
    loop = rt.loop
    ours, guest = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    guest.setblocking(False)
    tap = CountingTap(ours, rt.ctx.counters)
    ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 64 << 10)  # after the tap's 4 MiB request
    rt.attach_tap(tap)
    fd = tap.fileno()
    assert rt._tap_handler is not None
    inner = rt._tap_handler
    masks: list[int] = []

    def spy(mask: int, now: float) -> None:
        masks.append(mask)
        inner(mask, now)

    loop.modify(fd, EVENT_READ, spy)
    try:
        for i in range(FRAMES):
            rt.ctx.send(frame(i))
        loop.run_once(0)  # the deferred flush: the guest does not read, sendmsg comes up short
        assert tap.pending(), "the socketpair took 4 MiB at once: nothing to test"
        assert loop._fds[fd][0] == EVENT_READ | EVENT_WRITE
        received = bytearray()
        rounds = 0
        while tap.pending():
            rounds += 1
            assert rounds < 10 * FRAMES
            assert drain(guest, received) > 0
            flushes, masks[:] = tap.flushes, []
            assert not loop._timers and not loop._deferred
            loop.run_once(timeout=5.0)
            # woken by the tap's write event, which flushed once: no timer, no deferred work
            assert masks and all(m & EVENT_WRITE for m in masks), masks
            assert tap.flushes == flushes + len(masks)
        assert loop._fds[fd][0] == EVENT_READ, "write interest kept after the queue drained"
        drain(guest, received)
        assert tap.counters.drops.get("tap_queue_full", 0) == 0
        want = b"".join(struct.pack(">I", FRAME_LEN) + frame(i) for i in range(FRAMES))
        assert received == want
        # drained: an idle writable socket does not wake the loop
        masks[:] = []
        loop.run_once(timeout=0.05)
        assert masks == []
    finally:
        rt.detach_tap(loop.now)
        guest.close()
        rt.forwarder.stop()
        loop.close()
