"""Boot a throwaway QEMU guest and run shell commands in it.

Theory of operation
-------------------
A :class:`QemuGuest` boots the host's own kernel (``/boot/vmlinuz-*``) with the initramfs of
:mod:`harness.qemu.initramfs`: no disk, 256 MiB, one CPU, ``-nodefaults`` so the only devices are
the two serial ports and whatever the caller's ``net_args`` add::

    test ── QemuGuest.run("ip link") ──> UNIX socket (we listen) ──> ttyS1 ──> /etc/cmdloop.sh
         <── "@@PQ< ID" base64(output) "@@PQ> ID RC" ──────────────────────<── sh -c script
    console.log <── ttyS0 (kernel messages, init's own output; shown when a boot fails)

We listen on the command socket before QEMU starts and QEMU connects to it as a client, so no byte
the guest writes can be lost to a race with the test connecting. Each request carries an id unique
to this guest and a timeout; the guest kills the script with SIGKILL after that timeout
(``timeout -s KILL``), so the loop is never wedged by a command that hangs, and the host waits a
little longer than that for the reply.

Accelerator
-----------
``/dev/kvm`` can exist and accept VMs yet never run a guest to completion: on the nested "kvm-pvm"
of this workplace SeaBIOS prints "Booting from ROM..." and the kernel never prints a line. With the
uncompressed PVH kernel (see :func:`boot_image`) it gets further, printing a few lines over
several seconds and then stalling. So :func:`choose_accel` boots the kernel once under KVM without
an initramfs and accepts KVM only if the boot reaches the "unable to mount root" panic within
:data:`PROBE_TIMEOUT_S` (about 1 s on working KVM, 1.9 s under TCG here); otherwise TCG.
The answer is kept for the process and in a file under ``/tmp/passt-qemu-cache`` keyed by the host
kernel release and the kernel and QEMU binaries. ``PASST_TEST_ACCEL=kvm|tcg`` overrides the probe.

Measured here under TCG (2 cores, -cpu max, PVH kernel, ``quiet``): QEMU start to the command
loop in 2.0-2.7 s (4.6-5.0 s booting the compressed bzImage); a round trip of ``true`` ~25 ms;
200 kB of output ~0.5 s (the serial port is the bottleneck: move bulk data over the network).
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import hashlib
import lzma
import math
import os
import re
import select
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import zlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Final, NamedTuple, Self

from harness.qemu.initramfs import CACHE_DIR, CMD_MARK, build_initramfs

QEMU_BINARY: Final = "qemu-system-x86_64"
PROBE_TIMEOUT_S: Final = 6.0
"""KVM must bring the kernel to its root-mount panic within this time: ~1 s on working KVM, 1.9 s
under TCG here, so a KVM slower than this is no use even if it eventually works."""
REPLY_GRACE_S: Final = 10.0
"""How much longer than a command's own timeout the host waits for the guest's reply."""
CONSOLE_TAIL_CHARS: Final = 4000
"""How much of the console log goes into an exception message."""
KERNEL_ARGS: Final = (
    "console=ttyS0",
    "panic=-1",
    "quiet",
    "mitigations=off",
    "i8042.noaux",
    "i8042.nokbd",
    "i8042.nopnp",
    "tsc=reliable",
    "no_timer_check",
    "random.trust_cpu=on",
)
"""Kernel command line: console on ttyS0, a panic exits QEMU (with -no-reboot), and probing of
hardware that -nodefaults leaves out is skipped; mitigations cost time under TCG and protect nothing
in a throwaway guest."""


class CommandResult(NamedTuple):
    """What a command run in the guest returned."""

    rc: int
    """Exit status of ``sh`` running the command (137 if the guest killed it at its timeout)."""
    output: str
    """Its stdout and stderr, interleaved as written, decoded as UTF-8 (invalid bytes replaced)."""


class GuestError(RuntimeError):
    """The guest did not boot, died, or the command channel broke; the message has the console tail."""


class GuestCommandTimeout(GuestError):
    """A command ran past its timeout (the guest killed it; the channel stays usable)."""


# --- kernel and accelerator ----------------------------------------------------------------------


def kernel_path() -> Path:
    """The kernel the guests boot: ``$PASST_TEST_KERNEL`` or the newest ``/boot/vmlinuz-*``."""
    env = os.environ.get("PASST_TEST_KERNEL")
    if env:
        return Path(env)
    cands = sorted(Path("/boot").glob("vmlinuz-*"), key=lambda p: p.stat().st_mtime)
    cands = [p for p in cands if modules_dir(p).is_dir()]
    if not cands:
        raise FileNotFoundError("no /boot/vmlinuz-* with modules: apt-get install linux-image-amd64")
    return cands[-1]


def modules_dir(kernel: Path) -> Path:
    """``/lib/modules/<release>`` for a kernel named ``vmlinuz-<release>``."""
    release = kernel.name.removeprefix("vmlinuz-")
    return Path("/lib/modules") / release


_XZ_MAGIC: Final = b"\xfd7zXZ\x00"
_GZIP_MAGIC: Final = b"\x1f\x8b\x08"
_ELF_MAGIC: Final = b"\x7fELF"


def _extract_vmlinux(bzimage: bytes) -> bytes | None:
    """The ELF kernel inside a bzImage compressed with xz or gzip, or None if not found."""
    for magic, make in (
        (_XZ_MAGIC, lambda: lzma.LZMADecompressor()),
        (_GZIP_MAGIC, lambda: zlib.decompressobj(16 + zlib.MAX_WBITS)),
    ):
        pos = bzimage.find(magic)
        while pos >= 0:
            try:
                out = make().decompress(bzimage[pos:])
            except (lzma.LZMAError, zlib.error):
                out = b""
            if out.startswith(_ELF_MAGIC):
                return out
            pos = bzimage.find(magic, pos + 1)
    return None


def _has_pvh(kernel: Path) -> bool:
    config = kernel.parent / kernel.name.replace("vmlinuz-", "config-", 1)
    try:
        return "CONFIG_PVH=y" in config.read_text().splitlines()
    except OSError:
        return False


def boot_image(kernel: Path | None = None) -> Path:
    """What QEMU's ``-kernel`` gets: the uncompressed ELF kernel if it supports PVH, else the bzImage.

    An ELF kernel with a PVH entry point is loaded by QEMU straight into memory: under TCG this
    skips the ~2.5 s the bzImage stub spends decompressing an 8 MB xz kernel (measured: 4.3 s to
    the root-mount panic with the bzImage, 1.9 s with the ELF). The ELF (~66 MB) is cached under
    :data:`CACHE_DIR`; ``PASST_TEST_PVH=0`` forces the bzImage.
    """
    kernel = kernel if kernel is not None else kernel_path()
    if os.environ.get("PASST_TEST_PVH", "1") == "0" or not _has_pvh(kernel):
        return kernel
    st = kernel.stat()
    key = hashlib.sha256(f"{kernel}:{st.st_size}:{st.st_mtime_ns}".encode()).hexdigest()[:24]
    target = CACHE_DIR / f"vmlinux-{key}"
    if target.exists():
        return target
    elf = _extract_vmlinux(kernel.read_bytes())
    if elf is None:
        return kernel
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}")
    tmp.write_bytes(elf)
    os.replace(tmp, target)
    return target


def qemu_binary() -> str:
    path = shutil.which(QEMU_BINARY)
    if path is None:
        raise FileNotFoundError(f"{QEMU_BINARY} not found: apt-get install qemu-system-x86")
    return path


def base_qemu_argv(accel: str, memory_mb: int) -> list[str]:
    """QEMU options common to every guest: no default devices, no display, no reboot."""
    argv = [
        qemu_binary(), "-nodefaults", "-nographic", "-no-reboot", "-display", "none",
        "-machine", "q35", "-accel", accel, "-m", str(memory_mb), "-smp", "1",
    ]
    argv += ["-cpu", "host" if accel == "kvm" else "max"]
    return argv


_accel_lock = threading.Lock()
_accel_cached: str | None = None


def _probe_cache_file() -> Path:
    h = hashlib.sha256()
    for part in (os.uname().release, str(boot_image()), str(kernel_path()), qemu_binary()):
        h.update(part.encode() + b"\0")
        with contextlib.suppress(OSError):
            st = os.stat(part)
            h.update(f"{st.st_size}:{st.st_mtime_ns}\0".encode())
    return CACHE_DIR / f"accel-{h.hexdigest()[:24]}"


def probe_kvm(timeout: float = PROBE_TIMEOUT_S) -> bool:
    """Boot the guest kernel once under KVM (no initramfs) and report whether it really runs.

    True only if the kernel reaches its "unable to mount root" panic within ``timeout``.
    """
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return False
    with tempfile.TemporaryDirectory(prefix="pq-probe-") as tmp:
        log = Path(tmp) / "console.log"
        argv = base_qemu_argv("kvm", 128) + [
            "-kernel", str(boot_image()),
            "-append", "console=ttyS0 earlyprintk=ttyS0 panic=-1",
            "-serial", f"file:{log}",
        ]
        proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                text = log.read_text(errors="replace") if log.exists() else ""
                if "Unable to mount root" in text or "Kernel panic" in text:
                    return True
                if proc.poll() is not None:
                    return False
                time.sleep(0.05)
            return False
        finally:
            _stop_process(proc)


def choose_accel() -> str:
    """``"kvm"`` or ``"tcg"``: ``$PASST_TEST_ACCEL``, else the cached or freshly probed answer."""
    global _accel_cached
    forced = os.environ.get("PASST_TEST_ACCEL", "").strip().lower()
    if forced in ("kvm", "tcg"):
        return forced
    with _accel_lock:
        if _accel_cached is not None:
            return _accel_cached
        cache = _probe_cache_file()
        try:
            answer = cache.read_text().strip()
        except OSError:
            answer = ""
        if answer not in ("kvm", "tcg"):
            CACHE_DIR.mkdir(parents=True, exist_ok=True)
            # One prober at a time across processes (pytest-xdist workers); the others then read
            # its answer instead of spending another PROBE_TIMEOUT_S each.
            with open(CACHE_DIR / ".accel.lock", "w") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX)
                try:
                    answer = cache.read_text().strip()
                except OSError:
                    answer = ""
                if answer not in ("kvm", "tcg"):
                    answer = "kvm" if probe_kvm() else "tcg"
                    tmp = cache.with_name(f".{cache.name}.{os.getpid()}")
                    tmp.write_text(answer + "\n")
                    os.replace(tmp, cache)
        _accel_cached = answer
        return answer


def _stop_process(proc: subprocess.Popen[bytes], grace: float = 2.0) -> None:
    """Terminate a process we started, then kill it if it lingers; always reap it."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.terminate()
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            proc.wait()


# --- the guest -----------------------------------------------------------------------------------

_REPLY_END = re.compile(rf"^{CMD_MARK}> (\S+) (-?\d+)$")


class QemuGuest:
    """One QEMU guest with a command channel; a context manager that boots it and tears it down.

    ``with QemuGuest(net_args=[...]) as g:`` starts QEMU and waits until the command loop answers;
    leaving the block (also by an exception) kills QEMU and removes the work directory if we made it.
    """

    def __init__(
        self,
        *,
        net_args: Sequence[str],
        memory_mb: int = 256,
        extra_binaries: Sequence[str] = (),
        accel: str | None = None,
        boot_timeout: float = 60.0,
        workdir: Path | None = None,
        qemu_argv_prefix: Sequence[str] = (),
        netns: str | None = None,
        extra_files: Mapping[str, bytes | Path] | None = None,
        kernel_args: Sequence[str] = (),
        pass_fds: Sequence[int] = (),
    ) -> None:
        """net_args: QEMU options for the NIC(s), e.g. ``["-nic", "none"]``.
        qemu_argv_prefix: run before QEMU's argv (``["qrap", "5"]``); netns wraps everything in
        ``ip netns exec NAME``. extra_files, kernel_args: more guest files and kernel options.
        pass_fds: descriptors QEMU inherits (e.g. for ``-netdev socket,fd=N``).
        """
        self.net_args = list(net_args)
        self.memory_mb = memory_mb
        self.extra_binaries = list(extra_binaries)
        self.accel_requested = accel
        self.boot_timeout = boot_timeout
        self.qemu_argv_prefix = list(qemu_argv_prefix)
        self.netns = netns
        self.extra_files = dict(extra_files or {})
        self.kernel_args = list(kernel_args)
        self.pass_fds = tuple(pass_fds)
        self._own_workdir = workdir is None
        self.workdir = workdir if workdir is not None else Path(tempfile.mkdtemp(prefix="pq-"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.console_path = self.workdir / "console.log"
        self.stderr_path = self.workdir / "qemu.stderr"
        self.sock_path = self.workdir / "cmd.sock"
        self.accel_used = ""
        self.argv: list[str] = []
        self.boot_seconds: float | None = None
        """Wall time from QEMU's start to the command loop's READY line."""
        self.proc: subprocess.Popen[bytes] | None = None
        self._listener: socket.socket | None = None
        self._conn: socket.socket | None = None
        self._buf = b""
        self._seq = 0
        self._token = os.urandom(4).hex()
        self._lock = threading.Lock()
        self._started_at = 0.0
        self._ready = False

    # life cycle

    def __enter__(self) -> Self:
        try:
            self.start()
            self.wait_ready()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def start(self) -> None:
        """Build the image, listen on the command socket and start QEMU (does not wait for boot)."""
        if self.proc is not None:
            raise GuestError("guest already started")
        self.accel_used = self.accel_requested or choose_accel()
        kernel = kernel_path()
        initrd = build_initramfs(
            CACHE_DIR, extra_binaries=self.extra_binaries, extra_files=self.extra_files,
            moddir=modules_dir(kernel),
        )
        self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._listener.bind(str(self.sock_path))
        self._listener.listen(1)
        append = " ".join((*KERNEL_ARGS, *self.kernel_args))
        qemu = base_qemu_argv(self.accel_used, self.memory_mb) + [
            "-kernel", str(boot_image(kernel)), "-initrd", str(initrd), "-append", append,
            "-serial", f"file:{self.console_path}",
            "-chardev", f"socket,id=pqcmd,path={self.sock_path}",
            "-serial", "chardev:pqcmd",
            *self.net_args,
        ]
        argv = list(self.qemu_argv_prefix) + qemu
        if self.netns is not None:
            argv = ["ip", "netns", "exec", self.netns, *argv]
        self.argv = argv
        with open(self.stderr_path, "wb") as err:
            self._started_at = time.monotonic()
            self.proc = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=err, stderr=subprocess.STDOUT,
                pass_fds=self.pass_fds, start_new_session=True,
            )

    def wait_ready(self) -> None:
        """Wait until the guest's command loop announces itself; raise GuestError on timeout/exit."""
        if self._ready:
            return
        deadline = self._started_at + self.boot_timeout
        self._accept(deadline)
        line = self._read_line(deadline, waiting_for="boot")
        while line != f"{CMD_MARK} READY":
            line = self._read_line(deadline, waiting_for="boot")
        self._ready = True
        self.boot_seconds = time.monotonic() - self._started_at

    def _accept(self, deadline: float) -> None:
        listener = self._listener
        if self._conn is not None or listener is None:
            return
        while True:
            self._check_alive("boot")
            left = deadline - time.monotonic()
            if left <= 0:
                raise self._error("QEMU never connected to the command socket")
            r, _, _ = select.select([listener], [], [], min(left, 0.2))
            if r:
                self._conn, _ = listener.accept()
                listener.close()
                self._listener = None
                return

    def close(self) -> None:
        """Kill QEMU, close the channel and remove the work directory (if we created it)."""
        if self.proc is not None:
            if self.proc.poll() is None:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(self.proc.pid, signal.SIGTERM)
                try:
                    self.proc.wait(3)
                except subprocess.TimeoutExpired:
                    with contextlib.suppress(ProcessLookupError, PermissionError):
                        os.killpg(self.proc.pid, signal.SIGKILL)
                    self.proc.wait()
        for s in (self._conn, self._listener):
            if s is not None:
                s.close()
        self._conn = self._listener = None
        self._ready = False
        if self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    # commands

    def run(self, command: str, timeout: float = 30.0) -> CommandResult:
        """Run ``command`` with ``/bin/sh`` in the guest; return its exit status and output.

        Raises GuestCommandTimeout if it ran past ``timeout`` (it was killed in the guest), or
        GuestError if the guest died or the channel broke.
        """
        with self._lock:
            if not self._ready or self._conn is None:
                raise GuestError("guest not ready (call start() and wait_ready() first)")
            self._seq += 1
            cid = f"{self._token}{self._seq}"
            tmo = max(1, math.ceil(timeout))
            payload = base64.b64encode(command.encode()).decode()
            started = time.monotonic()
            self._conn.sendall(f"{cid} {tmo} {payload}\n".encode())
            deadline = started + tmo + REPLY_GRACE_S
            begin = f"{CMD_MARK}< {cid}"
            while self._read_line(deadline, waiting_for=f"reply to {command!r}") != begin:
                pass
            body: list[str] = []
            while True:
                line = self._read_line(deadline, waiting_for=f"reply to {command!r}")
                m = _REPLY_END.match(line)
                if m and m.group(1) == cid:
                    rc = int(m.group(2))
                    break
                body.append(line)
            output = base64.b64decode("".join(body)).decode(errors="replace")
            if rc == 128 + signal.SIGKILL and time.monotonic() - started >= tmo - 0.5:
                raise GuestCommandTimeout(
                    f"guest command {command!r} killed after {tmo} s; output so far:\n{output}"
                )
            return CommandResult(rc, output)

    def check(self, command: str, timeout: float = 30.0) -> str:
        """Like :meth:`run` but raise GuestError unless the command exits 0; return its output."""
        res = self.run(command, timeout)
        if res.rc != 0:
            raise GuestError(f"guest command {command!r} exited {res.rc}:\n{res.output}")
        return res.output

    def _read_line(self, deadline: float, waiting_for: str) -> str:
        assert self._conn is not None
        while b"\n" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise self._error(f"timed out waiting for {waiting_for}")
            r, _, _ = select.select([self._conn], [], [], min(left, 0.5))
            if not r:
                self._check_alive(waiting_for)
                continue
            chunk = self._conn.recv(65536)
            if not chunk:
                self._check_alive(waiting_for)
                raise self._error(f"command channel closed while waiting for {waiting_for}")
            self._buf += chunk
        line, _, self._buf = self._buf.partition(b"\n")
        return line.decode(errors="replace").strip("\r")

    # diagnostics

    def console_log(self) -> str:
        """Everything the guest wrote on its console (ttyS0) so far."""
        try:
            return self.console_path.read_text(errors="replace")
        except OSError:
            return ""

    def qemu_stderr(self) -> str:
        try:
            return self.stderr_path.read_text(errors="replace")
        except OSError:
            return ""

    def _check_alive(self, waiting_for: str) -> None:
        if self.proc is not None and self.proc.poll() is not None:
            raise self._error(f"QEMU exited with {self.proc.returncode} during {waiting_for}")

    def _error(self, what: str) -> GuestError:
        return GuestError(
            f"{what} (accel={self.accel_used})\nargv: {' '.join(self.argv)}\n"
            f"--- qemu stderr ---\n{self.qemu_stderr()[-CONSOLE_TAIL_CHARS:]}\n"
            f"--- console tail ---\n{self.console_log()[-CONSOLE_TAIL_CHARS:]}"
        )

