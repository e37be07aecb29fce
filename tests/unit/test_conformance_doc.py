"""docs/conformance.md is fresh, and tools/conformance.py reads markers as pytest would.

The generator is loaded from its path (tools/ is not a package).  The first
tests run it on the real repository: a test that adds a conformance id the
catalogue doesn't know, or a doc not regenerated after tests changed, fails
here with the command that fixes it.  The rest drive the AST scanner and the
renderer on small synthetic repositories under tmp_path.
"""

from __future__ import annotations

import importlib.util
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


def test_doc_is_fresh(capsys: pytest.CaptureFixture[str]) -> None:
    """docs/conformance.md is exactly what `tools/conformance.py --write` would produce now."""
    status = conf.main(["--check", "--root", str(REPO)])
    err = capsys.readouterr().err
    assert status == 0, err


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


def _repo(tmp_path: Path, tests: dict[str, str]) -> Path:
    (tmp_path / "docs").mkdir()
    (tmp_path / conf.CATALOGUE_PATH).write_text(CATALOGUE, encoding="utf-8")
    _scan(tmp_path, tests)
    return tmp_path


UNIT = '''
import pytest

@pytest.mark.conformance("a.one", "a.two")
def test_unit():
    """Unit proof."""
'''

INTEGRATION = '''
import pytest

@pytest.mark.conformance("a.one", "zz.unknown")
def test_integration():
    """Integration proof."""
'''


def test_status_distinguishes_unit_only(tmp_path: Path) -> None:
    """A non-unit test makes 'covered'; unit tests alone 'covered (unit only)'; see ids lend tests."""
    root = _repo(tmp_path, {"tests/unit/test_u.py": UNIT, "tests/integration/test_i.py": INTEGRATION})
    catalogue = conf.load_catalogue(root / conf.CATALOGUE_PATH)
    scan = conf.scan_tests(root)
    by_id = {s.id: s for s in catalogue.statements}
    assert conf.status_of(by_id["a.one"], scan) == conf.COVERED
    assert conf.status_of(by_id["a.two"], scan) == conf.COVERED_UNIT
    assert conf.status_of(by_id["b.one"], scan) == conf.COVERED
    assert conf.status_of(by_id["b.two"], scan) == conf.NOT_COVERED
    assert conf.unknown_ids(catalogue, scan) == ["zz.unknown"]


def test_render_tables_decisions_unknown_and_summary(tmp_path: Path) -> None:
    """The page has a table per section, the decisions, the unknown ids and the counts."""
    root = _repo(tmp_path, {"tests/unit/test_u.py": UNIT, "tests/integration/test_i.py": INTEGRATION})
    doc = conf.render(conf.load_catalogue(root / conf.CATALOGUE_PATH), conf.scan_tests(root))
    assert "python tools/conformance.py --write" in doc
    assert doc.index("## ONE") < doc.index("## TWO") < doc.index("## Decisions")
    assert ("| First \\| claim. (see Decisions) | `a.one` | "
            "`tests/integration/test_i.py::test_integration`: Integration proof.<br>"
            "`tests/unit/test_u.py::test_unit`: Unit proof. | covered |") in doc
    assert "| Second claim. | `a.two` | `tests/unit/test_u.py::test_unit`: Unit proof. | covered (unit only) |" in doc
    assert "| Same as a.one. | `b.one` | via `a.one`: 2 tests | covered |" in doc
    assert "| Nobody tests this. | `b.two` | none | not covered |" in doc
    assert "- `a.one` (ONE): We chose X." in doc
    assert "- `zz.unknown`: used by `tests/integration/test_i.py::test_integration`" in doc
    assert "| **all** | **2** | **1** | **1** | **4** |" in doc


def test_render_is_deterministic(tmp_path: Path) -> None:
    """Same inputs give byte-identical output, whatever order files are scanned in."""
    root = _repo(tmp_path, {"tests/unit/test_u.py": UNIT, "tests/integration/test_i.py": INTEGRATION})
    catalogue = conf.load_catalogue(root / conf.CATALOGUE_PATH)
    files = conf.find_test_files(root)
    forward = conf.render(catalogue, conf.scan_tests(root, files))
    backward = conf.render(catalogue, conf.scan_tests(root, list(reversed(files))))
    assert forward == backward
    assert str(root) not in forward


def test_write_then_check(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--check fails with the regeneration hint when stale, passes after --write."""
    root = _repo(tmp_path, {"tests/unit/test_u.py": UNIT})
    assert conf.main(["--check", "--root", str(root)]) == 1
    assert "run `python tools/conformance.py --write`" in capsys.readouterr().err
    assert conf.main(["--write", "--root", str(root)]) == 0
    assert conf.main(["--check", "--root", str(root)]) == 0
    (root / conf.OUTPUT_PATH).write_text("edited by hand\n", encoding="utf-8")
    assert conf.main(["--check", "--root", str(root)]) == 1


def test_check_fails_on_unknown_id_even_when_fresh(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """An id missing from the catalogue fails --check although the page lists it."""
    root = _repo(tmp_path, {"tests/integration/test_i.py": INTEGRATION})
    assert conf.main(["--write", "--root", str(root)]) == 1
    assert conf.main(["--check", "--root", str(root)]) == 1
    err = capsys.readouterr().err
    assert "unknown id 'zz.unknown'" in err and "stale" not in err


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
