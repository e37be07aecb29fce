"""Port-spec grammar (-t/-u/-T/-U) and the /proc/net scans behind pasta's `auto`."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv6Address
from pathlib import Path

import pytest

from passt.config import FwdMode, Mode, PortFwd
from passt.ports import (
    DEFAULT_EPHEMERAL_RANGE,
    ConfigError,
    ephemeral_range,
    follow,
    merge_port_fwd,
    parse_port_spec,
    scan_bound_ports,
)


def spec(text: str, mode: Mode = Mode.PASST) -> PortFwd:
    return parse_port_spec(text, mode=mode, option="-t")


# ------------------------------------------------------------------ man-page examples


@pytest.mark.conformance("ports.syntax")
@pytest.mark.parametrize("mode", [Mode.PASST, Mode.PASTA])
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("22", {22: 22}),
        ("22:23", {22: 23}),
        ("22,25", {22: 22, 25: 25}),
        ("22-80", {p: p for p in range(22, 81)}),
        ("22-80:32-90", {p: p + 10 for p in range(22, 81)}),
    ],
)
def test_spec_man_page_examples(text: str, expected: dict[int, int], mode: Mode) -> None:
    """The man page's -t examples (22, 22:23, 22,25, 22-80, 22-80:32-90) map as it describes."""
    fwd = spec(text, mode)
    assert fwd.mode is FwdMode.SPEC
    assert fwd.explicit
    assert fwd.mapping() == expected
    assert fwd.addr is None
    assert fwd.excluded == frozenset()


@pytest.mark.conformance("ports.syntax")
def test_spec_keywords_per_program() -> None:
    """`none` in both programs; `all` only in passt; `auto` only in pasta."""
    assert spec("none").mode is FwdMode.NONE
    assert spec("none", Mode.PASTA).mode is FwdMode.NONE
    assert spec("all").mode is FwdMode.ALL
    assert spec("auto", Mode.PASTA).mode is FwdMode.AUTO
    with pytest.raises(ConfigError, match="'all' is passt-only for -t"):
        spec("all", Mode.PASTA)
    with pytest.raises(ConfigError, match="'auto' is pasta-only for -t"):
        spec("auto", Mode.PASST)


def test_spec_single_port_range_and_mixed_items() -> None:
    fwd = spec("10-12:20-22,30,40:41")
    assert fwd.ports == ((10, 20), (11, 21), (12, 22), (30, 30), (40, 41))


def test_spec_sorted_by_listening_port() -> None:
    assert spec("80,22").ports == ((22, 22), (80, 80))


def test_spec_boundaries() -> None:
    assert spec("1").mapping() == {1: 1}
    assert spec("65535:1").mapping() == {65535: 1}
    assert spec("65530-65535").mapping() == {p: p for p in range(65530, 65536)}


@pytest.mark.conformance("ports.syntax")
@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("0", "invalid port '0'"),
        ("65536", "invalid port '65536'"),
        ("80-22", "first port is above last"),
        ("1-3:5-6", "ranges of different length"),
        ("abc", "invalid port 'abc'"),
        ("22,,25", "empty item"),
        ("22,", "empty item"),
        (",22", "empty item"),
        ("", "empty port spec"),
        ("22:", "empty port"),
        (":22", "empty port"),
        ("22-", "empty port"),
        ("-22", "empty port"),
        ("22:0", "invalid port '0'"),
        ("22:70000", "invalid port '70000'"),
        ("1-2-3", "invalid port '2-3'"),
        ("22,22", "port 22 given twice"),
        ("20-30,25", "port 25 given twice"),
        ("+22", "invalid port '\\+22'"),
        ("999999", "invalid port '999999'"),
        ("22-80-32:90", "invalid port '80-32'"),
        ("300.1.1.1/22", "invalid address '300.1.1.1'"),
        ("192.0.2.1/", "no ports after address"),
        ("22,~22", "excludes every port"),
    ],
)
def test_spec_malformed(text: str, reason: str) -> None:
    """Malformed specs (0, 65536, 80-22, 1-3:5-6, abc, empty item, ...) fail with a one-line reason naming the option."""
    with pytest.raises(ConfigError, match=reason) as info:
        spec(text)
    message = str(info.value)
    assert "\n" not in message
    assert "-t" in message


def test_spec_option_named_in_error() -> None:
    with pytest.raises(ConfigError, match="--udp-ns"):
        parse_port_spec("0", mode=Mode.PASTA, option="--udp-ns")


# ------------------------------------------------------------------ upstream extensions


def test_spec_exclusions_remove_ports() -> None:
    fwd = spec("1000-1004,~1002")
    assert fwd.mode is FwdMode.SPEC
    assert fwd.mapping() == {1000: 1000, 1001: 1001, 1003: 1003, 1004: 1004}
    assert fwd.excluded == frozenset({1002})


def test_spec_exclusion_range_keeps_translation() -> None:
    fwd = spec("10-15:110-115,~12-13")
    assert fwd.mapping() == {10: 110, 11: 111, 14: 114, 15: 115}


@pytest.mark.conformance("ports.syntax")
def test_spec_only_exclusions_means_every_port_but_these() -> None:
    """`~PORT` alone is every non-ephemeral port but PORT (ALL), in pasta as in passt (today's passt)."""
    passt = spec("~22,~80-90")
    assert passt.mode is FwdMode.ALL
    assert passt.excluded == frozenset({22, *range(80, 91)})
    pasta = spec("~22", Mode.PASTA)
    assert pasta.mode is FwdMode.ALL, "[ports.syntax] pasta's ~22 is not auto minus 22"
    assert pasta.excluded == frozenset({22})


def test_spec_bind_address_prefix() -> None:
    fwd = spec("192.0.2.1/22,25")
    assert fwd.addr == IPv4Address("192.0.2.1")
    assert fwd.mapping() == {22: 22, 25: 25}
    fwd6 = spec("2001:db8::1/8080:80")
    assert fwd6.addr == IPv6Address("2001:db8::1")
    assert fwd6.mapping() == {8080: 80}
    assert spec("[::1]/22").addr == IPv6Address("::1")


def test_merge_lists() -> None:
    merged = merge_port_fwd(spec("22"), spec("80:8080"), option="-t")
    assert merged.mapping() == {22: 22, 80: 8080}
    with pytest.raises(ConfigError, match="port 22 given twice in -t"):
        merge_port_fwd(spec("22"), spec("20-30"), option="-t")
    with pytest.raises(ConfigError, match="-t given more than once"):
        merge_port_fwd(spec("22"), spec("none"), option="-t")
    with pytest.raises(ConfigError, match="different bind addresses"):
        merge_port_fwd(spec("192.0.2.1/22"), spec("80"), option="-t")


@pytest.mark.conformance("ports.udp-follows-tcp")
def test_follow_maps_listening_ports_to_themselves() -> None:
    """UDP following TCP forwards the TCP listening port numbers without translation."""
    udp = follow(spec("2222:22,80-81:8080-8081"))
    assert udp.mode is FwdMode.SPEC
    assert udp.mapping() == {80: 80, 81: 81, 2222: 2222}, "[ports.udp-follows-tcp] no translation"
    assert not udp.explicit
    every = follow(spec("~22"))
    assert (every.mode, every.excluded) == (FwdMode.ALL, frozenset({22})), \
        "[ports.udp-follows-tcp] all follows all, with its exclusions"
    assert follow(spec("auto", Mode.PASTA)).mode is FwdMode.AUTO, "[ports.udp-follows-tcp] auto"


# ------------------------------------------------------------------ /proc/net scans

# Shaped like the kernel's /proc/net/tcp (net/ipv4/tcp_ipv4.c get_tcp4_sock): LISTEN on
# 0.0.0.0:22 and 127.0.0.1:631, one ESTABLISHED (01) from :22, one TIME_WAIT (06).
PROC_TCP = """\
  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000:0016 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1234 1 0000000000000000 100 0 0 10 0
   1: 0100007F:0277 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1235 1 0000000000000000 100 0 0 10 0
   2: 0200000A:0016 0300000A:D431 01 00000000:00000000 02:000A7B2C 00000000     0        0 1236 4 0000000000000000 20 4 30 10 -1
   3: 0200000A:1F90 0300000A:D432 06 00000000:00000000 03:00000D5C 00000000     0        0 0 3 0000000000000000
"""

# /proc/net/tcp6: LISTEN on [::]:8080, ESTABLISHED from :443.
PROC_TCP6 = """\
  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000000000000000000000000000:1F90 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 2234 1 0000000000000000 100 0 0 10 0
   1: 00000000000000000000000001000000:01BB 00000000000000000000000001000000:C350 01 00000000:00000000 00:00000000 00000000     0        0 2235 1 0000000000000000 20 4 30 10 -1
"""

# /proc/net/udp: bound unconnected 0.0.0.0:53 and 127.0.0.1:5353 (07, rport 0),
# a connected socket on :40000 (01 with a remote port), a connected one in
# state 07 but with a remote port (must not count).
PROC_UDP = """\
   sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops
  100: 00000000:0035 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 3234 2 0000000000000000 0
  101: 0100007F:14E9 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 3235 2 0000000000000000 0
  102: 0200000A:9C40 0300000A:0035 01 00000000:00000000 00:00000000 00000000     0        0 3236 2 0000000000000000 0
  103: 0200000A:9C41 0300000A:0035 07 00000000:00000000 00:00000000 00000000     0        0 3237 2 0000000000000000 0
"""

PROC_UDP6 = """\
  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops
  200: 00000000000000000000000000000000:0223 00000000000000000000000000000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 4234 2 0000000000000000 0
"""


@pytest.fixture
def proc_net(tmp_path: Path) -> Path:
    for name, text in (("tcp", PROC_TCP), ("tcp6", PROC_TCP6), ("udp", PROC_UDP),
                       ("udp6", PROC_UDP6)):
        (tmp_path / name).write_text(text)
    return tmp_path


@pytest.mark.conformance("ports.auto-scan")
def test_scan_tcp_listening_only(proc_net: Path) -> None:
    """`auto` (TCP) takes the LISTEN sockets of /proc/net/tcp and tcp6, nothing else."""
    ports = scan_bound_ports([str(proc_net / "tcp"), str(proc_net / "tcp6")], tcp=True)
    assert ports == {22, 631, 8080}


@pytest.mark.conformance("ports.auto-scan")
def test_scan_udp_bound_unconnected(proc_net: Path) -> None:
    """`auto` (UDP) takes bound, unconnected sockets of /proc/net/udp and udp6."""
    ports = scan_bound_ports([str(proc_net / "udp"), str(proc_net / "udp6")], tcp=False)
    assert ports == {53, 5353, 547}


def test_scan_missing_file_and_garbage(tmp_path: Path) -> None:
    junk = tmp_path / "junk"
    junk.write_text("header\n  0: nothing here\n 1: 00000000:ZZZZ 00000000:0000 0A\n"
                    " 2: 00000000:0016 00000000:0000 XX\n 3: 00000000:0000 00000000:0000 0A\n")
    assert scan_bound_ports([str(tmp_path / "absent"), str(junk)], tcp=True) == set()


def test_scan_real_proc_sees_our_listener() -> None:
    """Against the live kernel: a socket we listen on shows up in /proc/net/tcp{,6}."""
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        port = s.getsockname()[1]
        assert port in scan_bound_ports(["/proc/net/tcp", "/proc/net/tcp6"], tcp=True)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
        u.bind(("127.0.0.1", 0))
        uport = u.getsockname()[1]
        assert uport in scan_bound_ports(["/proc/net/udp", "/proc/net/udp6"], tcp=False)
        assert uport not in scan_bound_ports(["/proc/net/tcp"], tcp=True)


def test_ephemeral_range(tmp_path: Path) -> None:
    f = tmp_path / "range"
    f.write_text("32768\t60999\n")
    assert ephemeral_range(str(f)) == (32768, 60999)
    f.write_text("1024 2048\n")
    assert ephemeral_range(str(f)) == (1024, 2048)
    f.write_text("garbage\n")
    assert ephemeral_range(str(f)) == DEFAULT_EPHEMERAL_RANGE
    f.write_text("5000 4000\n")
    assert ephemeral_range(str(f)) == DEFAULT_EPHEMERAL_RANGE
    assert ephemeral_range(str(tmp_path / "absent")) == DEFAULT_EPHEMERAL_RANGE
    low, high = ephemeral_range()
    assert 1 <= low <= high <= 65535
