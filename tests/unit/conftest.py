"""Shared helpers for the unit tests: a Config builder, scapy checks, a frame mutator.

`make_config(**overrides)` builds a complete Config with documentation
addresses (RFC 5737, RFC 3849), so a test names only what it is about.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable
from ipaddress import IPv4Address, IPv6Address
from typing import Any, TypeVar

from scapy.compat import raw
from scapy.layers.dns import dns_get_str
from scapy.layers.l2 import Ether

from passt.config import Config, Ip4Config, Ip6Config, Mode
from passt.wire.checksum import checksum
from passt.wire.errors import ParseError
from passt.wire.eth import ETH_HLEN, ETH_P_IP, ETH_P_IPV6, parse_eth
from passt.wire.icmp import set_icmpv6_checksum
from passt.wire.ipv4 import PROTO_UDP, parse_ipv4
from passt.wire.ipv6 import IPV6_HLEN, PROTO_ICMPV6, parse_ipv6
from passt.wire.udp import set_udp_checksum4, set_udp_checksum6

#: Our MAC towards the guest in tests (locally administered).
OUR_MAC = bytes.fromhex("9a5534a1b2c3")
OUR_MAC_STR = "9a:55:34:a1:b2:c3"
GUEST_MAC = bytes.fromhex("525400123456")
GUEST_MAC_STR = "52:54:00:12:34:56"

GUEST4 = "192.0.2.118"
GW4 = "192.0.2.1"
DNS4 = "192.0.2.53"
GUEST6 = "2001:db8:1::118"
GW6 = "fe80::1"
DNS6 = "2001:db8:1::53"
GUEST_LL = "fe80::5054:ff:fe12:3456"

T = TypeVar("T")


def make_ip4(**overrides: Any) -> Ip4Config:
    """An Ip4Config: guest 192.0.2.118/24, gateway .1, one DNS server."""
    values: dict[str, Any] = {
        "addr": IPv4Address(GUEST4),
        "prefix_len": 24,
        "gateway": IPv4Address(GW4),
        "dns": (IPv4Address(DNS4),),
    }
    values.update(overrides)
    return Ip4Config(**values)


def make_ip6(**overrides: Any) -> Ip6Config:
    """An Ip6Config: guest 2001:db8:1::118/64, gateway fe80::1, one DNS server."""
    values: dict[str, Any] = {
        "addr": IPv6Address(GUEST6),
        "prefix_len": 64,
        "gateway": IPv6Address(GW6),
        "dns": (IPv6Address(DNS6),),
    }
    values.update(overrides)
    return Ip6Config(**values)


def make_config(**overrides: Any) -> Config:
    """A complete Config for tests; any field can be overridden (ip4/ip6 None disables)."""
    values: dict[str, Any] = {
        "mode": Mode.PASST,
        "out_ifname": "eth0",
        "our_mac": OUR_MAC,
        "ip4": make_ip4(),
        "ip6": make_ip6(),
        "search": ("example.com",),
    }
    values.update(overrides)
    return Config(**values)


def assert_checksums(frame: bytes) -> None:
    """Every checksum in `frame` equals what scapy computes for the same bytes."""
    pkt = Ether(frame)
    fields: list[tuple[Any, str, int]] = []
    layer: Any = pkt
    while layer is not None and layer.name != "NoPayload":
        for name in ("chksum", "cksum"):
            if name in layer.fields:
                fields.append((type(layer), name, layer.getfieldval(name)))
                layer.setfieldval(name, None)
        layer = layer.payload if layer.payload else None
    assert fields, "no checksum found"
    rebuilt = Ether(raw(pkt))
    for cls, name, value in fields:
        assert rebuilt[cls].getfieldval(name) == value, (cls.__name__, name)


def check_prefixes(
    parse: Callable[[memoryview], T], data: bytes, ok: Callable[[T], bool] | None = None
) -> None:
    """Every strict prefix of `data` raises ParseError (or, when `ok` is given, may parse if ok(result))."""
    for i in range(len(data)):
        try:
            result = parse(memoryview(data[:i]))
        except ParseError:
            continue
        assert ok is not None and ok(result), f"prefix of {i} bytes parsed"


def mutate(frame: bytes, rng: random.Random) -> bytes:
    """One random mutation: flipped bytes, truncation, extension, or a boundary value."""
    data = bytearray(frame)
    choice = rng.randrange(5)
    if choice == 0 and data:
        for _ in range(rng.randint(1, 4)):
            data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
    elif choice == 1:
        del data[rng.randrange(len(data) + 1) :]
    elif choice == 2:
        data += rng.randbytes(rng.randint(1, 64))
    elif choice == 3 and data:
        data[rng.randrange(len(data))] = rng.choice((0, 1, 0x7F, 0x80, 0xFF))
    elif data:
        pos = rng.randrange(len(data))
        data[pos:pos] = rng.randbytes(rng.randint(1, 8))
    return bytes(data)


def refresh_checksums(frame: bytes) -> bytes:
    """Recompute IPv4 header, UDP and ICMPv6 checksums where the headers still parse.

    Lets mutated frames get past checksum checks, so the fuzz reaches the
    option parsers instead of stopping at the first checksum.
    """
    buf = bytearray(frame)
    view = memoryview(bytes(frame))
    try:
        eth = parse_eth(view)
        if eth.ethertype == ETH_P_IP:
            ip4, l4 = parse_ipv4(view[ETH_HLEN:])
            buf[ETH_HLEN + 10 : ETH_HLEN + 12] = b"\0\0"
            csum = checksum(buf[ETH_HLEN : ETH_HLEN + ip4.header_len])
            buf[ETH_HLEN + 10 : ETH_HLEN + 12] = csum.to_bytes(2, "big")
            if ip4.proto == PROTO_UDP and len(l4) >= 8:
                length = min(int.from_bytes(l4[4:6], "big"), len(l4))
                if length >= 8:
                    set_udp_checksum4(buf, ETH_HLEN + ip4.header_len, length, ip4.src, ip4.dst)
        elif eth.ethertype == ETH_P_IPV6:
            ip6, proto, l4 = parse_ipv6(view[ETH_HLEN:])
            off = ETH_HLEN + IPV6_HLEN + ip6.payload_len - len(l4)
            if proto == PROTO_UDP and len(l4) >= 8:
                length = min(int.from_bytes(l4[4:6], "big"), len(l4))
                if length >= 8:
                    set_udp_checksum6(buf, off, length, ip6.src, ip6.dst)
            elif proto == PROTO_ICMPV6 and len(l4) >= 4:
                set_icmpv6_checksum(buf, off, len(l4), ip6.src, ip6.dst)
    except ParseError:
        pass
    return bytes(buf)


def fuzz(
    handle: Callable[[memoryview], object], seeds: Iterable[bytes], *, count: int, seed: int
) -> int:
    """Feed `count` mutated frames to `handle`; returns how many got a reply.

    The invariant is that garbage is only ever dropped: any exception
    escaping `handle` fails the calling test; replies must be bytes.  Most
    mutants get their checksums refreshed so they reach the deeper parsers.
    """
    rng = random.Random(seed)
    frames = list(seeds)
    replies = 0
    for _ in range(count):
        frame = mutate(rng.choice(frames), rng)
        if rng.random() < 0.3:
            frame = mutate(frame, rng)
        if rng.random() < 0.7:
            frame = refresh_checksums(frame)
        out = handle(memoryview(frame))
        if out is not None:
            assert isinstance(out, bytes)
            replies += 1
    return replies


def decode_names(data: bytes) -> list[str]:
    """Decode a sequence of DNS wire-format names with scapy (pointers relative to `data`)."""
    names: list[str] = []
    rest = data
    while rest:
        name, rest = dns_get_str(rest, full=data)  # type: ignore[no-untyped-call]
        names.append(name.decode())
    return names
