"""Log lines never reach stdout; the summary block reaches stderr; -l FILE is bounded."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from passt import log


@pytest.fixture(autouse=True)
def _reset() -> Iterator[None]:
    yield
    log._file = None  # noqa: SLF001 - module state between tests
    log._file_limit = None  # noqa: SLF001


def test_block_and_messages_go_to_stderr_never_stdout(capsys: pytest.CaptureFixture[str]) -> None:
    log.setup("pasta", interactive=False)
    log.block("Outbound interface: eth0\nARP:\n    address: 9a:55:9a:55:9a:55\n")
    log.info("DHCP: ack to request")
    log.debug("not shown without -d")
    out, err = capsys.readouterr()
    assert out == ""
    assert err == ("Outbound interface: eth0\nARP:\n    address: 9a:55:9a:55:9a:55\n"
                   "pasta: DHCP: ack to request\n")


def test_quiet_silences_the_block(capsys: pytest.CaptureFixture[str]) -> None:
    log.setup("passt", quiet=True, interactive=False)
    log.block("Outbound interface: eth0\n")
    assert capsys.readouterr() == ("", "")


def test_trace_implies_debug() -> None:
    log.setup("passt", trace=True, interactive=True)
    assert log.debug_enabled and log.trace_enabled
    log.setup("passt", interactive=True)
    assert not log.debug_enabled and not log.trace_enabled


def test_log_file_bounded_by_log_size(tmp_path: Path) -> None:
    path = tmp_path / "passt.log"
    log.setup("passt", log_file=str(path), log_size=4096, interactive=True)
    for i in range(500):
        log.info(f"line {i:04d} " + "x" * 40)
    data = path.read_bytes()
    assert len(data) <= 4096
    lines = data.decode().splitlines()
    assert lines[-1].endswith("line 0499 " + "x" * 40)
    assert all(" passt[" in line and ": line " in line for line in lines)  # whole lines only
