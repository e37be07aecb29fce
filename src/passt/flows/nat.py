"""Address translation for traffic with local source or destination addresses.

The man page's NOTES ("Handling of traffic with local destination and source
addresses") is the rule implemented here.  Packets the host side hands to the
guest may carry addresses that only make sense on the host: a loopback source
(a client on 127.0.0.1 talking to a forwarded port) or a loopback destination
(the client connected to 127.0.0.10).  A guest would drop such packets as
martians, and could not route answers back, so:

    host -> guest
        source loopback or one of the host's own addresses
            -> the default gateway of that family        (notes.nat.src-gateway)
        destination loopback or one of the host's own addresses
            -> the guest's observed address               (notes.nat.dst-loopback)
               IPv6: observed link-local if the guest was ever seen using one
               and the original destination is link-local, else the observed
               global address                             (notes.nat.ipv6-linklocal)
               nothing observed yet: the configured address

    guest -> host
        destination == gateway
            -> the original loopback/local address, *only* for packets that
               belong to a flow created by host-side traffic from such an
               address (port-wise for UDP, connection-wise for TCP)
                                                           (notes.nat.gateway-to-loopback)
            -> otherwise unchanged: new guest traffic to the gateway goes to
               the gateway itself.

Decision recorded here: the man page text is the rule, also by default
under today's options.  Later upstream versions map the gateway address to
the host by default (so a guest reaches host services by talking to the
gateway; --no-map-gw or `--map-host-loopback none` turn that off); we
deliberately do not, because the man page we implement says the mapping
holds only for replies, because it keeps host-loopback-only services closed
to an unprompted guest, and because the callers that matter state their
choice anyway (Podman passes --no-map-gw).  So --no-map-gw and
`--map-host-loopback none` change nothing here, and upstream's default is
`--map-host-loopback GATEWAY` (docs/conformance_catalogue.toml,
callers.map-host-loopback).  When the options are given, upstream's rules apply
on top of the ones above:

    host -> guest, source 127.0.0.1 / ::1    -> --map-host-loopback, if given
                   source == the guest's assigned address (the host's own
                   address the guest shadows)  -> --map-guest-addr, if given
    guest -> host (new flows: flows/outbound.py)
                   --map-host-loopback -> 127.0.0.1 / ::1
                   --map-guest-addr    -> the guest's assigned address
                   --dns-forward (TCP/UDP port 53, 853) -> --dns-host

The functions are pure: they take the configuration, the observed guest state
and `local_addrs`, the set of every address the host owns (packed bytes), and
return packed addresses.  When a family has no gateway configured the source
is returned unchanged (there is no better valid address; the guest will
likely drop it, which is the honest outcome).
"""

from __future__ import annotations

from collections.abc import Set
from typing import Final

from passt.config import Config
from passt.guest import GuestState

_LOOPBACK4: Final = b"\x7f\x00\x00\x01"
_LOOPBACK6: Final = bytes(15) + b"\x01"
_ANY4: Final = bytes(4)
_ANY6: Final = bytes(16)
#: ::ffff:0:0/96, how a dual-stack socket shows IPv4 peers.
V4MAPPED_PREFIX: Final = bytes(10) + b"\xff\xff"


def is_loopback(af: int, addr: bytes) -> bool:
    """True for 127.0.0.0/8 (af 4) or ::1 (af 6)."""
    if af == 4:
        return addr[0] == 127
    return addr == _LOOPBACK6


def is_link_local6(addr: bytes) -> bool:
    """True for fe80::/10."""
    return addr[0] == 0xFE and (addr[1] & 0xC0) == 0x80


def is_local(af: int, addr: bytes, local_addrs: Set[bytes]) -> bool:
    """Loopback, or an address the host itself owns."""
    return is_loopback(af, addr) or addr in local_addrs


def gateway_of(conf: Config, af: int) -> bytes | None:
    """The configured default gateway of a family (packed); None: none configured."""
    if af == 4:
        if conf.ip4 is None or conf.ip4.gateway is None:
            return None
        return conf.ip4.gateway.packed
    if conf.ip6 is None:
        return None
    return conf.ip6.gateway.packed


def host_src_to_guest(conf: Config, af: int, src: bytes, local_addrs: Set[bytes]) -> bytes:
    """Source address the guest sees for host-side traffic from `src`.

    A loopback or local source becomes the default gateway of the family;
    anything else is unchanged (also when no gateway is configured).  With
    --map-host-loopback, 127.0.0.1 / ::1 (exactly, as upstream) become that
    address instead; with --map-guest-addr, the guest's assigned address
    (the host's own, which the guest shadows) becomes that address.
    """
    if not is_local(af, src, local_addrs):
        return src
    if af == 4:
        if src == _LOOPBACK4 and conf.map_host_loopback4 is not None:
            return conf.map_host_loopback4.packed
        if (conf.map_guest_addr4 is not None and conf.ip4 is not None
                and src == conf.ip4.addr.packed):
            return conf.map_guest_addr4.packed
    else:
        if src == _LOOPBACK6 and conf.map_host_loopback6 is not None:
            return conf.map_host_loopback6.packed
        if (conf.map_guest_addr6 is not None and conf.ip6 is not None
                and src == conf.ip6.addr.packed):
            return conf.map_guest_addr6.packed
    gw = gateway_of(conf, af)
    return src if gw is None else gw


def host_dst_to_guest(guest: GuestState, af: int, dst: bytes, local_addrs: Set[bytes]) -> bytes:
    """Destination address the guest sees for host-side traffic sent to `dst`.

    Traffic reaching us on the host is for the guest, so a loopback or local
    destination becomes the guest's own address (observed, else configured);
    for IPv6 the observed link-local address is used when the original
    destination is link-local and the guest was seen using one.  An
    unspecified destination (a listener that could not tell) counts as local.
    """
    if not is_local(af, dst, local_addrs) and dst != (_ANY4 if af == 4 else _ANY6):
        return dst
    if af == 4:
        return guest.effective_addr4
    if guest.addr6_ll is not None and is_link_local6(dst):
        return guest.addr6_ll
    return guest.effective_addr6


def guest_dst_to_host(conf: Config, af: int, dst: bytes, origin: bytes | None) -> bytes:
    """Where a guest packet addressed to `dst` really goes on the host.

    `origin` is the original host-side peer address recorded by the flow the
    packet belongs to when that flow was created by host-side traffic, None
    when the guest created the flow (or no flow matched).  Only then, and only
    when `dst` is the gateway, is the packet sent back to that loopback/local
    address; otherwise `dst` is the real destination.
    """
    if origin is None or origin == dst:
        return dst
    if dst == gateway_of(conf, af):
        return origin
    mapped = conf.map_host_loopback4 if af == 4 else conf.map_host_loopback6
    if mapped is not None and dst == mapped.packed:
        return origin
    return dst


def flow_maps_gateway(af: int, origin: bytes, local_addrs: Set[bytes]) -> bool:
    """True when a host-initiated flow from `origin` needs the gateway mapped back.

    Flows record this once at creation (connection-wise for TCP, port-wise
    for UDP) so the per-packet path only compares bytes.
    """
    return is_local(af, origin, local_addrs)


def unmap_v4(addr16: bytes) -> tuple[int, bytes]:
    """(af, packed) from a 16-byte address that may be IPv4-mapped (dual-stack sockets)."""
    if addr16[:12] == V4MAPPED_PREFIX:
        return 4, addr16[12:]
    return 6, addr16
