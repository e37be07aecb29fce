"""The shared socket plumbing: the forwardable-destination rule, socket addresses, PKTINFO, resets."""

from __future__ import annotations

import socket

import pytest

from passt.flows.sockets import (
    IP_PKTINFO,
    close_rst,
    dst_forwardable,
    is_loopback_peer,
    link_scope,
    parse_sockaddr,
    peer_family,
    pktinfo_addr,
    pktinfo_cmsg,
    sockaddr_of,
)


def _p(addr: str) -> tuple[int, bytes]:
    if ":" in addr:
        return 6, socket.inet_pton(socket.AF_INET6, addr)
    return 4, socket.inet_pton(socket.AF_INET, addr)


# One row per class of the RFC 6890 registry (and RFC 4291 for IPv6) that the rule decides.
DESTINATIONS = [
    ("0.0.0.0", False),  # unspecified: Linux would connect to the host itself
    ("0.1.2.3", False),  # "this network" 0/8: RFC 1122 3.2.1.3, never a destination
    ("0.255.255.255", False),
    ("1.0.0.1", True),  # the first unicast /8
    ("10.0.0.1", True),  # private (RFC 1918): forwarded like any unicast
    ("100.64.0.1", True),  # shared address space
    ("127.0.0.1", True),  # loopback: a separate rule (nat.is_loopback, NOTES)
    ("169.254.1.1", True),  # link-local IPv4
    ("192.0.2.1", True),  # documentation
    ("223.255.255.254", True),  # the last unicast address
    ("224.0.0.1", False),  # multicast 224/4
    ("239.255.255.250", False),
    ("240.0.0.1", False),  # reserved 240/4 (RFC 1112 section 4, RFC 6890)
    ("254.1.2.3", False),
    ("255.255.255.255", False),  # limited broadcast
    ("::", False),  # unspecified
    ("::1", True),  # loopback: the NOTES rule decides
    ("fe80::1", True),  # link-local: forwarded with the outbound interface as scope
    ("fc00::1", True),  # unique local
    ("2001:db8::1", True),
    ("ff02::1", False),  # multicast ff00::/8
    ("ff0e::1", False),
    ("::ffff:192.0.2.1", False),  # IPv4-mapped: not for the wire (RFC 4291 2.5.5.2)
]


@pytest.mark.conformance("flows.dst-forwardable")
@pytest.mark.parametrize(("addr", "ok"), DESTINATIONS)
def test_dst_forwardable_per_class(addr: str, ok: bool) -> None:
    """Each address class gets the decision recorded in the conformance catalogue."""
    af, packed = _p(addr)
    assert dst_forwardable(af, packed) is ok


def test_sockaddr_round_trip_unmaps_v4() -> None:
    af, packed = _p("192.0.2.7")
    assert sockaddr_of(af, packed, 53) == ("192.0.2.7", 53)
    assert parse_sockaddr(("192.0.2.7", 53)) == (4, packed, 53)
    assert parse_sockaddr(("::ffff:192.0.2.7", 53, 0, 0)) == (4, packed, 53)
    af6, packed6 = _p("fe80::1")
    assert sockaddr_of(af6, packed6, 80, 3) == ("fe80::1", 80, 0, 3)
    assert parse_sockaddr(("fe80::1%lo", 80, 0, 1)) == (6, packed6, 80)


def test_link_scope_only_for_link_local_ipv6() -> None:
    _, ll = _p("fe80::1")
    _, glob = _p("2001:db8::1")
    _, v4 = _p("192.0.2.1")
    assert link_scope("lo", 6, ll) == socket.if_nametoindex("lo")
    assert link_scope("lo", 6, glob) == 0
    assert link_scope("lo", 4, v4) == 0
    assert link_scope("no-such-if0", 6, ll) == 0


@pytest.mark.parametrize(
    ("host", "loop", "family"),
    [
        ("127.0.0.1", True, socket.AF_INET),
        ("127.3.2.1", True, socket.AF_INET),
        ("::1", True, socket.AF_INET6),
        ("::ffff:127.0.0.2", True, socket.AF_INET),
        ("192.0.2.1", False, socket.AF_INET),
        ("::ffff:192.0.2.1", False, socket.AF_INET),
        ("2001:db8::1", False, socket.AF_INET6),
    ],
)
def test_loopback_peer_and_family(host: str, loop: bool, family: int) -> None:
    assert is_loopback_peer(host) is loop
    assert peer_family(host) == family


def test_pktinfo_round_trip() -> None:
    """What a listener received becomes the cmsg that makes a reply leave from that address."""
    _, v4 = _p("127.0.0.2")
    got4 = [(socket.IPPROTO_IP, IP_PKTINFO, bytes(4) + bytes(4) + v4)]
    assert pktinfo_addr(got4) == (socket.IPPROTO_IP, v4)
    ((level, kind, data),) = pktinfo_cmsg(socket.IPPROTO_IP, v4)
    assert (level, kind, data[4:8]) == (socket.IPPROTO_IP, IP_PKTINFO, v4)  # ipi_spec_dst: our source
    _, v6 = _p("::1")
    got6 = [(socket.IPPROTO_IPV6, socket.IPV6_PKTINFO, v6 + bytes(4))]
    assert pktinfo_addr(got6) == (socket.IPPROTO_IPV6, v6)
    assert pktinfo_cmsg(socket.IPPROTO_IPV6, v6) == [(socket.IPPROTO_IPV6, socket.IPV6_PKTINFO, v6 + bytes(4))]
    assert pktinfo_addr([]) is None
    assert pktinfo_addr([(socket.IPPROTO_IP, IP_PKTINFO, b"\0" * 4)]) is None


def test_close_rst_resets_the_peer() -> None:
    """The peer's next read fails with ECONNRESET instead of seeing a clean EOF."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    cli = socket.create_connection(srv.getsockname())
    acc, _ = srv.accept()
    try:
        close_rst(acc)
        assert acc.fileno() == -1
        with pytest.raises(ConnectionResetError):
            cli.recv(1)
    finally:
        cli.close()
        srv.close()
