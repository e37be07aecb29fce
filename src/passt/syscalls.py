"""Typed wrappers for the Linux system calls Python 3.11 lacks or hides.

`os.unshare`/`os.setns` arrived in 3.12; we call libc through ctypes, in this
one module, each with a typed signature and an OSError carrying errno on
failure.  The ioctl numbers for the tun driver live here too, so nothing else
needs magic numbers.
"""

from __future__ import annotations

import ctypes
import fcntl
import os
import struct
from typing import Final

CLONE_NEWNS: Final = 0x00020000
CLONE_NEWUSER: Final = 0x10000000
CLONE_NEWNET: Final = 0x40000000

# linux/if_tun.h
TUNSETIFF: Final = 0x400454CA
TUNSETOFFLOAD: Final = 0x400454D0
TUNSETVNETHDRSZ: Final = 0x400454D8
TUNGETIFF: Final = 0x800454D2
IFF_TUN: Final = 0x0001
IFF_TAP: Final = 0x0002
IFF_NO_PI: Final = 0x1000
IFF_VNET_HDR: Final = 0x4000
TUN_F_CSUM: Final = 0x01
TUN_F_TSO4: Final = 0x02
TUN_F_TSO6: Final = 0x04

# asm-generic/ioctls.h: bytes not yet sent on a TCP socket (SIOCOUTQ).
SIOCOUTQ: Final = 0x5411

_IFREQ: Final = struct.Struct("16sH22x")


def load_libc() -> ctypes.CDLL:
    """glibc by its soname; only where that fails, ask `find_library` (it runs `ldconfig -p`)."""
    try:
        return ctypes.CDLL("libc.so.6", use_errno=True)
    except OSError:
        from ctypes.util import find_library

        return ctypes.CDLL(find_library("c"), use_errno=True)


#: The one handle on libc (nswatch.py uses it too).
LIBC: Final = load_libc()
_libc = LIBC
_libc.unshare.argtypes = [ctypes.c_int]
_libc.unshare.restype = ctypes.c_int
_libc.setns.argtypes = [ctypes.c_int, ctypes.c_int]
_libc.setns.restype = ctypes.c_int
_libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
_libc.prctl.restype = ctypes.c_int

PR_SET_PDEATHSIG: Final = 1


def _check(ret: int, what: str) -> None:
    if ret != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def unshare(flags: int) -> None:
    """unshare(2): move this process into new namespaces."""
    _check(_libc.unshare(flags), "unshare")


def setns(fd: int, nstype: int = 0) -> None:
    """setns(2): join the namespace `fd` refers to (`nstype` 0 accepts any kind)."""
    _check(_libc.setns(fd, nstype), "setns")


def set_parent_death_signal(sig: int) -> None:
    """prctl(PR_SET_PDEATHSIG): get `sig` when our parent dies (helpers must not outlive us)."""
    _check(_libc.prctl(PR_SET_PDEATHSIG, sig, 0, 0, 0), "prctl")


def tun_set_iff(fd: int, name: str, flags: int) -> str:
    """TUNSETIFF: attach `fd` to (creating if needed) interface `name`; returns its name."""
    req = _IFREQ.pack(name.encode()[:15], flags)
    out = fcntl.ioctl(fd, TUNSETIFF, req)
    raw, _ = _IFREQ.unpack(out)
    return bytes(raw).rstrip(b"\0").decode()


def tun_set_offload(fd: int, flags: int) -> None:
    """TUNSETOFFLOAD: which offloads (TUN_F_*) the reader accepts."""
    fcntl.ioctl(fd, TUNSETOFFLOAD, flags)


def tun_set_vnet_hdr_size(fd: int, size: int) -> None:
    """TUNSETVNETHDRSZ: length of the virtio-net header before each frame."""
    fcntl.ioctl(fd, TUNSETVNETHDRSZ, struct.pack("i", size))


def outq(fd: int) -> int:
    """SIOCOUTQ: bytes in a socket's send queue not yet acknowledged (TCP) or sent."""
    buf = fcntl.ioctl(fd, SIOCOUTQ, b"\0\0\0\0")
    value: int = struct.unpack("i", buf)[0]
    return value
