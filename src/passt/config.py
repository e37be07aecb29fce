"""The frozen configuration both programs run with.

`cli.py` parses argv into a `Config`; `hostinfo.py` fills in what the man page
says comes from the host (the interface with the first default route, its
addresses, gateways, MAC and MTU; /etc/resolv.conf in passt mode).  Everything
downstream reads only this object, so a test can build one by hand.

Addresses are kept both as `ipaddress` objects (for printing and decisions)
and packed `bytes` (for the data path, where comparing bytes is cheapest).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv6Address
from typing import Final

#: What passt announces and pasta configures when -m is not given (65535 - 15,
#: so a frame with its 4-byte stream header and Ethernet header fits 64 KiB).
DEFAULT_TAP_MTU: Final = 65520
#: Smallest MTU IPv4 allows (RFC 791 says 68; passt refuses below that).
MIN_MTU: Final = 68
#: IPv6 needs at least 1280 (RFC 8200 section 5); below it IPv6 is disabled.
MIN_MTU_IPV6: Final = 1280

#: Broadcast MAC: where frames go until the guest's own MAC has been seen.
MAC_BROADCAST: Final = b"\xff" * 6


class Mode(enum.Enum):
    """Which program we are: decides defaults (DNS, port forwarding, back-end)."""

    PASST = "passt"
    PASTA = "pasta"


class FwdMode(enum.Enum):
    """How a port-forwarding spec (-t/-u/-T/-U) was given."""

    NONE = "none"
    #: passt: every unbound non-ephemeral port we may bind.
    ALL = "all"
    #: pasta: whatever is bound on the other side, rescanned while running.
    AUTO = "auto"
    #: an explicit list of ports, ranges and mappings.
    SPEC = "spec"


@dataclass(frozen=True, slots=True)
class PortFwd:
    """One direction's forwarding for one protocol.

    `ports` maps a listening port to the port it is delivered to on the other
    side; for AUTO it is filled at run time by the /proc/net scan, for ALL by
    probing.  `excluded` holds ports named with `~` (upstream syntax) that ALL
    and AUTO must skip.  `addr` binds the listeners to one address (upstream's
    `-t 192.0.2.1/22` form); None means the wildcard.
    """

    mode: FwdMode = FwdMode.NONE
    ports: tuple[tuple[int, int], ...] = ()
    excluded: frozenset[int] = frozenset()
    addr: IPv4Address | IPv6Address | None = None
    #: True when the spec was given explicitly (UDP following TCP is not).
    explicit: bool = False

    def mapping(self) -> dict[int, int]:
        """Listening port -> target port."""
        return dict(self.ports)


@dataclass(frozen=True, slots=True)
class Ip4Config:
    """IPv4 side: what the guest is handed and what the host has."""

    #: Address assigned to the guest (-a, else the host's).
    addr: IPv4Address
    #: Prefix length handed out via DHCP option 1 (-n, else host's, else RFC 4632 class).
    prefix_len: int
    #: Default gateway handed out (-g, else host's default route); None: no router option.
    gateway: IPv4Address | None
    #: DNS servers for DHCP option 6.
    dns: tuple[IPv4Address, ...] = ()
    #: The host's own address on the outbound interface (unset when it has none).
    host_addr: IPv4Address | None = None

    @property
    def addr_b(self) -> bytes:
        return self.addr.packed

    @property
    def gateway_b(self) -> bytes:
        return self.gateway.packed if self.gateway is not None else bytes(4)

    @property
    def netmask(self) -> IPv4Address:
        return IPv4Address((0xFFFFFFFF << (32 - self.prefix_len)) & 0xFFFFFFFF)


@dataclass(frozen=True, slots=True)
class Ip6Config:
    """IPv6 side: what the guest is handed and what the host has."""

    #: Address assigned via DHCPv6 (option 5) and whose /prefix_len is advertised in RAs.
    addr: IPv6Address
    #: Prefix length advertised in the RA prefix option (64 unless the host says otherwise).
    prefix_len: int
    #: Gateway: source of RAs and DHCPv6 replies; guests route through it.
    gateway: IPv6Address
    #: DNS servers for RDNSS (RA option 25) and DHCPv6 option 23.
    dns: tuple[IPv6Address, ...] = ()
    host_addr: IPv6Address | None = None

    @property
    def addr_b(self) -> bytes:
        return self.addr.packed

    @property
    def gateway_b(self) -> bytes:
        return self.gateway.packed

    @property
    def our_ll(self) -> IPv6Address:
        """Link-local source for NDP/DHCPv6: the gateway if link-local, else fe80::1."""
        if self.gateway.is_link_local:
            return self.gateway
        return IPv6Address("fe80::1")


@dataclass(frozen=True, slots=True)
class Config:
    """Everything either program needs to run, decided before the loop starts."""

    mode: Mode
    #: Host interface the configuration was derived from (-i or first default route).
    out_ifname: str
    #: Our MAC address towards the guest (-M, else the host interface's).
    our_mac: bytes
    #: IPv4 configuration; None when IPv4 is disabled (-6, or no route/address).
    ip4: Ip4Config | None
    #: IPv6 configuration; None when IPv6 is disabled (-4, or no route/address).
    ip6: Ip6Config | None
    #: MTU sent in DHCP option 26 / NDP option 5 (-m); None: not sent.
    mtu: int | None = None
    #: MTU of pasta's tap (and the MSS basis for the guest): -m, else 65520.
    tap_mtu: int = DEFAULT_TAP_MTU
    #: DNS search list (DHCP 119, NDP DNSSL 31, DHCPv6 24).
    search: tuple[str, ...] = ()

    # protocol switches (all True unless a --no-* option says otherwise)
    tcp: bool = True
    udp: bool = True
    icmp: bool = True
    dhcp: bool = True
    ndp: bool = True
    dhcpv6: bool = True
    ra: bool = True

    # port forwarding
    #: -t: host -> guest/namespace TCP.
    tcp_in: PortFwd = field(default_factory=PortFwd)
    #: -u: host -> guest/namespace UDP.
    udp_in: PortFwd = field(default_factory=PortFwd)
    #: -T (pasta): namespace -> host TCP.
    tcp_out: PortFwd = field(default_factory=PortFwd)
    #: -U (pasta): namespace -> host UDP.
    udp_out: PortFwd = field(default_factory=PortFwd)

    # process behaviour
    debug: bool = False
    quiet: bool = False
    foreground: bool = False
    stderr: bool = False
    #: pcap file to write (-p); None: no capture.
    pcap: str | None = None
    pid_file: str | None = None
    log_file: str | None = None
    #: (uid, gid) to drop to once set up; None: keep (or the default, see cli).
    runas: tuple[int, int] | None = None

    # passt only
    #: -s: socket path; None: probe /tmp/passt_1.socket .. /tmp/passt_64.socket.
    socket_path: str | None = None

    # pasta only
    #: -I: tap name in the namespace (default: out_ifname).
    ns_ifname: str = ""
    #: TARGET_PID to join, if any.
    target_pid: int | None = None
    #: --netns PATH and --userns PATH to join, if any.
    netns: str | None = None
    userns: str | None = None
    #: Command to run in the new namespace (default: $SHELL).
    command: tuple[str, ...] = ()
    #: --config-net: configure address, routes, MTU and link up through netlink.
    config_net: bool = False

    # options today's callers pass (Podman, libvirt, RootlessKit): parsed by cli.py
    #: -1/--one-off (passt): quit when the first guest disconnects.
    one_off: bool = False
    #: -F/--fd: an inherited descriptor (passt: connected guest socket; pasta: tap).
    fd: int | None = None
    #: --log-size: bound of the --log-file in bytes (cli: 1 MiB by default, as upstream);
    #: None: unbounded.
    log_size: int | None = None
    #: --trace: per-packet debug messages (implies debug).
    trace: bool = False
    #: -H/--hostname and --fqdn: handed to the guest (DHCP 12 / 81, DHCPv6 39).
    hostname: str | None = None
    fqdn: str | None = None
    #: --dns-forward: guest-visible DNS address(es) answered through the host's resolver.
    dns_forward4: IPv4Address | None = None
    dns_forward6: IPv6Address | None = None
    #: --dns-host: where queries to dns_forward* go (default: the host's first resolver).
    dns_host4: IPv4Address | None = None
    dns_host6: IPv6Address | None = None
    #: --no-map-gw or --map-host-loopback none given.
    no_map_gw: bool = False
    #: --map-host-loopback: guest-side address standing for the host's loopback; None: not
    #: given (or "none", then no_map_gw): the data path decides the default.
    map_host_loopback4: IPv4Address | None = None
    map_host_loopback6: IPv6Address | None = None
    #: --map-guest-addr: guest-side address standing for the host's own address the guest shadows.
    map_guest_addr4: IPv4Address | None = None
    map_guest_addr6: IPv6Address | None = None
    #: -o/--outbound: source address bound for host sockets; --outbound-if4/6: interface bound.
    outbound4: IPv4Address | None = None
    outbound6: IPv6Address | None = None
    outbound_if4: str | None = None
    outbound_if6: str | None = None
    #: -c/--conf-path: the control socket (docs/control.md); None: no control socket.
    conf_path: str | None = None
    # pasta only, callers' options
    #: --netns-only: join/create only the network namespace, not a user namespace.
    netns_only: bool = False
    #: --no-netns-quit: keep running when the namespace (or TARGET_PID) goes away.
    no_netns_quit: bool = False
    #: --ns-mac-addr: MAC address given to the namespace's tap; None: kernel's choice.
    ns_mac_addr: bytes | None = None
    #: --no-splice: no loopback bypass; everything goes through the tap.
    splice: bool = True

    @property
    def tap_name(self) -> str:
        return self.ns_ifname or self.out_ifname
