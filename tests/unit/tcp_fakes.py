"""Fakes for the TCP flow tests (no tests here): a recording tap and a scripted guest.

`FakeTap` records frames as the tap back-ends would receive them (copied at
`send` time, since the handler reuses its frame ring after the flush).
`Guest` is a minimal TCP endpoint on the guest side of one connection: it
builds its segments with scapy, feeds them to `TcpHandler.from_tap`, and
dissects the handler's frames with scapy (the independent oracle), checking
checksums (full, or the partial pseudo-header sum on offloaded frames).
Real servers run in threads on 127.0.0.1 / ::1.
"""

from __future__ import annotations

import gc
import hashlib
import os
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv6Address
from typing import Any

from scapy.compat import raw
from scapy.layers.inet import IP, TCP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import Ether

from passt.context import Context
from passt.flows.tcp import TcpHandler
from passt.loop import EventLoop
from passt.tap.base import GSO_NONE, GSO_TCPV4, GSO_TCPV6, Buffer
from tests.unit.conftest import GUEST_MAC, assert_checksums, make_config, make_ip4, make_ip6

G4 = "192.0.2.118"
G6 = "2001:db8:1::118"
GW4 = "192.0.2.1"
GW6 = "fe80::1"
LO4 = "127.0.0.1"
LO6 = "::1"


@dataclass
class Sent:
    """One frame the handler queued for the guest."""

    frame: bytes
    #: send_gso keyword arguments; None for a plain send().
    gso: dict[str, int] | None = None


class FakeTap:
    """A TapBackend recording what would go to the guest."""

    closed = False

    def __init__(self, offload: bool = False) -> None:
        self.offload = offload
        self.frames: list[Sent] = []
        self.flushes = 0

    def fileno(self) -> int:
        return -1

    def read_frames(self) -> list[memoryview]:
        return []

    def send(self, frame: Buffer) -> None:
        self.frames.append(Sent(bytes(frame)))

    def send_gso(self, frame: Buffer, **kw: int) -> None:
        assert self.offload, "send_gso without offload"
        self.frames.append(Sent(bytes(frame), dict(kw)))

    def flush(self) -> None:
        self.flushes += 1

    def pending(self) -> bool:
        return False

    def close(self) -> None:
        pass


def make_ctx(*, offload: bool = False, **overrides: Any) -> tuple[Context, FakeTap]:
    values: dict[str, Any] = {
        "out_ifname": "lo",
        "ip4": make_ip4(addr=IPv4Address(G4), gateway=IPv4Address(GW4)),
        "ip6": make_ip6(addr=IPv6Address(G6), gateway=IPv6Address(GW6)),
    }
    values.update(overrides)
    ctx = Context(make_config(**values), EventLoop())
    tap = FakeTap(offload)
    ctx.tap = tap
    ctx.guest.learn_mac(GUEST_MAC)
    return ctx, tap


def make_handler(*, offload: bool = False, **kw: Any) -> tuple[Context, FakeTap, TcpHandler]:
    conf_kw = {k: v for k, v in kw.items() if k in ("tap_mtu", "tcp", "ip4", "ip6")}
    h_kw = {k: v for k, v in kw.items() if k not in conf_kw}
    ctx, tap = make_ctx(offload=offload, **conf_kw)
    h_kw.setdefault("loopback_dst", True)
    handler = TcpHandler(ctx, **h_kw)
    return ctx, tap, handler


def nfds() -> int:
    """Open descriptors of this process (after collecting garbage from earlier tests)."""
    gc.collect()
    return len(os.listdir("/proc/self/fd"))


def packed(af: int, addr: str) -> bytes:
    return socket.inet_pton(socket.AF_INET if af == 4 else socket.AF_INET6, addr)


def fold(total: int) -> int:
    while total > 0xFFFF:
        total = (total & 0xFFFF) + (total >> 16)
    return total


def pseudo_sum(af: int, src: bytes, dst: bytes, length: int) -> int:
    """Folded (not complemented) TCP pseudo-header sum, computed the textbook way."""
    words = src + dst
    total = sum(int.from_bytes(words[i : i + 2], "big") for i in range(0, len(words), 2))
    return fold(total + 6 + length)


@dataclass
class Seg:
    """A dissected frame from the handler."""

    af: int
    src: str
    dst: str
    sport: int
    dport: int
    seq: int
    ack: int
    flags: str
    window: int
    options: dict[str, Any]
    payload: bytes
    ttl: int
    df: bool
    eth_src: str
    eth_dst: str
    gso: dict[str, int] | None


def dissect(sent: Sent, offload: bool) -> Seg:
    """Dissect with scapy and check the checksums a real guest would check."""
    pkt = Ether(sent.frame)
    if IP in pkt:
        ip: Any = pkt[IP]
        af, ttl, df = 4, ip.ttl, bool(ip.flags.DF)
        assert ip.len == len(sent.frame) - 14
    else:
        ip = pkt[IPv6]
        af, ttl, df = 6, ip.hlim, True
        assert ip.plen == len(sent.frame) - 54
    tcp: Any = pkt[TCP]
    payload = bytes(tcp.payload)
    if sent.gso is None:
        assert_checksums(sent.frame)
    else:
        # Offloaded: TCP checksum field = folded pseudo-header sum, not complemented.
        l4_off = 14 + (20 if af == 4 else 40)
        tcp_len = len(sent.frame) - l4_off
        expect = pseudo_sum(af, packed(af, ip.src), packed(af, ip.dst), tcp_len)
        assert tcp.chksum == expect
        assert sent.gso["csum_start"] == l4_off
        assert sent.gso["csum_offset"] == 16
        assert sent.gso["hdr_len"] == l4_off + tcp.dataofs * 4
        if af == 4:
            ip.chksum = None
            assert Ether(raw(pkt))[IP].chksum == Ether(sent.frame)[IP].chksum
    return Seg(
        af=af,
        src=ip.src,
        dst=ip.dst,
        sport=tcp.sport,
        dport=tcp.dport,
        seq=tcp.seq,
        ack=tcp.ack,
        flags=str(tcp.flags),
        window=tcp.window,
        options=dict(tcp.options),
        payload=payload,
        ttl=ttl,
        df=df,
        eth_src=pkt.src,
        eth_dst=pkt.dst,
        gso=sent.gso,
    )


def pump(ctx: Context, cond: Callable[[], bool], timeout: float = 3.0, step: Callable[[], object] | None = None) -> bool:
    """Run the loop (and `step` after each turn) until `cond()` or `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        if cond():
            return True
        if time.monotonic() > deadline:
            return False
        ctx.loop.run_once(0.005)
        if step is not None:
            step()


def build_l4(af: int, src: str, dst: str, **tcp_kw: Any) -> bytes:
    payload = tcp_kw.pop("payload", b"")
    ip: Any = IP(src=src, dst=dst) if af == 4 else IPv6(src=src, dst=dst)
    data = raw(ip / TCP(**tcp_kw) / payload) if payload else raw(ip / TCP(**tcp_kw))
    return data[20 if af == 4 else 40 :]


@dataclass
class Guest:
    """The guest side of one connection, scripted by the test."""

    ctx: Context
    tap: FakeTap
    handler: TcpHandler
    af: int
    gaddr: str
    gport: int
    raddr: str
    rport: int
    mss: int = 65480
    wscale: int = 7
    #: Window we announce, in bytes (scaled by `wscale` on the wire).
    rcv_wnd: int = 4 << 20
    isn: int = 1000
    snd_nxt: int = 0
    snd_una: int = 0
    rcv_nxt: int = 0
    peer_isn: int = 0
    peer_wnd: int = 0
    peer_ws: int = 0
    peer_mss: int = 0
    got_fin: bool = False
    got_rst: bool = False
    received: bytearray = field(default_factory=bytearray)
    digest: Any = field(default_factory=hashlib.sha256)
    nreceived: int = 0
    keep: bool = False
    segs: list[Seg] = field(default_factory=list)

    # sending ----------------------------------------------------------------
    def send(
        self,
        flags: str,
        *,
        seq: int | None = None,
        ack: int | None = None,
        payload: bytes = b"",
        window: int | None = None,
        options: list[tuple[str, Any]] | None = None,
    ) -> None:
        if window is None:
            shift = self.wscale if self.wscale >= 0 else 0
            window = min(self.rcv_wnd >> shift, 65535)
        l4 = build_l4(
            self.af,
            self.gaddr,
            self.raddr,
            sport=self.gport,
            dport=self.rport,
            seq=(self.snd_nxt if seq is None else seq) & 0xFFFFFFFF,
            ack=(self.rcv_nxt if ack is None else ack) & 0xFFFFFFFF,
            flags=flags,
            window=window,
            options=options or [],
            payload=payload,
        )
        self.handler.from_tap(
            self.af, packed(self.af, self.gaddr), packed(self.af, self.raddr), memoryview(l4), time.monotonic()
        )

    def syn(self) -> None:
        opts: list[tuple[str, Any]] = [("MSS", self.mss)]
        if self.wscale >= 0:
            opts.append(("WScale", self.wscale))
        self.send("S", seq=self.isn, ack=0, window=65535, options=opts)
        self.snd_nxt = self.snd_una = (self.isn + 1) & 0xFFFFFFFF

    def ack(self) -> None:
        self.send("A")

    def send_data(self, data: bytes, flags: str = "PA") -> None:
        self.send(flags, payload=data)
        self.snd_nxt = (self.snd_nxt + len(data) + (1 if "F" in flags else 0)) & 0xFFFFFFFF

    # receiving ----------------------------------------------------------------
    def take(self) -> list[Seg]:
        """Frames of this connection queued since the last call, dissected."""
        mine: list[Seg] = []
        rest: list[Sent] = []
        for sent in self.tap.frames:
            seg = dissect(sent, self.tap.offload)
            if seg.dport == self.gport and seg.sport == self.rport and seg.dst == self.gaddr:
                mine.append(seg)
            else:
                rest.append(sent)
        self.tap.frames[:] = rest
        self.segs.extend(mine)
        return mine

    def on_synack(self, seg: Seg) -> None:
        assert "S" in seg.flags and "A" in seg.flags, seg.flags
        self.peer_isn = seg.seq
        self.rcv_nxt = (seg.seq + 1) & 0xFFFFFFFF
        self.peer_mss = seg.options.get("MSS", 536)
        self.peer_ws = seg.options.get("WScale", 0) if self.wscale >= 0 else 0
        self.peer_wnd = seg.window
        self.snd_una = seg.ack

    def absorb(self, segs: list[Seg], *, ack: bool = True) -> int:
        """Take in-order data and FINs, learn ACKs and windows; ACK once. Returns new bytes."""
        new = 0
        for seg in segs:
            if "R" in seg.flags:
                self.got_rst = True
                continue
            if "A" in seg.flags:
                if ((seg.ack - self.snd_una) & 0xFFFFFFFF) < 1 << 31:
                    self.snd_una = seg.ack
                self.peer_wnd = seg.window << self.peer_ws
            if seg.payload:
                if seg.gso is not None and len(seg.payload) > self.peer_mss_for_gso():
                    assert seg.gso["gso_size"] == self.peer_mss_for_gso()
                    assert seg.gso["gso_type"] == (GSO_TCPV4 if self.af == 4 else GSO_TCPV6)
                elif seg.gso is not None:
                    assert seg.gso["gso_type"] == GSO_NONE
                if seg.seq == self.rcv_nxt:
                    self.digest.update(seg.payload)
                    if self.keep:
                        self.received += seg.payload
                    self.nreceived += len(seg.payload)
                    new += len(seg.payload)
                    self.rcv_nxt = (self.rcv_nxt + len(seg.payload)) & 0xFFFFFFFF
            if "F" in seg.flags and seg.seq == self.rcv_nxt and not self.got_fin:
                self.got_fin = True
                self.rcv_nxt = (self.rcv_nxt + 1) & 0xFFFFFFFF
        if ack and (new or any("F" in s.flags for s in segs)):
            self.ack()
        return new

    def peer_mss_for_gso(self) -> int:
        return min(self.mss, self.peer_mss)

    def usable(self) -> int:
        """Bytes we may send now within the peer's window."""
        in_flight = (self.snd_nxt - self.snd_una) & 0xFFFFFFFF
        return self.peer_wnd - in_flight


def gather(g: Guest, acc: list[Seg]) -> bool:
    """Append the guest's new frames to `acc`; always True (for use inside conditions)."""
    acc.extend(g.take())
    return True


def open_conn(
    ctx: Context, tap: FakeTap, handler: TcpHandler, af: int, port: int, **guest_kw: Any
) -> Guest:
    """Guest SYN to the loopback server on `port`, SYN-ACK, ACK: an established connection."""
    g = Guest(
        ctx,
        tap,
        handler,
        af,
        G4 if af == 4 else G6,
        guest_kw.pop("gport", 40000 + port % 20000),
        LO4 if af == 4 else LO6,
        port,
        **guest_kw,
    )
    g.syn()
    segs: list[Seg] = []
    assert pump(ctx, lambda: gather(g, segs) and bool(segs))
    g.on_synack(segs[0])
    g.ack()
    return g


class Server:
    """A loopback TCP server in a thread; `script(conn)` runs for each accepted connection."""

    def __init__(self, af: int, script: Callable[[socket.socket], object], *, rcvbuf: int = 0, count: int = 1) -> None:
        fam = socket.AF_INET if af == 4 else socket.AF_INET6
        self.sock = socket.socket(fam, socket.SOCK_STREAM)
        if rcvbuf:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.bind((LO4 if af == 4 else LO6, 0))
        self.sock.listen(128)
        self.sock.settimeout(30)
        self.port: int = self.sock.getsockname()[1]
        self.errors: list[BaseException] = []
        self.results: list[Any] = []
        self.conns: list[socket.socket] = []
        self._script = script
        self._count = count
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            for _ in range(self._count):
                conn, _ = self.sock.accept()
                conn.settimeout(30)
                self.conns.append(conn)
                self.results.append(self._script(conn))
        except BaseException as e:  # reported by join()
            self.errors.append(e)

    def join(self, timeout: float = 30) -> None:
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "server thread stuck"
        if self.errors:
            raise self.errors[0]

    def close(self) -> None:
        for c in self.conns:
            c.close()
        self.sock.close()


class Sender:
    """Guest-side bulk sender: fills the peer's window, goes back to snd_una on a stall."""

    def __init__(self, g: Guest, data: bytes, *, chunk: int | None = None, stall_s: float = 0.3) -> None:
        self.g = g
        self.data = data
        self.base = g.snd_nxt
        self.chunk = chunk or g.peer_mss
        self.stall_s = stall_s
        self.last_una = -1
        self.last_progress = time.monotonic()
        self.rewinds = 0

    def offset(self, seq: int) -> int:
        return (seq - self.base) & 0xFFFFFFFF

    @property
    def done(self) -> bool:
        return self.offset(self.g.snd_una) >= len(self.data)

    def step(self) -> None:
        g = self.g
        g.absorb(g.take())
        now = time.monotonic()
        una = self.offset(g.snd_una)
        if una != self.last_una:
            self.last_una = una
            self.last_progress = now
        elif now - self.last_progress > self.stall_s and self.offset(g.snd_nxt) > una:
            g.snd_nxt = g.snd_una  # go-back-N, as a guest would after its RTO
            self.last_progress = now
            self.rewinds += 1
        while True:
            off = self.offset(g.snd_nxt)
            room = g.usable()
            if off >= len(self.data) or room <= 0:
                return
            n = min(self.chunk, room, len(self.data) - off)
            g.send_data(self.data[off : off + n])
