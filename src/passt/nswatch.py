"""Notice when the network namespace pasta serves through a file goes away.

Podman creates the namespace as a bind mount of nsfs at
/run/user/UID/netns/netns-ID, and `podman stop` unmounts and deletes it;
`ip netns delete` does the same for /run/netns/NAME.  pasta must then quit
(issue 9), or two processes leak per container.  Two signals, both in the
one event loop:

* inotify on the file's directory (IN_DELETE, IN_MOVED_FROM for its name,
  IN_DELETE_SELF / IN_UNMOUNT for the directory): a deletion is seen at once;
* a 1 s check that the path still names the namespace we joined (same
  device and inode as at start): an unmount without deletion, or a
  directory inotify can't watch, is seen within a second.

The decision (`still_there`) is apart from the I/O.  Bounded: one watch
descriptor, one timer, reads of at most READ_MAX bytes per wake-up.
"""

from __future__ import annotations

import ctypes
import os
import struct
from collections.abc import Callable
from typing import Final

from passt.loop import EVENT_READ, EventLoop
from passt.syscalls import LIBC as _libc

IN_MOVED_FROM: Final = 0x00000040
IN_DELETE: Final = 0x00000200
IN_DELETE_SELF: Final = 0x00000400
IN_MOVE_SELF: Final = 0x00000800
IN_UNMOUNT: Final = 0x00002000
IN_IGNORED: Final = 0x00008000
IN_NONBLOCK: Final = os.O_NONBLOCK
IN_CLOEXEC: Final = os.O_CLOEXEC
_EVENT: Final = struct.Struct("iIII")
#: Bound on one read of events.
READ_MAX: Final = 4096
#: How often the path is checked against the namespace we joined.
CHECK_INTERVAL_S: Final = 1.0

_libc.inotify_init1.argtypes = [ctypes.c_int]
_libc.inotify_init1.restype = ctypes.c_int
_libc.inotify_add_watch.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32]
_libc.inotify_add_watch.restype = ctypes.c_int


def _inotify_watch(directory: str, mask: int) -> int:
    """A non-blocking inotify descriptor watching `directory`; OSError if it can't."""
    fd = int(_libc.inotify_init1(IN_NONBLOCK | IN_CLOEXEC))
    if fd < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    if _libc.inotify_add_watch(fd, os.fsencode(directory), mask) < 0:
        err = ctypes.get_errno()
        os.close(fd)
        raise OSError(err, os.strerror(err))
    return fd


#: What `identity` says when it can't look (no search permission after dropping to nobody).
UNKNOWN: Final = (-1, -1)


def identity(path: str) -> tuple[int, int] | None:
    """(device, inode) of what `path` names now; None when it names nothing; UNKNOWN if unsure."""
    try:
        st = os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError:
        return UNKNOWN
    return st.st_dev, st.st_ino


def still_there(joined: tuple[int, int], now: tuple[int, int] | None) -> bool:
    """Whether the path still names the namespace we joined (unmounted: another inode).

    A path we can no longer look at is given the benefit of the doubt.
    """
    return now == joined or now == UNKNOWN


def events_name_gone(data: bytes, name: bytes) -> bool:
    """Whether a buffer of inotify events says `name` left the directory (or the directory went)."""
    offset = 0
    while offset + _EVENT.size <= len(data):
        _wd, mask, _cookie, length = _EVENT.unpack_from(data, offset)
        raw = data[offset + _EVENT.size: offset + _EVENT.size + length]
        offset += _EVENT.size + length
        if mask & (IN_DELETE_SELF | IN_MOVE_SELF | IN_UNMOUNT | IN_IGNORED):
            return True
        if mask & (IN_DELETE | IN_MOVED_FROM) and raw.rstrip(b"\0") == name:
            return True
    return False


class NetnsWatch:
    """Calls `gone` once when the namespace file at `path` stops naming what we joined."""

    def __init__(self, loop: EventLoop, path: str, gone: Callable[[], None]) -> None:
        self._loop = loop
        self._path = path
        self._gone = gone
        self._fired = False
        joined = identity(path)
        if joined is None or joined == UNKNOWN:
            raise OSError(f"{path} vanished before pasta could watch it")
        self._joined = joined
        self._name = os.fsencode(os.path.basename(path))
        self._fd = -1
        try:
            self._fd = _inotify_watch(os.path.dirname(path) or ".",
                                      IN_DELETE | IN_MOVED_FROM | IN_DELETE_SELF | IN_MOVE_SELF)
        except OSError:
            self._fd = -1  # the timer alone still notices within a second
        if self._fd >= 0:
            loop.register(self._fd, EVENT_READ, self._on_events)
        loop.call_later(CHECK_INTERVAL_S, self._on_timer)

    def _fire(self) -> None:
        if self._fired:
            return
        self._fired = True
        self.close()
        self._gone()

    def _on_events(self, _mask: int, _now: float) -> None:
        try:
            data = os.read(self._fd, READ_MAX)
        except BlockingIOError:
            return
        if events_name_gone(data, self._name) and not still_there(self._joined, identity(self._path)):
            self._fire()

    def _on_timer(self, _now: float) -> None:
        if self._fired:
            return
        if not still_there(self._joined, identity(self._path)):
            self._fire()
            return
        self._loop.call_later(CHECK_INTERVAL_S, self._on_timer)

    def close(self) -> None:
        if self._fd >= 0:
            self._loop.unregister(self._fd)
            os.close(self._fd)
            self._fd = -1
