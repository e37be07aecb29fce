"""UDP splice (pasta's loopback bypass) on real loopback sockets in this namespace.

    client --datagram--> our listener L (PKTINFO on, as fwd.py sets it)
        --> UdpSpliceHandler --> flow socket (made here by socket.socket) --> echo server S
    S --reply--> flow socket --> L --> client
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from typing import Any

import pytest

from passt.config import Mode
from passt.context import Context
from passt.flows import udp_splice
from passt.flows.sockets import IP_PKTINFO, enable_pktinfo
from passt.flows.udp_splice import UDP_BATCH, UdpSpliceHandler, reply_cmsg
from passt.loop import EVENT_READ
from tests.unit.test_flows_udp import make_ctx, pump

LO: dict[int, str] = {socket.AF_INET: "127.0.0.1", socket.AF_INET6: "::1"}


class FakeFallback:
    """Stands for UdpHandler: records what it is given, reads one batch like it would."""

    def __init__(self) -> None:
        self.got: list[bytes] = []
        self.forgotten: list[socket.socket] = []

    def listen_ready(self, sock: socket.socket, target_port: int, now: float) -> None:
        while True:
            try:
                self.got.append(sock.recv(65535))
            except BlockingIOError:
                return

    def forget_listener(self, sock: socket.socket) -> None:
        self.forgotten.append(sock)


class UBench:
    def __init__(self, family: int = socket.AF_INET, *, dual: bool = False, **kw: Any) -> None:
        ctx, _ = make_ctx(mode=Mode.PASTA)
        self.ctx: Context = ctx
        self.handler = UdpSpliceHandler(ctx, target_socket=socket.socket, **kw)
        self.family = family
        self.server = socket.socket(family, socket.SOCK_DGRAM)
        self.server.bind((LO[family], 0))
        self.server.setblocking(False)
        self.target: int = self.server.getsockname()[1]
        if dual:  # like fwd.py with IPv6 enabled: one dual-stack wildcard listener
            self.lsock = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
            self.lsock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            self.lsock.bind(("::", 0))
        else:
            self.lsock = socket.socket(family, socket.SOCK_DGRAM)
            self.lsock.bind((LO[family], 0))
        enable_pktinfo(self.lsock)
        self.lsock.setblocking(False)
        self.port: int = self.lsock.getsockname()[1]
        h, lsock, target = self.handler, self.lsock, self.target
        ctx.loop.register(lsock.fileno(), EVENT_READ, lambda _m, now: h.listen_ready(lsock, target, now))

    def client(self, bind: str | None = None) -> socket.socket:
        c = socket.socket(self.family, socket.SOCK_DGRAM)
        if bind is not None:
            c.bind((bind, 0))
        c.setblocking(False)
        return c

    def recv(self, sock: socket.socket) -> tuple[bytes, Any]:
        out: list[tuple[bytes, Any]] = []

        def got() -> bool:
            if not out:
                try:
                    out.append(sock.recvfrom(65535))
                except BlockingIOError:
                    return False
            return True

        assert pump(self.ctx, got)
        return out[0]

    def close(self) -> None:
        self.handler.close()
        self.ctx.loop.unregister(self.lsock.fileno())
        self.lsock.close()
        self.server.close()
        self.ctx.loop.close()


@pytest.fixture
def ub() -> Iterator[UBench]:
    b = UBench()
    yield b
    b.close()


@pytest.mark.parametrize("family", [socket.AF_INET, socket.AF_INET6], ids=["ipv4", "ipv6"])
@pytest.mark.conformance("notes.pasta.udp-bypass")
def test_echo_through_splice(family: int) -> None:
    """A loopback datagram reaches the target port; the reply comes back from our listener's address."""
    b = UBench(family)
    try:
        c = b.client()
        c.sendto(b"ping" * 1000, (LO[family], b.port))
        data, src = b.recv(b.server)
        assert data == b"ping" * 1000
        assert src[0] == LO[family]
        flow_port = src[1]
        b.server.sendto(b"pong", src)
        reply, frm = b.recv(c)
        assert reply == b"pong"
        assert frm[:2] == (LO[family], b.port)
        # the same peer keeps its flow (same source port at the server)
        c.sendto(b"again", (LO[family], b.port))
        data, src = b.recv(b.server)
        assert (data, src[1]) == (b"again", flow_port)
        assert b.handler.flow_count() == 1
        c.close()
    finally:
        b.close()


def test_dual_stack_listener_v4_peer_replies_from_address_sent_to() -> None:
    """On a dual-stack listener a client of 127.0.0.2 is served over IPv4 and answered from 127.0.0.2."""
    b = UBench(socket.AF_INET, dual=True)
    try:
        c = b.client()
        c.connect(("127.0.0.2", b.port))
        c.send(b"hello")
        data, src = b.recv(b.server)
        assert data == b"hello" and src[0] == "127.0.0.1"
        b.server.sendto(b"world", src)
        reply, frm = b.recv(c)  # a connected socket only takes datagrams from 127.0.0.2:port
        assert reply == b"world" and frm == ("127.0.0.2", b.port)
        c.close()
    finally:
        b.close()


def test_one_flow_per_peer(ub: UBench) -> None:
    """Two peers get two flows: the target sees two source ports and answers each one separately."""
    c1, c2 = ub.client(), ub.client()
    c1.sendto(b"one", ("127.0.0.1", ub.port))
    d1, s1 = ub.recv(ub.server)
    c2.sendto(b"two", ("127.0.0.1", ub.port))
    d2, s2 = ub.recv(ub.server)
    assert (d1, d2) == (b"one", b"two") and s1 != s2
    ub.server.sendto(b"to-two", s2)
    ub.server.sendto(b"to-one", s1)
    assert ub.recv(c2)[0] == b"to-two"
    assert ub.recv(c1)[0] == b"to-one"
    assert ub.handler.flow_count() == 2
    c1.close()
    c2.close()


def test_batch_of_datagrams_in_order(ub: UBench) -> None:
    """More than one batch of datagrams queued at once all arrive, in order."""
    c = ub.client()
    n = UDP_BATCH * 3
    for i in range(n):
        c.sendto(b"%d" % i, ("127.0.0.1", ub.port))
    got = [ub.recv(ub.server)[0] for _ in range(n)]
    assert got == [b"%d" % i for i in range(n)]
    c.close()


def test_idle_flow_expires_and_closes_its_socket(ub: UBench) -> None:
    """A flow idle past the timeout is closed; a new datagram opens a new one."""
    c = ub.client()
    c.sendto(b"x", ("127.0.0.1", ub.port))
    _, src = ub.recv(ub.server)
    (flow,) = ub.handler.flows.values()
    assert ub.handler.expire(flow.last + ub.handler.timeout_s - 1) == 0
    assert ub.handler.expire(flow.last + ub.handler.timeout_s + 1) == 1
    assert flow.sock.fileno() == -1
    assert not ub.ctx.loop.is_registered(flow.fd)
    c.sendto(b"y", ("127.0.0.1", ub.port))
    data, src2 = ub.recv(ub.server)
    assert data == b"y" and src2 != src
    c.close()


def test_table_bound() -> None:
    """Past capacity, datagrams from new peers are dropped and counted."""
    b = UBench(capacity=1)
    try:
        c1, c2 = b.client(), b.client()
        c1.sendto(b"a", ("127.0.0.1", b.port))
        assert b.recv(b.server)[0] == b"a"
        c2.sendto(b"b", ("127.0.0.1", b.port))
        assert pump(b.ctx, lambda: b.ctx.counters.drops.get("udp_splice_table_full", 0) == 1)
        assert b.handler.flow_count() == 1
        c1.close()
        c2.close()
    finally:
        b.close()


def test_non_loopback_peer_goes_to_fallback(monkeypatch: pytest.MonkeyPatch) -> None:
    """With a fallback, datagrams whose peer is not loopback are left to it (the tap path)."""
    fb = FakeFallback()
    b = UBench(fallback=fb)
    try:
        monkeypatch.setattr(udp_splice, "is_loopback_peer", lambda host: False)
        c = b.client()
        c.sendto(b"foreign", ("127.0.0.1", b.port))
        assert pump(b.ctx, lambda: fb.got == [b"foreign"])
        assert b.handler.flow_count() == 0
        monkeypatch.undo()
        c.sendto(b"local", ("127.0.0.1", b.port))
        assert b.recv(b.server)[0] == b"local"
        assert fb.got == [b"foreign"]
        b.handler.forget_listener(b.lsock)
        assert fb.forgotten == [b.lsock] and b.handler.flow_count() == 0
        c.close()
    finally:
        b.close()


def test_refused_target_counted(ub: UBench) -> None:
    """A target port with nobody bound: the ICMP error is counted, nothing breaks."""
    ub.server.close()
    c = ub.client()
    for _ in range(2):
        c.sendto(b"x", ("127.0.0.1", ub.port))
        pump(ub.ctx, lambda: False, 0.1)
    assert ub.ctx.counters.drops.get("udp_splice_refused", 0) >= 1
    c.close()


def test_reply_cmsg_from_pktinfo() -> None:
    """Replies carry PKTINFO with the destination the peer used (IPv4 ipi_addr, IPv6 address)."""
    v4 = (socket.IPPROTO_IP, IP_PKTINFO,
          (1).to_bytes(4, "little") + bytes([127, 0, 0, 1]) + bytes([127, 0, 0, 2]))  # fmt: skip
    ((level, kind, data),) = reply_cmsg([v4])
    assert (level, kind) == (socket.IPPROTO_IP, IP_PKTINFO)
    assert data == bytes(4) + bytes([127, 0, 0, 2]) + bytes(4)
    v6 = (socket.IPPROTO_IPV6, socket.IPV6_PKTINFO, socket.inet_pton(socket.AF_INET6, "::1") + bytes(4))
    ((level, kind, data),) = reply_cmsg([v6])
    assert data == socket.inet_pton(socket.AF_INET6, "::1") + bytes(4)
    assert reply_cmsg([]) == []
