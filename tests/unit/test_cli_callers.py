"""The options today's callers pass (Podman, libvirt, RootlessKit): upstream passt's syntax.

Each option lands in its `Config` field exactly as given; bad values and
impossible combinations are one line.  The argv lists at the top are the
ones Podman 5.4 and libvirt 11.3 really pass (issue 9).
"""

from __future__ import annotations

from ipaddress import IPv4Address, IPv6Address

import pytest

from passt.cli import DEFAULT_LOG_SIZE, help_text, parse_args
from passt.config import Config, FwdMode, Mode
from tests.unit.fakes import CLI_HOST as HOST
from tests.unit.fakes import cli_error as error

PODMAN_54 = ["--config-net", "-t", "18080-18080:8080-8080", "--dns-forward", "169.254.1.1",
             "-u", "none", "-T", "none", "-U", "none", "--no-map-gw", "--quiet",
             "--netns", "/run/user/1000/netns/netns-1234", "--map-guest-addr", "169.254.1.2"]
LIBVIRT_113 = ["--one-off", "--socket", "/run/libvirt/qemu/passt/1-vm-net0.socket",
               "--pid", "/run/libvirt/qemu/passt/1-vm-net0-passt.pid", "--tcp-ports", "2280:80"]


def passt(*argv: str) -> Config:
    return parse_args(Mode.PASST, list(argv), host=HOST)


def pasta(*argv: str) -> Config:
    return parse_args(Mode.PASTA, list(argv), host=HOST)


@pytest.mark.conformance("cli.callers-options")
def test_podman_argv() -> None:
    conf = pasta(*PODMAN_54)
    assert conf.dns_forward4 == IPv4Address("169.254.1.1") and conf.dns_forward6 is None
    assert conf.map_guest_addr4 == IPv4Address("169.254.1.2")
    assert conf.no_map_gw and conf.map_host_loopback4 is None and conf.quiet and conf.config_net
    assert conf.netns == "/run/user/1000/netns/netns-1234"
    assert conf.tcp_in.mode is FwdMode.SPEC and conf.tcp_in.mapping() == {18080: 8080}
    assert conf.udp_in.mode is FwdMode.NONE and conf.tcp_out.mode is FwdMode.NONE


def test_libvirt_argv() -> None:
    conf = passt(*LIBVIRT_113)
    assert conf.one_off and conf.socket_path == "/run/libvirt/qemu/passt/1-vm-net0.socket"
    assert conf.pid_file == "/run/libvirt/qemu/passt/1-vm-net0-passt.pid"
    assert conf.tcp_in.mapping() == {2280: 80}


def test_defaults() -> None:
    """Without the options: nothing mapped, forwarded or bound; splice on; 1 MiB log bound."""
    for conf in (passt(), pasta()):
        assert not conf.one_off and conf.fd is None and not conf.trace
        assert conf.log_size == DEFAULT_LOG_SIZE == 1 << 20
        assert conf.hostname is None and conf.fqdn is None and conf.conf_path is None
        assert conf.dns_forward4 is None and conf.dns_forward6 is None
        assert conf.dns_host4 is None and conf.dns_host6 is None
        assert not conf.no_map_gw and conf.map_host_loopback4 is None
        assert conf.map_guest_addr4 is None and conf.map_guest_addr6 is None
        assert conf.outbound4 is None and conf.outbound_if4 is None and conf.outbound_if6 is None
        assert not conf.netns_only and not conf.no_netns_quit and conf.ns_mac_addr is None
        assert conf.splice


@pytest.mark.parametrize("spelled", ["-1", "--one-off"])
def test_one_off(spelled: str) -> None:
    assert passt(spelled).one_off
    assert error(Mode.PASTA, spelled) == f"{spelled} is passt-only; see pasta --help"


@pytest.mark.parametrize("spelled", ["-F", "--fd"])
def test_fd(spelled: str) -> None:
    conf = passt(spelled, "5")
    assert conf.fd == 5 and conf.one_off  # upstream: -F implies --one-off
    assert passt(f"{spelled}=0" if spelled == "--fd" else f"{spelled}0").fd == 0
    conf = pasta(spelled, "7", "--netns", "/run/netns/x")
    assert conf.fd == 7 and not conf.one_off
    for bad in ("1", "2", "-3", "x", "", "99999999999"):
        assert "invalid descriptor" in error(Mode.PASST, spelled, bad)
    assert "-F and -s given together" in error(Mode.PASST, spelled, "5", "-s", "/tmp/s")


def test_log_size_and_trace() -> None:
    assert passt("--log-size", "65536").log_size == 65536
    assert passt("--log-size=4096").log_size == 4096
    for bad in ("4095", "0", "1M", "", "-1"):
        assert "at least 4096 bytes" in error(Mode.PASST, "--log-size", bad)
    conf = pasta("--trace")
    assert conf.trace and conf.debug and conf.foreground
    assert error(Mode.PASTA, "--trace", "-q") == "--trace and -q given together; give at most one"


@pytest.mark.parametrize(("spelled", "field"), [("-H", "hostname"), ("--hostname", "hostname"),
                                                ("--fqdn", "fqdn")])
def test_names(spelled: str, field: str) -> None:
    assert getattr(passt(spelled, "vm1.example.org"), field) == "vm1.example.org"
    assert getattr(pasta(spelled, "vm1."), field) == "vm1"
    for bad in ("", "a b", "a..b", "x" * 64, ".".join(["a" * 60] * 5), "tab\tname"):
        assert f"for {spelled}" in error(Mode.PASST, spelled, bad)


@pytest.mark.parametrize("spelled", ["-c", "--conf-path"])
def test_conf_path(spelled: str) -> None:
    assert passt(spelled, "/tmp/ctl.sock").conf_path == "/tmp/ctl.sock"
    assert pasta(spelled, "/tmp/ctl.sock").conf_path == "/tmp/ctl.sock"
    assert "invalid socket path" in error(Mode.PASST, spelled, "x" * 108)


def test_dns_forward_and_host() -> None:
    conf = passt("--dns-forward", "169.254.1.1", "--dns-forward", "fd00::53",
                 "--dns-host", "127.0.0.53", "--dns-host", "::1")
    assert conf.dns_forward4 == IPv4Address("169.254.1.1")
    assert conf.dns_forward6 == IPv6Address("fd00::53")
    assert conf.dns_host4 == IPv4Address("127.0.0.53") and conf.dns_host6 == IPv6Address("::1")
    assert "given twice for IPv4" in error(Mode.PASST, "--dns-forward", "10.0.0.1",
                                           "--dns-forward", "10.0.0.2")
    for bad, why in (("127.0.0.1", "loopback"), ("0.0.0.0", "unspecified"),
                     ("224.0.0.1", "multicast"), ("::ffff:10.0.0.1", "IPv4-mapped"),
                     ("nope", None)):
        message = error(Mode.PASTA, "--dns-forward", bad)
        assert f"invalid address '{bad}' for --dns-forward" in message
        if why:
            assert message.endswith(why)
    assert error(Mode.PASST, "--dns-host", "0.0.0.0").endswith("unspecified")


def test_map_gw_options() -> None:
    assert pasta("--no-map-gw").no_map_gw
    conf = pasta("--map-host-loopback", "none")
    assert conf.no_map_gw and conf.map_host_loopback4 is None
    conf = pasta("--map-host-loopback", "169.254.1.3", "--map-host-loopback", "fd00::3")
    assert conf.map_host_loopback4 == IPv4Address("169.254.1.3") and not conf.no_map_gw
    assert conf.map_host_loopback6 == IPv6Address("fd00::3")
    conf = passt("--map-guest-addr", "169.254.1.2")
    assert conf.map_guest_addr4 == IPv4Address("169.254.1.2")
    conf = passt("--map-guest-addr", "none")
    assert conf.map_guest_addr4 is None and conf.map_guest_addr6 is None and not conf.no_map_gw
    assert "none given together with an address" in error(
        Mode.PASST, "--map-guest-addr", "none", "--map-guest-addr", "169.254.1.2")
    assert "none given together with an address" in error(
        Mode.PASST, "--map-guest-addr", "169.254.1.2", "--map-guest-addr", "none")
    assert "--no-map-gw given together" in error(Mode.PASTA, "--no-map-gw",
                                                 "--map-host-loopback", "169.254.1.3")
    assert error(Mode.PASTA, "--map-guest-addr", "::1").endswith("loopback")
    assert "invalid address 'none' for --dns-forward" in error(Mode.PASTA, "--dns-forward", "none")


@pytest.mark.parametrize("spelled", ["-o", "--outbound"])
def test_outbound(spelled: str) -> None:
    conf = passt(spelled, "192.168.1.118", spelled, "2001:db8::7")
    assert conf.outbound4 == IPv4Address("192.168.1.118")
    assert conf.outbound6 == IPv6Address("2001:db8::7")
    assert "given twice for IPv6" in error(Mode.PASST, spelled, "::2", spelled, "::3")
    assert error(Mode.PASST, spelled, "224.0.0.1").endswith("multicast")
    conf = pasta("--outbound-if4", "eth0", "--outbound-if6", "wlan0")
    assert conf.outbound_if4 == "eth0" and conf.outbound_if6 == "wlan0"
    assert "invalid interface name" in error(Mode.PASTA, "--outbound-if4", "x" * 16)


def test_pasta_only_options() -> None:
    conf = pasta("--netns-only", "--no-netns-quit", "--ns-mac-addr", "9a:55:9a:55:9a:56",
                 "--no-splice", "--netns", "x")
    assert conf.netns_only and conf.no_netns_quit and not conf.splice
    assert conf.ns_mac_addr == bytes.fromhex("9a559a559a56")
    assert "invalid MAC address" in error(Mode.PASTA, "--ns-mac-addr", "ff:ff:ff:ff:ff:ff")
    assert error(Mode.PASTA, "--netns-only", "--userns", "/proc/1/ns/user", "--netns", "x") == (
        "--netns-only and --userns given together; give at most one")
    for spelled in ("--netns-only", "--no-netns-quit", "--no-splice"):
        assert error(Mode.PASST, spelled) == f"{spelled} is pasta-only; see passt --help"


def test_vhost_user_refused() -> None:
    assert error(Mode.PASST, "--vhost-user").startswith("--vhost-user is not implemented")
    assert "--vhost-user" not in help_text(Mode.PASST)


@pytest.mark.parametrize("mode", [Mode.PASST, Mode.PASTA])
def test_getopt_words(mode: Mode) -> None:
    """Podman's fallback reads "unrecognized option '--map-guest-addr'": glibc's wording."""
    assert error(mode, "--bogus") == "unrecognized option '--bogus'"
    assert error(mode, "-y") == "invalid option -- 'y'"
    assert error(mode, "--map-guest") == "option '--map-guest-addr' requires an argument"
    assert error(mode, "--dns-f") == "option '--dns-forward' requires an argument"
    assert error(mode, "-F") == "option requires an argument -- 'F'"
    assert error(mode, "--dns") == "option '--dns' requires an argument"  # exact wins
    assert error(mode, "--dns-") == (
        "option '--dns-' is ambiguous; possibilities: '--dns-forward' '--dns-host'")
