"""Test doubles and helpers shared by the flow, dispatcher and service tests (no tests here).

    FakeTap      a TapBackend that records the frames that would go to the guest
    make_ctx     a Context with gateways 192.0.2.1 / 2001:db8:1::1 and a FakeTap
    pump         run a context's loop until a condition holds (bounded)
    to_service   hand a whole frame to a service the way the dispatcher does
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from ipaddress import IPv4Address, IPv6Address
from typing import Any, Protocol

from passt.context import Context
from passt.loop import EventLoop
from passt.tap.base import Buffer
from passt.wire.errors import ParseError
from passt.wire.eth import ETH_HLEN, ETH_P_ARP, ETH_P_IP, ETH_P_IPV6, parse_eth
from passt.wire.ipv4 import IPv4Header, parse_ipv4
from passt.wire.ipv6 import IPv6Header, parse_ipv6
from tests.unit.conftest import GUEST_MAC, make_config, make_ip4, make_ip6

G4 = "192.0.2.2"
G6 = "2001:db8:1::2"
GW4 = "192.0.2.1"
GW6 = "2001:db8:1::1"


class FakeTap:
    """A TapBackend that records what would go to the guest."""

    offload = False
    closed = False

    def __init__(self) -> None:
        self.frames: list[bytes] = []

    def fileno(self) -> int:
        return -1

    def read_frames(self) -> list[memoryview]:
        return []

    def send(self, frame: Buffer) -> None:
        self.frames.append(bytes(frame))

    def send_gso(self, frame: Buffer, **kw: int) -> None:
        raise AssertionError("no offload here")

    def flush(self) -> None:
        pass

    def pending(self) -> bool:
        return False

    def close(self) -> None:
        pass


def make_ctx(**overrides: Any) -> tuple[Context, FakeTap]:
    """A Context with gateway 192.0.2.1 / 2001:db8:1::1 and a recording tap."""
    values: dict[str, Any] = {
        "out_ifname": "lo",
        "ip4": make_ip4(addr=IPv4Address("192.0.2.3"), gateway=IPv4Address(GW4)),
        "ip6": make_ip6(addr=IPv6Address("2001:db8:1::3"), gateway=IPv6Address(GW6)),
    }
    values.update(overrides)
    ctx = Context(make_config(**values), EventLoop())
    tap = FakeTap()
    ctx.tap = tap
    ctx.guest.learn_mac(GUEST_MAC)
    return ctx, tap


def pump(ctx: Context, cond: Callable[[], bool], timeout: float = 2.0) -> bool:
    """Run the loop until `cond()` holds or `timeout` passes."""
    deadline = time.monotonic() + timeout
    while not cond() and time.monotonic() < deadline:
        ctx.loop.run_once(0.02)
    return cond()


def packed(af: int, addr: str) -> bytes:
    return socket.inet_pton(socket.AF_INET if af == 4 else socket.AF_INET6, addr)


def free_port(kind: int = socket.SOCK_DGRAM) -> int:
    with socket.socket(socket.AF_INET6, kind) as s:
        s.bind(("::", 0))
        port: int = s.getsockname()[1]
        return port



class _Service(Protocol):
    def handle(self, frame: memoryview, iph: Any, l4: memoryview, /) -> bytes | None: ...


def to_service(svc: Any, frame: bytes) -> bytes | None:
    """Parse Ethernet and IP once, as the dispatcher does, and hand the pieces to `svc`.

    ARP services get the frame alone.  A frame the dispatcher would drop before
    any service (short, bad IP header, fragment) returns None and reaches no service.
    """
    mv = memoryview(frame)
    try:
        eth = parse_eth(mv)
        if eth.ethertype == ETH_P_ARP:
            reply: bytes | None = svc.handle(mv)
            return reply
        iph: IPv4Header | IPv6Header
        if eth.ethertype == ETH_P_IP:
            iph, l4 = parse_ipv4(mv[ETH_HLEN:])
        elif eth.ethertype == ETH_P_IPV6:
            iph, _proto, l4 = parse_ipv6(mv[ETH_HLEN:])
        else:
            return None
    except ParseError:
        return None
    service: _Service = svc
    return service.handle(mv, iph, l4)
