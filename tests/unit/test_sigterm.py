"""A test run stopped with SIGTERM still tears its fixtures down (tests/sigterm.py)."""

from __future__ import annotations

import os
import selectors
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

#: A test whose fixture records its teardown, and which waits to be stopped.
CHILD = '''
import time
import pytest

@pytest.fixture
def resource():
    yield
    open({marker!r}, "w").write("torn down")

def test_waits(resource):
    print("READY", flush=True)
    time.sleep(60)
'''


def _wait_for_line(proc: subprocess.Popen[str], word: str, timeout: float) -> None:
    assert proc.stdout is not None
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    deadline = time.monotonic() + timeout
    seen = []
    while time.monotonic() < deadline:
        if not sel.select(deadline - time.monotonic()):
            break
        line = proc.stdout.readline()
        if not line:
            break
        seen.append(line)
        if line.strip().endswith(word):
            return
    raise AssertionError(f"child never printed {word}: {''.join(seen)[-2000:]}")


@pytest.mark.parametrize("plugin", [True, False], ids=["with-plugin", "default-python"])
def test_sigterm_runs_fixture_teardown(tmp_path: Path, plugin: bool) -> None:
    """With the plugin, SIGTERM unwinds like Ctrl-C (teardown runs, exit 2); without it, Python dies at once."""
    marker = tmp_path / "marker"
    test_file = tmp_path / "test_child.py"
    test_file.write_text(CHILD.format(marker=str(marker)))
    argv = [sys.executable, "-m", "pytest", "-s", "-q", "-p", "no:cacheprovider", "--rootdir", str(tmp_path)]
    if plugin:
        argv += ["-p", "tests.sigterm"]
    env = dict(os.environ, PYTHONPATH=str(REPO), PYTEST_DISABLE_PLUGIN_AUTOLOAD="1")
    with subprocess.Popen(argv + [str(test_file)], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True) as proc:
        try:
            _wait_for_line(proc, "READY", 60)
            proc.send_signal(signal.SIGTERM)
            out, _ = proc.communicate(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
    if plugin:
        assert proc.returncode == pytest.ExitCode.INTERRUPTED, out
        assert marker.read_text() == "torn down", out
    else:
        assert proc.returncode == -signal.SIGTERM, out
        assert not marker.exists()
