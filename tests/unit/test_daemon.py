"""The process contract's decisions: whom to become, the caller's pipe, the namespace watch."""

from __future__ import annotations

import os
import stat
import struct
from collections.abc import Callable

import pytest

from passt import daemon, nswatch


@pytest.mark.parametrize(
    ("runas", "euid", "initial", "expected"),
    [
        (None, 0, True, daemon.nobody()),          # real root: nobody
        (None, 0, False, None),                    # root in a user namespace keeps itself
        ((1234, 1234), 0, False, (1234, 1234)),    # an explicit --runas is honoured anywhere
        ((1234, 1234), 0, True, (1234, 1234)),
        ((0, 0), 0, True, None),
        (None, 1000, True, None),                  # not root: nothing to drop
        ((1234, 1234), 1000, True, None),
    ],
)
def test_drop_target(runas: tuple[int, int] | None, euid: int, initial: bool,
                     expected: tuple[int, int] | None) -> None:
    assert daemon.drop_target(runas, euid=euid, initial_userns=initial) == expected


def test_initial_userns_is_the_whole_identity_map() -> None:
    assert daemon.in_initial_userns("         0          0 4294967295\n")
    assert not daemon.in_initial_userns("         0       1000          1\n")  # unshare -r
    assert not daemon.in_initial_userns("0 100000 65536\n")


def test_readiness_pipe_carries_ready_or_the_error() -> None:
    r, w = os.pipe()
    daemon.Readiness(w).ready()
    assert os.read(r, 100) == daemon.READY and os.read(r, 100) == b""
    os.close(r)
    r, w = os.pipe()
    exc = daemon.Readiness(w).failed("passt", "can't write PID file /x: Permission denied")
    assert exc.code == 1
    assert os.read(r, 4096) == b"passt: can't write PID file /x: Permission denied\n"
    os.close(r)


def _event(mask: int, name: bytes = b"") -> bytes:
    padded = name + b"\0" * (16 - len(name) % 16) if name else b""
    return struct.pack("iIII", 1, mask, 0, len(padded)) + padded


def test_inotify_events_name_gone() -> None:
    assert nswatch.events_name_gone(_event(nswatch.IN_DELETE, b"netns-1"), b"netns-1")
    assert nswatch.events_name_gone(_event(nswatch.IN_MOVED_FROM, b"netns-1"), b"netns-1")
    assert not nswatch.events_name_gone(_event(nswatch.IN_DELETE, b"netns-2"), b"netns-1")
    both = _event(nswatch.IN_DELETE, b"netns-2") + _event(nswatch.IN_DELETE, b"netns-1")
    assert nswatch.events_name_gone(both, b"netns-1")
    assert nswatch.events_name_gone(_event(nswatch.IN_DELETE_SELF), b"netns-1")
    assert not nswatch.events_name_gone(b"\x01\x02", b"netns-1")  # short read: nothing


def test_still_there() -> None:
    joined = (4, 4026532000)
    assert nswatch.still_there(joined, joined)
    assert not nswatch.still_there(joined, None)             # deleted
    assert not nswatch.still_there(joined, (2049, 123))      # unmounted: the file beneath
    assert nswatch.still_there(joined, nswatch.UNKNOWN)      # can't look: benefit of the doubt


def _fake_stat(modes: dict[str, tuple[int, int, int]]) -> Callable[[str], os.stat_result]:
    """A stat for `readable_by`: path -> (mode, uid, gid) of a directory; others are missing."""

    def fake(path: str) -> os.stat_result:
        if path not in modes:
            raise FileNotFoundError(path)
        mode, uid, gid = modes[path]
        return os.stat_result((stat.S_IFDIR | mode, 0, 0, 1, uid, gid, 0, 0, 0, 0))

    return fake


@pytest.mark.parametrize(("modes", "expected"), [
    ({"/": (0o755, 0, 0), "/usr": (0o755, 0, 0), "/usr/lib": (0o755, 0, 0)}, True),  # system-wide
    ({"/": (0o755, 0, 0), "/usr": (0o700, 0, 0), "/usr/lib": (0o755, 0, 0)}, False),  # /root-like parent
    ({"/": (0o755, 0, 0), "/usr": (0o711, 0, 0), "/usr/lib": (0o711, 0, 0)}, False),  # searchable, unlistable
    ({"/": (0o755, 0, 0), "/usr": (0o750, 0, 7), "/usr/lib": (0o700, 9, 9)}, True),   # by group, then by owner
    ({"/": (0o755, 0, 0), "/usr": (0o755, 0, 0)}, False),                              # missing
    ({"/": (0o755, 0, 0), "/usr": (0o070, 9, 9), "/usr/lib": (0o755, 0, 0)}, False),  # owner bits, not other
])
def test_readable_by(modes: dict[str, tuple[int, int, int]], expected: bool) -> None:
    """The dropped user's view by mode bits: search on every directory above, list on the last."""
    assert daemon.readable_by("/usr/lib", 9, 7, stat_fn=_fake_stat(modes)) is expected
