"""Process behaviour shared by both programs: background, PID file, privileges.

The man page: fork into background when started from an interactive terminal,
unless -f or -d.  Started as root, we drop to --runas (default: nobody, as
passt does) once every privileged step (binding low ports, opening the tap)
is done.
"""

from __future__ import annotations

import os
import pwd
import signal
import sys

from passt import log

#: nobody:nogroup on Debian.
NOBODY: tuple[int, int] = (65534, 65534)


def interactive() -> bool:
    """Started from an interactive terminal?"""
    return sys.stdin.isatty() or sys.stderr.isatty()


def daemonize() -> None:
    """Double-fork into the background, detach from the terminal.

    SIGHUP is ignored across the forks: when the terminal's session leader
    exits, the kernel hangs up its foreground group, which the first child
    still belongs to until setsid().
    """
    previous = signal.signal(signal.SIGHUP, signal.SIG_IGN)
    if os.fork() > 0:
        os._exit(0)
    os.setsid()
    if os.fork() > 0:
        os._exit(0)
    signal.signal(signal.SIGHUP, previous)
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    if devnull > 2:
        os.close(devnull)
    log.set_stderr(False)


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


def drop_privileges(runas: tuple[int, int] | None) -> None:
    """As root: switch to `runas` (default nobody); otherwise nothing to drop."""
    if os.geteuid() != 0:
        return
    uid, gid = runas if runas is not None else nobody()
    if uid == 0:
        return
    os.setgroups([])
    os.setgid(gid)
    os.setuid(uid)
