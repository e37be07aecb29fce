"""Fixtures for integration tests: the topology and the programs under test.

Every test gets fresh namespaces (harness.netns.Topology), removed afterwards
even when the test fails.  The programs are the console scripts installed next
to the running interpreter (the nox virtualenv), never Debian's C passt/pasta
that may also be on PATH.
"""

from __future__ import annotations

import fcntl
import os
import pty
import re
import select
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest

from harness.netns import Topology
from harness.netns.topology import cleanup_stale

BIN = Path(sys.executable).parent


def program(name: str) -> str:
    """Absolute path of our console script `name` (passt, pasta, qrap)."""
    path = BIN / name
    if not path.exists():
        pytest.fail(f"{path} missing: install the project (pip install -e .)")
    return str(path)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        item.add_marker(pytest.mark.integration)


@pytest.fixture(autouse=True)
def _group_exclusive(request: pytest.FixtureRequest) -> Iterator[None]:
    """Tests of one `xdist_group` (a shared resource: passt's default /tmp sockets, the trixie
    root's services) never overlap, whatever the scheduler does: each holds the group's file lock.

    `--dist loadgroup` alone is not enough: with pytest 9.2 it silently stops grouping
    (pytest-xdist issue 1386), and a second checkout's tests on the same machine share /tmp too.
    """
    mark = request.node.get_closest_marker("xdist_group")
    if mark is None:
        yield
        return
    name = mark.args[0] if mark.args else mark.kwargs["name"]
    with open(f"/tmp/passt-tests-{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


@pytest.fixture(scope="session", autouse=True)
def _root_and_stale() -> None:
    if os.geteuid() != 0:
        pytest.skip("integration tests need root (namespaces, tap devices)")
    cleanup_stale()


@pytest.fixture
def topo() -> Iterator[Topology]:
    with Topology() as t:
        yield t


@pytest.fixture
def pasta_bin() -> str:
    return program("pasta")


@pytest.fixture
def passt_bin() -> str:
    return program("passt")


@pytest.fixture
def qrap_bin() -> str:
    return program("qrap")


def unprivileged(argv: Sequence[str]) -> list[str]:
    """`argv` run as nobody:nogroup with every capability set empty.

    The console scripts and the interpreter live under BIN, and one directory on
    the way there may be closed to others (here /root, mode 0700).  Rather than
    copying anything, the command runs in a private mount namespace where that
    directory is a mode-0755 tmpfs holding only a bind mount of the one child on
    the way to BIN, so every path stays the same and nothing outside changes.
    """
    drop = ["setpriv", "--reuid", "65534", "--regid", "65534", "--clear-groups",
            "--inh-caps=-all", "--bounding-set=-all"]
    blocked = next((d for d in reversed(BIN.parents) if d != Path("/") and not d.stat().st_mode & 0o001), None)
    if blocked is None:
        return [*drop, *argv]
    inner = blocked / BIN.relative_to(blocked).parts[0]
    script = ('s=$(mktemp -d) && mount --bind "$1" "$s" && mount -t tmpfs -o mode=755 none "$2" && '
              'mkdir "$1" && mount --bind "$s" "$1" && umount "$s" && rmdir "$s" && shift 2 && exec "$@"')
    return ["unshare", "-m", "--propagation", "private", "sh", "-c", script, "sh", str(inner), str(blocked),
            *drop, *argv]


def need(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        pytest.fail(f"{tool} not installed: run scripts/test-all (installs Debian packages)")
    return path


def wait_until(cond: Callable[[], bool], timeout: float = 10.0, what: str = "condition") -> None:
    """Poll `cond` every 20 ms until it holds (a readiness check, not a sleep); TimeoutError names `what`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.02)
    raise TimeoutError(what)


def accepts_unix(path: str) -> bool:
    """True when something accepts connections on the UNIX socket `path`."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.connect(path)
    except OSError:
        return False
    finally:
        s.close()
    return True


_BOUND = re.compile(rb"UNIX domain socket bound at (\S+)")


def read_bound(proc: subprocess.Popen[bytes], timeout: float = 20.0) -> str:
    """The socket path passt announces on stderr ("UNIX domain socket bound at PATH").

    Ready by passt's own word, not by a test connection: passt serves one client
    at a time, and a probe of ours still being closed holds the next client off.
    """
    assert proc.stderr is not None  # the summary is a log block: stderr
    deadline = time.monotonic() + timeout
    seen = b""
    while (m := _BOUND.search(seen)) is None or not seen.endswith(b"\n"):
        left = deadline - time.monotonic()
        assert left > 0, f"passt printed no socket path: {seen.decode(errors='replace')}"
        ready, _, _ = select.select([proc.stderr], [], [], left)
        if ready:
            chunk = os.read(proc.stderr.fileno(), 4096)
            assert chunk, f"passt printed no socket path: {seen.decode(errors='replace')}"
            seen += chunk
    return m.group(1).decode()


def run_on_terminal(argv: Sequence[str], timeout: float = 20.0) -> tuple[int, bytes]:
    """Run `argv` with a new pseudo-terminal as its controlling terminal; its exit code and what it printed.

    The exit status is waited for by itself (a pidfd): the terminal closing (EOF or EIO)
    only says that no process holds it any more, not that the started one has returned.
    """
    pid, fd = pty.fork()
    if pid == 0:  # child: the program, the pty its terminal
        os.execvp(argv[0], list(argv))
    exited = os.pidfd_open(pid)
    watched, output, status = [fd, exited], b"", None
    deadline = time.monotonic() + timeout
    try:
        while status is None and (left := deadline - time.monotonic()) > 0:
            for ready in select.select(watched, [], [], left)[0]:
                if ready == exited:
                    status = os.waitpid(pid, 0)[1]
                    continue
                try:
                    chunk = os.read(fd, 4096)
                except OSError:
                    chunk = b""
                if not chunk:
                    watched.remove(fd)
                output += chunk
        if status is None:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
            pytest.fail(f"{argv[0]} did not return to the terminal in {timeout:.0f} s: {output[-2000:]!r}")
        return os.waitstatus_to_exitcode(status), output
    finally:
        os.close(exited)
        os.close(fd)
