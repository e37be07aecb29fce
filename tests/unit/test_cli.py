"""Command line of passt and pasta: every option, both spellings, every error path.

The host is a hand-built `HostInfo` (fakes.CLI_HOST) shaped like the man page's EXAMPLES
(eth0, 192.168.1.118/24 via 192.168.1.1, a DHCPv6 /128 address, a
link-local IPv6 gateway), so no test depends on the machine it runs on.
Nothing here sends a packet: the addresses are data.
"""

from __future__ import annotations

import grp
import pwd
import re
from collections.abc import Iterator
from dataclasses import replace
from ipaddress import IPv4Address, IPv6Address

import pytest

import passt.cli as cli
from passt.cli import ConfigError, help_text, parse_args
from passt.config import Config, FwdMode, Mode
from passt.hostinfo import HostInfo
from tests.unit.fakes import CLI_HOST, cli_error

MAC = bytes.fromhex("2816ad39a9ea")
ADDR4 = IPv4Address("192.168.1.118")
GW4 = IPv4Address("192.168.1.1")
ADDR6 = IPv6Address("2a02:6d40:3ca5:2001:b81d:fa4a:8cdd:cf17")
GW6 = IPv6Address("fe80::62e3:27ff:fe33:2b01")

HOST = CLI_HOST

NO_ROUTES = HostInfo(ifname="", mac=bytes(6), mtu=1500)


def passt(*argv: str, host: HostInfo = HOST) -> Config:
    return parse_args(Mode.PASST, list(argv), host=host)


def pasta(*argv: str, host: HostInfo = HOST) -> Config:
    return parse_args(Mode.PASTA, list(argv), host=host)


error = cli_error


@pytest.fixture(autouse=True)
def _no_discovery(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """A test that forgets host= must not read the real machine."""

    def refuse(*_a: object, **_k: object) -> HostInfo:
        raise AssertionError("discover() called without a fake host")

    monkeypatch.setattr(cli, "discover", refuse)
    yield


# ------------------------------------------------------------------ defaults


def test_defaults_passt() -> None:
    conf = passt()
    assert conf.mode is Mode.PASST
    assert conf.out_ifname == "eth0"
    assert conf.our_mac == MAC
    assert conf.ip4 is not None and conf.ip6 is not None
    assert conf.ip4.addr == ADDR4 and conf.ip4.prefix_len == 24 and conf.ip4.gateway == GW4
    assert conf.ip4.host_addr == ADDR4
    assert conf.ip6.addr == ADDR6 and conf.ip6.gateway == GW6 and conf.ip6.host_addr == ADDR6
    assert conf.mtu == 65520 and conf.tap_mtu == 65520  # advertised by default, as today's passt
    assert (conf.tcp, conf.udp, conf.icmp, conf.dhcp, conf.ndp, conf.dhcpv6, conf.ra) == (True,) * 7
    assert conf.tcp_in.mode is FwdMode.NONE and conf.udp_in.mode is FwdMode.NONE
    assert conf.tcp_out.mode is FwdMode.NONE and conf.udp_out.mode is FwdMode.NONE
    assert not (conf.debug or conf.quiet or conf.foreground or conf.stderr)
    assert conf.pcap is None and conf.socket_path is None and conf.runas is None
    assert conf.ns_ifname == "" and conf.command == () and conf.target_pid is None


def test_defaults_pasta() -> None:
    conf = pasta()
    assert conf.mode is Mode.PASTA
    assert conf.ns_ifname == "eth0" and conf.tap_name == "eth0"
    for fwd in (conf.tcp_in, conf.udp_in, conf.tcp_out, conf.udp_out):
        assert fwd.mode is FwdMode.AUTO
        assert not fwd.explicit
    assert conf.command == () and conf.target_pid is None and conf.netns is None
    assert not conf.config_net


@pytest.mark.conformance("host.ipv6-prefix")
def test_ipv6_prefix_is_64_for_host_slash_128() -> None:
    """A host /128 (DHCPv6) address gives a /64 prefix; a shorter host prefix is kept."""
    assert passt().ip6 is not None and passt().ip6.prefix_len == 64  # type: ignore[union-attr]
    conf = passt("-a", "2001:db8:5::7")
    assert conf.ip6 is not None and conf.ip6.prefix_len == 56


# ------------------------------------------------------------------ help / version


@pytest.mark.parametrize("mode", [Mode.PASST, Mode.PASTA])
@pytest.mark.parametrize("flag", ["-h", "--help"])
def test_help(mode: Mode, flag: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        parse_args(mode, ["-f", flag, "--bogus"], host=HOST)
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert out == help_text(mode)
    assert out.startswith(f"Usage: {mode.value} ")
    for opt in cli.OPTIONS:
        shown = f"--{opt.long}" in out
        assert shown == (mode in opt.modes and not opt.hidden), opt.long


def test_help_mentions_per_program_defaults() -> None:
    passt_help, pasta_help = help_text(Mode.PASST), help_text(Mode.PASTA)
    assert "'all'" in passt_help and "'auto'" not in passt_help
    assert "'auto'" in pasta_help and "'all'" not in pasta_help
    assert "/etc/resolv.conf" in passt_help and "/etc/resolv.conf" not in pasta_help
    assert "TARGET_PID" in pasta_help


@pytest.mark.parametrize(("mode", "expected"), [(Mode.PASST, "passt-py "), (Mode.PASTA, "pasta ")])
def test_version(mode: Mode, expected: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        parse_args(mode, ["--version"], host=HOST)
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(expected) and out.endswith("\n") and out.count("\n") == 1
    assert error(mode, "--version=1") == "option '--version' doesn't allow an argument"


# ------------------------------------------------------------------ flags


FLAGS = [
    ("opt.debug", "-d", "--debug", "debug"),
    ("opt.quiet", "-q", "--quiet", "quiet"),
    ("opt.foreground", "-f", "--foreground", "foreground"),
    ("opt.stderr", "-e", "--stderr", "stderr"),
]


@pytest.mark.parametrize("mode", [Mode.PASST, Mode.PASTA])
@pytest.mark.parametrize(("marker", "short", "long", "attr"), FLAGS)
def test_flag_short_and_long(marker: str, short: str, long: str, attr: str, mode: Mode) -> None:
    """-d/-q/-f/-e and their long forms set the matching switch."""
    for spelled in (short, long):
        conf = parse_args(mode, [spelled], host=HOST)
        assert getattr(conf, attr) is True
    assert getattr(parse_args(mode, [], host=HOST), attr) is False


@pytest.mark.conformance("opt.debug", "opt.quiet", "opt.foreground", "opt.stderr")
def test_flags_markers() -> None:
    """-d means verbose and foreground; -q quiet; -f foreground; -e stderr."""
    conf = passt("-d")
    assert conf.debug and conf.foreground
    conf = passt("-q", "-e")
    assert conf.quiet and conf.stderr and not conf.debug and not conf.foreground
    assert passt("-f").foreground


def test_debug_and_quiet_conflict() -> None:
    assert error(Mode.PASST, "-d", "-q") == "-d and -q given together; give at most one"


@pytest.mark.parametrize(
    ("opt", "attr"),
    [("--no-tcp", "tcp"), ("--no-udp", "udp"), ("--no-icmp", "icmp"), ("--no-dhcp", "dhcp"),
     ("--no-ndp", "ndp"), ("--no-dhcpv6", "dhcpv6"), ("--no-ra", "ra")],
)
@pytest.mark.parametrize("mode", [Mode.PASST, Mode.PASTA])
def test_no_protocol_switches(opt: str, attr: str, mode: Mode) -> None:
    """Each --no-* switch turns off exactly its handler."""
    conf = parse_args(mode, [opt], host=HOST)
    switches = {a: getattr(conf, a) for a in ("tcp", "udp", "icmp", "dhcp", "ndp", "dhcpv6", "ra")}
    assert switches == {a: a != attr for a in switches}


def test_no_tcp_udp_turn_forwarding_off() -> None:
    conf = pasta("--no-tcp")
    assert conf.tcp_in.mode is FwdMode.NONE and conf.tcp_out.mode is FwdMode.NONE
    assert conf.udp_in.mode is FwdMode.AUTO
    conf = pasta("--no-udp", "-t", "22")
    assert conf.udp_in.mode is FwdMode.NONE and conf.udp_out.mode is FwdMode.NONE
    assert error(Mode.PASST, "--no-tcp", "-t", "22") == "-t given with --no-tcp; drop one of them"
    assert error(Mode.PASTA, "-U", "53", "--no-udp") == "-U given with --no-udp; drop one of them"
    assert passt("--no-tcp", "-t", "none").tcp_in.mode is FwdMode.NONE


def test_bundled_short_flags() -> None:
    conf = passt("-fde")
    assert conf.foreground and conf.debug and conf.stderr
    conf = passt("-fm1500")
    assert conf.foreground and conf.mtu == 1500
    conf = passt("-fm", "1500")
    assert conf.mtu == 1500
    conf = passt("-4f")
    assert conf.ip6 is None and conf.foreground
    assert error(Mode.PASST, "-fx") == "invalid option -- 'x'"
    assert error(Mode.PASST, "-46") == "-4 and -6 given together; give at most one"


# ------------------------------------------------------------------ -p / --pcap


PCAP_NAME = re.compile(r"^/tmp/(passt|pasta)_\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ_\d+\.pcap$")


@pytest.mark.conformance("opt.pcap")
@pytest.mark.parametrize("mode", [Mode.PASST, Mode.PASTA])
@pytest.mark.parametrize("spelled", ["-p", "--pcap"])
def test_pcap_default_name(mode: Mode, spelled: str) -> None:
    """Bare -p captures to /tmp/<program>_<ISO 8601 timestamp>_<instance>.pcap."""
    conf = parse_args(mode, [spelled], host=HOST)
    assert conf.pcap is not None
    match = PCAP_NAME.match(conf.pcap)
    assert match and match.group(1) == mode.value


def test_pcap_default_name_parts() -> None:
    path = cli.default_pcap_path(Mode.PASTA, now=0.0, instance=3)
    assert path == "/tmp/pasta_1970-01-01T00:00:00Z_3.pcap"


@pytest.mark.conformance("opt.pcap")
def test_pcap_with_file() -> None:
    """-p FILE, -pFILE, --pcap FILE and --pcap=FILE all capture to FILE."""
    for argv in (["-p", "cap.pcap"], ["-pcap.pcap"], ["--pcap", "cap.pcap"], ["--pcap=cap.pcap"]):
        assert passt(*argv).pcap == "cap.pcap", argv
    assert passt("-fpx.pcap").pcap == "x.pcap"
    # passt: the next word is the file unless it is an option
    conf = passt("-p", "-f")
    assert conf.foreground and conf.pcap is not None and PCAP_NAME.match(conf.pcap)


def test_pcap_pasta_separate_word_only_if_file_like() -> None:
    conf = pasta("-p", "sh", "-c", "true")
    assert conf.command == ("sh", "-c", "true")
    assert conf.pcap is not None and PCAP_NAME.match(conf.pcap)
    assert pasta("-p", "/tmp/x").pcap == "/tmp/x"
    assert pasta("--pcap", "x.pcap").pcap == "x.pcap"
    assert pasta("--pcap=x").pcap == "x"
    conf = pasta("-p", "1234")
    assert conf.target_pid == 1234 and conf.pcap is not None and PCAP_NAME.match(conf.pcap)


def test_pcap_errors() -> None:
    assert error(Mode.PASST, "--pcap=") == "empty file name for --pcap"
    assert error(Mode.PASST, "-p", "a", "-p", "b") == \
        "-p given more than once (also as -p); give it once"


# ------------------------------------------------------------------ -m


@pytest.mark.conformance("opt.mtu")
@pytest.mark.parametrize("spelled", ["-m", "--mtu"])
def test_mtu(spelled: str) -> None:
    """-m sets the MTU sent via DHCP/NDP and the tap MTU; without it none is sent."""
    conf = passt(spelled, "1500")
    assert conf.mtu == 1500 and conf.tap_mtu == 1500
    assert passt(spelled, "68").mtu == 68
    assert passt(spelled, "65520").mtu == 65520
    assert passt(f"{spelled}=9000" if spelled.startswith("--") else f"{spelled}9000").mtu == 9000


def test_mtu_zero_disables_assignment() -> None:
    """-m 0 (upstream): no MTU option in DHCP/NDP; pasta's tap keeps 65520; the help says so."""
    conf = pasta("-m", "0")
    assert conf.mtu is None and conf.tap_mtu == 65520 and conf.ip6 is not None
    assert passt().mtu == 65520
    for mode in (Mode.PASST, Mode.PASTA):
        text = help_text(mode)
        assert "default: 65520, sent via DHCP/NDP" in text and "no MTU options sent" not in text
        assert "a zero value disables assignment" in text


@pytest.mark.parametrize("value", ["67", "65521", "1", "abc", "", "-5", "1e3", "²", "9" * 5000])
def test_mtu_invalid(value: str) -> None:
    message = error(Mode.PASST, "-m", value)
    assert "-m" in message and "68" in message and "65520" in message


@pytest.mark.conformance("opt.mtu")
def test_mtu_below_1280_disables_ipv6(capsys: pytest.CaptureFixture[str]) -> None:
    """IPv6 needs 1280 (RFC 8200): a smaller -m disables it with a warning."""
    conf = passt("-m", "1279")
    assert conf.ip6 is None and conf.ip4 is not None and conf.mtu == 1279
    err = capsys.readouterr().err
    assert err == "passt: MTU 1279 is below IPv6's minimum of 1280: IPv6 disabled\n"
    assert passt("-m", "1280").ip6 is not None
    assert "below IPv6's minimum" in error(Mode.PASST, "-6", "-m", "1000")


# ------------------------------------------------------------------ -a / -n / -M / -g / -i


@pytest.mark.conformance("opt.address")
@pytest.mark.parametrize("spelled", ["-a", "--address"])
def test_address(spelled: str) -> None:
    """-a assigns the IPv4 or IPv6 address, once per family; defaults come from the host."""
    conf = passt(spelled, "192.168.1.200")
    assert conf.ip4 is not None and conf.ip4.addr == IPv4Address("192.168.1.200")
    assert conf.ip6 is not None and conf.ip6.addr == ADDR6
    conf = passt(spelled, "2001:db8::9")
    assert conf.ip6 is not None and conf.ip6.addr == IPv6Address("2001:db8::9")
    assert conf.ip4 is not None and conf.ip4.addr == ADDR4
    conf = passt(spelled, "10.0.0.2", spelled, "2001:db8::9")
    assert conf.ip4 is not None and conf.ip4.addr == IPv4Address("10.0.0.2")
    assert conf.ip6 is not None and conf.ip6.addr == IPv6Address("2001:db8::9")
    # the host's own address stays what the host has
    assert conf.ip4.host_addr == ADDR4


def test_address_with_prefix() -> None:
    conf = passt("-a", "10.0.0.2/20", "-a", "2001:db8::9/48")
    assert conf.ip4 is not None and conf.ip4.prefix_len == 20
    assert conf.ip6 is not None and conf.ip6.prefix_len == 48
    assert error(Mode.PASST, "-a", "10.0.0.2/20", "-n", "24") == \
        "-n given together with -a ADDR/PREFIX; give the prefix once"
    assert error(Mode.PASST, "-a", "10.0.0.2/33") == \
        "invalid prefix length '/33' for -a: give 1-32"


@pytest.mark.conformance("opt.address")
@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("10.0.0.300", "invalid address '10.0.0.300' for -a"),
        ("bogus", "invalid address 'bogus' for -a"),
        ("", "invalid address '' for -a"),
        ("0.0.0.0", "invalid address '0.0.0.0' for -a: unspecified"),
        ("127.0.0.2", "invalid address '127.0.0.2' for -a: loopback"),
        ("224.0.0.1", "invalid address '224.0.0.1' for -a: multicast"),
        ("255.255.255.255", "invalid address '255.255.255.255' for -a: broadcast"),
        ("::", "invalid address '::' for -a: unspecified"),
        ("::1", "invalid address '::1' for -a: loopback"),
        ("ff02::1", "invalid address 'ff02::1' for -a: multicast"),
        ("fe80::5", "invalid address 'fe80::5' for -a: link-local"),
        ("::ffff:10.0.0.1", "invalid address '::ffff:10.0.0.1' for -a: IPv4-mapped"),
    ],
)
def test_address_invalid(value: str, expected: str) -> None:
    """A malformed or unusable -a is one line naming the value and the option."""
    assert error(Mode.PASTA, "-a", value) == expected


@pytest.mark.conformance("opt.address.per-family")
def test_address_once_per_family() -> None:
    """A second -a of the same family is a usage error naming both values."""
    assert error(Mode.PASST, "-a", "10.0.0.2", "--address", "10.0.0.3") == \
        "--address given twice for IPv4 (10.0.0.2, 10.0.0.3); give one address per family"
    assert "given twice for IPv6" in error(Mode.PASST, "-a", "2001:db8::1", "-a", "2001:db8::2")


@pytest.mark.conformance("opt.netmask")
@pytest.mark.parametrize("spelled", ["-n", "--netmask"])
def test_netmask_forms(spelled: str) -> None:
    """-n takes dot-decimal or a number of bits."""
    for value, bits in (("255.255.255.0", 24), ("24", 24), ("255.255.240.0", 20), ("/16", 16),
                        ("32", 32), ("255.255.255.255", 32), ("1", 1)):
        conf = passt(spelled, value)
        assert conf.ip4 is not None and conf.ip4.prefix_len == bits, value
    assert passt(spelled, "255.255.240.0").ip4.netmask == IPv4Address("255.255.240.0")  # type: ignore[union-attr]


@pytest.mark.parametrize("value", ["255.0.255.0", "33", "0", "abc", "", "255.255.255.256", "24.5"])
def test_netmask_invalid(value: str) -> None:
    message = error(Mode.PASST, "-n", value)
    assert message.startswith(f"invalid netmask '{value}' for -n")


@pytest.mark.conformance("opt.netmask", "opt.netmask.default-host", "opt.netmask.default-class")
@pytest.mark.parametrize(
    ("addr", "bits"),
    [
        ("192.168.1.118", 24),  # the host's own address: its prefix
        ("10.11.0.1", 20),      # another host address: that address's prefix
        ("10.1.2.3", 8),        # class A
        ("172.16.5.4", 16),     # class B
        ("192.0.2.7", 24),      # class C
        ("240.0.0.9", 24),      # beyond class C
    ],
)
def test_netmask_default(addr: str, bits: int) -> None:
    """Without -n: the host address matching -a gives the mask, else the RFC 4632 class."""
    conf = passt("-a", addr)
    assert conf.ip4 is not None and conf.ip4.prefix_len == bits


@pytest.mark.conformance("opt.mac-addr", "opt.mac-addr.default")
@pytest.mark.parametrize("spelled", ["-M", "--mac-addr"])
def test_mac(spelled: str) -> None:
    """-M sets our MAC; the default is the host interface's."""
    assert passt(spelled, "9a:55:9a:55:9a:55").our_mac == bytes.fromhex("9a559a559a55")
    assert passt(spelled, "02-00-00-0a-0B-c").our_mac == bytes.fromhex("0200000a0b0c")
    assert passt().our_mac == MAC


@pytest.mark.parametrize("value", ["9a:55:9a:55:9a", "9a:55:9a:55:9a:55:01", "zz:55:9a:55:9a:55",
                                   "", "9a55.9a55.9a55", "01:00:5e:00:00:01", "ff:ff:ff:ff:ff:ff",
                                   "9a:55:9a:55:9a:555"])
def test_mac_invalid(value: str) -> None:
    assert error(Mode.PASTA, "--mac-addr", value).startswith(
        f"invalid MAC address '{value}' for --mac-addr")


def test_mac_fallback_when_host_has_none() -> None:
    conf = passt(host=replace(HOST, mac=bytes(6)))
    assert conf.our_mac == cli.FALLBACK_MAC


@pytest.mark.conformance("opt.gateway", "opt.gateway.per-family")
@pytest.mark.parametrize("spelled", ["-g", "--gateway"])
def test_gateway(spelled: str) -> None:
    """-g sets the IPv4 router or the IPv6 RA/DHCPv6 source, once per family."""
    conf = passt(spelled, "192.168.1.254", spelled, "fe80::1")
    assert conf.ip4 is not None and conf.ip4.gateway == IPv4Address("192.168.1.254")
    assert conf.ip6 is not None and conf.ip6.gateway == IPv6Address("fe80::1")
    conf = passt(spelled, "2001:db8::1")
    assert conf.ip6 is not None and conf.ip6.gateway == IPv6Address("2001:db8::1")
    assert conf.ip4 is not None and conf.ip4.gateway == GW4
    assert "given twice for IPv4" in error(Mode.PASST, spelled, "10.0.0.1", spelled, "10.0.0.2")
    assert "given twice for IPv6" in error(Mode.PASST, spelled, "fe80::1", spelled, "fe80::2")
    assert error(Mode.PASST, spelled, "10.0.0.256") == f"invalid address '10.0.0.256' for {spelled}"
    assert error(Mode.PASST, spelled, "ff02::2") == f"invalid address 'ff02::2' for {spelled}: multicast"


@pytest.mark.conformance("opt.gateway.default")
def test_gateway_defaults() -> None:
    """Without -g the host's default-route gateways are used; a device route gives fe80::1 for IPv6."""
    conf = passt()
    assert conf.ip4 is not None and conf.ip4.gateway == GW4
    # a device default route (no gateway): no IPv4 router; IPv6 falls back to fe80::1
    conf = passt(host=replace(HOST, gw4=None, gw6=None))
    assert conf.ip4 is not None and conf.ip4.gateway is None
    assert conf.ip6 is not None and conf.ip6.gateway == IPv6Address("fe80::1")


@pytest.mark.conformance("opt.interface", "host.default-route-iface")
@pytest.mark.parametrize("spelled", ["-i", "--interface"])
def test_interface_passed_to_discovery(spelled: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """-i names the interface discovery reads; without it discovery picks the default route's."""
    asked: list[str | None] = []

    def fake_discover(ifname: str | None = None, **_k: object) -> HostInfo:
        asked.append(ifname)
        return replace(HOST, ifname=ifname or "eth0")

    monkeypatch.setattr(cli, "discover", fake_discover)
    conf = parse_args(Mode.PASTA, [spelled, "wlan0"])
    assert conf.out_ifname == "wlan0" and conf.ns_ifname == "wlan0"
    conf = parse_args(Mode.PASST, [])
    assert conf.out_ifname == "eth0"
    assert asked == ["wlan0", None]


def test_interface_invalid_and_discovery_error(monkeypatch: pytest.MonkeyPatch) -> None:
    assert error(Mode.PASST, "-i", "x" * 16).startswith("invalid interface name")
    assert error(Mode.PASST, "-i", "a/b").startswith("invalid interface name 'a/b' for -i")

    def failing(ifname: str | None = None, **_k: object) -> HostInfo:
        raise ConfigError(f"no interface named '{ifname}' for -i; see 'ip link'")

    monkeypatch.setattr(cli, "discover", failing)
    with pytest.raises(ConfigError) as info:
        parse_args(Mode.PASST, ["-i", "nope0"])
    assert str(info.value) == "no interface named 'nope0' for -i; see 'ip link'"


# ------------------------------------------------------------------ families


@pytest.mark.conformance("opt.ipv4-only")
@pytest.mark.parametrize("spelled", ["-4", "--ipv4-only"])
def test_ipv4_only(spelled: str) -> None:
    """-4 disables IPv6."""
    conf = pasta(spelled)
    assert conf.ip4 is not None and conf.ip6 is None
    assert error(Mode.PASST, spelled, host=replace(HOST, route4=False)).startswith(
        "-4 given but no IPv4 default route")
    assert error(Mode.PASST, spelled, "-a", "2001:db8::1") == \
        "IPv6 -a/-g given with -4 (IPv4 only); drop one of them"


@pytest.mark.conformance("opt.ipv6-only")
@pytest.mark.parametrize("spelled", ["-6", "--ipv6-only"])
def test_ipv6_only(spelled: str) -> None:
    """-6 disables IPv4."""
    conf = pasta(spelled)
    assert conf.ip6 is not None and conf.ip4 is None
    assert error(Mode.PASST, spelled, host=replace(HOST, addr6=None)).startswith(
        "-6 given but no IPv6 default route and global address")
    assert error(Mode.PASST, spelled, "-g", "10.0.0.1") == \
        "IPv4 -a/-g given with -6 (IPv6 only); drop one of them"


def test_ipv4_and_ipv6_only_together() -> None:
    assert error(Mode.PASTA, "--ipv4-only", "--ipv6-only") == \
        "-4 and -6 given together; give at most one"


@pytest.mark.conformance("host.family-enable")
def test_family_needs_route_and_address() -> None:
    """A family is on only with a default route and an address on the host."""
    conf = passt(host=replace(HOST, route6=False))
    assert conf.ip4 is not None and conf.ip6 is None
    conf = passt(host=replace(HOST, addr4=None))
    assert conf.ip4 is None and conf.ip6 is not None
    assert error(Mode.PASST, host=NO_ROUTES) == \
        "no interface with a default route and an address; use -i, or -a and -g"
    assert error(Mode.PASST, "-i", "dummy0", host=NO_ROUTES) == \
        "no interface with a default route and an address on dummy0; use -i, or -a and -g"


def test_explicit_address_and_gateway_without_routes() -> None:
    conf = pasta("-a", "10.0.2.15/24", "-g", "10.0.2.2", host=NO_ROUTES)
    assert conf.ip4 is not None and conf.ip6 is None
    assert conf.ip4.addr == IPv4Address("10.0.2.15") and conf.ip4.gateway == IPv4Address("10.0.2.2")
    assert conf.our_mac == cli.FALLBACK_MAC and conf.ns_ifname == "eth0"


# ------------------------------------------------------------------ DNS / search


@pytest.mark.conformance("opt.dns", "opt.dns.repeat")
@pytest.mark.parametrize("spelled", ["-D", "--dns"])
def test_dns_repeatable_per_family(spelled: str) -> None:
    """-D is repeatable; each address goes to its family."""
    conf = pasta(spelled, "192.0.2.53", spelled, "2001:db8::53", spelled, "192.0.2.54")
    assert conf.ip4 is not None and conf.ip6 is not None
    assert conf.ip4.dns == (IPv4Address("192.0.2.53"), IPv4Address("192.0.2.54"))
    assert conf.ip6.dns == (IPv6Address("2001:db8::53"),)
    # only IPv4 given: no IPv6 DNS from resolv.conf either
    conf = passt(spelled, "192.0.2.53")
    assert conf.ip6 is not None and conf.ip6.dns == ()


@pytest.mark.conformance("opt.dns", "opt.dns.empty-disables")
def test_dns_empty_disables() -> None:
    """A single empty -D disables DNS options altogether."""
    conf = passt("-D", "")
    assert conf.ip4 is not None and conf.ip6 is not None
    assert conf.ip4.dns == () and conf.ip6.dns == ()
    assert passt("--dns=").ip4.dns == ()  # type: ignore[union-attr]
    assert error(Mode.PASST, "-D", "", "-D", "192.0.2.53") == \
        "-D \"\" (no DNS) given together with DNS addresses; give one or the other"
    assert error(Mode.PASST, "-D", "192.0.2.999") == "invalid address '192.0.2.999' for -D"
    assert error(Mode.PASST, "-D", "0.0.0.0") == "invalid address '0.0.0.0' for -D: not a unicast address"


@pytest.mark.conformance("dns.passt-resolvconf")
def test_dns_passt_default_from_resolv_conf() -> None:
    """passt sends the resolv.conf nameservers by default (loopback ones are unreachable, left out)."""
    conf = passt()
    assert conf.ip4 is not None and conf.ip6 is not None
    assert conf.ip4.dns == (IPv4Address("192.168.1.1"),)
    assert conf.ip6.dns == (IPv6Address("2001:db8::53"),)


@pytest.mark.conformance("dns.pasta-none", "search.pasta-none")
def test_dns_pasta_default_none() -> None:
    """pasta sends no DNS addresses and no search list unless -D/-S are given."""
    conf = pasta()
    assert conf.ip4 is not None and conf.ip6 is not None
    assert conf.ip4.dns == () and conf.ip6.dns == () and conf.search == ()


@pytest.mark.conformance("opt.search", "opt.search.empty-disables", "search.passt-resolvconf")
@pytest.mark.parametrize("spelled", ["-S", "--search"])
def test_search(spelled: str) -> None:
    """-S takes a space-separated list; empty disables; passt defaults to resolv.conf's."""
    assert pasta(spelled, "a.example b.example.").search == ("a.example", "b.example")
    assert pasta(spelled, "a.example", spelled, "c.example").search == ("a.example", "c.example")
    assert passt(spelled, "").search == ()
    assert passt().search == ("redhat.com", "example.org")
    assert error(Mode.PASST, spelled, "a..b") == f"invalid search domain 'a..b' for {spelled}"
    assert error(Mode.PASST, spelled, "x" * 64 + ".com").startswith("invalid search domain")


# ------------------------------------------------------------------ program-specific options


@pytest.mark.conformance("opt.socket")
@pytest.mark.parametrize("spelled", ["-s", "--socket"])
def test_socket_passt_only(spelled: str) -> None:
    """-s sets passt's socket path; pasta rejects it."""
    assert passt(spelled, "/tmp/x.sock").socket_path == "/tmp/x.sock"
    assert error(Mode.PASTA, spelled, "/tmp/x.sock") == f"{spelled} is passt-only; see pasta --help"
    assert error(Mode.PASST, spelled, "/" + "x" * 107).startswith(f"invalid socket path for {spelled}")


@pytest.mark.conformance("opt.ns-ifname")
@pytest.mark.parametrize("spelled", ["-I", "--ns-ifname"])
def test_ns_ifname_pasta_only(spelled: str) -> None:
    """-I names pasta's tap (default: the host interface's name); passt rejects it."""
    conf = pasta(spelled, "tap7")
    assert conf.ns_ifname == "tap7" and conf.tap_name == "tap7" and conf.out_ifname == "eth0"
    assert error(Mode.PASST, spelled, "tap7") == f"{spelled} is pasta-only; see passt --help"


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["-T", "22"], "-T is pasta-only; see passt --help"),
        (["--udp-ns=22"], "--udp-ns is pasta-only; see passt --help"),
        (["--config-net"], "--config-net is pasta-only; see passt --help"),
        (["--netns", "x"], "--netns is pasta-only; see passt --help"),
        (["--userns", "/x"], "--userns is pasta-only; see passt --help"),
    ],
)
def test_pasta_only_options_rejected_by_passt(argv: list[str], expected: str) -> None:
    assert error(Mode.PASST, *argv) == expected


@pytest.mark.conformance("opt.tcp-ports", "opt.udp-ports")
@pytest.mark.parametrize("mode", [Mode.PASST, Mode.PASTA])
def test_tcp_udp_ports(mode: Mode) -> None:
    """-t/--tcp-ports and -u/--udp-ports take a spec for host-to-guest forwarding."""
    conf = parse_args(mode, ["-t", "2222:22", "--udp-ports", "53,5353"], host=HOST)
    assert conf.tcp_in.mapping() == {2222: 22}
    assert conf.udp_in.mapping() == {53: 53, 5353: 5353} and conf.udp_in.explicit
    conf = parse_args(mode, ["--tcp-ports=80", "-u", "none"], host=HOST)
    assert conf.tcp_in.mapping() == {80: 80} and conf.udp_in.mode is FwdMode.NONE


def test_ports_default_and_keywords() -> None:
    assert passt("-t", "all").tcp_in.mode is FwdMode.ALL
    assert pasta("-t", "auto").tcp_in.mode is FwdMode.AUTO
    assert pasta("-t", "none").tcp_in.mode is FwdMode.NONE
    assert error(Mode.PASTA, "-t", "all") == "'all' is passt-only for -t; pasta uses 'auto'"
    assert error(Mode.PASST, "--udp-ports", "auto") == \
        "'auto' is pasta-only for --udp-ports; passt uses 'all'"


@pytest.mark.parametrize("value", ["0", "65536", "80-22", "1-3:5-6", "abc", "22,,25", ""])
def test_ports_malformed_via_cli(value: str) -> None:
    message = error(Mode.PASST, "-t", value)
    assert "-t" in message


def test_ports_repeated_merge() -> None:
    conf = passt("-t", "22", "-t", "80:8080")
    assert conf.tcp_in.mapping() == {22: 22, 80: 8080}
    assert error(Mode.PASST, "-t", "22", "-t", "22") == "port 22 given twice in -t"
    assert error(Mode.PASTA, "-t", "auto", "-t", "22").startswith("-t given more than once")


@pytest.mark.conformance("ports.udp-follows-tcp")
def test_udp_follows_tcp_passt() -> None:
    """Without -u, UDP forwards the ports of an explicit -t list, untranslated."""
    conf = passt("-t", "2222:22,8000-8001:9000-9001")
    assert conf.udp_in.mode is FwdMode.SPEC and not conf.udp_in.explicit
    assert conf.udp_in.mapping() == {2222: 2222, 8000: 8000, 8001: 8001}
    # -u given: it wins
    assert passt("-t", "22", "-u", "none").udp_in.mode is FwdMode.NONE
    assert passt("-t", "22", "-u", "53").udp_in.mapping() == {53: 53}
    # -t all: UDP all too; -t none: UDP keeps its default
    assert passt("-t", "all").udp_in.mode is FwdMode.ALL, "[ports.udp-follows-tcp] -t all"
    assert passt("-t", "none").udp_in.mode is FwdMode.NONE


@pytest.mark.conformance("ports.udp-follows-tcp", "opt.tcp-ns", "opt.udp-ns")
def test_udp_follows_tcp_pasta() -> None:
    """pasta: -u follows an explicit -t, -U an explicit -T; with TCP auto, UDP stays auto."""
    conf = pasta("-t", "8080:80", "-T", "5432")
    assert conf.udp_in.mapping() == {8080: 8080}
    assert conf.tcp_out.mapping() == {5432: 5432}
    assert conf.udp_out.mapping() == {5432: 5432} and not conf.udp_out.explicit
    conf = pasta("--tcp-ns", "none", "--udp-ns", "53")
    assert conf.tcp_out.mode is FwdMode.NONE and conf.udp_out.mapping() == {53: 53}
    assert conf.tcp_in.mode is FwdMode.AUTO and conf.udp_in.mode is FwdMode.AUTO
    conf = pasta("-t", "none")
    assert conf.udp_in.mode is FwdMode.AUTO


# ------------------------------------------------------------------ pasta positionals and namespaces


@pytest.mark.conformance("synopsis.pasta")
def test_pasta_target_pid() -> None:
    """An all-digit first operand is TARGET_PID; nothing may follow it."""
    conf = pasta("1234")
    assert conf.target_pid == 1234 and conf.command == ()
    conf = pasta("1234", "-t", "22")
    assert conf.target_pid == 1234 and conf.tcp_in.mapping() == {22: 22}
    assert error(Mode.PASTA, "1234", "5678") == \
        "unexpected argument '5678' after TARGET_PID; see pasta --help"
    assert error(Mode.PASTA, "1234", "ls").startswith("unexpected argument 'ls' after TARGET_PID 1234")
    assert error(Mode.PASTA, "0") == "invalid TARGET_PID '0'; see pasta --help"


@pytest.mark.conformance("synopsis.pasta")
def test_pasta_command() -> None:
    """Any other operand (or anything after --) is the command to run instead of $SHELL."""
    conf = pasta("-f", "ls", "-l", "--debug")
    assert conf.command == ("ls", "-l", "--debug") and not conf.debug
    conf = pasta("--", "123", "-x")
    assert conf.command == ("123", "-x") and conf.target_pid is None
    conf = pasta("-q", "--")
    assert conf.command == () and conf.quiet
    assert error(Mode.PASTA, "1234", "--", "ls") == \
        "TARGET_PID 1234 and a command given; give one of them; see pasta --help"


@pytest.mark.conformance("synopsis.passt")
def test_passt_rejects_positionals() -> None:
    """passt takes no operand: any positional word is a usage error."""
    assert error(Mode.PASST, "1234") == "unexpected argument '1234'; see passt --help"
    assert error(Mode.PASST, "--", "x") == "unexpected argument 'x'; see passt --help"
    assert passt("--").mode is Mode.PASST


def test_config_net_netns_userns() -> None:
    assert pasta("--config-net").config_net
    assert pasta("--netns", "blue").netns == "/run/netns/blue"
    conf = pasta("--netns=/proc/1/ns/net", "--userns", "/proc/1/ns/user")
    assert conf.netns == "/proc/1/ns/net" and conf.userns == "/proc/1/ns/user"
    assert pasta("--userns", "/proc/9/ns/user", "9").userns == "/proc/9/ns/user"
    assert error(Mode.PASTA, "--netns", "blue", "1234") == \
        "--netns and TARGET_PID given together; give one of them"
    assert error(Mode.PASTA, "--netns", "blue", "sh").startswith("--netns and a command")
    assert error(Mode.PASTA, "--userns", "/proc/1/ns/user") == "--userns needs --netns or a TARGET_PID"
    assert error(Mode.PASTA, "--netns", "..") == "invalid namespace '..' for --netns"


@pytest.mark.parametrize("mode", [Mode.PASST, Mode.PASTA])
def test_pid_and_log_file(mode: Mode) -> None:
    for argv in (["-P", "/run/p.pid", "-l", "/tmp/l.log"],
                 ["--pid=/run/p.pid", "--log-file", "/tmp/l.log"]):
        conf = parse_args(mode, argv, host=HOST)
        assert conf.pid_file == "/run/p.pid" and conf.log_file == "/tmp/l.log"
    assert error(mode, "-l", "") == "empty file name for -l"


def test_runas() -> None:
    assert passt("--runas", "1000:1001").runas == (1000, 1001)
    root = pwd.getpwuid(0)
    assert passt("--runas", root.pw_name).runas == (0, root.pw_gid)
    assert passt("--runas", f"{root.pw_name}:{grp.getgrgid(0).gr_name}").runas == (0, 0)
    assert passt("--runas", "0").runas == (0, root.pw_gid)
    # a numeric UID unknown to passwd: GID = UID
    unknown = next(u for u in range(54321, 60000) if not _uid_exists(u))
    assert passt("--runas", str(unknown)).runas == (unknown, unknown)
    assert error(Mode.PASST, "--runas", "no-such-user-xyz") == \
        "unknown user 'no-such-user-xyz' for --runas"
    assert error(Mode.PASST, "--runas", "0:no-such-group-xyz") == \
        "unknown group 'no-such-group-xyz' for --runas"
    assert error(Mode.PASST, "--runas", "0:").startswith("invalid user '0:' for --runas")


def _uid_exists(uid: int) -> bool:
    try:
        pwd.getpwuid(uid)
    except KeyError:
        return False
    return True


# ------------------------------------------------------------------ syntax errors


@pytest.mark.parametrize(
    ("mode", "argv", "expected"),
    [
        (Mode.PASTA, ["--foo"], "unrecognized option '--foo'"),
        (Mode.PASTA, ["--foo=bar"], "unrecognized option '--foo=bar'"),
        (Mode.PASST, ["-x"], "invalid option -- 'x'"),
        (Mode.PASST, ["-m"], "option requires an argument -- 'm'"),
        (Mode.PASTA, ["--mtu"], "option '--mtu' requires an argument"),
        (Mode.PASTA, ["--mt"], "option '--mtu' requires an argument"),
        (Mode.PASST, ["--debug=yes"], "option '--debug' doesn't allow an argument"),
        (Mode.PASTA, ["--no-d"],
         "option '--no-d' is ambiguous; possibilities: '--no-dhcp' '--no-dhcpv6'"),
        (Mode.PASST, ["-"], "unexpected argument '-'; see passt --help"),
        (Mode.PASST, ["-m", "1500", "--mtu", "1400"],
         "--mtu given more than once (also as -m); give it once"),
        (Mode.PASST, ["-M", "9a:55:9a:55:9a:55", "-M", "9a:55:9a:55:9a:56"],
         "-M given more than once (also as -M); give it once"),
    ],
)
def test_syntax_errors_one_line(mode: Mode, argv: list[str], expected: str) -> None:
    """Usage errors are a single line; unknown options and missing values in getopt's words."""
    assert error(mode, *argv) == expected


def test_every_option_parses_in_its_program() -> None:
    """Each option of the table is accepted, in its long form, by the programs it belongs to."""
    sample: dict[str, str] = {"pid": "/tmp/p", "log-file": "/tmp/l", "mtu": "1500",
              "address": "10.0.0.2", "netmask": "24", "mac-addr": "9a:55:9a:55:9a:55",
              "gateway": "10.0.0.1", "interface": "eth0", "dns": "192.0.2.53",
              "search": "example.com", "runas": "0", "socket": "/tmp/s", "ns-ifname": "tap0",
              "tcp-ports": "22", "udp-ports": "53", "tcp-ns": "22", "udp-ns": "53",
              "netns": "/proc/1/ns/net", "userns": "/proc/1/ns/user",
              "log-size": "65536", "fd": "5", "conf-path": "/tmp/c", "hostname": "vm1",
              "fqdn": "vm1.example.org", "dns-forward": "169.254.1.1", "dns-host": "192.0.2.53",
              "map-host-loopback": "169.254.1.3", "map-guest-addr": "169.254.1.2",
              "outbound": "192.168.1.118", "outbound-if4": "eth0", "outbound-if6": "eth0",
              "ns-mac-addr": "9a:55:9a:55:9a:56"}
    skip = {"help", "version", "ipv6-only", "quiet", "vhost-user"}
    for opt in cli.OPTIONS:
        if opt.long in skip:
            continue
        for mode in opt.modes:
            argv = [f"--{opt.long}"]
            if opt.arg is cli.Arg.REQUIRED:
                argv.append(sample[opt.long])
            else:
                assert opt.long not in sample
            if opt.long == "userns":
                argv += ["--netns", "/proc/1/ns/net"]
            parse_args(mode, argv, host=HOST)
