"""NDP responder (RFC 4861): Neighbor Advertisements and Router Advertisements.

As with ARP, everything the guest wants to reach on its link is behind us, so
we answer Neighbor Solicitations for any target with our MAC, and we are the
guest's router: Router Solicitations get a Router Advertisement, and
unsolicited RAs go out periodically so the guest's default route and SLAAC
address never expire.

    frame --eth/ipv6/icmpv6 checks (hop limit 255, checksum, code 0, options)--> learn
          NS (unicast source)  -> NA: Router|Solicited|Override, target link-layer = our MAC,
                                  unless the target is the guest's own address
          NS (source ::, DAD)  -> ignored, except for our own link-local address, which
                                  we defend with an NA to ff02::1 (RFC 4861 section 7.2.4)
          RS                   -> RA to the RS source (ff02::1 when that is ::)
          NA, RA, redirect     -> ignored (counted as events)
    timer --on_timer(now)--> unsolicited RA to ff02::1

Why DAD probes are ignored: the guest probes addresses we do not know yet
(its link-local and SLAAC addresses, derived from its MAC or random), and
answering would make its Duplicate Address Detection fail.

The RA (RFC 4861 section 4.2) comes from conf.ip6.our_ll with our MAC as
source link-layer option.  Choices, with reasons:

- Router Lifetime 3600 s (ROUTER_LIFETIME_S): within RFC 4861's 9000 s bound
  and well above MaxRtrAdvInterval (600 s), so a refresh always comes in
  time; it matches what the man page's example shows ("expires 3584sec").
- M and O flags set when DHCPv6 is enabled, so clients ask it for an address
  (option 5, the configured one) and for DNS/search options.
- Prefix Information (type 3): conf.ip6.addr's /prefix_len with L and A set,
  valid and preferred lifetime 3600 s (PREFIX_LIFETIME_S), refreshed with the
  router lifetime: if we go away, the guest's configuration ages out.
- MTU (type 5) only when -m was given and it is at least 1280 (IPv6 minimum);
  RDNSS (25) with conf.ip6.dns when any (up to 127); DNSSL (31) with
  conf.search when any; both with lifetime 3600 s.
- Cur Hop Limit 64, Reachable Time and Retrans Timer 0 (unspecified).

Unsolicited RAs (RFC 4861 section 6.2.4): the first INITIAL_RA_DELAY_S after
construction (or `restart`), then MAX_INITIAL_RTR_ADVERTISEMENTS - 1 more at
random intervals of at most MAX_INITIAL_RTR_ADVERT_INTERVAL_S, then every
MIN_RTR_ADV_INTERVAL_S..MAX_RTR_ADV_INTERVAL_S (uniform, the RFC defaults).
Replies to RSs are not rate-limited (they are unicast except for RS from ::).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from ipaddress import IPv6Network
from typing import Final

from passt.config import Config
from passt.counters import Counters
from passt.guest import GuestState
from passt.wire.errors import ParseError
from passt.wire.eth import ETH_HLEN, ETH_P_IPV6, build_eth, eth_src, ipv6_multicast_mac
from passt.wire.icmp import (
    NDP_NEIGHBOR_ADVERT,
    NDP_NEIGHBOR_SOLICIT,
    NDP_REDIRECT,
    NDP_ROUTER_ADVERT,
    NDP_ROUTER_SOLICIT,
    icmpv6_checksum_ok,
    set_icmpv6_checksum,
)
from passt.wire.ipv6 import (
    IPV6_ALL_NODES,
    IPV6_ANY,
    IPV6_HLEN,
    PROTO_ICMPV6,
    IPv6Header,
    build_ipv6,
)
from passt.wire.ndp import (
    NA_FLAG_OVERRIDE,
    NA_FLAG_ROUTER,
    NA_FLAG_SOLICITED,
    OPT_SOURCE_LLADDR,
    OPT_TARGET_LLADDR,
    PREFIX_FLAG_AUTO,
    PREFIX_FLAG_ONLINK,
    RA_FLAG_MANAGED,
    RA_FLAG_OTHER,
    build_neighbor_advert,
    build_router_advert,
    find_lladdr,
    opt_dnssl,
    opt_lladdr,
    opt_mtu,
    opt_prefix,
    opt_rdnss,
    parse_neighbor,
    parse_router_solicit,
)

ROUTER_LIFETIME_S: Final = 3600
PREFIX_LIFETIME_S: Final = 3600
DNS_LIFETIME_S: Final = 3600
CUR_HOP_LIMIT: Final = 64
MIN_IPV6_MTU: Final = 1280
INITIAL_RA_DELAY_S: Final = 1.0
MAX_INITIAL_RTR_ADVERTISEMENTS: Final = 3
MAX_INITIAL_RTR_ADVERT_INTERVAL_S: Final = 16.0
MIN_RTR_ADV_INTERVAL_S: Final = 200.0
MAX_RTR_ADV_INTERVAL_S: Final = 600.0
#: NDP messages must arrive with hop limit 255: proof they were not routed (RFC 4861 section 6.1).
NDP_HOP_LIMIT: Final = 255


class NdpService:
    """Answers NS and RS, and sends periodic RAs; sans-IO, time passed in."""

    def __init__(
        self,
        conf: Config,
        guest: GuestState,
        counters: Counters,
        log: Callable[[str], None] | None = None,
        *,
        now: float,
        rng: random.Random | None = None,
    ) -> None:
        self._conf = conf
        self._guest = guest
        self._counters = counters
        self._log = log
        self._rng = rng if rng is not None else random.Random()
        self._deadline: float | None = None
        self._initial_left = 0
        self._ra = b""
        self._our_ll = b""
        ip6 = conf.ip6
        if ip6 is None:
            return
        self._our_ll = ip6.our_ll.packed
        self._ra = self._build_ra()
        self.restart(now)

    def _build_ra(self) -> bytes:
        """The RA message (ICMPv6, checksum zero); fixed for our lifetime."""
        conf = self._conf
        ip6 = conf.ip6
        assert ip6 is not None
        net = IPv6Network((int(ip6.addr), ip6.prefix_len), strict=False)
        options = opt_prefix(
            prefix=net.network_address.packed,
            prefix_len=ip6.prefix_len,
            flags=PREFIX_FLAG_ONLINK | PREFIX_FLAG_AUTO,
            valid=PREFIX_LIFETIME_S,
            preferred=PREFIX_LIFETIME_S,
        )
        if conf.mtu is not None and conf.mtu >= MIN_IPV6_MTU:
            options += opt_mtu(conf.mtu)
        options += opt_rdnss(DNS_LIFETIME_S, (a.packed for a in ip6.dns))
        options += opt_dnssl(DNS_LIFETIME_S, conf.search)
        options += opt_lladdr(OPT_SOURCE_LLADDR, conf.our_mac)
        return build_router_advert(
            cur_hop_limit=CUR_HOP_LIMIT,
            flags=(RA_FLAG_MANAGED | RA_FLAG_OTHER) if conf.dhcpv6 else 0,
            router_lifetime=ROUTER_LIFETIME_S,
            options=options,
        )

    @property
    def _ra_enabled(self) -> bool:
        return self._conf.ip6 is not None and self._conf.ndp and self._conf.ra

    def restart(self, now: float) -> None:
        """Start the initial burst of unsolicited RAs again (e.g. a new guest connected)."""
        if not self._ra_enabled:
            self._deadline = None
            return
        self._initial_left = MAX_INITIAL_RTR_ADVERTISEMENTS
        self._deadline = now + INITIAL_RA_DELAY_S

    def next_deadline(self) -> float | None:
        """When the next unsolicited RA is due; None when RAs are disabled."""
        return self._deadline

    def on_timer(self, now: float) -> list[bytes]:
        """Unsolicited RA frames due at `now` (at most one), rescheduling the next."""
        if self._deadline is None or now < self._deadline:
            return []
        if self._initial_left > 1:
            self._initial_left -= 1
            interval = self._rng.uniform(
                MAX_INITIAL_RTR_ADVERT_INTERVAL_S / 2, MAX_INITIAL_RTR_ADVERT_INTERVAL_S
            )
        else:
            self._initial_left = 0
            interval = self._rng.uniform(MIN_RTR_ADV_INTERVAL_S, MAX_RTR_ADV_INTERVAL_S)
        self._deadline = now + interval
        self._counters.event("ndp: unsolicited ra")
        return [
            self._frame(ipv6_multicast_mac(IPV6_ALL_NODES), self._our_ll, IPV6_ALL_NODES, self._ra)
        ]

    def _frame(self, dst_mac: bytes, src: bytes, dst: bytes, msg: bytes) -> bytes:
        """Ethernet/IPv6/ICMPv6 frame around `msg`, checksum filled."""
        buf = bytearray(ETH_HLEN + IPV6_HLEN + len(msg))
        off = build_eth(buf, 0, dst_mac, self._conf.our_mac, ETH_P_IPV6)
        off = build_ipv6(
            buf,
            off,
            src=src,
            dst=dst,
            next_header=PROTO_ICMPV6,
            payload_len=len(msg),
            hop_limit=NDP_HOP_LIMIT,
        )
        buf[off:] = msg
        set_icmpv6_checksum(buf, off, len(msg), src, dst)
        return bytes(buf)

    def _drop(self, reason: str) -> None:
        self._counters.drop("ndp: " + reason)

    def handle(self, frame: memoryview, iph: IPv6Header, msg: memoryview) -> bytes | None:
        """Handle one NDP message; returns the reply frame, or None.

        `frame` is the whole Ethernet frame, `iph` and `msg` its IPv6 header
        and ICMPv6 message as the dispatcher parsed them.
        """
        conf = self._conf
        ip6 = conf.ip6
        if ip6 is None or not conf.ndp:
            self._drop("disabled")
            return None
        mac = eth_src(frame)
        try:
            if len(msg) < 4:
                raise ParseError("short icmpv6")
            if iph.hop_limit != NDP_HOP_LIMIT:
                raise ParseError("hop limit not 255")
            if not icmpv6_checksum_ok(msg, iph.src, iph.dst):
                raise ParseError("bad icmpv6 checksum")
            if msg[1] != 0:
                raise ParseError("icmpv6 code not 0")
            kind = msg[0]
            if kind == NDP_NEIGHBOR_SOLICIT:
                return self._neighbor_solicit(mac, iph.src, iph.dst, msg)
            if kind == NDP_ROUTER_SOLICIT:
                return self._router_solicit(mac, iph.src, msg)
        except ParseError as e:
            self._drop(str(e))
            return None
        if kind in (NDP_NEIGHBOR_ADVERT, NDP_ROUTER_ADVERT, NDP_REDIRECT):
            self._learn(mac, iph.src)
            self._counters.event("ndp: ignored type")
            return None
        self._drop("not ndp")
        return None

    def _learn(self, mac: bytes, src: bytes) -> None:
        self._guest.learn_mac(mac)
        self._guest.learn_addr6(src)

    def _neighbor_solicit(
        self, mac: bytes, src: bytes, dst: bytes, msg: memoryview
    ) -> bytes | None:
        ns = parse_neighbor(msg)
        if ns.target[0] == 0xFF:
            raise ParseError("multicast ns target")
        slla = find_lladdr(ns.options, OPT_SOURCE_LLADDR)
        dad = src == IPV6_ANY
        if dad and (dst[:13] != b"\xff\x02" + bytes(9) + b"\x01\xff" or slla is not None):
            raise ParseError("bad dad probe")
        if mac[0] & 1:
            raise ParseError("multicast source")
        self._learn(mac, src)
        tlla = opt_lladdr(OPT_TARGET_LLADDR, self._conf.our_mac)
        if dad:
            if ns.target != self._our_ll:
                self._counters.event("ndp: dad probe ignored")
                return None
            na = build_neighbor_advert(
                flags=NA_FLAG_ROUTER | NA_FLAG_OVERRIDE, target=ns.target, options=tlla
            )
            self._counters.event("ndp: dad defended")
            return self._frame(ipv6_multicast_mac(IPV6_ALL_NODES), ns.target, IPV6_ALL_NODES, na)
        guest = self._guest
        assert self._conf.ip6 is not None
        if ns.target in (self._conf.ip6.addr_b, guest.addr6, guest.addr6_ll):
            self._counters.event("ndp: ns for guest address")
            return None
        na = build_neighbor_advert(
            flags=NA_FLAG_ROUTER | NA_FLAG_SOLICITED | NA_FLAG_OVERRIDE,
            target=ns.target,
            options=tlla,
        )
        if self._log is not None:
            self._log("NDP: received NS, sending NA")
        self._counters.event("ndp: na")
        return self._frame(
            slla if slla is not None and not slla[0] & 1 else mac, ns.target, src, na
        )

    def _router_solicit(self, mac: bytes, src: bytes, msg: memoryview) -> bytes | None:
        rs = parse_router_solicit(msg)
        slla = find_lladdr(rs.options, OPT_SOURCE_LLADDR)
        if src == IPV6_ANY and slla is not None:
            raise ParseError("rs from :: with link-layer option")
        if mac[0] & 1:
            raise ParseError("multicast source")
        self._learn(mac, src)
        if not self._conf.ra:
            self._counters.event("ndp: rs ignored (no-ra)")
            return None
        if self._log is not None:
            self._log("NDP: received RS, sending RA")
        self._counters.event("ndp: ra")
        if src == IPV6_ANY:
            return self._frame(
                ipv6_multicast_mac(IPV6_ALL_NODES), self._our_ll, IPV6_ALL_NODES, self._ra
            )
        return self._frame(
            slla if slla is not None and not slla[0] & 1 else mac, self._our_ll, src, self._ra
        )
