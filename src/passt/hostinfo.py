"""What the host looks like: the defaults the man page takes "from the host".

`discover()` asks the kernel over rtnetlink (`passt.rtnl`), once, at
start-up:

    default routes (main table, unicast, dst_len 0), per family
        -> lowest metric wins, ties in dump order ("the first default route")
        -> its output interface (RTA_OIF, or the first multipath hop)
           and gateway (RTA_GATEWAY; None for a device route)
    -i NAME instead: that interface for both families, gateway from a
        default route through it if there is one
    addresses of that interface
        -> IPv4: first non-secondary address of universe scope
        -> IPv6: first address of universe ("global") scope that did not fail
           DAD, non-deprecated ones first.  Kernel scope, not RFC 6890's
           "globally reachable": a ULA (fd00::/8) counts, as it does for the
           kernel's own source selection.
    link of the IPv4 interface (else the IPv6 one) -> name, MAC, MTU
    every address on every interface -> all_addrs (the NAT's "local source")

`/etc/resolv.conf` gives nameservers (split per family) and the search list;
`parse_resolv_conf` follows glibc: `search` and `domain` replace each other,
the last one wins; a nameserver with a zone (`fe80::1%eth0`) keeps the
address and drops the zone.

Nothing here decides policy (which family is enabled, which DNS a mode
sends): that is `cli.py`'s job, so this module stays a plain snapshot that
tests can build by hand.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Interface, IPv6Address, IPv6Interface, ip_address
from typing import Final

from passt import rtnl
from passt.ports import ConfigError

#: Routing table the default routes are looked up in (RT_TABLE_MAIN).
RT_TABLE_MAIN: Final = 254
#: rtm_type of an ordinary route (RTN_UNICAST); blackhole/unreachable defaults don't count.
RTN_UNICAST: Final = 1
#: rtm_scope / ifa_scope meaning "global" (RT_SCOPE_UNIVERSE).
RT_SCOPE_UNIVERSE: Final = 0
#: ifa_flags bits (linux/if_addr.h).
IFA_F_SECONDARY: Final = 0x01
IFA_F_DADFAILED: Final = 0x08
IFA_F_DEPRECATED: Final = 0x20
#: MTU assumed when the kernel doesn't report one.
DEFAULT_HOST_MTU: Final = 1500

RESOLV_CONF: Final = "/etc/resolv.conf"


@dataclass(frozen=True, slots=True)
class HostInfo:
    """A snapshot of the host's outbound configuration."""

    #: Interface the defaults come from: IPv4's default-route interface, else IPv6's.
    ifname: str
    #: MAC address of `ifname` (6 bytes; zeros when it has none, e.g. a tun device).
    mac: bytes
    #: MTU of `ifname`.
    mtu: int
    #: First global IPv4 address on the IPv4 interface, its prefix length, default gateway.
    addr4: IPv4Address | None = None
    prefix4: int = 0
    gw4: IPv4Address | None = None
    #: First global IPv6 address on the IPv6 interface, its prefix length, default gateway.
    addr6: IPv6Address | None = None
    prefix6: int = 0
    gw6: IPv6Address | None = None
    #: Every address on every interface of the host, loopback included.
    all_addrs: tuple[IPv4Address | IPv6Address, ...] = ()
    #: Nameservers and search list from resolv.conf.
    dns4: tuple[IPv4Address, ...] = ()
    dns6: tuple[IPv6Address, ...] = ()
    search: tuple[str, ...] = ()
    #: Whether a default route was found for each family (on `-i`'s interface, if given).
    route4: bool = False
    route6: bool = False
    #: Interfaces the IPv4 and IPv6 fields came from ("" when none).
    ifname4: str = ""
    ifname6: str = ""
    #: Every address with its prefix length, for "-n defaults to the matching host address's mask".
    all_ifaddrs: tuple[IPv4Interface | IPv6Interface, ...] = ()

    def prefix_of(self, addr: IPv4Address | IPv6Address) -> int | None:
        """Prefix length of `addr` if it is one of the host's addresses, else None."""
        for iface in self.all_ifaddrs:
            if iface.ip == addr:
                return iface.network.prefixlen
        return None


def parse_resolv_conf(text: str) -> tuple[list[IPv4Address], list[IPv6Address], list[str]]:
    """Nameservers (IPv4, IPv6) and search domains from resolv.conf text (resolv.conf(5))."""
    dns4: list[IPv4Address] = []
    dns6: list[IPv6Address] = []
    search: list[str] = []
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].split(";", 1)[0]
        fields = line.split()
        if not fields:
            continue
        key, args = fields[0], fields[1:]
        if key == "nameserver" and args:
            try:
                addr = ip_address(args[0].split("%", 1)[0])
            except ValueError:
                continue
            if isinstance(addr, IPv4Address):
                if addr not in dns4:
                    dns4.append(addr)
            elif addr not in dns6:
                dns6.append(addr)
        elif key in ("search", "domain"):
            search = [d for d in args if d != "."]
    return dns4, dns6, search


def _read_resolv_conf(path: str) -> tuple[list[IPv4Address], list[IPv6Address], list[str]]:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return parse_resolv_conf(f.read())
    except OSError:
        return [], [], []


@dataclass(frozen=True, slots=True)
class _Route:
    metric: int
    oif: int
    gateway: bytes | None


def _default_routes(routes: list[rtnl.Route]) -> list[_Route]:
    """Default unicast routes of the main table, lowest metric first, stable."""
    found: list[_Route] = []
    for msg in routes:
        if msg.dst_len != 0 or msg.type != RTN_UNICAST or msg.table != RT_TABLE_MAIN:
            continue
        oif, gateway = msg.oif, msg.gateway
        if oif is None:
            if not msg.multipath:
                continue
            oif, gateway = msg.multipath[0].oif, msg.multipath[0].gateway
        found.append(_Route(msg.priority, oif, gateway))
    found.sort(key=lambda r: r.metric)
    return found


def discover(ifname: str | None = None, *, resolv_conf: str = RESOLV_CONF) -> HostInfo:
    """Snapshot the host's outbound interface(s), addresses, gateways and resolver.

    `ifname` (-i) pins both families to that interface.  Raises ConfigError
    when `ifname` does not exist or netlink can't be reached.  No default
    route at all is not an error here: the snapshot then has ifname "" and
    route4/route6 False, and `cli` decides (explicit -a and -g still work).
    """
    dns4, dns6, search = _read_resolv_conf(resolv_conf)
    try:
        with rtnl.Rtnl() as nl:
            links = {link.index: link for link in nl.links()}
            addrs = nl.addrs()
            routes4 = _default_routes(nl.routes(socket.AF_INET))
            routes6 = _default_routes(nl.routes(socket.AF_INET6))
    except (OSError, rtnl.ParseError) as e:
        raise ConfigError(f"can't read the host's network configuration: {getattr(e, 'strerror', None) or e}") from e

    names = {idx: link.ifname for idx, link in links.items()}

    idx4: int | None = None
    idx6: int | None = None
    gw4_s: bytes | None = None
    gw6_s: bytes | None = None
    route4 = route6 = False
    if ifname is not None:
        matches = [idx for idx, name in names.items() if name == ifname]
        if not matches:
            raise ConfigError(f"no interface named '{ifname}' for -i; see 'ip link'")
        idx4 = idx6 = matches[0]
        for r in routes4:
            if r.oif == idx4:
                gw4_s, route4 = r.gateway, True
                break
        for r in routes6:
            if r.oif == idx6:
                gw6_s, route6 = r.gateway, True
                break
    else:
        if routes4:
            idx4, gw4_s, route4 = routes4[0].oif, routes4[0].gateway, True
        if routes6:
            idx6, gw6_s, route6 = routes6[0].oif, routes6[0].gateway, True

    all_ifaddrs: list[IPv4Interface | IPv6Interface] = []
    addr4: IPv4Interface | None = None
    cand6: list[tuple[bool, IPv6Interface]] = []
    for msg in addrs:
        prefix = msg.prefixlen
        if msg.family == socket.AF_INET:
            packed = msg.local or msg.address
            if packed is None or len(packed) != 4:
                continue
            iface4 = IPv4Interface((packed, prefix))
            all_ifaddrs.append(iface4)
            if (addr4 is None and msg.index == idx4 and msg.scope == RT_SCOPE_UNIVERSE
                    and not msg.flags & IFA_F_SECONDARY):
                addr4 = iface4
        elif msg.family == socket.AF_INET6:
            packed = msg.address or msg.local
            if packed is None or len(packed) != 16:
                continue
            iface6 = IPv6Interface((packed, prefix))
            all_ifaddrs.append(iface6)
            if (msg.index == idx6 and msg.scope == RT_SCOPE_UNIVERSE
                    and not msg.flags & IFA_F_DADFAILED):
                cand6.append((bool(msg.flags & IFA_F_DEPRECATED), iface6))
    cand6.sort(key=lambda c: c[0])  # stable: non-deprecated first, dump order within
    addr6 = cand6[0][1] if cand6 else None

    main_idx = idx4 if idx4 is not None else idx6
    link = links.get(main_idx) if main_idx is not None else None
    if main_idx is not None and link is None:
        raise ConfigError(f"default route through interface index {main_idx}, which has vanished")
    mac = link.mac if link is not None and link.mac is not None and len(link.mac) == 6 else bytes(6)

    def _gw4(packed: bytes | None) -> IPv4Address | None:
        return IPv4Address(packed) if packed and len(packed) == 4 else None

    def _gw6(packed: bytes | None) -> IPv6Address | None:
        return IPv6Address(packed) if packed and len(packed) == 16 else None

    return HostInfo(
        ifname=names.get(main_idx, "") if main_idx is not None else "",
        mac=mac,
        mtu=(link.mtu if link is not None else None) or DEFAULT_HOST_MTU,
        addr4=addr4.ip if addr4 is not None else None,
        prefix4=addr4.network.prefixlen if addr4 is not None else 0,
        gw4=_gw4(gw4_s),
        addr6=addr6.ip if addr6 is not None else None,
        prefix6=addr6.network.prefixlen if addr6 is not None else 0,
        gw6=_gw6(gw6_s),
        all_addrs=tuple(i.ip for i in all_ifaddrs),
        dns4=tuple(dns4),
        dns6=tuple(dns6),
        search=tuple(search),
        route4=route4,
        route6=route6,
        ifname4=names.get(idx4, "") if idx4 is not None else "",
        ifname6=names.get(idx6, "") if idx6 is not None else "",
        all_ifaddrs=tuple(all_ifaddrs),
    )
