"""Integrity at volume: 1 GiB through pasta's loopback bypass and through passt, SHA-256 checked.

(pasta's tap path both ways is covered by test_hostile.py.)  The sender
streams PASST_INTEGRITY_MIB MiB (default 1024) of random data, each MiB
stamped with its index so reordering or loss changes the digest; the receiver
hashes what arrives.  For passt the guest relays: wan -> passt -t -> guest
(socat) -> passt -> wan, so both directions cross passt and nothing slow (a
hash under TCG) runs in the guest.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from harness.netns import HOST_ADDR4, WAN_ADDR4, Topology
from harness.qemu.guest import QemuGuest

MIB = int(os.environ.get("PASST_INTEGRITY_MIB", "1024"))

SENDER = r"""
import hashlib, os, socket, struct, sys
host, port, mib = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
block = bytearray(os.urandom(1 << 20))
digest = hashlib.sha256()
for attempt in range(100):
    try:
        s = socket.create_connection((host, port), timeout=30)
        break
    except OSError:
        import time; time.sleep(0.05)
for i in range(mib):
    struct.pack_into("!Q", block, 0, i)
    s.sendall(block)
    digest.update(block)
s.shutdown(socket.SHUT_WR)
s.recv(1)
print(mib << 20, digest.hexdigest(), flush=True)
"""

RECEIVER = r"""
import hashlib, socket, sys
port, ready = int(sys.argv[1]), sys.argv[2]
srv = socket.socket(socket.AF_INET6 if ":" in sys.argv[3] else socket.AF_INET)
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind((sys.argv[3], port))
srv.listen(1)
open(ready, "w").close()
conn, _ = srv.accept()
digest, total, buf = hashlib.sha256(), 0, bytearray(1 << 20)
while True:
    n = conn.recv_into(buf)
    if not n:
        break
    digest.update(memoryview(buf)[:n])
    total += n
print(total, digest.hexdigest(), flush=True)
conn.close()
"""


@pytest.fixture
def scripts(tmp_path: Path) -> tuple[str, str]:
    snd, rcv = tmp_path / "snd.py", tmp_path / "rcv.py"
    snd.write_text(SENDER)
    rcv.write_text(RECEIVER)
    return str(snd), str(rcv)


def _wait_file(path: Path, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.02)


@pytest.mark.parametrize("direction", ["-t host->ns", "-T ns->host"])
@pytest.mark.conformance("hostile.integrity", "notes.pasta.splice")
def test_splice_1gib_intact(topo: Topology, pasta_bin: str, scripts: tuple[str, str], tmp_path: Path,
                            direction: str) -> None:
    """1 GiB through pasta's loopback bypass (-t and -T) arrives with the sender's SHA-256."""
    snd, rcv = scripts
    ready, out = tmp_path / "ready", tmp_path / "out"
    if direction.startswith("-t"):
        # receiver in the namespace on its loopback; sender in the host namespace to 127.0.0.1
        script = f"python3 {rcv} 9200 {ready} 127.0.0.1 > {out}"
        pasta = topo.popen(topo.host, [pasta_bin, "-q", "--config-net", "-t", "9200", "-T", "none", "--",
                                       "sh", "-c", script])
        _wait_file(ready)
        topo.wait_listening(topo.host, 9200)
        res = topo.run(topo.host, ["python3", snd, "127.0.0.1", "9200", str(MIB)], timeout=600)
        assert pasta.wait(120) == 0
    else:
        topo.popen(topo.host, ["sh", "-c", f"python3 {rcv} 9201 {ready} 127.0.0.1 > {out}"])
        _wait_file(ready)
        res = topo.run(topo.host, [pasta_bin, "-q", "--config-net", "-t", "none", "-T", "9201", "--",
                                   "python3", snd, "127.0.0.1", "9201", str(MIB)], timeout=600)
        deadline = time.monotonic() + 60
        while not out.read_text().strip():
            assert time.monotonic() < deadline
            time.sleep(0.05)
    assert res.returncode == 0, res.stderr
    assert out.read_text().split() == res.stdout.split()


@pytest.mark.qemu
@pytest.mark.conformance("hostile.integrity")
def test_passt_1gib_both_ways_through_guest_relay(topo: Topology, passt_bin: str, scripts: tuple[str, str],
                                                   tmp_path: Path) -> None:
    """1 GiB wan -> passt -> guest relay -> passt -> wan arrives with the sender's SHA-256."""
    snd, rcv = scripts
    ready, out = tmp_path / "ready", tmp_path / "out"
    sock = str(tmp_path / "passt.socket")
    topo.popen(topo.host, [passt_bin, "-f", "-q", "-s", sock, "-t", "5000"])
    _wait_file(Path(sock))
    topo.popen(topo.wan, ["sh", "-c", f"python3 {rcv} 6000 {ready} {WAN_ADDR4} > {out}"])
    _wait_file(ready)
    net = ["-netdev", f"stream,id=n0,server=off,addr.type=unix,addr.path={sock}",
           "-device", "virtio-net-pci,netdev=n0,mac=52:54:00:12:34:56"]
    with QemuGuest(net_args=net, extra_binaries=["/usr/bin/socat"], memory_mb=512) as guest:
        guest.check("ip link set eth0 up; udhcpc -f -q -n -t 5 -T 1 -i eth0 >/dev/null 2>&1", timeout=60)
        guest.check(f"(socat -b 262144 TCP-LISTEN:5000,reuseaddr TCP:{WAN_ADDR4}:6000 &) ; "
                    "for i in $(seq 100); do netstat -ltn | grep -q ':5000 ' && break; sleep 0.05; done", timeout=30)
        start = time.monotonic()
        res = topo.run(topo.wan, ["python3", snd, HOST_ADDR4, "5000", str(MIB)], timeout=900)
        elapsed = time.monotonic() - start
    assert res.returncode == 0, res.stderr
    deadline = time.monotonic() + 60
    while not out.read_text().strip():
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert out.read_text().split() == res.stdout.split()
    print(f"\n{MIB} MiB through passt twice (in and out of the guest) in {elapsed:.1f} s")
