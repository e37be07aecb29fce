"""pasta's back-end: a tap device with a virtio-net header (IFF_VNET_HDR).

The descriptor is opened inside the target namespace (by the namespace
helper) and handed to us; the interface lives there, we read and write it
from the init namespace.  Offloads: with TUNSETOFFLOAD(CSUM|TSO4|TSO6) the
namespace's kernel hands us TCP segments of up to 64 KiB with only a partial
checksum, and takes 64 KiB frames from us with VIRTIO_NET_HDR_F_NEEDS_CSUM and
a GSO type, segmenting and checksumming them itself: one system call and one
Python iteration per 64 KiB instead of per 1500 bytes (docs/architecture.md).

Reading: `readv` into a ring of preallocated slots until EAGAIN or the ring is
full; each slot holds one frame after its 10-byte virtio-net header.
Writing: one `writev([header, frame])` per frame (the tap takes one frame per
write); EAGAIN drops the rest of the batch (counted): the kernel queue is full
and TCP will retransmit.  So nothing is ever left queued after a flush:
`pending()` is then False and the loop never watches the tap for writability.
"""

from __future__ import annotations

import errno
import os
import struct
import time
from typing import Final

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
        self._ring = bytearray(SLOT * RX_SLOTS)
        self._view = memoryview(self._ring)
        self._slots = [self._view[i * SLOT : (i + 1) * SLOT] for i in range(RX_SLOTS)]
        self._out: list[list[Buffer]] = []
        self._closed = False

    def fileno(self) -> int:
        return self.fd

    @property
    def closed(self) -> bool:
        return self._closed

    def read_frames(self) -> list[memoryview]:
        frames: list[memoryview] = []
        readv = os.readv
        fd = self.fd
        for slot in self._slots:
            try:
                n = readv(fd, [slot])
            except BlockingIOError:
                break
            except OSError as exc:
                if exc.errno == errno.EINTR:
                    continue
                self._closed = True
                break
            if n <= VNET_HDR_LEN + 14:
                if n == 0:
                    self._closed = True
                    break
                self.counters.drop("tap_short")
                continue
            frames.append(slot[VNET_HDR_LEN:n])
        if self.pcap is not None and frames:
            now = time.time()
            for frame in frames:
                self.pcap.write(frame, now)
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
                self._closed = True
        out.clear()

    def pending(self) -> bool:
        return bool(self._out)

    def close(self) -> None:
        self._closed = True
        self._out.clear()
        try:
            os.close(self.fd)
        except OSError:
            pass
