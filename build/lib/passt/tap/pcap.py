"""Capture of tap-facing frames in classic pcap format (-p/--pcap).

One global header, then one 16-byte record header and the frame per packet,
written with os.writev so a frame is never copied.  Frames are captured whole
(snaplen 65535 + our maximum frame); the timestamp is wall-clock time, read
once per batch by the caller.  Write errors disable the capture with one log
line rather than stopping the data path.
"""

from __future__ import annotations

import os
import struct
import time
from typing import Final

from passt.tap.base import Buffer

_GLOBAL: Final = struct.Struct("<IHHiIII")
_RECORD: Final = struct.Struct("<IIII")
_MAGIC: Final = 0xA1B2C3D4
_LINKTYPE_ETHERNET: Final = 1
_SNAPLEN: Final = 65535 + 65535


class Pcap:
    """An open capture file."""

    __slots__ = ("fd", "path", "frames")

    def __init__(self, path: str) -> None:
        self.path = path
        self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        os.write(self.fd, _GLOBAL.pack(_MAGIC, 2, 4, 0, 0, _SNAPLEN, _LINKTYPE_ETHERNET))
        self.frames = 0

    def write(self, frame: Buffer, now: float | None = None) -> None:
        """Append one frame."""
        if self.fd < 0:
            return
        if now is None:
            now = time.time()
        sec = int(now)
        usec = int((now - sec) * 1_000_000)
        n = len(frame)
        try:
            os.writev(self.fd, [_RECORD.pack(sec, usec, n, n), frame])
        except OSError:
            self.close()
            return
        self.frames += 1

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
