"""pasta's loopback bypass with real programs: splice for TCP, socket to socket for UDP.

    host namespace (topo.host)                    pasta's namespace
    client -> 127.0.0.1:P  == -t P ==splice==>    server on 127.0.0.1:P      (a)
    server on 127.0.0.1:P  <== -T P ==splice==    client -> 127.0.0.1:P      (b)

Every transfer is checked by SHA-256 and by the peer address the server saw
(loopback: the bypass, not the tap, where it would come from the gateway).
A pcap of the tap (-p) shows that no frame of the spliced traffic crossed
it, while traffic from a non-loopback peer to the same port did.
"""

from __future__ import annotations

import hashlib
import ipaddress
import os
import subprocess
import time
from pathlib import Path

import pytest
from scapy.layers.inet import TCP, UDP
from scapy.utils import rdpcap

from harness.netns import HOST_ADDR4, WAN_ADDR4, Topology

BLOB_MIB = 64
#: Namespace scripts start servers in the background as $srv: stop them when the script ends,
#: or they outlive pasta (the namespace lives on with them) and keep running.
KILL_ON_EXIT = "trap 'kill $srv 2>/dev/null' EXIT; "


@pytest.fixture(scope="module")
def blob(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A 64 MiB file of random bytes and its SHA-256."""
    path = tmp_path_factory.mktemp("splice") / "blob"
    data = os.urandom(BLOB_MIB << 20)
    path.write_bytes(data)
    return path, hashlib.sha256(data).hexdigest()


def wait_file(path: Path, timeout: float = 20, *, nonempty: bool = False) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and (not nonempty or path.stat().st_size):
            return
        time.sleep(0.02)
    raise TimeoutError(f"{path} did not appear")


def peer_of(text: str) -> str:
    """socat's SOCAT_PEERADDR ([0000:...:ffff:7f00:0001] style) as a plain address."""
    addr = ipaddress.ip_address(text.strip().strip("[]"))
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return str(addr.ipv4_mapped)
    return str(addr)


def tap_ports(pcap: Path, proto: type) -> list[tuple[str, str, int, int]]:
    """(src, dst, sport, dport) of every `proto` (TCP/UDP) packet captured on the tap."""
    out: list[tuple[str, str, int, int]] = []
    for pkt in rdpcap(str(pcap)):
        if proto in pkt:
            ip = pkt[proto].underlayer
            out.append((ip.src, ip.dst, int(pkt[proto].sport), int(pkt[proto].dport)))
    return out


def ns_wait_listen(port: int, *, udp: bool = False) -> str:
    """Shell snippet: wait until something in the namespace listens on `port`."""
    flag = "-Hlun" if udp else "-Hltn"
    return f"while ! ss {flag} 'sport = :{port}' | grep -q .; do sleep 0.02; done"


def finish(proc: subprocess.Popen[bytes], done: Path) -> None:
    """Let the namespace script end and pasta exit on its own (so the pcap is complete)."""
    done.touch()
    proc.wait(30)


@pytest.mark.parametrize("lo", ["127.0.0.1", "::1"], ids=["ipv4", "ipv6"])
@pytest.mark.conformance("notes.pasta.splice", "notes.pasta.bypass-local-only", "opt.tcp-ports")
def test_t_loopback_client_spliced_64mib(
    topo: Topology, pasta_bin: str, blob: tuple[Path, str], tmp_path: Path, lo: str
) -> None:
    """-t 5203: 64 MiB from the host's loopback reach the namespace's loopback server intact,
    the server sees a loopback peer, and not one frame of it crosses the tap; a wan client
    of the same port still goes through the tap."""
    path, digest = blob
    pcap, log, ready, done = tmp_path / "tap.pcap", tmp_path / "log", tmp_path / "ready", tmp_path / "done"
    script = (
        f"socat -u TCP6-LISTEN:5203,ipv6only=0,reuseaddr,fork "
        f"SYSTEM:'(echo $SOCAT_PEERADDR; sha256sum) >> {log}' & srv=$!; {KILL_ON_EXIT}"
        f"{ns_wait_listen(5203)}; touch {ready}; "
        f"while [ ! -e {done} ]; do sleep 0.05; done"
    )
    proc = topo.popen(topo.host, [pasta_bin, "-q", "--config-net", "-p", str(pcap), "-t", "5203",
                                  "-T", "none", "-u", "none", "-U", "none", "--", "sh", "-c", script])  # fmt: skip
    wait_file(ready)
    host = f"[{lo}]" if ":" in lo else lo
    res = topo.run(topo.host, ["socat", "-u", f"FILE:{path}", f"TCP:{host}:5203"], timeout=60)
    assert res.returncode == 0, res.stderr
    wait_file(log, nonempty=True)
    for _ in range(200):
        if len(log.read_text().split()) >= 3:
            break
        time.sleep(0.05)
    # a non-loopback peer: through the tap
    res = topo.run(topo.wan, ["sh", "-c", f"echo hello | socat -u - TCP:{HOST_ADDR4}:5203"], timeout=20)
    assert res.returncode == 0, res.stderr
    for _ in range(200):
        if len(log.read_text().split()) >= 6:
            break
        time.sleep(0.05)
    finish(proc, done)
    words = log.read_text().split()
    assert peer_of(words[0]) == lo
    assert words[1] == digest
    assert peer_of(words[3]) == WAN_ADDR4
    assert words[4] == hashlib.sha256(b"hello\n").hexdigest()
    frames = [f for f in tap_ports(pcap, TCP) if 5203 in (f[2], f[3])]
    assert frames, "the wan connection should have crossed the tap"
    assert all(WAN_ADDR4 in (f[0], f[1]) for f in frames), frames


@pytest.mark.parametrize("lo", ["127.0.0.1", "::1"], ids=["ipv4", "ipv6"])
@pytest.mark.conformance("notes.pasta.splice", "opt.tcp-ns", "example.pasta.iperf3-loopback")
def test_T_namespace_client_to_host_loopback_64mib(
    topo: Topology, pasta_bin: str, blob: tuple[Path, str], tmp_path: Path, lo: str
) -> None:
    """-T 5202: 64 MiB from the namespace to its loopback reach a server on the host's loopback
    intact, from a loopback peer, with no frame on the tap."""
    path, digest = blob
    pcap, log = tmp_path / "tap.pcap", tmp_path / "log"
    bind = "TCP-LISTEN:5202,bind=127.0.0.1" if lo == "127.0.0.1" else "TCP6-LISTEN:5202,bind=[::1]"
    topo.popen(topo.host, ["socat", "-u", f"{bind},reuseaddr",
                           f"SYSTEM:'(echo $SOCAT_PEERADDR; sha256sum) > {log}'"])  # fmt: skip
    topo.wait_listening(topo.host, 5202)
    host = f"[{lo}]" if ":" in lo else lo
    script = f"{ns_wait_listen(5202)}; socat -u FILE:{path} TCP:{host}:5202"
    res = topo.run(topo.host, [pasta_bin, "-q", "--config-net", "-p", str(pcap), "-t", "none",
                               "-u", "none", "-T", "5202", "-U", "none", "--", "sh", "-c", script],
                   timeout=90)  # fmt: skip
    assert res.returncode == 0, res.stderr
    wait_file(log, nonempty=True)
    for _ in range(200):
        if len(log.read_text().split()) >= 2:
            break
        time.sleep(0.05)
    words = log.read_text().split()
    assert peer_of(words[0]) == lo
    assert words[1] == digest
    assert not [f for f in tap_ports(pcap, TCP) if 5202 in (f[2], f[3])]


@pytest.mark.conformance("opt.tcp-ns", "ports.pasta-default-auto", "ports.auto-scan")
def test_T_auto_picks_up_new_host_loopback_port(topo: Topology, pasta_bin: str, tmp_path: Path) -> None:
    """Default -T auto: a port bound on the host's loopback after start is reachable from the
    namespace's 127.0.0.1 within about two seconds; one bound only on a non-loopback host
    address is not forwarded."""
    started, result = tmp_path / "started", tmp_path / "result"
    script = (
        f"touch {started}; "
        "for i in $(seq 100); do "
        "  if socat -T 1 -u TCP:127.0.0.1:5333 - 2>/dev/null | grep -q ok; then "
        f"    echo found > {result}; break; fi; sleep 0.05; done; "
        # the non-loopback-only port, once the scan has had time to run twice
        "sleep 2.2; "
        f"if socat -T 1 -u TCP:127.0.0.1:5334 - 2>/dev/null; then echo open >> {result}; "
        f"else echo refused >> {result}; fi"
    )
    topo.popen(topo.host, ["socat", f"TCP-LISTEN:5334,bind={HOST_ADDR4},reuseaddr,fork", "SYSTEM:echo ok"])
    topo.wait_listening(topo.host, 5334)
    proc = topo.popen(topo.host, [pasta_bin, "-q", "--config-net", "--", "sh", "-c", script])
    wait_file(started)
    time.sleep(0.5)
    t0 = time.monotonic()
    topo.popen(topo.host, ["socat", "TCP-LISTEN:5333,bind=127.0.0.1,reuseaddr,fork", "SYSTEM:echo ok"])
    wait_file(result, timeout=10, nonempty=True)
    elapsed = time.monotonic() - t0
    proc.wait(30)
    assert result.read_text().split() == ["found", "refused"]
    assert elapsed < 3.0, elapsed


@pytest.mark.conformance("opt.tcp-ns", "notes.pasta.splice")
def test_unforwarded_host_loopback_port_unreachable(topo: Topology, pasta_bin: str) -> None:
    """With -T 5202 only, the host's other loopback services stay out of the namespace's reach."""
    topo.popen(topo.host, ["socat", "TCP-LISTEN:5202,bind=127.0.0.1,reuseaddr,fork", "SYSTEM:echo five-two"])
    topo.popen(topo.host, ["socat", "TCP-LISTEN:5999,bind=127.0.0.1,reuseaddr,fork", "SYSTEM:echo secret"])
    topo.wait_listening(topo.host, 5202)
    topo.wait_listening(topo.host, 5999)
    script = (
        f"{ns_wait_listen(5202)}; socat -T 2 -u TCP:127.0.0.1:5202 -; "
        "socat -T 2 -u TCP:127.0.0.1:5999 - || echo refused-5999"
    )
    res = topo.run(topo.host, [pasta_bin, "-q", "--config-net", "-t", "none", "-u", "none",
                               "-T", "5202", "-U", "none", "--", "sh", "-c", script], timeout=30)  # fmt: skip
    assert res.stdout.split() == ["five-two", "refused-5999"], res.stdout + res.stderr
    assert "Connection refused" in res.stderr


@pytest.mark.conformance("notes.pasta.udp-bypass", "opt.udp-ns", "opt.udp-ports")
def test_udp_loopback_echo_both_ways(topo: Topology, pasta_bin: str, tmp_path: Path) -> None:
    """-u 5353 and -U 5354: UDP echo between the two loopbacks works both ways, each server
    sees a loopback peer, and no datagram of it crosses the tap."""
    pcap, ready, done, out = tmp_path / "tap.pcap", tmp_path / "ready", tmp_path / "done", tmp_path / "out"
    echo = "SYSTEM:'read l; echo $l from $SOCAT_PEERADDR'"
    topo.popen(topo.host, ["sh", "-c", f"exec socat UDP4-RECVFROM:5354,bind=127.0.0.1,fork {echo}"])
    topo.wait_listening(topo.host, 5354, udp=True)
    script = (
        f"socat UDP4-RECVFROM:5353,bind=127.0.0.1,fork {echo} & srv=$!; {KILL_ON_EXIT}"
        f"{ns_wait_listen(5353, udp=True)}; {ns_wait_listen(5354, udp=True)}; "
        f"echo from-ns | socat -T 2 - UDP:127.0.0.1:5354 > {out}; touch {ready}; "
        f"while [ ! -e {done} ]; do sleep 0.05; done"
    )
    proc = topo.popen(topo.host, [pasta_bin, "-q", "--config-net", "-p", str(pcap), "-t", "none",
                                  "-u", "5353", "-T", "none", "-U", "5354", "--", "sh", "-c", script])  # fmt: skip
    wait_file(ready)
    for _ in range(3):  # a datagram may be lost on a loaded machine: ask again, as a client would
        res = topo.run(topo.host, ["socat", "-T", "2", "-", "UDP:127.0.0.1:5353"], input="from-host\n", timeout=20)
        if res.stdout.strip():
            break
    finish(proc, done)
    to_host = out.read_text().split()
    to_ns = res.stdout.split()
    assert to_host[:2] == ["from-ns", "from"] and peer_of(to_host[2]) == "127.0.0.1", to_host
    assert to_ns[:2] == ["from-host", "from"] and peer_of(to_ns[2]) == "127.0.0.1", (to_ns, res.stderr)
    assert not [f for f in tap_ports(pcap, UDP) if {5353, 5354} & {f[2], f[3]}]
