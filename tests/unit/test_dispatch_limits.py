"""LIMITATIONS of the page, as the dispatcher applies them: no SCTP, no IGMP/MLD proxying.

Guest frames of those protocols must reach no L4 handler and no socket, get no answer, and
move a drop counter (the house rule: nothing is dropped silently).  The frames are built by
scapy, as a guest kernel would send them (MLD with its hop-by-hop router alert).
"""

from __future__ import annotations

from typing import Any

import pytest
from scapy.compat import raw
from scapy.layers.igmp import IGMP
from scapy.layers.inet import IP
from scapy.layers.inet6 import (
    ICMPv6MLDMultAddrRec,
    ICMPv6MLReport2,
    IPv6,
    IPv6ExtHdrHopByHop,
    RouterAlert,
)
from scapy.layers.l2 import Ether
from scapy.layers.sctp import SCTP, SCTPChunkInit

from passt.dispatch import Dispatcher
from passt.flows.icmp import IcmpHandler
from tests.unit.conftest import GUEST_MAC_STR, OUR_MAC_STR
from tests.unit.fakes import make_ctx

G4, W4 = "192.0.2.3", "203.0.113.9"
G6, W6 = "2001:db8:1::3", "2001:db8:77::9"


class Refuse:
    """An L4 handler that must never be called."""

    def from_tap(self, *args: Any) -> None:
        raise AssertionError("frame reached an L4 handler")

    def tap_reset(self) -> None:
        pass


def _eth() -> Ether:
    return Ether(src=GUEST_MAC_STR, dst=OUR_MAC_STR)


FRAMES = {
    "sctp4": (_eth() / IP(src=G4, dst=W4) / SCTP(sport=5000, dport=5001) / SCTPChunkInit(), "ipv4_proto"),
    "sctp6": (_eth() / IPv6(src=G6, dst=W6) / SCTP(sport=5000, dport=5001) / SCTPChunkInit(), "ipv6_proto"),
    "igmp": (Ether(src=GUEST_MAC_STR, dst="01:00:5e:01:02:03") / IP(src=G4, dst="239.1.2.3", ttl=1)
             / IGMP(type=0x16, gaddr="239.1.2.3"), "ipv4_proto"),
    "mld": (Ether(src=GUEST_MAC_STR, dst="33:33:00:00:00:16")
            / IPv6(src="fe80::5054:ff:fe12:3456", dst="ff02::16", hlim=1)
            / IPv6ExtHdrHopByHop(options=[RouterAlert()])
            / ICMPv6MLReport2(records=[ICMPv6MLDMultAddrRec(dst="ff15::1234")]), "icmp_type"),
}


@pytest.mark.conformance("limits.no-sctp", "limits.no-igmp-mld")
@pytest.mark.parametrize("name", sorted(FRAMES))
def test_sctp_igmp_mld_dropped_counted_unanswered(name: str) -> None:
    """Guest SCTP (IPv4, IPv6), IGMPv2 and MLDv2 reports: no handler, no answer, one counted drop."""
    frame, reason = FRAMES[name]
    ctx, tap = make_ctx()
    icmp = IcmpHandler(ctx)
    disp = Dispatcher(ctx, arp=None, dhcp=None, ndp=None, dhcpv6=None, tcp=Refuse(), udp=Refuse(), icmp=icmp)
    disp.from_tap([memoryview(raw(frame))], 0.0)
    assert tap.frames == []
    assert dict(ctx.counters.drops) == {reason: 1}
    assert icmp.flow_count() == 0
