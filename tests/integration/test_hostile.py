"""Hostile guests and bad days: the running programs under abuse.

Every test runs passt or pasta in the topology's HOST namespace; the "guest"
is either a Python client speaking passt's stream protocol (a 4-byte length,
then an Ethernet frame) or a Python script inside pasta's namespace writing
raw frames to the tap with an AF_PACKET socket.  Fuzzed and flooded
destinations can only ever reach the test's own namespaces: HOST routes
everything to WAN, and WAN neither forwards nor has a default route.

What is checked after each abuse is what a real guest would notice: a DHCP
DISCOVER still gets an OFFER, a TCP connection to a WAN server still carries
data (both checked by bytes, dissected with scapy), the process is alive, and
its descriptors (/proc/PID/fd) and memory (VmRSS) come back near idle.

Counts are configurable so CI stays quick; `nox -s fuzz` runs the full ones:
    PASST_HOSTILE_FUZZ_COUNT   fuzzed frames through passt's socket and pasta's tap (CI 10,000)
    PASST_FLOOD_COUNT          SYNs / UDP flows / forwarded connections per flood (CI 20,000;
                               forwarded connections are a tenth of it)
    PASST_INTEGRITY_MIB        MiB each way through pasta's tap (CI 1024)
"""

from __future__ import annotations

import json
import os
import random
import re
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Final

import pytest

from harness.netns import HOST_ADDR4, WAN_ADDR4, Topology
from harness.netns.topology import HOST_IF, HOST_MAC, WAN_ADDR6, WAN_GW4, WAN_GW6
from tests.integration.conftest import accepts_unix as _accepts
from tests.integration.conftest import wait_until as _wait
from tests.integration.stream_guest import GUEST_MAC, StreamGuest

REPO: Final = Path(__file__).resolve().parent.parent.parent
FUZZ_COUNT: Final = int(os.environ.get("PASST_HOSTILE_FUZZ_COUNT", "10000"))
FLOOD_COUNT: Final = int(os.environ.get("PASST_FLOOD_COUNT", "20000"))
INTEGRITY_MIB: Final = int(os.environ.get("PASST_INTEGRITY_MIB", "1024"))

ECHO_PORT: Final = 7000
SINK_PORT: Final = 7001
UDP_ECHO_PORT: Final = 7002
#: Inside 10.77.1.0/24 but not assigned in WAN: SYNs there are never answered.
SILENT4: Final = "10.77.1.200"
#: Near-idle margins after abuse (Python keeps freed arenas; the kernel keeps nothing of ours).
RSS_SLACK_KIB: Final = 64 << 10
FD_SLACK: Final = 8

_LEN: Final = struct.Struct(">I")
#: Frame lengths passt's socket accepts (an Ethernet header .. 65535 + 14).
MIN_OK: Final = 14
MAX_OK: Final = 65535 + 14

#: WAN's servers: TCP echo, TCP sink (accept, read, discard) and UDP echo, in one
#: selectors loop so a flood of connections costs descriptors, not processes.
WAN_SERVERS: Final = r"""
import selectors, socket, sys, time
sel = selectors.DefaultSelector()
def listen(port, echo):
    s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("::", port)); s.listen(4096); s.setblocking(False)
    sel.register(s, selectors.EVENT_READ, ("listen", echo))
listen(%(echo)d, True); listen(%(sink)d, False)
u = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
u.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
u.bind(("::", %(udp)d)); u.setblocking(False)
sel.register(u, selectors.EVENT_READ, ("udp", None))
while True:
    for key, _ in sel.select(1.0):
        kind, echo = key.data
        s = key.fileobj
        if kind == "listen":
            try:
                c, _ = s.accept()
            except OSError:
                time.sleep(0.01); continue
            c.setblocking(False)
            sel.register(c, selectors.EVENT_READ, ("conn", echo))
        elif kind == "udp":
            try:
                d, p = s.recvfrom(65535); s.sendto(d, p)
            except OSError:
                pass
        else:
            try:
                d = s.recv(1 << 16)
            except BlockingIOError:
                continue
            except OSError:
                d = b""
            if not d:
                sel.unregister(s); s.close(); continue
            if echo:
                try:
                    s.sendall(d)
                except OSError:
                    pass
""" % {"echo": ECHO_PORT, "sink": SINK_PORT, "udp": UDP_ECHO_PORT}  # noqa: UP031 (the script has braces)


# --------------------------------------------------------------------------- helpers






def fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO / "src"), str(REPO)])
    return env


def start_wan_servers(topo: Topology) -> None:
    topo.popen(topo.wan, [sys.executable, "-c", WAN_SERVERS], stdout=subprocess.DEVNULL)
    for port in (ECHO_PORT, SINK_PORT):
        topo.wait_listening(topo.wan, port)
    topo.wait_listening(topo.wan, UDP_ECHO_PORT, udp=True)


class PasstProc:
    """passt in the HOST namespace (foreground, logging to stderr) with its socket."""

    def __init__(self, topo: Topology, passt_bin: str, sock: str, *args: str) -> None:
        self.log = Path(sock + ".log")
        self._log = self.log.open("wb")
        self.proc = topo.popen(topo.host, [passt_bin, "-f", "-s", sock, *args], stdout=subprocess.DEVNULL,
                               stderr=self._log.fileno())  # fmt: skip
        self.sock = sock
        _wait(lambda: _accepts(sock), what="passt accepts")
        # `ip netns exec` execs passt: the Popen pid is passt itself
        self.pid = self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def text(self) -> str:
        return self.log.read_text(errors="replace")


def dhcp_discover(mac: str, xid: int) -> bytes:
    from scapy.compat import raw
    from scapy.layers.dhcp import BOOTP, DHCP
    from scapy.layers.inet import IP, UDP
    from scapy.layers.l2 import Ether

    chaddr = bytes.fromhex(mac.replace(":", ""))
    return raw(Ether(src=mac, dst="ff:ff:ff:ff:ff:ff") / IP(src="0.0.0.0", dst="255.255.255.255")
               / UDP(sport=68, dport=67) / BOOTP(chaddr=chaddr, xid=xid, flags=0x8000)
               / DHCP(options=[("message-type", "discover"), "end"]))  # fmt: skip


def is_offer(xid: int) -> Callable[[bytes], bool]:
    def pred(frame: bytes) -> bool:
        from scapy.layers.dhcp import BOOTP, DHCP
        from scapy.layers.l2 import Ether

        if len(frame) < 282 or frame[12:14] != b"\x08\x00" or frame[23] != 17:
            return False
        pkt = Ether(frame)
        if not pkt.haslayer(DHCP) or pkt[BOOTP].xid != xid:
            return False
        opts: dict[Any, Any] = dict(o for o in pkt[DHCP].options if isinstance(o, tuple))
        return bool(opts.get("message-type") == 2)

    return pred


def dhcp_works(guest: StreamGuest, xid: int | None = None, timeout: float = 5.0) -> str:
    """DISCOVER -> OFFER; returns the offered address."""
    from scapy.layers.dhcp import BOOTP
    from scapy.layers.l2 import Ether

    xid = xid if xid is not None else random.randrange(1 << 32)
    guest.send(dhcp_discover(guest.mac, xid))
    offer = Ether(guest.wait_for(is_offer(xid), timeout))
    guest.our_mac = offer.src
    return str(offer[BOOTP].yiaddr)


class MiniTcp:
    """Just enough TCP, from the guest side, to open a connection and exchange data."""

    def __init__(self, guest: StreamGuest, dst: str, dport: int, sport: int) -> None:
        self.g = guest
        self.dst, self.dport, self.sport = dst, dport, sport
        self.snd_nxt = random.randrange(1 << 32)
        self.rcv_nxt = 0

    def _seg(self, flags: str, payload: bytes = b"", **kw: Any) -> bytes:
        from scapy.compat import raw
        from scapy.layers.inet import IP, TCP
        from scapy.layers.l2 import Ether

        return raw(Ether(src=self.g.mac, dst=self.g.our_mac) / IP(src=HOST_ADDR4, dst=self.dst)
                   / TCP(sport=self.sport, dport=self.dport, flags=flags, seq=self.snd_nxt,
                         ack=self.rcv_nxt, window=65535, **kw) / payload)  # fmt: skip

    def _mine(self, frame: bytes) -> bool:
        return (len(frame) >= 54 and frame[12:14] == b"\x08\x00" and frame[23] == 6
                and frame[26:30] == socket.inet_aton(self.dst)
                and struct.unpack_from("!HH", frame, 14 + (frame[14] & 0xF) * 4) == (self.dport, self.sport))  # fmt: skip

    def connect(self, timeout: float = 5.0) -> None:
        from scapy.layers.inet import TCP
        from scapy.layers.l2 import Ether

        self.g.send(self._seg("S", options=[("MSS", 1400)]))
        self.snd_nxt = (self.snd_nxt + 1) & 0xFFFFFFFF
        synack = Ether(self.g.wait_for(self._mine, timeout))[TCP]
        assert synack.flags & 0x12 == 0x12, synack.flags
        self.rcv_nxt = (synack.seq + 1) & 0xFFFFFFFF
        self.g.send(self._seg("A"))

    def send(self, data: bytes) -> None:
        self.g.send(self._seg("PA", data))
        self.snd_nxt = (self.snd_nxt + len(data)) & 0xFFFFFFFF

    def recv(self, n: int, timeout: float = 5.0) -> bytes:
        from scapy.layers.inet import TCP
        from scapy.layers.l2 import Ether

        got = b""
        deadline = time.monotonic() + timeout
        while len(got) < n:
            seg = Ether(self.g.wait_for(self._mine, max(0.01, deadline - time.monotonic())))[TCP]
            payload = bytes(seg.payload)
            if seg.flags & 0x04:
                raise ConnectionResetError("RST from passt")
            if payload and seg.seq == self.rcv_nxt:
                got += payload
                self.rcv_nxt = (self.rcv_nxt + len(payload)) & 0xFFFFFFFF
                self.g.send(self._seg("A"))
        return got

    def echo(self, data: bytes) -> bytes:
        self.send(data)
        return self.recv(len(data))


def guest_addrs(guest_mac: str = GUEST_MAC, our_mac: str = HOST_MAC) -> Any:
    from tests.unit.fakes import Addrs

    return Addrs(guest_mac=guest_mac, our_mac=our_mac, guest4=HOST_ADDR4, gw4=WAN_GW4, srv4=WAN_ADDR4,
                 unrouted4=SILENT4, guest6="fd77::2", gw6_ll=WAN_GW6, srv6=WAN_ADDR6,
                 unrouted6="fd77:1::200")  # fmt: skip


def fuzz_frames(count: int, seed: int, addrs: Any) -> Iterator[bytes]:
    """Mutated frames that keep the stream framing intact (14 <= length <= 65535 + 14)."""
    from tests.unit.fakes import MAX_FRAME, Mutator, build_seeds

    mut = Mutator(build_seeds(addrs, sink_port=SINK_PORT, echo_port=UDP_ECHO_PORT, closed_port=7003), seed)
    n = 0
    while n < count:
        f = mut.frame()
        if 14 <= len(f) <= MAX_FRAME:
            n += 1
            yield f


@pytest.fixture
def wan(topo: Topology) -> Topology:
    start_wan_servers(topo)
    return topo


@pytest.fixture
def passt(wan: Topology, passt_bin: str, tmp_path: Path) -> PasstProc:
    return PasstProc(wan, passt_bin, str(tmp_path / "passt.socket"))


def _idle(p: PasstProc) -> tuple[int, int]:
    """(descriptors, RSS KiB) once a first guest came and went (imports and buffers warm)."""
    with StreamGuest(p.sock) as g:
        dhcp_works(g)
    time.sleep(0.2)
    return fd_count(p.pid), rss_kib(p.pid)


# --------------------------------------------------------------------------- fuzz


@pytest.mark.conformance("hostile.fuzz")
def test_passt_socket_fuzz_then_serves(passt: PasstProc) -> None:
    """Mutated frames through passt's socket: passt lives, answers DHCP, carries TCP, returns to idle."""
    fds0, rss0 = _idle(passt)
    sent = 0
    start = time.monotonic()
    with StreamGuest(passt.sock) as g:
        batch: list[bytes] = []
        for frame in fuzz_frames(FUZZ_COUNT, 77, guest_addrs()):
            batch.append(frame)
            if len(batch) == 64:
                g.send(*batch)
                sent += len(batch)
                batch.clear()
                g.drain()
        g.send(*batch)
        sent += len(batch)
        g.drain()
        elapsed = time.monotonic() - start
        assert passt.alive(), passt.text()[-2000:]
        assert dhcp_works(g, timeout=10) == HOST_ADDR4
        tcp = MiniTcp(g, WAN_ADDR4, ECHO_PORT, 50000)
        tcp.connect()
        assert tcp.echo(b"still carrying TCP after the fuzz\n") == b"still carrying TCP after the fuzz\n"
    print(f"\npasst socket fuzz: {sent} frames in {elapsed:.1f} s ({sent / elapsed:.0f}/s)")
    # the guest went away: every flow is gone with it
    _wait(lambda: fd_count(passt.pid) <= fds0 + FD_SLACK, 10, f"fds back to {fds0}")
    rss1 = rss_kib(passt.pid)
    print(f"passt fds {fds0} -> {fd_count(passt.pid)}, RSS {rss0} -> {rss1} KiB")
    assert rss1 <= rss0 + RSS_SLACK_KIB
    with StreamGuest(passt.sock) as g:
        assert dhcp_works(g) == HOST_ADDR4


PASTA_FUZZER = r"""
import json, os, random, socket, sys, time
from tests.unit.fakes import Addrs, MAX_FRAME, Mutator, build_seeds
ifname, count, tmp = sys.argv[1], int(sys.argv[2]), sys.argv[3]
mac = open(f"/sys/class/net/{ifname}/address").read().strip()
def wait_file(name):
    while not os.path.exists(os.path.join(tmp, name)):
        time.sleep(0.02)
open(os.path.join(tmp, "ready"), "w").close()
wait_file("go")
addrs = Addrs(guest_mac=mac, our_mac="%(our)s", guest4="%(g4)s", gw4="%(gw4)s", srv4="%(srv4)s",
              unrouted4="%(un4)s", guest6="fd77::2", gw6_ll="%(gw6)s", srv6="%(srv6)s",
              unrouted6="fd77:1::200")
mut = Mutator(build_seeds(addrs, sink_port=%(sink)d, echo_port=%(uecho)d, closed_port=7003), 99)
pk = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(3))
pk.bind((ifname, 0))
pk.setblocking(False)
sent = errors = 0
start = time.monotonic()
while sent + errors < count:
    f = mut.frame()
    if not 14 <= len(f) <= MAX_FRAME:
        continue
    try:
        pk.send(f)
        sent += 1
    except BlockingIOError:
        time.sleep(0.0005)
    except OSError:
        errors += 1
    if (sent + errors) %% 256 == 0:
        try:
            while True:
                pk.recv(1 << 17)
        except BlockingIOError:
            pass
elapsed = time.monotonic() - start
# afterwards: a DHCP exchange on the tap, and TCP through pasta
from scapy.compat import raw
from scapy.layers.dhcp import BOOTP, DHCP
from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import Ether
xid = 0x5eed
disc = raw(Ether(src=mac, dst="ff:ff:ff:ff:ff:ff") / IP(src="0.0.0.0", dst="255.255.255.255")
           / UDP(sport=68, dport=67) / BOOTP(chaddr=bytes.fromhex(mac.replace(":", "")), xid=xid, flags=0x8000)
           / DHCP(options=[("message-type", "discover"), "end"]))
offer = None
pk.setblocking(True)
pk.settimeout(0.5)
for _ in range(10):
    pk.send(disc)
    deadline = time.monotonic() + 0.5
    while time.monotonic() < deadline and offer is None:
        try:
            data = pk.recv(1 << 17)
        except TimeoutError:
            break
        p = Ether(data)
        if p.haslayer(DHCP) and p[BOOTP].xid == xid and p[BOOTP].op == 2:
            offer = str(p[BOOTP].yiaddr)
    if offer:
        break
s = socket.create_connection(("%(srv4)s", %(echo)d), timeout=10)
s.sendall(b"tcp after fuzz")
echo = s.recv(100)
s.close()
print(json.dumps({"sent": sent, "errors": errors, "elapsed": elapsed, "offer": offer, "echo": echo.decode()}))
sys.stdout.flush()
open(os.path.join(tmp, "done"), "w").close()
wait_file("finish")
"""
PASTA_FUZZER = PASTA_FUZZER % {"our": HOST_MAC, "g4": HOST_ADDR4, "gw4": WAN_GW4, "srv4": WAN_ADDR4, "un4": SILENT4, "gw6": WAN_GW6,
       "srv6": WAN_ADDR6, "sink": SINK_PORT, "uecho": UDP_ECHO_PORT, "echo": ECHO_PORT}


@pytest.mark.conformance("hostile.fuzz")
def test_pasta_tap_fuzz_then_serves(wan: Topology, pasta_bin: str, tmp_path: Path) -> None:
    """Mutated frames written to pasta's tap from inside the namespace: pasta lives, answers DHCP, carries TCP."""
    script = tmp_path / "fuzzer.py"
    script.write_text(PASTA_FUZZER)
    pasta = wan.popen(wan.host, [pasta_bin, "-q", "--config-net", "--", _py(), str(script), HOST_IF,
                                 str(FUZZ_COUNT), str(tmp_path)], env=_env())  # fmt: skip
    try:
        _wait(lambda: (tmp_path / "ready").exists() or pasta.poll() is not None, 30, "fuzzer ready")
        assert pasta.poll() is None, pasta.communicate()[1]
        fds0, rss0 = fd_count(pasta.pid), rss_kib(pasta.pid)
        (tmp_path / "go").touch()
        _wait(lambda: (tmp_path / "done").exists() or pasta.poll() is not None, 300, "fuzzer done")
        assert pasta.poll() is None, pasta.communicate()[1]
        # TCP flows from fuzzed SYNs end within the handshake timeout (10 s); UDP and
        # ICMP flows idle out later (180 s / 60 s), one descriptor each at most
        time.sleep(11)
        fds1, rss1 = fd_count(pasta.pid), rss_kib(pasta.pid)
        (tmp_path / "finish").touch()
        out, err = pasta.communicate(timeout=30)
    finally:
        (tmp_path / "go").touch()
        (tmp_path / "finish").touch()
    assert pasta.returncode == 0, err
    res = json.loads(out.decode().strip().splitlines()[-1])
    print(f"\npasta tap fuzz: {res['sent']} frames ({res['errors']} refused by the tap) in "
          f"{res['elapsed']:.1f} s; fds {fds0} -> {fds1}, RSS {rss0} -> {rss1} KiB")
    assert res["offer"] == HOST_ADDR4
    assert res["echo"] == "tcp after fuzz"
    assert rss1 <= rss0 + RSS_SLACK_KIB
    assert fds1 <= fds0 + FD_SLACK + FUZZ_COUNT // 20, (fds0, fds1)


def _py() -> str:
    return sys.executable


# --------------------------------------------------------------------------- stream framing


@pytest.mark.parametrize(
    "abuse",
    [
        pytest.param(_LEN.pack(0), id="length-0"),
        pytest.param(_LEN.pack(65535 + 15) + bytes(100), id="length-too-big"),
        pytest.param(_LEN.pack(0xFFFFFFFF), id="length-max"),
        pytest.param(_LEN.pack(13) + bytes(13), id="length-runt"),
        pytest.param(_LEN.pack(1000) + bytes(10), id="cut-mid-frame"),
        pytest.param(b"\x00\x00", id="cut-mid-length"),
    ],
)
@pytest.mark.conformance("hostile.stream-framing")
def test_stream_framing_abuse_then_next_guest(passt: PasstProc, abuse: bytes) -> None:
    """Broken framing on passt's socket ends that guest (with a log line); the next guest is served."""
    with StreamGuest(passt.sock) as g:
        assert dhcp_works(g) == HOST_ADDR4
        g.sock.sendall(abuse)
        if abuse[:4] in (_LEN.pack(0), _LEN.pack(65535 + 15), _LEN.pack(0xFFFFFFFF), _LEN.pack(13)):
            # passt resets the link: we see the end of the stream
            with pytest.raises(EOFError):
                g.wait_for(lambda _f: False, timeout=5)
    _wait(lambda: "disconnected" in passt.text(), 5, "log line")
    assert passt.alive()
    with StreamGuest(passt.sock) as g:
        assert dhcp_works(g) == HOST_ADDR4
    bad_length = len(abuse) >= 4 and not MIN_OK <= _LEN.unpack_from(abuse)[0] <= MAX_OK
    assert bool(re.search(r"frame length of \d+ .*framing lost", passt.text())) == bad_length, passt.text()


@pytest.mark.conformance("hostile.stream-framing")
def test_stream_frames_dribbled_and_packed(passt: PasstProc) -> None:
    """A DISCOVER sent one byte per write, and 50 DISCOVERs in one write, each get their OFFERs."""
    with StreamGuest(passt.sock) as g:
        disc = dhcp_discover(GUEST_MAC, 0xD1)
        data = _LEN.pack(len(disc)) + disc
        for i in range(len(data)):
            g.sock.send(data[i : i + 1])
            time.sleep(0.0005)
        g.wait_for(is_offer(0xD1))
        g.send(*[dhcp_discover(GUEST_MAC, 0x100 + i) for i in range(50)])
        for i in range(50):
            g.wait_for(is_offer(0x100 + i))


@pytest.mark.conformance("hostile.stream-framing")
def test_guest_that_never_reads(passt: PasstProc) -> None:
    """A guest that floods ARP requests and never reads: passt's queue is bounded, it stays responsive."""
    from scapy.compat import raw
    from scapy.layers.l2 import ARP, Ether

    fds0, rss0 = _idle(passt)
    arp = raw(Ether(src=GUEST_MAC, dst="ff:ff:ff:ff:ff:ff")
              / ARP(op=1, hwsrc=GUEST_MAC, psrc=HOST_ADDR4, pdst=WAN_GW4))  # fmt: skip
    frame = _LEN.pack(len(arp)) + arp
    g = StreamGuest(passt.sock)
    g.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    g.sock.setblocking(False)
    pending = memoryview(frame * 1000)
    sent_bytes = 0
    start = time.monotonic()
    stalls = 0
    while sent_bytes < 300_000 * len(frame) and time.monotonic() - start < 30:
        try:
            n = g.sock.send(pending)  # a partial write continues where it stopped: framing intact
        except BlockingIOError:
            stalls += 1
            if stalls > 200:
                break  # passt stopped reading us: back-pressure, fine
            time.sleep(0.01)
            continue
        except OSError:
            break  # passt gave up on us: also fine, as long as it serves the next guest
        sent_bytes += n
        pending = pending[n:] if n < len(pending) else memoryview(frame * 1000)
    sent = sent_bytes // len(frame)
    rss_peak = rss_kib(passt.pid)
    assert passt.alive()
    g.close()
    with StreamGuest(passt.sock) as g2:
        assert dhcp_works(g2, timeout=10) == HOST_ADDR4
    print(f"\nnever-reading guest: {sent} ARP requests sent in {time.monotonic() - start:.1f} s; "
          f"RSS {rss0} -> peak {rss_peak} KiB")
    # the out queue is bounded (16 MiB): memory stays bounded too
    assert rss_peak <= rss0 + (16 << 10) + RSS_SLACK_KIB
    _wait(lambda: fd_count(passt.pid) <= fds0 + FD_SLACK, 5, "fds back")


# --------------------------------------------------------------------------- floods


def _syn(mac: str, our_mac: str, dst: str, sport: int, dport: int) -> bytes:
    from scapy.compat import raw
    from scapy.layers.inet import IP, TCP
    from scapy.layers.l2 import Ether

    return raw(Ether(src=mac, dst=our_mac) / IP(src=HOST_ADDR4, dst=dst) / TCP(sport=sport, dport=dport, flags="S"))


def _retarget(template: bytes, dst: bytes, sport: int, dport: int, proto_off: int) -> bytes:
    """Copy of an IPv4 frame with new destination and ports (L4 checksum left stale: not verified)."""
    f = bytearray(template)
    f[30:34] = dst
    f[24:26] = b"\0\0"
    from passt.wire.checksum import checksum

    f[24:26] = checksum(f[14:34]).to_bytes(2, "big")
    struct.pack_into("!HH", f, proto_off, sport, dport)
    return bytes(f)


def _flood(g: StreamGuest, frames: Iterator[bytes], batch: int = 256) -> tuple[int, float]:
    start = time.monotonic()
    n = 0
    buf: list[bytes] = []
    for f in frames:
        buf.append(f)
        if len(buf) == batch:
            g.send(*buf)
            n += len(buf)
            buf.clear()
            g.drain()
    if buf:
        g.send(*buf)
        n += len(buf)
    g.drain()
    return n, time.monotonic() - start


@pytest.mark.conformance("hostile.floods")
def test_syn_flood_distinct_destinations(passt: PasstProc) -> None:
    """SYNs to distinct WAN destinations: memory bounded, DHCP and an open TCP connection keep working."""
    fds0, rss0 = _idle(passt)
    with StreamGuest(passt.sock) as g:
        dhcp_works(g)
        keep = MiniTcp(g, WAN_ADDR4, ECHO_PORT, 40000)
        keep.connect()
        assert keep.echo(b"before") == b"before"
        tpl = _syn(GUEST_MAC, g.our_mac, WAN_ADDR4, 1, 1)

        def frames() -> Iterator[bytes]:
            for i in range(FLOOD_COUNT):
                # 10.77.1.1..254 x ports: .1 refuses at once, the rest never answer
                host = 1 + i % 254
                yield _retarget(tpl, bytes((10, 77, 1, host)), 1024 + i % 60000, 1 + (i // 254) % 65000, 34)

        n, elapsed = _flood(g, frames())
        peak_fds, peak_rss = fd_count(passt.pid), rss_kib(passt.pid)
        assert passt.alive(), passt.text()[-2000:]
        assert dhcp_works(g, timeout=10) == HOST_ADDR4
        assert keep.echo(b"during the aftermath") == b"during the aftermath"
        # unanswered handshakes are recycled after the SYN timeout (10 s)
        _wait(lambda: fd_count(passt.pid) <= fds0 + FD_SLACK + 2, 30, "half-open flows recycled")
        g.drain()
        assert keep.echo(b"after") == b"after"
        fds1, rss1 = fd_count(passt.pid), rss_kib(passt.pid)
    print(f"\nSYN flood: {n} SYNs in {elapsed:.1f} s ({n / elapsed:.0f}/s); fds {fds0} -> peak {peak_fds} -> {fds1}; "
          f"RSS {rss0} -> peak {peak_rss} -> {rss1} KiB")
    assert peak_rss <= rss0 + 256 << 10
    assert rss1 <= peak_rss


@pytest.mark.conformance("hostile.floods")
def test_udp_flow_flood(passt: PasstProc) -> None:
    """New UDP flows by the thousand: bounded memory and descriptors; DHCP and a new UDP flow still work."""
    from scapy.compat import raw
    from scapy.layers.inet import IP, UDP
    from scapy.layers.l2 import Ether

    fds0, rss0 = _idle(passt)
    limit = int(Path(f"/proc/{passt.pid}/limits").read_text().split("Max open files")[1].split()[0])
    with StreamGuest(passt.sock) as g:
        dhcp_works(g)
        tpl = raw(Ether(src=GUEST_MAC, dst=g.our_mac) / IP(src=HOST_ADDR4, dst=WAN_ADDR4)
                  / UDP(sport=1, dport=1, chksum=0) / b"flood")  # fmt: skip

        def frames() -> Iterator[bytes]:
            for i in range(FLOOD_COUNT):
                yield _retarget(tpl, bytes((10, 77, 1, 1 + i % 254)), 1024 + i // 254, 9, 34)

        n, elapsed = _flood(g, frames())
        assert passt.alive(), passt.text()[-2000:]
        # the OFFER comes after passt handled every datagram before the DISCOVER
        assert dhcp_works(g, timeout=30) == HOST_ADDR4
        peak_fds, peak_rss = fd_count(passt.pid), rss_kib(passt.pid)
        # a fresh flow to the echo server: answered, unless the flood took every descriptor
        probe = raw(Ether(src=GUEST_MAC, dst=g.our_mac) / IP(src=HOST_ADDR4, dst=WAN_ADDR4)
                    / UDP(sport=65000, dport=UDP_ECHO_PORT) / b"echo me")  # fmt: skip
        # flows that never got a reply are recycled for new ones after 1 s idle (udp.py)
        time.sleep(1.2)
        g.drain()
        g.send(probe)
        answered = True
        try:
            g.wait_for(lambda f: f[12:14] == b"\x08\x00" and f[23] == 17 and f.endswith(b"echo me"), 3)
        except TimeoutError:
            answered = False
    print(f"\nUDP flood: {n} datagrams in {elapsed:.1f} s ({n / elapsed:.0f}/s); fds {fds0} -> peak {peak_fds} "
          f"(limit {limit}); RSS {rss0} -> peak {peak_rss} KiB; fresh flow answered: {answered}")
    assert peak_fds <= limit
    assert answered
    assert peak_rss <= rss0 + (256 << 10)
    # the guest left: every flow and descriptor is recycled
    _wait(lambda: fd_count(passt.pid) <= fds0 + FD_SLACK, 20, "flows recycled")


@pytest.mark.conformance("hostile.floods")
def test_forwarded_connection_storm(wan: Topology, passt_bin: str, tmp_path: Path) -> None:
    """A storm of connections from WAN to a -t port the guest never answers: bounded, recycled, still serving."""
    p = PasstProc(wan, passt_bin, str(tmp_path / "p.sock"), "-t", "8080")
    fds0, rss0 = _idle(p)
    storm = max(200, FLOOD_COUNT // 10)
    script = (
        "import socket, sys, time\n"
        f"host = '{HOST_ADDR4}'\n"
        "n = int(sys.argv[1]); ok = 0; socks = []\n"
        "start = time.monotonic()\n"
        "for i in range(n):\n"
        "    s = socket.socket(); s.setblocking(False)\n"
        "    s.connect_ex((host, 8080)); socks.append(s)\n"
        "    if len(socks) >= 500:\n"
        "        time.sleep(0.05)\n"
        "        for s in socks: s.close()\n"
        "        socks = []\n"
        "for s in socks: s.close()\n"
        "print(time.monotonic() - start)\n"
    )
    with StreamGuest(p.sock) as g:
        dhcp_works(g)
        keep = MiniTcp(g, WAN_ADDR4, ECHO_PORT, 40001)
        keep.connect()
        client = wan.popen(wan.wan, [sys.executable, "-c", script, str(storm)])
        # the guest hears SYNs for every forwarded connection and never answers them
        deadline = time.monotonic() + 120
        while client.poll() is None and time.monotonic() < deadline:
            g.drain()
            time.sleep(0.05)
        out, err = client.communicate(timeout=10)
        peak_fds, peak_rss = fd_count(p.pid), rss_kib(p.pid)
        assert p.alive(), p.text()[-2000:]
        g.drain()
        assert dhcp_works(g, timeout=10) == HOST_ADDR4
        assert keep.echo(b"storm over") == b"storm over"
        _wait(lambda: (g.drain() or True) and fd_count(p.pid) <= fds0 + FD_SLACK + 2, 30, "storm recycled")
        fds1 = fd_count(p.pid)
    print(f"\n-t storm: {storm} connections in {float(out or 0):.1f} s; fds {fds0} -> peak {peak_fds} -> {fds1}; "
          f"RSS {rss0} -> peak {peak_rss} KiB")
    assert peak_rss <= rss0 + (256 << 10)


# --------------------------------------------------------------------------- churn


@pytest.mark.conformance("hostile.churn", "passt.reconnect")
def test_guest_reconnects_100_times(passt: PasstProc) -> None:
    """A guest that disconnects and reconnects 100 times gets a DHCP OFFER every time."""
    fds0, rss0 = _idle(passt)
    start = time.monotonic()
    for i in range(100):
        with StreamGuest(passt.sock) as g:
            assert dhcp_works(g, xid=i + 1) == HOST_ADDR4
    elapsed = time.monotonic() - start
    assert passt.alive()
    _wait(lambda: fd_count(passt.pid) <= fds0, 5, "no descriptor left behind")
    print(f"\n100 reconnects in {elapsed:.1f} s; RSS {rss0} -> {rss_kib(passt.pid)} KiB")
    assert rss_kib(passt.pid) <= rss0 + (16 << 10)  # buffers touched once, not a leak


def _sleep_pid(holder: subprocess.Popen[bytes]) -> int:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        out = subprocess.run(["pgrep", "-P", str(holder.pid)], capture_output=True, text=True).stdout.split()
        for p in [int(x) for x in out] + [holder.pid]:
            try:
                if Path(f"/proc/{p}/comm").read_text().strip() == "sleep":
                    if os.readlink(f"/proc/{p}/ns/net") != os.readlink("/proc/self/ns/net"):
                        return p
            except OSError:
                continue
        time.sleep(0.02)
    raise TimeoutError("unshare -rUn sleep did not start")


def _gone(pid: int) -> bool:
    """No such process, or a zombie waiting for its parent to reap it."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def _readlink(path: str) -> str:
    try:
        return os.readlink(path)
    except OSError:
        return ""


def _descendants(pid: int) -> list[int]:
    out: list[int] = []
    todo = [pid]
    while todo:
        p = todo.pop()
        try:
            kids = [int(k) for t in os.listdir(f"/proc/{p}/task")
                    for k in Path(f"/proc/{p}/task/{t}/children").read_text().split()]  # fmt: skip
        except OSError:
            continue
        out.extend(kids)
        todo.extend(kids)
    return out


@pytest.mark.conformance("hostile.churn", "pasta.join-pid")
def test_pasta_namespace_owner_dies(topo: Topology, pasta_bin: str) -> None:
    """pasta joined to a PID whose owner dies exits with a clear message, leaving no helper and no tap."""
    holder = topo.popen(topo.host, ["unshare", "-rUn", "sleep", "300"])
    pid = _sleep_pid(holder)
    # keep the namespace reachable after its owner dies, to look for leftovers in it
    name = f"pt-{os.getpid()}-owner"
    subprocess.run(["ip", "netns", "attach", name, str(pid)], check=True, capture_output=True)
    try:
        pasta = topo.popen(topo.host, [pasta_bin, "-f", "--config-net", str(pid)])
        _wait(lambda: HOST_IF in subprocess.run(["ip", "-n", name, "-o", "link"], capture_output=True,
                                                text=True).stdout, 10, "tap in the namespace")  # fmt: skip
        # pasta watches the owner through a pidfd once it is set up: kill only after that
        _wait(lambda: any("pidfd" in _readlink(f"/proc/{pasta.pid}/fd/{fd}")
                          for fd in os.listdir(f"/proc/{pasta.pid}/fd")), 10, "pasta watches the PID")  # fmt: skip
        helpers = _descendants(pasta.pid)
        assert helpers, "expected pasta's namespace helper"
        os.kill(pid, 9)
        holder.wait(10)
        rc = pasta.wait(10)
        _, err = pasta.communicate()
        assert rc == 0, err.decode()
        lines = [ln for ln in err.decode().splitlines() if str(pid) in ln]
        assert lines and re.search(r"exit|gone", lines[-1]), err.decode()
        _wait(lambda: all(_gone(h) for h in helpers), 5, f"helpers {helpers} gone")
        links = subprocess.run(["ip", "-n", name, "-o", "link"], capture_output=True, text=True).stdout
        assert HOST_IF not in links, links
        assert subprocess.run(["ip", "netns", "pids", name], capture_output=True, text=True).stdout.strip() == ""
    finally:
        subprocess.run(["ip", "netns", "del", name], capture_output=True)


@pytest.mark.conformance("hostile.churn", "cli.errors")
def test_pasta_target_pid_missing(topo: Topology, pasta_bin: str) -> None:
    """A TARGET_PID that does not exist: exactly one clear line (also without -q), non-zero exit."""
    pid = 4194301
    while Path(f"/proc/{pid}").exists():
        pid -= 1
    res = topo.run(topo.host, [pasta_bin, "-f", str(pid)], timeout=20)
    assert res.returncode != 0
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and str(pid) in lines[0], res.stderr
    assert res.stdout == ""


# --------------------------------------------------------------------------- integrity


SENDER: Final = r"""
import hashlib, random, socket, sys
host, port, mib, seed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
rng = random.Random(seed); h = hashlib.sha256()
s = socket.create_connection((host, port), timeout=60)
for _ in range(mib):
    chunk = rng.randbytes(1 << 20); h.update(chunk); s.sendall(chunk)
s.shutdown(socket.SHUT_WR); s.recv(1); s.close()
print(h.hexdigest())
"""

RECEIVER: Final = r"""
import hashlib, socket, sys
port = int(sys.argv[1])
ls = socket.socket(socket.AF_INET6); ls.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); ls.bind(("::", port)); ls.listen(1)
print("listening", flush=True)
c, _ = ls.accept(); h = hashlib.sha256(); n = 0
buf = bytearray(1 << 20); mv = memoryview(buf)
while True:
    k = c.recv_into(buf)
    if not k:
        break
    h.update(mv[:k]); n += k
c.close()
print(n, h.hexdigest(), flush=True)
"""


@pytest.mark.parametrize("direction", ["wan-to-ns", "ns-to-wan"])
@pytest.mark.conformance("hostile.integrity")
def test_pasta_tap_integrity_1gib(wan: Topology, pasta_bin: str, tmp_path: Path, direction: str) -> None:
    """1 GiB through pasta's tap (not the loopback bypass) arrives intact: SHA-256 of sent == received."""
    snd, rcv = tmp_path / "send.py", tmp_path / "recv.py"
    snd.write_text(SENDER)
    rcv.write_text(RECEIVER)
    start = time.monotonic()
    if direction == "ns-to-wan":
        receiver = wan.popen(wan.wan, [_py(), str(rcv), "9100"])
        assert receiver.stdout is not None
        assert receiver.stdout.readline().strip() == b"listening"
        res = wan.run(wan.host, [pasta_bin, "-q", "--config-net", "--", _py(), str(snd), WAN_ADDR4, "9100",
                                 str(INTEGRITY_MIB), "7"], timeout=600)  # fmt: skip
        assert res.returncode == 0, res.stderr
        sent_digest = res.stdout.split()[-1]
        got = receiver.communicate(timeout=60)[0].decode().split()
    else:
        # the namespace receives: the sender in WAN connects to a -t forwarded port (not loopback: tap path)
        out = tmp_path / "got"
        pasta = wan.popen(wan.host, [pasta_bin, "-q", "--config-net", "-t", "9101", "--", "sh", "-c",
                                     f"{_py()} {rcv} 9101 > {out}"])  # fmt: skip
        _wait(lambda: out.exists() and b"listening" in out.read_bytes(), 20, "receiver in the namespace")
        _wait(lambda: wan.run(wan.host, ["ss", "-Hltn", "sport = :9101"]).stdout.strip() != "", 20, "-t 9101")
        res = wan.run(wan.wan, [_py(), str(snd), HOST_ADDR4, "9101", str(INTEGRITY_MIB), "8"], timeout=600)
        assert res.returncode == 0, res.stderr
        sent_digest = res.stdout.split()[-1]
        assert pasta.wait(60) == 0
        got = out.read_text().split()[1:]
    elapsed = time.monotonic() - start
    print(f"\n{INTEGRITY_MIB} MiB {direction} through the tap in {elapsed:.1f} s "
          f"({INTEGRITY_MIB * 8 / 1024 / elapsed:.2f} Gbit/s)")
    assert got == [str(INTEGRITY_MIB << 20), sent_digest]


# --------------------------------------------------------------------------- exposure


def _listeners(topo: Topology) -> list[str]:
    return topo.run(topo.host, ["ss", "-Hltunp"]).stdout.strip().splitlines()


@pytest.mark.conformance("security.exposure")
def test_pasta_t_8080_listens_on_nothing_else(topo: Topology, pasta_bin: str, tmp_path: Path) -> None:
    """pasta -t 8080 listens on port 8080 (TCP, and UDP which follows it) in the host namespace, nothing else."""
    pasta = topo.popen(topo.host, [pasta_bin, "-q", "--config-net", "-t", "8080", "--", "sleep", "60"])
    _wait(lambda: any(":8080 " in ln for ln in _listeners(topo)), 20, "pasta listens on 8080")
    time.sleep(1.5)  # let pasta's periodic port scans run at least once
    lines = _listeners(topo)
    assert any(ln.startswith("tcp ") for ln in lines), lines
    for ln in lines:
        fields = ln.split()
        assert fields[0] in ("tcp", "udp") and fields[4].endswith(":8080"), lines
        assert "pasta" in ln, ln
    pasta.terminate()


@pytest.mark.conformance("security.exposure")
def test_passt_t_8080_listens_on_nothing_else(topo: Topology, passt_bin: str, tmp_path: Path) -> None:
    """passt -t 8080 listens on port 8080 (TCP, and UDP which follows it) and on nothing else."""
    sock = str(tmp_path / "p.sock")
    topo.popen(topo.host, [passt_bin, "-f", "-q", "-s", sock, "-t", "8080"])
    _wait(lambda: _accepts(sock), what="passt accepts")
    # in front (-f) the guest socket listens first (as in C passt), the forwards a moment later
    _wait(lambda: any(":8080 " in ln for ln in _listeners(topo)), 20, "passt listens on 8080")
    lines = _listeners(topo)
    assert any(ln.startswith("tcp ") for ln in lines), lines
    for ln in lines:
        fields = ln.split()
        assert fields[0] in ("tcp", "udp") and fields[4].endswith(":8080"), lines
        assert "passt" in ln, ln

