"""Port-forwarding listeners: SPEC, ALL, AUTO, failures, families.

Listeners bind real ports on this machine (wildcard, so IPv4 and IPv6
loopback clients can reach them); only loopback clients connect.
"""

from __future__ import annotations

import errno
import resource
import socket
from typing import Any

import pytest
from scapy.layers.inet import UDP
from scapy.layers.l2 import Ether

from passt import log
from passt.config import FwdMode, Mode, PortFwd
from passt.flows import fwd as fwd_mod
from passt.flows.fwd import Forwarder, all_ports, ephemeral_range, raise_nofile_limit
from passt.flows.udp import UdpHandler
from tests.unit.fakes import free_port, make_ctx, pump


class FakeTcp:
    """Records listen_ready calls and accepts, like a TcpHandler would."""

    def __init__(self) -> None:
        self.calls: list[tuple[int, int, tuple[Any, ...]]] = []

    def listen_ready(self, lsock: socket.socket, target_port: int, now: float) -> None:
        conn, peer = lsock.accept()
        self.calls.append((lsock.getsockname()[1], target_port, peer))
        conn.close()


def free_ports(n: int, kind: int = socket.SOCK_STREAM) -> list[int]:
    """n distinct ports free for both TCP and UDP right now."""
    out: list[int] = []
    while len(out) < n:
        p = free_port(kind)
        if p not in out:
            out.append(p)
    return out


def spec(*pairs: tuple[int, int]) -> PortFwd:
    return PortFwd(mode=FwdMode.SPEC, ports=tuple(pairs), explicit=True)


@pytest.mark.conformance("opt.tcp-ports", "ports.ipv6-also-ipv4")
def test_spec_tcp_listeners_dual_stack() -> None:
    """-t L:T binds L once, dual-stack: IPv4 and IPv6 loopback clients both reach the handler with target T."""
    l1, l2 = free_ports(2)
    ctx, _ = make_ctx(tcp_in=spec((l1, 2222), (l2, l2)))
    tcp = FakeTcp()
    f = Forwarder(ctx, tcp=tcp, udp=None, scan_ns_ports=None)
    f.start()
    try:
        socks = f.listening()
        assert set(socks) == {("tcp", l1), ("tcp", l2)}
        s = socks[("tcp", l1)]
        assert s.family == socket.AF_INET6
        assert s.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY) == 0
        assert s.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR) == 1
        assert s.getblocking() is False
        assert f.targets() == {("tcp", l1): 2222, ("tcp", l2): l2}
        c4 = socket.create_connection(("127.0.0.1", l1), timeout=2)
        c6 = socket.create_connection(("::1", l1), timeout=2)
        assert pump(ctx, lambda: len(tcp.calls) == 2)
        assert sorted((c[0], c[1]) for c in tcp.calls) == [(l1, 2222), (l1, 2222)]
        assert {c[2][0] for c in tcp.calls} == {"::ffff:127.0.0.1", "::1"}
        c4.close()
        c6.close()
    finally:
        f.stop()
    assert f.listening() == {}


def test_ipv4_only_config_binds_ipv4() -> None:
    """With IPv6 disabled listeners are plain IPv4 sockets."""
    (port,) = free_ports(1)
    ctx, _ = make_ctx(ip6=None, tcp_in=spec((port, port)))
    f = Forwarder(ctx, tcp=FakeTcp(), udp=None, scan_ns_ports=None)
    f.start()
    try:
        assert f.listening()[("tcp", port)].family == socket.AF_INET
    finally:
        f.stop()


@pytest.mark.conformance("opt.udp-ports", "ports.ipv6-also-ipv4")
def test_spec_udp_listener_maps_port() -> None:
    """-u L:T: an IPv4 datagram to the dual-stack listener L is delivered to guest port T."""
    (port,) = free_ports(1, socket.SOCK_DGRAM)
    ctx, tap = make_ctx(udp_in=spec((port, 6000)))
    udp = UdpHandler(ctx)
    f = Forwarder(ctx, tcp=None, udp=udp, scan_ns_ports=None)
    f.start()
    try:
        assert f.listening()[("udp", port)].getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY) == 0
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as c:
            c.sendto(b"d", ("127.0.0.1", port))
            assert pump(ctx, lambda: len(tap.frames) == 1)
        assert Ether(tap.frames[0])[UDP].dport == 6000
    finally:
        f.stop()


def low_port_factory(family: int, kind: int, proto: int) -> socket.socket:
    """Sockets whose bind() to a port below 1024 fails as it would for a non-root user."""

    class Unprivileged(socket.socket):
        def bind(self, address: Any) -> None:
            if address[1] < 1024:
                raise PermissionError(errno.EACCES, "Permission denied")
            super().bind(address)

    return Unprivileged(family, kind, proto)


@pytest.mark.conformance("notes.low-ports")
def test_low_port_without_permission_one_warning(capsys: pytest.CaptureFixture[str]) -> None:
    """A port below 1024 without CAP_NET_BIND_SERVICE: one clear warning line, other ports still forwarded."""
    (port,) = free_ports(1)
    ctx, _ = make_ctx(tcp_in=spec((80, 80), (port, port)))
    f = Forwarder(ctx, tcp=FakeTcp(), udp=None, scan_ns_ports=None, socket_factory=low_port_factory)
    f.start()
    try:
        lines = capsys.readouterr().err.splitlines()
        assert lines == [
            "passt: can't bind TCP port 80: permission denied (needs root or CAP_NET_BIND_SERVICE)"
        ]
        assert set(f.listening()) == {("tcp", port)}
        assert set(f.failures) == {("tcp", 80)}
    finally:
        f.stop()


def test_port_in_use_warns_and_continues(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """A port some other process listens on: one warning, the rest still bound."""
    busy, ok = free_ports(2)
    holder = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    holder.bind(("::", busy))
    holder.listen()
    ctx, _ = make_ctx(mode=Mode.PASTA, tcp_in=spec((busy, busy), (ok, ok)))
    f = Forwarder(ctx, tcp=FakeTcp(), udp=None, scan_ns_ports=None)
    monkeypatch.setattr(log, "_prog", "pasta")  # what log.setup("pasta") does
    f.start()
    try:
        assert capsys.readouterr().err.splitlines() == [
            f"pasta: can't bind TCP port {busy}: address already in use"
        ]
        assert set(f.listening()) == {("tcp", ok)}
    finally:
        f.stop()
        holder.close()


def test_all_ports_candidates() -> None:
    """ALL: every port outside the ephemeral range and the exclusions, 1 and 65535 included."""
    ports = all_ports((32768, 60999), frozenset({22, 80}))
    assert ports[0] == 1 and ports[-1] == 65535
    assert 22 not in ports and 80 not in ports
    assert 32767 in ports and 32768 not in ports and 60999 not in ports and 61000 in ports
    assert len(ports) == 65535 - (60999 - 32768 + 1) - 2
    lo, hi = ephemeral_range()
    assert 0 < lo <= hi <= 65535


def test_all_mode_skips_bound_ports_silently(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """ALL: ports already in use are skipped without a warning, the others bound; NOFILE raised to hard."""
    busy, a, b = free_ports(3)
    holder = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    holder.bind(("::", busy))
    holder.listen()
    monkeypatch.setattr(fwd_mod, "all_ports", lambda eph, exc: [a, busy, b])
    ctx, _ = make_ctx(tcp_in=PortFwd(mode=FwdMode.ALL))
    f = Forwarder(ctx, tcp=FakeTcp(), udp=None, scan_ns_ports=None)
    f.start()
    try:
        assert capsys.readouterr().err == ""
        assert set(f.listening()) == {("tcp", a), ("tcp", b)}
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        assert soft == hard or hard == resource.RLIM_INFINITY
        assert raise_nofile_limit() == soft
    finally:
        f.stop()
        holder.close()


def test_all_mode_low_ports_summarised(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """ALL as non-root: the refused low ports are summed up in one line, not one per port."""
    (ok,) = free_ports(1)
    monkeypatch.setattr(fwd_mod, "all_ports", lambda eph, exc: [21, 22, 23, ok])
    ctx, _ = make_ctx(tcp_in=PortFwd(mode=FwdMode.ALL))
    f = Forwarder(ctx, tcp=FakeTcp(), udp=None, scan_ns_ports=None, socket_factory=low_port_factory)
    f.start()
    try:
        assert capsys.readouterr().err.splitlines() == [
            "passt: can't bind 3 TCP ports: permission denied (needs root or CAP_NET_BIND_SERVICE)"
        ]
        assert set(f.listening()) == {("tcp", ok)}
    finally:
        f.stop()


def test_auto_rescan_adds_and_removes() -> None:
    """AUTO: listeners follow the namespace's bound ports; excluded and our own ports are never forwarded."""
    p1, p2, p3, own, excl = free_ports(5)
    bound = {True: {p1, own, excl}, False: {p2}}
    ctx, tap = make_ctx(
        mode=Mode.PASTA,
        tcp_in=PortFwd(mode=FwdMode.AUTO, excluded=frozenset({excl})),
        udp_in=PortFwd(mode=FwdMode.AUTO),
    )
    udp = UdpHandler(ctx)
    f = Forwarder(ctx, tcp=FakeTcp(), udp=udp, scan_ns_ports=lambda tcp: set(bound[tcp]),
                  own_ports=lambda tcp: {own} if tcp else set())  # fmt: skip
    f.start()
    try:
        # UDP follows TCP: p1 (TCP) is forwarded for UDP too
        assert set(f.listening()) == {("tcp", p1), ("udp", p1), ("udp", p2)}
        # the namespace binds p3 (TCP) and drops p1 and its UDP port
        bound[True] = {p3, own}
        bound[False] = set()
        f.rescan(ctx.loop.now)
        assert set(f.listening()) == {("tcp", p3), ("udp", p3)}
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", p1), timeout=1).close()
        assert f.targets()[("tcp", p3)] == p3
    finally:
        f.stop()


@pytest.mark.conformance("ports.udp-follows-tcp")
def test_auto_udp_takes_the_tcp_ports_found() -> None:
    """AUTO: a port the namespace listens on for TCP only is forwarded for UDP too, and goes with it."""
    tcp_only, udp_only, excl = free_ports(3)
    bound = {True: {tcp_only, excl}, False: {udp_only}}
    ctx, _ = make_ctx(
        mode=Mode.PASTA,
        tcp_in=PortFwd(mode=FwdMode.AUTO),
        udp_in=PortFwd(mode=FwdMode.AUTO, excluded=frozenset({excl})),
    )
    f = Forwarder(ctx, tcp=FakeTcp(), udp=UdpHandler(ctx), scan_ns_ports=lambda tcp: set(bound[tcp]))
    f.start()
    try:
        assert ("udp", tcp_only) in f.listening(), "[ports.udp-follows-tcp] TCP port found, no UDP listener"
        assert set(f.listening()) == {("tcp", tcp_only), ("tcp", excl), ("udp", tcp_only), ("udp", udp_only)}
        assert f.targets()[("udp", tcp_only)] == tcp_only
        bound[True] = set()
        f.rescan(ctx.loop.now)
        assert set(f.listening()) == {("udp", udp_only)}, "[ports.udp-follows-tcp] closed with the TCP port"
    finally:
        f.stop()


@pytest.mark.conformance("ports.udp-follows-tcp")
def test_auto_udp_only_forwarder_follows_its_tcp_twin() -> None:
    """pasta's -U forwarder serves UDP only; with -T auto its rescan still takes the TCP ports found."""
    port, own = free_ports(2)
    ctx, _ = make_ctx(mode=Mode.PASTA, tcp_in=PortFwd(mode=FwdMode.NONE), udp_in=PortFwd(mode=FwdMode.NONE))
    f = Forwarder(ctx, tcp=None, udp=UdpHandler(ctx), scan_ns_ports=lambda tcp: {port, own} if tcp else set(),
                  tcp_fwd=PortFwd(mode=FwdMode.AUTO), udp_fwd=PortFwd(mode=FwdMode.AUTO),
                  own_ports=lambda tcp: {own} if tcp else set())  # fmt: skip
    f.start()
    try:
        assert set(f.listening()) == {("udp", port)}, "[ports.udp-follows-tcp] -U auto after -T auto"
    finally:
        f.stop()


def test_auto_rescan_runs_on_timer() -> None:
    """AUTO: the loop's periodic timer rescans without being asked."""
    (p1,) = free_ports(1)
    bound: set[int] = set()
    calls: list[bool] = []

    def scan(tcp: bool) -> set[int]:
        calls.append(tcp)
        return set(bound)

    ctx, _ = make_ctx(mode=Mode.PASTA, tcp_in=PortFwd(mode=FwdMode.AUTO))
    f = Forwarder(ctx, tcp=FakeTcp(), udp=None, scan_ns_ports=scan, rescan_s=0.05)
    f.start()
    try:
        assert f.listening() == {}
        bound.add(p1)
        assert pump(ctx, lambda: ("tcp", p1) in f.listening(), timeout=2.0)
        assert calls and all(calls)
    finally:
        f.stop()
    n = len(calls)
    ctx.loop.run_once(0.1)
    assert len(calls) == n  # stop() cancelled the timer


def test_auto_in_use_port_warned_once(capsys: pytest.CaptureFixture[str]) -> None:
    """AUTO: a namespace port we cannot bind on the host is warned about once, not every rescan."""
    busy, ok = free_ports(2)
    holder = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    holder.bind(("::", busy))
    holder.listen()
    ctx, _ = make_ctx(mode=Mode.PASTA, tcp_in=PortFwd(mode=FwdMode.AUTO))
    f = Forwarder(ctx, tcp=FakeTcp(), udp=None, scan_ns_ports=lambda tcp: {busy, ok})
    f.start()
    for _ in range(3):
        f.rescan(ctx.loop.now)
    try:
        assert len(capsys.readouterr().err.splitlines()) == 1
        assert set(f.listening()) == {("tcp", ok)}
    finally:
        f.stop()
        holder.close()
