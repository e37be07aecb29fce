"""A test DNS server for the wan namespace: answers every name, logs who asked how.

    python3 harness/netns/dns.py LOG ADDR [ADDR...]

Listens on UDP and TCP port 53 of each ADDR (RFC 1035 section 4.2: TCP
messages carry a two-byte length prefix) and answers every A query with
10.77.1.1 (wan's "internet" address) and every AAAA query with fd77:1::1,
TTL 0; other types get an empty NOERROR answer.  Each query adds one line to
LOG, flushed at once, so a test can assert what the server saw:

    udp 10.77.0.2 10.77.1.53 name.example.test 1
    ^   ^peer     ^our addr  ^name             ^qtype

"ready" is printed on stdout once every socket listens (`start_dns` waits
for it: a readiness check, not a sleep).  One thread, one select loop; TCP
clients are served one message at a time and closed after the answer, which
every resolver accepts.  Stdlib only: it runs under whatever python3 the
namespace has.  Unparseable queries are ignored (logged as "bad").
"""

from __future__ import annotations

import select
import socket
import struct
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Final, TextIO

if TYPE_CHECKING:
    from harness.netns.topology import Topology

ANSWER_A: Final = "10.77.1.1"
ANSWER_AAAA: Final = "fd77:1::1"
#: Largest query we read; a real one is well under 512 bytes.
MAX_QUERY: Final = 4096
_HDR: Final = struct.Struct("!HHHHHH")


def parse_query(msg: bytes) -> tuple[int, int, str, int, bytes] | None:
    """(id, flags, name, qtype, question bytes) of a one-question query; None if it isn't one."""
    if len(msg) < _HDR.size:
        return None
    qid, flags, qd, _, _, _ = _HDR.unpack_from(msg)
    if qd != 1 or flags & 0x8000:
        return None
    labels: list[str] = []
    i = _HDR.size
    while i < len(msg) and msg[i] != 0:
        n = msg[i]
        if n > 63 or i + 1 + n > len(msg):
            return None
        labels.append(msg[i + 1 : i + 1 + n].decode("ascii", "replace"))
        i += 1 + n
    i += 1
    if i + 4 > len(msg):
        return None
    qtype = struct.unpack_from("!H", msg, i)[0]
    return qid, flags, ".".join(labels), qtype, msg[_HDR.size : i + 4]


def build_answer(qid: int, flags: int, qtype: int, question: bytes) -> bytes:
    """The answer to a query: one A/AAAA record pointing at wan, or none."""
    rr = b""
    if qtype == 1:
        rr = b"\xc0\x0c" + struct.pack("!HHIH", 1, 1, 0, 4) + socket.inet_pton(socket.AF_INET, ANSWER_A)
    elif qtype == 28:
        rr = b"\xc0\x0c" + struct.pack("!HHIH", 28, 1, 0, 16) + socket.inet_pton(socket.AF_INET6, ANSWER_AAAA)
    return _HDR.pack(qid, 0x8180 | (flags & 0x0100), 1, 1 if rr else 0, 0, 0) + question + rr


def _answer(log: TextIO, proto: str, peer: str, local: str, msg: bytes) -> bytes | None:
    q = parse_query(msg)
    if q is None:
        log.write(f"bad {proto} {peer}\n")
        return None
    qid, flags, name, qtype, question = q
    log.write(f"{proto} {peer} {local} {name} {qtype}\n")
    return build_answer(qid, flags, qtype, question)


def _recv_exact(conn: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = conn.recv(n - len(data))
        if not chunk:
            break
        data += chunk
    return data


def serve(log_path: str, addrs: list[str]) -> None:
    """Serve forever (until killed)."""
    udp: list[socket.socket] = []
    tcp: list[socket.socket] = []
    for addr in addrs:
        fam = socket.AF_INET6 if ":" in addr else socket.AF_INET
        u = socket.socket(fam, socket.SOCK_DGRAM)
        u.bind((addr, 53))
        udp.append(u)
        t = socket.socket(fam, socket.SOCK_STREAM)
        t.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        t.bind((addr, 53))
        t.listen(16)
        tcp.append(t)
    with open(log_path, "a", buffering=1, encoding="utf-8") as log:
        print("ready", flush=True)
        while True:
            ready, _, _ = select.select(udp + tcp, [], [])
            for s in ready:
                local = s.getsockname()[0]
                if s.type == socket.SOCK_DGRAM:
                    msg, peer = s.recvfrom(MAX_QUERY)
                    resp = _answer(log, "udp", peer[0], local, msg)
                    if resp is not None:
                        s.sendto(resp, peer)
                    continue
                conn, peer = s.accept()
                with conn:
                    conn.settimeout(5)
                    try:
                        head = _recv_exact(conn, 2)
                        msg = _recv_exact(conn, struct.unpack("!H", head)[0]) if len(head) == 2 else b""
                        resp = _answer(log, "tcp", peer[0], local, msg)
                        if resp is not None:
                            conn.sendall(struct.pack("!H", len(resp)) + resp)
                    except OSError:
                        log.write(f"bad tcp {peer[0]}\n")


def start_dns(topo: Topology, log: Path, addrs: list[str], ns: str | None = None) -> None:
    """Run the server in `ns` (default wan) on `addrs`, logging to `log`; returns once it listens."""
    proc = topo.popen(ns or topo.wan, [sys.executable, str(Path(__file__).resolve()), str(log), *addrs],
                      stderr=subprocess.DEVNULL)  # fmt: skip
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if line.strip() != b"ready":
        raise RuntimeError(f"test DNS server did not start: {line!r}")


def queries(log: Path) -> list[list[str]]:
    """The queries the server logged so far, one field list per query."""
    if not log.exists():
        return []
    return [line.split() for line in log.read_text().splitlines() if line.strip()]


if __name__ == "__main__":
    serve(sys.argv[1], sys.argv[2:])
