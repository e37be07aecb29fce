"""pasta's back-end: a tap device with a virtio-net header (IFF_VNET_HDR).

The descriptor is opened inside the target namespace (by the namespace
helper) and handed to us; the interface lives there, we read and write it
from the init namespace.  Offloads: with TUNSETOFFLOAD(CSUM|TSO4|TSO6) the
namespace's kernel hands us TCP segments of up to 64 KiB with only a partial
checksum, and takes 64 KiB frames from us with VIRTIO_NET_HDR_F_NEEDS_CSUM and
a GSO type, segmenting and checksumming them itself: one system call and one
Python iteration per 64 KiB instead of per 1500 bytes (docs/architecture.md).

Reading: `readv` into a ring of preallocated slots until EAGAIN or the ring is
full; each slot holds one frame after its 10-byte virtio-net header.  The
latency path avoids the EAGAIN: Python raises it as BlockingIOError, which
after a 10 ms idle spell cost ~30 us of cold interpreter on the bench (the
ping trace in docs/performance.md), more than the echo's whole C budget.  So a
wake-up after IDLE_S of silence reads one frame and returns (the level-triggered
epoll reports at once whatever else is queued), and otherwise the first frame
is followed by a poll(0) of the tap, a system call that answers "nothing
more" without an exception; only a burst ends in EAGAIN.
Writing: one `writev([header, frame])` per frame (the tap takes one frame per
write); EAGAIN drops the rest of the batch (counted): the kernel queue is full
and TCP will retransmit.  So nothing is ever left queued after a flush:
`pending()` is then False and the loop never watches the tap for writability.
"""

from __future__ import annotations

import errno
import os
import select
import struct
import time
from typing import Final

from passt.buffers import lazy_buffer
from passt.counters import Counters
from passt.tap.base import GSO_NONE, Buffer
from passt.tap.pcap import Pcap

#: struct virtio_net_hdr: flags, gso_type, hdr_len, gso_size, csum_start, csum_offset.
VNET_HDR: Final = struct.Struct("<BBHHHH")
VNET_HDR_LEN: Final = VNET_HDR.size
VIRTIO_NET_HDR_F_NEEDS_CSUM: Final = 1
#: One slot: the header plus the largest frame (64 KiB IP + Ethernet).
SLOT: Final = VNET_HDR_LEN + 65535 + 14
#: Frames read per turn at most: bounds latency for other descriptors.
RX_SLOTS: Final = 128
#: A tap silent for this long has its next wake-up read as a lone frame (read_frames).
IDLE_S: Final = 1e-3
#: Frames written per flush at most before giving the loop back.
MAX_QUEUED: Final = 4096

_PLAIN_HDR: Final = bytes(VNET_HDR_LEN)


class TunTap:
    """A tap device descriptor with a virtio-net header on every frame."""

    offload = True

    def __init__(self, fd: int, counters: Counters, pcap: Pcap | None = None) -> None:
        os.set_blocking(fd, False)
        self.fd = fd
        self.counters = counters
        self.pcap = pcap
        self._ring = lazy_buffer(SLOT * RX_SLOTS)  # one page per slot until a segment fills it
        self._view = memoryview(self._ring)
        self._slots = [self._view[i * SLOT : (i + 1) * SLOT] for i in range(RX_SLOTS)]
        #: One iovec list per slot, built once (readv takes a sequence of buffers).
        self._iovs = [[slot] for slot in self._slots]
        #: Readability check after the first frame of a turn (see read_frames).
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        self._more = poller.poll
        self._out: list[list[Buffer]] = []
        #: The device went away (EOF, EBADF...): a plain attribute, read once per wake-up.
        self.closed = False
        #: time.monotonic() of the last read_frames() that found a frame.
        self._last_rx = 0.0

    def fileno(self) -> int:
        return self.fd

    def read_frames(self) -> list[memoryview]:
        frames: list[memoryview] = []
        readv = os.readv
        fd = self.fd
        iovs = self._iovs
        slots = self._slots
        now = time.monotonic()
        # After an idle spell a wake-up is one frame (ping, RR, the first SYN): return it
        # without a second read; a level-triggered epoll reports anything left at once.
        lone = now - self._last_rx > IDLE_S
        i = 0
        for _ in range(RX_SLOTS):
            try:
                n = readv(fd, iovs[i])
            except BlockingIOError:
                break
            except OSError as exc:
                if exc.errno == errno.EINTR:
                    continue
                self.closed = True
                break
            if n <= VNET_HDR_LEN + 14:
                if n == 0:
                    self.closed = True
                    break
                self.counters.drop("tap_short")
                continue
            frames.append(slots[i][VNET_HDR_LEN:n])
            i += 1
            if i == 1 and (lone or not self._more(0)):
                break
        if frames:
            self._last_rx = now
            if self.pcap is not None:
                stamp = time.time()
                for frame in frames:
                    self.pcap.write(frame, stamp)
        return frames

    def send(self, frame: Buffer) -> None:
        if len(self._out) >= MAX_QUEUED:
            self.counters.drop("tap_queue_full")
            return
        self._out.append([_PLAIN_HDR, frame])
        if self.pcap is not None:
            self.pcap.write(frame)

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
        if len(self._out) >= MAX_QUEUED:
            self.counters.drop("tap_queue_full")
            return
        if gso_type == GSO_NONE:
            gso_size = 0
        hdr = VNET_HDR.pack(VIRTIO_NET_HDR_F_NEEDS_CSUM, gso_type, hdr_len, gso_size, csum_start, csum_offset)
        self._out.append([hdr, frame])
        if self.pcap is not None:
            self.pcap.write(frame)

    def flush(self) -> None:
        out = self._out
        if not out:
            return
        writev = os.writev
        fd = self.fd
        done = 0
        try:
            for iov in out:
                writev(fd, iov)
                done += 1
        except BlockingIOError:
            self.counters.drops["tap_full"] += len(out) - done
        except OSError as exc:
            self.counters.drops["tap_write_error"] += len(out) - done
            if exc.errno in (errno.EBADF, errno.EIO, errno.ENXIO):
                self.closed = True
        out.clear()

    def pending(self) -> bool:
        return bool(self._out)

    def close(self) -> None:
        self.closed = True
        self._out.clear()
        try:
            os.close(self.fd)
        except OSError:
            pass
