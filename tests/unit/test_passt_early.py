"""passt binds its socket before the heavy imports: the early scan of argv and its guard."""

from __future__ import annotations

import pytest

from passt import cli
from passt.config import Mode
from passt.passt_main import VALUE_LETTERS, early_socket_path


def test_value_letters_match_the_option_table() -> None:
    """The scan's list of value-taking letters is the passt options table's."""
    table = {o.short for o in cli.OPTIONS
             if o.short and o.arg is cli.Arg.REQUIRED and Mode.PASST in o.modes}
    assert set(VALUE_LETTERS) == table


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        ([], (True, None)),
        (["--one-off", "--socket", "/run/x.socket", "--pid", "/run/x.pid"], (True, "/run/x.socket")),
        (["--socket=/a"], (True, "/a")),
        (["-s", "/a"], (True, "/a")),
        (["-fs/a"], (True, "/a")),
        (["-qs", "/a", "-t", "22"], (True, "/a")),
        (["-m", "-s"], (True, None)),          # -s is -m's value; the full parse refuses it
        (["-P", "/p", "-t", "2280:80"], (True, None)),
        (["-F", "5"], (False, None)),
        (["--fd=5"], (False, None)),
        (["-fh"], (False, None)),
        (["--version"], (False, None)),
        (["-s"], (False, None)),
        (["-s", "/a", "-p"], (False, None)),   # the capture file comes before the socket
        (["-fp/tmp/x.pcap"], (False, None)),
        (["--pcap=/tmp/x.pcap", "-s", "/a"], (False, None)),
    ],
)
def test_early_socket_path(argv: list[str], expected: tuple[bool, str | None]) -> None:
    assert early_socket_path(argv) == expected
