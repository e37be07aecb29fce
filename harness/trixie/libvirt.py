"""A libvirt TCG domain that boots the harness's guest and talks to its command loop.

libvirtd (trixie's, run as root inside the root) starts passt for ``<interface type='user'>``
with ``<backend type='passt'/>``, as the qemu user, looking ``passt`` up in its own PATH, so
:func:`start_libvirtd` puts ``/opt/callers/bin`` (the recording wrappers) first. The domain boots
the same kernel and initramfs as :class:`harness.qemu.QemuGuest` (direct kernel boot, no disk)
and its second serial port connects to a UNIX socket that this side listens on, in the session's
shared directory, so :class:`LibvirtGuest` reuses QemuGuest's command channel unchanged; only
starting and stopping differ (``virsh create`` / ``virsh destroy`` instead of running QEMU).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path
from typing import Final
from xml.sax.saxutils import escape

from harness.qemu.guest import KERNEL_ARGS, QemuGuest, boot_image, kernel_path, modules_dir
from harness.qemu.initramfs import CACHE_DIR, build_initramfs
from harness.trixie.session import SHARED, RootSession

CALLER_PATH: Final = "/opt/callers/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
LIBVIRTD_READY_S: Final = 60.0
GUEST_MAC: Final = "52:54:00:12:34:56"
URI: Final = "qemu:///system"
CREATE_TIMEOUT_S: Final = 60.0
"""``virsh create`` returns in about 1 s with C's passt (TCG guest start included)."""


def start_libvirtd(session: RootSession) -> subprocess.Popen[bytes]:
    """Start libvirtd in the foreground (dies with the session) and wait until virsh gets answers."""
    log = open(session.shared / "libvirtd.log", "wb")  # noqa: SIM115 - handed to the child
    proc = session.popen(["libvirtd"], env={"PATH": CALLER_PATH}, stdout=log, stderr=log)
    log.close()
    deadline = time.monotonic() + LIBVIRTD_READY_S
    while time.monotonic() < deadline:
        if session.run(["virsh", "-c", URI, "version"], timeout=30).returncode == 0:
            return proc
        if proc.poll() is not None:
            break
        time.sleep(0.1)
    raise RuntimeError("libvirtd did not answer:\n" + (session.shared / "libvirtd.log").read_text(errors="replace")[-3000:])


def domain_xml(name: str, *, kernel: str, initrd: str, cmdline: str, console: str, cmd_socket: str,
               port_forwards: tuple[tuple[int, int], ...] = ()) -> str:
    """A transient TCG domain: direct kernel boot, serial 0 to a file, serial 1 to our socket, a passt NIC."""
    forwards = "".join(
        f"<portForward proto='tcp'><range start='{host}' to='{guest}'/></portForward>" for host, guest in port_forwards
    )
    return f"""<domain type='qemu'>
  <name>{escape(name)}</name>
  <memory unit='MiB'>256</memory>
  <vcpu>1</vcpu>
  <os><type arch='x86_64' machine='q35'>hvm</type>
    <kernel>{kernel}</kernel><initrd>{initrd}</initrd><cmdline>{escape(cmdline)}</cmdline></os>
  <cpu mode='maximum'/>
  <on_poweroff>destroy</on_poweroff><on_reboot>destroy</on_reboot><on_crash>destroy</on_crash>
  <devices>
    <emulator>/usr/bin/qemu-system-x86_64</emulator>
    <serial type='file'><source path='{console}'/><target port='0'/></serial>
    <serial type='unix'><source mode='connect' path='{cmd_socket}'/><target port='1'/></serial>
    <interface type='user'>
      <backend type='passt'/>
      <mac address='{GUEST_MAC}'/>
      <model type='virtio'/>
      {forwards}
    </interface>
    <memballoon model='none'/>
  </devices>
</domain>
"""


class LibvirtGuest(QemuGuest):
    """The harness guest started by libvirt inside the root; ``with`` boots it, leaving destroys it."""

    def __init__(self, session: RootSession, name: str, *, port_forwards: tuple[tuple[int, int], ...] = (),
                 boot_timeout: float = 120.0) -> None:
        work = session.shared / "guest"
        work.mkdir(exist_ok=True)
        work.chmod(0o777)
        super().__init__(net_args=(), workdir=work, boot_timeout=boot_timeout)
        self.session = session
        self.name = name
        self.port_forwards = port_forwards
        self.virsh_output = ""

    def inside(self, path: Path) -> str:
        """`path` (under the session's shared directory) as the root sees it."""
        return f"{SHARED}/{path.relative_to(self.session.shared)}"

    def start(self) -> None:
        self.accel_used = "tcg"
        kernel = kernel_path()
        initrd = build_initramfs(CACHE_DIR, moddir=modules_dir(kernel))
        for src, dst in ((boot_image(kernel), "vmlinux"), (initrd, "initrd")):
            target = self.workdir / dst
            try:
                os.link(src, target)
            except OSError:
                shutil.copyfile(src, target)
            target.chmod(0o644)
        self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._listener.bind(str(self.sock_path))
        self.sock_path.chmod(0o777)
        self._listener.listen(1)
        self.console_path.touch()
        self.console_path.chmod(0o666)
        xml = self.workdir / "domain.xml"
        xml.write_text(domain_xml(
            self.name, kernel=self.inside(self.workdir / "vmlinux"), initrd=self.inside(self.workdir / "initrd"),
            cmdline=" ".join(KERNEL_ARGS), console=self.inside(self.console_path),
            cmd_socket=self.inside(self.sock_path), port_forwards=self.port_forwards,
        ))
        self._started_at = time.monotonic()
        try:
            res = self.session.run(["virsh", "-c", URI, "create", self.inside(xml)], timeout=CREATE_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            raise self._error(f"virsh create did not return in {CREATE_TIMEOUT_S:.0f} s "
                              f"(libvirt waits for passt to exit once ready)") from None
        self.virsh_output = res.stdout + res.stderr
        if res.returncode != 0:
            raise self._error(f"virsh create exited {res.returncode}: {self.virsh_output.strip()}")

    def destroy(self) -> subprocess.CompletedProcess[str]:
        """``virsh destroy`` the domain (what a user does to pull the plug)."""
        try:
            return self.session.run(["virsh", "-c", URI, "destroy", self.name], timeout=CREATE_TIMEOUT_S)
        except subprocess.TimeoutExpired as e:
            return subprocess.CompletedProcess(e.cmd, -1, "", f"virsh destroy did not return in {e.timeout} s")

    def qemu_stderr(self) -> str:
        # libvirt's per-domain log lives in the session's overlay: read it from inside
        with contextlib.suppress(subprocess.TimeoutExpired):
            res = self.session.run(["cat", f"/var/log/libvirt/qemu/{self.name}.log"], timeout=10)
            return self.virsh_output + res.stdout
        return self.virsh_output

    def close(self) -> None:
        self.destroy()
        super().close()
