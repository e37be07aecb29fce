"""Build the initramfs that the QEMU test guests boot from.

Theory of operation
-------------------
The integration tests need a Linux guest with a virtio-net NIC, a shell, ``ip``, ``udhcpc`` and a few
real client programs (iperf3, dhclient). A disk image would need a distribution install; instead the
guest runs entirely from an initramfs assembled here from files already on the host:

- ``busybox`` (Debian's ``busybox-static``) and one symlink per applet, so the guest has a shell and
  the usual tools without any shared library;
- the kernel modules that the host kernel's ``modules.dep`` lists for virtio-net over PCI
  (``virtio_pci`` -> ``virtio``/``virtio_ring``..., ``virtio_net`` -> ``net_failover`` -> ``failover``),
  minus the ones that ``modules.builtin`` says are compiled in. They are stored decompressed
  (Debian ships ``.ko``, ``.ko.xz`` in older releases) because busybox ``insmod`` takes a plain ELF
  object; ``/etc/modules.order`` lists them dependencies first and ``/init`` loads them in that order;
- extra dynamically linked binaries with the libraries that ``ldd`` names and the ELF loader;
- ``/init`` (mounts, ``lo`` up, modules, then the command loop of :mod:`harness.qemu.guest` on
  ``/dev/ttyS1``) and ``/usr/share/udhcpc/default.script``, without which busybox ``udhcpc`` gets a
  lease but configures nothing.

The archive is a gzip-compressed "newc" cpio (the format the kernel unpacks, see the kernel's
``Documentation/driver-api/early-userspace/buffer-format.rst``) written by :class:`CpioWriter` in
pure Python, so no privileges are needed for the ``/dev/console`` node (the kernel opens it for
init's stdio before ``/init`` can mount devtmpfs).

Images are cached under ``/tmp/passt-qemu-cache`` keyed by a hash of every input (file paths, sizes,
mtimes, the init script text and :data:`FORMAT_VERSION`); building one takes ~0.3 s and the image is
~4 MB with iperf3. Concurrent builders (pytest-xdist workers) write to a temporary name and rename,
so a reader never sees a half-written image.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import lzma
import os
import re
import shutil
import stat
import subprocess
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Final

CACHE_DIR: Final = Path("/tmp/passt-qemu-cache")
"""Where built images (and the accelerator probe result) are kept between test runs."""

FORMAT_VERSION: Final = "6"
"""Bumped whenever the image layout or the scripts below change, so stale cached images are unused."""

BUSYBOX_CANDIDATES: Final = ("/bin/busybox", "/usr/bin/busybox")

GUEST_MODULES: Final = ("virtio_pci", "virtio_net", "af_packet", "ipv6")
"""Modules the guest needs, by name; dependencies are added and built-in ones skipped.

af_packet is what udhcpc's raw socket needs, ipv6 is needed for the IPv6 tests; both are built into
Debian's kernel but may be modules elsewhere.
"""

REQUIRED_MODULES: Final = frozenset({"virtio_pci", "virtio_net"})
"""Of :data:`GUEST_MODULES`, those whose absence (neither module nor built-in) is an error."""

CMD_MARK: Final = "@@PQ"
"""Prefix of the command channel's framing lines; see :mod:`harness.qemu.guest`."""

_S_IFCHR: Final = 0o020000


# --- cpio "newc" writer --------------------------------------------------------------------------


class CpioWriter:
    """Accumulate a newc cpio archive in memory; entries are written in the order they are added.

    Parent directories are created implicitly (mode 0755) the first time a path below them is added.
    Adding the same path twice keeps the first entry: callers add the most specific content first.
    """

    def __init__(self) -> None:
        self._buf = io.BytesIO()
        self._ino = 1
        self._seen: set[str] = set()

    def _header(self, name: str, mode: int, size: int, nlink: int, rdev: tuple[int, int]) -> None:
        encoded = name.encode() + b"\0"
        fields = (
            self._ino, mode, 0, 0, nlink, 0, size, 0, 0, rdev[0], rdev[1], len(encoded), 0,
        )
        self._ino += 1
        self._buf.write(b"070701" + b"".join(b"%08X" % f for f in fields) + encoded)
        self._pad()

    def _pad(self) -> None:
        self._buf.write(b"\0" * (-self._buf.tell() % 4))

    def _claim(self, path: str) -> str | None:
        """Normalise ``path``, create its parents, and return it unless it already exists."""
        name = path.strip("/")
        if not name or name in self._seen:
            return None
        parent = os.path.dirname(name)
        if parent:
            self.directory(parent)
        self._seen.add(name)
        return name

    def directory(self, path: str, mode: int = 0o755) -> None:
        name = self._claim(path)
        if name is not None:
            self._header(name, stat.S_IFDIR | mode, 0, 2, (0, 0))

    def file(self, path: str, data: bytes, mode: int = 0o644) -> None:
        name = self._claim(path)
        if name is not None:
            self._header(name, stat.S_IFREG | mode, len(data), 1, (0, 0))
            self._buf.write(data)
            self._pad()

    def symlink(self, path: str, target: str) -> None:
        name = self._claim(path)
        if name is not None:
            data = target.encode()
            self._header(name, stat.S_IFLNK | 0o777, len(data), 1, (0, 0))
            self._buf.write(data)
            self._pad()

    def chardev(self, path: str, major: int, minor: int, mode: int = 0o600) -> None:
        name = self._claim(path)
        if name is not None:
            self._header(name, _S_IFCHR | mode, 0, 1, (major, minor))

    def has(self, path: str) -> bool:
        return path.strip("/") in self._seen

    def finish(self) -> bytes:
        """Append the trailer and return the uncompressed archive."""
        self._header("TRAILER!!!", 0, 0, 1, (0, 0))
        self._buf.write(b"\0" * (-self._buf.tell() % 512))
        return self._buf.getvalue()


# --- host discovery ------------------------------------------------------------------------------


def find_busybox() -> Path:
    """The static busybox to put in the guest; raises FileNotFoundError if none is installed."""
    for cand in BUSYBOX_CANDIDATES:
        if os.path.isfile(cand):
            return Path(cand)
    raise FileNotFoundError("busybox not found: apt-get install busybox-static")


def _module_name(path: str) -> str:
    base = os.path.basename(path)
    base = re.sub(r"\.ko(\.xz|\.gz|\.zst)?$", "", base)
    return base.replace("-", "_")


def resolve_modules(moddir: Path, names: Iterable[str]) -> list[Path]:
    """Files of ``names`` and their dependencies in load order (dependencies first).

    Built-in modules are skipped. A missing module raises FileNotFoundError if it is in
    :data:`REQUIRED_MODULES`, and is skipped otherwise.
    """
    deps: dict[str, tuple[str, list[str]]] = {}
    for line in (moddir / "modules.dep").read_text().splitlines():
        mod, _, rest = line.partition(":")
        deps[_module_name(mod)] = (mod, rest.split())
    builtin_file = moddir / "modules.builtin"
    builtin = (
        {_module_name(x) for x in builtin_file.read_text().split()} if builtin_file.exists() else set()
    )
    order: list[str] = []

    def visit(name: str, chain: tuple[str, ...]) -> None:
        if name in order or name in chain:
            return
        _, dep_paths = deps[name]
        for dep in dep_paths:
            visit(_module_name(dep), chain + (name,))
        order.append(name)

    for raw in names:
        name = raw.replace("-", "_")
        if name in builtin:
            continue
        if name not in deps:
            if name in REQUIRED_MODULES:
                raise FileNotFoundError(f"kernel module {name} not in {moddir}/modules.dep")
            continue
        visit(name, ())
    return [moddir / deps[n][0] for n in order if n not in builtin]


def read_module(path: Path) -> bytes:
    """A module's ELF object, decompressed if it is stored as .ko.xz, .ko.gz or .ko.zst."""
    data = path.read_bytes()
    if path.name.endswith(".xz"):
        return lzma.decompress(data)
    if path.name.endswith(".gz"):
        return gzip.decompress(data)
    if path.name.endswith(".zst"):
        return subprocess.run(
            ["zstd", "-dc", str(path)], check=True, stdout=subprocess.PIPE
        ).stdout
    return data


_LDD_ARROW = re.compile(r"=>\s+(/\S+)")
_LDD_PLAIN = re.compile(r"^\s*(/\S+)\s+\(")


def shared_libraries(binary: str) -> list[str]:
    """Absolute paths of the libraries (and the loader) that ``ldd`` says ``binary`` needs.

    Returns an empty list for static binaries and scripts (ldd exits non-zero for those).
    """
    proc = subprocess.run(
        ["ldd", binary], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, check=False
    )
    if proc.returncode != 0:
        return []
    libs: list[str] = []
    for line in proc.stdout.splitlines():
        m = _LDD_ARROW.search(line) or _LDD_PLAIN.search(line)
        if m and m.group(1) not in libs:
            libs.append(m.group(1))
    return libs


# --- guest scripts -------------------------------------------------------------------------------

DEFAULT_INIT: Final = r"""#!/bin/sh
# PID 1 of the test guest. Output before the redirection below goes to the console (ttyS0).
export PATH=/sbin:/bin:/usr/sbin:/usr/bin HOME=/root
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts /dev/shm
mount -t devpts devpts /dev/pts
mount -t tmpfs tmpfs /tmp
mount -t tmpfs tmpfs /run
hostname guest
ip link set lo up
for m in $(cat /etc/modules.order); do
    insmod "/lib/modules/$m" || echo "init: insmod $m failed"
done
echo "init: modules loaded, starting command loop on ttyS1"
# The loop runs as a child in a session of its own, without a controlling terminal;
# PID 1 stays behind only to reap orphans (a test's background servers, the watchers
# busybox timeout leaves), so that nothing but the loop's own children disturbs its
# `read` of the next request (a lost request hung the harness: no reply ever came).
setsid /bin/sh /etc/cmdloop.sh </dev/ttyS1 >/dev/ttyS1 2>&1 &
wait
echo "init: command loop ended"
"""
"""Default /init; a replacement given to :func:`build_initramfs` should end the same way."""

CMDLOOP: Final = r"""#!/bin/sh
# Command loop on the second serial port. Request: one line "ID TIMEOUT BASE64(script)".
# Reply: a line "@@PQ< ID", base64 of the script's combined stdout/stderr, a line "@@PQ> ID RC".
# Base64 keeps the reply free of our framing and of bytes a tty would mangle.
stty raw -echo 2>/dev/null
cd /root
echo "@@PQ READY"
while read -r id tmo b64; do
    [ -n "$id" ] || continue
    echo "$b64" | base64 -d > "/tmp/.c$id"
    timeout -s KILL "$tmo" /bin/sh "/tmp/.c$id" > "/tmp/.o$id" 2>&1 < /dev/null
    rc=$?
    echo "@@PQ< $id"
    base64 -w 0 "/tmp/.o$id"
    echo
    echo "@@PQ> $id $rc"
    rm -f "/tmp/.c$id" "/tmp/.o$id"
done
echo "@@PQ EOF"
"""

UDHCPC_SCRIPT: Final = r"""#!/bin/sh
# busybox udhcpc hook: $1 is the event, the lease is in the environment
# (ip, mask = prefix length, router, dns, domain, mtu, interface).
case "$1" in
deconfig)
    ip -4 addr flush dev "$interface"
    ip link set "$interface" up
    ;;
bound|renew)
    ip -4 addr flush dev "$interface"
    ip addr add "$ip/${mask:-32}" dev "$interface"
    [ -n "$mtu" ] && ip link set "$interface" mtu "$mtu"
    if [ -n "$router" ]; then
        while ip -4 route del default dev "$interface" 2>/dev/null; do :; done
        for r in $router; do
            ip route add default via "$r" dev "$interface" 2>/dev/null ||
                ip route add default via "$r" dev "$interface" onlink
            break
        done
    fi
    : > /etc/resolv.conf
    [ -n "$domain" ] && echo "search $domain" >> /etc/resolv.conf
    for d in $dns; do echo "nameserver $d" >> /etc/resolv.conf; done
    ;;
esac
exit 0
"""

_ETC_FILES: Final = {
    "etc/passwd": "root:x:0:0:root:/root:/bin/sh\n",
    "etc/group": "root:x:0:\n",
    "etc/hosts": "127.0.0.1 localhost\n::1 localhost\n",
    "etc/resolv.conf": "",
}


# --- build ---------------------------------------------------------------------------------------


def _stat_key(path: str | Path) -> str:
    st = os.stat(path)
    return f"{path}:{st.st_size}:{st.st_mtime_ns}"


def build_initramfs(
    dest_dir: Path | str,
    *,
    extra_binaries: Sequence[str] = (),
    init_script: str | None = None,
    extra_files: Mapping[str, bytes | Path] | None = None,
    moddir: Path | None = None,
    modules: Sequence[str] = GUEST_MODULES,
) -> Path:
    """Build (or reuse) the guest image and return its path inside ``dest_dir``.

    extra_binaries: host paths copied to the same guest path, with their shared libraries.
    init_script: replaces :data:`DEFAULT_INIT`.
    extra_files: guest path -> content (bytes) or host file (Path); a content starting with ``#!`` is
        made executable, a host file keeps its mode.
    moddir: the kernel's modules directory; default: that of :func:`harness.qemu.guest.kernel_path`.
    """
    from harness.qemu.guest import kernel_path, modules_dir

    dest = Path(dest_dir)
    moddir = moddir if moddir is not None else modules_dir(kernel_path())
    busybox = find_busybox()
    mod_files = resolve_modules(moddir, modules)
    init = DEFAULT_INIT if init_script is None else init_script
    files = dict(extra_files or {})
    binaries = [os.path.abspath(b) for b in extra_binaries]
    libs: list[str] = []
    for b in binaries:
        if not os.path.isfile(b):
            raise FileNotFoundError(f"extra binary {b} not found")
        libs.extend(lib for lib in shared_libraries(b) if lib not in libs)

    key = hashlib.sha256()
    for part in (
        FORMAT_VERSION, init, CMDLOOP, UDHCPC_SCRIPT, _stat_key(busybox),
        *(_stat_key(m) for m in mod_files), *(_stat_key(b) for b in binaries),
        *(_stat_key(lib) for lib in libs),
    ):
        key.update(part.encode() + b"\0")
    for gpath, content in sorted(files.items()):
        key.update(gpath.encode() + b"\0")
        key.update(_stat_key(content).encode() if isinstance(content, Path) else content)
        key.update(b"\0")
    name = f"initramfs-{key.hexdigest()[:24]}.cpio.gz"

    target = dest / name
    if target.exists():
        return target
    cached = CACHE_DIR / name
    dest.mkdir(parents=True, exist_ok=True)
    if cached.exists() and cached != target:
        _atomic_write(target, cached.read_bytes())
        return target

    cpio = CpioWriter()
    for d in ("dev", "proc", "sys", "tmp", "run", "root", "mnt", "var/run", "etc", "usr/share"):
        cpio.directory(d)
    cpio.chardev("dev/console", 5, 1)
    cpio.chardev("dev/null", 1, 3, 0o666)
    cpio.file("init", init.encode(), 0o755)
    cpio.file("etc/cmdloop.sh", CMDLOOP.encode(), 0o755)
    cpio.file("usr/share/udhcpc/default.script", UDHCPC_SCRIPT.encode(), 0o755)
    # Debian builds busybox with CONFIG_UDHCPC_DEFAULT_SCRIPT=/etc/udhcpc/default.script
    cpio.file("etc/udhcpc/default.script", UDHCPC_SCRIPT.encode(), 0o755)
    for gpath, content in files.items():
        if isinstance(content, Path):
            cpio.file(gpath, content.read_bytes(), stat.S_IMODE(content.stat().st_mode))
        else:
            cpio.file(gpath, content, 0o755 if content.startswith(b"#!") else 0o644)
    for gpath, text in _ETC_FILES.items():
        cpio.file(gpath, text.encode())
    for b in (*binaries, *libs):
        cpio.file(b, Path(b).read_bytes(), stat.S_IMODE(os.stat(b).st_mode) | 0o500)
    order: list[str] = []
    for m in mod_files:
        rel = os.path.basename(re.sub(r"\.(xz|gz|zst)$", "", m.name))
        cpio.file(f"lib/modules/{rel}", read_module(m))
        order.append(rel)
    cpio.file("etc/modules.order", ("\n".join(order) + "\n").encode())
    cpio.file("bin/busybox", busybox.read_bytes(), 0o755)
    applets = subprocess.run(
        [str(busybox), "--list-full"], check=True, stdout=subprocess.PIPE, text=True
    ).stdout.split()
    for applet in applets:
        if not cpio.has(applet):
            cpio.symlink(applet, "/bin/busybox")
    if not cpio.has("bin/sh"):
        cpio.symlink("bin/sh", "/bin/busybox")

    image = gzip.compress(cpio.finish(), compresslevel=1)
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    _atomic_write(cached, image)
    if cached != target:
        _atomic_write(target, image)
    return target


def _atomic_write(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-" + path.name)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def clear_cache() -> None:
    """Remove every cached image and probe result (for a developer who changed a host file in place)."""
    shutil.rmtree(CACHE_DIR, ignore_errors=True)
