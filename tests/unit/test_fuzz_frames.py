"""Hostile guest: random and mutated frames through the whole frame handler.

A complete `Runtime` (services, dispatcher, TCP/UDP/ICMP handlers, the event
loop) is fed frames built by scapy and then mutated by a fast, seeded, pure
Python mutator (bit flips, truncation, extension, splicing two seeds, length
field and boundary values).  The invariant is h11's: garbage is only ever
dropped.  Per frame:

* nothing escapes the handler (any exception fails the test);
* the frame is accounted for: it produced a reply, opened or closed a flow,
  or moved a drop or event counter, or else it is one of the legitimate
  silent cases enumerated in `SILENT_OK` (a segment, datagram or echo request
  that went to a flow that already existed);
* every frame sent to the guest fits the link (at most 65535 + 14 bytes) and,
  for a sample, every checksum is what scapy computes for the same bytes.

Afterwards the clock is pushed forward past every timeout and the guest link
is reset: every flow table must be empty and the process must hold exactly the
descriptors it held before the fuzzing started.

Network safety: the handlers open real host sockets and connect them to the
fuzzed destinations.  The fuzz body therefore runs in a forked child that
first moves into a private network namespace (`unshare(CLONE_NEWNET)`) with
only `lo`, carrying the test's own server addresses (198.51.100.1,
2001:db8:2::1): every other destination has no route and fails at once with
ENETUNREACH.  Nothing here ever runs in the machine's own namespace.  The
child reports its results as JSON over a pipe.

Counts: PASST_FUZZ_COUNT frames per mode (default 20,000; `nox -s fuzz` runs
1,000,000).  The seed corpus and the mutator are also used by
tests/integration/test_hostile.py.
"""

from __future__ import annotations

import gc
import json
import os
import random
import select
import signal
import socket
import struct
import subprocess
import sys
import time
import traceback
from collections import deque
from collections.abc import Callable, Iterator
from typing import Any, Final

import pytest

from passt.config import Mode
from passt.tap.base import Buffer
from tests.unit.conftest import (
    GUEST4,
    GUEST6,
    GUEST_MAC,
    GW4,
    OUR_MAC,
    assert_checksums,
    make_config,
)
from tests.unit.fakes import (
    ECHO_PORT,
    MAX_FRAME,
    SINK_PORT,
    Addrs,
    Mutator,
    build_seeds,
)

#: Frames per mode; `nox -s fuzz` sets 1,000,000.
FUZZ_COUNT: Final = int(os.environ.get("PASST_FUZZ_COUNT", "20000"))
#: The test's own servers, on `lo` of the private namespace only.
SRV4: Final = "198.51.100.1"
SRV6: Final = "2001:db8:2::1"
#: Destinations with no route in the private namespace (ENETUNREACH at once).
UNROUTED4: Final = "203.0.113.9"
UNROUTED6: Final = "2001:db8:3::9"
_U16: Final = struct.Struct("!H")
#: Frames between loop turns, between clock jumps.
TURN_EVERY: Final = 64
JUMP_EVERY: Final = 4096

#: Legitimate silent outcomes: the frame reached an existing flow of that
#: handler (an in-window segment, an ACK that moves nothing, a datagram or
#: echo request sent on an open socket).  Nothing else may be silent.
SILENT_OK: Final = ("tcp existing flow", "udp existing flow", "icmp existing flow")


# --------------------------------------------------------------------------- seeds (build_seeds, Mutator: fakes.py)



#: Drop reasons every run must show, whatever its count: `class_frames` provokes each once.
REQUIRED_DROPS: Final = ("eth_short", "ipv4_header", "ipv6_header", "tcp_unknown_flow")


def class_frames(a: Addrs) -> list[bytes]:
    """One frame per REQUIRED_DROPS reason, fed before the random ones (a small count still checks them)."""
    from scapy.compat import raw
    from scapy.layers.inet import IP, TCP
    from scapy.layers.inet6 import IPv6
    from scapy.layers.l2 import Ether

    e = Ether(src=a.guest_mac, dst=a.our_mac)
    bad4 = bytearray(raw(e / IP(src=a.guest4, dst=a.srv4) / TCP(flags="S")))
    bad4[14] = 0x55  # version 5
    bad6 = bytearray(raw(e / IPv6(src=a.guest6, dst=a.srv6) / TCP(flags="S")))
    bad6[14] = 0x40  # version 4 in an IPv6 frame
    stray_ack = raw(e / IP(src=a.guest4, dst=a.srv4) / TCP(sport=40000, dport=9, flags="A"))
    return [bytes(13), bytes(bad4), bytes(bad6), stray_ack]


def unit_addrs() -> Addrs:
    """Addresses of the unit test's private namespace and config."""
    return Addrs(guest_mac=GUEST_MAC.hex(":"), our_mac=OUR_MAC.hex(":"), guest4=GUEST4, gw4=GW4,
                 srv4=SRV4, unrouted4=UNROUTED4, guest6=GUEST6, gw6_ll="fe80::1", srv6=SRV6,
                 unrouted6=UNROUTED6)  # fmt: skip


# --------------------------------------------------------------------------- the harness


class CaptureTap:
    """A TapBackend that counts and keeps a window of what goes to the guest."""

    closed = False

    def __init__(self, *, offload: bool) -> None:
        self.offload = offload
        #: A descriptor for the loop to watch that never becomes readable.
        self._r, self._w = os.pipe()
        self.count = 0
        self.recent: deque[bytes] = deque(maxlen=512)
        self.gso: deque[bytes] = deque(maxlen=64)
        self.too_big = 0
        self.max_len = 0

    def fileno(self) -> int:
        return self._r

    def read_frames(self) -> list[memoryview]:
        return []

    def _note(self, frame: Buffer) -> None:
        n = len(frame)
        self.count += 1
        if n > self.max_len:
            self.max_len = n
        if n > MAX_FRAME:
            self.too_big += 1

    def send(self, frame: Buffer) -> None:
        self._note(frame)
        self.recent.append(bytes(frame))

    def send_gso(self, frame: Buffer, **_kw: int) -> None:
        if not self.offload:
            raise AssertionError("send_gso on a tap without offload")
        self._note(frame)
        self.gso.append(bytes(frame))

    def flush(self) -> None:
        pass

    def pending(self) -> bool:
        return False

    def close(self) -> None:
        if self._r >= 0:
            os.close(self._r)
            os.close(self._w)
            self._r = self._w = -1


class Probe:
    """Stands in for an L4 handler in the context: notes whether a frame hit an existing flow."""

    def __init__(self, inner: Any, kind: str) -> None:
        self.inner = inner
        self.kind = kind
        self.existing = False

    def from_tap(self, af: int, src: bytes, dst: bytes, l4: memoryview, now: float) -> None:
        flows = self.inner.flows
        if self.kind == "icmp":
            hit = len(l4) >= 6 and (af, _U16.unpack_from(l4, 4)[0], bytes(dst)) in flows
        else:
            hit = len(l4) >= 4 and (af, bytes(src), *_ports(l4, bytes(dst))) in flows
        self.existing = hit
        self.inner.from_tap(af, src, dst, l4, now)

    def tap_reset(self) -> None:
        self.inner.tap_reset()


def _ports(l4: memoryview, dst: bytes) -> tuple[int, bytes, int]:
    sport, dport = struct.unpack_from("!HH", l4)
    return sport, dst, dport


class Servers:
    """The test's own TCP sink/echo and UDP echo, on lo of the private namespace, in the same loop."""

    def __init__(self, loop: Any) -> None:
        self.loop = loop
        self.listeners: list[socket.socket] = []
        self.udp: list[socket.socket] = []
        self.conns: dict[int, socket.socket] = {}
        for fam, addr in ((socket.AF_INET, SRV4), (socket.AF_INET6, SRV6)):
            ls = socket.socket(fam, socket.SOCK_STREAM)
            ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            ls.bind((addr, SINK_PORT))
            ls.listen(4096)
            ls.setblocking(False)
            loop.register(ls.fileno(), 1, lambda _m, _t, s=ls: self._accept(s))
            self.listeners.append(ls)
            us = socket.socket(fam, socket.SOCK_DGRAM)
            us.bind((addr, ECHO_PORT))
            us.setblocking(False)
            loop.register(us.fileno(), 1, lambda _m, _t, s=us: self._echo(s))
            self.udp.append(us)

    def _accept(self, ls: socket.socket) -> None:
        for _ in range(64):
            try:
                c, _ = ls.accept()
            except OSError:
                return
            c.setblocking(False)
            self.conns[c.fileno()] = c
            self.loop.register(c.fileno(), 1, lambda _m, _t, s=c: self._data(s))

    def _data(self, c: socket.socket) -> None:
        try:
            data = c.recv(65536)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self._drop(c)
            return
        try:
            c.send(data[:512])  # a little echo, so the guest gets data too
        except OSError:
            pass

    def _drop(self, c: socket.socket) -> None:
        self.loop.unregister(c.fileno())
        self.conns.pop(c.fileno(), None)
        c.close()

    def _echo(self, us: socket.socket) -> None:
        for _ in range(64):
            try:
                data, peer = us.recvfrom(65535)
                us.sendto(data, peer)
            except OSError:
                return

    def close(self) -> None:
        for c in list(self.conns.values()):
            self._drop(c)
        for s in self.listeners + self.udp:
            self.loop.unregister(s.fileno())
            s.close()


class Clock:
    """time.monotonic with a jump offset (the child process only: timeouts without waiting)."""

    def __init__(self) -> None:
        self.real = time.monotonic
        self.offset = 0.0

    def __call__(self) -> float:
        return self.real() + self.offset


def _fd_count() -> int:
    return len(os.listdir("/proc/self/fd"))


def _synack_replies(frames: list[bytes], limit: int) -> Iterator[bytes]:
    """For SYN-ACKs we sent the guest, what a well-behaved guest answers: ACK, data, FIN.

    These become live seeds, so the mutator also aims at real, synchronised flows.
    """
    from scapy.compat import raw
    from scapy.layers.inet import IP, TCP
    from scapy.layers.inet6 import IPv6
    from scapy.layers.l2 import Ether

    done = 0
    for f in frames:
        if done >= limit or len(f) < 54:
            continue
        et = (f[12] << 8) | f[13]
        if et == 0x0800 and f[23] == 6:
            off = 14 + (f[14] & 0xF) * 4
        elif et == 0x86DD and f[20] == 6:
            off = 54
        else:
            continue
        if len(f) < off + 20 or f[off + 13] & 0x12 != 0x12:
            continue
        pkt = Ether(f)
        ip = pkt[IP] if et == 0x0800 else pkt[IPv6]
        tcp = pkt[TCP]
        back = Ether(src=pkt.dst, dst=pkt.src) / (
            IP(src=ip.dst, dst=ip.src) if et == 0x0800 else IPv6(src=ip.dst, dst=ip.src))
        seq, ack = tcp.ack, (tcp.seq + 1) & 0xFFFFFFFF
        for flags, off, payload in (("A", 0, b""), ("PA", 0, b"hello over a real flow"), ("FA", 22, b"")):
            yield raw(back / TCP(sport=tcp.dport, dport=tcp.sport, flags=flags, seq=seq + off, ack=ack,
                                 window=65535) / payload)
        done += 1


def fuzz_body(mode: Mode, count: int, seed: int) -> dict[str, Any]:
    """The fuzz run itself; must only ever run inside a private network namespace."""
    from passt import log
    from passt.runtime import Runtime

    log._quiet = True  # a DHCP line per fuzzed DISCOVER helps nobody here
    clock = Clock()
    setattr(time, "monotonic", clock)  # noqa: B010  # the forked child only: timeouts without waiting
    # scapy first: its first imports may open descriptors of their own (not ours to count)
    seeds = build_seeds(unit_addrs())
    assert_checksums(seeds[-1])
    list(_synack_replies([], 1))
    conf = make_config(mode=mode, out_ifname="lo")
    runtime = Runtime(conf)
    # The fork inherited the worker's garbage (earlier tests' unreferenced sockets): a collection
    # during the run would close them and make the count fall. Collect it before counting.
    gc.collect()
    fds_before = _fd_count()
    tap = CaptureTap(offload=mode is Mode.PASTA)
    ctx = runtime.ctx
    runtime.attach_tap(tap)
    loop = runtime.loop
    handlers: dict[str, Any] = {"tcp": runtime.tcp, "udp": runtime.udp, "icmp": runtime.icmp}
    probes = {k: Probe(h, k) for k, h in handlers.items()}
    disp = runtime.dispatcher  # the probes stand between the dispatcher and each handler
    disp.tcp, disp.udp, disp.icmp = probes["tcp"], probes["udp"], probes["icmp"]
    servers = Servers(loop)

    mut = Mutator(seeds, seed)
    live: list[bytes] = []
    counters = ctx.counters
    drops, events = counters.drops, counters.events
    dispatch = runtime.dispatcher.from_tap
    unaccounted: list[str] = []
    silent: dict[str, int] = dict.fromkeys(SILENT_OK, 0)
    replies_checked = 0
    rng = random.Random(seed + 1)
    max_flows = 0

    def flows() -> int:
        return sum(len(h.flows) for h in handlers.values())

    start = time.perf_counter()
    for frame in class_frames(unit_addrs()):
        dispatch([memoryview(frame)], loop.now)
    i = len(REQUIRED_DROPS)
    next_turn, next_jump = TURN_EVERY, JUMP_EVERY
    while i < count:
        now = loop.now
        if rng.random() < 0.02:  # a batch, as the back-ends hand them over
            batch = [memoryview(mut.frame(live if live and rng.random() < 0.5 else None)) for _ in range(16)]
            dispatch(batch, now)
            i += len(batch)
        else:
            frame = mut.frame(live if live and rng.random() < 0.25 else None)
            before = (drops.total(), events.total(), tap.count, flows())
            for p in probes.values():
                p.existing = False
            dispatch([memoryview(frame)], now)
            if (drops.total(), events.total(), tap.count, flows()) == before:
                hit = [p.kind for p in probes.values() if p.existing]
                if hit:
                    silent[f"{hit[0]} existing flow"] += 1
                elif len(unaccounted) < 20:
                    unaccounted.append(frame[:120].hex())
                else:
                    unaccounted.append("...")
            i += 1
        if i >= next_turn:
            next_turn = i + TURN_EVERY
            loop.run_once(0)
            recent = list(tap.recent)
            tap.recent.clear()
            if len(live) < 600:
                live.extend(_synack_replies(recent, 2))
                for f in live[-6:]:
                    dispatch([memoryview(f)], loop.now)
            elif rng.random() < 0.1:
                del live[: rng.randrange(len(live))]
            if mode is Mode.PASST and replies_checked < 300 and recent:
                for f in recent[:3]:
                    if f[12:14] == b"\x08\x06":
                        continue  # ARP: no checksum
                    assert_checksums(f)
                    replies_checked += 1
            max_flows = max(max_flows, flows())
        if i >= next_jump:
            next_jump = i + JUMP_EVERY
            clock.offset += 65.0  # past SYN (10 s), FIN (60 s) and ICMP (60 s) timeouts
            for _ in range(3):
                loop.run_once(0)
    elapsed = time.perf_counter() - start

    # Quiesce: servers gone, then every timeout passes (2 h idle, 180 s UDP, RTO back-off).
    servers.close()
    for _ in range(40):
        clock.offset += 600.0
        for _ in range(3):
            loop.run_once(0)
    flows_after_expiry = {k: len(h.flows) for k, h in handlers.items()}
    fds_after_expiry = _fd_count()
    runtime.detach_tap(loop.now)
    flows_after_reset = {k: len(h.flows) for k, h in handlers.items()}
    return {
        "frames": i,
        "elapsed": elapsed,
        "fps": i / elapsed,
        "unaccounted": unaccounted,
        "silent": silent,
        "replies": tap.count,
        "too_big": tap.too_big,
        "max_len": tap.max_len,
        "replies_checked": replies_checked,
        "drops": dict(drops.most_common(25)),
        "events": dict(events.most_common(25)),
        "max_flows": max_flows,
        "flows_after_expiry": flows_after_expiry,
        "flows_after_reset": flows_after_reset,
        "fds_before": fds_before,
        "fds_after_expiry": fds_after_expiry,
        "fds_after_reset": _fd_count(),
        "established": events["tcp_established"],
    }


def _private_netns() -> None:
    """Move this (child) process into a new network namespace with lo and the test servers only."""
    from passt import syscalls

    syscalls.unshare(syscalls.CLONE_NEWNET)
    for argv in (["ip", "link", "set", "lo", "up"],
                 ["ip", "addr", "add", f"{SRV4}/32", "dev", "lo"],
                 ["ip", "-6", "addr", "add", f"{SRV6}/128", "dev", "lo", "nodad"]):  # fmt: skip
        subprocess.run(argv, check=True, capture_output=True)
    with open("/proc/sys/net/ipv4/ping_group_range", "w") as f:
        f.write("0 2147483647")
    # Belt and braces: no route but the local ones may exist here.
    routes = subprocess.run(["ip", "route", "show", "table", "main"], capture_output=True, text=True).stdout
    if routes.strip():
        raise RuntimeError(f"private namespace has routes: {routes}")


def run_isolated(body: Callable[[], dict[str, Any]], timeout: float) -> dict[str, Any]:
    """Run `body` in a forked child inside a fresh network namespace; its result as a dict."""
    if os.geteuid() != 0:
        pytest.skip("needs root to create a private network namespace")
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        os.close(r)
        code = 0
        try:
            _private_netns()
            result: dict[str, Any] = {"ok": True, **body()}
        except BaseException:
            result = {"ok": False, "error": traceback.format_exc()}
            code = 1
        try:
            data = json.dumps(result).encode()
            while data:
                data = data[os.write(w, data) :]
        finally:
            os._exit(code)
    os.close(w)
    chunks: list[bytes] = []
    deadline = time.monotonic() + timeout
    try:
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"fuzz child did not finish in {timeout} s")
            ready, _, _ = select.select([r], [], [], left)
            if ready:
                chunk = os.read(r, 1 << 16)
                if not chunk:
                    break
                chunks.append(chunk)
    finally:
        os.close(r)
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        os.waitpid(pid, 0)
    if not chunks:
        raise AssertionError("fuzz child died without a report")
    out: dict[str, Any] = json.loads(b"".join(chunks))
    return out


@pytest.mark.parametrize("mode", [Mode.PASST, Mode.PASTA], ids=["passt", "pasta-offload"])
@pytest.mark.conformance("hostile.fuzz")
def test_fuzz_frames_whole_handler(mode: Mode) -> None:
    """Random and mutated frames through the whole frame handler are dropped and counted, never crash it."""
    res = run_isolated(lambda: fuzz_body(mode, FUZZ_COUNT, seed=20240 + (mode is Mode.PASTA)),
                       timeout=max(120.0, FUZZ_COUNT / 2000))  # fmt: skip
    assert res["ok"], res.get("error")
    sys.stdout.write(f"\nfuzz {mode.value}: {res['frames']} frames in {res['elapsed']:.1f} s "
                     f"({res['fps']:.0f}/s), {res['replies']} replies, max flows {res['max_flows']}, "
                     f"established {res['established']}, silent {res['silent']}\n"
                     f"  drops {res['drops']}\n  events {res['events']}\n")  # fmt: skip
    assert res["frames"] >= FUZZ_COUNT
    assert res["unaccounted"] == [], "frames neither answered, nor counted, nor for a flow"
    assert res["too_big"] == 0, res["max_len"]
    # the fuzz reached every layer: services answered, flows opened and got real traffic
    assert res["replies"] > FUZZ_COUNT // 50
    assert res["max_flows"] > 0 and res["established"] > 0
    for reason in REQUIRED_DROPS:
        assert res["drops"].get(reason, 0) > 0, (reason, res["drops"])
    if mode is Mode.PASST:
        assert res["replies_checked"] > 0
    # after every timeout: nothing left; after the link reset: the descriptors we started with
    assert res["flows_after_expiry"] == {"tcp": 0, "udp": 0, "icmp": 0}
    assert res["flows_after_reset"] == {"tcp": 0, "udp": 0, "icmp": 0}
    assert res["fds_after_reset"] == res["fds_before"], (res["fds_before"], res["fds_after_reset"])


def test_fuzz_mutator_is_deterministic_and_fast() -> None:
    """The same seed gives the same frames; 100,000 mutations take well under the fuzz budget."""
    seeds = build_seeds(unit_addrs())
    assert 250 <= len(seeds) <= 1000
    a, b = Mutator(seeds, 5), Mutator(seeds, 5)
    assert [a.frame() for _ in range(500)] == [b.frame() for _ in range(500)]
    start = time.perf_counter()
    m = Mutator(seeds, 6)
    sizes = [len(m.frame()) for _ in range(100_000)]
    elapsed = time.perf_counter() - start
    assert elapsed < 10.0, elapsed
    assert min(sizes) == 0 and max(sizes) > MAX_FRAME  # runts and oversized frames both occur


@pytest.mark.conformance("hostile.floods")
def test_udp_flow_pressure_recycles_unanswered_flows() -> None:
    """With the UDP table full, a new flow takes the place of one that never got a reply (not of a live one)."""
    from passt.context import Context
    from passt.flows.udp import UDP_EVICT_UNANSWERED_S, UdpHandler
    from passt.loop import EventLoop

    ctx = Context(make_config(out_ifname="lo"), EventLoop())
    tap = CaptureTap(offload=False)
    ctx.tap = tap
    handler = UdpHandler(ctx, capacity=4, loopback_dst=True)
    echo = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    echo.bind(("127.0.0.1", 0))
    echo_port = echo.getsockname()[1]
    lo, src = socket.inet_aton("127.0.0.1"), socket.inet_aton(GUEST4)

    def datagram(sport: int, dport: int, now: float) -> None:
        l4 = struct.pack("!HHHH", sport, dport, 12, 0) + b"ping"
        handler.from_tap(4, src, lo, memoryview(l4), now)

    try:
        t0 = time.monotonic()
        datagram(1000, echo_port, t0)  # the live flow: gets a reply
        data, peer = echo.recvfrom(100)
        echo.sendto(b"pong", peer)
        for _ in range(20):
            ctx.loop.run_once(0.05)
            if tap.count:
                break
        assert tap.count == 1 and tap.recent[-1].endswith(b"pong")
        for sport in (1001, 1002, 1003):  # unanswered: nothing listens on port 9 here
            datagram(sport, 9, t0)
        assert handler.flow_count() == 4
        datagram(1004, 9, t0 + 0.1)  # too soon: nothing may be recycled yet
        assert handler.flow_count() == 4 and ctx.counters.drops["udp_flow_table_full"] == 1
        later = t0 + UDP_EVICT_UNANSWERED_S + 0.5
        datagram(1005, 9, later)
        datagram(1006, 9, later)
        keys = {f.key[2] for f in handler.flows.values()}
        assert keys == {1000, 1003, 1005, 1006}, keys  # oldest unanswered went first; the live one stayed
        assert ctx.counters.events["udp_flow_evicted"] == 2
        datagram(1000, echo_port, later)
        assert echo.recvfrom(100)[0] == b"ping"  # the live flow still works
    finally:
        handler.tap_reset()
        echo.close()
        tap.close()
