"""Large preallocated buffers whose pages cost memory only once they are used.

``bytearray(n)`` writes zeros to all ``n`` bytes, so a 16 MiB buffer is 16 MiB of resident
memory from the first second, whether the process ever moves a bulk flow or not. An anonymous
private mapping reads as zeros too, but the kernel backs a page only when it is first written:
a tap ring sized for 64 KiB segments costs one page per slot that a 1,500-byte frame touched.
The mapping supports the buffer protocol, so ``memoryview``, ``readv``/``recv_into`` and
``struct.unpack_from`` use it exactly as they would a bytearray.
"""

from __future__ import annotations

import mmap


def lazy_buffer(size: int) -> mmap.mmap:
    """A writable, zero-filled buffer of `size` bytes, resident page by page as it is written."""
    return mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS,
                     prot=mmap.PROT_READ | mmap.PROT_WRITE)
