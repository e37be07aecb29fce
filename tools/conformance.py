#!/usr/bin/env python3
"""Generate docs/conformance.md: which man-page statements the last test run proved.

Three inputs, one output:

    docs/conformance_catalogue.toml   every checkable statement of passt(1), with
                                      a stable id, its section, a one-line
                                      paraphrase and, where the page is silent or
                                      wrong, our decision
    tests/**/test_*.py                @pytest.mark.conformance("ID", ...) markers
                                      and assert_statement("ID", ...) lines
    build/conformance/*.json          outcomes of a run (tests/statements.py,
                                      `pytest --conformance-results=FILE`)
            |
            v
    docs/conformance.md               per section: statement | id | tests | status

A statement **passes** only if every test carrying its id (or one of its
`see` ids) ran in the recorded run and passed.  Otherwise it is **fail** (a
test failed or errored), **not run** (a test in the sources has no outcome:
deselected, not collected, or added after the run), **skipped**, or **no
test** (no test carries the id).  So a deleted test, a skip or a regression
each turn the row, and `--require-pass`, red.

The tests are read with `ast`, never imported: importing them would need
scapy, root or QEMU, and a syntax error in one file must not hide the rest.
The scan gives each test's file and line (for the links) and tells which
tests exist, so one that never ran is seen.  What counts as a marker
(anywhere `pytest.mark.conformance(...)`, or any dotted name ending in
`mark.conformance`, is called with string literals):

* a decorator of a `test_*` function, or of a `Test*` class (it then applies
  to every test in the class, nested classes included);
* inside another decorator, e.g. `pytest.param(..., marks=...)` in a
  `parametrize` list: it applies to the decorated test;
* `pytestmark = ...` at module level (every test of the module) or in a class
  body (every test of the class).

Asserting lines: a call `assert_statement("ID", ...)` or an `assert` whose
message starts with `[ID]` or `[ID, ID]` (a string or f-string).  In a test, such a line
must name an id the test carries.

Files follow pytest's default discovery (`test_*.py`, `*_test.py`); tests
are `test*` functions and methods of `Test*` classes, as pytest collects them.

    python tools/conformance.py                 print the page
    python tools/conformance.py --write         (re)write docs/conformance.md
    python tools/conformance.py --require-pass  ... and exit 1 unless all pass
    python tools/conformance.py --check         exit 1 if markers are inconsistent
                                                (unknown ids, unreadable markers,
                                                statements without a test)
    python tools/conformance.py --tests-of ID   the tests carrying ID (or a `see` id),
                                                one node id a line, for pytest's command line
    python tools/conformance.py --row ID --results DIR
                                                ID's status in that run and each
                                                test's outcome, one line (no page)

The last two serve docs/proofs-broken-on-purpose.md: break a behaviour, run
the tests of its row into a scratch folder, see the row turn fail.
"""

from __future__ import annotations

import argparse
import ast
import json
import re
import sys
import tomllib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

#: Repository root: this file lives in <root>/tools/.
ROOT: Final = Path(__file__).resolve().parent.parent
CATALOGUE_PATH: Final = "docs/conformance_catalogue.toml"
OUTPUT_PATH: Final = "docs/conformance.md"
TESTS_DIR: Final = "tests"
UNIT_DIR: Final = "tests/unit"

#: What an id may look like: lower case, dotted, stable.
ID_RE: Final = re.compile(r"^[a-z0-9][a-z0-9_-]*(\.[a-z0-9_-]+)*$")


_STATEMENT_KEYS: Final = frozenset({"id", "section", "text", "decision", "see"})
_REQUIRED_KEYS: Final = frozenset({"id", "section", "text"})


class CatalogueError(Exception):
    """The catalogue file is malformed; the message says where and what."""


@dataclass(frozen=True, slots=True)
class Statement:
    """One checkable claim of the man page."""

    id: str
    #: Man-page section it comes from, one of `Catalogue.sections`.
    section: str
    #: The claim, paraphrased in one line.
    text: str
    #: What we do where the page is silent, ambiguous or wrong; "" if nothing to say.
    decision: str = ""
    #: Ids whose tests also prove this statement.
    see: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Catalogue:
    """All statements, in file order, and the sections in report order."""

    sections: tuple[str, ...]
    statements: tuple[Statement, ...]

    def ids(self) -> frozenset[str]:
        """Every statement id."""
        return frozenset(s.id for s in self.statements)


@dataclass(frozen=True, slots=True, order=True)
class TestRef:
    """A test carrying a conformance marker."""

    #: pytest node id relative to the repository root: "tests/unit/x.py::TestA::test_b".
    nodeid: str
    #: First line of the test's docstring, "" without one.
    doc: str = field(compare=False)
    #: Line of its `def` in the file.
    line: int = field(default=0, compare=False)

    @property
    def path(self) -> str:
        """The test's file, relative to the repository root."""
        return self.nodeid.split("::", 1)[0]

    @property
    def unit(self) -> bool:
        """Is this a unit test (under tests/unit)?"""
        return self.nodeid.startswith(UNIT_DIR + "/")


@dataclass(slots=True)
class ScanResult:
    """What the scan of the test tree found."""

    #: id -> tests marked with it (sorted, no duplicates once `finish`ed).
    marks: dict[str, list[TestRef]] = field(default_factory=dict)
    #: Human-readable problems: unparsable files, non-literal ids.
    problems: list[str] = field(default_factory=list)
    #: id -> (file, line) of every line asserting it (assert_statement or "[ID]" messages).
    asserts: dict[str, list[tuple[str, int]]] = field(default_factory=dict)

    def add(self, conf_id: str, ref: TestRef) -> None:
        """Record that `ref` proves `conf_id`."""
        self.marks.setdefault(conf_id, []).append(ref)

    def finish(self) -> None:
        """Sort and deduplicate, so that output doesn't depend on scan order."""
        for conf_id, refs in self.marks.items():
            self.marks[conf_id] = sorted(set(refs))
        for conf_id, lines in self.asserts.items():
            self.asserts[conf_id] = sorted(set(lines))
        self.problems.sort()


# ------------------------------------------------------------------------ catalogue


def _str_field(entry: dict[str, object], key: str, where: str) -> str:
    """A one-line, non-empty string field of a statement."""
    value = entry.get(key, "")
    if not isinstance(value, str):
        raise CatalogueError(f"{where}: '{key}' must be a string")
    if "\n" in value:
        raise CatalogueError(f"{where}: '{key}' must be one line")
    return value.strip()


def parse_catalogue(text: str, source: str = CATALOGUE_PATH) -> Catalogue:
    """Parse and validate catalogue TOML; raises CatalogueError naming the first fault."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise CatalogueError(f"{source}: {e}") from None
    sections_raw = data.get("sections")
    if not isinstance(sections_raw, list) or not all(isinstance(s, str) for s in sections_raw):
        raise CatalogueError(f"{source}: 'sections' must be a list of strings")
    sections = tuple(str(s) for s in sections_raw)
    if len(set(sections)) != len(sections):
        raise CatalogueError(f"{source}: duplicate entry in 'sections'")
    entries = data.get("statement")
    if not isinstance(entries, list) or not entries:
        raise CatalogueError(f"{source}: no [[statement]] entries")

    statements: list[Statement] = []
    seen: set[str] = set()
    for n, entry in enumerate(entries, 1):
        where = f"{source}: statement #{n}"
        if not isinstance(entry, dict):
            raise CatalogueError(f"{where}: not a table")
        unknown = set(entry) - _STATEMENT_KEYS
        if unknown:
            raise CatalogueError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}")
        missing = _REQUIRED_KEYS - set(entry)
        if missing:
            raise CatalogueError(f"{where}: missing key(s) {', '.join(sorted(missing))}")
        conf_id = _str_field(entry, "id", where)
        where = f"{source}: statement '{conf_id}'"
        if not ID_RE.match(conf_id):
            raise CatalogueError(f"{where}: id must be lower-case dotted words")
        if conf_id in seen:
            raise CatalogueError(f"{where}: duplicate id")
        seen.add(conf_id)
        section = _str_field(entry, "section", where)
        if section not in sections:
            raise CatalogueError(f"{where}: section '{section}' is not in 'sections'")
        text_ = _str_field(entry, "text", where)
        if not text_:
            raise CatalogueError(f"{where}: empty text")
        see_raw = entry.get("see", [])
        if not isinstance(see_raw, list) or not all(isinstance(s, str) for s in see_raw):
            raise CatalogueError(f"{where}: 'see' must be a list of ids")
        statements.append(Statement(
            id=conf_id,
            section=section,
            text=text_,
            decision=_str_field(entry, "decision", where),
            see=tuple(str(s) for s in see_raw),
        ))
    for st in statements:
        for other in st.see:
            if other not in seen or other == st.id:
                raise CatalogueError(f"{source}: statement '{st.id}': bad 'see' id '{other}'")
    return Catalogue(sections=sections, statements=tuple(statements))


def load_catalogue(path: Path) -> Catalogue:
    """Read and validate the catalogue file."""
    return parse_catalogue(path.read_text(encoding="utf-8"), source=path.name)


# ---------------------------------------------------------------------- test scanner


def _dotted(node: ast.expr) -> str:
    """`a.b.c` for a Name/Attribute chain, "" for anything else."""
    parts: list[str] = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        return ""
    parts.append(node.id)
    return ".".join(reversed(parts))


def _is_conformance(call: ast.Call) -> bool:
    """Is this call `pytest.mark.conformance(...)` (or `<x>.mark.conformance(...)`)?"""
    name = _dotted(call.func)
    return name == "mark.conformance" or name.endswith(".mark.conformance")


def _ids_in(node: ast.AST, where: str, problems: list[str]) -> list[str]:
    """Conformance ids in every marker call found anywhere inside `node`."""
    ids: list[str] = []
    for sub in ast.walk(node):
        if not (isinstance(sub, ast.Call) and _is_conformance(sub)):
            continue
        line = f"{where}:{sub.lineno}"
        if not sub.args:
            problems.append(f"{line}: conformance marker without ids")
        if sub.keywords:
            problems.append(f"{line}: conformance marker takes no keyword arguments")
        for arg in sub.args:
            if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                ids.append(arg.value)
            else:
                problems.append(f"{line}: conformance id is not a string literal")
    return ids


def _pytestmark_ids(body: Sequence[ast.stmt], where: str, problems: list[str]) -> list[str]:
    """Ids from `pytestmark = ...` (or an annotated assignment) among `body`'s statements."""
    ids: list[str] = []
    for stmt in body:
        value: ast.expr | None = None
        if isinstance(stmt, ast.Assign):
            if any(isinstance(t, ast.Name) and t.id == "pytestmark" for t in stmt.targets):
                value = stmt.value
        elif isinstance(stmt, ast.AnnAssign):
            if isinstance(stmt.target, ast.Name) and stmt.target.id == "pytestmark":
                value = stmt.value
        if value is not None:
            ids.extend(_ids_in(value, where, problems))
    return ids


def _first_doc_line(node: ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef) -> str:
    """First non-empty line of the docstring, "" without one."""
    doc = ast.get_docstring(node)
    if not doc:
        return ""
    for line in doc.splitlines():
        if line.strip():
            return line.strip()
    return ""


def _decorator_ids(
    node: ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef, where: str, problems: list[str]
) -> list[str]:
    ids: list[str] = []
    for deco in node.decorator_list:
        ids.extend(_ids_in(deco, where, problems))
    return ids


def _walk_tests(
    body: Sequence[ast.stmt], prefix: str, inherited: list[str], where: str, problems: list[str]
) -> Iterator[tuple[str, ast.FunctionDef | ast.AsyncFunctionDef, list[str]]]:
    """(nodeid, function, ids) for every collectable test in `body`."""
    for stmt in body:
        if isinstance(stmt, ast.FunctionDef | ast.AsyncFunctionDef):
            own = _decorator_ids(stmt, where, problems)
            if stmt.name.startswith("test"):
                yield f"{prefix}::{stmt.name}", stmt, inherited + own
            elif own:
                problems.append(
                    f"{where}:{stmt.lineno}: conformance marker on '{stmt.name}', "
                    "which pytest does not collect as a test")
        elif isinstance(stmt, ast.ClassDef):
            own = _decorator_ids(stmt, where, problems)
            own += _pytestmark_ids(stmt.body, where, problems)
            if stmt.name.startswith("Test"):
                yield from _walk_tests(
                    stmt.body, f"{prefix}::{stmt.name}", inherited + own, where, problems)
            elif own:
                problems.append(
                    f"{where}:{stmt.lineno}: conformance marker on class '{stmt.name}', "
                    "which pytest does not collect")


def scan_source(source: str, rel: str, result: ScanResult) -> None:
    """Add the markers of one test module (`rel`: its path relative to the root) to `result`."""
    try:
        tree = ast.parse(source, filename=rel)
    except SyntaxError as e:
        result.problems.append(f"{rel}:{e.lineno}: does not parse: {e.msg}")
        return
    module_ids = _pytestmark_ids(tree.body, rel, result.problems)
    for conf_id, line in _asserted(tree):
        result.asserts.setdefault(conf_id, []).append((rel, line))
    for nodeid, func, ids in _walk_tests(tree.body, rel, module_ids, rel, result.problems):
        ref = TestRef(nodeid=nodeid, doc=_first_doc_line(func), line=func.lineno)
        for conf_id in ids:
            result.add(conf_id, ref)
        carried = set(ids)
        for conf_id, line in _asserted(func):
            if conf_id not in carried:
                result.problems.append(
                    f"{rel}:{line}: asserts '{conf_id}' but {nodeid.split('::', 1)[1]} "
                    "does not carry that conformance id")


#: An assertion message naming its statements: "[ID] ..." or "[ID, ID] ...".
_MSG_ID_RE: Final = re.compile(r"^\[([a-z0-9][a-z0-9_.-]*(?:, *[a-z0-9][a-z0-9_.-]*)*)\]")


def _message_ids(msg: ast.expr | None) -> list[str]:
    """The ids an assert message starts with, in brackets (string or f-string); [] if none."""
    if isinstance(msg, ast.JoinedStr) and msg.values:
        msg = msg.values[0]
    if isinstance(msg, ast.Constant) and isinstance(msg.value, str):
        m = _MSG_ID_RE.match(msg.value)
        if m:
            return [i.strip() for i in m.group(1).split(",")]
    return []


def _asserted(node: ast.AST) -> Iterator[tuple[str, int]]:
    """(id, line) of each statement-naming assertion inside `node`."""
    for sub in ast.walk(node):
        if isinstance(sub, ast.Assert):
            for conf_id in _message_ids(sub.msg):
                yield conf_id, sub.lineno
        elif isinstance(sub, ast.Call):
            name = _dotted(sub.func)
            if (name == "assert_statement" or name.endswith(".assert_statement")) and sub.args:
                first = sub.args[0]
                if isinstance(first, ast.Constant) and isinstance(first.value, str):
                    yield first.value, sub.lineno


def _is_test_file(path: Path) -> bool:
    """pytest's default python_files: test_*.py and *_test.py."""
    return path.suffix == ".py" and (path.name.startswith("test_") or path.stem.endswith("_test"))


def find_test_files(root: Path) -> list[Path]:
    """Every test module under root/tests, sorted."""
    tests = root / TESTS_DIR
    if not tests.is_dir():
        return []
    return sorted(p for p in tests.rglob("*.py") if _is_test_file(p) and p.is_file())


def scan_tests(root: Path, files: Iterable[Path] | None = None) -> ScanResult:
    """Scan `files` (default: every test module under root/tests) for conformance markers."""
    result = ScanResult()
    for path in find_test_files(root) if files is None else files:
        rel = path.resolve().relative_to(root.resolve()).as_posix()
        try:
            source = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            result.problems.append(f"{rel}: unreadable: {e}")
            continue
        scan_source(source, rel, result)
    result.finish()
    return result



# -------------------------------------------------------------------------- results

#: The results file format tests/statements.py writes.
RESULTS_FORMAT: Final = 1
PASSED: Final = "passed"
FAILED: Final = "failed"
SKIPPED: Final = "skipped"
NOT_RUN: Final = "not run"
_OUTCOMES: Final = (PASSED, FAILED, SKIPPED)
_RANK: Final = {PASSED: 0, SKIPPED: 1, FAILED: 2}


@dataclass(frozen=True, slots=True)
class Run:
    """One pytest session's results file."""

    #: File name, e.g. "unit.json".
    name: str
    commit: str
    dirty: bool
    #: When the session started, "YYYY-MM-DD HH:MM UTC".
    started: str
    exitstatus: int
    #: Tests recorded (those carrying ids).
    count: int


@dataclass(slots=True)
class Results:
    """Outcomes of every recorded test, merged over the runs."""

    runs: list[Run] = field(default_factory=list)
    #: nodeid (with parameters) -> (outcome, ids).
    tests: dict[str, tuple[str, frozenset[str]]] = field(default_factory=dict)

    def add(self, nodeid: str, outcome: str, ids: frozenset[str]) -> None:
        """Record one test; a test recorded twice keeps its worst outcome and all its ids."""
        old = self.tests.get(nodeid)
        if old is not None:
            if _RANK[old[0]] > _RANK[outcome]:
                outcome = old[0]
            ids = ids | old[1]
        self.tests[nodeid] = (outcome, ids)


class ResultsError(Exception):
    """A results file is unreadable or not in the expected format."""


def parse_results(text: str, name: str, into: Results) -> None:
    """Add one results file's content to `into`; raises ResultsError naming the fault."""
    try:
        data = json.loads(text)
    except ValueError as e:
        raise ResultsError(f"{name}: not JSON: {e}") from None
    if not isinstance(data, dict) or data.get("format") != RESULTS_FORMAT:
        raise ResultsError(f"{name}: not a format-{RESULTS_FORMAT} conformance results file")
    tests = data.get("tests")
    if not isinstance(tests, dict):
        raise ResultsError(f"{name}: 'tests' must be an object")
    for nodeid, entry in tests.items():
        outcome = entry.get("outcome") if isinstance(entry, dict) else None
        ids = entry.get("ids") if isinstance(entry, dict) else None
        if outcome not in _OUTCOMES or not isinstance(ids, list) or not all(
                isinstance(i, str) for i in ids):
            raise ResultsError(f"{name}: bad entry for {nodeid}")
        into.add(str(nodeid), str(outcome), frozenset(ids))
    into.runs.append(Run(name=name, commit=str(data.get("commit", "unknown")),
                         dirty=bool(data.get("dirty", False)),
                         started=str(data.get("started", "unknown")),
                         exitstatus=int(data.get("exitstatus", -1)), count=len(tests)))


def load_results(paths: Iterable[Path]) -> Results:
    """Merge results files (in name order, for a deterministic page)."""
    results = Results()
    for path in sorted(paths, key=lambda p: p.name):
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as e:
            raise ResultsError(f"{path.name}: unreadable: {e}") from None
        parse_results(text, path.name, results)
    return results


def _base(nodeid: str) -> str:
    """A node id without its parameters: "f.py::test_x[a-b]" -> "f.py::test_x"."""
    return nodeid.split("[", 1)[0]


# ------------------------------------------------------------------------ verdicts

PASS: Final = "pass"
FAIL: Final = "fail"
SKIP: Final = "skipped"
NOT_RUN_STATUS: Final = "not run"
NO_TEST: Final = "no test"
#: Statuses in report order (the summary's columns).
STATUSES: Final = (PASS, FAIL, NOT_RUN_STATUS, SKIP, NO_TEST)


@dataclass(frozen=True, slots=True)
class Proof:
    """One test of a statement and what the run says of it."""

    ref: TestRef
    #: passed / failed / skipped / not run (worst over its parameters).
    outcome: str
    #: Through which id it proves the statement (the statement's own, or a `see` id).
    via: str


def unknown_ids(catalogue: Catalogue, scan: ScanResult) -> list[str]:
    """Ids used by tests or assertions that the catalogue doesn't define, sorted."""
    known = catalogue.ids()
    return sorted(i for i in set(scan.marks) | set(scan.asserts) if i not in known)


def proofs_of(st: Statement, scan: ScanResult, results: Results) -> list[Proof]:
    """Every test carrying the statement's id (or a `see` id), with its outcome in the run.

    The sources decide which tests prove a statement (so one that never ran
    is seen, and a deleted one is gone even from stale results); the run
    gives their outcomes, matched on the id (a parametrised case whose
    parameter carries the id counts, its siblings don't).
    """
    by_base: dict[str, list[tuple[str, frozenset[str]]]] = {}
    for nodeid, (outcome, ids) in results.tests.items():
        by_base.setdefault(_base(nodeid), []).append((outcome, ids))
    proofs: dict[str, Proof] = {}
    for via in (st.id, *st.see):
        for ref in scan.marks.get(via, ()):
            base = ref.nodeid
            if base in proofs:
                continue
            outcomes = [o for o, ids in by_base.get(base, ()) if via in ids]
            if not outcomes:
                outcome = NOT_RUN
            else:
                outcome = max(outcomes, key=lambda o: _RANK[o])
            proofs[base] = Proof(ref=ref, outcome=outcome, via=via)
    return [proofs[k] for k in sorted(proofs)]


def status_of(proofs: Sequence[Proof]) -> str:
    """pass only if there are tests and every one passed; else the worst thing that happened."""
    outcomes = {p.outcome for p in proofs}
    if not outcomes:
        return NO_TEST
    if FAILED in outcomes:
        return FAIL
    if NOT_RUN in outcomes:
        return NOT_RUN_STATUS
    if SKIPPED in outcomes:
        return SKIP
    return PASS


# ------------------------------------------------------------------------ rendering


def _cell(text: str) -> str:
    """Make text safe inside a Markdown table cell."""
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ").strip()


def _link(path: str, line: int, label: str) -> str:
    """A link from docs/ to a line of a file under the root."""
    return f"[{label}](../{path}#L{line})"


def _tests_cell(st: Statement, proofs: Sequence[Proof], scan: ScanResult) -> str:
    lines: list[str] = []
    for p in proofs:
        name = p.ref.nodeid.split("::", 1)[-1]
        where = f"{p.ref.path}:{p.ref.line}" if p.ref.line else p.ref.path
        text = (_link(p.ref.path, p.ref.line, f"`{where}`") if p.ref.line
                else f"`{where}`") + f" {_cell(name)}: {p.outcome}"
        if p.via != st.id:
            text += f" (via `{p.via}`)"
        lines.append(text)
    asserts = sorted({a for i in (st.id, *st.see) for a in scan.asserts.get(i, ())})
    if asserts:
        lines.append("asserted at " + ", ".join(
            _link(path, line, f"{Path(path).name}:{line}") for path, line in asserts))
    return "<br>".join(lines) if lines else "none"


def _anchor(title: str) -> str:
    """GitHub-style heading anchor."""
    slug = re.sub(r"[^\w\- ]", "", title.lower()).replace(" ", "-")
    return slug


def verdicts(catalogue: Catalogue, scan: ScanResult,
             results: Results) -> dict[str, tuple[str, list[Proof]]]:
    """id -> (status, proofs) for every statement."""
    out: dict[str, tuple[str, list[Proof]]] = {}
    for st in catalogue.statements:
        proofs = proofs_of(st, scan, results)
        out[st.id] = (status_of(proofs), proofs)
    return out


def render(catalogue: Catalogue, scan: ScanResult, results: Results) -> str:
    """The whole of docs/conformance.md."""
    out: list[str] = []
    w = out.append
    verdict = verdicts(catalogue, scan, results)

    w("# Conformance to passt(1)")
    w("")
    w("<!-- Generated by tools/conformance.py from a test run: do not edit by hand. -->")
    w("")
    w("Every statement of the man page (`passt.1`) that a user could check is listed in "
      f"`{CATALOGUE_PATH}` with a stable id. Tests that prove a statement carry "
      '`@pytest.mark.conformance("ID", ...)`, and the lines that assert it name it '
      '(`assert_statement("ID", ...)` or a message starting `[ID]`). '
      "`tests/statements.py` records each such test's outcome in a run "
      "(`pytest --conformance-results=FILE`); `tools/conformance.py` joins the catalogue, "
      "the markers found in the sources and those outcomes into this page.")
    w("")
    w("Built by `nox -s conformance` from the last `nox -s unit integration perf` run "
      "(`scripts/test-all` runs both, and fails unless every statement passes). "
      "Status: **pass**: every test carrying the id ran and passed; **fail**: one failed; "
      "**not run**: one is in the sources but not in the run; **skipped**: one was skipped; "
      "**no test**: no test carries the id. Tests marked *via* another id prove the same "
      "claim, made twice by the page.")
    w("")
    w("## Run")
    w("")
    if not results.runs:
        w("No results: no test run was recorded.")
    else:
        w("| results | commit | started | tests recorded | pytest exit status |")
        w("|---|---|---|---:|---:|")
        for run in results.runs:
            commit = run.commit[:12] + (" (uncommitted changes)" if run.dirty else "")
            w(f"| `{run.name}` | `{commit}` | {run.started} | {run.count} | {run.exitstatus} |")
        if len({r.commit for r in results.runs}) > 1:
            w("")
            w("**The runs are of different commits.**")
    w("")

    w("## Summary")
    w("")
    w("| section | " + " | ".join(STATUSES) + " | total |")
    w("|---|" + "---:|" * (len(STATUSES) + 1))
    totals = dict.fromkeys(STATUSES, 0)
    for section in catalogue.sections:
        in_section = [s for s in catalogue.statements if s.section == section]
        counts = [sum(1 for s in in_section if verdict[s.id][0] == k) for k in STATUSES]
        for k, c in zip(STATUSES, counts, strict=True):
            totals[k] += c
        w(f"| [{_cell(section)}](#{_anchor(section)}) | "
          + " | ".join(str(c) for c in counts) + f" | {len(in_section)} |")
    w("| **all** | " + " | ".join(f"**{totals[k]}**" for k in STATUSES)
      + f" | **{len(catalogue.statements)}** |")
    w("")
    n_tests = len({r.nodeid for refs in scan.marks.values() for r in refs})
    w(f"{len(catalogue.statements)} statements; {n_tests} tests carry conformance markers.")
    w("")

    for section in catalogue.sections:
        in_section = [s for s in catalogue.statements if s.section == section]
        if not in_section:
            continue
        w(f"## {section}")
        w("")
        w("| statement | id | tests | status |")
        w("|---|---|---|---|")
        for st in in_section:
            status, proofs = verdict[st.id]
            text = _cell(st.text) + (" (see Decisions)" if st.decision else "")
            w(f"| {text} | `{st.id}` | {_tests_cell(st, proofs, scan)} | {status} |")
        w("")

    w("## Decisions")
    w("")
    w("Where the page is silent, ambiguous or wrong, this is what we do.")
    w("")
    for st in catalogue.statements:
        if st.decision:
            w(f"- `{st.id}` ({st.section}): {st.decision}")
    w("")

    w("## Unknown ids")
    w("")
    unknown = unknown_ids(catalogue, scan)
    if not unknown and not scan.problems:
        w("None: every id used by a test is in the catalogue.")
    for conf_id in unknown:
        users = [f"`{r.nodeid}`" for r in scan.marks.get(conf_id, ())]
        users += [f"`{p}:{n}`" for p, n in scan.asserts.get(conf_id, ())]
        w(f"- `{conf_id}`: used by {', '.join(users)}")
    for problem in scan.problems:
        w(f"- problem: {problem}")
    w("")
    return "\n".join(out)


# ---------------------------------------------------------------------- entry point

#: Where the test sessions write their results (noxfile.py passes these paths).
RESULTS_DIR: Final = "build/conformance"


def consistency(catalogue: Catalogue, scan: ScanResult) -> list[str]:
    """What is wrong whatever a run says: unknown ids, unreadable markers, statements without a test."""
    errors: list[str] = []
    for conf_id in unknown_ids(catalogue, scan):
        where = [r.nodeid for r in scan.marks.get(conf_id, ())]
        where += [f"{p}:{n}" for p, n in scan.asserts.get(conf_id, ())]
        errors.append(f"unknown id '{conf_id}' used by {', '.join(where)}")
    errors.extend(scan.problems)
    for st in catalogue.statements:
        if not any(scan.marks.get(i) for i in (st.id, *st.see)):
            errors.append(f"statement '{st.id}' has no test")
    return errors


def main(argv: Sequence[str] | None = None) -> int:
    """Command line; returns the exit status."""
    parser = argparse.ArgumentParser(
        prog="conformance.py", description="Build docs/conformance.md from the catalogue, "
        "the tests' conformance markers and a run's recorded outcomes.")
    parser.add_argument("--write", action="store_true", help=f"write {OUTPUT_PATH}")
    parser.add_argument("--require-pass", action="store_true",
                        help="exit 1 unless every statement passes in the recorded run")
    parser.add_argument("--check", action="store_true",
                        help="only check the markers against the catalogue (no run needed)")
    parser.add_argument("--root", type=Path, default=ROOT, help="repository root")
    parser.add_argument("--tests-of", action="append", default=[], metavar="ID",
                        help="print the node ids of the tests carrying ID (repeatable) and exit")
    parser.add_argument("--row", action="append", default=[], metavar="ID",
                        help="print ID's status and its tests' outcomes instead of the page (repeatable)")
    parser.add_argument("--results", type=Path, action="append", default=None,
                        metavar="FILE_OR_DIR",
                        help=f"results files, or directories of *.json (default: {RESULTS_DIR})")
    args = parser.parse_args(argv)
    root: Path = args.root

    def err(msg: str) -> None:
        print(f"conformance: {msg}", file=sys.stderr)

    try:
        catalogue = load_catalogue(root / CATALOGUE_PATH)
    except (OSError, CatalogueError) as e:
        err(str(e))
        return 1
    scan = scan_tests(root)
    unknown = [i for i in (*args.tests_of, *args.row) if i not in catalogue.ids()]
    if unknown:
        err(f"unknown id(s): {', '.join(unknown)}")
        return 1
    if args.tests_of:
        wanted = [s for s in catalogue.statements if s.id in args.tests_of]
        nodeids = {r.nodeid for s in wanted for i in (s.id, *s.see) for r in scan.marks.get(i, ())}
        sys.stdout.write("".join(f"{n}\n" for n in sorted(nodeids)))
        return 0
    errors = consistency(catalogue, scan)
    for problem in errors:
        err(problem)
    if args.check:
        return 1 if errors else 0

    files: list[Path] = []
    for given in args.results or [root / RESULTS_DIR]:
        files.extend(sorted(given.glob("*.json")) if given.is_dir() else [given])
    try:
        results = load_results(files)
    except ResultsError as e:
        err(str(e))
        return 1
    if args.row:
        rows = verdicts(catalogue, scan, results)
        for conf_id in args.row:
            row_status, row_proofs = rows[conf_id]
            tests = "; ".join(f"{p.ref.nodeid}: {p.outcome}" for p in row_proofs)
            sys.stdout.write(f"{conf_id}: {row_status} ({tests})\n")
        return 0 if all(rows[i][0] == PASS for i in args.row) else 1
    doc = render(catalogue, scan, results)
    if args.write:
        (root / OUTPUT_PATH).write_text(doc, encoding="utf-8")
    else:
        sys.stdout.write(doc)

    status = 1 if errors else 0
    if args.require_pass:
        if not results.runs:
            err(f"no results to judge (looked in {', '.join(str(f) for f in args.results or [RESULTS_DIR])})")
            status = 1
        if len({r.commit for r in results.runs}) > 1:
            err("the results are of different commits: run the sessions again")
            status = 1
        for conf_id, (verdict, proofs) in verdicts(catalogue, scan, results).items():
            if verdict != PASS:
                bad = [f"{p.ref.nodeid}: {p.outcome}" for p in proofs if p.outcome != PASSED]
                err(f"{conf_id}: {verdict}" + (f" ({'; '.join(bad)})" if bad else ""))
                status = 1
    return status


if __name__ == "__main__":
    sys.exit(main())
