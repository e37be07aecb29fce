"""lazy_buffer: zero-filled like bytearray, but resident only where written."""

from __future__ import annotations

import os

from passt.buffers import lazy_buffer

MIB = 1 << 20


def _resident() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def test_reads_as_zeros_and_takes_writes_through_a_view() -> None:
    buf = lazy_buffer(3 * 4096)
    assert len(buf) == 3 * 4096 and bytes(buf[:16]) == bytes(16) and buf[-1] == 0
    view = memoryview(buf)
    view[4096:4100] = b"abcd"
    assert bytes(buf[4096:4100]) == b"abcd"


def test_pages_become_resident_only_when_written() -> None:
    before = _resident()
    buf = lazy_buffer(64 * MIB)
    allocated = _resident() - before
    assert allocated < 4 * MIB, f"{allocated} bytes resident for an untouched 64 MiB buffer"
    page = os.sysconf("SC_PAGE_SIZE")
    for off in range(0, 16 * MIB, page):
        buf[off] = 1
    touched = _resident() - before
    assert touched >= 15 * MIB, f"only {touched} bytes resident after writing 16 MiB"
    buf.close()


def test_bytearray_is_what_it_replaces_resident_at_once() -> None:
    """The control: the measurement above sees a bytearray's pages (so it can fail)."""
    before = _resident()
    buf = bytearray(32 * MIB)
    assert _resident() - before >= 30 * MIB
    del buf
