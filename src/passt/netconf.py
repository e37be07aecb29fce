"""Netlink configuration of pasta's tap inside the namespace (`passt.rtnl`).

Runs in the namespace helper (after setns), so the netlink socket it opens
talks to the target namespace.  Without --config-net we only set the MTU and
bring the tap and lo up (what today's pasta does, so the kernel can start
IPv6 link-local and SLAAC and clients like udhcpc find the link ready); with
--config-net we also add the addresses and default routes the built-in DHCP
and NDP would hand out.
"""

from __future__ import annotations

from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address
from typing import Final

from passt.rtnl import Rtnl

#: ifa_flags of the IPv6 address we add: permanent (no lifetimes).  DAD is off
#: through accept_dad instead (IFA_F_NODAD, 0x02, would show as "nodad").
IFA_F_PERMANENT: Final = 0x80


@dataclass(frozen=True, slots=True)
class TapSetup:
    """What the helper applies to the tap (all plain data: it crosses a fork)."""

    ifname: str
    mtu: int
    config_net: bool
    addr4: str | None = None
    prefix4: int = 0
    gw4: str | None = None
    addr6: str | None = None
    prefix6: int = 64
    gw6: str | None = None
    #: --ns-mac-addr (aa:bb:cc:dd:ee:ff); None: the kernel's random one.
    mac: str | None = None


def bring_up_lo(nl: Rtnl) -> None:
    try:
        index = nl.link("lo").index
    except OSError:
        return
    nl.set_link(index, up=True)


def configure_tap(nl: Rtnl, setup: TapSetup) -> tuple[int, bytes]:
    """Set MTU, bring the tap up, and with config_net add addresses and routes.

    Returns (ifindex, MAC of the tap).
    """
    try:
        index = nl.link(setup.ifname).index
    except OSError as exc:
        raise OSError(f"tap {setup.ifname} vanished") from exc
    if setup.config_net and setup.addr6 is not None:
        # No DAD: the address is ours by construction; DAD would delay it ~1 s.
        _sysctl(f"/proc/sys/net/ipv6/conf/{setup.ifname}/accept_dad", "0")
    nl.set_link(index, mtu=setup.mtu)
    if setup.mac is not None:
        nl.set_link(index, mac=bytes.fromhex(setup.mac.replace(":", "")))
    nl.set_link(index, up=True)
    if setup.config_net:
        if setup.addr4 is not None:
            addr4 = IPv4Address(setup.addr4)
            nl.add_addr(index, addr4.packed, setup.prefix4)
            if setup.gw4 is not None:
                gw = IPv4Address(setup.gw4)
                shift = 32 - setup.prefix4
                on_net = bool(setup.prefix4) and int(gw) >> shift == int(addr4) >> shift
                nl.add_default_route(index, gw.packed, onlink=not on_net)
        if setup.addr6 is not None:
            nl.add_addr(index, IPv6Address(setup.addr6).packed, setup.prefix6,
                        flags=IFA_F_PERMANENT)
            if setup.gw6 is not None:
                nl.add_default_route(index, IPv6Address(setup.gw6).packed)
    mac = nl.link(setup.ifname).mac
    return index, mac or bytes(6)


def _sysctl(path: str, value: str) -> None:
    try:
        with open(path, "w") as f:
            f.write(value)
    except OSError:
        pass


#: Largest value ping_group_range takes (a signed 32-bit gid).
PING_GROUP_MAX = 2147483647


def mapped_gid_range(gid_map: str) -> tuple[int, int]:
    """The gids of this user namespace, from /proc/self/gid_map text.

    The kernel rejects a ping_group_range naming gids that have no mapping in
    the writer's user namespace (pasta's own namespace maps only gid 0), so the
    range must stay within the mapped span.  First mapping line only.
    """
    for line in gid_map.splitlines():
        fields = line.split()
        if len(fields) == 3:
            inside, _outside, count = (int(f) for f in fields)
            return inside, min(inside + count - 1, PING_GROUP_MAX)
    return 0, 0


def set_ping_group_range() -> None:
    """Let every group of the namespace use ping sockets (icmp(7))."""
    try:
        with open("/proc/self/gid_map") as f:
            low, high = mapped_gid_range(f.read())
    except OSError:
        low, high = 0, PING_GROUP_MAX
    _sysctl("/proc/sys/net/ipv4/ping_group_range", f"{low} {high}")


def gateway6_is_linklocal(gw: str | None) -> bool:
    return gw is not None and IPv6Address(gw).is_link_local
