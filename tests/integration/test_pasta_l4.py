"""pasta data path with real programs: HTTP transfers, iperf3, ping, port forwarding.

The namespace client talks to servers in the wan namespace; forwarded ports are
reached from wan through the host namespace's address.  Every transfer is
checked byte for byte (SHA-256) or by what the peer saw.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import time
from pathlib import Path

import pytest

from harness.netns import HOST_ADDR4, HOST_ADDR6, WAN_ADDR4, WAN_ADDR6, Topology
from harness.netns.topology import WAN_GW4

BLOB_MIB = 64


@pytest.fixture(scope="module")
def blob(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A 64 MiB file of random bytes and its SHA-256."""
    path = tmp_path_factory.mktemp("blob") / "blob"
    data = os.urandom(BLOB_MIB << 20)
    path.write_bytes(data)
    return path, hashlib.sha256(data).hexdigest()


def _serving(servers: list[tuple[str, int, bool]], marker: Path) -> str:
    """A namespace script: start servers, touch `marker` once all listen, then wait for them."""
    parts = [f"{cmd} &" for cmd, _, _ in servers]
    for _, port, udp in servers:
        flag = "-Hlun" if udp else "-Hltn"
        parts.append(f"while ! ss {flag} 'sport = :{port}' | grep -q .; do sleep 0.02; done;")
    parts.append(f"touch {marker}; wait")
    return " ".join(parts)


def _wait_file(path: Path, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{path} never appeared: the namespace's servers did not start")
        time.sleep(0.02)


def _pasta(topo: Topology, pasta_bin: str, script: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return topo.run(topo.host, [pasta_bin, "-q", "--config-net", *args, "--", "sh", "-ec", script], timeout=timeout)


@pytest.mark.parametrize("addr", [WAN_ADDR4, f"[{WAN_ADDR6}]"], ids=["ipv4", "ipv6"])
@pytest.mark.conformance("tcp.no-buffering")
def test_http_download_64mib_intact(topo: Topology, pasta_bin: str, blob: tuple[Path, str], addr: str) -> None:
    """The namespace downloads 64 MiB over HTTP from wan; the SHA-256 matches."""
    path, digest = blob
    topo.start_http(path.parent)
    res = _pasta(topo, pasta_bin, f"busybox wget -q -O - http://{addr}:8080/blob | sha256sum")
    assert res.returncode == 0, res.stderr
    assert res.stdout.split()[0] == digest


@pytest.mark.parametrize("addr", [WAN_ADDR4, WAN_ADDR6], ids=["ipv4", "ipv6"])
@pytest.mark.conformance("tcp.ack-as-peer-acks")
def test_upload_64mib_intact(topo: Topology, pasta_bin: str, blob: tuple[Path, str], addr: str, tmp_path: Path) -> None:
    """The namespace uploads 64 MiB to a wan sink; what arrived has the same SHA-256."""
    path, digest = blob
    out = tmp_path / "sum"
    topo.popen(topo.wan, ["socat", "-u", "TCP6-LISTEN:9000,ipv6only=0,reuseaddr", f"SYSTEM:sha256sum > {out}"])
    topo.wait_listening(topo.wan, 9000)
    target = f"[{addr}]" if ":" in addr else addr
    res = _pasta(topo, pasta_bin, f"socat -u FILE:{path} TCP:{target}:9000")
    assert res.returncode == 0, res.stderr
    for _ in range(100):
        if out.exists() and out.read_text().strip():
            break
        subprocess.run(["sleep", "0.05"])
    assert out.read_text().split()[0] == digest


@pytest.mark.parametrize("reverse", [False, True], ids=["upload", "download"])
@pytest.mark.conformance("example.pasta.iperf3-loopback")
def test_iperf3_10s_no_stall(topo: Topology, pasta_bin: str, reverse: bool) -> None:
    """iperf3 runs 10 s each way through the tap without an interval at 0 bit/s."""
    topo.start_iperf3()
    flag = " -R" if reverse else ""
    res = _pasta(topo, pasta_bin, f"iperf3 -J -t 10 -c {WAN_ADDR4}{flag}", timeout=60)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr
    report = json.loads(res.stdout)
    rates = [iv["sum"]["bits_per_second"] for iv in report["intervals"]]
    assert len(rates) >= 9 and min(rates) > 0, rates
    total = report["end"]["sum_received"]["bits_per_second"]
    print(f"iperf3 {'download' if reverse else 'upload'}: {total / 1e9:.2f} Gbit/s")


@pytest.mark.parametrize("addr", [WAN_ADDR4, WAN_ADDR6], ids=["ipv4", "ipv6"])
@pytest.mark.conformance("example.pasta.ping", "notes.icmp.id-preserved")
def test_ping_wan(topo: Topology, pasta_bin: str, addr: str) -> None:
    """ping from the namespace to wan gets replies (IPv4 and IPv6)."""
    res = _pasta(topo, pasta_bin, f"ping -c 3 -i 0.2 -W 2 {addr}")
    assert res.returncode == 0, res.stdout + res.stderr
    assert " 0% packet loss" in res.stdout


@pytest.mark.conformance("opt.tcp-ports", "ports.syntax", "notes.nat.src-gateway")
def test_forwarded_tcp_port_with_mapping_shows_real_peer(topo: Topology, pasta_bin: str, tmp_path: Path) -> None:
    """-t 8022:22: a wan client reaches the namespace's port 22; the server sees wan's real address."""
    ready = tmp_path / "ready"
    script = _serving([("socat TCP-LISTEN:22,reuseaddr 'SYSTEM:echo peer=$SOCAT_PEERADDR; cat'", 22, False)], ready)
    proc = topo.popen(topo.host, [pasta_bin, "-q", "--config-net", "-t", "8022:22", "--", "sh", "-c", script])
    topo.wait_listening(topo.host, 8022)
    _wait_file(ready)
    res = topo.run(topo.wan, ["sh", "-c", f"echo hello | socat -t 2 - TCP:{HOST_ADDR4}:8022"], timeout=20)
    assert res.returncode == 0, res.stderr
    assert res.stdout.splitlines() == [f"peer={WAN_ADDR4}", "hello"]
    proc.wait(10)


@pytest.mark.conformance("opt.tcp-ports", "ports.syntax", "ports.ipv6-also-ipv4")
def test_forwarded_range_ipv6_and_ipv4(topo: Topology, pasta_bin: str, tmp_path: Path) -> None:
    """-t 9000-9001:9100-9101: both ports forward, over IPv4 and IPv6."""
    ready = tmp_path / "ready"
    script = _serving([
        ("socat TCP6-LISTEN:9100,ipv6only=0,reuseaddr,fork 'SYSTEM:echo a'", 9100, False),
        ("socat TCP6-LISTEN:9101,ipv6only=0,reuseaddr,fork 'SYSTEM:echo b'", 9101, False),
    ], ready)
    topo.popen(topo.host, [pasta_bin, "-q", "--config-net", "-t", "9000-9001:9100-9101", "--", "sh", "-c", script])
    topo.wait_listening(topo.host, 9001)
    _wait_file(ready)
    for addr in (HOST_ADDR4, f"[{HOST_ADDR6}]"):
        for port, word in ((9000, "a"), (9001, "b")):
            res = topo.run(topo.wan, ["socat", "-t", "2", "-", f"TCP:{addr}:{port}"], input="", timeout=20)
            assert res.stdout.strip() == word, (addr, port, res.stderr)


@pytest.mark.conformance("opt.udp-ports")
def test_forwarded_udp_echo(topo: Topology, pasta_bin: str, tmp_path: Path) -> None:
    """-u 5353: a UDP datagram from wan reaches the namespace's echo server and the reply returns."""
    ready = tmp_path / "ready"
    script = _serving([("socat UDP6-RECVFROM:5353,ipv6only=0,fork EXEC:cat", 5353, True)], ready)
    topo.popen(topo.host, [pasta_bin, "-q", "--config-net", "-t", "none", "-u", "5353", "--", "sh", "-c", script])
    topo.wait_listening(topo.host, 5353, udp=True)
    _wait_file(ready)
    for _ in range(3):  # a datagram may be lost on a loaded machine: ask again, as a client would
        res = topo.run(topo.wan, ["socat", "-t", "2", "-T", "2", "-", f"UDP:{HOST_ADDR4}:5353"], input="ping-udp\n",
                       timeout=20)
        if res.stdout.strip():
            break
    assert res.stdout.strip() == "ping-udp", res.stderr


@pytest.mark.conformance("notes.nat.src-gateway")
def test_forwarded_from_host_local_address_seen_as_gateway(topo: Topology, pasta_bin: str, tmp_path: Path) -> None:
    """A connection from the host itself (local source) reaches the namespace from the gateway address."""
    ready = tmp_path / "ready"
    script = _serving([("socat TCP-LISTEN:2222,reuseaddr 'SYSTEM:echo peer=$SOCAT_PEERADDR'", 2222, False)], ready)
    topo.popen(topo.host, [pasta_bin, "-q", "--config-net", "-t", "2222", "--", "sh", "-c", script])
    topo.wait_listening(topo.host, 2222)
    _wait_file(ready)
    res = topo.run(topo.host, ["socat", "-t", "2", "-", f"TCP:{HOST_ADDR4}:2222"], input="", timeout=20)
    assert res.stdout.strip() == f"peer={WAN_GW4}", res.stderr


@pytest.mark.conformance("opt.tcp-ports", "ports.auto-scan", "ports.pasta-auto")
def test_auto_forwards_port_bound_later(topo: Topology, pasta_bin: str) -> None:
    """pasta's default -t auto forwards a port bound in the namespace after start (rescanned while running)."""
    script = "sleep 1; socat TCP-LISTEN:7777,reuseaddr 'SYSTEM:echo auto'"
    topo.popen(topo.host, [pasta_bin, "-q", "--config-net", "--", "sh", "-c", script])
    topo.wait_listening(topo.host, 7777, timeout=15)
    res = topo.run(topo.wan, ["socat", "-t", "2", "-", f"TCP:{HOST_ADDR4}:7777"], input="", timeout=20)
    assert res.stdout.strip() == "auto", res.stderr


CONNECT_SCRIPT = r"""
import socket, sys, time, pathlib
addr, port, ready, done, stop = sys.argv[1], int(sys.argv[2]), *map(pathlib.Path, sys.argv[3:6])
ready.touch()
while not pathlib.Path(str(ready) + ".go").exists():
    time.sleep(0.01)
fam = socket.AF_INET6 if ":" in addr else socket.AF_INET
for i in range(1000):
    with socket.create_connection((addr, port), timeout=10) as s:
        s.sendall(b"x%d\n" % i)
        assert s.recv(64) == b"x%d\n" % i
socks = [socket.create_connection((addr, port), timeout=10) for _ in range(200)]
for i, s in enumerate(socks):
    s.sendall(b"y%d\n" % i)
for i, s in enumerate(socks):
    assert s.recv(64) == b"y%d\n" % i
    s.close()
done.touch()
while not stop.exists():
    time.sleep(0.05)
"""


def _fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


@pytest.mark.parametrize("addr", [WAN_ADDR4, WAN_ADDR6], ids=["ipv4", "ipv6"])
@pytest.mark.conformance("tcp.flow-table-bounded")
def test_1000_sequential_and_200_concurrent_connections(topo: Topology, pasta_bin: str, tmp_path: Path,
                                                        addr: str) -> None:
    """1,000 short connections in a row and 200 at once complete; pasta's descriptors return to idle."""
    topo.start_echo(port=7001)
    script = tmp_path / "conn.py"
    script.write_text(CONNECT_SCRIPT)
    ready, done, stop = tmp_path / "ready", tmp_path / "done", tmp_path / "stop"
    proc = topo.popen(topo.host, [pasta_bin, "-q", "--config-net", "-t", "none", "-u", "none", "--",
                                  "python3", str(script), addr, "7001", str(ready), str(done), str(stop)])
    try:
        _wait_file(ready)
        idle = _fds(proc.pid)
        Path(str(ready) + ".go").touch()
        _wait_file(done, timeout=120)
        deadline = time.monotonic() + 20
        while _fds(proc.pid) > idle and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _fds(proc.pid) <= idle, f"{_fds(proc.pid)} descriptors open, {idle} when idle"
    finally:
        stop.touch()
    assert proc.wait(30) == 0


@pytest.mark.conformance("notes.nat.gateway-to-loopback")
def test_new_connection_to_gateway_reaches_gateway_not_host_loopback(topo: Topology, pasta_bin: str) -> None:
    """A new namespace connection to the gateway address goes to the gateway, not to the host's loopback."""
    topo.popen(topo.wan, ["socat", "TCP-LISTEN:7005,reuseaddr,fork", "SYSTEM:echo wan"])
    topo.popen(topo.host, ["socat", "TCP-LISTEN:7005,bind=127.0.0.1,reuseaddr,fork", "SYSTEM:echo host"])
    topo.wait_listening(topo.wan, 7005)
    topo.wait_listening(topo.host, 7005)
    res = _pasta(topo, pasta_bin, f"socat -t 2 - TCP:{WAN_GW4}:7005 </dev/null", "-T", "none", "-t", "none")
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "wan"


@pytest.mark.parametrize(
    ("spec", "probes"),
    [
        pytest.param("22", [(22, 22)], marks=pytest.mark.conformance("ports.example.single"), id="single"),
        pytest.param("22:23", [(22, 23)], marks=pytest.mark.conformance("ports.example.map"), id="map"),
        pytest.param("22,25", [(22, 22), (25, 25)], marks=pytest.mark.conformance("ports.example.list"),
                     id="list"),
        pytest.param("22-80", [(22, 22), (51, 51), (80, 80)], marks=pytest.mark.conformance("ports.example.range"),
                     id="range"),
        pytest.param("22-80:32-90", [(22, 32), (51, 61), (80, 90)],
                     marks=pytest.mark.conformance("ports.example.range-map"), id="range-map"),
    ],
)
@pytest.mark.conformance("ports.reachable", "opt.tcp-ports")
def test_man_page_port_examples_through_real_forward(topo: Topology, pasta_bin: str, tmp_path: Path, spec: str,
                                                     probes: list[tuple[int, int]]) -> None:
    """Each -t example of the page, from wan and from the host's loopback, lands on the port it names.

    A range forwards 59 ports; servers run only on the probed targets (each answers with its own
    port number), so a connection landing anywhere else would read nothing.
    """
    ready = tmp_path / "ready"
    targets = sorted({t for _, t in probes})
    servers = [(f"socat TCP6-LISTEN:{t},ipv6only=0,reuseaddr,fork 'SYSTEM:echo {t}'", t, False) for t in targets]
    proc = topo.popen(topo.host, [pasta_bin, "-q", "--config-net", "-t", spec, "-u", "none", "-T", "none",
                                  "-U", "none", "--", "sh", "-c", _serving(servers, ready)])
    try:
        for listen, _ in probes:
            topo.wait_listening(topo.host, listen)
        _wait_file(ready)
        for listen, target in probes:
            for ns, addr in ((topo.wan, HOST_ADDR4), (topo.host, "127.0.0.1")):
                res = topo.run(ns, ["socat", "-t", "2", "-", f"TCP:{addr}:{listen}"], input="", timeout=20)
                assert res.stdout.strip() == str(target), (spec, ns, addr, listen, res.stderr)
    finally:
        proc.terminate()


LIMITS_PROBE = r"""
import socket, struct, sys, time
wan4, ifname = sys.argv[1], sys.argv[2]
# SCTP (IP protocol 132): a common header and an INIT chunk, over IPv4 and IPv6
chunk = bytes(12) + bytes([1, 0, 0, 20]) + bytes(16)
socket.socket(socket.AF_INET, socket.SOCK_RAW, 132).sendto(chunk, (wan4, 0))
socket.socket(socket.AF_INET6, socket.SOCK_RAW, 132).sendto(chunk, ("fd77:1::1", 0))
# joining groups makes the kernel send an IGMP membership report and an MLD listener report
m4 = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
m4.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, socket.inet_aton("239.1.2.3") + socket.inet_aton("0.0.0.0"))
m6 = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
m6.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_JOIN_GROUP,
              socket.inet_pton(socket.AF_INET6, "ff15::1234") + struct.pack("@I", socket.if_nametoindex(ifname)))
time.sleep(1.5)
"""

WAN_SCTP_SINK = r"""
import os, select, socket, sys
socks = [socket.socket(socket.AF_INET, socket.SOCK_RAW, 132), socket.socket(socket.AF_INET6, socket.SOCK_RAW, 132)]
print("listening", flush=True)
r = []
while not r and not os.path.exists(sys.argv[1]):  # until the namespace has sent everything
    r, _, _ = select.select(socks, [], [], 0.05)
print("GOT SCTP" if r else "no SCTP", flush=True)
"""


@pytest.mark.conformance("limits.no-sack", "limits.no-paws-rttm", "limits.no-sctp", "limits.no-igmp-mld")
def test_pcap_shows_no_sack_timestamps_sctp_or_multicast_answers(topo: Topology, pasta_bin: str,
                                                                 tmp_path: Path) -> None:
    """The namespace's SYN offers SACK and timestamps; pasta's SYN-ACK and SYN offer neither; SCTP, IGMP, MLD: no answer.

    Everything is read from pasta's own capture (-p): what the namespace sent, and what pasta sent
    back.  wan listens for SCTP with raw sockets to show none leaves either.
    """
    from scapy.layers.inet import ICMP, IP, TCP
    from scapy.layers.inet6 import ICMPv6MLReport2, IPv6
    from scapy.layers.l2 import Ether
    from scapy.packet import Packet
    from scapy.utils import rdpcap

    from harness.netns.topology import HOST_IF, HOST_MAC

    topo.start_echo()
    pcap, probe, ready, done = tmp_path / "cap.pcap", tmp_path / "probe.py", tmp_path / "ready", tmp_path / "done"
    sink = topo.popen(topo.wan, ["python3", "-c", WAN_SCTP_SINK, str(ready)], stdout=subprocess.PIPE)
    assert sink.stdout is not None and sink.stdout.readline().strip() == b"listening"
    probe.write_text(LIMITS_PROBE)
    script = (
        "socat TCP6-LISTEN:7100,ipv6only=0,reuseaddr 'SYSTEM:echo srv' & "
        "while ! ss -Hltn 'sport = :7100' | grep -q .; do sleep 0.02; done; "
        f"echo hi | socat -t 2 - TCP:{WAN_ADDR4}:7001; "
        f"python3 {probe} {WAN_ADDR4} {HOST_IF}; touch {ready}; "
        f"while [ ! -e {done} ]; do sleep 0.05; done"
    )
    proc = topo.popen(topo.host, [pasta_bin, "-q", "--config-net", "-p", str(pcap), "-t", "7100", "-u", "none",
                                  "-T", "none", "-U", "none", "--", "sh", "-ec", script])
    _wait_file(ready, timeout=30)
    res = topo.run(topo.wan, ["socat", "-t", "2", "-", f"TCP:{HOST_ADDR4}:7100"], input="", timeout=20)
    assert res.stdout.strip() == "srv", res.stderr
    done.touch()
    assert proc.wait(20) == 0
    assert sink.stdout.readline().strip() == b"no SCTP"

    frames = rdpcap(str(pcap))
    ours = [f for f in frames if f[Ether].src == HOST_MAC]
    theirs = [f for f in frames if f[Ether].src != HOST_MAC]

    def opts(f: Packet) -> set[str]:
        return {o[0] for o in f[TCP].options}

    def flags(f: Packet, want: str) -> bool:
        return bool(f.haslayer(TCP)) and str(f[TCP].flags) == want

    ns_syn = [f for f in theirs if flags(f, "S")]
    assert ns_syn and all({"SAckOK", "Timestamp"} <= opts(f) for f in ns_syn), [f.summary() for f in ns_syn]
    synack = [f for f in ours if flags(f, "SA")]
    syn = [f for f in ours if flags(f, "S")]
    assert synack and syn, [f.summary() for f in ours]
    for f in synack + syn:
        assert not opts(f) & {"SAckOK", "Timestamp"}, f[TCP].options
    assert any(f.haslayer(IP) and f[IP].proto == 132 for f in theirs)
    assert any(f.haslayer(IPv6) and f[IPv6].nh == 132 for f in theirs)
    assert any(f.haslayer(IP) and f[IP].proto == 2 for f in theirs)
    assert any(f.haslayer(ICMPv6MLReport2) for f in theirs)
    for f in ours:
        assert not (f.haslayer(IP) and f[IP].proto in (2, 132)), f.summary()
        assert not (f.haslayer(IPv6) and f[IPv6].nh == 132), f.summary()
        assert not (f.haslayer(ICMP) and f[ICMP].type == 3), f.summary()  # no unreachable either
        assert "MLD" not in f.summary() and "ICMPv6 Destination Unreachable" not in f.summary(), f.summary()
