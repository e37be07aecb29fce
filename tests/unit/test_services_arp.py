"""services/arp.py: scapy-built requests in, replies checked field by field."""

from __future__ import annotations

from typing import Any

import pytest
from scapy.compat import raw
from scapy.layers.l2 import ARP, Ether

from passt.counters import Counters
from passt.guest import GuestState
from passt.services.arp import ArpService
from tests.unit.conftest import (
    GUEST4,
    GUEST_MAC,
    GUEST_MAC_STR,
    GW4,
    OUR_MAC_STR,
    fuzz,
    make_config,
)
from tests.unit.fakes import to_service


def service(**overrides: Any) -> tuple[ArpService, GuestState, Counters]:
    conf = make_config(**overrides)
    guest = GuestState.from_config(conf)
    counters = Counters()
    return ArpService(conf, guest, counters), guest, counters


def request(pdst: str, psrc: str = GUEST4, op: int = 1, **arp: Any) -> bytes:
    return raw(
        Ether(src=GUEST_MAC_STR, dst="ff:ff:ff:ff:ff:ff")
        / ARP(op=op, hwsrc=GUEST_MAC_STR, psrc=psrc, hwdst="00:00:00:00:00:00", pdst=pdst, **arp)
    )


@pytest.mark.conformance("arp.reply")
@pytest.mark.parametrize("target", [GW4, "192.0.2.77", "198.51.100.7"])
def test_request_answered_with_our_mac(target: str) -> None:
    """ARP requests for any address but the guest's are answered with our MAC."""
    svc, guest, _ = service()
    out = to_service(svc, request(target))
    assert out is not None
    pkt = Ether(out)
    assert pkt.dst == GUEST_MAC_STR and pkt.src == OUR_MAC_STR and pkt.type == 0x0806
    arp = pkt[ARP]
    assert (arp.hwtype, arp.ptype, arp.hwlen, arp.plen, arp.op) == (1, 0x0800, 6, 4, 2)
    assert (arp.hwsrc, arp.psrc) == (OUR_MAC_STR, target)
    assert (arp.hwdst, arp.pdst) == (GUEST_MAC_STR, GUEST4)
    assert guest.mac == GUEST_MAC and guest.addr4 == bytes([192, 0, 2, 118])


@pytest.mark.conformance("opt.mac-addr")
def test_reply_uses_configured_mac() -> None:
    """-M sets the source MAC of frames to the guest (ARP reply, sender hardware address)."""
    svc, _, _ = service(our_mac=bytes.fromhex("020000abcdef"))
    out = to_service(svc, request(GW4))
    assert out is not None
    assert Ether(out).src == "02:00:00:ab:cd:ef" and Ether(out)[ARP].hwsrc == "02:00:00:ab:cd:ef"


def test_request_for_guest_address_ignored() -> None:
    svc, _, counters = service()
    assert to_service(svc, request(GUEST4, psrc="192.0.2.200")) is None
    # the configured address stays the guest's even after it was seen using another
    assert to_service(svc, request(GUEST4, psrc="192.0.2.201")) is None
    assert counters.dropped == 0


def test_gratuitous_and_probe_ignored_but_learned() -> None:
    svc, guest, _ = service()
    assert to_service(svc, request("192.0.2.9", psrc="192.0.2.9")) is None
    assert guest.addr4 == bytes([192, 0, 2, 9]) and guest.mac == GUEST_MAC
    svc, guest, _ = service()
    assert to_service(svc, request("192.0.2.50", psrc="0.0.0.0")) is None
    assert guest.addr4 is None and guest.mac == GUEST_MAC


def test_reply_from_guest_learned_not_answered() -> None:
    svc, guest, _ = service()
    assert to_service(svc, request(GW4, op=2)) is None
    assert guest.mac == GUEST_MAC


@pytest.mark.conformance("opt.ipv6-only")
def test_ipv4_disabled_no_reply() -> None:
    """With IPv4 disabled (-6) ARP is not answered."""
    svc, _, counters = service(ip4=None)
    assert to_service(svc, request(GW4)) is None
    assert counters.dropped == 1


@pytest.mark.parametrize(
    "frame",
    [
        request(GW4)[:41],
        request(GW4)[:14],
        request(GW4, hwlen=8),
        request(GW4, ptype=0x86DD),
        raw(Ether(src="01:00:5e:00:00:01", type=0x0806)) + request(GW4)[14:],
    ],
    ids=["truncated", "no-body", "hwlen", "ptype", "multicast-src"],
)
def test_malformed_dropped_and_counted(frame: bytes) -> None:
    svc, guest, counters = service()
    assert to_service(svc, frame) is None
    assert counters.dropped == 1
    assert guest.addr4 is None


def test_fuzz_never_raises() -> None:
    svc, _, _ = service()
    seeds = [request(GW4), request(GUEST4), request("0.0.0.0", psrc="0.0.0.0")]
    fuzz(lambda f: to_service(svc, bytes(f)), seeds, count=3000, seed=1)
