"""Port-forwarding listeners: the host side of -t and -u.

For each forwarded port we bind one listening socket and register it with the
loop; readiness goes to the protocol handler with the port the traffic is
delivered to on the guest side:

    Config.tcp_in / udp_in (PortFwd)
        SPEC  listen port -> target port, as given
        ALL   (passt) every port outside the ephemeral range that is not
              excluded and that we may bind; ports already bound are skipped
        AUTO  (pasta) whatever the namespace has bound, rescanned every second
    listener --READ--> tcp.listen_ready(lsock, target, now)
                       udp.listen_ready(lsock, target, now)

Socket family (ports.ipv6-also-ipv4): with IPv6 enabled we bind an IPv6
socket with IPV6_V6ONLY off, so the same port also takes IPv4 (peers then
show as ::ffff:a.b.c.d and the handlers unmap them); without IPv6, plain
IPv4.  A PortFwd address binds to that one address and family instead.
All listeners are non-blocking with SO_REUSEADDR (so a restart does not wait
for TIME_WAIT); UDP listeners also ask for PKTINFO (see udp.py).

Failures (notes.low-ports): a port below 1024 without root or
CAP_NET_BIND_SERVICE fails with EACCES, a port in use with EADDRINUSE; each
gets one warning line naming the port and the remedy, is recorded in
`failures`, and the other ports still work.  ALL mode binds tens of
thousands of sockets: RLIMIT_NOFILE's soft limit is raised to the hard one
first, ports in use are skipped silently and permission failures are
summarised in one line (one line per port would be a thousand lines).

AUTO rescans with the injected `scan_ns_ports(tcp: bool)` and adds or closes
listeners to match.  A port we ourselves bound on the scanned side (pasta's
-T/-U listeners, reported by `own_ports`) is never forwarded, or traffic
would loop between the namespaces.  The same class serves the -T/-U
direction when given the namespace's socket factory, those specs and a scan
of the host's ports.
"""

from __future__ import annotations

import errno
import logging
import os
import resource
import socket
from collections.abc import Callable
from ipaddress import IPv4Address
from typing import Final, Protocol

from passt.config import FwdMode, PortFwd
from passt.context import Context
from passt.flows.sockets import SocketFactory, enable_pktinfo
from passt.loop import EVENT_READ, Timer

log = logging.getLogger("passt")

#: How often AUTO mode rescans the other side's bound ports (man page: "currently bound").
AUTO_RESCAN_S: Final = 1.0
#: Used when /proc/sys/net/ipv4/ip_local_port_range cannot be read (Linux default).
DEFAULT_EPHEMERAL: Final = (32768, 60999)
EPHEMERAL_PATH: Final = "/proc/sys/net/ipv4/ip_local_port_range"

TCP: Final = "tcp"
UDP: Final = "udp"


class ListenHandler(Protocol):
    """What a protocol handler offers for listeners (TcpHandler, UdpHandler)."""

    def listen_ready(self, lsock: socket.socket, target_port: int, now: float) -> None:
        """Accept (TCP) or read (UDP) on a ready listener, delivering to `target_port`."""
        ...


class UdpListenHandler(ListenHandler, Protocol):
    """A UDP listener's handler: UdpHandler, or pasta's UdpSpliceHandler wrapping it."""

    def forget_listener(self, sock: socket.socket) -> None:
        """The listener `sock` is about to close: drop the flows that reply through it."""
        ...


def ephemeral_range(path: str = EPHEMERAL_PATH) -> tuple[int, int]:
    """The kernel's ephemeral port range (inclusive); the Linux default if unreadable."""
    try:
        with open(path) as f:
            lo, hi = f.read().split()[:2]
        return int(lo), int(hi)
    except (OSError, ValueError):
        return DEFAULT_EPHEMERAL


def all_ports(ephemeral: tuple[int, int], excluded: frozenset[int]) -> list[int]:
    """Candidate ports for ALL mode: 1..65535 minus the ephemeral range and exclusions."""
    lo, hi = ephemeral
    return [p for p in range(1, 65536) if not lo <= p <= hi and p not in excluded]


#: ALL mode keeps 1/ALL_FD_RESERVE of the descriptor limit for connections.
ALL_FD_RESERVE: Final = 4


def _open_fds() -> int:
    """Descriptors this process has open now."""
    try:
        return len(os.listdir("/proc/self/fd"))
    except OSError:
        return 0


def raise_nofile_limit() -> int:
    """Raise RLIMIT_NOFILE's soft limit to the hard limit; returns the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            return hard
        except (OSError, ValueError):
            pass
    return soft


class Forwarder:
    """Listening sockets for forwarded ports, created at start and kept in sync (AUTO)."""

    def __init__(
        self,
        ctx: Context,
        *,
        tcp: ListenHandler | None,
        udp: UdpListenHandler | None,
        scan_ns_ports: Callable[[bool], set[int]] | None,
        tcp_fwd: PortFwd | None = None,
        udp_fwd: PortFwd | None = None,
        socket_factory: SocketFactory = socket.socket,
        own_ports: Callable[[bool], set[int]] | None = None,
        rescan_s: float = AUTO_RESCAN_S,
    ) -> None:
        """`tcp_fwd`/`udp_fwd` default to the config's -t/-u; `own_ports(tcp)` see module doc."""
        self.ctx = ctx
        self.tcp = tcp
        self.udp = udp
        self.scan_ns_ports = scan_ns_ports
        self.tcp_fwd = tcp_fwd if tcp_fwd is not None else ctx.conf.tcp_in
        self.udp_fwd = udp_fwd if udp_fwd is not None else ctx.conf.udp_in
        self._socket = socket_factory
        self.own_ports = own_ports
        self.rescan_s = rescan_s
        self._listeners: dict[tuple[str, int], tuple[socket.socket, int]] = {}
        #: (proto, port) -> reason, for every port we could not bind.
        self.failures: dict[tuple[str, int], str] = {}
        self._timer: Timer | None = None
        self._prog = ctx.conf.mode.value

    # setup -----------------------------------------------------------------
    def _specs(self) -> list[tuple[str, PortFwd, ListenHandler]]:
        conf = self.ctx.conf
        out: list[tuple[str, PortFwd, ListenHandler]] = []
        if self.tcp is not None and conf.tcp:
            out.append((TCP, self.tcp_fwd, self.tcp))
        if self.udp is not None and conf.udp:
            out.append((UDP, self.udp_fwd, self.udp))
        return out

    def start(self) -> None:
        """Bind every configured listener; AUTO also starts the periodic rescan."""
        auto = False
        for proto, fwd, _ in self._specs():
            if fwd.mode == FwdMode.SPEC:
                for port, target in fwd.ports:
                    if port not in fwd.excluded:
                        self._bind(proto, fwd, port, target)
            elif fwd.mode == FwdMode.ALL:
                self._bind_all(proto, fwd)
            elif fwd.mode == FwdMode.AUTO:
                auto = True
        if auto and self.scan_ns_ports is not None:
            self.rescan(self.ctx.loop.now)
            self._timer = self.ctx.loop.call_later(self.rescan_s, self._on_timer)

    def _bind_all(self, proto: str, fwd: PortFwd) -> None:
        """ALL: bind every non-ephemeral, non-excluded port we may and that is free.

        Listeners leave a quarter of the descriptor limit free (ALL_FD_RESERVE):
        it is kept for the guest's socket and its flows, or the first accept()
        would fail with EMFILE.
        """
        limit = raise_nofile_limit()
        budget = limit - limit // ALL_FD_RESERVE - _open_fds()
        bound = 0
        denied = 0
        for port in all_ports(ephemeral_range(), fwd.excluded):
            if (proto, port) in self._listeners:
                continue
            if bound >= budget:
                log.warning("%s: forwarding %s ports only up to %d: the rest of the %d descriptors "
                            "is kept for connections (raise the open-files limit to forward more)",
                            self._prog, proto.upper(), port - 1, limit)  # fmt: skip
                break
            err = self._bind(proto, fwd, port, port, quiet=True)
            if err == 0:
                bound += 1
            if err == errno.EMFILE or err == errno.ENFILE:
                log.warning("%s: out of file descriptors binding %s ports, stopped at %d",
                            self._prog, proto.upper(), port)  # fmt: skip
                break
            if err == errno.EACCES or err == errno.EPERM:
                denied += 1
        if denied:
            log.warning(
                "%s: can't bind %d %s ports: permission denied (needs root or CAP_NET_BIND_SERVICE)",
                self._prog, denied, proto.upper(),
            )  # fmt: skip

    def _family(self, fwd: PortFwd) -> tuple[int, str, bool]:
        """(socket family, bind host, v6only) for a spec's listeners."""
        if fwd.addr is not None:
            if isinstance(fwd.addr, IPv4Address):
                return socket.AF_INET, str(fwd.addr), False
            return socket.AF_INET6, str(fwd.addr), not fwd.addr.is_unspecified
        conf = self.ctx.conf
        if conf.ip6 is not None:
            return socket.AF_INET6, "::", conf.ip4 is None
        return socket.AF_INET, "0.0.0.0", False

    def _bind(
        self, proto: str, fwd: PortFwd, port: int, target: int, *, quiet: bool = False
    ) -> int:
        """Create, bind and register one listener; returns 0 or the errno of the failure.

        `quiet` (ALL mode) suppresses the per-port warning for any failure.
        """
        family, host, v6only = self._family(fwd)
        kind = socket.SOCK_STREAM if proto == TCP else socket.SOCK_DGRAM
        try:
            sock = self._socket(family, kind, 0)
        except OSError as e:
            if family != socket.AF_INET6 or fwd.addr is not None:
                return self._failed(proto, port, e, quiet)
            # No IPv6 on this host: IPv4 only.
            family, host, v6only = socket.AF_INET, "0.0.0.0", False
            try:
                sock = self._socket(family, kind, 0)
            except OSError as e2:
                return self._failed(proto, port, e2, quiet)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, int(v6only))
            sock.bind((host, port))
            if kind == socket.SOCK_STREAM:
                sock.listen(socket.SOMAXCONN)
            else:
                enable_pktinfo(sock)
            sock.setblocking(False)
        except OSError as e:
            sock.close()
            return self._failed(proto, port, e, quiet)
        handler = self.tcp if proto == TCP else self.udp
        assert handler is not None
        ready = handler.listen_ready
        self.ctx.loop.register(sock.fileno(), EVENT_READ, lambda _m, now: ready(sock, target, now))
        self._listeners[(proto, port)] = (sock, target)
        self.failures.pop((proto, port), None)
        return 0

    def _failed(self, proto: str, port: int, e: OSError, quiet: bool) -> int:
        """Record a bind failure; one warning line per port (never repeated by rescans)."""
        code = e.errno or 0
        if code in (errno.EACCES, errno.EPERM):
            reason = "permission denied (needs root or CAP_NET_BIND_SERVICE)"
        elif code == errno.EADDRINUSE:
            reason = "address already in use"
        else:
            reason = e.strerror or str(e)
        key = (proto, port)
        if not quiet and key not in self.failures:
            log.warning("%s: can't bind %s port %d: %s", self._prog, proto.upper(), port, reason)
        self.failures[key] = reason
        return code

    # AUTO ----------------------------------------------------------------------
    def _on_timer(self, now: float) -> None:
        self.rescan(now)
        self._timer = self.ctx.loop.call_later(self.rescan_s, self._on_timer)

    def rescan(self, now: float) -> None:
        """AUTO: listen on newly bound ports of the other side, close vanished ones."""
        scan = self.scan_ns_ports
        if scan is None:
            return
        for proto, fwd, _ in self._specs():
            if fwd.mode != FwdMode.AUTO:
                continue
            is_tcp = proto == TCP
            want = scan(is_tcp) - fwd.excluded
            if self.own_ports is not None:
                want -= self.own_ports(is_tcp)
            have = {port for (p, port) in self._listeners if p == proto}
            for port in sorted(want - have):
                self._bind(proto, fwd, port, port)
            for port in have - want:
                self._close(proto, port)
            for key in [k for k in self.failures if k[0] == proto and k[1] not in want]:
                del self.failures[key]

    # teardown ------------------------------------------------------------------
    def _close(self, proto: str, port: int) -> None:
        entry = self._listeners.pop((proto, port), None)
        if entry is None:
            return
        sock = entry[0]
        if proto == UDP and self.udp is not None:
            self.udp.forget_listener(sock)
        self.ctx.loop.unregister(sock.fileno())
        sock.close()

    def stop(self) -> None:
        """Close every listener and stop rescanning."""
        if self._timer is not None:
            self.ctx.loop.cancel(self._timer)
            self._timer = None
        for proto, port in list(self._listeners):
            self._close(proto, port)

    def listening(self) -> dict[tuple[str, int], socket.socket]:
        """(proto, listening port) -> socket, proto being "tcp" or "udp"."""
        return {key: entry[0] for key, entry in self._listeners.items()}

    def targets(self) -> dict[tuple[str, int], int]:
        """(proto, listening port) -> port delivered to on the other side."""
        return {key: entry[1] for key, entry in self._listeners.items()}
