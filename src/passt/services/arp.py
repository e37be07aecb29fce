"""ARP responder (RFC 826): we answer for every IPv4 address but the guest's own.

passt has no real link behind the tap: whatever address the guest wants to
reach (its gateway, another host on "its" subnet, anything it thinks is on
link) is reached through us, so every ARP request is answered with our MAC.
Two exceptions keep the guest's own address management working:

- a request for the guest's own address (configured, or the one we saw it
  use): answering would make the guest believe its address is taken;
- gratuitous ARP (sender address equal to the target) and probes (sender
  address 0.0.0.0, RFC 5227): the guest announcing or checking an address.

We learn from every valid ARP packet: the Ethernet source is the guest's MAC,
and a non-zero sender address is an address the guest uses.

One more case, for C passt's qrap: before handing the socket to QEMU it
probes it with a request from Ethernet source ff:ff:ff:ff:ff:ff asking who
has 0.0.0.0 (sender 0.0.0.0), and waits for any reply.  C passt answers it;
we answer exactly that frame (to the broadcast address, learning nothing),
while any other multicast source stays dropped and counted.

    frame --parse_eth/parse_arp--> learn --> request for someone else? --> reply frame
"""

from __future__ import annotations

from collections.abc import Callable

from passt.config import MAC_BROADCAST, Config
from passt.counters import Counters
from passt.guest import GuestState
from passt.wire.arp import ARP_LEN, ARP_OP_REPLY, ARP_OP_REQUEST, build_arp, parse_arp
from passt.wire.errors import ParseError
from passt.wire.eth import ETH_HLEN, ETH_P_ARP, build_eth, eth_src

_ZERO4 = bytes(4)


class ArpService:
    """Answers the guest's ARP requests; sans-IO, one frame in, at most one out."""

    def __init__(
        self,
        conf: Config,
        guest: GuestState,
        counters: Counters,
        log: Callable[[str], None] | None = None,
    ) -> None:
        self._conf = conf
        self._guest = guest
        self._counters = counters
        self._log = log

    def handle(self, frame: memoryview) -> bytes | None:
        """Handle one Ethernet frame carrying ARP (the dispatcher checked its EtherType); returns the reply, or None."""
        ip4 = self._conf.ip4
        if ip4 is None:
            self._counters.drop("arp: ipv4 disabled")
            return None
        try:
            arp = parse_arp(frame[ETH_HLEN:])
        except ParseError as e:
            self._counters.drop("arp: " + str(e))
            return None
        mac = eth_src(frame)
        if mac[0] & 1:
            if mac == MAC_BROADCAST and arp.op == ARP_OP_REQUEST and arp.spa == arp.tpa == _ZERO4:
                self._counters.event("arp: qrap probe")
                return self._reply(MAC_BROADCAST, arp.sha, arp.spa, arp.tpa)
            self._counters.drop("arp: multicast source")
            return None

        self._guest.learn_mac(mac)
        if arp.spa != _ZERO4:
            self._guest.learn_addr4(arp.spa)

        if arp.op != ARP_OP_REQUEST:
            self._counters.event("arp: ignored non-request")
            return None
        if arp.tpa == arp.spa or arp.spa == _ZERO4:
            self._counters.event("arp: announcement or probe")
            return None
        if arp.tpa == ip4.addr_b or arp.tpa == self._guest.addr4:
            self._counters.event("arp: request for guest address")
            return None

        self._counters.event("arp: reply")
        return self._reply(mac, arp.sha, arp.spa, arp.tpa)

    def _reply(self, dst: bytes, sha: bytes, spa: bytes, tpa: bytes) -> bytes:
        """Our MAC has `tpa`: the reply to a request from `sha`/`spa`, sent to `dst`."""
        buf = bytearray(ETH_HLEN + ARP_LEN)
        off = build_eth(buf, 0, dst, self._conf.our_mac, ETH_P_ARP)
        build_arp(buf, off, op=ARP_OP_REPLY, sha=self._conf.our_mac, spa=tpa, tha=sha, tpa=spa)
        return bytes(buf)
