"""tools/conformance.py builds the page from a run: a deleted test, a skip or a regression turn it red.

The generator is loaded from its path (tools/ is not a package).  The first
tests check the real repository's markers against the catalogue (no run
needed).  The rest drive the AST scanner, the verdicts and the renderer on
small synthetic repositories under tmp_path, and run the recording plugin
(tests/statements.py) in a child pytest, with and without xdist.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
TOOL = REPO / "tools" / "conformance.py"


def _load() -> ModuleType:
    name = "_conformance_tool"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, TOOL)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


conf = _load()

#: Ids other tests were told to use: they must stay in the catalogue.
PROMISED_IDS = """
arp.reply dhcp.yiaddr dhcp.option1.netmask dhcp.option3.router dhcp.option6.dns
dhcp.option119.search dhcp.option26.mtu ndp.ra.prefix ndp.ra.mtu ndp.ra.rdnss ndp.ra.dnssl
dhcpv6.option5.addr dhcpv6.option23.dns dhcpv6.option24.search opt.no-dhcp opt.no-ndp
opt.no-dhcpv6 opt.no-ra opt.ipv4-only opt.ipv6-only opt.mtu opt.address opt.netmask opt.gateway
opt.dns opt.search opt.mac-addr opt.debug opt.quiet opt.foreground opt.stderr opt.help opt.pcap
opt.interface opt.socket opt.tcp-ports opt.udp-ports opt.ns-ifname opt.tcp-ns opt.udp-ns
opt.no-tcp opt.no-udp opt.no-icmp ports.syntax ports.udp-follows-tcp ports.ipv6-also-ipv4
host.default-route-iface dns.passt-resolvconf dns.pasta-none notes.nat.src-gateway
notes.nat.dst-loopback notes.nat.ipv6-linklocal notes.nat.gateway-to-loopback notes.low-ports
notes.icmp.id-preserved notes.icmp.fallback-id notes.icmp.ping-group-range notes.pasta.lo-up
notes.pasta.splice tcp.no-buffering tcp.window-reflect tcp.ack-as-peer-acks tcp.snd_wnd-fallback
passt.socket-probe passt.qrap passt.reconnect pasta.spawn-namespace pasta.join-pid
pasta.tap-device example.pasta.summary example.pasta.udhcpc example.pasta.dhclient6
example.pasta.ip-address example.pasta.iperf3-loopback example.pasta.ping example.passt.summary
example.passt.qrap example.passt.forward-2222 limits.no-sack
""".split()


# ------------------------------------------------------------------ the real repository


def test_no_unknown_ids_or_unreadable_markers() -> None:
    """Every conformance id used under tests/ is in the catalogue, and every marker is readable."""
    catalogue = conf.load_catalogue(REPO / conf.CATALOGUE_PATH)
    scan = conf.scan_tests(REPO)
    assert conf.unknown_ids(catalogue, scan) == []
    assert scan.problems == []


def test_every_statement_has_a_test(capsys: pytest.CaptureFixture[str]) -> None:
    """`--check` on the real repository: known ids, readable markers, a test for every statement."""
    status = conf.main(["--check", "--root", str(REPO)])
    assert status == 0, capsys.readouterr().err


def test_catalogue_keeps_promised_ids() -> None:
    """Ids handed out to test authors exist, and every section has at least one statement."""
    catalogue = conf.load_catalogue(REPO / conf.CATALOGUE_PATH)
    assert sorted(set(PROMISED_IDS) - catalogue.ids()) == []
    used_sections = {s.section for s in catalogue.statements}
    assert used_sections == set(catalogue.sections)


def test_catalogue_records_known_errata() -> None:
    """The man page's known errata are written down as decisions."""
    catalogue = conf.load_catalogue(REPO / conf.CATALOGUE_PATH)
    decisions = {s.id: s.decision for s in catalogue.statements}
    assert "option 23" in decisions["opt.dns"] and " 6 " in decisions["opt.dns"]
    assert "22-80:32-90" in decisions["ports.example.range-map"]
    assert "-6 is --ipv6-only" in decisions["opt.ipv6-only"]


# ------------------------------------------------------------------------ the scanner

SYNTHETIC = '''
import pytest
from pytest import mark

pytestmark = [pytest.mark.integration, pytest.mark.conformance("mod.wide")]


@pytest.mark.conformance("a.one", "a.two")
def test_function():
    """Proves a.one and a.two.

    More text that is not the summary.
    """


@mark.conformance("a.one")
async def test_async():
    """Async tests are collected too."""


@pytest.mark.parametrize("x", [1, pytest.param(2, marks=pytest.mark.conformance("a.param"))])
def test_param(x):
    pass


def test_unmarked():
    """Only the module-wide id."""


def helper():
    pass


@pytest.mark.conformance("cls.deco")
class TestGroup:
    """Group docstring is not used for its tests."""

    pytestmark = pytest.mark.conformance("cls.body")

    @pytest.mark.conformance("a.method")
    def test_method(self):
        """Method doc."""

    def not_a_test(self):
        pass

    class TestInner:
        def test_inner(self):
            """Inner doc."""


class Helper:
    def test_ignored(self):
        """Not collected: the class name doesn't start with Test."""
'''


def _scan(tmp_path: Path, files: dict[str, str]) -> Any:
    for rel, text in files.items():
        path = tmp_path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text), encoding="utf-8")
    return conf.scan_tests(tmp_path)


def _nodeids(scan: Any, conf_id: str) -> list[str]:
    refs = scan.marks.get(conf_id, [])
    return [r.nodeid for r in refs]


def test_scanner_finds_markers_where_pytest_applies_them(tmp_path: Path) -> None:
    """Decorators, class markers, class and module pytestmark, and param marks all count."""
    scan = _scan(tmp_path, {"tests/unit/test_synth.py": SYNTHETIC})
    f = "tests/unit/test_synth.py"
    assert _nodeids(scan, "a.one") == [f"{f}::test_async", f"{f}::test_function"]
    assert _nodeids(scan, "a.two") == [f"{f}::test_function"]
    assert _nodeids(scan, "a.param") == [f"{f}::test_param"]
    assert _nodeids(scan, "a.method") == [f"{f}::TestGroup::test_method"]
    in_class = [f"{f}::TestGroup::TestInner::test_inner", f"{f}::TestGroup::test_method"]
    assert _nodeids(scan, "cls.deco") == in_class
    assert _nodeids(scan, "cls.body") == in_class
    assert _nodeids(scan, "mod.wide") == sorted([
        f"{f}::TestGroup::TestInner::test_inner", f"{f}::TestGroup::test_method",
        f"{f}::test_async", f"{f}::test_function", f"{f}::test_param", f"{f}::test_unmarked",
    ])
    all_nodeids = {r.nodeid for refs in scan.marks.values() for r in refs}
    assert not any("Helper" in n or "helper" in n or "not_a_test" in n for n in all_nodeids)
    assert scan.problems == []


def test_scanner_takes_first_docstring_line(tmp_path: Path) -> None:
    """The doc shown for a test is the first line of its own docstring, or nothing."""
    scan = _scan(tmp_path, {"tests/unit/test_synth.py": SYNTHETIC})
    docs = {r.nodeid.split("::", 1)[1]: r.doc for r in scan.marks["mod.wide"]}
    assert docs["test_function"] == "Proves a.one and a.two."
    assert docs["test_param"] == ""
    assert docs["TestGroup::test_method"] == "Method doc."


def test_scanner_reports_unreadable_markers(tmp_path: Path) -> None:
    """Non-literal ids, markers on non-tests and files that don't parse are problems, not skips."""
    scan = _scan(tmp_path, {
        "tests/unit/test_bad.py": """
            import pytest
            ID = "x.y"

            @pytest.mark.conformance(ID)
            def test_variable():
                pass

            @pytest.mark.conformance()
            def test_empty():
                pass

            @pytest.mark.conformance("x.z")
            def fixture_like():
                pass
            """,
        "tests/integration/test_broken.py": "def test_(:\n",
    })
    problems = "\n".join(scan.problems)
    assert "test_bad.py:5: conformance id is not a string literal" in problems
    assert "test_bad.py:9: conformance marker without ids" in problems
    assert "'fixture_like', which pytest does not collect" in problems
    assert "test_broken.py:1: does not parse" in problems
    assert scan.marks == {}


def test_scanner_follows_pytest_file_names(tmp_path: Path) -> None:
    """Only test_*.py and *_test.py are scanned, as pytest collects; helpers are not."""
    marked = 'import pytest\n@pytest.mark.conformance("a.one")\ndef test_x():\n    pass\n'
    scan = _scan(tmp_path, {
        "tests/unit/test_a.py": marked,
        "tests/integration/b_test.py": marked,
        "tests/unit/helpers.py": marked,
        "tests/unit/conftest.py": marked,
    })
    assert _nodeids(scan, "a.one") == [
        "tests/integration/b_test.py::test_x", "tests/unit/test_a.py::test_x"]


# ------------------------------------------------------------- catalogue and rendering

CATALOGUE = '''
sections = ["ONE", "TWO"]

[[statement]]
id = "a.one"
section = "ONE"
text = "First | claim."
decision = "We chose X."

[[statement]]
id = "a.two"
section = "ONE"
text = "Second claim."

[[statement]]
id = "b.one"
section = "TWO"
text = "Same as a.one."
see = ["a.one"]

[[statement]]
id = "b.two"
section = "TWO"
text = "Nobody tests this."
'''

UNIT = '''
import pytest
from tests.statements import assert_statement


@pytest.mark.conformance("a.one", "a.two")
def test_unit():
    """Unit proof."""
    assert_statement("a.two", True, "second")
'''

INTEGRATION = '''
import pytest


@pytest.mark.conformance("a.one")
def test_integration():
    """Integration proof."""
    assert 1, "[a.one] the first claim"
'''

U = "tests/unit/test_u.py::test_unit"
I = "tests/integration/test_i.py::test_integration"  # noqa: E741


def _repo(tmp_path: Path, tests: dict[str, str]) -> Path:
    (tmp_path / "docs").mkdir(exist_ok=True)
    (tmp_path / conf.CATALOGUE_PATH).write_text(CATALOGUE, encoding="utf-8")
    _scan(tmp_path, tests)
    return tmp_path


def _results(outcomes: dict[str, tuple[str, list[str]]], commit: str = "c0ffee") -> str:
    """A results file as tests/statements.py writes it."""
    return json.dumps({
        "format": 1, "commit": commit, "dirty": False, "started": "2026-01-02 03:04 UTC",
        "args": [], "exitstatus": 0,
        "tests": {n: {"outcome": o, "ids": ids} for n, (o, ids) in outcomes.items()},
    })


ALL_PASS = {U: ("passed", ["a.one", "a.two"]), I: ("passed", ["a.one"])}


def _verdicts(root: Path, *runs: str) -> dict[str, str]:
    catalogue = conf.load_catalogue(root / conf.CATALOGUE_PATH)
    results = conf.Results()
    for n, text in enumerate(runs):
        conf.parse_results(text, f"run{n}.json", results)
    return {k: v[0] for k, v in conf.verdicts(catalogue, conf.scan_tests(root), results).items()}


def test_pass_needs_every_test_to_have_passed(tmp_path: Path) -> None:
    """All tests ran and passed: pass; `see` ids lend their tests; no test at all: 'no test'."""
    root = _repo(tmp_path, {"tests/unit/test_u.py": UNIT, "tests/integration/test_i.py": INTEGRATION})
    assert _verdicts(root, _results(ALL_PASS)) == {
        "a.one": "pass", "a.two": "pass", "b.one": "pass", "b.two": "no test"}


@pytest.mark.parametrize(("outcome", "verdict"), [("failed", "fail"), ("skipped", "skipped")])
def test_a_regression_or_a_skip_turns_the_row_red(tmp_path: Path, outcome: str, verdict: str) -> None:
    """One failed (or skipped) test of several is enough; the statements lending it follow."""
    root = _repo(tmp_path, {"tests/unit/test_u.py": UNIT, "tests/integration/test_i.py": INTEGRATION})
    got = _verdicts(root, _results({**ALL_PASS, I: (outcome, ["a.one"])}))
    assert got["a.one"] == verdict and got["b.one"] == verdict
    assert got["a.two"] == "pass"


def test_a_test_missing_from_the_run_is_not_run(tmp_path: Path) -> None:
    """A test in the sources without an outcome (deselected, or added after the run) is 'not run'."""
    root = _repo(tmp_path, {"tests/unit/test_u.py": UNIT, "tests/integration/test_i.py": INTEGRATION})
    got = _verdicts(root, _results({U: ALL_PASS[U]}))
    assert got["a.one"] == "not run" and got["a.two"] == "pass"
    assert _verdicts(root)["a.two"] == "not run"


def test_a_deleted_test_is_gone_even_from_old_results(tmp_path: Path) -> None:
    """The sources say which tests prove a statement: stale results of a deleted test count for nothing."""
    root = _repo(tmp_path, {"tests/unit/test_u.py": UNIT.replace('"a.one", "a.two"', '"a.one"')})
    got = _verdicts(root, _results(ALL_PASS))
    assert got["a.two"] == "no test"


def test_parametrised_cases_count_by_the_id_they_carry(tmp_path: Path) -> None:
    """A parameter's mark proves its statement with that case only; every carrying case must pass."""
    root = _repo(tmp_path, {"tests/unit/test_p.py": """
        import pytest

        @pytest.mark.parametrize("x", [1, pytest.param(2, marks=pytest.mark.conformance("a.two"))])
        @pytest.mark.conformance("a.one")
        def test_p(x):
            pass
        """})
    p = "tests/unit/test_p.py::test_p"
    got = _verdicts(root, _results({f"{p}[1]": ("failed", ["a.one"]),
                                    f"{p}[2]": ("passed", ["a.one", "a.two"])}))
    assert got["a.one"] == "fail" and got["a.two"] == "pass"


def test_runs_merge_worst_outcome_wins(tmp_path: Path) -> None:
    """Two results files (unit, integration) merge; a test in both keeps its worst outcome."""
    root = _repo(tmp_path, {"tests/unit/test_u.py": UNIT, "tests/integration/test_i.py": INTEGRATION})
    got = _verdicts(root, _results({U: ALL_PASS[U]}), _results({I: ALL_PASS[I], U: ("failed", ["a.two"])}))
    assert got["a.one"] == "fail" and got["a.two"] == "fail"  # test_unit proves both


def test_render_rows_link_tests_and_asserting_lines(tmp_path: Path) -> None:
    """Rows link each test (file:line) with its outcome, and the lines asserting the statement."""
    root = _repo(tmp_path, {"tests/unit/test_u.py": UNIT, "tests/integration/test_i.py": INTEGRATION})
    catalogue = conf.load_catalogue(root / conf.CATALOGUE_PATH)
    results = conf.Results()
    conf.parse_results(_results({**ALL_PASS, I: ("failed", ["a.one"])}), "unit.json", results)
    doc = conf.render(catalogue, conf.scan_tests(root), results)
    assert ("| First \\| claim. (see Decisions) | `a.one` | "
            "[`tests/integration/test_i.py:6`](../tests/integration/test_i.py#L6) test_integration: failed<br>"
            "[`tests/unit/test_u.py:7`](../tests/unit/test_u.py#L7) test_unit: passed<br>"
            "asserted at [test_i.py:8](../tests/integration/test_i.py#L8) | fail |") in doc
    assert ("| Second claim. | `a.two` | [`tests/unit/test_u.py:7`](../tests/unit/test_u.py#L7) "
            "test_unit: passed<br>asserted at [test_u.py:9](../tests/unit/test_u.py#L9) | pass |") in doc
    assert "test_unit: passed (via `a.one`)" in doc
    assert "| Nobody tests this. | `b.two` | none | no test |" in doc
    assert "| `unit.json` | `c0ffee` | 2026-01-02 03:04 UTC | 2 | 0 |" in doc
    assert "- `a.one` (ONE): We chose X." in doc
    assert "| **all** | **1** | **2** | **0** | **0** | **1** | **4** |" in doc
    assert str(root) not in doc


def test_render_is_deterministic(tmp_path: Path) -> None:
    """Same inputs give byte-identical output, whatever order files are scanned in."""
    root = _repo(tmp_path, {"tests/unit/test_u.py": UNIT, "tests/integration/test_i.py": INTEGRATION})
    catalogue = conf.load_catalogue(root / conf.CATALOGUE_PATH)
    files = conf.find_test_files(root)
    results = conf.Results()
    conf.parse_results(_results(ALL_PASS), "unit.json", results)
    forward = conf.render(catalogue, conf.scan_tests(root, files), results)
    backward = conf.render(catalogue, conf.scan_tests(root, list(reversed(files))), results)
    assert forward == backward


def _main(root: Path, *args: str) -> int:
    status: int = conf.main(["--root", str(root), *args])
    return status


def test_require_pass_gates_on_every_statement(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--require-pass exits 1 on a failed, skipped or missing test and names it; 0 when all pass."""
    root = _repo(tmp_path, {"tests/unit/test_u.py": UNIT, "tests/integration/test_i.py": INTEGRATION})
    (root / CATALOGUE_ONE).write_text(CATALOGUE.split("[[statement]]\nid = \"b.two\"")[0], encoding="utf-8")
    results = root / "build" / "conformance"
    results.mkdir(parents=True)
    (results / "unit.json").write_text(_results(ALL_PASS), encoding="utf-8")
    assert _main(root, "--write", "--require-pass") == 0
    assert "| pass |" in (root / conf.OUTPUT_PATH).read_text(encoding="utf-8")
    capsys.readouterr()
    for outcome in ("failed", "skipped"):
        (results / "unit.json").write_text(_results({**ALL_PASS, I: (outcome, ["a.one"])}), encoding="utf-8")
        assert _main(root, "--write", "--require-pass") == 1
        assert f"a.one: {'fail' if outcome == 'failed' else 'skipped'} ({I}: {outcome})" in capsys.readouterr().err
    (results / "unit.json").write_text(_results({U: ALL_PASS[U]}), encoding="utf-8")
    assert _main(root, "--require-pass") == 1
    assert f"({I}: not run)" in capsys.readouterr().err
    (results / "unit.json").unlink()
    assert _main(root, "--require-pass") == 1
    assert "no results" in capsys.readouterr().err


def test_tests_of_and_row_serve_a_sabotage_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--tests-of lists the tests of a row (its `see` ids' too) for pytest; --row prints the row's
    status in a run instead of the page, exit 1 unless it passes; an unknown id is refused."""
    root = _repo(tmp_path, {"tests/unit/test_u.py": UNIT, "tests/integration/test_i.py": INTEGRATION})
    assert _main(root, "--tests-of", "b.one") == 0
    assert capsys.readouterr().out == f"{I}\n{U}\n"
    assert _main(root, "--tests-of", "a.two") == 0
    assert capsys.readouterr().out == f"{U}\n"
    results = tmp_path / "scratch"
    results.mkdir()
    (results / "run.json").write_text(_results({**ALL_PASS, I: ("failed", ["a.one"])}), encoding="utf-8")
    assert _main(root, "--row", "a.one", "--row", "a.two", "--results", str(results)) == 1
    assert capsys.readouterr().out == (f"a.one: fail ({I}: failed; {U}: passed)\n"
                                       f"a.two: pass ({U}: passed)\n")
    assert not (root / conf.OUTPUT_PATH).exists()
    assert _main(root, "--row", "a.two", "--results", str(results)) == 0
    assert _main(root, "--tests-of", "no.such") == 1
    assert "unknown id(s): no.such" in capsys.readouterr().err


def test_require_pass_refuses_runs_of_different_commits(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Unit results of one commit and integration results of another don't make a page."""
    root = _repo(tmp_path, {"tests/unit/test_u.py": UNIT, "tests/integration/test_i.py": INTEGRATION})
    (root / CATALOGUE_ONE).write_text(CATALOGUE.split("[[statement]]\nid = \"b.two\"")[0], encoding="utf-8")
    results = root / "build" / "conformance"
    results.mkdir(parents=True)
    (results / "unit.json").write_text(_results({U: ALL_PASS[U]}, commit="aaaa"), encoding="utf-8")
    (results / "integration.json").write_text(_results({I: ALL_PASS[I]}, commit="bbbb"), encoding="utf-8")
    assert _main(root, "--require-pass") == 1
    assert "different commits" in capsys.readouterr().err


CATALOGUE_ONE = conf.CATALOGUE_PATH


def test_check_fails_on_unknown_ids_missing_tests_and_foreign_asserts(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--check needs no run: unknown ids, a statement without a test, an assert of an id not carried."""
    root = _repo(tmp_path, {
        "tests/unit/test_u.py": UNIT,
        "tests/integration/test_i.py": INTEGRATION.replace('"a.one")', '"a.one", "zz.unknown")'),
        "tests/unit/test_f.py": """
            import pytest

            @pytest.mark.conformance("a.two")
            def test_f():
                assert True, f"[a.two, a.one] claimed but not carried"
            """,
    })
    assert _main(root, "--check") == 1
    err = capsys.readouterr().err
    assert "unknown id 'zz.unknown' used by tests/integration/test_i.py::test_integration" in err
    assert "statement 'b.two' has no test" in err
    assert "tests/unit/test_f.py:6: asserts 'a.one' but test_f does not carry that conformance id" in err
    assert "'a.two' but" not in err
    assert ("tests/unit/test_f.py", 6) in conf.scan_tests(root).asserts["a.two"]


def test_bad_results_file_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A results file of another format or with a bad entry stops the tool with its name."""
    root = _repo(tmp_path, {"tests/unit/test_u.py": UNIT})
    bad = tmp_path / "bad.json"
    bad.write_text(_results({U: ("maybe", ["a.one"])}), encoding="utf-8")
    assert _main(root, "--results", str(bad)) == 1
    assert f"bad.json: bad entry for {U}" in capsys.readouterr().err
    bad.write_text('{"format": 99}', encoding="utf-8")
    assert _main(root, "--results", str(bad)) == 1
    assert "not a format-1 conformance results file" in capsys.readouterr().err


# --------------------------------------------------------------------- the recorder

PLUGIN_TESTS = '''
import pytest
from tests.statements import assert_statement


@pytest.fixture
def skipping():
    pytest.skip("no root")


@pytest.fixture
def broken_teardown():
    yield
    raise RuntimeError("teardown")


@pytest.mark.conformance("s.pass")
@pytest.mark.parametrize("n", [1, 2, 3])
def test_pass(n):
    assert_statement("s.pass", n > 0, "positive")


@pytest.mark.conformance("s.fail")
def test_fail():
    assert_statement("s.fail", False, "the claim does not hold")


@pytest.mark.conformance("s.skip")
def test_skip(skipping):
    pass


@pytest.mark.conformance("s.xfail")
@pytest.mark.xfail(reason="known")
def test_xfail():
    assert False


@pytest.mark.conformance("s.teardown")
def test_teardown(broken_teardown):
    pass


@pytest.mark.conformance("s.class")
class TestGroup:
    def test_in_class(self):
        pass


def test_unmarked():
    pass
'''


@pytest.mark.parametrize("xdist", [[], ["-n", "2"]], ids=["plain", "xdist"])
def test_recorder_writes_one_file_of_outcomes(tmp_path: Path, xdist: list[str]) -> None:
    """The plugin records each marked test's worst phase, also when xdist workers run the tests."""
    (tmp_path / "test_rec.py").write_text(PLUGIN_TESTS, encoding="utf-8")
    out = tmp_path / "out" / "r.json"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "tests.statements", "-p", "no:cacheprovider",
         "--rootdir", str(tmp_path), f"--conformance-results={out}", *xdist, "test_rec.py"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "[s.fail] the claim does not hold" in proc.stdout
    data = json.loads(out.read_text(encoding="utf-8"))
    assert data["format"] == 1 and data["exitstatus"] == 1
    got = {n: (e["outcome"], e["ids"]) for n, e in data["tests"].items()}
    assert got == {
        "test_rec.py::test_pass[1]": ("passed", ["s.pass"]),
        "test_rec.py::test_pass[2]": ("passed", ["s.pass"]),
        "test_rec.py::test_pass[3]": ("passed", ["s.pass"]),
        "test_rec.py::test_fail": ("failed", ["s.fail"]),
        "test_rec.py::test_skip": ("skipped", ["s.skip"]),
        "test_rec.py::test_xfail": ("failed", ["s.xfail"]),
        "test_rec.py::test_teardown": ("failed", ["s.teardown"]),
        "test_rec.py::TestGroup::test_in_class": ("passed", ["s.class"]),
    }


def test_recorder_off_without_the_option(tmp_path: Path) -> None:
    """A targeted run without --conformance-results writes nothing."""
    (tmp_path / "test_rec.py").write_text(PLUGIN_TESTS, encoding="utf-8")
    # Only the plugin under test: others the interpreter has installed may write files of their
    # own (pytest-benchmark makes .benchmarks/ in the working directory).
    env = {**os.environ, "PYTHONPATH": str(REPO), "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"}
    subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "tests.statements",
                    "-p", "no:cacheprovider", "--rootdir", str(tmp_path), "test_rec.py", "-k", "pass"],
                   cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120, check=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["test_rec.py"]


@pytest.mark.parametrize(("old", "new", "message"), [
    ('id = "b.two"', 'id = "a.two"', "duplicate id"),
    ('section = "TWO"\ntext = "Nobody', 'section = "THREE"\ntext = "Nobody',
     "section 'THREE' is not in 'sections'"),
    ('text = "Nobody tests this."', 'text = "Nobody tests this."\nsee = ["nope"]',
     "bad 'see' id 'nope'"),
    ('text = "Nobody tests this."', 'text = "Nobody tests this."\ncolour = "red"',
     "unknown key(s) colour"),
    ('id = "b.two"', 'id = "Bad Id"', "id must be lower-case dotted words"),
    ('text = "Nobody tests this."', 'text = """two\nlines"""', "'text' must be one line"),
])
def test_catalogue_errors(old: str, new: str, message: str) -> None:
    """A malformed catalogue is refused with a message naming the fault."""
    assert old in CATALOGUE
    with pytest.raises(conf.CatalogueError) as info:
        conf.parse_catalogue(CATALOGUE.replace(old, new))
    assert message in str(info.value)
