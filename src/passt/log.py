"""Logging as the man page describes it: syslog, standard error, or both.

Default: to the system logger only when started from an interactive
terminal, to both otherwise; `-e` adds standard error, `-d` enables debug
messages (and keeps us in the foreground), `-q` silences informational ones,
`-l FILE` appends to a file.  Messages carry the program name as prefix, as
in the man page's examples ("passt: DHCP: ack to request").

The data path never formats a message unless `debug_enabled` is true: check
it before building a debug string (`trace_enabled`, --trace, for per-packet
lines).

Nothing is ever written to standard output: that belongs to pasta's command
(`pasta -- sh -c 'echo HELLO' > out` leaves HELLO alone in out) and to the
caller reading passt's.  The start-up summary is an informational block
(`block`), shown on stderr without the per-line prefix, as in the EXAMPLES.

`-l FILE` is bounded by --log-size: when a write would pass the bound, the
oldest half of the file is dropped (whole lines), as upstream's "make room
for new entries by removing old ones".
"""

from __future__ import annotations

import os
import sys
import syslog
import time
from typing import TextIO

_prog = "passt"
_to_syslog = False
_to_stderr = True
_quiet = False
_file: TextIO | None = None
_file_size = 0
_file_limit: int | None = None
#: Read by hot paths before formatting a debug line.
debug_enabled = False
#: --trace: per-packet lines too.
trace_enabled = False


def setup(
    prog: str,
    *,
    debug: bool = False,
    quiet: bool = False,
    stderr: bool = False,
    log_file: str | None = None,
    log_size: int | None = None,
    trace: bool = False,
    interactive: bool | None = None,
) -> None:
    """Configure the sinks once options are known (OSError: -l FILE can't be opened)."""
    global _prog, _to_syslog, _to_stderr, _quiet, _file, debug_enabled, trace_enabled
    global _file_size, _file_limit
    _prog = prog
    debug_enabled = debug or trace
    trace_enabled = trace
    debug = debug_enabled
    _quiet = quiet
    if interactive is None:
        interactive = sys.stderr.isatty()
    # interactive terminal: syslog only (unless -e/-d); otherwise both
    _to_syslog = True
    _to_stderr = stderr or debug or not interactive
    if log_file:
        _file = open(log_file, "a", buffering=1)  # noqa: SIM115 - lives as long as the process
        _file_size = _file.tell()
        _file_limit = log_size
    try:
        syslog.openlog(prog, syslog.LOG_PID, syslog.LOG_DAEMON)
    except OSError:
        _to_syslog = False


def set_stderr(enabled: bool) -> None:
    """Once daemonised, standard error is gone."""
    global _to_stderr
    _to_stderr = enabled


def _emit(priority: int, msg: str) -> None:
    if _to_stderr:
        try:
            sys.stderr.write(f"{_prog}: {msg}\n" if priority != syslog.LOG_DEBUG else f"{msg}\n")
            sys.stderr.flush()
        except (OSError, ValueError):
            pass
    if _file is not None:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S")
        _to_file(f"{stamp} {_prog}[{os.getpid()}]: {msg}\n")
    if _to_syslog:
        try:
            syslog.syslog(priority, msg)
        except OSError:
            pass


def _to_file(line: str) -> None:
    global _file_size
    assert _file is not None
    size = len(line.encode(errors="replace"))
    try:
        if _file_limit is not None and _file_size + size > _file_limit:
            _file_size = _make_room(_file, _file_limit // 2)
        _file.write(line)
        _file_size += size
    except (OSError, ValueError):
        pass


def _make_room(f: TextIO, keep: int) -> int:
    """Keep the newest `keep` bytes of the log file (from a line start); its new size."""
    f.flush()
    with open(f.name, "rb") as rf:
        rf.seek(0, os.SEEK_END)
        end = rf.tell()
        rf.seek(max(0, end - keep))
        tail = rf.read()
    if end > keep:
        cut = tail.find(b"\n")
        tail = tail[cut + 1:] if cut >= 0 else b""
    with open(f.name, "r+b") as wf:
        wf.write(tail)
        wf.truncate()
    f.seek(0, os.SEEK_END)
    return len(tail)


def block(text: str) -> None:
    """An informational block of lines (the start-up summary): stderr unprefixed, each line elsewhere.

    Unlike single messages it reaches stderr from a terminal too: it is printed
    once, before any fork, for the person who started us (the EXAMPLES show it).
    """
    if _quiet:
        return
    try:
        sys.stderr.write(text if text.endswith("\n") else text + "\n")
        sys.stderr.flush()
    except (OSError, ValueError):
        pass
    for line in text.splitlines():
        if _file is not None:
            stamp = time.strftime("%Y-%m-%dT%H:%M:%S")
            _to_file(f"{stamp} {_prog}[{os.getpid()}]: {line}\n")
        if _to_syslog and line.strip():
            try:
                syslog.syslog(syslog.LOG_INFO, line)
            except OSError:
                pass


def debug(msg: str) -> None:
    if debug_enabled:
        _emit(syslog.LOG_DEBUG, msg)


def info(msg: str) -> None:
    if not _quiet:
        _emit(syslog.LOG_INFO, msg)


def warn(msg: str) -> None:
    _emit(syslog.LOG_WARNING, msg)


def err(msg: str) -> None:
    _emit(syslog.LOG_ERR, msg)
