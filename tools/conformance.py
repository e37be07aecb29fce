#!/usr/bin/env python3
"""Generate docs/conformance.md: which man-page statements which tests prove.

Two inputs, one output:

    docs/conformance_catalogue.toml   every checkable statement of passt(1), with
                                      a stable id, its section, a one-line
                                      paraphrase and, where the page is silent or
                                      wrong, our decision
    tests/**/test_*.py                @pytest.mark.conformance("ID", ...) markers
            |
            v
    docs/conformance.md               per section: statement | id | tests | status

The tests are read with `ast`, never imported: importing them would need
scapy, root or QEMU, and a syntax error in one file must not hide the rest.
What counts as a marker (anywhere `pytest.mark.conformance(...)`, or any
dotted name ending in `mark.conformance`, is called with string literals):

* a decorator of a `test_*` function, or of a `Test*` class (it then applies
  to every test in the class, nested classes included);
* inside another decorator, e.g. `pytest.param(..., marks=...)` in a
  `parametrize` list: it applies to the decorated test;
* `pytestmark = ...` at module level (every test of the module) or in a class
  body (every test of the class).

Files follow pytest's default discovery (`test_*.py`, `*_test.py`); tests
are `test*` functions and methods of `Test*` classes, as pytest collects them.

Status of a statement: "covered" when at least one test outside tests/unit
(integration, perf, ...) proves it, "covered (unit only)" when only unit tests
do, "not covered" otherwise.  A statement's `see` ids lend their tests to it
(the page makes some claims twice).

Problems that make `--check` (and `--write`) exit 1: ids used by tests that
the catalogue doesn't have, markers whose ids aren't string literals, test
files that don't parse.  `--check` also fails when docs/conformance.md isn't
what this script would write now.  Output is deterministic: everything is
sorted, nothing depends on time or on absolute paths.

    python tools/conformance.py            print the document
    python tools/conformance.py --write    (re)write docs/conformance.md
    python tools/conformance.py --check    exit 1 if stale or inconsistent
"""

from __future__ import annotations

import argparse
import ast
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

COVERED: Final = "covered"
COVERED_UNIT: Final = "covered (unit only)"
NOT_COVERED: Final = "not covered"
STATUSES: Final = (COVERED, COVERED_UNIT, NOT_COVERED)

REGENERATE: Final = "python tools/conformance.py --write"

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

    def add(self, conf_id: str, ref: TestRef) -> None:
        """Record that `ref` proves `conf_id`."""
        self.marks.setdefault(conf_id, []).append(ref)

    def finish(self) -> None:
        """Sort and deduplicate, so that output doesn't depend on scan order."""
        for conf_id, refs in self.marks.items():
            self.marks[conf_id] = sorted(set(refs))
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
) -> Iterator[tuple[str, str, list[str]]]:
    """(nodeid, first doc line, ids) for every collectable test in `body`."""
    for stmt in body:
        if isinstance(stmt, ast.FunctionDef | ast.AsyncFunctionDef):
            own = _decorator_ids(stmt, where, problems)
            if stmt.name.startswith("test"):
                yield f"{prefix}::{stmt.name}", _first_doc_line(stmt), inherited + own
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
    for nodeid, doc, ids in _walk_tests(tree.body, rel, module_ids, rel, result.problems):
        for conf_id in ids:
            result.add(conf_id, TestRef(nodeid=nodeid, doc=doc))


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


# ------------------------------------------------------------------------ rendering


def unknown_ids(catalogue: Catalogue, scan: ScanResult) -> list[str]:
    """Ids used by tests that the catalogue doesn't define, sorted."""
    known = catalogue.ids()
    return sorted(i for i in scan.marks if i not in known)


def tests_for(st: Statement, scan: ScanResult) -> list[TestRef]:
    """The statement's own tests plus those of its `see` ids, sorted, no duplicates."""
    refs = set(scan.marks.get(st.id, ()))
    for other in st.see:
        refs.update(scan.marks.get(other, ()))
    return sorted(refs)


def status_of(st: Statement, scan: ScanResult) -> str:
    """covered / covered (unit only) / not covered."""
    refs = tests_for(st, scan)
    if not refs:
        return NOT_COVERED
    if all(r.unit for r in refs):
        return COVERED_UNIT
    return COVERED


def _cell(text: str) -> str:
    """Make text safe inside a Markdown table cell."""
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ").strip()


def _test_line(ref: TestRef) -> str:
    line = f"`{ref.nodeid}`"
    if ref.doc:
        line += f": {_cell(ref.doc)}"
    return line


def _tests_cell(st: Statement, scan: ScanResult) -> str:
    own = scan.marks.get(st.id, [])
    lines = [_test_line(r) for r in own]
    for other in st.see:
        n = len(scan.marks.get(other, ()))
        if n:
            lines.append(f"via `{other}`: {n} test{'s' if n != 1 else ''}")
    return "<br>".join(lines) if lines else "none"


def _anchor(title: str) -> str:
    """GitHub-style heading anchor."""
    slug = re.sub(r"[^\w\- ]", "", title.lower()).replace(" ", "-")
    return slug


def render(catalogue: Catalogue, scan: ScanResult) -> str:
    """The whole of docs/conformance.md."""
    out: list[str] = []
    w = out.append
    statuses = {st.id: status_of(st, scan) for st in catalogue.statements}
    n_tests = len({r.nodeid for refs in scan.marks.values() for r in refs})

    w("# Conformance to passt(1)")
    w("")
    w("<!-- Generated by tools/conformance.py: do not edit by hand. -->")
    w("")
    w("Every statement of the man page (`passt.1`) that a user could check is listed in "
      f"`{CATALOGUE_PATH}` with a stable id. Tests that prove a statement carry "
      '`@pytest.mark.conformance("ID", ...)`; `tools/conformance.py` finds those markers by '
      "parsing the test files (it never imports them) and writes this page.")
    w("")
    w(f"Regenerate with `{REGENERATE}`. `python tools/conformance.py --check` "
      "(run by `tests/unit/test_conformance_doc.py`) fails when this page is stale, when a "
      "test uses an id the catalogue doesn't define, or when a marker can't be read.")
    w("")
    w("Status: **covered**: at least one integration (or other non-unit) test proves it; "
      "**covered (unit only)**: only unit tests do; **not covered**: no test yet. "
      "Tests listed as *via* another id prove the same claim, made twice by the page.")
    w("")

    w("## Summary")
    w("")
    w("| section | " + " | ".join(STATUSES) + " | total |")
    w("|---|" + "---:|" * (len(STATUSES) + 1))
    totals = dict.fromkeys(STATUSES, 0)
    for section in catalogue.sections:
        in_section = [s for s in catalogue.statements if s.section == section]
        counts = [sum(1 for s in in_section if statuses[s.id] == k) for k in STATUSES]
        for k, c in zip(STATUSES, counts, strict=True):
            totals[k] += c
        w(f"| [{_cell(section)}](#{_anchor(section)}) | "
          + " | ".join(str(c) for c in counts) + f" | {len(in_section)} |")
    w("| **all** | " + " | ".join(f"**{totals[k]}**" for k in STATUSES)
      + f" | **{len(catalogue.statements)}** |")
    w("")
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
            text = _cell(st.text) + (" (see Decisions)" if st.decision else "")
            w(f"| {text} | `{st.id}` | {_tests_cell(st, scan)} | {statuses[st.id]} |")
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
        tests = ", ".join(f"`{r.nodeid}`" for r in scan.marks[conf_id])
        w(f"- `{conf_id}`: used by {tests}")
    for problem in scan.problems:
        w(f"- problem: {problem}")
    w("")
    return "\n".join(out)


# ---------------------------------------------------------------------- entry point


def main(argv: Sequence[str] | None = None) -> int:
    """Command line; returns the exit status."""
    parser = argparse.ArgumentParser(
        prog="conformance.py", description="Generate docs/conformance.md from the catalogue "
        "and the tests' @pytest.mark.conformance markers.")
    action = parser.add_mutually_exclusive_group()
    action.add_argument("--write", action="store_true", help=f"write {OUTPUT_PATH}")
    action.add_argument("--check", action="store_true",
                        help=f"exit 1 if {OUTPUT_PATH} is stale or ids are unknown")
    parser.add_argument("--root", type=Path, default=ROOT, help="repository root")
    args = parser.parse_args(argv)
    root: Path = args.root

    try:
        catalogue = load_catalogue(root / CATALOGUE_PATH)
    except (OSError, CatalogueError) as e:
        print(f"conformance: {e}", file=sys.stderr)
        return 1
    scan = scan_tests(root)
    doc = render(catalogue, scan)
    unknown = unknown_ids(catalogue, scan)

    status = 0
    for conf_id in unknown:
        where = ", ".join(r.nodeid for r in scan.marks[conf_id])
        print(f"conformance: unknown id '{conf_id}' used by {where}", file=sys.stderr)
        status = 1
    for problem in scan.problems:
        print(f"conformance: {problem}", file=sys.stderr)
        status = 1

    out_path = root / OUTPUT_PATH
    if args.write:
        out_path.write_text(doc, encoding="utf-8")
    elif args.check:
        try:
            current = out_path.read_text(encoding="utf-8")
        except OSError:
            current = ""
        if current != doc:
            print(f"conformance: {OUTPUT_PATH} is stale; run `{REGENERATE}`", file=sys.stderr)
            status = 1
    else:
        sys.stdout.write(doc)
    return status


if __name__ == "__main__":
    sys.exit(main())
