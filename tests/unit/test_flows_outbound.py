"""Today's address options: where guest flows go on the host, and from which source."""

from __future__ import annotations

import socket
from ipaddress import IPv4Address, IPv6Address
from typing import Any

import pytest

from passt.flows import nat
from passt.flows.outbound import Outbound, advertised_dns, dns_match
from tests.unit.conftest import make_config, make_ip4, make_ip6


def p4(a: str) -> bytes:
    return socket.inet_pton(socket.AF_INET, a)


def p6(a: str) -> bytes:
    return socket.inet_pton(socket.AF_INET6, a)


A4 = IPv4Address
A6 = IPv6Address
GUEST4 = "192.0.2.3"
GUEST6 = "2001:db8:1::3"
BASE: dict[str, Any] = {
    "ip4": make_ip4(addr=A4(GUEST4), gateway=A4("192.0.2.1")),
    "ip6": make_ip6(addr=A6(GUEST6), gateway=A6("fe80::1")),
}
#: The host's resolv.conf of these tests: a loopback stub first, then a real server.
RESOLV = ((A4("127.0.0.53"), A4("198.51.100.53")), (A6("2001:db8:53::1"),))


def outbound(**overrides: Any) -> Outbound:
    return Outbound.from_config(make_config(**{**BASE, **overrides}), RESOLV)


@pytest.mark.conformance("callers.dns-forward", "callers.dns-host")
def test_dns_forward_goes_to_first_host_nameserver_by_default() -> None:
    """TCP/UDP to the forward address, port 53 or 853, go to the host's first nameserver; other ports don't."""
    out = outbound(dns_forward4=A4("169.254.1.1"), dns_forward6=A6("fd00::53"))
    fwd4, fwd6 = p4("169.254.1.1"), p6("fd00::53")
    assert out.target(4, fwd4, 53, dns=True) == p4("127.0.0.53")
    assert out.target(4, fwd4, 853, dns=True) == p4("127.0.0.53")
    assert out.target(6, fwd6, 53, dns=True) == p6("2001:db8:53::1")
    assert out.target(4, fwd4, 80, dns=True) == fwd4  # not DNS: unchanged
    assert out.target(4, fwd4, 53, dns=False) == fwd4  # ICMP: unchanged
    assert out.target(4, p4("203.0.113.1"), 53, dns=True) == p4("203.0.113.1")


@pytest.mark.conformance("callers.dns-host")
def test_dns_host_overrides_and_no_resolver_means_no_forwarding() -> None:
    """--dns-host picks the server; with no host nameserver and no --dns-host nothing is forwarded."""
    out = outbound(dns_forward4=A4("169.254.1.1"), dns_host4=A4("203.0.113.53"))
    assert out.target(4, p4("169.254.1.1"), 53, dns=True) == p4("203.0.113.53")
    conf = make_config(**BASE, dns_forward4=A4("169.254.1.1"))
    empty = Outbound.from_config(conf, ((), ()))
    assert empty.target(4, p4("169.254.1.1"), 53, dns=True) == p4("169.254.1.1")


@pytest.mark.conformance("callers.dns-forward")
def test_advertised_dns_replaces_unreachable_nameservers() -> None:
    """Loopback nameservers become the forward address (else the host-loopback map, else none)."""
    r4 = (A4("127.0.0.53"), A4("198.51.100.53"), A4("127.0.0.1"))
    assert advertised_dns(r4, None, None) == (A4("198.51.100.53"),)
    assert advertised_dns(r4, A4("169.254.1.1"), None) == (A4("169.254.1.1"), A4("198.51.100.53"))
    assert advertised_dns(r4, None, A4("192.0.2.1")) == (A4("192.0.2.1"), A4("198.51.100.53"))
    assert advertised_dns((A6("::1"),), A6("fd00::53"), None) == (A6("fd00::53"),)
    # the mapped address itself in resolv.conf stands for the host too
    assert advertised_dns((A4("192.0.2.1"),), A4("169.254.1.1"), A4("192.0.2.1")) == (A4("169.254.1.1"),)


@pytest.mark.conformance("callers.map-host-loopback", "callers.dns-forward")
def test_dns_match_follows_upstream() -> None:
    """The forward address is --dns-forward, else the host-loopback map when it stood in for a loopback resolver."""
    assert dns_match(RESOLV[0], A4("169.254.1.1"), A4("192.0.2.1")) == A4("169.254.1.1")
    assert dns_match(RESOLV[0], None, A4("192.0.2.1")) == A4("192.0.2.1")
    assert dns_match((A4("198.51.100.53"),), None, A4("192.0.2.1")) is None
    assert dns_match(RESOLV[0], None, None) is None
    out = outbound(map_host_loopback4=A4("192.0.2.1"))
    # DNS to the mapped address reaches the host's nameserver; anything else its loopback
    assert out.target(4, p4("192.0.2.1"), 53, dns=True) == p4("127.0.0.53")
    assert out.target(4, p4("192.0.2.1"), 8080, dns=True) == p4("127.0.0.1")


@pytest.mark.conformance("callers.map-host-loopback", "callers.no-map-gw", "notes.nat.gateway-to-loopback")
def test_map_host_loopback_only_when_given() -> None:
    """Without the option the gateway stays the gateway; with it, ADDR means the host's loopback."""
    plain = outbound()
    assert plain.target(4, p4("192.0.2.1"), 80, dns=True) == p4("192.0.2.1")
    assert plain.target(6, p6("fe80::1"), 80, dns=True) == p6("fe80::1")
    out = outbound(map_host_loopback4=A4("192.0.2.1"), map_host_loopback6=A6("fe80::1"))
    assert out.target(4, p4("192.0.2.1"), 80, dns=True) == p4("127.0.0.1")
    assert out.target(6, p6("fe80::1"), 0, dns=False) == p6("::1")
    assert out.target(4, p4("192.0.2.2"), 80, dns=True) == p4("192.0.2.2")


@pytest.mark.conformance("callers.map-host-loopback", "callers.map-guest-addr")
def test_inbound_sources_follow_the_maps() -> None:
    """Host 127.0.0.1 reaches the guest from --map-host-loopback; the shadowed host address from --map-guest-addr."""
    conf = make_config(**BASE, map_host_loopback4=A4("169.254.1.3"), map_host_loopback6=A6("fd00::3"),
                       map_guest_addr4=A4("169.254.1.2"), map_guest_addr6=A6("fd00::2"))  # fmt: skip
    local = frozenset({p4(GUEST4), p6(GUEST6), p4("198.51.100.7")})
    assert nat.host_src_to_guest(conf, 4, p4("127.0.0.1"), local) == p4("169.254.1.3")
    assert nat.host_src_to_guest(conf, 4, p4("127.0.0.2"), local) == p4("192.0.2.1")  # not exactly .1
    assert nat.host_src_to_guest(conf, 6, p6("::1"), local) == p6("fd00::3")
    assert nat.host_src_to_guest(conf, 4, p4(GUEST4), local) == p4("169.254.1.2")
    assert nat.host_src_to_guest(conf, 6, p6(GUEST6), local) == p6("fd00::2")
    assert nat.host_src_to_guest(conf, 4, p4("198.51.100.7"), local) == p4("192.0.2.1")
    assert nat.host_src_to_guest(conf, 4, p4("203.0.113.9"), local) == p4("203.0.113.9")
    # replies of host-initiated flows to the mapped address go back where they came from
    assert nat.guest_dst_to_host(conf, 4, p4("169.254.1.3"), p4("127.0.0.1")) == p4("127.0.0.1")


@pytest.mark.conformance("callers.map-guest-addr")
def test_map_guest_addr_reaches_assigned_address() -> None:
    """Guest traffic to --map-guest-addr goes to the guest's assigned address (the host's own)."""
    out = outbound(map_guest_addr4=A4("169.254.1.2"), map_guest_addr6=A6("fd00::2"))
    assert out.target(4, p4("169.254.1.2"), 8080, dns=True) == p4(GUEST4)
    assert out.target(6, p6("fd00::2"), 0, dns=False) == p6(GUEST6)
    assert out.target(4, p4("169.254.1.9"), 8080, dns=True) == p4("169.254.1.9")


class FakeSocket:
    """Records the calls the socket edge makes."""

    def __init__(self, fail_bind: bool = False) -> None:
        self.calls: list[tuple[Any, ...]] = []
        self.fail_bind = fail_bind

    def setsockopt(self, level: int, name: int, value: bytes) -> None:
        self.calls.append(("setsockopt", level, name, value))

    def bind(self, addr: tuple[Any, ...]) -> None:
        if self.fail_bind:
            raise OSError(99, "Cannot assign requested address")
        self.calls.append(("bind", addr))

    def connect(self, addr: tuple[Any, ...]) -> None:
        self.calls.append(("connect", addr))

    def connect_ex(self, addr: tuple[Any, ...]) -> int:
        self.calls.append(("connect", addr))
        return 115


@pytest.mark.conformance("callers.outbound", "callers.outbound-if")
def test_outbound_source_and_interface_bound_before_connect() -> None:
    """-o binds the source, --outbound-if4/6 the device, before connect(); not towards loopback."""
    out = outbound(outbound4=A4("192.0.2.77"), outbound6=A6("2001:db8:1::77"),
                   outbound_if4="wan4", outbound_if6="wan6")  # fmt: skip
    s: Any = FakeSocket()
    out.connect(s, 4, p4("203.0.113.1"), ("203.0.113.1", 80))
    assert s.calls == [("setsockopt", socket.SOL_SOCKET, socket.SO_BINDTODEVICE, b"wan4"),
                       ("bind", ("192.0.2.77", 0)), ("connect", ("203.0.113.1", 80))]  # fmt: skip
    s = FakeSocket()
    assert out.connect_ex(s, 6, p6("2001:db8::1"), ("2001:db8::1", 80, 0, 0)) == 115
    assert s.calls[:2] == [("setsockopt", socket.SOL_SOCKET, socket.SO_BINDTODEVICE, b"wan6"),
                           ("bind", ("2001:db8:1::77", 0, 0, 0))]  # fmt: skip
    s = FakeSocket()
    out.connect(s, 4, p4("127.0.0.1"), ("127.0.0.1", 80))
    assert s.calls == [("connect", ("127.0.0.1", 80))]
    s = FakeSocket()
    out.bind_icmp(s, 4, p4("203.0.113.1"), 77)
    assert s.calls[-1] == ("bind", ("192.0.2.77", 77))
    # nothing configured: plain connect, ping sockets bound to the identifier only
    s = FakeSocket()
    outbound().connect(s, 4, p4("203.0.113.1"), ("203.0.113.1", 80))
    assert s.calls == [("connect", ("203.0.113.1", 80))]
    s = FakeSocket()
    outbound().bind_icmp(s, 6, p6("2001:db8::1"), 77)
    assert s.calls == [("bind", ("::", 77, 0, 0))]


def test_outbound_bind_failure_is_an_errno() -> None:
    """A -o address the host doesn't have fails the connection (an errno), never silently unbound."""
    out = outbound(outbound4=A4("192.0.2.77"))
    s: Any = FakeSocket(fail_bind=True)
    assert out.connect_ex(s, 4, p4("203.0.113.1"), ("203.0.113.1", 80)) == 99
    assert s.calls == []
    with pytest.raises(OSError):
        out.connect(s, 4, p4("203.0.113.1"), ("203.0.113.1", 80))


@pytest.mark.conformance("callers.dns-forward", "callers.map-host-loopback")
def test_passt_hands_out_forward_address_for_loopback_resolvers() -> None:
    """passt's DHCP/RDNSS/DHCPv6 list: the host's 127.0.0.53 becomes --dns-forward; real servers stay."""
    from passt.cli import parse_args
    from passt.config import Mode
    from passt.hostinfo import HostInfo

    host = HostInfo(ifname="eth0", mac=bytes.fromhex("020000000001"), mtu=1500,
                    addr4=A4("192.0.2.3"), prefix4=24, gw4=A4("192.0.2.1"), route4=True,
                    addr6=A6("2001:db8:1::3"), prefix6=64, gw6=A6("fe80::1"), route6=True,
                    dns4=(A4("127.0.0.53"), A4("198.51.100.53")), dns6=(A6("::1"),))  # fmt: skip
    plain = parse_args(Mode.PASST, [], host=host)
    assert plain.ip4 is not None and plain.ip4.dns == (A4("198.51.100.53"),)
    assert plain.ip6 is not None and plain.ip6.dns == ()
    conf = parse_args(Mode.PASST, ["--dns-forward", "169.254.1.1", "--dns-forward", "fd00::53"], host=host)
    assert conf.ip4 is not None and conf.ip4.dns == (A4("169.254.1.1"), A4("198.51.100.53"))
    assert conf.ip6 is not None and conf.ip6.dns == (A6("fd00::53"),)
    mapped = parse_args(Mode.PASST, ["--map-host-loopback", "192.0.2.1"], host=host)
    assert mapped.ip4 is not None and mapped.ip4.dns == (A4("192.0.2.1"), A4("198.51.100.53"))
    # and the data path agrees: DNS to the handed-out address reaches the host's stub
    out = Outbound.from_config(mapped, (host.dns4, host.dns6))
    assert out.target(4, p4("192.0.2.1"), 53, dns=True) == p4("127.0.0.53")
