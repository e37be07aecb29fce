"""Where a flow the guest starts goes on the host, and from which source.

Today's passt(1) options that callers such as Podman pass decide this
(`fwd_nat_from_tap` in upstream's fwd.c is the model; the code is ours):

    guest -> D:port (new TCP/UDP flow, new echo flow)
        TCP/UDP to port 53 or 853, D == --dns-forward     -> --dns-host
                                       (default: the host's first nameserver)
        D == --map-host-loopback                          -> 127.0.0.1 / ::1
        D == --map-guest-addr                             -> the guest's assigned
                                       address: the host's own address it shadows
        anything else                                     -> D
    host socket: SO_BINDTODEVICE --outbound-if4/6, bind() to -o/--outbound,
        except towards the host's loopback (which no outbound interface
        routes and no outbound address owns; upstream binds there too and
        the connection fails, which helps nobody).

Only the destination the host socket uses changes: flows stay keyed by the
guest's own tuple, so answers reach the guest from the address it talked to
(the forward address, the mapped address), never from the real peer.

DNS: the guest is told about the forward address only for nameservers it
could not reach itself, as upstream does (`advertised_dns`): a loopback
nameserver (127.0.0.53) becomes --dns-forward, else --map-host-loopback
(which then also forwards DNS, like upstream), else it is left out; any
other nameserver is handed out as it is.  Podman writes its own resolv.conf
(`nameserver 169.254.1.1`) and passes `--dns-forward 169.254.1.1`, so the
handed-out list does not matter to it.

--map-host-loopback has no default here: the man page this project
implements (2021, NOTES) maps the gateway to the host's loopback only for
replies to host-initiated flows (see nat.py), and we keep that rule as the
default; upstream's later default (the gateway maps to the host) is one
`--map-host-loopback GATEWAY` away.  --no-map-gw and `--map-host-loopback
none` are therefore what we do anyway (docs/conformance_catalogue.toml,
callers.map-host-loopback).

`Outbound` is built once per handler from the Config (packed addresses, so
the per-flow decision compares bytes); `target` is pure; `connect`,
`connect_ex` and `bind_icmp` are the socket edge.
"""

from __future__ import annotations

import errno
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address
from typing import Final, TypeVar

from passt.config import Config

#: Destination ports --dns-forward applies to: DNS and DNS over TLS (RFC 7858), as upstream.
DNS_PORTS: Final = frozenset({53, 853})

_LOOPBACK4: Final = socket.inet_pton(socket.AF_INET, "127.0.0.1")
_LOOPBACK6: Final = socket.inet_pton(socket.AF_INET6, "::1")

_A = TypeVar("_A", IPv4Address, IPv6Address)


def _packed(addr: IPv4Address | IPv6Address | None) -> bytes | None:
    return None if addr is None else addr.packed


def _is_loopback(af: int, addr: bytes) -> bool:
    return addr[0] == 127 if af == 4 else addr == _LOOPBACK6


def advertised_dns(
    resolv: Sequence[_A], dns_forward: _A | None, map_host_loopback: _A | None
) -> tuple[_A, ...]:
    """The nameservers handed to the guest (DHCP 6, RDNSS, DHCPv6 23) from the host's list.

    `resolv` is one family's nameservers from the host's resolv.conf.  A
    loopback one (or one equal to the mapped host-loopback address, which
    the guest would reach as our host) becomes `dns_forward`, else
    `map_host_loopback`, else is dropped (the guest can't reach the host's
    127.0.0.53); the others pass unchanged.  Order kept, duplicates dropped.
    """
    out: list[_A] = []
    for ns in resolv:
        if ns.is_loopback or ns == map_host_loopback:
            sub = dns_forward if dns_forward is not None else map_host_loopback
            if sub is None:
                continue
            ns = sub
        if ns not in out:
            out.append(ns)
    return tuple(out)


def dns_match(
    resolv: Sequence[_A], dns_forward: _A | None, map_host_loopback: _A | None
) -> _A | None:
    """The guest-side address whose DNS traffic is forwarded; None: none.

    --dns-forward if given; otherwise, like upstream, the mapped host-loopback
    address when `advertised_dns` handed it out in place of a loopback
    nameserver (so the guest's queries to it reach that nameserver, not
    whatever listens on the host's 127.0.0.1:53).
    """
    if dns_forward is not None:
        return dns_forward
    if map_host_loopback is not None and any(
        ns.is_loopback or ns == map_host_loopback for ns in resolv
    ):
        return map_host_loopback
    return None


def host_nameservers() -> tuple[tuple[IPv4Address, ...], tuple[IPv6Address, ...]]:
    """The host's resolv.conf nameservers per family (empty when unreadable)."""
    from passt.hostinfo import RESOLV_CONF, parse_resolv_conf

    try:
        with open(RESOLV_CONF, encoding="utf-8", errors="replace") as f:
            dns4, dns6, _ = parse_resolv_conf(f.read())
    except OSError:
        return (), ()
    return tuple(dns4), tuple(dns6)


@dataclass(frozen=True, slots=True)
class Outbound:
    """The guest -> host destination map and source binding, packed for the data path."""

    #: Guest-side DNS forward address and where its queries go (per family); None: no forwarding.
    dns_match4: bytes | None = None
    dns_host4: bytes | None = None
    dns_match6: bytes | None = None
    dns_host6: bytes | None = None
    #: --map-host-loopback: guest-side address that means the host's 127.0.0.1 / ::1.
    host_lo4: bytes | None = None
    host_lo6: bytes | None = None
    #: --map-guest-addr and the guest's assigned address it leads to.
    guest_map4: bytes | None = None
    guest_addr4: bytes | None = None
    guest_map6: bytes | None = None
    guest_addr6: bytes | None = None
    #: -o/--outbound source addresses, as text for bind(); None: the kernel chooses.
    src4: str | None = None
    src6: str | None = None
    #: --outbound-if4/6, encoded for SO_BINDTODEVICE; None: not bound to a device.
    dev4: bytes | None = None
    dev6: bytes | None = None

    @classmethod
    def from_config(
        cls,
        conf: Config,
        resolv: tuple[Sequence[IPv4Address], Sequence[IPv6Address]] | None = None,
    ) -> Outbound:
        """Build from `conf`; `resolv` (the host's nameservers) is read from resolv.conf if needed.

        The file is only read when DNS forwarding could depend on it: a
        --dns-forward without --dns-host (upstream's default is the host's
        first nameserver) or a --map-host-loopback (see `dns_match`).
        """
        need = ((conf.dns_forward4 is not None and conf.dns_host4 is None)
                or (conf.dns_forward6 is not None and conf.dns_host6 is None)
                or conf.map_host_loopback4 is not None or conf.map_host_loopback6 is not None)
        if resolv is None:
            resolv = host_nameservers() if need else ((), ())
        r4, r6 = resolv
        match4 = dns_match(r4, conf.dns_forward4, conf.map_host_loopback4)
        match6 = dns_match(r6, conf.dns_forward6, conf.map_host_loopback6)
        host4 = conf.dns_host4 if conf.dns_host4 is not None else (r4[0] if r4 else None)
        host6 = conf.dns_host6 if conf.dns_host6 is not None else (r6[0] if r6 else None)
        return cls(
            dns_match4=_packed(match4) if host4 is not None else None,
            dns_host4=_packed(host4) if match4 is not None else None,
            dns_match6=_packed(match6) if host6 is not None else None,
            dns_host6=_packed(host6) if match6 is not None else None,
            host_lo4=_packed(conf.map_host_loopback4),
            host_lo6=_packed(conf.map_host_loopback6),
            guest_map4=_packed(conf.map_guest_addr4) if conf.ip4 is not None else None,
            guest_addr4=conf.ip4.addr.packed if conf.ip4 is not None else None,
            guest_map6=_packed(conf.map_guest_addr6) if conf.ip6 is not None else None,
            guest_addr6=conf.ip6.addr.packed if conf.ip6 is not None else None,
            src4=str(conf.outbound4) if conf.outbound4 is not None else None,
            src6=str(conf.outbound6) if conf.outbound6 is not None else None,
            dev4=conf.outbound_if4.encode() if conf.outbound_if4 else None,
            dev6=conf.outbound_if6.encode() if conf.outbound_if6 else None,
        )

    def target(self, af: int, dst: bytes, dport: int, *, dns: bool) -> bytes:
        """Real host-side destination for a new guest flow to `dst`:`dport`.

        `dns`: the protocol is one --dns-forward applies to (TCP or UDP).
        """
        if af == 4:
            match, host, lo, gmap, gaddr = (self.dns_match4, self.dns_host4, self.host_lo4,
                                            self.guest_map4, self.guest_addr4)  # fmt: skip
        else:
            match, host, lo, gmap, gaddr = (self.dns_match6, self.dns_host6, self.host_lo6,
                                            self.guest_map6, self.guest_addr6)  # fmt: skip
        if dns and host is not None and dst == match and dport in DNS_PORTS:
            return host
        if dst == lo:
            return _LOOPBACK4 if af == 4 else _LOOPBACK6
        if gaddr is not None and dst == gmap:
            return gaddr
        return dst

    def _bind(self, sock: socket.socket, af: int, target: bytes, port: int) -> None:
        """SO_BINDTODEVICE and bind() for the family, skipped towards loopback; raises OSError."""
        if _is_loopback(af, target):
            if port:
                sock.bind(("127.0.0.1", port) if af == 4 else ("::1", port, 0, 0))
            return
        dev = self.dev4 if af == 4 else self.dev6
        if dev is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, dev)
        src = self.src4 if af == 4 else self.src6
        if src is not None:
            sock.bind((src, port) if af == 4 else (src, port, 0, 0))
        elif port:
            sock.bind(("0.0.0.0", port) if af == 4 else ("::", port, 0, 0))

    def connect(self, sock: socket.socket, af: int, target: bytes, addr: tuple[object, ...]) -> None:
        """Bind as configured, then connect() to `addr` (the socket address of `target`)."""
        self._bind(sock, af, target, 0)
        sock.connect(addr)

    def connect_ex(self, sock: socket.socket, af: int, target: bytes, addr: tuple[object, ...]) -> int:
        """Like `connect`, returning an errno (0, EINPROGRESS, ...) as socket.connect_ex does."""
        try:
            self._bind(sock, af, target, 0)
        except OSError as e:
            return e.errno or errno.EADDRNOTAVAIL
        return sock.connect_ex(addr)

    def bind_icmp(self, sock: socket.socket, af: int, target: bytes, ident: int) -> None:
        """Bind a ping socket to the echo identifier `ident` (0: any) and the configured source."""
        self._bind(sock, af, target, ident)
