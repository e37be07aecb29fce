"""Today's address options, through pasta's real command line, seen by real servers.

--dns-forward/--dns-host (a DNS server in wan logs who asked, over which protocol,
at which of its addresses), --map-guest-addr (a server on the host's own address),
--map-host-loopback and --no-map-gw (a server on the host's loopback only), -o and
--outbound-if4 (wan servers report the source they saw), -H/--fqdn (udhcpc's lease).
Each script runs as pasta's command in its namespace; every assertion is about what
a server or a client saw.  Where an option must make something *not* happen, the
same run shows that a neighbouring path works, so a broken namespace can't pass.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from harness.netns import HOST_ADDR4, HOST_ADDR6, WAN_ADDR4, WAN_GW4, Topology
from harness.netns.dns import ANSWER_A, queries, start_dns
from harness.netns.topology import DNS_ADDR4, DNS_ADDR6, HOST_IF, WAN_ADDR6
from tests.integration.clients import in_pasta
from tests.integration.conftest import wait_until

#: Podman's way: configured namespace, no port forwarding at all.
NET = ["--config-net", "-t", "none", "-u", "none", "-T", "none", "-U", "none"]
FWD4 = "169.254.1.1"
FWD6 = "fd00:53::1"
GUEST_MAP = "169.254.1.2"
GUEST_MAP6 = "fd00::2"
LOOP_MAP = "169.254.1.3"
WHO_PORT = 7010

#: One DNS query from the namespace, printed as "DNSQ proto answer-source answer-address".
DNSQ = r'''
import socket, struct, sys
proto, server, name = sys.argv[1:4]
fam = socket.AF_INET6 if ":" in server else socket.AF_INET
q = struct.pack("!HHHHHH", 0x4242, 0x0100, 1, 0, 0, 0)
q += b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\0" + struct.pack("!HH", 1, 1)
if proto == "udp":
    s = socket.socket(fam, socket.SOCK_DGRAM); s.settimeout(3)
    for _ in range(3):
        s.sendto(q, (server, 53))
        try:
            r, src = s.recvfrom(4096); break
        except socket.timeout:
            r, src = b"", ("none",)
else:
    s = socket.create_connection((server, 53), timeout=3)
    s.sendall(struct.pack("!H", len(q)) + q)
    n = struct.unpack("!H", s.recv(2))[0]; r = b""
    while len(r) < n:
        r += s.recv(n - len(r))
    src = s.getpeername()
a = socket.inet_ntop(socket.AF_INET, r[-4:]) if len(r) >= 16 else "none"
print("DNSQ", proto, src[0], a)
'''


#: Fetch a file by name through the libc resolver (getaddrinfo and /etc/resolv.conf).
FETCH = ("import urllib.request as u; "
         "print(u.urlopen('http://web.example.test:8080/hello.txt', timeout=5).read().decode())")


def _dnsq(tmp_path: Path) -> Path:
    path = tmp_path / "dnsq.py"
    path.write_text(DNSQ)
    return path


def _answers(out: str) -> list[list[str]]:
    return [line.split()[1:] for line in out.splitlines() if line.startswith("DNSQ ")]


def _who_server(topo: Topology, ns: str, bind: str, port: int = WHO_PORT) -> None:
    """A TCP server on `bind` that answers each connection with the peer address it saw."""
    spec = f"TCP6-LISTEN:{port},bind=[{bind}],reuseaddr,fork" if ":" in bind else \
        f"TCP4-LISTEN:{port},bind={bind},reuseaddr,fork"
    topo.popen(ns, ["socat", spec, "SYSTEM:echo peer=$SOCAT_PEERADDR"],
               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    topo.wait_listening(ns, port)


def _who(addr: str, tag: str, port: int = WHO_PORT) -> str:
    """Namespace shell: connect to the who-server at `addr`, print WHO{tag}=what it said."""
    target = f"[{addr}]" if ":" in addr else addr
    return (f"w=$(timeout 6 socat -T 3 - TCP:{target}:{port},connect-timeout=2 </dev/null 2>/dev/null || true); "
            f'echo "WHO{tag}=$w"; ')  # fmt: skip


#: Namespace shell: one echo request to {addr}, printed as WHOPing=yes|no.
PING = "if ping -c 1 -W 2 {addr} >/dev/null 2>&1; then echo WHOPing=yes; else echo WHOPing=no; fi; "


def _who_said(out: str) -> dict[str, str]:
    return dict((m[1], m[2]) for m in re.finditer(r"^WHO(\w*)=(.*)$", out, re.M))


@pytest.mark.conformance("callers.dns-forward", "callers.dns-host")
def test_dns_forward_reaches_host_resolver_over_udp_and_tcp(topo: Topology, pasta_bin: str, tmp_path: Path) -> None:
    """Queries to --dns-forward (UDP, TCP, busybox nslookup, libc through a resolv.conf naming
    only the forward address; IPv4 and IPv6) reach the host's first nameserver from the host's
    address, and the answers come back from the forward address."""
    log = tmp_path / "dns.log"
    start_dns(topo, log, [DNS_ADDR4, DNS_ADDR6])
    web = tmp_path / "web"
    web.mkdir()
    (web / "hello.txt").write_text("hello-through-dns-forward\n")
    topo.start_http(web)
    # as Podman does: the namespace's resolv.conf names only the forward address; the
    # libc resolver then finds the web server (bookworm's static busybox wget crashes in it)
    resolv = tmp_path / "resolv.conf"
    resolv.write_text(f"nameserver {FWD4}\n")
    fetch = tmp_path / "fetch.py"
    fetch.write_text(FETCH)
    q = _dnsq(tmp_path)
    script = (f"python3 {q} udp {FWD4} udp4.example.test; python3 {q} tcp {FWD4} tcp4.example.test; "
              f"python3 {q} udp {FWD6} udp6.example.test; "
              f"busybox nslookup -type=a nsl.example.test {FWD4} || true; "
              f"unshare -m sh -c 'mount --bind {resolv} /etc/resolv.conf && "
              f"python3 {fetch}' || true")  # fmt: skip
    res = in_pasta(topo, pasta_bin, [*NET, "--dns-forward", FWD4, "--dns-forward", FWD6], script)
    assert res.returncode == 0, res.stdout + res.stderr
    assert _answers(res.stdout) == [["udp", FWD4, ANSWER_A], ["tcp", FWD4, ANSWER_A],
                                    ["udp", FWD6, ANSWER_A]], res.stdout  # fmt: skip
    assert re.search(rf"Address:\s+{re.escape(ANSWER_A)}\b", res.stdout), res.stdout
    assert "hello-through-dns-forward" in res.stdout, res.stdout + res.stderr
    seen = {(q[0], q[1], q[2], q[3]) for q in queries(log)}
    assert ("udp", HOST_ADDR4, DNS_ADDR4, "udp4.example.test") in seen, seen
    assert ("tcp", HOST_ADDR4, DNS_ADDR4, "tcp4.example.test") in seen, seen
    assert ("udp", "fd77::2", DNS_ADDR6, "udp6.example.test") in seen, seen
    assert ("udp", HOST_ADDR4, DNS_ADDR4, "nsl.example.test") in seen, seen
    assert ("udp", HOST_ADDR4, DNS_ADDR4, "web.example.test") in seen, seen


@pytest.mark.conformance("callers.dns-host", "callers.dns-forward")
def test_dns_host_picks_the_server_and_other_ports_are_not_forwarded(topo: Topology, pasta_bin: str,
                                                                      tmp_path: Path) -> None:
    """--dns-host sends the forwarded queries to that server instead of resolv.conf's; a query
    straight to the host's nameserver still goes there (only the forward address is mapped)."""
    other = "10.77.1.54"
    topo.run(topo.wan, ["ip", "addr", "add", f"{other}/32", "dev", "lo"], check=True)
    log = tmp_path / "dns.log"
    start_dns(topo, log, [DNS_ADDR4, other])
    q = _dnsq(tmp_path)
    script = f"python3 {q} udp {FWD4} fwd.example.test; python3 {q} tcp {DNS_ADDR4} direct.example.test"
    res = in_pasta(topo, pasta_bin, [*NET, "--dns-forward", FWD4, "--dns-host", other], script)
    assert res.returncode == 0, res.stdout + res.stderr
    assert _answers(res.stdout) == [["udp", FWD4, ANSWER_A], ["tcp", DNS_ADDR4, ANSWER_A]], res.stdout
    seen = [(q[0], q[2], q[3]) for q in queries(log)]
    assert ("udp", other, "fwd.example.test") in seen and ("tcp", DNS_ADDR4, "direct.example.test") in seen, seen
    assert ("udp", DNS_ADDR4, "fwd.example.test") not in seen, seen


@pytest.mark.conformance("callers.map-guest-addr")
def test_map_guest_addr_reaches_server_on_host_address(topo: Topology, pasta_bin: str) -> None:
    """--map-guest-addr: the namespace reaches a server bound only to the host's own address,
    which its own copy of that address shadows; the address itself stays the namespace's."""
    _who_server(topo, topo.host, HOST_ADDR4)
    _who_server(topo, topo.host, HOST_ADDR6, WHO_PORT + 1)
    script = _who(GUEST_MAP, "Map") + _who(HOST_ADDR4, "Own") + _who(GUEST_MAP6, "Map6", WHO_PORT + 1)
    res = in_pasta(topo, pasta_bin, [*NET, "--map-guest-addr", GUEST_MAP, "--map-guest-addr", GUEST_MAP6], script)
    assert res.returncode == 0, res.stdout + res.stderr
    said = _who_said(res.stdout)
    assert said["Map"] == f"peer={HOST_ADDR4}", res.stdout  # the host's server answered, to a host socket
    assert said["Own"] == "", res.stdout  # the namespace's own address: nothing listens there
    assert said["Map6"] == "peer=[fd77:0000:0000:0000:0000:0000:0000:0002]", res.stdout  # socat spells it out


@pytest.mark.conformance("callers.map-guest-addr", "notes.nat.src-gateway")
def test_map_guest_addr_is_the_source_of_host_connections(topo: Topology, pasta_bin: str, tmp_path: Path) -> None:
    """With --map-guest-addr, a connection from the host's own address to a forwarded port reaches
    the namespace from that address (host.containers.internal), no longer from the gateway."""
    ready = tmp_path / "ready"
    script = ("socat TCP-LISTEN:2222,reuseaddr 'SYSTEM:echo peer=$SOCAT_PEERADDR' & "
              "until ss -Hltn 'sport = :2222' | grep -q .; do sleep 0.02; done; "
              f"touch {ready}; wait")  # fmt: skip
    topo.popen(topo.host, [pasta_bin, "-q", "--config-net", "-t", "2222", "-u", "none", "-T", "none",
                           "-U", "none", "--map-guest-addr", GUEST_MAP, "--", "sh", "-c", script])  # fmt: skip
    topo.wait_listening(topo.host, 2222)
    wait_until(ready.exists, what="namespace server")
    res = topo.run(topo.host, ["socat", "-t", "2", "-", f"TCP:{HOST_ADDR4}:2222"], input="", timeout=20)
    assert res.stdout.strip() == f"peer={GUEST_MAP}", res.stdout + res.stderr


@pytest.mark.parametrize("extra", [[], ["--no-map-gw"], ["--map-host-loopback", "none"]],
                         ids=["default", "no-map-gw", "none"])  # fmt: skip
@pytest.mark.conformance("callers.map-host-loopback", "callers.no-map-gw", "notes.nat.gateway-to-loopback")
def test_map_host_loopback(topo: Topology, pasta_bin: str, extra: list[str]) -> None:
    """--map-host-loopback ADDR reaches a server bound to the host's 127.0.0.1 only, which sees a
    loopback peer, and answers pings (the host's loopback does); without it (default, --no-map-gw,
    none) neither ADDR nor the gateway reach it."""
    _who_server(topo, topo.host, "127.0.0.1")
    topo.start_echo(port=7001)  # wan: shows the namespace reaches out at all
    probe = _who(LOOP_MAP, "Map") + _who(WAN_GW4, "Gw") + PING.format(addr=LOOP_MAP)
    probe += (f"e=$(echo hi | timeout 6 socat -T 3 - TCP:{WAN_ADDR4}:7001,connect-timeout=2 2>/dev/null "
              '|| true); echo "WHOWan=$e"')  # fmt: skip
    res = in_pasta(topo, pasta_bin, [*NET, *extra], probe)
    assert res.returncode == 0, res.stdout + res.stderr
    said = _who_said(res.stdout)
    assert said == {"Map": "", "Gw": "", "Wan": "hi", "Ping": "no"}, res.stdout
    if extra:
        return  # the mapped case needs no repeating per variant
    mapped = in_pasta(topo, pasta_bin, [*NET, "--map-host-loopback", LOOP_MAP],
                      _who(LOOP_MAP, "Map") + PING.format(addr=LOOP_MAP))  # fmt: skip
    assert mapped.returncode == 0, mapped.stdout + mapped.stderr
    assert _who_said(mapped.stdout) == {"Map": "peer=127.0.0.1", "Ping": "yes"}, mapped.stdout


@pytest.mark.conformance("callers.outbound")
def test_outbound_address_is_the_source_wan_sees(topo: Topology, pasta_bin: str, tmp_path: Path) -> None:
    """-o (once per family): wan's servers see TCP and UDP from the chosen addresses; without -o
    from the host's primary ones."""
    topo.run(topo.host, ["ip", "addr", "add", "10.77.0.9/24", "dev", HOST_IF], check=True)
    topo.run(topo.host, ["ip", "addr", "add", "fd77::9/64", "dev", HOST_IF, "nodad"], check=True)
    _who_server(topo, topo.wan, WAN_ADDR4)
    _who_server(topo, topo.wan, WAN_ADDR6, WHO_PORT + 1)
    log = tmp_path / "dns.log"
    start_dns(topo, log, [DNS_ADDR4])
    q = _dnsq(tmp_path)
    script = _who(WAN_ADDR4, "4") + _who(WAN_ADDR6, "6", WHO_PORT + 1) + f"python3 {q} udp {DNS_ADDR4} o.example.test"
    res = in_pasta(topo, pasta_bin, [*NET, "-o", "10.77.0.9", "-o", "fd77::9"], script)
    assert res.returncode == 0, res.stdout + res.stderr
    said = _who_said(res.stdout)
    assert said["4"] == "peer=10.77.0.9", res.stdout
    assert said["6"] == "peer=[fd77:0000:0000:0000:0000:0000:0000:0009]", res.stdout  # socat spells it out
    assert [q[1] for q in queries(log) if q[3] == "o.example.test"] == ["10.77.0.9"]
    plain = in_pasta(topo, pasta_bin, NET, _who(WAN_ADDR4, "4"))
    assert _who_said(plain.stdout)["4"] == f"peer={HOST_ADDR4}", plain.stdout


@pytest.mark.conformance("callers.outbound-if")
def test_outbound_if4_binds_the_interface(topo: Topology, pasta_bin: str) -> None:
    """--outbound-if4 alt0: connections leave through a second uplink whose default route has a worse
    metric, so wan sees that uplink's address; without it they leave through the first."""
    topo.run(topo.host, ["ip", "link", "add", "alt0", "netns", topo.host, "type", "veth", "peer", "name",
                         "altw", "netns", topo.wan], check=True)  # fmt: skip
    topo.run(topo.host, ["ip", "addr", "add", "10.77.2.2/24", "dev", "alt0"], check=True)
    topo.run(topo.host, ["ip", "link", "set", "alt0", "up"], check=True)
    topo.run(topo.wan, ["ip", "addr", "add", "10.77.2.1/24", "dev", "altw"], check=True)
    topo.run(topo.wan, ["ip", "link", "set", "altw", "up"], check=True)
    topo.run(topo.host, ["ip", "route", "add", "default", "via", "10.77.2.1", "dev", "alt0", "metric", "500"],
             check=True)  # fmt: skip
    _who_server(topo, topo.wan, WAN_ADDR4)
    res = in_pasta(topo, pasta_bin, [*NET, "-4", "--outbound-if4", "alt0"], _who(WAN_ADDR4, "4"))
    assert res.returncode == 0, res.stdout + res.stderr
    assert _who_said(res.stdout)["4"] == "peer=10.77.2.2", res.stdout
    plain = in_pasta(topo, pasta_bin, [*NET, "-4"], _who(WAN_ADDR4, "4"))
    assert _who_said(plain.stdout)["4"] == f"peer={HOST_ADDR4}", plain.stdout


HOOK = """#!/bin/sh
case "$1" in bound|renew) echo "LEASE_hostname=$hostname"; env | grep -E '^opt81=' | sed 's/^/LEASE_/';; esac
exit 0
"""


@pytest.mark.conformance("callers.hostname", "callers.fqdn")
def test_hostname_and_fqdn_in_udhcpc_lease(topo: Topology, pasta_bin: str, tmp_path: Path) -> None:
    """-H shows up as udhcpc's $hostname (option 12), --fqdn as option 81 in wire format."""
    hook = tmp_path / "hook.sh"
    hook.write_text(HOOK)
    hook.chmod(0o755)
    script = f"ip link set dev {HOST_IF} up; udhcpc -f -q -n -t 5 -T 1 -i {HOST_IF} -s {hook} -O hostname -O 81 2>&1"
    res = in_pasta(topo, pasta_bin, ["-4", "-H", "guest7", "--fqdn", "guest7.example.test"], script)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "LEASE_hostname=guest7" in res.stdout, res.stdout
    wire = "04ffff06677565737437076578616d706c6504746573740" + "0"
    assert re.search(rf"^LEASE_opt81={wire}$", res.stdout, re.M), res.stdout
