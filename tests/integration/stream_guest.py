"""A guest on passt's UNIX socket, written in Python: frames out, frames in.

passt's stream framing (the one QEMU's `-netdev stream` uses): each Ethernet
frame is preceded by its length as a 4-byte big-endian number.
"""

from __future__ import annotations

import select
import socket
import struct
import time
from collections.abc import Callable
from typing import Final

from harness.netns.topology import HOST_MAC

GUEST_MAC: Final = "52:54:00:12:34:56"
_LEN: Final = struct.Struct(">I")


class StreamGuest:
    """A guest on passt's socket, from Python: frames out, frames in."""

    def __init__(self, path: str, mac: str = GUEST_MAC) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(path)
        self.mac = mac
        self.our_mac = HOST_MAC
        self._buf = bytearray()

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> StreamGuest:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def send(self, *frames: bytes) -> None:
        self.sock.sendall(b"".join(_LEN.pack(len(f)) + f for f in frames))

    def _read(self, timeout: float) -> bool:
        r, _, _ = select.select([self.sock], [], [], timeout)
        if not r:
            return False
        data = self.sock.recv(1 << 20)
        if not data:
            raise EOFError("passt closed the connection")
        self._buf += data
        return True

    def _pop(self) -> bytes | None:
        buf = self._buf
        if len(buf) < 4:
            return None
        (n,) = _LEN.unpack_from(buf)
        if len(buf) < 4 + n:
            return None
        frame = bytes(buf[4 : 4 + n])
        del buf[: 4 + n]
        return frame

    def drain(self) -> int:
        """Read and discard whatever is there now; returns the frame count."""
        count = 0
        while self._read(0):
            while self._pop() is not None:
                count += 1
        while self._pop() is not None:
            count += 1
        return count

    def wait_for(self, pred: Callable[[bytes], bool], timeout: float = 5.0) -> bytes:
        deadline = time.monotonic() + timeout
        while True:
            frame = self._pop()
            while frame is not None:
                if pred(frame):
                    return frame
                frame = self._pop()
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("no matching frame from passt")
            self._read(left)
