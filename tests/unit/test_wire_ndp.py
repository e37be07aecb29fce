"""wire/ndp.py against scapy."""

from __future__ import annotations

import pytest
from scapy.compat import raw
from scapy.layers.inet6 import (
    ICMPv6ND_NA,
    ICMPv6ND_NS,
    ICMPv6ND_RA,
    ICMPv6ND_RS,
    ICMPv6NDOptDNSSL,
    ICMPv6NDOptMTU,
    ICMPv6NDOptPrefixInfo,
    ICMPv6NDOptRDNSS,
    ICMPv6NDOptSrcLLAddr,
)

from passt.wire.errors import ParseError
from passt.wire.ndp import (
    NA_FLAG_OVERRIDE,
    NA_FLAG_ROUTER,
    NA_FLAG_SOLICITED,
    OPT_SOURCE_LLADDR,
    OPT_TARGET_LLADDR,
    build_neighbor_advert,
    build_neighbor_solicit,
    build_router_advert,
    find_lladdr,
    opt_dnssl,
    opt_lladdr,
    opt_mtu,
    opt_prefix,
    opt_rdnss,
    parse_ndp_options,
    parse_neighbor,
    parse_router_advert,
    parse_router_solicit,
)
from tests.unit.conftest import check_prefixes

MAC = bytes.fromhex("525400123456")
TARGET = bytes.fromhex("fe800000000000000000000000000001")
NS = raw(ICMPv6ND_NS(tgt="fe80::1") / ICMPv6NDOptSrcLLAddr(lladdr="52:54:00:12:34:56"))
RS = raw(ICMPv6ND_RS() / ICMPv6NDOptSrcLLAddr(lladdr="52:54:00:12:34:56"))


def test_parse_neighbor_solicit_whole() -> None:
    ns = parse_neighbor(memoryview(NS))
    assert ns.type == 135 and ns.code == 0 and ns.target == TARGET
    assert find_lladdr(ns.options, OPT_SOURCE_LLADDR) == MAC
    assert find_lladdr(ns.options, OPT_TARGET_LLADDR) is None


def test_parse_router_solicit_whole() -> None:
    rs = parse_router_solicit(memoryview(RS))
    assert rs.code == 0 and find_lladdr(rs.options, OPT_SOURCE_LLADDR) == MAC


def test_prefixes_refused() -> None:
    """A cut option or a cut fixed part is an error; a cut between options is not."""
    check_prefixes(parse_neighbor, NS, ok=lambda m: m.options == [])
    check_prefixes(parse_router_solicit, RS, ok=lambda m: m.options == [])


def test_zero_length_option_refused() -> None:
    with pytest.raises(ParseError):
        parse_ndp_options(memoryview(b"\x01\x00" + bytes(6)))
    with pytest.raises(ParseError):
        parse_router_solicit(memoryview(RS[:8] + b"\x01\x00" + MAC))
    with pytest.raises(ParseError):
        parse_ndp_options(memoryview(b"\x01\x02" + bytes(6)))
    with pytest.raises(ParseError):
        parse_ndp_options(memoryview(b"\x01\x01" * 4 * 65))


def test_neighbor_build_parse_build() -> None:
    ns = parse_neighbor(memoryview(NS))
    again = build_neighbor_solicit(target=ns.target, options=opt_lladdr(OPT_SOURCE_LLADDR, MAC))
    assert again[4:] == NS[4:]
    na = build_neighbor_advert(
        flags=NA_FLAG_ROUTER | NA_FLAG_SOLICITED | NA_FLAG_OVERRIDE,
        target=TARGET,
        options=opt_lladdr(OPT_TARGET_LLADDR, MAC),
    )
    pkt = ICMPv6ND_NA(na)
    assert (pkt.R, pkt.S, pkt.O, pkt.tgt) == (1, 1, 1, "fe80::1")
    assert (
        parse_neighbor(memoryview(na)).flags
        == NA_FLAG_ROUTER | NA_FLAG_SOLICITED | NA_FLAG_OVERRIDE
    )


def test_router_advert_options_match_scapy() -> None:
    options = (
        opt_prefix(
            prefix=bytes.fromhex("20010db8000100000000000000000000"),
            prefix_len=64,
            flags=0xC0,
            valid=7,
            preferred=5,
        )
        + opt_mtu(1500)
        + opt_rdnss(30, [bytes.fromhex("20010db8000000000000000000000053")])
        + opt_dnssl(30, ["example.com", "b.example.org"])
        + opt_lladdr(OPT_SOURCE_LLADDR, MAC)
    )
    ra = build_router_advert(cur_hop_limit=64, flags=0xC0, router_lifetime=3600, options=options)
    pkt = ICMPv6ND_RA(ra)
    assert (pkt.chlim, pkt.M, pkt.O, pkt.routerlifetime) == (64, 1, 1, 3600)
    pi = pkt[ICMPv6NDOptPrefixInfo]
    assert (pi.prefix, pi.prefixlen, pi.L, pi.A, pi.validlifetime, pi.preferredlifetime) == (
        "2001:db8:1::",
        64,
        1,
        1,
        7,
        5,
    )
    assert pkt[ICMPv6NDOptMTU].mtu == 1500
    assert pkt[ICMPv6NDOptRDNSS].dns == ["2001:db8::53"] and pkt[ICMPv6NDOptRDNSS].lifetime == 30
    assert pkt[ICMPv6NDOptDNSSL].searchlist == ["example.com.", "b.example.org."]
    assert pkt[ICMPv6NDOptSrcLLAddr].lladdr == "52:54:00:12:34:56"
    hop, flags, lifetime, opts = parse_router_advert(memoryview(ra))
    assert (hop, flags, lifetime) == (64, 0xC0, 3600) and [o.type for o in opts] == [
        3,
        5,
        25,
        31,
        1,
    ]
    assert len(opt_dnssl(1, ["example.com"])) % 8 == 0


def test_empty_dns_options_are_omitted() -> None:
    assert (
        opt_rdnss(1, []) == b"" and opt_dnssl(1, []) == b"" and opt_dnssl(1, ["bad..name"]) == b""
    )
