"""Throwaway QEMU guests for the integration tests: see :mod:`harness.qemu.guest`."""

from harness.qemu.guest import (
    CommandResult,
    GuestCommandTimeout,
    GuestError,
    QemuGuest,
    boot_image,
    choose_accel,
    kernel_path,
)
from harness.qemu.initramfs import build_initramfs

__all__ = [
    "CommandResult",
    "GuestCommandTimeout",
    "GuestError",
    "QemuGuest",
    "boot_image",
    "build_initramfs",
    "choose_accel",
    "kernel_path",
]
