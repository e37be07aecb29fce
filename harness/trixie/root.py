"""A Debian 13 "trixie" root holding the real callers of passt and pasta.

Why a root of its own
---------------------
Debian 12's Podman (4.3) has no pasta network mode and its libvirt (9.0) is built without passt,
so the callers come from trixie: Podman 5.4, libvirt 11.3 with its QEMU driver, QEMU 10, and
trixie's C passt as the control. :func:`ensure_root` builds the root with ``debootstrap`` from the
Debian archive (the only mirror the tests may reach) and keeps it under :data:`CACHE_ROOT`, keyed
by the suite and the package list, so one machine builds it once; CI builds it fresh.

The build is done in a temporary directory renamed into place at the end, under an exclusive
lock, so a reader (another pytest-xdist worker) never sees a half-built root and two builders never
race. Post-install set-up (the unprivileged user with subordinate ids, containers.conf, qemu.conf)
is part of the cached root; the project itself is not, because it changes every run:
:func:`install_project` puts a wheel built outside into a venv inside, offline (``--no-index``),
with trixie's own numpy and pyroute2 reached through ``--system-site-packages``.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Final

SUITE: Final = "trixie"
MIRROR: Final = "http://deb.debian.org/debian"
PACKAGES: Final = (
    "podman", "crun", "uidmap", "catatonit", "passt",
    "libvirt-daemon", "libvirt-daemon-driver-qemu", "libvirt-clients", "qemu-system-x86",
    "python3", "python3-venv", "python3-numpy", "python3-pyroute2",
    "busybox-static", "iproute2", "procps", "util-linux", "ca-certificates",
)
"""What the callers need; numpy and pyroute2 are the project's own dependencies, from trixie."""
CACHE_ROOT: Final = Path(os.environ.get("PASST_TRIXIE_CACHE", "/var/cache/passt-py"))
SETUP_VERSION: Final = "2"
"""Bumped when :func:`_configure` changes, so a cached root configured the old way is rebuilt."""
USER: Final = "tester"
"""The unprivileged user that runs rootless Podman inside the root."""
UID: Final = 1000
SUBID_START: Final = 100000
SUBID_COUNT: Final = 65536
VENV: Final = "/opt/passt-py"
"""Where our project is installed inside the root (its bin/ has passt, pasta, qrap)."""
DEBOOTSTRAP_TIMEOUT_S: Final = 1800


def root_key() -> str:
    """The cache key: suite, mirror, package list and set-up version."""
    text = "\0".join((SUITE, MIRROR, SETUP_VERSION, *sorted(PACKAGES)))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def root_path() -> Path:
    return CACHE_ROOT / f"{SUITE}-{root_key()}"


def ensure_root() -> Path:
    """The configured trixie root, built now if no cached one exists (minutes: see docs/callers.md)."""
    target = root_path()
    if (target / ".complete").exists():
        return target
    CACHE_ROOT.mkdir(parents=True, exist_ok=True)
    with open(CACHE_ROOT / ".build.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (target / ".complete").exists():
            return target
        _remove_stale(target)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=CACHE_ROOT))
        try:
            started = time.monotonic()
            _debootstrap(tmp)
            _configure(tmp)
            (tmp / ".complete").write_text(f"built in {time.monotonic() - started:.0f} s\n")
            os.rename(tmp, target)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return target


def _remove_stale(target: Path) -> None:
    """Remove half-built roots (ours only) and older keys of the same suite."""
    for p in CACHE_ROOT.iterdir():
        if p.name.startswith(f".{SUITE}-") or (p.name.startswith(f"{SUITE}-") and p != target):
            shutil.rmtree(p, ignore_errors=True)


def _debootstrap(root: Path) -> None:
    """A minbase trixie, then the callers installed by trixie's own apt.

    Bookworm's debootstrap cannot take the packages with ``--include``: it unpacks systemd before
    configuring libsystemd-shared, which systemd pre-depends on, and fails. trixie's apt orders them
    right. The install runs chrooted in a private mount namespace (with /proc mounted there only),
    with a policy-rc.d so no package starts a service.
    """
    argv = ["debootstrap", "--variant=minbase", SUITE, str(root), MIRROR]
    res = subprocess.run(argv, capture_output=True, text=True, timeout=DEBOOTSTRAP_TIMEOUT_S)
    if res.returncode != 0:
        log = root / "debootstrap" / "debootstrap.log"
        tail = log.read_text(errors="replace")[-3000:] if log.exists() else ""
        raise RuntimeError(f"debootstrap failed ({res.returncode}):\n{res.stderr[-3000:]}\n{tail}")
    policy = root / "usr/sbin/policy-rc.d"
    policy.write_text("#!/bin/sh\nexit 101\n")
    policy.chmod(0o755)
    script = (
        'mount -t proc proc "$1/proc" && exec chroot "$1" env DEBIAN_FRONTEND=noninteractive '
        'sh -c "apt-get install -y -q --no-install-recommends $2 && apt-get clean"'
    )
    res = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh", str(root), " ".join(PACKAGES)],
        capture_output=True, text=True, timeout=DEBOOTSTRAP_TIMEOUT_S,
    )
    if res.returncode != 0:
        raise RuntimeError(f"apt-get install in the root failed ({res.returncode}):\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}")


def _chroot(root: Path, *argv: str) -> None:
    """Set-up commands that need no namespaces (user creation) run chrooted: simplest, and enough."""
    subprocess.run(["chroot", str(root), *argv], check=True, capture_output=True, text=True)


CONTAINERS_CONF: Final = """\
# Written by harness/trixie: rootless Podman without systemd, cgroups or a registry.
[containers]
cgroups = "disabled"
log_driver = "k8s-file"

[engine]
cgroup_manager = "cgroupfs"
events_logger = "file"
runtime = "crun"
# The wrapper directory comes first: harness/trixie/callers.py fills it with a recording
# wrapper around ours or C's pasta (helper_binaries_dir is searched in order).
helper_binaries_dir = ["/opt/callers/bin", "/usr/local/libexec/podman", "/usr/local/lib/podman", "/usr/libexec/podman", "/usr/lib/podman"]

[network]
default_rootless_network_cmd = "pasta"
"""

STORAGE_CONF: Final = """\
[storage]
driver = "vfs"
"""

QEMU_CONF: Final = """\
# Written by harness/trixie: a TCG domain in a root without cgroups, SELinux/AppArmor or devices.
user = "libvirt-qemu"
group = "libvirt-qemu"
security_driver = "none"
cgroup_controllers = [ ]
namespaces = [ ]
remember_owner = 0
stdio_handler = "file"
"""

LIBVIRTD_CONF: Final = """\
unix_sock_group = "root"
unix_sock_rw_perms = "0770"
auth_unix_rw = "none"
log_outputs = "3:stderr"
"""


def _configure(root: Path) -> None:
    """The unprivileged user, subordinate ids and the callers' configuration files."""
    _chroot(root, "useradd", "-m", "-u", str(UID), "-s", "/bin/sh", USER)
    for name in ("etc/subuid", "etc/subgid"):
        (root / name).write_text(f"{USER}:{SUBID_START}:{SUBID_COUNT}\n")
    conf = root / "etc/containers"
    conf.mkdir(parents=True, exist_ok=True)
    (conf / "containers.conf").write_text(CONTAINERS_CONF)
    user_conf = root / f"home/{USER}/.config/containers"
    user_conf.mkdir(parents=True, exist_ok=True)
    (user_conf / "storage.conf").write_text(STORAGE_CONF)
    _chroot(root, "chown", "-R", f"{USER}:{USER}", f"/home/{USER}/.config")
    (root / "etc/libvirt/qemu.conf").write_text(QEMU_CONF)
    (root / "etc/libvirt/libvirtd.conf").write_text(LIBVIRTD_CONF)
    if not (root / "etc/passwd").read_text().count("libvirt-qemu:"):
        _chroot(root, "useradd", "-r", "-U", "-d", "/var/lib/libvirt", "libvirt-qemu")
    (root / "opt/callers/bin").mkdir(parents=True, exist_ok=True)


def build_wheel(out: Path) -> Path:
    """Our project as a wheel (no dependencies: the root has trixie's), built from this checkout."""
    src = Path(__file__).resolve().parents[2]
    out.mkdir(parents=True, exist_ok=True)
    # Two test workers may build at once; setuptools shares the checkout's build/ folder between them.
    with open(src / ".wheel-build.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        res = subprocess.run(
            [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(out), str(src)],
            capture_output=True, text=True,
        )
    if res.returncode != 0:
        raise RuntimeError(f"pip wheel of {src} failed: {res.stderr.strip()[-2000:]}")
    wheels = sorted(out.glob("passt_py-*.whl"), key=lambda p: p.stat().st_mtime)
    if not wheels:
        raise RuntimeError(f"pip wheel left no passt_py wheel in {out}")
    return wheels[-1]


VENV_SCRIPT: Final = (
    'set -e; [ -x "$1/bin/python3" ] || python3 -m venv --system-site-packages --without-pip "$1"; '
    'pip=$(ls /usr/share/python-wheels/pip-*.whl 2>/dev/null | head -1); '
    '[ -n "$pip" ] || pip=$(ls /usr/lib/python3*/ensurepip/_bundled/pip-*.whl | head -1); '
    '"$1/bin/python3" "$pip/pip" install -q --no-index --no-deps --force-reinstall '
    '--root-user-action=ignore --disable-pip-version-check "$2"'
)
"""Inside the root: a venv seeing trixie's numpy and pyroute2, and the wheel installed offline with
the pip wheel that python3-venv ships (the root has no pip of its own and no index is reached)."""
