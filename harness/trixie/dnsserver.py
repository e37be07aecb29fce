"""The test DNS server in wan: A and AAAA answers for a fixed table, NXDOMAIN for the rest.

Callers are tested resolving a name through the forwarders they configure (Podman's
``--dns-forward``), so wan needs a resolver that answers something recognisable: ``wan.example.test``
names wan's test server addresses. UDP only, one datagram in, one out; a malformed query is
ignored. ``python3 -m harness.trixie.dnsserver ADDR...`` serves port 53 on each address.
"""

from __future__ import annotations

import ipaddress
import selectors
import socket
import struct
import sys
from typing import Final

from harness.netns.topology import WAN_ADDR4, WAN_ADDR6

NAMES: Final = {"wan.example.test": (WAN_ADDR4, WAN_ADDR6)}
TTL_S: Final = 60
QTYPE_A: Final = 1
QTYPE_AAAA: Final = 28
MAX_QUERY: Final = 512


def answer(query: bytes) -> bytes | None:
    """The response to one query datagram, or None if it is not a well-formed single question."""
    if len(query) < 12:
        return None
    qid, flags, qdcount = struct.unpack_from("!HHH", query)
    if flags & 0x8000 or qdcount != 1:
        return None
    labels, pos = [], 12
    while True:
        if pos >= len(query):
            return None
        n = query[pos]
        pos += 1
        if n == 0:
            break
        if n > 63 or pos + n > len(query):
            return None
        labels.append(query[pos:pos + n].decode("ascii", "replace").lower())
        pos += n
    if pos + 4 > len(query):
        return None
    qtype, _qclass = struct.unpack_from("!HH", query, pos)
    question = query[12:pos + 4]
    addrs = NAMES.get(".".join(labels))
    records = []
    if addrs is not None:
        for addr in addrs:
            ip = ipaddress.ip_address(addr)
            if (qtype, ip.version) in ((QTYPE_A, 4), (QTYPE_AAAA, 6)):
                records.append(struct.pack("!HHHIH", 0xC00C, qtype, 1, TTL_S, len(ip.packed)) + ip.packed)
    rcode = 0 if addrs is not None else 3
    header = struct.pack("!HHHHHH", qid, 0x8400 | (flags & 0x0100) | rcode, 1, len(records), 0, 0)
    return header + question + b"".join(records)


def serve(addrs: list[str]) -> None:
    sel = selectors.DefaultSelector()
    socks: dict[int, socket.socket] = {}
    for addr in addrs:
        family = socket.AF_INET6 if ":" in addr else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_DGRAM)
        sock.bind((addr, 53))
        sel.register(sock, selectors.EVENT_READ)
        socks[sock.fileno()] = sock
    while True:
        for key, _ in sel.select():
            sock = socks[key.fd]
            data, peer = sock.recvfrom(MAX_QUERY)
            reply = answer(data)
            if reply is not None:
                sock.sendto(reply, peer)


if __name__ == "__main__":
    serve(sys.argv[1:])
