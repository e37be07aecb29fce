"""wire/eth.py against scapy."""

from __future__ import annotations

import pytest
from scapy.compat import raw
from scapy.layers.l2 import Ether

from passt.wire.errors import ParseError
from passt.wire.eth import ETH_HLEN, ETH_P_ARP, EthHeader, build_eth, ipv6_multicast_mac, parse_eth
from tests.unit.conftest import check_prefixes

FRAME = raw(Ether(dst="52:54:00:12:34:56", src="9a:55:34:a1:b2:c3", type=0x0806) / b"payload")


def test_parse_eth_whole() -> None:
    hdr = parse_eth(memoryview(FRAME))
    assert hdr == EthHeader(bytes.fromhex("525400123456"), bytes.fromhex("9a5534a1b2c3"), ETH_P_ARP)


def test_parse_eth_prefixes() -> None:
    check_prefixes(parse_eth, FRAME[:ETH_HLEN])
    with pytest.raises(ParseError):
        parse_eth(memoryview(b""))


def test_parse_eth_trailing_bytes_ignored() -> None:
    assert parse_eth(memoryview(FRAME + b"\0" * 40)) == parse_eth(memoryview(FRAME))


def test_eth_round_trip() -> None:
    hdr = parse_eth(memoryview(FRAME))
    buf = bytearray(ETH_HLEN)
    assert build_eth(buf, 0, hdr.dst, hdr.src, hdr.ethertype) == ETH_HLEN
    assert bytes(buf) == FRAME[:ETH_HLEN]
    assert Ether(bytes(buf)).type == 0x0806


def test_ipv6_multicast_mac() -> None:
    assert ipv6_multicast_mac(bytes.fromhex("ff0200000000000000000001ff123456")) == bytes.fromhex(
        "3333ff123456"
    )
