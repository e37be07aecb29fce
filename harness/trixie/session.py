"""Run commands inside the trixie root, in the test topology's "host" namespace.

How the root is entered
-----------------------
:class:`RootSession` starts one long-lived process tree per test::

    ip netns exec HOST                       the test topology's "host" netns (never the machine's)
      unshare --mount --propagation private --pid --fork --kill-child
        sh (host's)  overlay ROOT + per-session upper dir -> merged; /proc, /sys, an empty tmpfs on
                     sys/fs/cgroup, a small /dev, its own /run and /tmp, /shared; resolv.conf
                     naming only the test DNS; pivot_root; umount the old root
          catatonit -P                       PID 1 of the new PID namespace: reaps orphans

and every command then joins it with ``nsenter`` (mount, PID, network namespaces, root and working
directory of PID 1). Why each piece:

- ``pivot_root``, not ``chroot``: the kernel refuses to create a user namespace from a chrooted
  process, and rootless Podman needs one;
- the overlay keeps the cached root pristine: container storage, libvirt's state and the logs
  go to a per-session upper directory that :meth:`RootSession.close` removes;
- an empty tmpfs on ``sys/fs/cgroup``: Podman and libvirt see no cgroup hierarchy (configured not
  to use one) and cannot reach the host's;
- PID 1 is catatonit so daemons that fork away (conmon, pasta, libvirtd's passt) are reaped: a
  zombie would count as "a passt left"; killing it ends the whole PID namespace, so nothing
  started inside survives the session, even when the test failed;
- ``/shared`` is a directory of the host bind-mounted inside: the argv records, the guest's
  command socket and the files a test hands over live there, readable from both sides.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import IO, Final

from harness.netns.topology import DNS_ADDR4, DNS_ADDR6
from harness.trixie.root import UID, USER, VENV, VENV_SCRIPT

SHARED: Final = "/shared"
"""The host directory :attr:`RootSession.shared` as seen inside the root."""
START_TIMEOUT_S: Final = 20.0

_ENTER_SCRIPT: Final = r"""
set -eu
base=$1 lower=$2 share=$3
R=$base/merged
mkdir -p "$base/upper" "$base/work" "$R"
mount -t overlay overlay -o "lowerdir=$lower,upperdir=$base/upper,workdir=$base/work" "$R"
mount -t proc proc "$R/proc"
mount -t sysfs sysfs "$R/sys"
mount -t tmpfs -o mode=0755,size=1m cgroup "$R/sys/fs/cgroup"
mount -t tmpfs -o mode=0755,size=16m,nosuid dev "$R/dev"
for n in null zero full random urandom tty net/tun fuse; do
    [ -e "/dev/$n" ] || continue
    mkdir -p "$(dirname "$R/dev/$n")"; touch "$R/dev/$n"; mount --bind "/dev/$n" "$R/dev/$n"
done
mkdir "$R/dev/pts" "$R/dev/shm"
mount -t devpts -o newinstance,ptmxmode=0666,mode=0620 devpts "$R/dev/pts"
ln -s pts/ptmx "$R/dev/ptmx"; ln -s /proc/self/fd "$R/dev/fd"
ln -s /proc/self/fd/0 "$R/dev/stdin"; ln -s /proc/self/fd/1 "$R/dev/stdout"; ln -s /proc/self/fd/2 "$R/dev/stderr"
mount -t tmpfs -o mode=1777,nosuid,nodev shm "$R/dev/shm"
mount -t tmpfs -o mode=0755,nosuid,nodev run "$R/run"
mount -t tmpfs -o mode=1777,nosuid,nodev tmp "$R/tmp"
mkdir -p "$R/shared"; mount --bind "$share" "$R/shared"
mkdir -p "$R/opt/callers/bin"; mount --bind "$share/bin" "$R/opt/callers/bin"
rm -f "$R/etc/resolv.conf"; cp "$share/resolv.conf" "$R/etc/resolv.conf"
mkdir -p "$R/run/user/$4" "$R/run/libvirt" "$R/var/log/libvirt" "$R/var/lib/libvirt/qemu"
chown "$4:$4" "$R/run/user/$4"; chmod 0700 "$R/run/user/$4"
cd "$R"; mkdir -p .oldroot
pivot_root . .oldroot
cd /
umount -l /.oldroot
rmdir /.oldroot
mount --make-rshared /
exec /usr/bin/catatonit -P
"""


@contextlib.contextmanager
def entered(root: Path, netns: str) -> Iterator[RootSession]:
    """The root entered in `netns` for the ``with`` block; closed after it, also on failure."""
    session = RootSession(root, netns)
    try:
        session.start()
        yield session
    finally:
        session.close()


class RootSession:
    """The trixie root entered once (:meth:`start`); :meth:`run` and :meth:`popen` run commands inside.

    :meth:`close` kills PID 1 of the root's PID namespace (so every process started inside),
    waits for the tree and removes the session's directories; :func:`entered` pairs the two.
    """

    def __init__(self, root: Path, netns: str) -> None:
        self.root = root
        self.netns = netns
        self.base = Path(tempfile.mkdtemp(prefix="ptx-", dir="/var/tmp"))
        self.shared = self.base / "shared"
        (self.shared / "bin").mkdir(parents=True)
        self.shared.chmod(0o1777)
        (self.shared / "resolv.conf").write_text(f"nameserver {DNS_ADDR4}\nnameserver {DNS_ADDR6}\n")
        self._holder: subprocess.Popen[bytes] | None = None
        self.init_pid = 0
        self._stderr_path = self.base / "enter.stderr"

    def start(self) -> None:
        argv = [
            "ip", "netns", "exec", self.netns,
            "unshare", "--mount", "--propagation", "private", "--pid", "--fork", "--kill-child",
            "sh", "-c", _ENTER_SCRIPT, "sh", str(self.base), str(self.root), str(self.shared), str(UID),
        ]
        with open(self._stderr_path, "wb") as err:
            self._holder = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=err, stderr=err,
                                            start_new_session=True)
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            pid = self._init_child()
            if pid and os.readlink(f"/proc/{pid}/exe").endswith("catatonit"):
                self.init_pid = pid
                return
            if self._holder.poll() is not None:
                break
            time.sleep(0.02)
        raise RuntimeError(f"entering the root failed:\n{self._stderr_path.read_text(errors='replace')}")

    def _init_child(self) -> int:
        """The PID (on the host) of the child unshare forked: PID 1 of the new namespace."""
        assert self._holder is not None
        with contextlib.suppress(OSError, ValueError):
            children = Path(f"/proc/{self._holder.pid}/task/{self._holder.pid}/children").read_text().split()
            return int(children[0]) if children else 0
        return 0

    def close(self) -> None:
        if self._holder is not None:
            if self.init_pid:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self.init_pid, signal.SIGKILL)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self._holder.pid, signal.SIGKILL)
            self._holder.wait()
            self._holder = None
        # the overlay was mounted only in the session's mount namespace, gone with its processes
        shutil.rmtree(self.base, ignore_errors=True)

    def install_project(self, wheel: Path) -> str:
        """Install our wheel into the venv inside (the session's overlay); return its bin/ inside."""
        shutil.copy2(wheel, self.shared / wheel.name)
        self.check(["sh", "-c", VENV_SCRIPT, "sh", VENV, f"{SHARED}/{wheel.name}"], timeout=300)
        return f"{VENV}/bin"

    # running commands -----------------------------------------------------------------------

    def command(self, argv: Sequence[str], *, user: bool = False, env: Mapping[str, str] | None = None) -> list[str]:
        """The host argv that runs `argv` inside the root, as root or as the unprivileged user."""
        if user:
            base_env = {"HOME": f"/home/{USER}", "USER": USER, "LOGNAME": USER,
                        "XDG_RUNTIME_DIR": f"/run/user/{UID}"}
        else:
            base_env = {"HOME": "/root", "USER": "root"}
        base_env["PATH"] = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
        base_env.update(env or {})
        inner = ["env", "-i", *(f"{k}={v}" for k, v in base_env.items())]
        if user:
            inner += ["setpriv", f"--reuid={UID}", f"--regid={UID}", "--init-groups", "--"]
        return ["nsenter", "-t", str(self.init_pid), "-m", "-p", "-n", "-r", "-w", "--", *inner, *argv]

    def run(self, argv: Sequence[str], *, user: bool = False, timeout: float = 120,
            env: Mapping[str, str] | None = None, input: str | None = None) -> subprocess.CompletedProcess[str]:
        """Run to completion inside the root; output captured as text, no standard input."""
        return subprocess.run(self.command(argv, user=user, env=env), capture_output=True, text=True,
                              timeout=timeout, input=input, stdin=None if input is not None else subprocess.DEVNULL)

    def check(self, argv: Sequence[str], **kw: object) -> str:
        """:meth:`run`, raising with the output unless it exits 0; returns stdout."""
        res = self.run(argv, **kw)  # type: ignore[arg-type]
        if res.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)} exited {res.returncode}:\n{res.stdout}\n{res.stderr}")
        return res.stdout

    def popen(self, argv: Sequence[str], *, user: bool = False, env: Mapping[str, str] | None = None,
              stdout: int | IO[bytes] | None = subprocess.DEVNULL,
              stderr: int | IO[bytes] | None = subprocess.DEVNULL) -> subprocess.Popen[bytes]:
        """Start a long-running process inside (it dies with the session at the latest)."""
        return subprocess.Popen(self.command(argv, user=user, env=env), stdin=subprocess.DEVNULL,
                                stdout=stdout, stderr=stderr, start_new_session=True)

    def processes(self, name: str) -> list[str]:
        """``ps`` lines of the live (non-zombie) processes inside whose command name is `name`.

        A console script started by path has the script's name as its command name, so ours is
        found by its own name; C's re-executes itself as ``NAME.avx2`` where the CPU has AVX2.
        """
        out = self.run(["ps", "-e", "-o", "pid=,stat=,comm=,args="]).stdout
        found = []
        for line in out.splitlines():
            fields = line.split(None, 3)
            if len(fields) >= 3 and not fields[1].startswith("Z") and fields[2] in (name, f"{name}.avx2"):
                found.append(line.strip())
        return found
