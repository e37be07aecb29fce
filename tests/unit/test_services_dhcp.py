"""services/dhcp.py: scapy-built client messages in, replies dissected by scapy."""

from __future__ import annotations

from ipaddress import IPv4Address
from typing import Any

import pytest
from scapy.compat import raw
from scapy.layers.dhcp import BOOTP, DHCP
from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import Ether

from passt.counters import Counters
from passt.guest import GuestState
from passt.services.dhcp import DhcpService
from tests.unit.conftest import (
    DNS4,
    GUEST4,
    GUEST_MAC,
    GUEST_MAC_STR,
    GW4,
    OUR_MAC_STR,
    assert_checksums,
    decode_names,
    fuzz,
    make_config,
    make_ip4,
)

XID = 0x12345678


def service(**overrides: Any) -> tuple[DhcpService, GuestState, Counters, list[str]]:
    conf = make_config(**overrides)
    guest = GuestState.from_config(conf)
    counters = Counters()
    lines: list[str] = []
    return DhcpService(conf, guest, counters, lines.append), guest, counters, lines


def client(
    msg_type: str | int,
    options: list[Any] | None = None,
    *,
    ciaddr: str = "0.0.0.0",
    flags: int = 0,
    src: str = "0.0.0.0",
    dst: str = "255.255.255.255",
    bootp: dict[str, Any] | None = None,
) -> bytes:
    opts: list[Any] = [("message-type", msg_type)] + (options or []) + ["end"]
    return raw(
        Ether(src=GUEST_MAC_STR, dst="ff:ff:ff:ff:ff:ff")
        / IP(src=src, dst=dst)
        / UDP(sport=68, dport=67)
        / BOOTP(op=1, chaddr=GUEST_MAC, xid=XID, flags=flags, ciaddr=ciaddr, **(bootp or {}))
        / DHCP(options=opts)
    )


def options_of(frame: bytes) -> dict[Any, Any]:
    """DHCP options of a reply as a dict (codes scapy does not name stay ints).

    A code split over several options (RFC 3396) is concatenated.
    """
    out: dict[Any, Any] = {}
    for opt in Ether(frame)[DHCP].options:
        if isinstance(opt, tuple):
            value = opt[1] if len(opt) == 2 else list(opt[1:])
            if opt[0] in out and isinstance(value, bytes):
                value = out[opt[0]] + value
            out[opt[0]] = value
    return out


def reply(svc: DhcpService, frame: bytes) -> bytes:
    out = svc.handle(memoryview(frame))
    assert out is not None
    assert_checksums(out)
    return out


def request_for(addr: str = GUEST4, server: str = GW4, **kw: Any) -> bytes:
    return client("request", [("requested_addr", addr), ("server_id", server)], **kw)


@pytest.mark.conformance(
    "dhcp.yiaddr",
    "dhcp.option1.netmask",
    "dhcp.option3.router",
    "dhcp.option6.dns",
    "dhcp.option119.search",
    "dhcp.handshake",
    "dhcp.lease-infinite",
)
def test_discover_gets_offer() -> None:
    """DISCOVER gets an OFFER: yiaddr, netmask, router, DNS, search list, infinite lease."""
    svc, guest, counters, _ = service()
    out = reply(svc, client("discover", [("param_req_list", [1, 3, 6, 119])]))
    pkt = Ether(out)
    assert pkt.src == OUR_MAC_STR and pkt.dst == GUEST_MAC_STR
    assert (pkt[IP].src, pkt[IP].dst) == (GW4, GUEST4)
    assert (pkt[UDP].sport, pkt[UDP].dport) == (67, 68)
    bootp = pkt[BOOTP]
    assert (bootp.op, bootp.xid, bootp.yiaddr, bootp.ciaddr) == (2, XID, GUEST4, "0.0.0.0")
    assert bootp.chaddr[:6] == GUEST_MAC
    opts = options_of(out)
    assert opts["message-type"] == 2
    assert opts["server_id"] == GW4
    assert opts["subnet_mask"] == "255.255.255.0"
    assert opts["router"] == GW4
    assert opts["name_server"] == DNS4
    assert opts["lease_time"] == 0xFFFFFFFF
    assert decode_names(opts[119]) == ["example.com."]
    assert "interface-mtu" not in opts
    assert len(raw(pkt[BOOTP])) >= 300
    assert guest.mac == GUEST_MAC and counters.dropped == 0


@pytest.mark.conformance("opt.address", "opt.netmask", "opt.gateway", "opt.dns", "opt.search")
def test_configured_values_are_handed_out() -> None:
    """-a, -n, -g, -D and -S values appear in yiaddr and options 1, 3, 6 and 119."""
    ip4 = make_ip4(
        addr=IPv4Address("10.7.3.9"),
        prefix_len=16,
        gateway=IPv4Address("10.7.0.254"),
        dns=(IPv4Address("10.7.0.53"), IPv4Address("10.7.0.54")),
    )
    svc, _, _, _ = service(ip4=ip4, search=("eng.apple.com", "marketing.apple.com"))
    out = reply(svc, client("discover"))
    opts = options_of(out)
    assert Ether(out)[BOOTP].yiaddr == "10.7.3.9"
    assert opts["subnet_mask"] == "255.255.0.0"
    assert opts["router"] == "10.7.0.254" and opts["server_id"] == "10.7.0.254"
    assert opts["name_server"] == ["10.7.0.53", "10.7.0.54"]
    assert opts[119] == b"\x03eng\x05apple\x03com\x00\x09marketing\xc0\x04"


@pytest.mark.conformance("dhcp.option26.mtu", "opt.mtu")
def test_mtu_option_only_with_mtu() -> None:
    """-m sends the MTU in option 26; without it no option 26 is sent."""
    svc, _, _, _ = service(mtu=1500)
    assert options_of(reply(svc, client("discover")))["interface-mtu"] == 1500
    svc, _, _, _ = service()
    assert "interface-mtu" not in options_of(reply(svc, client("discover")))


def test_empty_dns_search_and_no_gateway_omitted() -> None:
    svc, _, _, _ = service(ip4=make_ip4(gateway=None, dns=()), search=())
    out = reply(svc, client("discover"))
    opts = options_of(out)
    assert "router" not in opts and "name_server" not in opts and 119 not in opts
    # server identifier falls back to the subnet's first host; replies come from it
    assert opts["server_id"] == "192.0.2.1" and Ether(out)[IP].src == "192.0.2.1"


def test_server_identifier_never_the_guest() -> None:
    svc, _, _, _ = service(ip4=make_ip4(addr=IPv4Address("192.0.2.1"), gateway=None))
    assert options_of(reply(svc, client("discover")))["server_id"] == "192.0.2.2"
    svc, _, _, _ = service(ip4=make_ip4(addr=IPv4Address("192.0.2.7"), prefix_len=32, gateway=None))
    assert options_of(reply(svc, client("discover")))["server_id"] == "192.0.2.6"


def test_requested_options_come_first() -> None:
    svc, _, _, _ = service(mtu=1400)
    out = reply(svc, client("discover", [("param_req_list", [26, 6, 1])]))
    codes = [opt[0] for opt in Ether(out)[DHCP].options if isinstance(opt, tuple)]
    assert codes[:3] == ["message-type", "server_id", "lease_time"]
    assert codes[3:6] == ["interface-mtu", "name_server", "subnet_mask"]
    assert set(codes[6:]) == {"router", 119}


@pytest.mark.conformance("dhcp.handshake", "dhcp.lease-infinite")
def test_request_gets_ack() -> None:
    """A REQUEST for the offered address gets an ACK with it and an infinite lease."""
    svc, _, _, lines = service()
    out = reply(svc, request_for())
    pkt = Ether(out)
    opts = options_of(out)
    assert (
        opts["message-type"] == 5
        and pkt[BOOTP].yiaddr == GUEST4
        and opts["lease_time"] == 0xFFFFFFFF
    )
    assert opts["subnet_mask"] == "255.255.255.0" and opts["router"] == GW4
    assert lines == ["DHCP: ack to request"]


def test_renewing_request_with_ciaddr_unicast_ack() -> None:
    svc, guest, _, _ = service()
    out = reply(svc, client("request", ciaddr=GUEST4, src=GUEST4, dst=GW4))
    pkt = Ether(out)
    assert options_of(out)["message-type"] == 5
    assert (pkt.dst, pkt[IP].dst) == (GUEST_MAC_STR, GUEST4)
    assert guest.addr4 == bytes([192, 0, 2, 118])


def test_request_for_other_address_gets_broadcast_nak() -> None:
    svc, _, _, lines = service()
    out = reply(svc, request_for("192.0.2.99"))
    pkt = Ether(out)
    opts = options_of(out)
    assert opts["message-type"] == 6 and opts["server_id"] == GW4
    assert "lease_time" not in opts and pkt[BOOTP].yiaddr == "0.0.0.0"
    assert (pkt.dst, pkt[IP].dst) == ("ff:ff:ff:ff:ff:ff", "255.255.255.255")
    assert lines == ["DHCP: nak to request"]


def test_request_for_other_server_ignored() -> None:
    svc, _, counters, _ = service()
    assert svc.handle(memoryview(request_for(server="192.0.2.250"))) is None
    assert counters.events["dhcp: request for another server"] == 1


def test_inform_gets_ack_without_lease() -> None:
    svc, _, _, lines = service()
    out = reply(svc, client("inform", ciaddr=GUEST4, src=GUEST4, dst=GW4))
    pkt = Ether(out)
    opts = options_of(out)
    assert opts["message-type"] == 5 and "lease_time" not in opts
    assert pkt[BOOTP].yiaddr == "0.0.0.0" and pkt[IP].dst == GUEST4
    assert opts["name_server"] == DNS4
    assert lines == ["DHCP: ack to inform"]


def test_broadcast_flag_gives_broadcast_reply() -> None:
    svc, _, _, _ = service()
    pkt = Ether(reply(svc, client("discover", flags=0x8000)))
    assert (pkt.dst, pkt[IP].dst) == ("ff:ff:ff:ff:ff:ff", "255.255.255.255")
    assert pkt[BOOTP].flags == 0x8000


def test_release_and_decline_not_answered() -> None:
    svc, _, counters, _ = service()
    assert svc.handle(memoryview(client("release", ciaddr=GUEST4))) is None
    assert svc.handle(memoryview(client("decline", [("requested_addr", GUEST4)]))) is None
    assert counters.dropped == 0 and counters.events["dhcp: decline or release"] == 2


def test_reply_fits_default_max_message_size() -> None:
    """Without option 57 a reply stays within 576 bytes, dropping unrequested options first."""
    search = tuple(f"{'x' * 40}{i}.example" for i in range(20))
    svc, _, counters, _ = service(search=search)
    out = reply(svc, client("discover", [("param_req_list", [1, 3, 6])]))
    assert len(out) - 14 <= 576
    opts = options_of(out)
    assert opts["subnet_mask"] and opts["router"] and opts["name_server"] and 119 not in opts
    assert counters.events["dhcp: option left out for size"] == 1
    out = reply(svc, client("discover", [("max_dhcp_size", 1500)]))
    assert len(decode_names(options_of(out)[119])) == 20


@pytest.mark.conformance("opt.no-dhcp")
def test_no_dhcp_drops() -> None:
    """--no-dhcp: DHCP requests are silently dropped."""
    svc, guest, counters, _ = service(dhcp=False)
    assert svc.handle(memoryview(client("discover"))) is None
    assert counters.dropped == 1 and guest.mac != GUEST_MAC


@pytest.mark.conformance("opt.ipv6-only")
def test_ipv4_disabled_drops() -> None:
    """With IPv4 disabled (-6), no DHCP."""
    svc, _, _, _ = service(ip4=None)
    assert svc.handle(memoryview(client("discover"))) is None


def _corrupt(frame: bytes, offset: int, value: bytes) -> bytes:
    data = bytearray(frame)
    data[offset : offset + len(value)] = value
    # refresh the UDP checksum so only the intended defect remains
    pkt = Ether(bytes(data))
    del pkt[IP].chksum
    if UDP in pkt:
        del pkt[UDP].chksum
    return raw(pkt)


def _short_dhcp(length: int) -> bytes:
    """A DHCP message cut to `length` bytes inside consistent IP and UDP headers."""
    payload = raw(Ether(client("discover"))[BOOTP])[:length]
    return raw(
        Ether(src=GUEST_MAC_STR)
        / IP(src="0.0.0.0", dst="255.255.255.255")
        / UDP(sport=68, dport=67)
        / payload
    )


def _bad_udp_checksum() -> bytes:
    data = bytearray(client("discover"))
    data[14 + 20 + 6] ^= 0x55
    return bytes(data)


_DHCP_OFF = 14 + 20 + 8


@pytest.mark.parametrize(
    "frame",
    [
        _short_dhcp(239),
        _short_dhcp(100),
        client("discover")[: _DHCP_OFF + 100],
        _corrupt(client("discover"), _DHCP_OFF, b"\x02"),
        _corrupt(client("discover"), _DHCP_OFF + 1, b"\x06"),
        _corrupt(client("discover"), _DHCP_OFF + 2, b"\x08"),
        _corrupt(client("discover"), _DHCP_OFF + 236, b"\x63\x82\x53\x00"),
        _corrupt(client("discover"), _DHCP_OFF + 240, b"\x35\x02"),
        _corrupt(client("discover"), _DHCP_OFF + 240, b"\x35\xf0"),
        _corrupt(client("discover"), _DHCP_OFF + 240, b"\x0c\x01"),
        _corrupt(client("discover"), _DHCP_OFF + 242, b"\x0b"),
        _corrupt(client("discover"), 14 + 9, b"\x06"),
        _corrupt(client("discover"), 14 + 22, b"\x00\x44"),
        _bad_udp_checksum(),
        client("request"),
        _corrupt(client("discover"), 14 + 2, b"\xff\xff"),
    ],
    ids=[
        "no-cookie",
        "truncated-header",
        "truncated-frame",
        "op-reply",
        "htype",
        "hlen",
        "cookie",
        "type-length",
        "option-overrun",
        "no-message-type",
        "unknown-message-type",
        "not-udp",
        "port",
        "udp-checksum",
        "request-without-address",
        "ip-total-length",
    ],
)
def test_malformed_dropped_and_counted(frame: bytes) -> None:
    svc, _, counters, _ = service()
    assert svc.handle(memoryview(frame)) is None
    assert counters.dropped == 1


def test_fuzz_never_raises() -> None:
    svc, _, _, _ = service(mtu=1500)
    seeds = [
        client("discover", [("param_req_list", [1, 3, 6, 119]), ("max_dhcp_size", 1500)]),
        request_for(),
        client("inform", ciaddr=GUEST4, src=GUEST4),
    ]
    replies = fuzz(svc.handle, seeds, count=4000, seed=2)
    assert replies > 0


@pytest.mark.conformance("callers.hostname", "callers.fqdn")
def test_hostname_and_fqdn_options() -> None:
    """-H sends option 12; --fqdn option 81: flags E, RCODEs 255, the name in wire format."""
    svc, _, _, _ = service(hostname="guest1", fqdn="guest1.example.org")
    opts = options_of(reply(svc, client("discover")))
    assert opts["hostname"] == b"guest1"
    assert opts["client_FQDN"] == b"\x04\xff\xff\x06guest1\x07example\x03org\x00"
    opts = options_of(reply(svc, request_for()))
    assert opts["hostname"] == b"guest1" and opts["client_FQDN"][3:4] == b"\x06"
    svc, _, _, _ = service()
    opts = options_of(reply(svc, client("discover")))
    assert "hostname" not in opts and "client_FQDN" not in opts
    # a name DNS can't carry is left out, never sent broken
    svc, _, _, _ = service(fqdn="a..b")
    assert "client_FQDN" not in options_of(reply(svc, client("discover")))
