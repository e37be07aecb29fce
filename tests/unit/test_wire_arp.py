"""wire/arp.py against scapy."""

from __future__ import annotations

from typing import Any

import pytest
from scapy.compat import raw
from scapy.layers.l2 import ARP

from passt.wire.arp import ARP_LEN, ARP_OP_REQUEST, build_arp, parse_arp
from passt.wire.errors import ParseError
from tests.unit.conftest import check_prefixes

PKT = raw(
    ARP(
        op=1,
        hwsrc="52:54:00:12:34:56",
        psrc="192.0.2.118",
        hwdst="00:00:00:00:00:00",
        pdst="192.0.2.1",
    )
)


def test_parse_arp_whole() -> None:
    arp = parse_arp(memoryview(PKT))
    assert arp.op == ARP_OP_REQUEST
    assert arp.sha == bytes.fromhex("525400123456") and arp.spa == bytes([192, 0, 2, 118])
    assert arp.tha == bytes(6) and arp.tpa == bytes([192, 0, 2, 1])


def test_parse_arp_prefixes_and_trailing() -> None:
    check_prefixes(parse_arp, PKT)
    assert parse_arp(memoryview(PKT + bytes(18))) == parse_arp(memoryview(PKT))


@pytest.mark.parametrize("field", [{"hwtype": 6}, {"ptype": 0x86DD}, {"hwlen": 8}, {"plen": 16}])
def test_parse_arp_refuses_other_layouts(field: dict[str, Any]) -> None:
    with pytest.raises(ParseError):
        parse_arp(memoryview(raw(ARP(**field)) + bytes(20)))


def test_arp_build_parse_build() -> None:
    arp = parse_arp(memoryview(PKT))
    buf = bytearray(ARP_LEN)
    assert (
        build_arp(buf, 0, op=arp.op, sha=arp.sha, spa=arp.spa, tha=arp.tha, tpa=arp.tpa) == ARP_LEN
    )
    assert bytes(buf) == PKT
