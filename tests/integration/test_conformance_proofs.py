"""Proofs for man-page statements whose other tests would not notice them breaking.

Each test here asserts what a user sees (a listener in `ss`, a reply from the
right server, an error a client prints, frames in a capture) for one claim
of the page, and names the claim in its assertions.  Port forwarding first
(UDP following TCP, auto's rescans, IPv6-bound ports), then pasta's defaults
(-U auto, the loopback bypass of the EXAMPLES' iperf3) and --no-tcp's
"silently", then -n and -g in what clients receive, and the process options:
-f/-d from a terminal, the default socket's probing and the default pcap
names (in a private /tmp and PID namespace, so other instances can't interfere).
"""

from __future__ import annotations

import json
import os
import pty
import re
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness.netns import HOST_ADDR4, WAN_ADDR4, Topology
from harness.netns.topology import HOST_IF
from tests.integration.clients import in_pasta, udhcpc_hook, udhcpc_lease
from tests.integration.conftest import accepts_unix
from tests.integration.stream_guest import StreamGuest
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


def _pasta_serving(topo: Topology, pasta_bin: str, script: str, port: int,
                   *options: str, udp: bool = False) -> subprocess.Popen[bytes]:
    """Start pasta running `script` (sh) and wait until its host side listens on `port`."""
    proc = topo.popen(topo.host, [pasta_bin, "-q", "--config-net", *options, "--", "sh", "-c", script])
    topo.wait_listening(topo.host, port, udp=udp, timeout=20)
    return proc


# ---------------------------------------------------------------- UDP follows TCP


@pytest.mark.conformance("ports.udp-follows-tcp", "ports.pasta-auto")
def test_auto_udp_follows_tcp_and_rescans_close(topo: Topology, pasta_bin: str, tmp_path: Path) -> None:
    """Default auto: a TCP-only listener in the namespace gets pasta's TCP and UDP listeners on the
    host within a rescan; when it closes, both go within a rescan."""
    stop, done = tmp_path / "stop", tmp_path / "done"
    script = (f"socat TCP-LISTEN:7411,reuseaddr EXEC:cat & pid=$!; "
              f"while [ ! -e {stop} ]; do sleep 0.02; done; kill $pid; wait $pid; touch {done}; "
              f"while [ -e {done} ]; do sleep 0.02; done")
    proc = _pasta_serving(topo, pasta_bin, script, 7411)
    try:
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
    done, bound = tmp_path / "done", tmp_path / "bound"
    script = ("socat UDP-RECVFROM:7421,fork SYSTEM:'echo same-port' & "
              "socat UDP-RECVFROM:7422,fork SYSTEM:'echo translated' & "
              f"{_ns_wait(7421, udp=True)}; {_ns_wait(7422, udp=True)}; touch {bound}; "
              f"while [ ! -e {done} ]; do sleep 0.02; done; kill %1 %2")
    proc = _pasta_serving(topo, pasta_bin, script, 7421, "-t", "7421:7422", udp=True)
    try:
        # the namespace's servers, not only pasta's host side: a datagram before them is refused
        assert _until(bound.exists, 20) is not None, "the namespace's UDP servers did not start"
        got = _udp_ask(topo, topo.wan, HOST_ADDR4, 7421, "ping")
        assert got == "same-port", f"[ports.udp-follows-tcp] UDP 7421 answered {got!r}"
    finally:
        done.touch()
        proc.wait(20)


@pytest.mark.conformance("ports.udp-follows-tcp")
def test_passt_udp_follows_translated_tcp_untranslated(topo: Topology, passt_bin: str, tmp_path: Path) -> None:
    """passt -t 7431:22 without -u: a datagram from wan to the host's UDP 7431 reaches the guest on
    its port 7431 (not 22), and passt listens on UDP 7431, not 22."""
    from scapy.layers.inet import UDP
    from scapy.layers.l2 import Ether

    sock = str(tmp_path / "s")
    proc = topo.popen(topo.host, [passt_bin, "-f", "-q", "-s", sock, "-t", "7431:22"])
    try:
        topo.wait_listening(topo.host, 7431, timeout=20)
        udp = _until(lambda: _listeners(topo, topo.host, 7431, udp=True), 5)
        assert udp is not None, "[ports.udp-follows-tcp] passt -t 7431:22 has no UDP listener on 7431"
        assert _listeners(topo, topo.host, 22, udp=True) == "", "[ports.udp-follows-tcp] translated for UDP"
        with StreamGuest(sock) as guest:
            frame = None
            for _ in range(5):  # the first datagrams may arrive before passt took the guest
                topo.run(topo.wan, ["socat", "-u", "-", f"UDP:{HOST_ADDR4}:7431"], input="ping\n", timeout=20)
                try:
                    frame = guest.wait_for(lambda f: bool(Ether(f).haslayer(UDP))
                                           and Ether(f)[UDP].dport in (7431, 22), 1.0)
                    break
                except TimeoutError:
                    continue
        assert frame is not None, "[ports.udp-follows-tcp] no datagram to UDP 7431 reached the guest"
        dport = Ether(frame)[UDP].dport
        assert_statement("ports.udp-follows-tcp", dport == 7431,
                         f"passt -t 7431:22: UDP 7431 reached the guest's port {dport} (translated)")
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
    proc = _pasta_serving(topo, pasta_bin, script, 7441)
    try:
        res = topo.run(topo.wan, ["socat", "-t", "2", "-", f"TCP:{HOST_ADDR4}:7441"], input="", timeout=20)
        assert res.stdout.strip() == "v6-bound", f"[ports.ipv6-also-ipv4] {res.stdout!r} {res.stderr}"
    finally:
        done.touch()
        out = proc.communicate(timeout=20)[0].decode()
    assert "IN_TCP4" not in out, "the server was in /proc/net/tcp too: the test proves nothing"


# ---------------------------------------------------------------- pasta's defaults


@pytest.mark.conformance("ports.pasta-default-auto")
def test_t_u_auto_default_forward_namespace_ports(topo: Topology, pasta_bin: str, tmp_path: Path) -> None:
    """Without -t and -u: a TCP server and a UDP-only server in the namespace are reached from wan
    through the host's address (pasta's default -t auto and -u auto)."""
    done, bound = tmp_path / "done", tmp_path / "bound"
    script = ("socat TCP-LISTEN:7481,reuseaddr,fork SYSTEM:'echo ns-tcp' & "
              "socat UDP-RECVFROM:7482,fork SYSTEM:'echo ns-udp' & "
              f"{_ns_wait(7481)}; {_ns_wait(7482, udp=True)}; touch {bound}; "
              f"while [ ! -e {done} ]; do sleep 0.02; done; kill %1 %2")
    proc = topo.popen(topo.host, [pasta_bin, "-q", "--config-net", "--", "sh", "-c", script])
    try:
        assert _until(bound.exists, 20) is not None
        tcp = _until(lambda: _listeners(topo, topo.host, 7481, udp=False), RESCAN_WAIT_S)
        udp = _until(lambda: _listeners(topo, topo.host, 7482, udp=True), RESCAN_WAIT_S)
        assert_statement("ports.pasta-default-auto", tcp is not None,
                         "without -t, the namespace's TCP 7481 has no listener on the host")
        assert_statement("ports.pasta-default-auto", udp is not None,
                         "without -u, the namespace's UDP 7482 has no listener on the host")
        res = topo.run(topo.wan, ["socat", "-t", "2", "-", f"TCP:{HOST_ADDR4}:7481"], input="", timeout=20)
        assert_statement("ports.pasta-default-auto", res.stdout.strip() == "ns-tcp",
                         f"TCP 7481 from wan: {res.stdout!r} {res.stderr}")
        got = _udp_ask(topo, topo.wan, HOST_ADDR4, 7482, "ping")
        assert_statement("ports.pasta-default-auto", got == "ns-udp", f"UDP 7482 from wan answered {got!r}")
    finally:
        done.touch()
        proc.wait(20)


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
    from scapy.layers.inet import TCP
    from scapy.utils import rdpcap

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
    from scapy.layers.inet import TCP
    from scapy.utils import rdpcap

    frames = rdpcap(str(pcap))
    syn = [f for f in frames if f.haslayer(TCP) and f[TCP].dport == 7461]
    back = [f for f in frames if f.haslayer(TCP) and f[TCP].sport == 7461]
    assert syn, "the namespace's SYN is not in the capture: the test proves nothing"
    assert back == [], f"[opt.no-tcp] {[f.summary() for f in back]} reached the namespace"


# ---------------------------------------------------------------- options in the lease


@pytest.mark.parametrize("mask", ["255.255.240.0", "20"], ids=["dotted", "prefix"])
@pytest.mark.conformance("opt.netmask")
def test_netmask_value_in_the_lease(topo: Topology, pasta_bin: str, tmp_path: Path, mask: str) -> None:
    """-n 255.255.240.0 (or -n 20), unlike the host's /24: udhcpc leases a /20 and configures it."""
    hook = udhcpc_hook(tmp_path)
    script = f"udhcpc -f -q -n -t 5 -T 1 -i {HOST_IF} -s {hook} 2>&1; ip -o -4 addr show dev {HOST_IF}"
    res = in_pasta(topo, pasta_bin, ["-n", mask], script)
    assert res.returncode == 0, res.stdout + res.stderr
    lease = udhcpc_lease(res.stdout)
    assert lease["mask"] == "20", f"[opt.netmask] -n {mask}: udhcpc got mask {lease['mask']}"
    assert f"inet {HOST_ADDR4}/20" in res.stdout, f"[opt.netmask] {res.stdout}"


@pytest.mark.conformance("opt.gateway")
def test_ipv6_gateway_is_the_source_of_ra_and_dhcpv6(topo: Topology, pasta_bin: str, tmp_path: Path) -> None:
    """-g fe80::99: the namespace's IPv6 default route goes via fe80::99 (the RA's source), and
    every RA and DHCPv6 reply in the capture comes from fe80::99."""
    pcap = tmp_path / "tap.pcap"
    script = (
        f"sysctl -qw net.ipv6.conf.{HOST_IF}.accept_dad=0; "
        f"for i in $(seq 100); do ip -6 addr show dev {HOST_IF} scope link | grep -q tentative || break; "
        "sleep 0.05; done; "
        f"for i in $(seq 100); do ip -6 route show default | grep -q 'proto ra' && break; sleep 0.1; done; "
        f"dhclient -6 -1 -lf {tmp_path}/l6 -pf {tmp_path}/p6 -sf /sbin/dhclient-script {HOST_IF} 2>&1; "
        f"kill $(cat {tmp_path}/p6) 2>/dev/null || true; ip -o -6 addr show dev {HOST_IF}; "
        "echo ROUTE; ip -6 route show default"
    )
    res = in_pasta(topo, pasta_bin, ["-g", "fe80::99", "-p", str(pcap)], script)
    assert res.returncode == 0, res.stdout + res.stderr
    route = res.stdout.split("ROUTE", 1)[1]
    assert "default via fe80::99 " in route, f"[opt.gateway] RA source is not -g's: {route}"
    from scapy.layers.inet import UDP
    from scapy.layers.inet6 import ICMPv6ND_RA, IPv6
    from scapy.utils import rdpcap

    frames = [f for f in rdpcap(str(pcap)) if f.haslayer(IPv6)]
    ras = [f[IPv6].src for f in frames if f.haslayer(ICMPv6ND_RA)]
    replies = [f[IPv6].src for f in frames if f.haslayer(UDP) and f[UDP].sport == 547]
    assert ras and replies, f"no RA or DHCPv6 reply captured: {len(ras)} {len(replies)}"
    assert set(ras) == {"fe80::99"}, f"[opt.gateway] RAs from {set(ras)}"
    assert set(replies) == {"fe80::99"}, f"[opt.gateway] DHCPv6 replies from {set(replies)}"


# ---------------------------------------------------------------- process options


def _pid_file_written(path: Path) -> int | None:
    """The PID a PID file names once completely written, None before."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    return int(text) if text.endswith("\n") else None


def _serving_pids(topo: Topology, sock: str) -> list[str]:
    """PIDs of every process holding the listening UNIX socket `sock` (from `ss -p`)."""
    return re.findall(r"pid=(\d+),", topo.run(topo.host, ["ss", "-Hxlp", "src", sock]).stdout)


@pytest.mark.parametrize("option", ["-f", "-d"])
@pytest.mark.conformance("opt.foreground", "opt.debug")
def test_foreground_options_keep_a_terminal_started_passt_in_front(topo: Topology, passt_bin: str,
                                                                   tmp_path: Path, option: str) -> None:
    """From a terminal (where passt would go to background), -f and -d keep it in the foreground:
    the PID file, written once passt is ready (after the fork it would make), names the process
    the terminal started, which alone serves the socket and has not returned."""
    sock, pid_file = str(tmp_path / "p.sock"), tmp_path / "pid"
    pid, fd = pty.fork()
    if pid == 0:  # child: passt with the pty as its terminal
        os.execvp("ip", ["ip", "netns", "exec", topo.host, passt_bin, option, "-s", sock, "-P", str(pid_file)])
    try:
        drained = b""
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and _pid_file_written(pid_file) is None:
            if select.select([fd], [], [], 0.05)[0]:
                try:
                    drained += os.read(fd, 65536)
                except OSError:
                    break
        written = _pid_file_written(pid_file)
        assert written is not None, drained[-2000:]
        ident = "opt.foreground" if option == "-f" else "opt.debug"
        assert_statement(ident, written == pid,
                         f"passt {option}: the PID file names {written}, not the started {pid}: it forked")
        done, _ = os.waitpid(pid, os.WNOHANG)
        assert_statement(ident, done == 0, f"passt {option} returned to the terminal")
        assert accepts_unix(sock), drained[-2000:]
        serving = _serving_pids(topo, sock)
        assert_statement(ident, serving == [str(pid)], f"passt {option}: {serving} serve, not {pid} alone")
    finally:
        for victim in {pid, _pid_file_written(pid_file) or pid}:
            try:
                os.kill(victim, signal.SIGTERM)
            except ProcessLookupError:
                pass
        try:
            os.waitpid(pid, 0)
        except ChildProcessError:
            pass
        os.close(fd)


@pytest.mark.conformance("opt.foreground")
def test_foreground_option_without_a_terminal(topo: Topology, passt_bin: str, tmp_path: Path) -> None:
    """-f with pipes instead of a terminal: the started process itself is the one the PID file
    names (written once ready, after the fork passt would make) and alone serves the socket."""
    sock, pid_file = str(tmp_path / "p.sock"), tmp_path / "pid"
    proc = topo.popen(topo.host, [passt_bin, "-f", "-q", "-s", sock, "-P", str(pid_file)])
    try:
        assert _until(lambda: _pid_file_written(pid_file) is not None, 20) is not None
        written = _pid_file_written(pid_file)
        assert_statement("opt.foreground", written == proc.pid,
                         f"the PID file names {written}, not the started {proc.pid}: passt -f forked")
        assert_statement("opt.foreground", proc.poll() is None, f"passt -f exited: {proc.returncode}")
        assert _until(lambda: accepts_unix(sock), 20) is not None
        serving = _serving_pids(topo, sock)
        assert_statement("opt.foreground", serving == [str(proc.pid)], f"{serving} serve, not {proc.pid}")
    finally:
        written = _pid_file_written(pid_file)
        if written is not None and written != proc.pid:
            os.kill(written, signal.SIGTERM)
        proc.terminate()
        proc.wait(10)


#: Runs in a private mount and PID namespace with its own /tmp: the default socket and pcap
#: names can't meet other tests' (or other users') passt, and /proc lists only these processes.
_PRIVATE_TMP_PROBE = r"""
import glob, json, os, socket, subprocess, sys, time
passt, pasta = sys.argv[1], sys.argv[2]
# a private, empty /tmp; programs that live under the old /tmp (a checkout there) stay
# reachable through a link to it, by a descriptor of the old /tmp kept open here
old_tmp = os.open("/tmp", os.O_RDONLY | os.O_DIRECTORY)
subprocess.run(["mount", "-t", "tmpfs", "-o", "mode=1777", "probe-tmp", "/tmp"], check=True)
for prog in (passt, pasta):
    if prog.startswith("/tmp/"):
        top = prog.split("/")[2]
        if not os.path.lexists(f"/tmp/{top}"):
            os.symlink(f"/proc/{os.getpid()}/fd/{old_tmp}/{top}", f"/tmp/{top}")

def accepts(path):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.connect(path)
        return True
    except OSError:
        return False
    finally:
        s.close()

def wait(cond, timeout=20):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.02)
    return False

def listener(path):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(path)
    s.listen()
    return s

out = {}
# order and stale files: 1 is taken (accepts), 2 is a stale file nobody accepts on, 3 is free
live = listener("/tmp/passt_1.socket")
stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
stale.bind("/tmp/passt_2.socket")
stale.close()
p = subprocess.Popen([passt, "-f", "-q"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
out["stale_taken"] = wait(lambda: accepts("/tmp/passt_2.socket"))
out["third_created"] = os.path.exists("/tmp/passt_3.socket")
p.terminate()
p.wait(10)
live.close()
for f in glob.glob("/tmp/passt_*.socket"):
    os.unlink(f)
# all 64 taken: passt gives up, with a message, and goes no further
lives = [listener(f"/tmp/passt_{n}.socket") for n in range(1, 65)]
p = subprocess.Popen([passt, "-f", "-q"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
try:
    err = p.communicate(timeout=20)[1]
except subprocess.TimeoutExpired:  # it found a socket to serve on: stop it, say so
    p.kill()
    err = p.communicate()[1]
    out["full_served"] = True
out["full_rc"], out["full_err"] = p.returncode, err.decode(errors="replace")
out["created_65"] = os.path.exists("/tmp/passt_65.socket")
for s in lives:
    s.close()
for f in glob.glob("/tmp/passt_*.socket"):
    os.unlink(f)
# bare -p: the instance number counts the other running instances; pasta's file says pasta
a = subprocess.Popen([passt, "-f", "-q", "-s", "/tmp/a.sock", "-p"])
wait(lambda: accepts("/tmp/a.sock"))
b = subprocess.Popen([passt, "-f", "-q", "-s", "/tmp/b.sock", "-p"])
wait(lambda: accepts("/tmp/b.sock"))
out["passt_pcaps"] = sorted(os.path.basename(f) for f in glob.glob("/tmp/passt_*.pcap"))
for proc in (a, b):
    proc.terminate()
    proc.wait(10)
r = subprocess.run([pasta, "-q", "-p", "--", "true"], capture_output=True, timeout=60)
out["pasta_rc"], out["pasta_err"] = r.returncode, r.stderr.decode(errors="replace")
out["pasta_pcaps"] = sorted(os.path.basename(f) for f in glob.glob("/tmp/pasta_*.pcap"))
print(json.dumps(out))
"""


@pytest.fixture
def private_tmp_probe(topo: Topology, passt_bin: str, pasta_bin: str, tmp_path: Path) -> dict[str, object]:
    """What _PRIVATE_TMP_PROBE saw (one run serves the socket and the pcap tests)."""
    script = tmp_path / "probe.py"
    script.write_text(_PRIVATE_TMP_PROBE)
    res = topo.run(topo.host, ["unshare", "-m", "-p", "-f", "--mount-proc", "--propagation", "private",
                               sys.executable, str(script), passt_bin, pasta_bin], timeout=180)  # fmt: skip
    assert res.returncode == 0, res.stdout + res.stderr
    seen: dict[str, object] = json.loads(res.stdout.strip().splitlines()[-1])
    return seen


@pytest.mark.conformance("passt.socket-probe")
def test_socket_probe_order_stale_files_and_limit(private_tmp_probe: dict[str, object]) -> None:
    """Without -s: passt_1 accepting, passt_2 a stale file: passt takes passt_2 (not 3); with all
    64 accepting it exits non-zero with a message and never tries a 65th."""
    seen = private_tmp_probe
    assert seen["stale_taken"] and not seen["third_created"], f"[passt.socket-probe] order/stale: {seen}"
    assert not seen.get("full_served"), f"[passt.socket-probe] 64 taken, passt still served: {seen}"
    assert seen["full_rc"] != 0 and seen["full_err"], f"[passt.socket-probe] 64 taken: {seen}"
    assert not seen["created_65"], f"[passt.socket-probe] went past 64: {seen}"


@pytest.mark.conformance("opt.pcap.default-path")
def test_pcap_default_names_count_instances(private_tmp_probe: dict[str, object]) -> None:
    """Bare -p: the first passt writes ..._0.pcap, a second one running beside it ..._1.pcap;
    pasta's file is /tmp/pasta_<timestamp>_0.pcap."""
    stamp = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ"
    names = private_tmp_probe["passt_pcaps"]
    assert isinstance(names, list) and len(names) == 2, private_tmp_probe
    assert re.fullmatch(rf"passt_{stamp}_0\.pcap", min(names, key=lambda n: n[-7:])) and \
        re.fullmatch(rf"passt_{stamp}_1\.pcap", max(names, key=lambda n: n[-7:])), \
        f"[opt.pcap.default-path] instances not counted: {names}"
    pasta = private_tmp_probe["pasta_pcaps"]
    assert isinstance(pasta, list) and len(pasta) == 1 and re.fullmatch(rf"pasta_{stamp}_0\.pcap", pasta[0]), \
        f"[opt.pcap.default-path] pasta's name: {private_tmp_probe}"
