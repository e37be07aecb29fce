"""Logging as the man page describes it: syslog, standard error, or both.

Default: to the system logger only when started from an interactive
terminal, to both otherwise; `-e` adds standard error, `-d` enables debug
messages (and keeps us in the foreground), `-q` silences informational ones,
`-l FILE` appends to a file.  Messages carry the program name as prefix, as
in the man page's examples ("passt: DHCP: ack to request").

The data path never formats a message unless `debug_enabled` is true: check
it before building a debug string.
"""

from __future__ import annotations

import logging
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
#: Read by hot paths before formatting a debug line.
debug_enabled = False


def setup(
    prog: str,
    *,
    debug: bool = False,
    quiet: bool = False,
    stderr: bool = False,
    log_file: str | None = None,
    interactive: bool | None = None,
) -> None:
    """Configure the sinks once options are known."""
    global _prog, _to_syslog, _to_stderr, _quiet, _file, debug_enabled
    _prog = prog
    debug_enabled = debug
    _quiet = quiet
    if interactive is None:
        interactive = sys.stderr.isatty()
    # interactive terminal: syslog only (unless -e/-d); otherwise both
    _to_syslog = True
    _to_stderr = stderr or debug or not interactive
    if log_file:
        _file = open(log_file, "a", buffering=1)  # noqa: SIM115 - lives as long as the process
    try:
        syslog.openlog(prog, syslog.LOG_PID, syslog.LOG_DAEMON)
    except OSError:
        _to_syslog = False
    # Modules that log through the standard library reach the same sinks.
    root = logging.getLogger()
    root.handlers[:] = [_Bridge()]
    root.setLevel(logging.DEBUG if debug else logging.INFO)


class _Bridge(logging.Handler):
    """Routes standard-library log records to our sinks (one prefix, syslog, file)."""

    _PRIORITY = {logging.DEBUG: syslog.LOG_DEBUG, logging.INFO: syslog.LOG_INFO,
                 logging.WARNING: syslog.LOG_WARNING, logging.ERROR: syslog.LOG_ERR}

    def emit(self, record: logging.LogRecord) -> None:
        msg = record.getMessage()
        if record.levelno <= logging.DEBUG:
            debug(msg)
        elif record.levelno <= logging.INFO:
            info(msg)
        else:
            _emit(self._PRIORITY.get(record.levelno, syslog.LOG_ERR), msg)


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
        try:
            _file.write(f"{stamp} {_prog}[{os.getpid()}]: {msg}\n")
        except (OSError, ValueError):
            pass
    if _to_syslog:
        try:
            syslog.syslog(priority, msg)
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
