"""services/dhcpv6.py: scapy-built client messages in, replies dissected by scapy."""

from __future__ import annotations

from ipaddress import IPv6Address
from typing import Any

import pytest
from scapy.compat import raw
from scapy.layers.dhcp6 import (
    DUID_LL,
    DHCP6_Advertise,
    DHCP6_Confirm,
    DHCP6_Decline,
    DHCP6_InfoRequest,
    DHCP6_Rebind,
    DHCP6_Release,
    DHCP6_Renew,
    DHCP6_Reply,
    DHCP6_Request,
    DHCP6_Solicit,
    DHCP6OptClientFQDN,
    DHCP6OptClientId,
    DHCP6OptDNSDomains,
    DHCP6OptDNSServers,
    DHCP6OptElapsedTime,
    DHCP6OptIA_NA,
    DHCP6OptIA_TA,
    DHCP6OptIAAddress,
    DHCP6OptOptReq,
    DHCP6OptPref,
    DHCP6OptRapidCommit,
    DHCP6OptServerId,
    DHCP6OptStatusCode,
)
from scapy.layers.inet import UDP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import Ether
from scapy.packet import Raw

from passt.counters import Counters
from passt.guest import GuestState
from passt.services.dhcpv6 import Dhcpv6Service
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

TRID = 0xABCDEF
CLIENT = DHCP6OptClientId(duid=DUID_LL(lladdr=GUEST_MAC_STR))
OURS = DHCP6OptServerId(duid=DUID_LL(lladdr=OUR_MAC_STR))
IA = DHCP6OptIA_NA(iaid=0x0102)


def service(**overrides: Any) -> tuple[Dhcpv6Service, GuestState, Counters, list[str]]:
    conf = make_config(**overrides)
    guest = GuestState.from_config(conf)
    counters = Counters()
    lines: list[str] = []
    return Dhcpv6Service(conf, guest, counters, lines.append), guest, counters, lines


def frame(msg: Any, *, src: str = GUEST_LL) -> bytes:
    return raw(
        Ether(src=GUEST_MAC_STR, dst="33:33:00:01:00:02")
        / IPv6(src=src, dst="ff02::1:2", hlim=1)
        / UDP(sport=546, dport=547)
        / msg
    )


def solicit(*extra: Any) -> bytes:
    msg = (
        DHCP6_Solicit(trid=TRID)
        / CLIENT
        / DHCP6OptElapsedTime()
        / DHCP6OptOptReq(reqopts=[23, 24])
        / IA
    )
    for opt in extra:
        msg = msg / opt
    return frame(msg)


def answer(svc: Dhcpv6Service, data: bytes) -> Any:
    out = svc.handle(memoryview(data))
    assert out is not None
    assert_checksums(out)
    pkt = Ether(out)
    assert (pkt.src, pkt.dst) == (OUR_MAC_STR, GUEST_MAC_STR)
    assert (pkt[IPv6].src, pkt[IPv6].dst) == (GW6, GUEST_LL)
    assert (pkt[UDP].sport, pkt[UDP].dport) == (547, 546)
    assert pkt[UDP].payload.trid == TRID
    assert pkt[DHCP6OptServerId].duid.lladdr == OUR_MAC_STR
    return pkt


def assert_address(pkt: Any, iaid: int = 0x0102) -> None:
    ia = pkt[DHCP6OptIA_NA]
    assert ia.iaid == iaid
    addr = ia[DHCP6OptIAAddress]
    assert addr.addr == GUEST6
    assert (addr.preflft, addr.validlft) == (0xFFFFFFFF, 0xFFFFFFFF)


@pytest.mark.conformance("dhcpv6.option5.addr", "dhcpv6.option23.dns", "dhcpv6.option24.search", "dhcpv6.handshake")
def test_solicit_gets_advertise() -> None:
    """SOLICIT gets an ADVERTISE with the address (option 5), DNS (23) and search list (24)."""
    svc, guest, _, lines = service()
    pkt = answer(svc, solicit())
    assert DHCP6_Advertise in pkt
    assert pkt[DHCP6OptClientId].duid.lladdr == GUEST_MAC_STR
    assert_address(pkt)
    assert pkt[DHCP6OptDNSServers].dnsservers == [DNS6]
    assert pkt[DHCP6OptDNSDomains].dnsdomains == ["example.com."]
    assert pkt[DHCP6OptPref].prefval == 255
    assert lines == ["DHCPv6: received SOLICIT, sending ADVERTISE"]
    assert guest.mac == GUEST_MAC and guest.addr6_ll == IPv6Address(GUEST_LL).packed


@pytest.mark.conformance("opt.address", "opt.dns", "opt.search", "opt.gateway")
def test_configured_values_are_handed_out() -> None:
    """-a, -D, -S set options 5, 23 and 24; -g (IPv6) sets the source of replies."""
    ip6 = make_ip6(
        addr=IPv6Address("2001:db8:77::5"),
        gateway=IPv6Address("fe80::77"),
        dns=(IPv6Address("2001:db8::a"), IPv6Address("2001:db8::b")),
    )
    svc, _, _, _ = service(ip6=ip6, search=("a.example", "b.example.org"))
    out = svc.handle(memoryview(solicit()))
    assert out is not None
    pkt = Ether(out)
    assert pkt[IPv6].src == "fe80::77"
    assert pkt[DHCP6OptIAAddress].addr == "2001:db8:77::5"
    assert pkt[DHCP6OptDNSServers].dnsservers == ["2001:db8::a", "2001:db8::b"]
    assert pkt[DHCP6OptDNSDomains].dnsdomains == ["a.example.", "b.example.org."]


def test_no_dns_no_search_omitted() -> None:
    svc, _, _, _ = service(ip6=make_ip6(dns=()), search=())
    pkt = answer(svc, solicit())
    assert DHCP6OptDNSServers not in pkt and DHCP6OptDNSDomains not in pkt
    assert_address(pkt)


def test_rapid_commit_gets_reply() -> None:
    svc, _, _, lines = service()
    pkt = answer(svc, solicit(DHCP6OptRapidCommit()))
    assert DHCP6_Reply in pkt and DHCP6OptRapidCommit in pkt
    assert_address(pkt)
    assert lines == ["DHCPv6: received SOLICIT, sending REPLY"]


@pytest.mark.conformance("dhcpv6.handshake")
@pytest.mark.parametrize("cls", [DHCP6_Request, DHCP6_Renew])
def test_request_and_renew_get_reply(cls: Any) -> None:
    """REQUEST and RENEW get a REPLY carrying the address and DNS."""
    svc, _, _, lines = service()
    pkt = answer(svc, frame(cls(trid=TRID) / CLIENT / OURS / IA))
    assert DHCP6_Reply in pkt
    assert_address(pkt)
    assert pkt[DHCP6OptDNSServers].dnsservers == [DNS6]
    assert lines == ["DHCPv6: received REQUEST/RENEW/CONFIRM, sending REPLY"]


def test_rebind_gets_reply() -> None:
    svc, _, _, _ = service()
    assert_address(answer(svc, frame(DHCP6_Rebind(trid=TRID) / CLIENT / IA)))


def test_request_for_other_server_ignored() -> None:
    svc, _, counters, _ = service()
    other = DHCP6OptServerId(duid=DUID_LL(lladdr="02:00:00:00:00:01"))
    assert svc.handle(memoryview(frame(DHCP6_Request(trid=TRID) / CLIENT / other / IA))) is None
    assert counters.events["dhcpv6: message for another server"] == 1


def test_second_ia_na_and_ia_ta_get_no_address() -> None:
    svc, _, _, _ = service()
    pkt = answer(svc, solicit(DHCP6OptIA_NA(iaid=9), DHCP6OptIA_TA(iaid=10)))
    ias = [layer for layer in pkt.iterpayloads() if isinstance(layer, DHCP6OptIA_NA)]
    assert [ia.iaid for ia in ias] == [0x0102, 9]
    assert ias[1][DHCP6OptStatusCode].statuscode == 2
    assert pkt[DHCP6OptIA_TA].iaid == 10 and pkt[DHCP6OptIA_TA][DHCP6OptStatusCode].statuscode == 2


def _confirm(addr: str) -> bytes:
    ia = DHCP6OptIA_NA(iaid=0x0102, ianaopts=[DHCP6OptIAAddress(addr=addr)])
    return frame(DHCP6_Confirm(trid=TRID) / CLIENT / ia)


@pytest.mark.conformance("dhcpv6.handshake")
def test_confirm() -> None:
    """CONFIRM gets a REPLY: success for our address, NotOnLink for another."""
    svc, _, _, _ = service()
    assert answer(svc, _confirm(GUEST6))[DHCP6OptStatusCode].statuscode == 0
    assert answer(svc, _confirm("2001:db8:ffff::1"))[DHCP6OptStatusCode].statuscode == 4
    assert svc.handle(memoryview(frame(DHCP6_Confirm(trid=TRID) / CLIENT / IA))) is None


def test_information_request_gets_reply_without_ia() -> None:
    svc, _, _, lines = service()
    pkt = answer(svc, frame(DHCP6_InfoRequest(trid=TRID) / DHCP6OptOptReq(reqopts=[23, 24])))
    assert DHCP6_Reply in pkt and DHCP6OptIA_NA not in pkt and DHCP6OptClientId not in pkt
    assert pkt[DHCP6OptDNSServers].dnsservers == [DNS6]
    assert lines == ["DHCPv6: received INFORMATION-REQUEST, sending REPLY"]


@pytest.mark.parametrize("cls", [DHCP6_Release, DHCP6_Decline])
def test_release_and_decline_get_success(cls: Any) -> None:
    svc, _, _, _ = service()
    pkt = answer(svc, frame(cls(trid=TRID) / CLIENT / OURS / IA))
    assert DHCP6_Reply in pkt and pkt[DHCP6OptStatusCode].statuscode == 0


@pytest.mark.conformance("opt.no-dhcpv6")
def test_no_dhcpv6_drops() -> None:
    """--no-dhcpv6: DHCPv6 requests are silently dropped."""
    svc, guest, counters, _ = service(dhcpv6=False)
    assert svc.handle(memoryview(solicit())) is None
    assert counters.dropped == 1 and guest.mac != GUEST_MAC


@pytest.mark.conformance("opt.ipv4-only")
def test_ipv6_disabled_drops() -> None:
    """With IPv6 disabled (-4), no DHCPv6."""
    svc, _, _, _ = service(ip6=None)
    assert svc.handle(memoryview(solicit())) is None


def _bad_checksum() -> bytes:
    data = bytearray(solicit())
    data[14 + 40 + 6] ^= 0x55
    return bytes(data)


def _raw_dhcp6(payload: bytes) -> Any:
    return Raw(payload)


@pytest.mark.parametrize(
    "data",
    [
        _bad_checksum(),
        frame(
            _raw_dhcp6(
                raw(DHCP6_Solicit(trid=TRID) / CLIENT)[:4] + b"\x00\x01\xff\xff" + raw(CLIENT)[4:]
            )
        ),
        frame(_raw_dhcp6(raw(DHCP6_Solicit(trid=TRID) / CLIENT / IA)[:-3])),
        frame(_raw_dhcp6(b"\x01\x00")),
        frame(DHCP6_Solicit(trid=TRID) / CLIENT / OURS / IA),
        frame(DHCP6_Solicit(trid=TRID) / IA),
        frame(DHCP6_Request(trid=TRID) / CLIENT / IA),
        frame(DHCP6_Advertise(trid=TRID) / CLIENT / OURS),
        frame(_raw_dhcp6(raw(DHCP6_Solicit(trid=TRID) / CLIENT) + b"\x00\x03\x00\x04abcd")),
        frame(DHCP6_Solicit(trid=TRID) / CLIENT / IA, src="::"),
        frame(_raw_dhcp6(b"\x0c" + bytes(40))),
    ],
    ids=[
        "udp-checksum",
        "option-length",
        "truncated-option",
        "short-message",
        "solicit-with-server-id",
        "no-client-id",
        "request-without-server-id",
        "advertise-from-client",
        "short-ia-na",
        "unspecified-source",
        "relay-forward",
    ],
)
def test_malformed_dropped_and_counted(data: bytes) -> None:
    svc, _, counters, _ = service()
    assert svc.handle(memoryview(data)) is None
    assert counters.dropped == 1


def test_fuzz_never_raises() -> None:
    svc, _, _, _ = service()
    seeds = [
        solicit(),
        solicit(DHCP6OptRapidCommit(), DHCP6OptIA_TA(iaid=3)),
        frame(DHCP6_Request(trid=TRID) / CLIENT / OURS / IA),
        _confirm(GUEST6),
        frame(DHCP6_InfoRequest(trid=TRID)),
    ]
    replies = fuzz(svc.handle, seeds, count=4000, seed=4)
    assert replies > 0


@pytest.mark.conformance("callers.fqdn")
def test_fqdn_option_39() -> None:
    """--fqdn sends option 39 in wire format; flag O when the client set S (we never update DNS)."""
    svc, _, _, _ = service(fqdn="guest1.example.org")
    out = svc.handle(memoryview(solicit()))
    assert out is not None
    pkt = Ether(out)
    fqdn = pkt[DHCP6OptClientFQDN]
    assert fqdn.fqdn == b"guest1.example.org." and fqdn.flags == 0
    out = svc.handle(memoryview(solicit(DHCP6OptClientFQDN(flags=1, fqdn="x.example."))))
    assert out is not None
    assert Ether(out)[DHCP6OptClientFQDN].flags == 2
    svc, _, _, _ = service()
    pkt = answer(svc, solicit())
    assert DHCP6OptClientFQDN not in pkt
