"""Process behaviour shared by both programs: background when ready, PID file, privileges.

The caller's contract (Podman, libvirt, scripts): the process it started exits
0 only once the work is ready (passt's socket listens, pasta's namespace is
configured and its forwards are bound), and non-zero with the one-line error
on stderr when set-up fails.  So every set-up step runs in the foreground,
where an error is still the caller's to read; then `background()` forks, and
the caller's process waits on a pipe until the surviving process says
"ready" (after writing the PID file and dropping privileges, the two steps
that can still fail) or sends its error.  The survivor keeps no stdio: a
caller reading our output to EOF (Podman does) gets it when we're ready.

This is by default, not only from a terminal: the 2021 man page says "if
started from an interactive terminal", which passt itself dropped in October
2021 (see docs/conformance_catalogue.toml, daemon.background-always).

Privileges: as real root in the initial user namespace we drop to --runas
(default nobody) once every privileged step is done; root inside a user
namespace (rootless Podman, RootlessKit) keeps its identity, as C passt
does: the namespace has no other user to switch to.
"""

from __future__ import annotations

import os
import pwd
import signal
import stat
import sys
from collections.abc import Callable
from typing import Final

from passt import log

#: nobody:nogroup on Debian.
NOBODY: tuple[int, int] = (65534, 65534)
#: /proc/self/uid_map of the initial user namespace: every ID maps to itself.
INITIAL_UID_MAP: Final = ["0", "0", "4294967295"]
#: What the survivor sends when it's serving.
READY: Final = b"ready\n"
#: Bound on what the caller's process reads from the pipe (one error line).
REPORT_MAX: Final = 4096


class Readiness:
    """The survivor's end of the pipe to the caller's process (None: no one waits)."""

    def __init__(self, fd: int | None) -> None:
        self._fd = fd

    def ready(self) -> None:
        """Serving: let the caller's process exit 0."""
        self._send(READY)

    def failed(self, prog: str, msg: str) -> SystemExit:
        """Set-up failed after the fork: the caller's process prints `msg` and exits 1."""
        line = f"{prog}: {msg}\n"
        if self._fd is None:
            try:
                sys.stderr.write(line)
                sys.stderr.flush()
            except (OSError, ValueError):
                pass
        else:
            self._send(line.encode(errors="replace")[:REPORT_MAX])
        return SystemExit(1)

    def _send(self, data: bytes) -> None:
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            os.write(fd, data)
        except OSError:
            pass  # the caller's process is gone: nobody to tell
        os.close(fd)


def foreground() -> Readiness:
    """No fork: errors go to our own stderr."""
    return Readiness(None)


def background(*, keep_stderr: bool = False) -> Readiness:
    """Double-fork; the caller's process waits for the survivor's word and exits with it.

    SIGHUP is ignored across the forks: when a terminal's session leader
    exits, the kernel hangs up its foreground group, which the first child
    still belongs to until setsid().  The survivor's stdin and stdout, and
    stderr unless `keep_stderr` (-e), become /dev/null at once, so a caller
    that reads our output to EOF sees EOF when the caller's process exits.
    """
    sys.stdout.flush()
    sys.stderr.flush()
    r, w = os.pipe()
    previous = signal.signal(signal.SIGHUP, signal.SIG_IGN)
    first = os.fork()
    if first > 0:
        os.close(w)
        _wait_for_word(r, first)
    os.close(r)
    os.setsid()
    if os.fork() > 0:
        os._exit(0)
    signal.signal(signal.SIGHUP, previous)
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1) if keep_stderr else (0, 1, 2):
        os.dup2(devnull, fd)
    if devnull > 2:
        os.close(devnull)
    if not keep_stderr:
        log.set_stderr(False)
    return Readiness(w)


def _wait_for_word(r: int, child: int) -> None:  # pragma: no cover - the caller's process
    """Exit 0 on "ready"; else print what the survivor sent (or that it died) and exit 1."""
    data = b""
    while len(data) < REPORT_MAX:
        chunk = os.read(r, REPORT_MAX)
        if not chunk:
            break
        data += chunk
    try:
        os.waitpid(child, 0)  # the middle process, gone at once
    except ChildProcessError:
        pass
    if data == READY:
        os._exit(0)
    text = data.decode(errors="replace") or "background process exited during set-up\n"
    try:
        sys.stderr.write(text)
        sys.stderr.flush()
    except (OSError, ValueError):
        pass
    os._exit(1)


def write_pid_file(path: str | None) -> None:
    if path:
        with open(path, "w") as f:
            f.write(f"{os.getpid()}\n")


def nobody() -> tuple[int, int]:
    try:
        pw = pwd.getpwnam("nobody")
    except KeyError:
        return NOBODY
    return pw.pw_uid, pw.pw_gid


def in_initial_userns(uid_map: str | None = None) -> bool:
    """Whether we run in the initial user namespace (its uid_map is the identity, whole)."""
    if uid_map is None:
        try:
            with open("/proc/self/uid_map", encoding="ascii") as f:
                uid_map = f.read()
        except OSError:
            return True
    return uid_map.split() == INITIAL_UID_MAP


def drop_target(runas: tuple[int, int] | None, *, euid: int, initial_userns: bool) -> tuple[int, int] | None:
    """Whom to become, or None to keep our identity (the decision, apart from the syscalls).

    Not root: nothing to drop.  Root with --runas: that user, wherever we
    are.  Root without it: nobody, only in the initial user namespace.
    """
    if euid != 0:
        return None
    if runas is not None:
        return None if runas[0] == 0 else runas
    return nobody() if initial_userns else None


def readable_by(path: str, uid: int, gid: int, *, stat_fn: Callable[[str], os.stat_result] = os.stat) -> bool:
    """Whether `uid:gid` (no supplementary groups: the drop clears them) may list `path` and
    search every directory above it, by the mode bits (owner, group, else other)."""
    path = os.path.realpath(path)
    parts = [p for p in path.split(os.sep) if p]
    for depth in range(len(parts) + 1):
        here = os.sep + os.sep.join(parts[:depth])
        try:
            st = stat_fn(here)
        except OSError:
            return False
        need = stat.S_IXOTH | (stat.S_IROTH if depth == len(parts) else 0)
        bits = st.st_mode >> 6 if st.st_uid == uid else st.st_mode >> 3 if st.st_gid == gid else st.st_mode
        if bits & need != need:
            return False
    return True


def import_before_drop(runas: tuple[int, int] | None, module: str = "numpy") -> bool:
    """Whether `module` must be imported before `drop_privileges` (so before the ready word):
    we will drop, and the user we become may not read it or the standard library it needs.

    Where it can (a system-wide install: /usr/lib/python3), it loads after the word instead.
    """
    target = drop_target(runas, euid=os.geteuid(), initial_userns=in_initial_userns())
    if target is None:
        return False
    from importlib.machinery import PathFinder

    spec = PathFinder.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        return True
    stdlib = os.path.dirname(os.__file__)
    ours = os.path.dirname(os.path.abspath(__file__))  # our own modules that load late
    dirs = [stdlib, os.path.join(stdlib, "lib-dynload"), ours, *spec.submodule_search_locations]
    libs = os.path.join(os.path.dirname(dirs[-1]), f"{module}.libs")  # a wheel's bundled libraries
    if os.path.isdir(libs):
        dirs.append(libs)
    return not all(readable_by(d, *target) for d in dirs if os.path.exists(d))


def drop_privileges(runas: tuple[int, int] | None) -> None:
    """Switch to the user `drop_target` picks; OSError when the kernel refuses."""
    target = drop_target(runas, euid=os.geteuid(), initial_userns=in_initial_userns())
    if target is None:
        return
    uid, gid = target
    os.setgroups([])
    os.setgid(gid)
    os.setuid(uid)
