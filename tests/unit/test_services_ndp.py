"""services/ndp.py: NS/RS built by scapy, NA/RA dissected by scapy; unsolicited RA timing."""

from __future__ import annotations

import random
from ipaddress import IPv6Address
from typing import Any

import pytest
from scapy.compat import raw
from scapy.layers.inet6 import (
    ICMPv6ND_NA,
    ICMPv6ND_NS,
    ICMPv6ND_RA,
    ICMPv6ND_RS,
    ICMPv6NDOptDNSSL,
    ICMPv6NDOptDstLLAddr,
    ICMPv6NDOptMTU,
    ICMPv6NDOptPrefixInfo,
    ICMPv6NDOptRDNSS,
    ICMPv6NDOptSrcLLAddr,
    IPv6,
    in6_chksum,
)
from scapy.layers.l2 import Ether

from passt.counters import Counters
from passt.guest import GuestState
from passt.services.ndp import (
    MAX_RTR_ADV_INTERVAL_S,
    MIN_RTR_ADV_INTERVAL_S,
    ROUTER_LIFETIME_S,
    NdpService,
)
from tests.unit.conftest import (
    DNS6,
    GUEST6,
    GUEST_LL,
    GUEST_MAC,
    GUEST_MAC_STR,
    GW6,
    OUR_MAC_STR,
    assert_checksums,
    fuzz,
    make_config,
    make_ip6,
)
from tests.unit.fakes import to_service

NOW = 1000.0


def service(**overrides: Any) -> tuple[NdpService, GuestState, Counters, list[str]]:
    conf = make_config(**overrides)
    guest = GuestState.from_config(conf)
    counters = Counters()
    lines: list[str] = []
    svc = NdpService(conf, guest, counters, lines.append, now=NOW, rng=random.Random(5))
    return svc, guest, counters, lines


def ns(
    target: str, *, src: str = GUEST_LL, dst: str | None = None, hlim: int = 255, slla: bool = True
) -> bytes:
    if dst is None:
        dst = "ff02::1:ff" + IPv6Address(target).exploded[-7:]
    pkt = (
        Ether(src=GUEST_MAC_STR, dst="33:33:ff:00:00:01")
        / IPv6(src=src, dst=dst, hlim=hlim)
        / ICMPv6ND_NS(tgt=target)
    )
    if slla:
        pkt = pkt / ICMPv6NDOptSrcLLAddr(lladdr=GUEST_MAC_STR)
    return raw(pkt)


def rs(*, src: str = GUEST_LL, slla: bool = True) -> bytes:
    pkt = (
        Ether(src=GUEST_MAC_STR, dst="33:33:00:00:00:02")
        / IPv6(src=src, dst="ff02::2", hlim=255)
        / ICMPv6ND_RS()
    )
    if slla:
        pkt = pkt / ICMPv6NDOptSrcLLAddr(lladdr=GUEST_MAC_STR)
    return raw(pkt)


def answer(svc: NdpService, frame: bytes) -> Any:
    out = to_service(svc, frame)
    assert out is not None
    assert_checksums(out)
    return Ether(out)


@pytest.mark.conformance("ndp.ns.na")
@pytest.mark.parametrize("target", [GW6, "2001:db8:1::1", "2001:db8:99::7", "fe80::99"])
def test_ns_answered_with_our_mac(target: str) -> None:
    """Neighbor Solicitations for anything but the guest's addresses get an NA with our MAC."""
    svc, guest, _, lines = service()
    pkt = answer(svc, ns(target))
    assert (pkt.src, pkt.dst) == (OUR_MAC_STR, GUEST_MAC_STR)
    assert (pkt[IPv6].src, pkt[IPv6].dst, pkt[IPv6].hlim) == (target, GUEST_LL, 255)
    na = pkt[ICMPv6ND_NA]
    assert (na.R, na.S, na.O, na.tgt, na.code) == (1, 1, 1, target, 0)
    assert pkt[ICMPv6NDOptDstLLAddr].lladdr == OUR_MAC_STR
    assert lines == ["NDP: received NS, sending NA"]
    assert guest.mac == GUEST_MAC and guest.addr6_ll == IPv6Address(GUEST_LL).packed


def test_ns_for_guest_addresses_ignored() -> None:
    svc, _, counters, _ = service()
    assert to_service(svc, ns(GUEST6)) is None
    assert to_service(svc, ns(GUEST_LL)) is None
    assert to_service(svc, ns("2001:db8:1::77", src="2001:db8:1::77")) is None
    assert counters.dropped == 0


def test_dad_probes_ignored_except_for_our_address() -> None:
    svc, guest, _, _ = service()
    assert to_service(svc, ns("fe80::5054:ff:fe12:9999", src="::", slla=False)) is None
    assert to_service(svc, ns("2001:db8:1::5", src="::", slla=False)) is None
    assert guest.addr6_ll is None and guest.addr6 is None
    pkt = answer(svc, ns(GW6, src="::", slla=False))
    assert (pkt.dst, pkt[IPv6].dst) == ("33:33:00:00:00:01", "ff02::1")
    assert (pkt[ICMPv6ND_NA].S, pkt[ICMPv6ND_NA].O, pkt[ICMPv6ND_NA].tgt) == (0, 1, GW6)


@pytest.mark.conformance("ndp.ra.prefix", "ndp.ra.rdnss", "ndp.ra.dnssl", "ndp.rs.ra")
def test_rs_gets_ra() -> None:
    """RS gets an RA with the prefix of the assigned address, RDNSS and DNSSL."""
    svc, _, _, lines = service()
    pkt = answer(svc, rs())
    assert (pkt.src, pkt.dst) == (OUR_MAC_STR, GUEST_MAC_STR)
    assert (pkt[IPv6].src, pkt[IPv6].dst, pkt[IPv6].hlim) == (GW6, GUEST_LL, 255)
    ra = pkt[ICMPv6ND_RA]
    assert (ra.M, ra.O, ra.routerlifetime, ra.code) == (1, 1, ROUTER_LIFETIME_S, 0)
    pi = pkt[ICMPv6NDOptPrefixInfo]
    assert (pi.prefix, pi.prefixlen, pi.L, pi.A) == ("2001:db8:1::", 64, 1, 1)
    assert pi.validlifetime >= pi.preferredlifetime >= 1800
    assert pkt[ICMPv6NDOptRDNSS].dns == [DNS6] and pkt[ICMPv6NDOptRDNSS].lifetime > 0
    assert pkt[ICMPv6NDOptDNSSL].searchlist == ["example.com."]
    assert pkt[ICMPv6NDOptSrcLLAddr].lladdr == OUR_MAC_STR
    assert ICMPv6NDOptMTU not in pkt
    assert lines == ["NDP: received RS, sending RA"]


@pytest.mark.conformance("ndp.ra.mtu")
def test_ra_mtu_only_with_mtu() -> None:
    """-m sends the MTU in RA option 5; none without it."""
    svc, _, _, _ = service(mtu=9000)
    assert answer(svc, rs())[ICMPv6NDOptMTU].mtu == 9000


@pytest.mark.conformance("opt.address", "opt.gateway")
def test_ra_follows_address_and_gateway() -> None:
    """-a sets the advertised prefix; -g (IPv6) sets the RA source address."""
    ip6 = make_ip6(
        addr=IPv6Address("2001:db8:abcd:12::9"),
        prefix_len=56,
        gateway=IPv6Address("fe80::abcd"),
        dns=(),
    )
    svc, _, _, _ = service(ip6=ip6, search=())
    pkt = answer(svc, rs())
    assert pkt[IPv6].src == "fe80::abcd"
    pi = pkt[ICMPv6NDOptPrefixInfo]
    assert (pi.prefix, pi.prefixlen) == ("2001:db8:abcd::", 56)
    assert ICMPv6NDOptRDNSS not in pkt and ICMPv6NDOptDNSSL not in pkt


def test_ra_without_dhcpv6_clears_m_and_o() -> None:
    svc, _, _, _ = service(dhcpv6=False)
    ra = answer(svc, rs())[ICMPv6ND_RA]
    assert (ra.M, ra.O) == (0, 0)


def test_rs_from_unspecified_gets_multicast_ra() -> None:
    svc, _, _, _ = service()
    pkt = answer(svc, rs(src="::", slla=False))
    assert (pkt.dst, pkt[IPv6].dst) == ("33:33:00:00:00:01", "ff02::1")


def test_unsolicited_ras() -> None:
    svc, _, _, _ = service()
    deadline = svc.next_deadline()
    assert deadline is not None and NOW < deadline <= NOW + 2
    assert svc.on_timer(deadline - 0.1) == []
    times = []
    now = deadline
    for _ in range(5):
        frames = svc.on_timer(now)
        assert len(frames) == 1
        assert_checksums(frames[0])
        pkt = Ether(frames[0])
        assert (pkt.dst, pkt[IPv6].dst, pkt[IPv6].src) == ("33:33:00:00:00:01", "ff02::1", GW6)
        assert pkt[ICMPv6NDOptPrefixInfo].prefix == "2001:db8:1::"
        nxt = svc.next_deadline()
        assert nxt is not None
        times.append(nxt - now)
        now = nxt
    # the initial burst (RFC 4861 section 6.2.4), then the regular interval
    assert all(0 < t <= 16 for t in times[:2])
    assert all(MIN_RTR_ADV_INTERVAL_S <= t <= MAX_RTR_ADV_INTERVAL_S for t in times[2:])
    assert max(times) < ROUTER_LIFETIME_S


@pytest.mark.conformance("opt.no-ra")
def test_no_ra() -> None:
    """--no-ra: RS is ignored and no RAs are sent; NS is still answered."""
    svc, _, _, _ = service(ra=False)
    assert to_service(svc, rs()) is None
    assert svc.next_deadline() is None and svc.on_timer(NOW + 1e6) == []
    assert to_service(svc, ns(GW6)) is not None


@pytest.mark.conformance("opt.no-ndp")
def test_no_ndp() -> None:
    """--no-ndp: no NDP message is answered and no RA is sent."""
    svc, _, counters, _ = service(ndp=False)
    assert to_service(svc, ns(GW6)) is None
    assert to_service(svc, rs()) is None
    assert svc.next_deadline() is None
    assert counters.dropped == 2


@pytest.mark.conformance("opt.ipv4-only")
def test_ipv6_disabled() -> None:
    """With IPv6 disabled (-4) NDP is not answered and no RA is sent."""
    svc, _, _, _ = service(ip6=None)
    assert to_service(svc, ns(GW6)) is None
    assert svc.next_deadline() is None and svc.on_timer(NOW + 10) == []


def _with(frame: bytes, offset: int, value: bytes, *, fix_checksum: bool = True) -> bytes:
    data = bytearray(frame)
    data[offset : offset + len(value)] = value
    pkt = Ether(bytes(data))
    if fix_checksum:
        layer = pkt[IPv6].payload
        layer.cksum = None
    return raw(pkt)


_ICMP = 14 + 40


def _icmp_frame(icmp: bytes) -> bytes:
    """ICMPv6 bytes in a consistent IPv6 frame with a valid checksum (scapy's in6_chksum)."""
    ip = IPv6(src=GUEST_LL, dst="ff02::2", hlim=255, nh=58)
    data = bytearray(icmp)
    if len(data) >= 4:
        data[2:4] = b"\0\0"
        data[2:4] = in6_chksum(58, ip, bytes(data)).to_bytes(2, "big")  # type: ignore[no-untyped-call]
    return raw(Ether(src=GUEST_MAC_STR) / ip / bytes(data))


@pytest.mark.parametrize(
    "frame",
    [
        ns(GW6, hlim=64),
        _with(ns(GW6), _ICMP + 2, b"\x12\x34", fix_checksum=False),
        _with(ns(GW6), _ICMP + 1, b"\x01"),
        _with(ns(GW6), _ICMP + 25, b"\x00"),
        _with(ns(GW6), _ICMP + 25, b"\x02"),
        _with(rs(), _ICMP + 9, b"\x00"),
        _icmp_frame(ns(GW6)[_ICMP : _ICMP + 20]),
        _icmp_frame(rs()[_ICMP : _ICMP + 6]),
        _icmp_frame(rs()[_ICMP : _ICMP + 2]),
        ns("ff02::1"),
        ns(GW6, src="::", dst="ff02::1", slla=False),
        ns(GW6, src="::"),
        rs(src="::"),
        raw(
            Ether(src=GUEST_MAC_STR)
            / IPv6(src=GUEST_LL, dst="ff02::1", hlim=255)
            / ICMPv6ND_RS(type=140)
        ),
    ],
    ids=[
        "hop-limit",
        "checksum",
        "code",
        "zero-length-option",
        "option-overrun",
        "rs-zero-length-option",
        "short-ns",
        "short-rs",
        "short-icmpv6",
        "multicast-target",
        "dad-not-solicited-node",
        "dad-with-slla",
        "rs-unspecified-with-slla",
        "unknown-type",
    ],
)
def test_malformed_dropped_and_counted(frame: bytes) -> None:
    svc, _, counters, _ = service()
    assert to_service(svc, frame) is None
    assert counters.dropped == 1


def test_na_from_guest_ignored() -> None:
    svc, guest, counters, _ = service()
    na = raw(
        Ether(src=GUEST_MAC_STR)
        / IPv6(src=GUEST_LL, dst="ff02::1", hlim=255)
        / ICMPv6ND_NA(tgt=GUEST_LL, S=0)
        / ICMPv6NDOptDstLLAddr(lladdr=GUEST_MAC_STR)
    )
    assert to_service(svc, na) is None
    assert counters.dropped == 0 and guest.mac == GUEST_MAC


def test_fuzz_never_raises() -> None:
    svc, _, _, _ = service(mtu=1500)
    seeds = [ns(GW6), rs(), ns(GW6, src="::", slla=False), rs(src="::", slla=False)]
    replies = fuzz(lambda f: to_service(svc, bytes(f)), seeds, count=4000, seed=3)
    assert replies > 0
