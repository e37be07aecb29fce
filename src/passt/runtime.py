r"""Assembly shared by passt and pasta: context, services, handlers, timers.

    Config --> Context(loop) --> services (ARP, DHCP, NDP, DHCPv6)
                             \-> handlers (TCP, UDP, ICMP) --> Forwarder (-t/-u listeners)
                             \-> Dispatcher (tap frames --> the above)

The program's main connects a tap back-end (`attach_tap`) and runs the loop.
"""

from __future__ import annotations

import socket
from collections.abc import Callable

from passt import log
from passt.config import Config, FwdMode, Mode
from passt.context import Context
from passt.dispatch import Dispatcher
from passt.flows.fwd import Forwarder
from passt.flows.icmp import IcmpHandler
from passt.flows.tcp import TcpHandler
from passt.flows.udp import UdpHandler
from passt.loop import EVENT_READ, EventLoop, Timer
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
    ) -> None:
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
        self.ndp = NdpService(conf, ctx.guest, counters, log.info, now=now) if conf.ip6 and conf.ndp else None
        self.dhcpv6 = (
            Dhcpv6Service(conf, ctx.guest, counters, log.info, verify_l4_checksum=verify)
            if conf.ip6 and conf.dhcpv6
            else None
        )
        tcp = TcpHandler(ctx, local_addrs=local_addrs) if conf.tcp else None
        udp = UdpHandler(ctx, local_addrs=local_addrs) if conf.udp else None
        icmp = IcmpHandler(ctx) if conf.icmp else None
        ctx.tcp, ctx.udp, ctx.icmp = tcp, udp, icmp
        self.tcp, self.udp, self.icmp = tcp, udp, icmp
        self.dispatcher = Dispatcher(ctx, arp=self.arp, dhcp=self.dhcp, ndp=self.ndp, dhcpv6=self.dhcpv6)
        self.forwarder = Forwarder(ctx, tcp=tcp, udp=udp, scan_ns_ports=scan_ns_ports)
        self._ra_timer: Timer | None = None
        self._tap_handler: Callable[[int, float], None] | None = None
        self.on_tap_closed: Callable[[float], None] | None = None

    def start_forwarding(self) -> None:
        """Open the -t/-u listeners (warnings for ports we can't bind)."""
        if self.conf.tcp_in.mode is not FwdMode.NONE or self.conf.udp_in.mode is not FwdMode.NONE:
            self.forwarder.start()

    # tap ---------------------------------------------------------------
    def attach_tap(self, tap: TapBackend) -> None:
        """A guest link is up: route its frames, start periodic RAs."""
        self.ctx.tap = tap
        fd = tap.fileno()

        def on_tap(_mask: int, now: float) -> None:
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


def local_addresses() -> frozenset[bytes]:
    """Every address configured on this namespace's interfaces (packed)."""
    from pyroute2 import IPRoute

    found: set[bytes] = set()
    with IPRoute() as ipr:
        for msg in ipr.get_addr():
            addr = msg.get_attr("IFA_ADDRESS") or msg.get_attr("IFA_LOCAL")
            if not addr:
                continue
            family = socket.AF_INET6 if ":" in addr else socket.AF_INET
            found.add(socket.inet_pton(family, addr))
    return frozenset(found)
