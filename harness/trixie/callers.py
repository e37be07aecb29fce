"""Point the callers at ours or at C's programs, recording the argv each passes.

Inside the root, ``/opt/callers/bin`` (the session's ``shared/bin``) holds one wrapper per
program: a shell script that appends its argv, one tab-separated line, to
``/shared/argv/NAME.log`` and then execs the real program, ours (the project's venv) or trixie's
C one. Podman finds it first because containers.conf lists that directory first in
``helper_binaries_dir``; libvirtd looks passt up in its PATH, which the tests start it with.
"""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Final

from harness.trixie.root import VENV

ARGV_DIR: Final = "argv"
"""Below the session's shared directory: one log of argv per wrapped program."""


class Impl(Enum):
    """Whose passt/pasta the callers start: trixie's C package (the control) or ours."""

    C = "c"
    OURS = "ours"

    def binary(self, name: str) -> str:
        """The real program's path inside the root."""
        return f"/usr/bin/{name}" if self is Impl.C else f"{VENV}/bin/{name}"


def install_wrappers(shared: Path, impl: Impl, names: tuple[str, ...] = ("passt", "pasta")) -> None:
    """Write the recording wrappers for `names` into ``shared/bin``, pointing at `impl`."""
    logs = shared / ARGV_DIR
    logs.mkdir(exist_ok=True)
    logs.chmod(0o1777)
    for name in names:
        log = logs / f"{name}.log"
        log.touch()
        log.chmod(0o666)
        script = shared / "bin" / name
        script.write_text(
            "#!/bin/sh\n"
            f"# harness/trixie: record the argv, then run {impl.value}'s {name}\n"
            f"{{ printf '%s' \"$0\"; for a in \"$@\"; do printf '\\t%s' \"$a\"; done; echo; }} >> /shared/{ARGV_DIR}/{name}.log\n"
            f"exec {impl.binary(name)} \"$@\"\n"
        )
        script.chmod(0o755)


def recorded(shared: Path, name: str) -> list[list[str]]:
    """Every argv recorded for `name`, oldest first (argv[0] is the wrapper's path)."""
    try:
        text = (shared / ARGV_DIR / f"{name}.log").read_text()
    except FileNotFoundError:
        return []
    return [line.split("\t") for line in text.splitlines() if line]
