r"""Assembly shared by passt and pasta: context, services, handlers, timers.

    Config --> Context(loop) --> services (ARP, DHCP, NDP, DHCPv6)
                             \-> handlers (TCP, UDP, ICMP) --> Forwarder (-t/-u listeners)
                             \-> Dispatcher (tap frames --> the above)

The program's main connects a tap back-end (`attach_tap`) and runs the loop.

pasta adds the loopback bypass (`_build_bypass`, only when given the namespace's
socket factory); every object is built after what it needs, nothing is swapped in later:

    -t/-u listeners (host) --loopback peer--> SpliceHandler / UdpSpliceHandler
                                              --> socket in the namespace --> its 127.0.0.1/::1
                           --other peers----> TcpHandler / UdpHandler (the tap)
    -T/-U listeners (namespace, 127.0.0.1 and ::1) --> SpliceHandler / UdpSpliceHandler
                                              --> host socket --> host 127.0.0.1/::1

The -T/-U listeners are bound to the namespace's loopback addresses only:
the bypass is for local traffic (man page NOTES), and a wildcard listener
would also capture connections that namespace processes make to their own
non-loopback addresses at that port.  Each side's `auto` scan skips the
ports that we ourselves bound on that side (`own_ports`), or a forwarded
port would be forwarded back and loop.
"""

from __future__ import annotations

import dataclasses
import socket
from collections.abc import Callable
from ipaddress import IPv4Address, IPv6Address

from passt import log
from passt.config import Config, FwdMode, Mode, PortFwd
from passt.context import Context
from passt.dispatch import Dispatcher
from passt.flows.fwd import TCP, Forwarder
from passt.flows.icmp import IcmpHandler
from passt.flows.sockets import SocketFactory
from passt.flows.tcp import TcpHandler
from passt.flows.tcp_splice import SpliceHandler, scan_loopback_ports
from passt.flows.udp import UdpHandler
from passt.flows.udp_splice import UdpSpliceHandler
from passt.loop import EVENT_READ, EVENT_WRITE, EventLoop, Timer
from passt.services.arp import ArpService
from passt.services.dhcp import DhcpService
from passt.services.dhcpv6 import Dhcpv6Service
from passt.services.ndp import NdpService
from passt.tap.base import TapBackend


class Runtime:
    """Everything that serves one guest link, independent of the back-end."""

    def __init__(
        self,
        conf: Config,
        *,
        local_addrs: frozenset[bytes] = frozenset(),
        scan_ns_ports: Callable[[bool], set[int]] | None = None,
        ns_socket: SocketFactory | None = None,
        ns_pid: int | None = None,
    ) -> None:
        """`ns_socket` (pasta: the namespace helper's socket factory) adds the loopback bypass;
        `ns_pid` is the helper's PID (the control socket's `stats` reads the tap's counters there)."""
        self.conf = conf
        self.loop = EventLoop()
        ctx = self.ctx = Context(conf, self.loop)
        counters = ctx.counters
        now = self.loop.now
        self.arp = ArpService(conf, ctx.guest, counters, log.info) if conf.ip4 else None
        # pasta's tap hands over frames with partial checksums (offload): don't verify them
        verify = conf.mode is Mode.PASST
        self.dhcp = (
            DhcpService(conf, ctx.guest, counters, log.info, verify_l4_checksum=verify)
            if conf.ip4 and conf.dhcp
            else None
        )
        # NDP answers every NS/RS: per-packet lines are debug (issue 11)
        self.ndp = NdpService(conf, ctx.guest, counters, log.debug, now=now) if conf.ip6 and conf.ndp else None
        self.dhcpv6 = (
            Dhcpv6Service(conf, ctx.guest, counters, log.info, verify_l4_checksum=verify)
            if conf.ip6 and conf.dhcpv6
            else None
        )
        tcp = TcpHandler(ctx, local_addrs=local_addrs) if conf.tcp else None
        udp = UdpHandler(ctx, local_addrs=local_addrs, gso_batch=True) if conf.udp else None
        icmp = IcmpHandler(ctx) if conf.icmp else None
        self.tcp, self.udp, self.icmp = tcp, udp, icmp
        self.dispatcher = Dispatcher(ctx, arp=self.arp, dhcp=self.dhcp, ndp=self.ndp, dhcpv6=self.dhcpv6,
                                     tcp=tcp, udp=udp, icmp=icmp)  # fmt: skip
        self._ra_timer: Timer | None = None
        self._tap_handler: Callable[[int, float], None] | None = None
        self.on_tap_closed: Callable[[float], None] | None = None
        #: pasta's loopback bypass (built here when `ns_socket` is given).
        self.splice_in: SpliceHandler | None = None
        self.splice_out: SpliceHandler | None = None
        self.udp_splice_in: UdpSpliceHandler | None = None
        self.udp_splice_out: UdpSpliceHandler | None = None
        #: pasta: the -T/-U listeners in the namespace (one Forwarder per loopback address).
        self.ns_forwarders: list[Forwarder] = []
        #: pasta: the namespace helper's PID (the control socket reads it).
        self.ns_pid = ns_pid
        if ns_socket is not None:
            self._build_bypass(ns_socket)
        # -t/-u: loopback peers go to the bypass when there is one; `auto` never forwards
        # back the ports our own -T/-U listeners hold on the namespace side
        ns_fwds = self.ns_forwarders
        self.forwarder = Forwarder(
            ctx, tcp=self.splice_in or tcp, udp=self.udp_splice_in or udp, scan_ns_ports=scan_ns_ports,
            own_ports=(lambda tcp: _bound_ports(ns_fwds, tcp)) if ns_fwds else None,
        )  # fmt: skip

    def start_forwarding(self) -> None:
        """Open the -t/-u listeners (warnings for ports we can't bind); pasta: also -T/-U."""
        if self.conf.tcp_in.mode is not FwdMode.NONE or self.conf.udp_in.mode is not FwdMode.NONE:
            self.forwarder.start()
        for fwd in self.ns_forwarders:
            fwd.start()

    def bypass_flow_tcp_count(self) -> int:
        """Spliced TCP connections currently open (pasta; UDP flows only time out)."""
        return sum(h.flow_count() for h in (self.splice_in, self.splice_out) if h is not None)

    # pasta's loopback bypass --------------------------------------------------
    def _build_bypass(self, ns_socket: SocketFactory) -> None:
        """The splice handlers in front of -t/-u, and the -T/-U forwarders (started later)."""
        ctx, conf = self.ctx, self.conf
        if self.tcp is not None and conf.splice:  # --no-splice: inbound local traffic via the tap
            # non-loopback peers of -t keep going through the tap
            self.splice_in = SpliceHandler(ctx, target_socket=ns_socket, fallback=self.tcp.accept_socket,
                                           name="tcp_splice_in")  # fmt: skip
        if self.udp is not None and conf.splice:
            self.udp_splice_in = UdpSpliceHandler(ctx, target_socket=ns_socket, fallback=self.udp,
                                                  name="udp_splice_in")  # fmt: skip
        if conf.tcp and conf.tcp_out.mode is not FwdMode.NONE:
            self.splice_out = SpliceHandler(ctx, target_socket=socket.socket, name="tcp_splice_out")
        if conf.udp and conf.udp_out.mode is not FwdMode.NONE:
            self.udp_splice_out = UdpSpliceHandler(ctx, target_socket=socket.socket, name="udp_splice_out")
        if self.splice_out is None and self.udp_splice_out is None:
            return
        scan_host = _cached_scan(self.loop)
        for tcp_h, udp_h, fwd in ((self.splice_out, None, conf.tcp_out), (None, self.udp_splice_out, conf.udp_out)):
            if tcp_h is None and udp_h is None:
                continue
            for addr in _ns_listen_addrs(conf, fwd):
                # the host side's listeners (self.forwarder, built next) are never forwarded back
                self.ns_forwarders.append(Forwarder(
                    ctx, tcp=tcp_h, udp=udp_h, scan_ns_ports=scan_host,
                    tcp_fwd=_with_addr(conf.tcp_out, addr), udp_fwd=_with_addr(conf.udp_out, addr),
                    socket_factory=ns_socket, own_ports=lambda tcp: _bound_ports([self.forwarder], tcp),
                ))  # fmt: skip

    # tap ---------------------------------------------------------------
    def attach_tap(self, tap: TapBackend) -> None:
        """A guest link is up: route its frames, start periodic RAs."""
        self.ctx.tap = tap
        fd = tap.fileno()

        def on_tap(mask: int, now: float) -> None:
            if mask & EVENT_WRITE:
                # frames a short write left behind (watched only while some wait: Context.flush_tap)
                self.ctx.flush_tap(now)
            if mask & EVENT_READ:
                frames = tap.read_frames()
                if frames:
                    self.dispatcher.from_tap(frames, now)
            if tap.closed:
                self.detach_tap(now)

        self._tap_handler = on_tap
        self.loop.register(fd, EVENT_READ, on_tap)
        if self.ndp is not None:
            # a new guest (passt reconnect) gets the quick initial RAs again
            self.ndp.restart(self.loop.now)
        self._schedule_ra(self.loop.now)

    def detach_tap(self, now: float) -> None:
        """The guest went away: forget its flows; the back-end is closed."""
        tap = self.ctx.tap
        if tap is None:
            return
        self.loop.unregister(tap.fileno())
        tap.close()
        self.ctx.tap = None
        for handler in (self.tcp, self.udp, self.icmp):
            if handler is not None:
                handler.tap_reset()
        if self._ra_timer is not None:
            self.loop.cancel(self._ra_timer)
            self._ra_timer = None
        if self.on_tap_closed is not None:
            self.on_tap_closed(now)

    def _schedule_ra(self, now: float) -> None:
        ndp = self.ndp
        if ndp is None:
            return
        deadline = ndp.next_deadline()
        if deadline is None:
            return

        def fire(now: float) -> None:
            self._ra_timer = None
            if self.ctx.tap is None:
                return
            for frame in ndp.on_timer(now):
                self.ctx.send(frame)
            self._schedule_ra(now)

        self._ra_timer = self.loop.call_at(max(deadline, now), fire)


def _ns_listen_addrs(conf: Config, fwd: PortFwd) -> list[IPv4Address | IPv6Address | None]:
    """Where -T/-U listeners bind in the namespace: the spec's address, else the loopbacks."""
    if fwd.addr is not None:
        return [None]
    out: list[IPv4Address | IPv6Address | None] = []
    if conf.ip4 is not None:
        out.append(IPv4Address("127.0.0.1"))
    if conf.ip6 is not None:
        out.append(IPv6Address("::1"))
    return out


def _with_addr(fwd: PortFwd, addr: IPv4Address | IPv6Address | None) -> PortFwd:
    """`fwd` bound to `addr` (None: as given)."""
    return fwd if addr is None else dataclasses.replace(fwd, addr=addr)


def _bound_ports(forwarders: list[Forwarder], tcp: bool) -> set[int]:
    """Ports our own listeners hold on one side (never forwarded back by `auto`)."""
    proto = TCP if tcp else "udp"
    return {port for f in forwarders for (p, port) in f.listening() if p == proto}


def _cached_scan(loop: EventLoop) -> Callable[[bool], set[int]]:
    """The host's loopback/wildcard ports, scanned once per loop wake-up for all forwarders."""
    cache: dict[bool, tuple[float, set[int]]] = {}

    def scan(tcp: bool) -> set[int]:
        hit = cache.get(tcp)
        if hit is not None and hit[0] == loop.now:
            return hit[1]
        ports = scan_loopback_ports(tcp)
        cache[tcp] = (loop.now, ports)
        return ports

    return scan


def local_addresses() -> frozenset[bytes]:
    """Every address configured on this namespace's interfaces (packed)."""
    from passt.rtnl import Rtnl

    with Rtnl() as nl:
        return frozenset(a for msg in nl.addrs() if (a := msg.address or msg.local))
