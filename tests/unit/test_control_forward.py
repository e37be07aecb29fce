"""Run-time forwarding decisions: add, delete, clear, UDP following TCP, spec text."""

from __future__ import annotations

from typing import Any

import pytest

from passt.config import FwdMode, Mode, PortFwd
from passt.control.forward import ForwardTable, added, deleted, following, spec_text
from passt.ports import ConfigError, follow, parse_port_spec


def p(spec: str, mode: Mode = Mode.PASTA, option: str = "-t") -> PortFwd:
    return parse_port_spec(spec, mode=mode, option=option)


class FakeForwarder:
    """Records what ForwardTable pushes; listens on whatever the spec names."""

    def __init__(self, tcp_fwd: PortFwd, udp_fwd: PortFwd) -> None:
        self.tcp_fwd, self.udp_fwd = tcp_fwd, udp_fwd
        self.applied: list[tuple[str, PortFwd]] = []
        self.failures: dict[tuple[str, int], str] = {}

    def apply(self, proto: str, fwd: PortFwd) -> None:
        self.applied.append((proto, fwd))
        if proto == "tcp":
            self.tcp_fwd = fwd
        else:
            self.udp_fwd = fwd

    def listening(self) -> dict[tuple[str, int], Any]:
        return {(proto, port): None for proto, f in (("tcp", self.tcp_fwd), ("udp", self.udp_fwd))
                for port, _ in f.ports}  # fmt: skip


def table(mode: Mode, **specs: PortFwd) -> tuple[ForwardTable, FakeForwarder, list[FakeForwarder]]:
    dflt = PortFwd(mode=FwdMode.NONE) if mode is Mode.PASST else PortFwd(mode=FwdMode.AUTO)
    s = {o: specs.get(k, dflt) for o, k in (("-t", "t"), ("-u", "u"), ("-T", "T"), ("-U", "U"))}
    host = FakeForwarder(s["-t"], s["-u"])
    ns = [FakeForwarder(s["-T"], s["-U"])] if mode is Mode.PASTA else []
    return ForwardTable(mode, s, host, ns), host, ns  # type: ignore[arg-type]


def test_add_to_default_takes_the_spec_as_the_command_line_would() -> None:
    assert added(PortFwd(mode=FwdMode.AUTO), p("80"), "-t") == p("80")
    assert added(PortFwd(mode=FwdMode.NONE, explicit=True), p("80"), "-t") == p("80")


def test_add_merges_like_a_second_option() -> None:
    assert added(p("80"), p("81-82:91-92"), "-t").ports == ((80, 80), (81, 91), (82, 92))


@pytest.mark.parametrize("current, spec, message", [
    ("80", "80", "port 80 given twice in -t"),
    ("auto", "80", "-t given more than once with none/all/auto"),
    ("80", "auto", "-t given more than once with none/all/auto"),
    ("127.0.0.1/80", "81", "-t given with different bind addresses"),
])  # fmt: skip
def test_add_refused_with_the_cli_message(current: str, spec: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        added(p(current), p(spec), "-t")


def test_delete_by_listening_port_and_target_checked() -> None:
    assert deleted(p("80,81:91"), p("81"), "-t") == p("80")
    assert deleted(p("80"), p("80"), "-t") == PortFwd(mode=FwdMode.NONE, explicit=True)
    with pytest.raises(ConfigError, match="port 81 is forwarded by -t to 91, not 92"):
        deleted(p("80,81:91"), p("81:92"), "-t")
    with pytest.raises(ConfigError, match="port 82 is not forwarded by -t"):
        deleted(p("80,81"), p("81-82"), "-t")
    with pytest.raises(ConfigError, match="takes ports"):
        deleted(p("80"), p("auto"), "-t")


def test_delete_from_auto_or_all_excludes() -> None:
    assert deleted(p("auto"), p("22"), "-t").excluded == {22}
    out = deleted(p("all", Mode.PASST), p("22-23", Mode.PASST), "-t")
    assert out.mode is FwdMode.ALL and out.excluded == {22, 23}


def test_udp_follows_tcp_unless_given() -> None:
    tcp = p("80,8080:90")
    assert following(tcp, PortFwd(mode=FwdMode.AUTO), Mode.PASTA) == follow(tcp)
    assert following(tcp, follow(p("22")), Mode.PASTA) == follow(tcp)
    explicit = p("53", option="-u")
    assert following(tcp, explicit, Mode.PASTA) is explicit
    none = PortFwd(mode=FwdMode.NONE, explicit=True)
    assert following(none, follow(tcp), Mode.PASTA) == PortFwd(mode=FwdMode.AUTO)
    assert following(none, follow(tcp), Mode.PASST) == PortFwd(mode=FwdMode.NONE)


@pytest.mark.parametrize("spec", ["none", "auto", "80", "22,80-82", "8080:80", "1000-1002:2000-2002",
                                  "~22", "~22-25,~80", "127.0.0.1/80", "[::1]/80-81", "80-81,~81"])
def test_spec_text_parses_back_to_the_same(spec: str) -> None:
    fwd = p(spec)
    assert p(spec_text(fwd)).ports == fwd.ports
    assert p(spec_text(fwd)).excluded == fwd.excluded or fwd.mode is FwdMode.SPEC
    assert p(spec_text(fwd)).addr == fwd.addr


def test_table_add_pushes_tcp_and_following_udp() -> None:
    t, host, _ = table(Mode.PASST)
    out = t.change("add", "-t", "8080:80")
    assert host.applied == [("tcp", p("8080:80", Mode.PASST)), ("udp", follow(p("8080:80", Mode.PASST)))]
    assert [e["option"] for e in out] == ["-t", "-u"]
    assert out[1]["spec"] == "8080" and not out[1]["explicit"]


def test_table_bad_spec_changes_nothing() -> None:
    t, host, _ = table(Mode.PASST, t=p("80", Mode.PASST), u=follow(p("80", Mode.PASST)))
    before = dict(t.specs)
    for op, option, spec, message in (
        ("add", "-t", "70000", "invalid port '70000' in -t '70000': ports are 1-65535"),
        ("add", "-t", "80", "port 80 given twice in -t"),
        ("add", "-T", "80", "unknown option '-T': one of -t, -u"),
        ("delete", "-t", "81", "port 81 is not forwarded by -t"),
        ("add", "-t", "auto", "'auto' is pasta-only for -t; passt uses 'all'"),
    ):
        with pytest.raises(ConfigError) as e:
            t.change(op, option, spec)
        assert str(e.value) == message
    assert t.specs == before and host.applied == []


def test_table_explicit_udp_kept_when_tcp_changes() -> None:
    t, host, _ = table(Mode.PASTA)
    t.change("add", "-u", "53")
    t.change("add", "-t", "80")
    assert t.specs["-u"] == p("53", option="-u")
    assert host.applied[-1] == ("tcp", p("80"))


def test_table_clear_and_ns_side() -> None:
    t, host, ns = table(Mode.PASTA, t=p("80"), u=follow(p("80")))
    t.change("clear", "-t", None)
    assert t.specs["-t"].mode is FwdMode.NONE
    assert t.specs["-u"] == PortFwd(mode=FwdMode.AUTO)
    t.change("add", "-T", "5432")
    assert ns[0].applied == [("tcp", p("5432", option="-T")), ("udp", follow(p("5432", option="-T")))]
    with pytest.raises(ConfigError, match="with an address can't change at run time"):
        t.change("add", "-T", "127.0.0.1/99")


def test_table_ns_side_absent_refused() -> None:
    t, _, ns = table(Mode.PASTA, T=PortFwd(mode=FwdMode.NONE, explicit=True),
                     U=PortFwd(mode=FwdMode.NONE, explicit=True))  # fmt: skip
    t.ns = []
    with pytest.raises(ConfigError, match="-T/-U were none at start"):
        t.change("add", "-T", "80")
