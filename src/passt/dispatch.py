r"""From the guest: classify each frame and hand it to a service or an L4 handler.

    frame --Ethernet--> ARP ------------------------------> services.arp
                     \-> IPv4 --UDP :67-------------------> services.dhcp
                     |        \-TCP/UDP/ICMP--------------> flows.{tcp,udp,icmp}
                     \-> IPv6 --ICMPv6 133..137-----------> services.ndp
                              \-UDP :547------------------> services.dhcpv6
                              \-TCP/UDP/ICMPv6 echo-------> flows.{tcp,udp,icmp}

The Ethernet header is read here; the IP header is parsed once, by
wire/ipv4 `parse_ipv4` and wire/ipv6 `parse_ipv6` (length fields checked
against the bytes present, IPv6 extension headers walked, fragments refused),
and what does not parse is dropped with its reason counted.  The parsed
header and the L4 bytes are handed on: the services get them with the frame
(for the guest's MAC), the L4 handlers the family, the addresses and the L4
bytes.  Each validates only its own layer.  Checksums from the guest are not verified: with pasta's offloads
they are partial by design, and a guest corrupting its own traffic only hurts
itself (the host socket layer carries the payload, not the checksum).

The guest's MAC and source addresses are learnt here, from every frame that
parsed, so the address translation can use what the guest really uses.
"""

from __future__ import annotations

import struct
from typing import Final, Protocol

from passt import log
from passt.context import Context, L4Handler
from passt.wire.dhcp import DHCP_SERVER_PORT
from passt.wire.dhcpv6 import DHCPV6_SERVER_PORT
from passt.wire.errors import ParseError
from passt.wire.eth import ETH_ALEN, ETH_HLEN, ETH_P_ARP, ETH_P_IP, ETH_P_IPV6
from passt.wire.icmp import NDP_REDIRECT, NDP_ROUTER_SOLICIT, PROTO_ICMPV6
from passt.wire.ipv4 import PROTO_ICMP, PROTO_TCP, PROTO_UDP, IPv4Header, parse_ipv4
from passt.wire.ipv6 import IPv6Header, parse_ipv6

_PORTS: Final = struct.Struct("!HH")
_ZERO4: Final = bytes(4)
_ZERO16: Final = bytes(16)
#: Source MAC and EtherType, read at offset ETH_ALEN.
_ETH_SRC_TYPE: Final = struct.Struct("!6sH")

#: Drop counter per wire/ipv4 and wire/ipv6 ParseError reason; any other reason counts as *_header.
_DROP4: Final = {"short ipv4 header": "ipv4_short", "fragment": "ipv4_fragment"}
_DROP6: Final = {
    "short ipv6 header": "ipv6_short",
    "fragment": "ipv6_fragment",
    "too many ipv6 extension headers": "ipv6_ext",
    "short ipv6 extension header": "ipv6_ext",
}


class ArpFrameService(Protocol):
    """ARP: the whole Ethernet frame (its EtherType already checked)."""

    def handle(self, frame: memoryview, /) -> bytes | None: ...


class Ip4FrameService(Protocol):
    """DHCP: the frame with its IPv4 header and UDP datagram as parsed here (nothing re-parsed)."""

    def handle(self, frame: memoryview, iph: IPv4Header, l4: memoryview, /) -> bytes | None: ...


class Ip6FrameService(Protocol):
    """NDP, DHCPv6: the frame with its IPv6 header and upper-layer bytes as parsed here."""

    def handle(self, frame: memoryview, iph: IPv6Header, l4: memoryview, /) -> bytes | None: ...


class Dispatcher:
    """Routes frames from the guest; one instance per process."""

    def __init__(
        self,
        ctx: Context,
        *,
        arp: ArpFrameService | None,
        dhcp: Ip4FrameService | None,
        ndp: Ip6FrameService | None,
        dhcpv6: Ip6FrameService | None,
        tcp: L4Handler | None,
        udp: L4Handler | None,
        icmp: L4Handler | None,
    ) -> None:
        """Services and handlers given as None are disabled: their frames are dropped and counted."""
        self.ctx = ctx
        self.tcp = tcp
        self.udp = udp
        self.icmp = icmp
        self.arp = arp
        self.dhcp = dhcp
        self.ndp = ndp
        self.dhcpv6 = dhcpv6
        conf = ctx.conf
        self.ip4 = conf.ip4 is not None
        self.ip6 = conf.ip6 is not None

    def from_tap(self, frames: list[memoryview], now: float) -> None:
        """Handle a batch of frames read from the tap back-end."""
        # The Ethernet step is inlined: each Python call on the way to a flow costs
        # microseconds on a cold wake-up (a lone ping, docs/performance.md).
        ctx = self.ctx
        guest = ctx.guest
        eth = _ETH_SRC_TYPE.unpack_from
        for frame in frames:
            if len(frame) < ETH_HLEN:
                ctx.counters.drop("eth_short")
                continue
            src_mac, ethertype = eth(frame, ETH_ALEN)
            if src_mac != guest.mac:
                guest.learn_mac(src_mac)
            if ethertype == ETH_P_IP:
                if self.ip4:
                    self._ipv4(frame, now)
                else:
                    ctx.counters.drop("ipv4_disabled")
            elif ethertype == ETH_P_IPV6:
                if self.ip6:
                    self._ipv6(frame, now)
                else:
                    ctx.counters.drop("ipv6_disabled")
            elif ethertype == ETH_P_ARP:
                if self.arp is not None and self.ip4:
                    self._reply(self.arp.handle(frame))
                else:
                    ctx.counters.drop("arp_disabled")
            else:
                ctx.counters.drop("ethertype")

    def _reply(self, reply: bytes | None) -> None:
        if reply is not None:
            self.ctx.send(reply)

    def _ipv4(self, frame: memoryview, now: float) -> None:
        ctx = self.ctx
        try:
            ip, l4 = parse_ipv4(frame[ETH_HLEN:])
        except ParseError as e:
            ctx.counters.drop(_DROP4.get(str(e), "ipv4_header"))
            return
        proto = ip.proto
        if proto == PROTO_UDP:
            if len(l4) >= 8 and _PORTS.unpack_from(l4)[1] == DHCP_SERVER_PORT:
                if self.dhcp is not None:
                    self._reply(self.dhcp.handle(frame, ip, l4))
                else:
                    ctx.counters.drop("dhcp_disabled")
                return
            handler = self.udp
        elif proto == PROTO_TCP:
            handler = self.tcp
        elif proto == PROTO_ICMP:
            handler = self.icmp
        else:
            ctx.counters.drop("ipv4_proto")
            return
        src = ip.src
        if src != _ZERO4 and src != ctx.guest.addr4:
            ctx.guest.learn_addr4(src)
        if handler is None:
            ctx.counters.drop("l4_disabled")
            return
        handler.from_tap(4, src, ip.dst, l4, now)

    def _ipv6(self, frame: memoryview, now: float) -> None:
        ctx = self.ctx
        try:
            ip, proto, l4 = parse_ipv6(frame[ETH_HLEN:])
        except ParseError as e:
            ctx.counters.drop(_DROP6.get(str(e), "ipv6_header"))
            return
        if proto == PROTO_ICMPV6:
            if len(l4) >= 4 and NDP_ROUTER_SOLICIT <= l4[0] <= NDP_REDIRECT:
                if self.ndp is not None:
                    self._reply(self.ndp.handle(frame, ip, l4))
                else:
                    ctx.counters.drop("ndp_disabled")
                self._learn6(ip.src)
                return
            handler = self.icmp
        elif proto == PROTO_UDP:
            if len(l4) >= 8 and _PORTS.unpack_from(l4)[1] == DHCPV6_SERVER_PORT:
                if self.dhcpv6 is not None:
                    self._reply(self.dhcpv6.handle(frame, ip, l4))
                else:
                    ctx.counters.drop("dhcpv6_disabled")
                return
            handler = self.udp
        elif proto == PROTO_TCP:
            handler = self.tcp
        else:
            ctx.counters.drop("ipv6_proto")
            return
        self._learn6(ip.src)
        if handler is None:
            ctx.counters.drop("l4_disabled")
            return
        handler.from_tap(6, ip.src, ip.dst, l4, now)

    def _learn6(self, src: bytes) -> None:
        guest = self.ctx.guest
        if src != guest.addr6 and src != guest.addr6_ll and src != _ZERO16:
            guest.learn_addr6(src)
            if log.debug_enabled:
                log.debug(f"guest IPv6 source seen: {src.hex()}")
