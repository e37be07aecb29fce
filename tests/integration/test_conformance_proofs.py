"""Proofs for man-page statements whose other tests would not notice them breaking.

Each test here asserts what a user sees (a listener in `ss`, a reply from the
right server, an error a client prints, frames in a capture) for one claim
of the page, and names the claim in its assertions.  Port forwarding first
(UDP following TCP, auto's rescans, IPv6-bound ports), then pasta's defaults
(-U auto, the loopback bypass of the EXAMPLES' iperf3) and --no-tcp's
"silently".
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from harness.netns import HOST_ADDR4, WAN_ADDR4, Topology
from tests.statements import assert_statement

#: How long a rescan may take to show (the rescan runs every second: two periods and slack).
RESCAN_WAIT_S = 3.0


def _listeners(topo: Topology, ns: str, port: int, *, udp: bool) -> str:
    """`ss` lines of sockets listening (TCP) or bound (UDP) on `port` in `ns`."""
    flag = "-Hlunp" if udp else "-Hltnp"
    return topo.run(ns, ["ss", flag, f"sport = :{port}"]).stdout.strip()


def _until(cond: object, timeout: float) -> float | None:
    """Seconds until `cond()` held (polled every 20 ms), None if it didn't within `timeout`."""
    assert callable(cond)
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if cond():
            return time.monotonic() - t0
        time.sleep(0.02)
    return None


def _ns_wait(port: int, *, udp: bool = False) -> str:
    """Shell: wait until something in the namespace listens on `port`."""
    flag = "-Hlun" if udp else "-Hltn"
    return f"for i in $(seq 200); do [ -n \"$(ss {flag} 'sport = :{port}')\" ] && break; sleep 0.02; done"


def _udp_ask(topo: Topology, ns: str, addr: str, port: int, text: str) -> str:
    """Send `text` in a datagram and return the first answer (three tries: a datagram may be lost)."""
    host = f"[{addr}]" if ":" in addr else addr
    for _ in range(3):
        res = topo.run(ns, ["socat", "-T", "1", "-", f"UDP:{host}:{port}"], input=text + "\n", timeout=20)
        if res.stdout.strip():
            return res.stdout.strip()
    return ""


# ---------------------------------------------------------------- UDP follows TCP


@pytest.mark.conformance("ports.udp-follows-tcp", "ports.pasta-auto")
def test_auto_udp_follows_tcp_and_rescans_close(topo: Topology, pasta_bin: str, tmp_path: Path) -> None:
    """Default auto: a TCP-only listener in the namespace gets pasta's TCP and UDP listeners on the
    host within a rescan; when it closes, both go within a rescan."""
    stop, done = tmp_path / "stop", tmp_path / "done"
    script = (f"socat TCP-LISTEN:7411,reuseaddr EXEC:cat & pid=$!; "
              f"while [ ! -e {stop} ]; do sleep 0.02; done; kill $pid; wait $pid; touch {done}; "
              f"while [ -e {done} ]; do sleep 0.02; done")
    proc = topo.popen(topo.host, [pasta_bin, "-q", "--config-net", "--", "sh", "-c", script])
    try:
        topo.wait_listening(topo.host, 7411, timeout=20)
        t = _until(lambda: _listeners(topo, topo.host, 7411, udp=True), RESCAN_WAIT_S)
        assert_statement("ports.udp-follows-tcp", t is not None,
                         "a namespace TCP port found by auto has no UDP listener on the host")
        stop.touch()
        assert _until(done.exists, 10) is not None
        gone = _until(lambda: not _listeners(topo, topo.host, 7411, udp=False)
                      and not _listeners(topo, topo.host, 7411, udp=True), RESCAN_WAIT_S)
        assert_statement("ports.pasta-auto", gone is not None,
                         "listeners stay after the namespace's port went away: "
                         + _listeners(topo, topo.host, 7411, udp=False)
                         + _listeners(topo, topo.host, 7411, udp=True))
    finally:
        stop.touch()
        done.unlink(missing_ok=True)
        proc.wait(20)


@pytest.mark.conformance("ports.pasta-auto")
def test_auto_rescans_every_second(topo: Topology, pasta_bin: str, tmp_path: Path) -> None:
    """A port bound in the namespace while pasta runs is listened on within about a second (the
    rescan interval), not only at start."""
    started, go, bound = tmp_path / "started", tmp_path / "go", tmp_path / "bound"
    script = (f"touch {started}; while [ ! -e {go} ]; do sleep 0.02; done; "
              f"socat TCP-LISTEN:7412,reuseaddr EXEC:cat & {_ns_wait(7412)}; touch {bound}; wait")
    proc = topo.popen(topo.host, [pasta_bin, "-q", "--config-net", "--", "sh", "-c", script])
    try:
        assert _until(started.exists, 20) is not None  # pasta runs its command once forwarding started
        go.touch()
        assert _until(bound.exists, 10) is not None
        t = _until(lambda: _listeners(topo, topo.host, 7412, udp=False), RESCAN_WAIT_S)
        assert_statement("ports.pasta-auto", t is not None and t < 2.5,
                         f"a port bound later was picked up after {t} s (rescan every second)")
    finally:
        proc.terminate()
        proc.wait(20)


@pytest.mark.conformance("ports.udp-follows-tcp", "opt.udp-ns")
def test_auto_U_follows_T(topo: Topology, pasta_bin: str) -> None:
    """Default -T/-U auto: a TCP-only server on the host's loopback gets pasta's UDP listener on
    its port in the namespace too."""
    topo.popen(topo.host, ["socat", "TCP-LISTEN:7471,bind=127.0.0.1,reuseaddr,fork", "SYSTEM:echo x"])
    topo.wait_listening(topo.host, 7471)
    script = (f"{_ns_wait(7471)}; {_ns_wait(7471, udp=True)}; "
              "echo TCP; ss -Hltn 'sport = :7471'; echo UDP; ss -Hlun 'sport = :7471'")
    res = topo.run(topo.host, [pasta_bin, "-q", "--config-net", "--", "sh", "-c", script], timeout=60)
    assert res.returncode == 0, res.stderr
    tcp, udp = res.stdout.split("TCP", 1)[1].split("UDP", 1)
    assert "7471" in tcp, f"-T auto did not forward the host's TCP port: {res.stdout}"
    assert "7471" in udp, f"[ports.udp-follows-tcp] -U does not follow -T auto: {res.stdout}"


@pytest.mark.conformance("ports.udp-follows-tcp")
def test_pasta_udp_follows_translated_tcp_untranslated(topo: Topology, pasta_bin: str, tmp_path: Path) -> None:
    """-t 7421:7422 without -u: UDP 7421 is forwarded to the namespace's 7421 (no translation)."""
    done = tmp_path / "done"
    script = ("socat UDP-RECVFROM:7421,fork SYSTEM:'echo same-port' & "
              "socat UDP-RECVFROM:7422,fork SYSTEM:'echo translated' & "
              f"{_ns_wait(7421, udp=True)}; {_ns_wait(7422, udp=True)}; "
              f"while [ ! -e {done} ]; do sleep 0.02; done; kill %1 %2")
    proc = topo.popen(topo.host, [pasta_bin, "-q", "--config-net", "-t", "7421:7422", "--", "sh", "-c", script])
    try:
        topo.wait_listening(topo.host, 7421, udp=True, timeout=20)
        got = _udp_ask(topo, topo.wan, HOST_ADDR4, 7421, "ping")
        assert got == "same-port", f"[ports.udp-follows-tcp] UDP 7421 answered {got!r}"
    finally:
        done.touch()
        proc.wait(20)


@pytest.mark.conformance("ports.udp-follows-tcp")
def test_passt_udp_follows_translated_tcp_untranslated(topo: Topology, passt_bin: str, tmp_path: Path) -> None:
    """passt -t 7431:22 without -u listens on UDP 7431 (not 22): UDP follows TCP's port, untranslated."""
    proc = topo.popen(topo.host, [passt_bin, "-f", "-q", "-s", str(tmp_path / "s"), "-t", "7431:22"])
    try:
        topo.wait_listening(topo.host, 7431, timeout=20)
        udp = _until(lambda: _listeners(topo, topo.host, 7431, udp=True), 5)
        assert udp is not None, "[ports.udp-follows-tcp] passt -t 7431:22 has no UDP listener on 7431"
        assert _listeners(topo, topo.host, 22, udp=True) == "", "[ports.udp-follows-tcp] translated for UDP"
    finally:
        proc.terminate()
        proc.wait(20)


@pytest.mark.conformance("ports.ipv6-also-ipv4", "ports.auto-scan")
def test_auto_ipv6_bound_port_takes_ipv4(topo: Topology, pasta_bin: str, tmp_path: Path) -> None:
    """A namespace server bound to [::] only (listed in /proc/net/tcp6, not tcp) is reached by an
    IPv4 client from wan through auto."""
    done = tmp_path / "done"
    script = (f"socat TCP6-LISTEN:7441,ipv6only=0,reuseaddr,fork SYSTEM:'echo v6-bound' >/dev/null & "
              f"pid=$!; {_ns_wait(7441)}; grep -q ':1D11 ' /proc/net/tcp && echo IN_TCP4; "
              f"while [ ! -e {done} ]; do sleep 0.02; done; kill $pid")
    proc = topo.popen(topo.host, [pasta_bin, "-q", "--config-net", "--", "sh", "-c", script])
    try:
        topo.wait_listening(topo.host, 7441, timeout=20)
        res = topo.run(topo.wan, ["socat", "-t", "2", "-", f"TCP:{HOST_ADDR4}:7441"], input="", timeout=20)
        assert res.stdout.strip() == "v6-bound", f"[ports.ipv6-also-ipv4] {res.stdout!r} {res.stderr}"
    finally:
        done.touch()
        out = proc.communicate(timeout=20)[0].decode()
    assert "IN_TCP4" not in out, "the server was in /proc/net/tcp too: the test proves nothing"


# ---------------------------------------------------------------- pasta's defaults


@pytest.mark.conformance("ports.pasta-default-auto", "opt.udp-ns")
def test_U_auto_default_forwards_host_udp(topo: Topology, pasta_bin: str) -> None:
    """Without -U, a UDP server on the host's loopback is reached from the namespace's 127.0.0.1."""
    topo.popen(topo.host, ["socat", "UDP-RECVFROM:7451,bind=127.0.0.1,fork", "SYSTEM:echo host-udp"])
    topo.wait_listening(topo.host, 7451, udp=True)
    script = (f"{_ns_wait(7451, udp=True)}; for i in 1 2 3; do "
              "r=$(echo x | socat -T 1 - UDP:127.0.0.1:7451); [ -n \"$r\" ] && break; done; echo \"GOT=$r\"")
    res = topo.run(topo.host, [pasta_bin, "-q", "--config-net", "--", "sh", "-c", script], timeout=60)
    assert res.returncode == 0, res.stderr
    assert "GOT=host-udp" in res.stdout, f"[ports.pasta-default-auto] -U auto: {res.stdout} {res.stderr}"


@pytest.mark.parametrize("lo", ["127.0.0.1", "::1"], ids=["ipv4", "ipv6"])
@pytest.mark.conformance("example.pasta.iperf3-loopback")
def test_iperf3_to_loopback_with_default_options(topo: Topology, pasta_bin: str, tmp_path: Path, lo: str) -> None:
    """The EXAMPLES: plain `pasta` (no port options), then iperf3 -c 127.0.0.1 / ::1 in the namespace
    reaches the host's iperf3 server, through the bypass: no frame of it on the tap."""
    topo.popen(topo.host, ["iperf3", "-s", "-p", "5201"])
    topo.wait_listening(topo.host, 5201)
    pcap = tmp_path / "tap.pcap"
    script = f"{_ns_wait(5201)}; iperf3 -J -t 1 -c {lo}"
    res = topo.run(topo.host, [pasta_bin, "-q", "--config-net", "-p", str(pcap), "--", "sh", "-c", script],
                   timeout=90)
    assert res.returncode == 0, f"[example.pasta.iperf3-loopback] iperf3 -c {lo}: {res.stdout[-2000:]} {res.stderr}"
    report = json.loads(res.stdout)
    sent = report["end"]["sum_received"]["bytes"]
    assert sent > 0, f"[example.pasta.iperf3-loopback] nothing received: {report['end']}"
    from scapy.all import TCP, rdpcap

    on_tap = [f for f in rdpcap(str(pcap)) if f.haslayer(TCP) and 5201 in (f[TCP].sport, f[TCP].dport)]
    assert on_tap == [], f"[example.pasta.iperf3-loopback] {len(on_tap)} iperf3 frames on the tap: not bypassed"


# ---------------------------------------------------------------- --no-tcp, silently


@pytest.mark.conformance("opt.no-tcp")
def test_no_tcp_drops_silently(topo: Topology, pasta_bin: str, tmp_path: Path) -> None:
    """--no-tcp: a connection from the namespace to a wan server times out (no RST reaches it,
    so no "Connection refused"), and the capture shows no TCP frame to the namespace."""
    topo.popen(topo.wan, ["socat", "TCP-LISTEN:7461,reuseaddr,fork", "SYSTEM:echo wan"])
    topo.wait_listening(topo.wan, 7461)
    pcap = tmp_path / "tap.pcap"
    script = f"socat -T 2 - TCP:{WAN_ADDR4}:7461,connect-timeout=2 </dev/null 2>&1; echo RC=$?"
    res = topo.run(topo.host, [pasta_bin, "-q", "--config-net", "--no-tcp", "-p", str(pcap),
                               "--", "sh", "-c", script], timeout=60)  # fmt: skip
    assert "RC=0" not in res.stdout, f"[opt.no-tcp] the connection went through: {res.stdout}"
    assert "refused" not in res.stdout.lower() and "reset" not in res.stdout.lower(), \
        f"[opt.no-tcp] not silent: {res.stdout}"
    from scapy.all import TCP, rdpcap

    frames = rdpcap(str(pcap))
    syn = [f for f in frames if f.haslayer(TCP) and f[TCP].dport == 7461]
    back = [f for f in frames if f.haslayer(TCP) and f[TCP].sport == 7461]
    assert syn, "the namespace's SYN is not in the capture: the test proves nothing"
    assert back == [], f"[opt.no-tcp] {[f.summary() for f in back]} reached the namespace"
