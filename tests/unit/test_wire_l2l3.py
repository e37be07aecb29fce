"""Per-flow Ethernet + IP headers: the same bytes as build_eth + build_ipv4/build_ipv6, at any length."""

from __future__ import annotations

import pytest
from scapy.layers.inet import IP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import Ether

from passt.wire.eth import ETH_HLEN, ETH_P_IP, ETH_P_IPV6, build_eth
from passt.wire.ipv4 import build_ipv4, ipv4_header_ok
from passt.wire.ipv6 import build_ipv6
from passt.wire.l2l3 import L2L3_HLEN4, L2L3_HLEN6, L2L3Template

GUEST_MAC = bytes.fromhex("525400123456")
OUR_MAC = bytes.fromhex("9a55aa000001")
SRC4, DST4 = bytes([203, 0, 113, 9]), bytes([192, 0, 2, 3])
SRC6 = bytes.fromhex("20010db8007700000000000000000009")
DST6 = bytes.fromhex("20010db8000100000000000000000003")


@pytest.mark.parametrize("l4_len", [0, 8, 1472, 65515])
def test_ipv4_headers_match_the_builders(l4_len: int) -> None:
    tpl = L2L3Template(4, GUEST_MAC, OUR_MAC, SRC4, DST4, 17)
    buf = bytearray(100)
    assert tpl.write(buf, 60, l4_len) == 60 - L2L3_HLEN4
    want = bytearray(L2L3_HLEN4)
    build_ipv4(want, build_eth(want, 0, GUEST_MAC, OUR_MAC, ETH_P_IP), src=SRC4, dst=DST4, proto=17,
               payload_len=l4_len)  # fmt: skip
    assert buf[60 - L2L3_HLEN4 : 60] == want
    assert ipv4_header_ok(memoryview(bytes(buf[60 - L2L3_HLEN4 + ETH_HLEN : 60])), 20)
    ip = Ether(bytes(buf[60 - L2L3_HLEN4 : 60]))[IP]
    assert (ip.src, ip.dst, ip.len, ip.ttl, ip.flags.DF, ip.proto) == ("203.0.113.9", "192.0.2.3", 20 + l4_len, 255, True, 17)


@pytest.mark.parametrize("l4_len", [0, 8, 65535])
def test_ipv6_headers_match_the_builders(l4_len: int) -> None:
    tpl = L2L3Template(6, GUEST_MAC, OUR_MAC, SRC6, DST6, 58)
    buf = bytearray(80)
    assert tpl.write(buf, L2L3_HLEN6, l4_len) == 0
    want = bytearray(L2L3_HLEN6)
    build_ipv6(want, build_eth(want, 0, GUEST_MAC, OUR_MAC, ETH_P_IPV6), src=SRC6, dst=DST6, next_header=58,
               payload_len=l4_len)  # fmt: skip
    assert buf[:L2L3_HLEN6] == want
    ip = Ether(bytes(buf[:L2L3_HLEN6]))[IPv6]
    assert (ip.plen, ip.nh, ip.hlim, ip.dst) == (l4_len, 58, 255, "2001:db8:1::3")


def test_template_keeps_the_mac_it_was_built_with() -> None:
    """Flows compare it by identity with the guest's current MAC to notice a change."""
    tpl = L2L3Template(4, GUEST_MAC, OUR_MAC, SRC4, DST4, 1)
    assert tpl.dst_mac is GUEST_MAC
