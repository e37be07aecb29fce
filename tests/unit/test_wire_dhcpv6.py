"""wire/dhcpv6.py against scapy."""

from __future__ import annotations

import pytest
from scapy.compat import raw
from scapy.layers.dhcp6 import (
    DUID_LL,
    DHCP6_Reply,
    DHCP6_Solicit,
    DHCP6OptClientId,
    DHCP6OptIA_NA,
    DHCP6OptIAAddress,
    DHCP6OptServerId,
    DHCP6OptStatusCode,
)

from passt.wire.dhcpv6 import (
    OPT_CLIENTID,
    OPT_IA_NA,
    OPT_IAADDR,
    REPLY,
    SOLICIT,
    build_dhcpv6,
    duid_ll,
    find_option,
    opt_ia_na,
    opt_iaaddr,
    opt_status,
    option6,
    parse_dhcpv6,
    parse_ia_na,
    parse_iaaddr,
    parse_options6,
)
from passt.wire.errors import ParseError
from tests.unit.conftest import check_prefixes

ADDR = bytes.fromhex("20010db8000100000000000000000118")
MSG = raw(
    DHCP6_Solicit(trid=0x123456)
    / DHCP6OptClientId(duid=DUID_LL(lladdr="52:54:00:12:34:56"))
    / DHCP6OptIA_NA(
        iaid=7,
        T1=10,
        T2=20,
        ianaopts=[DHCP6OptIAAddress(addr="2001:db8:1::118", preflft=1, validlft=2)],
    )
)


def test_parse_dhcpv6_whole() -> None:
    msg = parse_dhcpv6(memoryview(MSG))
    assert msg.msg_type == SOLICIT and msg.xid == 0x123456
    assert [o.code for o in msg.options] == [OPT_CLIENTID, OPT_IA_NA]
    client_id = find_option(msg.options, OPT_CLIENTID)
    assert client_id is not None and bytes(client_id) == duid_ll(bytes.fromhex("525400123456"))
    ia_data = find_option(msg.options, OPT_IA_NA)
    assert ia_data is not None
    ia = parse_ia_na(ia_data)
    assert (ia.iaid, ia.t1, ia.t2) == (7, 10, 20) and ia.options[0].code == OPT_IAADDR
    addr = parse_iaaddr(ia.options[0].data)
    assert (addr.addr, addr.preferred, addr.valid, addr.options) == (ADDR, 1, 2, [])


def test_parse_dhcpv6_prefixes() -> None:
    check_prefixes(parse_dhcpv6, MSG, ok=lambda m: len(m.options) < 2)
    ia_data = find_option(parse_dhcpv6(memoryview(MSG)).options, OPT_IA_NA)
    assert ia_data is not None
    check_prefixes(parse_ia_na, bytes(ia_data), ok=lambda ia: ia.options == [])


def test_parse_dhcpv6_refuses() -> None:
    with pytest.raises(ParseError):
        parse_dhcpv6(memoryview(MSG + b"\x00\x01\x00\x05ab"))
    with pytest.raises(ParseError):
        parse_dhcpv6(memoryview(b"\x0c" + MSG[1:]))
    with pytest.raises(ParseError):
        parse_options6(memoryview(b"\x00\x08\x00\x00" * 129))


def test_dhcpv6_build_parse_build() -> None:
    msg = parse_dhcpv6(memoryview(MSG))
    options = b"".join(option6(o.code, bytes(o.data)) for o in msg.options)
    assert build_dhcpv6(msg.msg_type, msg.xid, options) == MSG


def test_reply_builders_match_scapy() -> None:
    server = duid_ll(bytes.fromhex("9a5534a1b2c3"))
    out = build_dhcpv6(
        REPLY,
        0xABCDEF,
        option6(2, server)
        + opt_ia_na(7, 0xFFFFFFFF, 0xFFFFFFFF, opt_iaaddr(ADDR, 0xFFFFFFFF, 0xFFFFFFFF))
        + opt_status(0, "ok"),
    )
    pkt = DHCP6_Reply(out)
    assert pkt.trid == 0xABCDEF
    assert pkt[DHCP6OptServerId].duid.lladdr == "9a:55:34:a1:b2:c3"
    assert pkt[DHCP6OptIA_NA].iaid == 7 and pkt[DHCP6OptIA_NA].T1 == 0xFFFFFFFF
    assert pkt[DHCP6OptIAAddress].addr == "2001:db8:1::118"
    assert pkt[DHCP6OptStatusCode].statuscode == 0 and pkt[DHCP6OptStatusCode].statusmsg == b"ok"
