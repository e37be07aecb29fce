"""Guest datagrams to connected host sockets, sent in batches with UDP GSO.

A guest that streams UDP (iperf3 -u, QUIC, RTP) hands us runs of equal-sized
datagrams of one flow within one tap read.  Sending each with its own
`send()` costs a system call and, worse, the whole path of one datagram
through the host's stack (and, towards a local peer, the peer's receive path)
per datagram.  Instead the flows queue their payloads here during the turn,
and the deferred flush sends each socket's run of equal-sized datagrams as
one `sendmsg()` with UDP_SEGMENT (udp(7), Linux 4.18): the payloads are
gathered from where they lie (no copy), the stack carries one large skb, and
it is cut back into exactly the datagrams the guest sent (the last one of a
run may be shorter) at the latest possible point, in hardware or in GSO.

    from_tap --add(sock, payload)--> per-socket runs --(deferred) flush--> sendmsg(UDP_SEGMENT)

Why it is safe to hold the payloads until the flush: they are views into
the tap back-end's receive buffers, which stay untouched until the next
`read_frames()`, and the loop runs deferred work before it waits again.

What is not batched: a lone datagram (plain `send()`), runs longer than
GSO_MAX_SEGMENTS or GSO_MAX_BYTES (split), and any run on a socket where the
kernel refused UDP_SEGMENT once (EINVAL, ENOPROTOOPT, EMSGSIZE, EIO: a path
MTU below the segment size, an old kernel, a device without checksum
offload): those are sent one by one from then on.  Errors are counted per
datagram, as the unbatched path does.
"""

from __future__ import annotations

import errno
import socket
import struct
from collections.abc import Callable
from typing import Final

from passt.counters import Counters

#: linux/udp.h: setsockopt/cmsg level SOL_UDP (= IPPROTO_UDP), option UDP_SEGMENT.
SOL_UDP: Final = socket.IPPROTO_UDP
UDP_SEGMENT: Final = 103
#: Segments per GSO send (the kernel's UDP_MAX_SEGMENTS is 64 on older kernels).
GSO_MAX_SEGMENTS: Final = 64
#: Payload bytes per GSO send: the whole run must fit one IP datagram's length field.
GSO_MAX_BYTES: Final = 65000
#: Datagrams queued per turn before the rest go out unbatched (bounds what one turn holds).
BATCH_MAX: Final = 4096

_SEG: Final = struct.Struct("=H")
#: errno values that mean "no GSO on this socket": fall back to one send per datagram.
_NO_GSO: Final = frozenset((errno.EINVAL, errno.ENOPROTOOPT, errno.EMSGSIZE, errno.EIO,
                            errno.EOPNOTSUPP))  # fmt: skip


class UdpSendBatch:
    """Payloads queued per connected socket during one loop turn, flushed with UDP GSO."""

    def __init__(self, counters: Counters, defer: Callable[[Callable[[float], None]], None]) -> None:
        self.counters = counters
        self._defer = defer
        #: socket -> payloads in arrival order (dicts keep insertion order: sockets in order too).
        self._queued: dict[socket.socket, list[memoryview]] = {}
        self._count = 0
        #: Sockets on which the kernel refused UDP_SEGMENT (closed sockets drop out with `forget`).
        self._no_gso: set[socket.socket] = set()
        self._flush_cb = self.flush

    def add(self, sock: socket.socket, payload: memoryview) -> None:
        """Queue one datagram for `sock` (connected); sent at the end of this turn."""
        if self._count >= BATCH_MAX:
            self._send_one(sock, payload)
            return
        queued = self._queued.get(sock)
        if queued is None:
            if not self._queued:
                self._defer(self._flush_cb)
            self._queued[sock] = [payload]
        else:
            queued.append(payload)
        self._count += 1

    def forget(self, sock: socket.socket) -> None:
        """`sock` is about to close: send what it has queued now and forget it."""
        queued = self._queued.pop(sock, None)
        if queued is not None:
            self._count -= len(queued)
            self._send_runs(sock, queued)
        self._no_gso.discard(sock)

    def flush(self, _now: float = 0.0) -> None:
        """Send everything queued this turn."""
        queued = self._queued
        if not queued:
            return
        self._queued = {}
        self._count = 0
        for sock, payloads in queued.items():
            if len(payloads) == 1:
                self._send_one(sock, payloads[0])
            else:
                self._send_runs(sock, payloads)

    def _send_runs(self, sock: socket.socket, payloads: list[memoryview]) -> None:
        """Cut `payloads` into GSO runs (equal sizes; the last may be shorter) and send each."""
        if sock in self._no_gso:
            for p in payloads:
                self._send_one(sock, p)
            return
        i, n = 0, len(payloads)
        while i < n:
            size = len(payloads[i])
            j, total = i + 1, size
            limit = min(n, i + GSO_MAX_SEGMENTS)
            while j < limit:
                nxt = len(payloads[j])
                if nxt > size or total + nxt > GSO_MAX_BYTES:
                    break
                total += nxt
                j += 1
                if nxt < size:
                    break  # a shorter datagram can only end a run
            if j - i == 1 or size == 0:
                self._send_one(sock, payloads[i])
                i += 1
                continue
            if not self._send_gso(sock, payloads[i:j], size):
                for p in payloads[i:j]:
                    self._send_one(sock, p)
            i = j

    def _send_gso(self, sock: socket.socket, run: list[memoryview], size: int) -> bool:
        """One sendmsg for the run; False when the kernel refused GSO (send them singly)."""
        try:
            sock.sendmsg(run, [(SOL_UDP, UDP_SEGMENT, _SEG.pack(size))])
        except BlockingIOError:
            self.counters.drops["udp_send_eagain"] += len(run)
        except OSError as e:
            if e.errno in _NO_GSO:
                self._no_gso.add(sock)
                self.counters.event("udp_gso_refused")
                return False
            reason = "udp_refused" if e.errno == errno.ECONNREFUSED else "udp_send_error"
            self.counters.drops[reason] += len(run)
        else:
            self.counters.event("udp_gso_send")
        return True

    def _send_one(self, sock: socket.socket, payload: memoryview) -> None:
        try:
            sock.send(payload)
        except BlockingIOError:
            self.counters.drop("udp_send_eagain")
        except OSError as e:
            self.counters.drop("udp_refused" if e.errno == errno.ECONNREFUSED else "udp_send_error")
