r"""From the guest: classify each frame and hand it to a service or an L4 handler.

    frame --Ethernet--> ARP ------------------------------> services.arp
                     \-> IPv4 --UDP :67-------------------> services.dhcp
                     |        \-TCP/UDP/ICMP--------------> flows.{tcp,udp,icmp}
                     \-> IPv6 --ICMPv6 133..137-----------> services.ndp
                              \-UDP :547------------------> services.dhcpv6
                              \-TCP/UDP/ICMPv6 echo-------> flows.{tcp,udp,icmp}

Everything here touches only fixed header fields with precompiled structs,
checks each length field against the bytes present, and drops (counting the
reason) what does not fit.  The services and handlers re-validate their own
layers.  Checksums from the guest are not verified: with pasta's offloads
they are partial by design, and a guest corrupting its own traffic only hurts
itself (the host socket layer carries the payload, not the checksum).

The guest's MAC and source addresses are learnt here, from every frame that
parsed, so the address translation can use what the guest really uses.
"""

from __future__ import annotations

import struct
from typing import Final, Protocol

from passt import log
from passt.context import Context
from passt.wire.eth import ETH_P_ARP, ETH_P_IP, ETH_P_IPV6

_IPV4: Final = struct.Struct("!BBHHHBBH4s4s")
_IPV6: Final = struct.Struct("!IHBB16s16s")
_PORTS: Final = struct.Struct("!HH")

# IPv6 extension headers we step over (RFC 8200 section 4): hop-by-hop,
# routing, destination options.  Fragments (44) are dropped: the guest's
# stack reassembles nothing we send and we do not reassemble either.
_EXT_SKIP: Final = frozenset((0, 43, 60))
#: At most this many extension headers before we give up on a frame.
MAX_EXT_HEADERS: Final = 8

_ZERO4: Final = bytes(4)
_ZERO16: Final = bytes(16)


class FrameService(Protocol):
    def handle(self, frame: memoryview) -> bytes | None: ...


class TimedFrameService(Protocol):
    def handle(self, frame: memoryview, now: float) -> bytes | None: ...


class Dispatcher:
    """Routes frames from the guest; one instance per process."""

    def __init__(
        self,
        ctx: Context,
        *,
        arp: FrameService | None,
        dhcp: FrameService | None,
        ndp: TimedFrameService | None,
        dhcpv6: FrameService | None,
    ) -> None:
        self.ctx = ctx
        self.arp = arp
        self.dhcp = dhcp
        self.ndp = ndp
        self.dhcpv6 = dhcpv6
        conf = ctx.conf
        self.ip4 = conf.ip4 is not None
        self.ip6 = conf.ip6 is not None

    def from_tap(self, frames: list[memoryview], now: float) -> None:
        """Handle a batch of frames read from the tap back-end."""
        one = self._frame
        for frame in frames:
            one(frame, now)

    def _frame(self, frame: memoryview, now: float) -> None:
        ctx = self.ctx
        n = len(frame)
        if n < 14:
            ctx.counters.drop("eth_short")
            return
        guest = ctx.guest
        if frame[6:12] != guest.mac:
            guest.learn_mac(bytes(frame[6:12]))
        ethertype = (frame[12] << 8) | frame[13]
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
        if len(frame) < 34:
            ctx.counters.drop("ipv4_short")
            return
        vihl, _tos, total, _id, frag, _ttl, proto, _ck, src, dst = _IPV4.unpack_from(frame, 14)
        ihl = (vihl & 0x0F) * 4
        if vihl >> 4 != 4 or ihl < 20 or total < ihl or 14 + total > len(frame):
            ctx.counters.drop("ipv4_header")
            return
        if frag & 0x3FFF:
            ctx.counters.drop("ipv4_fragment")
            return
        l4 = frame[14 + ihl : 14 + total]
        if proto == 17:
            if len(l4) >= 8 and _PORTS.unpack_from(l4)[1] == 67:
                if self.dhcp is not None:
                    self._reply(self.dhcp.handle(frame))
                else:
                    ctx.counters.drop("dhcp_disabled")
                return
            handler = ctx.udp
        elif proto == 6:
            handler = ctx.tcp
        elif proto == 1:
            handler = ctx.icmp
        else:
            ctx.counters.drop("ipv4_proto")
            return
        if src != _ZERO4 and src != ctx.guest.addr4:
            ctx.guest.learn_addr4(src)
        if handler is None:
            ctx.counters.drop("l4_disabled")
            return
        handler.from_tap(4, src, dst, l4, now)

    def _ipv6(self, frame: memoryview, now: float) -> None:
        ctx = self.ctx
        if len(frame) < 54:
            ctx.counters.drop("ipv6_short")
            return
        vtcfl, plen, nxt, _hops, src, dst = _IPV6.unpack_from(frame, 14)
        if vtcfl >> 28 != 6 or 54 + plen > len(frame):
            ctx.counters.drop("ipv6_header")
            return
        off = 54
        end = 54 + plen
        hops = 0
        while nxt in _EXT_SKIP:
            hops += 1
            if hops > MAX_EXT_HEADERS or off + 8 > end:
                ctx.counters.drop("ipv6_ext")
                return
            nxt, hlen = frame[off], (frame[off + 1] + 1) * 8
            off += hlen
            if off > end:
                ctx.counters.drop("ipv6_ext")
                return
        l4 = frame[off:end]
        if nxt == 58:
            if len(l4) >= 4 and 133 <= l4[0] <= 137:
                if self.ndp is not None:
                    self._reply(self.ndp.handle(frame, now))
                else:
                    ctx.counters.drop("ndp_disabled")
                self._learn6(src)
                return
            handler = ctx.icmp
        elif nxt == 17:
            if len(l4) >= 8 and _PORTS.unpack_from(l4)[1] == 547:
                if self.dhcpv6 is not None:
                    self._reply(self.dhcpv6.handle(frame))
                else:
                    ctx.counters.drop("dhcpv6_disabled")
                return
            handler = ctx.udp
        elif nxt == 6:
            handler = ctx.tcp
        else:
            ctx.counters.drop("ipv6_proto")
            return
        self._learn6(src)
        if handler is None:
            ctx.counters.drop("l4_disabled")
            return
        handler.from_tap(6, src, dst, l4, now)

    def _learn6(self, src: bytes) -> None:
        guest = self.ctx.guest
        if src != guest.addr6 and src != guest.addr6_ll and src != _ZERO16:
            guest.learn_addr6(src)
            if log.debug_enabled:
                log.debug(f"guest IPv6 source seen: {src.hex()}")
