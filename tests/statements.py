"""Man-page statements in tests: the assertion helper and the pytest plugin that records outcomes.

docs/conformance.md is built from a test run, not from the test sources: a
statement is proven only when every test carrying its id ran and passed.
This module is the recording half (tools/conformance.py is the other):

    @pytest.mark.conformance("ID", ...)       on a test: the statements it proves
    assert_statement("ID", cond, "what")     the line that proves one of them

    pytest --conformance-results=FILE
        collection:  each test's ids go into item.user_properties, which
                     pytest-xdist ships back with every report
        reports:     the process that sees every report (the xdist
                     controller, or the only process) keeps, per test, the
                     worst outcome of setup/call/teardown and its ids
        session end: one JSON file with the commit, the date, the arguments
                     and {nodeid: {"outcome", "ids"}}

Workers write nothing: their reports reach the controller, so `-n 2` gives
one file like a plain run.  Without the option the plugin records nothing
(a developer's targeted run never overwrites the results CI's page is built
from).  Outcomes: "passed", "failed" (a failure or error in any phase, or an
expected failure: a statement that only xfails is not proven) and "skipped".
"""

from __future__ import annotations

import json
import subprocess
from datetime import UTC, datetime
from pathlib import Path
from typing import Final

import pytest

#: Version of the results file; tools/conformance.py refuses others.
RESULTS_FORMAT: Final = 1
#: Name of the user property carrying a test's ids (space-separated).
PROPERTY: Final = "conformance"
OPTION: Final = "--conformance-results"

#: Outcome precedence when a test reports several phases: the worst one wins.
_RANK: Final = {"passed": 0, "skipped": 1, "failed": 2}


def assert_statement(statement: str, cond: object, msg: str = "") -> None:
    """Assert `cond`, naming the man-page statement `statement` (a catalogue id) if it fails.

    tools/conformance.py finds these calls (first argument a string literal)
    and links each statement's row to the line that asserts it.
    """
    __tracebackhide__ = True
    if not cond:
        raise AssertionError(f"[{statement}] {msg}" if msg else f"[{statement}]")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(OPTION, metavar="FILE", default=None,
                     help="write each conformance-marked test's outcome to FILE (JSON), "
                          "for tools/conformance.py")


def pytest_itemcollected(item: pytest.Item) -> None:
    """Carry the test's ids in its user properties, so they reach the xdist controller."""
    ids = sorted({str(a) for m in item.iter_markers(name="conformance") for a in m.args})
    if ids:
        item.user_properties.append((PROPERTY, " ".join(ids)))


def outcome_of(report: pytest.TestReport) -> str:
    """passed / failed / skipped for one phase's report."""
    if report.failed:
        return "failed"
    if report.skipped:
        return "failed" if hasattr(report, "wasxfail") else "skipped"
    return "passed"


def _commit(root: Path) -> tuple[str, bool]:
    """(HEAD's commit, whether the work tree differs from it); ("unknown", False) outside git."""
    try:
        head = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True,
                              text=True, check=True, timeout=30).stdout.strip()
        status = subprocess.run(["git", "-C", str(root), "status", "--porcelain",
                                 "--untracked-files=no"], capture_output=True, text=True,
                                check=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return "unknown", False
    return head, bool(status.strip())


class Recorder:
    """Collects outcomes of the tests carrying ids and writes them at the end of the session."""

    def __init__(self, path: Path, root: Path, args: list[str]) -> None:
        self.path = path
        self.root = root
        self.args = args
        self.started = datetime.now(UTC)
        #: The commit tested: taken at the start, so a commit made during the run is not named.
        self.commit, self.dirty = _commit(root)
        self.tests: dict[str, dict[str, object]] = {}

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        ids = [str(v) for k, v in report.user_properties if k == PROPERTY]
        if not ids:
            return
        outcome = outcome_of(report)
        entry = self.tests.setdefault(report.nodeid, {"outcome": "passed", "ids": []})
        if _RANK[outcome] > _RANK[str(entry["outcome"])]:
            entry["outcome"] = outcome
        entry["ids"] = sorted(set(" ".join(ids).split()))

    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        data = {
            "format": RESULTS_FORMAT,
            "commit": self.commit,
            "dirty": self.dirty,
            "started": self.started.strftime("%Y-%m-%d %H:%M UTC"),
            "args": self.args,
            "exitstatus": int(exitstatus),
            "tests": dict(sorted(self.tests.items())),
        }
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")
        tmp.replace(self.path)


def pytest_configure(config: pytest.Config) -> None:
    target = config.getoption(OPTION)
    if not target or hasattr(config, "workerinput"):
        return  # not asked, or an xdist worker: the controller records
    path = Path(target)
    if not path.is_absolute():
        path = Path(config.invocation_params.dir) / path
    config.pluginmanager.register(
        Recorder(path, Path(config.rootpath), list(config.invocation_params.args)),
        "conformance-recorder")
