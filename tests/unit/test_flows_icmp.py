"""ICMP echo through ping sockets, run inside throwaway network namespaces.

Ping sockets need our group inside /proc/sys/net/ipv4/ping_group_range,
which is per network namespace.  Rather than touch this machine's setting,
each socket test forks a child that unshares a fresh network namespace
(it vanishes with the child, also on failure), brings `lo` up, sets the
range there, runs the handler and sends back the captured frames; the parent
dissects them with scapy.  An AF_PACKET socket on the child's `lo` shows
what really went on the wire, i.e. which identifier the remote saw.
"""

from __future__ import annotations

import ctypes
import io
import os
import pickle
import socket
import struct
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from typing import Any

import pytest
from scapy.compat import raw
from scapy.layers.inet import ICMP, IP
from scapy.layers.inet6 import ICMPv6EchoReply, ICMPv6EchoRequest, IPv6
from scapy.layers.l2 import Ether

from passt.flows import icmp as icmp_mod
from passt.flows.icmp import IcmpHandler
from tests.unit.conftest import GUEST_MAC_STR, OUR_MAC_STR, assert_checksums
from tests.unit.fakes import G4, G6, make_ctx, packed, pump

CLONE_NEWNET = 0x40000000
ALL_GROUPS = "0 2147483647"
ETH_P_ALL = 0x0003


def in_netns(fn: Callable[[], Any], ping_range: str | None = ALL_GROUPS) -> Any:
    """Run `fn` in a forked child inside a new network namespace; return its result."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: never return into pytest
        os.close(r)
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            if libc.unshare(CLONE_NEWNET) != 0:
                raise OSError(ctypes.get_errno(), "unshare(CLONE_NEWNET)")
            subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
            if ping_range is not None:
                with open("/proc/sys/net/ipv4/ping_group_range", "w") as f:
                    f.write(ping_range)
            out = pickle.dumps(("ok", fn()))
        except BaseException:
            out = pickle.dumps(("err", traceback.format_exc()))
        with os.fdopen(w, "wb") as f:
            f.write(out)
        os._exit(0)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        data = f.read()
    os.waitpid(pid, 0)
    status, value = pickle.loads(data)
    if status != "ok":
        pytest.fail("in netns:\n" + value)
    return value


def guest_echo(af: int, src: str, dst: str, ident: int, seq: int, payload: bytes) -> memoryview:
    """ICMP(v6) echo request bytes as the guest sends them (scapy computes the checksum)."""
    if af == 4:
        return memoryview(raw(IP(src=src, dst=dst) / ICMP(id=ident, seq=seq) / payload)[20:])
    return memoryview(
        raw(IPv6(src=src, dst=dst) / ICMPv6EchoRequest(id=ident, seq=seq, data=payload))[40:]
    )


def sniffer() -> socket.socket:
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    s.bind(("lo", 0))
    s.setblocking(False)
    return s


def wire_request_ids(s: socket.socket, af: int) -> list[int]:
    """Identifiers of the echo requests seen on lo (loopback frames have a 14-byte Ethernet header)."""
    ids: list[int] = []
    while True:
        try:
            frame, addr = s.recvfrom(70000)
        except BlockingIOError:
            return ids
        if addr[2] == socket.PACKET_OUTGOING:
            continue
        if af == 4 and frame[12:14] == b"\x08\x00" and frame[23] == 1 and frame[34] == 8:
            ids.append(struct.unpack_from("!H", frame, 38)[0])
        if af == 6 and frame[12:14] == b"\x86\xdd" and frame[20] == 58 and frame[54] == 128:
            ids.append(struct.unpack_from("!H", frame, 58)[0])


def echo_scenario(af: int, ident: int, *, block_id: bool = False) -> dict[str, Any]:
    """Child body: one guest ping to loopback; returns frames, wire ids and flow state."""
    ctx, tap = make_ctx()
    handler = IcmpHandler(ctx, loopback_dst=True)
    blocker = None
    if block_id:  # someone else holds the identifier: bind() must fail
        blocker = socket.socket(socket.AF_INET if af == 4 else socket.AF_INET6, socket.SOCK_DGRAM,
                                socket.IPPROTO_ICMP if af == 4 else socket.IPPROTO_ICMPV6)  # fmt: skip
        blocker.bind(("0.0.0.0", ident) if af == 4 else ("::", ident))
    sn = sniffer()
    guest, lo = (G4, "127.0.0.1") if af == 4 else (G6, "::1")
    handler.from_tap(
        af,
        packed(af, guest),
        packed(af, lo),
        guest_echo(af, guest, lo, ident, 7, b"abcdefgh" * 8),
        0.0,
    )
    pump(ctx, lambda: len(tap.frames) >= 1)
    flow = handler.flows.values()[0]
    result = {
        "frames": tap.frames,
        "wire_ids": wire_request_ids(sn, af),
        "fallback": flow.fallback,
        "flows": handler.flow_count(),
        "events": dict(ctx.counters.events),
    }
    nfd = len(os.listdir("/proc/self/fd"))
    result["expired"] = handler.expire(time.monotonic() + 1000.0)
    result["fd_delta"] = nfd - len(os.listdir("/proc/self/fd"))
    result["flows_after"] = handler.flow_count()
    if blocker is not None:
        blocker.close()
    return result


def check_reply(frame: bytes, af: int, ident: int) -> None:
    pkt = Ether(frame)
    assert (pkt.src, pkt.dst) == (OUR_MAC_STR, GUEST_MAC_STR)
    if af == 4:
        assert (pkt[IP].src, pkt[IP].dst) == ("127.0.0.1", G4)
        assert (pkt[ICMP].type, pkt[ICMP].code) == (0, 0)
        assert (pkt[ICMP].id, pkt[ICMP].seq) == (ident, 7)
        assert bytes(pkt[ICMP].payload) == b"abcdefgh" * 8
    else:
        assert (pkt[IPv6].src, pkt[IPv6].dst) == ("::1", G6)
        reply = pkt[ICMPv6EchoReply]
        assert (reply.id, reply.seq, reply.data) == (ident, 7, b"abcdefgh" * 8)
    assert_checksums(frame)


@pytest.mark.conformance("notes.icmp.id-preserved")
@pytest.mark.parametrize("af", [4, 6])
def test_echo_keeps_guest_identifier(af: int) -> None:
    """The remote sees the guest's echo identifier and the reply carries it, seq and payload back."""
    res = in_netns(lambda: echo_scenario(af, 0x1234))
    assert res["fallback"] is False
    assert res["wire_ids"] == [0x1234]
    assert len(res["frames"]) == 1
    check_reply(res["frames"][0], af, 0x1234)
    # flow expiry closes the ping socket
    assert (res["expired"], res["fd_delta"], res["flows_after"]) == (1, 1, 0)


@pytest.mark.conformance("notes.icmp.fallback-id")
@pytest.mark.parametrize("af", [4, 6])
def test_echo_fallback_maps_identifier_back(af: int) -> None:
    """When bind() to the guest's identifier fails the request leaves with another id; the reply is mapped back."""
    res = in_netns(lambda: echo_scenario(af, 0x4321, block_id=True))
    assert res["fallback"] is True
    assert res["events"]["icmp_id_fallback"] == 1
    assert len(res["wire_ids"]) == 1 and res["wire_ids"][0] != 0x4321
    assert len(res["frames"]) == 1
    check_reply(res["frames"][0], af, 0x4321)


def two_remotes_scenario() -> dict[str, Any]:
    """Child body: the guest uses one identifier towards two remotes."""
    ctx, tap = make_ctx()
    handler = IcmpHandler(ctx, loopback_dst=True)
    for remote in ("127.0.0.1", "127.0.0.2"):
        l4 = guest_echo(4, G4, remote, 0x777, 7, b"abcdefgh" * 8)
        handler.from_tap(4, packed(4, G4), packed(4, remote), l4, 0.0)
        pump(ctx, lambda: len(tap.frames) >= 1)
    pump(ctx, lambda: len(tap.frames) >= 2)
    fallbacks = {socket.inet_ntoa(f.remote): f.fallback for f in handler.flows.values()}
    return {"frames": tap.frames, "fallbacks": fallbacks}


@pytest.mark.conformance("notes.icmp.fallback-id")
def test_same_identifier_two_remotes() -> None:
    """One guest identifier towards two remotes: two sockets, each reply from its own remote with the guest's id."""
    res = in_netns(two_remotes_scenario)
    assert res["fallbacks"] == {"127.0.0.1": False, "127.0.0.2": True}
    assert sorted(Ether(f)[IP].src for f in res["frames"]) == ["127.0.0.1", "127.0.0.2"]
    for f in res["frames"]:
        assert Ether(f)[ICMP].id == 0x777
        assert_checksums(f)


def refused_scenario() -> dict[str, Any]:
    """Child body: ping sockets refused by ping_group_range; two requests, one warning."""
    icmp_mod._ping_warned = False
    err = io.StringIO()
    sys.stderr = err  # the forked child only: passt.log writes warnings to standard error
    ctx, tap = make_ctx()
    handler = IcmpHandler(ctx, loopback_dst=True)
    for seq in (1, 2):
        l4 = guest_echo(4, G4, "127.0.0.1", 99, seq, b"x")
        handler.from_tap(4, packed(4, G4), packed(4, "127.0.0.1"), l4, 0.0)
    records = err.getvalue().splitlines()
    return {"records": records, "drops": dict(ctx.counters.drops), "flows": handler.flow_count()}


@pytest.mark.conformance("notes.icmp.ping-group-range")
def test_ping_group_range_excludes_us() -> None:
    """Ping sockets refused (group outside ping_group_range): one warning naming the sysctl, drops counted."""
    res = in_netns(refused_scenario, ping_range="1 0")
    assert len(res["records"]) == 1
    assert "/proc/sys/net/ipv4/ping_group_range" in res["records"][0]
    assert res["drops"]["icmp_no_ping_socket"] == 2
    assert res["flows"] == 0


@pytest.mark.parametrize(
    ("af", "l4", "reason"),
    [
        (4, bytes([13, 0, 0, 0, 0, 1, 0, 1]), "icmp_type"),  # timestamp request
        (4, bytes([0, 0, 0, 0, 0, 1, 0, 1]), "icmp_type"),  # echo reply from the guest
        (4, bytes([8, 1, 0, 0, 0, 1, 0, 1]), "icmp_code"),
        (6, bytes([1, 0, 0, 0, 0, 0, 0, 0]), "icmp_type"),
        (4, bytes([8, 0, 0, 0, 0, 1, 0]), "icmp_short"),
    ],
)
def test_other_icmp_dropped(af: int, l4: bytes, reason: str) -> None:
    """Only echo requests are forwarded: other types, nonzero codes and short messages are counted drops."""
    ctx, _ = make_ctx()
    handler = IcmpHandler(ctx, loopback_dst=True)
    guest, dst = (G4, "192.0.2.1") if af == 4 else (G6, "2001:db8:1::1")
    handler.from_tap(af, packed(af, guest), packed(af, dst), memoryview(l4), 0.0)
    assert ctx.counters.drops[reason] == 1
    assert handler.flow_count() == 0


@pytest.mark.parametrize(
    ("af", "dst"), [(4, "127.0.0.1"), (6, "::1"), (4, "255.255.255.255"), (6, "ff02::1")]
)
def test_echo_to_loopback_or_multicast_dropped_by_default(af: int, dst: str) -> None:
    """Without the test-only switch a guest cannot ping our loopback, and never a group address."""
    ctx, _ = make_ctx()
    handler = IcmpHandler(ctx)
    guest = G4 if af == 4 else G6
    handler.from_tap(
        af, packed(af, guest), packed(af, dst), guest_echo(af, guest, dst, 1, 1, b""), 0.0
    )
    assert ctx.counters.dropped == 1
    assert handler.flow_count() == 0


@pytest.mark.conformance("opt.no-icmp")
def test_no_icmp_drops() -> None:
    """--no-icmp: echo requests are dropped and no socket is created."""
    ctx, _ = make_ctx(icmp=False)
    handler = IcmpHandler(ctx, loopback_dst=True)
    handler.from_tap(
        4, packed(4, G4), packed(4, "127.0.0.1"), guest_echo(4, G4, "127.0.0.1", 1, 1, b""), 0.0
    )
    assert ctx.counters.drops["icmp_disabled"] == 1
    assert handler.flow_count() == 0
