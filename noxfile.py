"""Test sessions: `nox` runs lint, typecheck, unit and integration.

`nox -s perf` runs the throughput gates, `nox -s fuzz` the full fuzzing count.
Integration and perf need root (namespaces, tap devices, QEMU).  unit,
integration and perf record which man-page statements their tests prove
(tests/statements.py) in build/conformance/<session>.json; `nox -s
conformance` builds docs/conformance.md from the last of those runs and fails
unless every statement passed.
"""

from __future__ import annotations

import nox

nox.options.sessions = ["lint", "typecheck", "unit", "integration"]
nox.options.reuse_existing_virtualenvs = True

PYTHON = "3.11"
SOURCES = ["src", "harness", "tests", "tools", "noxfile.py"]


def _install(session: nox.Session) -> None:
    session.install("-e", ".[test]")


#: Where each test session records its conformance outcomes (tools/conformance.py reads them).
RESULTS_DIR = "build/conformance"


def _results(session: nox.Session) -> str:
    """The pytest option recording this session's outcomes, replacing its previous results."""
    return f"--conformance-results={RESULTS_DIR}/{session.name}.json"


@nox.session(python=PYTHON)
def lint(session: nox.Session) -> None:
    """ruff over the whole tree."""
    session.install("ruff>=0.5")
    session.run("ruff", "check", *SOURCES)


@nox.session(python=PYTHON)
def typecheck(session: nox.Session) -> None:
    """mypy --strict over src/, harness/, tools/ and tests/."""
    _install(session)
    session.run("mypy", "--strict", "src/passt", "harness", "tools", "tests")


@nox.session(python=PYTHON)
def unit(session: nox.Session) -> None:
    """Unit tests: sans-IO services, wire formats, flows against loopback."""
    _install(session)
    session.run("pytest", "-n", "auto", "-q", _results(session), "tests/unit", *session.posargs)


@nox.session(python=PYTHON)
def integration(session: nox.Session) -> None:
    """Real clients in throwaway namespaces and QEMU guests (root)."""
    _install(session)
    session.run("pytest", "-n", "2", "--dist", "loadgroup", "-q", _results(session),
                "tests/integration", *session.posargs)


@nox.session(python=PYTHON)
def perf(session: nox.Session) -> None:
    """Throughput gates against baselines measured in the same run (root)."""
    _install(session)
    session.run("pytest", "-q", "-s", _results(session), "tests/perf", *session.posargs)


@nox.session(python=PYTHON)
def conformance(session: nox.Session) -> None:
    """docs/conformance.md from the last unit/integration/perf results; fails unless all pass."""
    session.run("python", "tools/conformance.py", "--write", "--require-pass",
                "--results", RESULTS_DIR, *session.posargs)


#: Full counts for `nox -s fuzz` (the unit and integration sessions use small defaults:
#: 20,000 frames per mode, 10,000 frames and 20,000-strong floods against the programs).
FUZZ_ENV = {
    "PASST_FUZZ_COUNT": "1000000",
    "PASST_HOSTILE_FUZZ_COUNT": "1000000",
    "PASST_FLOOD_COUNT": "100000",
    "PASST_INTEGRITY_MIB": "1024",
}


@nox.session(python=PYTHON)
def fuzz(session: nox.Session) -> None:
    """The full fuzzing counts: the frame handler (unit), then the running programs (root)."""
    _install(session)
    session.run("pytest", "-q", "tests/unit", "-k", "fuzz", env=FUZZ_ENV)
    session.run("pytest", "-q", "-s", "tests/integration/test_hostile.py", "-k", "fuzz or flood or storm",
                *session.posargs, env=FUZZ_ENV)
