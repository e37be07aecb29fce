"""passt's back-end: Ethernet frames over a UNIX stream socket, as QEMU sends them.

Framing: each frame is preceded by its length as a 4-byte big-endian integer
(QEMU's `-netdev stream` and `-net socket`).

Reading: one `recv_into` fills a large preallocated buffer with whatever is
available; every complete frame is handed out as a memoryview slice; a partial
trailing frame is moved to the front at the next read (when the views handed
out before are dead).  A length of 0 or above
`MAX_FRAME` means the framing is lost: nothing after it can be trusted, so the
link is reset (passt does the same), with one warning in the log, and the
guest may reconnect.

Writing: frames queue as (length header, frame) pairs and leave in one
`sendmsg` per flush (IOV_MAX buffers at a time).  A short write keeps the
unsent rest; frames still queued after a flush are copied, so callers may reuse
their buffers as soon as flush() returns (the TCP frame ring relies on it).
While frames wait, `pending()` is True and the loop watches the socket for
writability (context.Context.flush_tap): the rest leaves when the guest reads.  The queue is bounded (`MAX_QUEUED`
bytes): past it, frames are dropped and counted; TCP retransmits them.
"""

from __future__ import annotations

import errno
import socket
import struct
import time
from typing import Final

from passt import log
from passt.buffers import lazy_buffer
from passt.counters import Counters
from passt.tap.base import Buffer
from passt.tap.pcap import Pcap

#: Largest frame accepted from or sent to QEMU: 65535 (IP) + Ethernet header.
MAX_FRAME: Final = 65535 + 14
#: Smallest frame that can be Ethernet at all.
MIN_FRAME: Final = 14
#: Receive buffer: room for many 64 KiB frames per recv_into.
RX_BUF: Final = 8 << 20
#: Bound on bytes waiting for the guest's socket to drain.
MAX_QUEUED: Final = 16 << 20
#: sendmsg() iovec limit (IOV_MAX).
IOV_MAX: Final = 1024

_LEN: Final = struct.Struct(">I")


class StreamTap:
    """One connected QEMU (or qrap) over a UNIX stream socket."""

    offload = False

    def __init__(self, sock: socket.socket, counters: Counters, pcap: Pcap | None = None) -> None:
        sock.setblocking(False)
        for opt, size in ((socket.SO_RCVBUF, 4 << 20), (socket.SO_SNDBUF, 4 << 20)):
            try:
                sock.setsockopt(socket.SOL_SOCKET, opt, size)
            except OSError:
                pass
        self.sock = sock
        self.counters = counters
        self.pcap = pcap
        self._buf = lazy_buffer(RX_BUF)
        self._view = memoryview(self._buf)
        self._have = 0  # bytes of a partial frame kept in the buffer
        self._tail_off = 0  # where that partial frame starts
        self._out: list[Buffer] = []
        self._out_bytes = 0
        self._closed = False

    def fileno(self) -> int:
        return self.sock.fileno()

    @property
    def closed(self) -> bool:
        return self._closed

    def read_frames(self) -> list[memoryview]:
        """Read what is available; return every complete frame in it."""
        frames: list[memoryview] = []
        if self._closed:
            return frames
        view = self._view
        if self._tail_off:
            self._buf[0 : self._have] = self._buf[self._tail_off : self._tail_off + self._have]
            self._tail_off = 0
        try:
            n = self.sock.recv_into(view[self._have :])
        except BlockingIOError:
            return frames
        except OSError:
            self._closed = True
            return frames
        if n == 0:
            self._closed = True
            return frames
        end = self._have + n
        off = 0
        unpack = _LEN.unpack_from
        while end - off >= 4:
            (length,) = unpack(view, off)
            if length < MIN_FRAME or length > MAX_FRAME:
                # once per connection: the link is reset right after
                log.warn(f"guest sent a frame length of {length} (valid: {MIN_FRAME}-{MAX_FRAME}): "
                         "framing lost, resetting the link")
                self.counters.drop("stream_bad_length")
                self._closed = True
                return frames
            if end - off - 4 < length:
                break
            frames.append(view[off + 4 : off + 4 + length])
            off += 4 + length
        if self.pcap is not None and frames:
            now = time.time()
            for frame in frames:
                self.pcap.write(frame, now)
        # The partial tail is moved to the front at the next call, once the
        # views handed out now are no longer in use.
        self._tail_off = off
        self._have = end - off
        return frames

    def send(self, frame: Buffer) -> None:
        n = len(frame)
        if self._out_bytes + n > MAX_QUEUED or n > MAX_FRAME:
            self.counters.drop("tap_queue_full")
            return
        self._out.append(_LEN.pack(n))
        self._out.append(frame)
        self._out_bytes += n + 4
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
        raise NotImplementedError("the stream back-end takes only complete frames (offload is False)")

    def flush(self) -> None:
        out = self._out
        if not out or self._closed:
            return
        sent_total = 0
        try:
            while out:
                batch = out[:IOV_MAX]
                sent = self.sock.sendmsg(batch)
                sent_total += sent
                # drop fully written buffers, trim a partial one
                i = 0
                while i < len(batch) and sent >= len(batch[i]):
                    sent -= len(batch[i])
                    i += 1
                del out[:i]
                if sent:
                    out[0] = bytes(memoryview(out[0])[sent:])
                    break
        except BlockingIOError:
            pass
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.EINTR):
                self._closed = True
                out.clear()
        self._out_bytes -= sent_total
        if out:
            # keep nothing that belongs to a caller's reusable buffer
            self._out = [b if type(b) is bytes else bytes(b) for b in out]
        else:
            self._out_bytes = 0

    def pending(self) -> bool:
        return bool(self._out) and not self._closed

    def close(self) -> None:
        self._closed = True
        self._out.clear()
        self._out_bytes = 0
        try:
            self.sock.close()
        except OSError:
            pass
