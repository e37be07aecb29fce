"""The kernel ABI the TCP translation relies on, in one place.

tcp.py reflects the host socket's view of the real peer to the guest; it
reads that view through a handful of socket options that Python's socket
module does not name, and whose layouts live in Linux headers:

    TCP_INFO        struct tcp_info: tcpi_bytes_acked (u64 at 120) and
                    tcpi_snd_wnd (u32 at 228, Linux >= 5.3; shorter before)
    SO_MEMINFO (55) u32 sk_meminfo[]: SK_MEMINFO_SNDBUF, SK_MEMINFO_WMEM_QUEUED
    SO_PEEK_OFF(42) peek offset: MSG_PEEK reads advance it, drops move it back
                    (TCP since Linux 6.10; EINVAL before)
    SO_TIMESTAMPING (37) with TX_ACK: a payload-less error-queue message when
                    the peer ACKs each send()'s last byte (MSG_ERRQUEUE reads)
    TCP_NODELAY, SO_SNDBUF, poll(POLLOUT) (SOCK_NOSPACE: autotuning may grow)

Everything here is a plain function over a socket (or a preallocated buffer
or poll object the caller keeps), one system call each, no state: tcp.py
calls them where it used to inline them, so moving them here added no call
on the per-segment path (the frame loop in `TcpHandler._push` makes none).
`tcp_info` returns the raw bytes and the caller unpacks the two fields it
needs with `TI_ACKED_WND` (one Struct for both: one tuple per read).
"""

from __future__ import annotations

import select
import socket
import struct
from typing import Final

#: setsockopt(SOL_SOCKET, SO_PEEK_OFF): not exported by the socket module.
SO_PEEK_OFF: Final = 42
#: struct tcp_info up to and including tcpi_snd_wnd (linux/tcp.h, Linux >= 5.3).
TCP_INFO_LEN: Final = 232
#: Offset of tcpi_bytes_acked (u64); tcpi_snd_wnd (u32) follows at 228.
TI_BYTES_ACKED_OFF: Final = 120
_TI_SND_WND_OFF: Final = 228
#: (tcpi_bytes_acked, tcpi_snd_wnd) from TI_BYTES_ACKED_OFF, for an info of TCP_INFO_LEN.
TI_ACKED_WND: Final = struct.Struct("=Q100xI")
_TI_BYTES_ACKED: Final = struct.Struct("=Q")
_TI_SND_WND: Final = struct.Struct("=I")
#: getsockopt(SOL_SOCKET, SO_MEMINFO): u32 sk_meminfo array (linux/sock_diag.h).
SO_MEMINFO: Final = 55
#: SK_MEMINFO_VARS (9 u32): the length we ask for and require.
MEMINFO_LEN: Final = 36
#: SK_MEMINFO_SNDBUF (index 3) and SK_MEMINFO_WMEM_QUEUED (index 5).
MEMINFO_SNDBUF_QUEUED: Final = struct.Struct("=12xI4xI")
#: SO_TIMESTAMPING (asm-generic/socket.h) and the flags we use (linux/net_tstamp.h):
#: report (software, no payload looped back) when the peer ACKs each send's last byte.
SO_TIMESTAMPING: Final = 37
SOF_TIMESTAMPING_SOFTWARE: Final = 1 << 4
SOF_TIMESTAMPING_TX_ACK: Final = 1 << 9
SOF_TIMESTAMPING_OPT_TSONLY: Final = 1 << 11
ACK_TSTAMP_FLAGS: Final = (
    SOF_TIMESTAMPING_TX_ACK | SOF_TIMESTAMPING_SOFTWARE | SOF_TIMESTAMPING_OPT_TSONLY
)
#: linux/socket.h MSG_ERRQUEUE.
MSG_ERRQUEUE: Final = 0x2000
#: Error-queue messages drained per flow and turn (each is one ACK notification).
ERRQUEUE_BATCH: Final = 256
#: Send buffer asked for when /proc/sys/net/ipv4/tcp_wmem can't be read (Linux default max).
SNDBUF_DEFAULT: Final = 4 << 20


def tcp_info(sock: socket.socket) -> bytes:
    """struct tcp_info up to tcpi_snd_wnd; shorter on kernels before 5.3, b"" on error."""
    try:
        return sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, TCP_INFO_LEN)
    except OSError:
        return b""


def info_bytes_acked(info: bytes) -> int:
    """tcpi_bytes_acked from a TCP_INFO read; 0 when the kernel's struct is too short."""
    if len(info) < TI_BYTES_ACKED_OFF + 8:
        return 0
    (acked,) = _TI_BYTES_ACKED.unpack_from(info, TI_BYTES_ACKED_OFF)
    return int(acked)


def info_snd_wnd(info: bytes) -> int:
    """tcpi_snd_wnd from a TCP_INFO read; -1 when the struct ends before it (Linux < 5.3)."""
    if len(info) < TCP_INFO_LEN:
        return -1
    (wnd,) = _TI_SND_WND.unpack_from(info, _TI_SND_WND_OFF)
    return int(wnd)


def meminfo(sock: socket.socket) -> tuple[int, int] | None:
    """(SO_SNDBUF, queued truesize) from SO_MEMINFO; None when the kernel can't tell."""
    try:
        raw = sock.getsockopt(socket.SOL_SOCKET, SO_MEMINFO, MEMINFO_LEN)
    except OSError:
        return None
    if len(raw) < MEMINFO_LEN:
        return None
    fields: tuple[int, int] = MEMINFO_SNDBUF_QUEUED.unpack_from(raw)
    return fields


def set_peek_off(sock: socket.socket) -> bool:
    """Peek offset to 0 (the socket's head); False: SO_PEEK_OFF unsupported for TCP here."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, SO_PEEK_OFF, 0)
    except OSError:
        return False
    return True


def drain_errqueue(sock: socket.socket, buf: bytearray) -> bool:
    """Discard up to ERRQUEUE_BATCH queued ACK notifications; False if more remain.

    One read each: there is no batch read for the error queue.  `buf` is the
    caller's preallocated landing place (OPT_TSONLY: no payload comes back).
    """
    recv_into = sock.recv_into
    for _ in range(ERRQUEUE_BATCH):
        try:
            recv_into(buf, 1, MSG_ERRQUEUE)
        except OSError:  # BlockingIOError: queue empty
            return True
    return False


def poll_out(poller: select.poll, fd: int) -> int:
    """One zero-timeout poll() for POLLOUT on `fd` with the caller's poll object; its events, 0: none.

    Used to see whether a connect() completed, and to mark a full send
    buffer SOCK_NOSPACE (the condition for the kernel to grow it).
    """
    try:
        poller.register(fd, select.POLLOUT)
        ready = poller.poll(0)
        poller.unregister(fd)
    except (OSError, ValueError):
        return 0
    return ready[0][1] if ready else 0


def tune_new(sock: socket.socket) -> None:
    """TCP_NODELAY on a new host socket: the guest's own Nagle already ran."""
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except OSError:
        pass


def tune_bulk(sock: socket.socket, sndbuf: int, ack_events: bool) -> None:
    """A bulk sender: SO_SNDBUF `sndbuf` (unless 0) and, with `ack_events`, TX_ACK notifications."""
    if sndbuf > 0:
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, sndbuf)
        except OSError:
            pass
    if ack_events:
        try:
            sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPING, ACK_TSTAMP_FLAGS)
        except OSError:
            pass


def default_sndbuf() -> int:
    """Half of tcp_wmem's maximum: the kernel doubles SO_SNDBUF (capped by wmem_max)."""
    try:
        with open("/proc/sys/net/ipv4/tcp_wmem", encoding="ascii") as f:
            fields = f.read().split()
        return max(int(fields[2]) // 2, 1)
    except (OSError, ValueError, IndexError):
        return SNDBUF_DEFAULT // 2
