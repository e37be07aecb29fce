"""The NOTES address translation, as pure functions."""

from __future__ import annotations

import socket
from ipaddress import IPv4Address, IPv6Address

import pytest

from passt.flows import nat
from passt.guest import GuestState
from tests.unit.conftest import make_config, make_ip4, make_ip6


def p4(a: str) -> bytes:
    return socket.inet_pton(socket.AF_INET, a)


def p6(a: str) -> bytes:
    return socket.inet_pton(socket.AF_INET6, a)


CONF = make_config(
    ip4=make_ip4(addr=IPv4Address("192.0.2.3"), gateway=IPv4Address("192.0.2.1")),
    ip6=make_ip6(addr=IPv6Address("2001:db8:1::3"), gateway=IPv6Address("fe80::1")),
)
HOST_ADDRS = frozenset({p4("198.51.100.7"), p6("2001:db8:ff::7")})


def guest() -> GuestState:
    return GuestState.from_config(CONF)


@pytest.mark.conformance("notes.nat.src-gateway", "notes.nat.dst-loopback", "notes.nat.example")
def test_man_page_example() -> None:
    """127.0.0.1 -> 127.0.0.10 with gateway 192.0.2.1 and observed 192.0.2.2 becomes 192.0.2.1 -> 192.0.2.2."""
    g = guest()
    g.learn_addr4(p4("192.0.2.2"))
    assert nat.host_src_to_guest(CONF, 4, p4("127.0.0.1"), frozenset()) == p4("192.0.2.1")
    assert nat.host_dst_to_guest(g, 4, p4("127.0.0.10"), frozenset()) == p4("192.0.2.2")


@pytest.mark.conformance("notes.nat.src-gateway")
@pytest.mark.parametrize(
    ("af", "src", "expected"),
    [
        (4, "127.0.0.1", "192.0.2.1"),
        (4, "127.255.0.9", "192.0.2.1"),
        (4, "198.51.100.7", "192.0.2.1"),  # a host address: local
        (4, "203.0.113.9", "203.0.113.9"),  # a remote peer: unchanged
        (6, "::1", "fe80::1"),
        (6, "2001:db8:ff::7", "fe80::1"),
        (6, "2001:db8:77::1", "2001:db8:77::1"),
    ],
)
def test_local_source_becomes_gateway(af: int, src: str, expected: str) -> None:
    """Loopback or host-owned sources are shown to the guest as the default gateway; others are kept."""
    pk = p4 if af == 4 else p6
    assert nat.host_src_to_guest(CONF, af, pk(src), HOST_ADDRS) == pk(expected)


def test_local_source_without_gateway_unchanged() -> None:
    """With no IPv4 gateway configured there is nothing valid to use: the source stays."""
    conf = make_config(ip4=make_ip4(gateway=None))
    assert nat.host_src_to_guest(conf, 4, p4("127.0.0.1"), frozenset()) == p4("127.0.0.1")


@pytest.mark.conformance("notes.nat.dst-loopback", "notes.nat.configured-fallback", "notes.nat.ipv6-global")
def test_loopback_destination_configured_until_observed() -> None:
    """Before any guest address is seen the configured one is used, then the observed one."""
    g = guest()
    assert nat.host_dst_to_guest(g, 4, p4("127.0.0.1"), frozenset()) == p4("192.0.2.3")
    assert nat.host_dst_to_guest(g, 6, p6("::1"), frozenset()) == p6("2001:db8:1::3")
    g.learn_addr4(p4("192.0.2.77"))
    g.learn_addr6(p6("2001:db8:1::77"))
    assert nat.host_dst_to_guest(g, 4, p4("127.0.0.1"), frozenset()) == p4("192.0.2.77")
    assert nat.host_dst_to_guest(g, 4, p4("198.51.100.7"), HOST_ADDRS) == p4("192.0.2.77")
    assert nat.host_dst_to_guest(g, 6, p6("::1"), frozenset()) == p6("2001:db8:1::77")
    # not local: left alone
    assert nat.host_dst_to_guest(g, 4, p4("203.0.113.1"), HOST_ADDRS) == p4("203.0.113.1")


@pytest.mark.conformance("notes.nat.ipv6-linklocal", "notes.nat.ipv6-global")
def test_ipv6_link_local_destination() -> None:
    """A link-local original destination maps to the observed link-local address, once one was seen."""
    g = guest()
    ll_host = p6("fe80::aa")
    local = frozenset({ll_host})
    # nothing link-local observed yet: global (configured)
    assert nat.host_dst_to_guest(g, 6, ll_host, local) == p6("2001:db8:1::3")
    g.learn_addr6(p6("fe80::5054:ff:fe12:3456"))
    assert nat.host_dst_to_guest(g, 6, ll_host, local) == p6("fe80::5054:ff:fe12:3456")
    # a non-link-local original destination still gets the global address
    assert nat.host_dst_to_guest(g, 6, p6("::1"), local) == p6("2001:db8:1::3")
    g.learn_addr6(p6("2001:db8:1::99"))
    assert nat.host_dst_to_guest(g, 6, p6("::1"), local) == p6("2001:db8:1::99")
    assert nat.host_dst_to_guest(g, 6, ll_host, local) == p6("fe80::5054:ff:fe12:3456")


@pytest.mark.conformance("notes.nat.gateway-to-loopback")
def test_gateway_to_loopback_only_for_host_initiated_flows() -> None:
    """The gateway maps back to loopback only for flows created by local-source traffic."""
    gw = p4("192.0.2.1")
    # guest-initiated (no origin): the gateway itself
    assert nat.guest_dst_to_host(CONF, 4, gw, None) == gw
    # flow created by 127.0.0.1: back to it
    assert nat.guest_dst_to_host(CONF, 4, gw, p4("127.0.0.1")) == p4("127.0.0.1")
    # a non-gateway destination is never rewritten
    assert nat.guest_dst_to_host(CONF, 4, p4("203.0.113.5"), p4("127.0.0.1")) == p4("203.0.113.5")
    assert nat.guest_dst_to_host(CONF, 6, p6("fe80::1"), p6("::1")) == p6("::1")
    assert nat.flow_maps_gateway(4, p4("127.0.0.1"), frozenset())
    assert nat.flow_maps_gateway(4, p4("198.51.100.7"), HOST_ADDRS)
    assert not nat.flow_maps_gateway(4, p4("203.0.113.9"), HOST_ADDRS)


def test_predicates() -> None:
    """Loopback, link-local and v4-mapped recognition at the family boundaries."""
    assert nat.is_loopback(4, p4("127.0.0.1")) and not nat.is_loopback(4, p4("128.0.0.1"))
    assert nat.is_loopback(6, p6("::1")) and not nat.is_loopback(6, p6("::2"))
    assert nat.is_link_local6(p6("fe80::1")) and nat.is_link_local6(p6("febf::1"))
    assert not nat.is_link_local6(p6("fec0::1"))
    assert nat.unmap_v4(p6("::ffff:127.0.0.1")) == (4, p4("127.0.0.1"))
    assert nat.unmap_v4(p6("::1")) == (6, p6("::1"))
