"""pasta's switches seen by real clients: --no-* protocol and service switches, -4/-6, -a/-g,
UDP following TCP ports, the start-up summary, and the options our RA and DHCPv6 replies carry.

Each test runs a script as pasta's command inside its namespace (the kernel, udhcpc,
dhclient -6, socat and ping are the clients) and asserts what the clients got.  Where a
switch must make something *not* happen, the same script shows that its neighbours still
work, so a test cannot pass just because the namespace is broken.
"""

from __future__ import annotations

import re
import subprocess
import sys
from ipaddress import IPv6Address
from pathlib import Path
from typing import Any

import pytest

from harness.netns import HOST_ADDR4, HOST_ADDR6, WAN_GW4, Topology
from harness.netns.topology import HOST_IF, HOST_MAC, WAN_ADDR4, WAN_ADDR6, WAN_GW6
from tests.integration.clients import in_pasta, udhcpc_hook, udhcpc_lease
from tests.integration.conftest import wait_until

TCP_ECHO = 7001
UDP_ECHO = 7002

#: Namespace shell: wait (at most 10 s) for the default route the kernel learns from our RA.
WAIT_RA = "for i in $(seq 100); do ip -6 route show default | grep -q 'proto ra' && break; sleep 0.1; done; "

#: Reaches wan by TCP, UDP (three tries: a datagram may be lost on a loaded machine) and
#: ICMP, over IPv4 or IPv6, and prints one KIND{tag}=answer line each (empty when nothing came).
PROBES = """
t=$(echo tcp-ok | timeout 6 socat -t 2 - TCP:{sock_addr}:{tcp},connect-timeout=2 2>/dev/null || true)
echo "TCP{tag}=$t"
u=
for i in 1 2 3; do
    u=$(echo udp-ok | timeout 4 socat -T 1 - UDP:{sock_addr}:{udp} 2>/dev/null || true)
    [ -n "$u" ] && break
done
echo "UDP{tag}=$u"
if ping -c 1 -W 2 {addr} >/dev/null 2>&1; then echo ICMP{tag}=icmp-ok; else echo ICMP{tag}=; fi
"""


def _probes(addr: str, tag: str = "") -> str:
    sock_addr = f"[{addr}]" if ":" in addr else addr
    return PROBES.format(addr=addr, sock_addr=sock_addr, tcp=TCP_ECHO, udp=UDP_ECHO, tag=tag)


def _answers(out: str) -> dict[str, str]:
    found = dict(line.split("=", 1) for line in out.splitlines() if re.match(r"^(TCP|UDP|ICMP)=", line))
    assert set(found) == {"TCP", "UDP", "ICMP"}, out
    return found


def _host_ip(topo: Topology, *args: str) -> None:
    """`ip ARGS` in the test's host namespace (extra interfaces, addresses, routes)."""
    topo.run(topo.host, ["ip", *args], check=True)


def _echo_servers(topo: Topology) -> None:
    topo.start_echo(port=TCP_ECHO)
    topo.start_echo(port=UDP_ECHO, udp=True)


@pytest.mark.parametrize("switch", ["--no-tcp", "--no-udp", "--no-icmp"])
@pytest.mark.conformance("opt.no-tcp", "opt.no-udp", "opt.no-icmp")
def test_protocol_switches_drop_only_their_protocol(topo: Topology, pasta_bin: str, switch: str) -> None:
    """Each --no-PROTO makes that protocol's traffic from the namespace go nowhere; the other two still work."""
    _echo_servers(topo)
    res = in_pasta(topo, pasta_bin, ["--config-net", switch], _probes(WAN_ADDR4))
    assert res.returncode == 0, res.stdout + res.stderr
    got = _answers(res.stdout)
    expected = {"TCP": "tcp-ok", "UDP": "udp-ok", "ICMP": "icmp-ok"}
    expected[switch.removeprefix("--no-").upper()] = ""
    assert got == expected, res.stdout + res.stderr


@pytest.mark.parametrize(("switch", "absent", "present"), [
    ("--no-tcp", ("tcp", 7777), ("udp", 7778)),
    ("--no-udp", ("udp", 7778), ("tcp", 7777)),
], ids=["no-tcp", "no-udp"])
@pytest.mark.conformance("opt.no-tcp", "opt.no-udp")
def test_protocol_switches_open_nothing_on_the_host(topo: Topology, pasta_bin: str, tmp_path: Path, switch: str,
                                                    absent: tuple[str, int], present: tuple[str, int]) -> None:
    """With --no-tcp (--no-udp), a port the namespace binds is not forwarded for that protocol,
    while the automatic forwarding of the other protocol picks up its port from the same scan."""
    done = tmp_path / "done"
    script = (f"socat TCP-LISTEN:7777,reuseaddr EXEC:cat & socat UDP-RECVFROM:7778,fork EXEC:cat & "
              f"while [ ! -e {done} ]; do sleep 0.05; done; kill %1 %2")
    proc = topo.popen(topo.host, [pasta_bin, "-q", "--config-net", switch, "--", "sh", "-c", script])
    try:
        topo.wait_listening(topo.host, present[1], udp=present[0] == "udp", timeout=20)
        # the scan that saw one port saw both (they were bound before it): the other is absent for good
        flag = "-Hlun" if absent[0] == "udp" else "-Hltn"
        out = topo.run(topo.host, ["ss", flag, f"sport = :{absent[1]}"]).stdout
        assert out.strip() == "", out
    finally:
        done.touch()
        proc.wait(20)


@pytest.mark.conformance("opt.no-dhcp")
def test_no_dhcp_leaves_udhcpc_without_lease_while_slaac_works(topo: Topology, pasta_bin: str, tmp_path: Path) -> None:
    """--no-dhcp: udhcpc gets no answer; the kernel's SLAAC (NDP) is unaffected."""
    hook = udhcpc_hook(tmp_path)
    script = (
        f"sysctl -qw net.ipv6.conf.{HOST_IF}.accept_dad=0; "
        f"if udhcpc -f -q -n -t 2 -T 1 -i {HOST_IF} -s {hook} >/dev/null 2>&1; then echo DHCP=yes; else echo DHCP=no; fi; "
        f"{WAIT_RA}"
        f"ip -o -6 addr show dev {HOST_IF} scope global"
    )
    res = in_pasta(topo, pasta_bin, ["--no-dhcp"], script)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "DHCP=no" in res.stdout, res.stdout
    assert re.search(r"inet6 fd77::\S+/64 .*dynamic", res.stdout), res.stdout


DHCLIENT6 = (
    "sysctl -qw net.ipv6.conf.{ifname}.accept_dad=0; "
    "for i in $(seq 100); do ip -6 addr show dev {ifname} scope link | grep -q tentative || break; sleep 0.05; done; "
    "printf 'timeout 4;\\nretry 1;\\n' > {tmp}/dh6.conf; "
    "if timeout 20 dhclient -6 -1 -cf {tmp}/dh6.conf -lf {tmp}/dh6.leases -pf {tmp}/dh6.pid "
    "-sf /sbin/dhclient-script {ifname} >/dev/null 2>&1; then echo DHCPV6=yes; else echo DHCPV6=no; fi; "
    "kill $(cat {tmp}/dh6.pid 2>/dev/null) 2>/dev/null || true; "
)


@pytest.mark.conformance("opt.no-dhcpv6")
def test_no_dhcpv6_leaves_dhclient6_without_address(topo: Topology, pasta_bin: str, tmp_path: Path) -> None:
    """--no-dhcpv6: dhclient -6 gets no reply and no /128; SLAAC still gives the /64."""
    script = DHCLIENT6.format(ifname=HOST_IF, tmp=tmp_path) + (
        f"{WAIT_RA}"
        f"ip -o -6 addr show dev {HOST_IF} scope global"
    )
    res = in_pasta(topo, pasta_bin, ["--no-dhcpv6"], script)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "DHCPV6=no" in res.stdout and f"{HOST_ADDR6}/128" not in res.stdout, res.stdout
    assert re.search(r"inet6 fd77::\S+/64 .*dynamic", res.stdout), res.stdout


@pytest.mark.parametrize("switch", ["--no-ra", "--no-ndp"])
@pytest.mark.conformance("opt.no-ra", "opt.no-ndp", "ndp.ns.na")
def test_no_ra_and_no_ndp(topo: Topology, pasta_bin: str, tmp_path: Path, switch: str) -> None:
    """--no-ra: no RA, so no SLAAC address or default route, but neighbour solicitations are
    answered; --no-ndp: neither. dhclient -6 (DHCPv6) keeps working in both."""
    script = DHCLIENT6.format(ifname=HOST_IF, tmp=tmp_path) + (
        # the kernel sent its router solicitations at link-up, long before dhclient finished
        f"ip -6 route show default; ip -o -6 addr show dev {HOST_IF} scope global; "
        f"ping -6 -c 1 -W 2 fe80::1%{HOST_IF} >/dev/null 2>&1 || true; "
        f"ip -6 neigh show fe80::1 dev {HOST_IF}"
    )
    res = in_pasta(topo, pasta_bin, [switch], script)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "DHCPV6=yes" in res.stdout and f"inet6 {HOST_ADDR6}/128" in res.stdout, res.stdout
    assert "proto ra" not in res.stdout and "/64" not in res.stdout, res.stdout
    answered = re.search(rf"^fe80::1 lladdr {HOST_MAC} ", res.stdout, re.M)
    if switch == "--no-ra":
        assert answered, res.stdout
    else:
        assert not answered, res.stdout


@pytest.mark.parametrize("switch", ["-4", "-6"])
@pytest.mark.conformance("opt.ipv4-only", "opt.ipv6-only", "host.family-enable")
def test_single_family(topo: Topology, pasta_bin: str, switch: str) -> None:
    """-4: the namespace gets IPv4 only and reaches wan over IPv4, not IPv6; -6 the other way round.
    Without either, both families are served (the host has an address and a default route for each)."""
    _echo_servers(topo)
    script = (
        f"sysctl -qw net.ipv6.conf.{HOST_IF}.accept_dad=0; "
        f"for i in $(seq 50); do ip -6 route show default | grep -q . && break; sleep 0.1; done; "
        f"echo V4ADDR=$(ip -o -4 addr show dev {HOST_IF} | wc -l); "
        f"echo V6ADDR=$(ip -o -6 addr show dev {HOST_IF} scope global | wc -l); "
        + _probes(WAN_ADDR4, "4")
        + _probes(WAN_ADDR6, "6")
    )
    res = in_pasta(topo, pasta_bin, ["--config-net", switch], script, timeout=120)
    assert res.returncode == 0, res.stdout + res.stderr
    got = dict(line.split("=", 1) for line in res.stdout.splitlines() if re.match(r"^[A-Z0-9]+=", line))
    v4 = switch == "-4"
    assert (got["V4ADDR"] != "0") == v4 and (got["V6ADDR"] != "0") == (not v4), res.stdout
    live = "4" if v4 else "6"
    dead = "6" if v4 else "4"
    assert [got[f"{k}{live}"] for k in ("TCP", "UDP", "ICMP")] == ["tcp-ok", "udp-ok", "icmp-ok"], res.stdout
    assert [got[f"{k}{dead}"] for k in ("TCP", "UDP", "ICMP")] == ["", "", ""], res.stdout


@pytest.mark.conformance("opt.address.per-family", "opt.gateway.per-family", "arp.reply", "opt.address",
                         "opt.gateway")
def test_address_and_gateway_given_per_family(topo: Topology, pasta_bin: str, tmp_path: Path) -> None:
    """-a and -g once per family (-n 24 keeps wan off-link, so traffic goes through the router):
    udhcpc leases the given IPv4 address and router (ARP for the
    router, and for any other address, answers with our MAC); the IPv6 address goes to dhclient -6."""
    hook = udhcpc_hook(tmp_path)
    addr4, gw4, addr6 = "10.77.0.50", "10.77.0.254", "fd77::50"
    script = (
        f"udhcpc -f -q -n -t 5 -T 1 -i {HOST_IF} -s {hook} 2>&1; "
        f"ping -c 1 -W 3 {WAN_ADDR4} >/dev/null && echo PING4=ok; "
        f"ping -c 1 -W 3 10.77.0.99 >/dev/null 2>&1 || true; "
        f"ip -4 neigh show dev {HOST_IF}; "
        + DHCLIENT6.format(ifname=HOST_IF, tmp=tmp_path)
        + f"ip -o -6 addr show dev {HOST_IF} scope global"
    )
    res = in_pasta(topo, pasta_bin, ["-a", addr4, "-n", "24", "-a", addr6, "-g", gw4, "-g", "fe80::99"], script)
    assert res.returncode == 0, res.stdout + res.stderr
    lease = udhcpc_lease(res.stdout)
    assert (lease["ip"], lease["router"]) == (addr4, gw4), lease
    assert "PING4=ok" in res.stdout, res.stdout
    for neighbour in (gw4, "10.77.0.99"):
        assert re.search(rf"^{re.escape(neighbour)} lladdr {HOST_MAC} ", res.stdout, re.M), res.stdout
    assert f"inet6 {addr6}/128" in res.stdout, res.stdout


@pytest.mark.conformance("ports.udp-follows-tcp")
def test_udp_follows_forwarded_tcp_port(topo: Topology, pasta_bin: str, tmp_path: Path) -> None:
    """-t 5353 without -u forwards UDP 5353 too (no translation): a datagram from wan gets its echo."""
    done = tmp_path / "done"
    script = (f"socat UDP6-RECVFROM:5353,ipv6only=0,fork EXEC:cat & "
              f"while [ ! -e {done} ]; do sleep 0.05; done; kill %1")
    proc = topo.popen(topo.host, [pasta_bin, "-q", "--config-net", "-t", "5353", "--", "sh", "-c", script])
    try:
        topo.wait_listening(topo.host, 5353, udp=True, timeout=20)
        for _ in range(3):  # a datagram may be lost on a loaded machine: ask again
            res = topo.run(topo.wan, ["socat", "-T", "1", "-", f"UDP:{HOST_ADDR4}:5353"], input="follow\n",
                           timeout=20)
            if res.stdout.strip():
                break
        assert res.stdout.strip() == "follow", res.stderr
    finally:
        done.touch()
        proc.wait(20)


@pytest.mark.conformance("summary.pasta", "summary.omitted-blocks")
def test_summary_printed_at_start(topo: Topology, pasta_bin: str) -> None:
    """Without -q pasta prints the EXAMPLES' summary (interfaces, MAC, DHCP and NDP/DHCPv6 blocks);
    with -4 the IPv6 blocks are left out."""
    res = topo.run(topo.host, [pasta_bin, "--config-net", "--", "true"], timeout=60)
    assert res.returncode == 0, res.stderr
    out = res.stderr  # the summary is a log block: stderr, never stdout
    assert re.search(rf"^Outbound interface: {HOST_IF}, namespace interface: {HOST_IF}$", out, re.M), out
    assert re.search(rf"^ARP:\n\s+address: {HOST_MAC}$", out, re.M), out
    assert re.search(rf"^DHCP:\n\s+assign: {re.escape(HOST_ADDR4)}\n\s+mask: 255\.255\.255\.0\n"
                     rf"\s+router: {re.escape(WAN_GW4)}$", out, re.M), out
    assert re.search(rf"^NDP/DHCPv6:\n\s+assign: {re.escape(HOST_ADDR6)}\n\s+router: {re.escape(WAN_GW6)}$",
                     out, re.M), out
    only4 = topo.run(topo.host, [pasta_bin, "--config-net", "-4", "--", "true"], timeout=60).stderr
    assert "DHCP:" in only4 and "NDP/DHCPv6:" not in only4, only4


def _ra_and_dhcpv6_reply(pcap: Path) -> tuple[Any, Any]:
    from scapy.layers.dhcp6 import DHCP6_Reply
    from scapy.layers.inet6 import ICMPv6ND_RA
    from scapy.utils import rdpcap

    ra = reply = None
    for pkt in rdpcap(str(pcap)):
        if ra is None and pkt.haslayer(ICMPv6ND_RA):
            ra = pkt[ICMPv6ND_RA]
        if reply is None and pkt.haslayer(DHCP6_Reply):
            reply = pkt[DHCP6_Reply]
    assert ra is not None and reply is not None, "no RA or no DHCPv6 Reply captured"
    return ra, reply


@pytest.mark.conformance("ndp.ra.rdnss", "ndp.ra.dnssl", "ndp.ra.mtu", "dhcpv6.option23.dns",
                         "dhcpv6.option24.search")
def test_ra_and_dhcpv6_carry_resolvers_search_list_and_mtu(topo: Topology, pasta_bin: str, tmp_path: Path) -> None:
    """The RA the kernel solicits carries RDNSS, DNSSL and (with -m) MTU, which the kernel applies;
    dhclient -6's Reply carries the DNS (23) and domain list (24) options, which dhclient records."""
    from scapy.layers.dhcp6 import DHCP6OptDNSDomains, DHCP6OptDNSServers
    from scapy.layers.inet6 import ICMPv6NDOptDNSSL, ICMPv6NDOptMTU, ICMPv6NDOptRDNSS

    pcap = tmp_path / "cap.pcap"
    script = DHCLIENT6.format(ifname=HOST_IF, tmp=tmp_path) + (
        f"{WAIT_RA}"
        f"echo V6MTU=$(cat /proc/sys/net/ipv6/conf/{HOST_IF}/mtu); cat {tmp_path}/dh6.leases"
    )
    res = in_pasta(topo, pasta_bin, ["-p", str(pcap), "-D", "fd77:1::53", "-S", "example.test",
                                      "-m", "1400"], script)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "V6MTU=1400" in res.stdout, res.stdout
    assert re.search(r"dhcp6\.name-servers fd77:1::53;", res.stdout), res.stdout
    assert re.search(r'dhcp6\.domain-search "example\.test\.";', res.stdout), res.stdout
    wait_until(lambda: pcap.exists() and pcap.stat().st_size > 0, what="capture")
    ra, reply = _ra_and_dhcpv6_reply(pcap)
    assert ra[ICMPv6NDOptRDNSS].dns == ["fd77:1::53"]
    assert ra[ICMPv6NDOptDNSSL].searchlist == ["example.test."]
    assert ra[ICMPv6NDOptMTU].mtu == 1400
    assert reply[DHCP6OptDNSServers].dnsservers == ["fd77:1::53"]
    assert reply[DHCP6OptDNSDomains].dnsdomains == ["example.test."]


@pytest.mark.conformance("opt.interface")
def test_interface_option_picks_another_host_interface(topo: Topology, pasta_bin: str) -> None:
    """-i alt0: addresses, routes and the namespace interface's name come from alt0, a second
    uplink whose default route has a worse metric; without -i the first default route's wins."""
    _host_ip(topo, "link", "add", "alt0", "mtu", "9000", "type", "veth", "peer", "name", "alt0p")
    _host_ip(topo, "addr", "add", "192.0.2.5/24", "dev", "alt0")
    _host_ip(topo, "link", "set", "alt0", "up")
    _host_ip(topo, "link", "set", "alt0p", "up")
    _host_ip(topo, "route", "add", "default", "via", "192.0.2.1", "dev", "alt0", "metric", "500")
    show = "ip -o -4 addr show scope global; ip -4 route show default; ip -o link show | grep -v ' lo:'"
    res = in_pasta(topo, pasta_bin, ["--config-net", "-i", "alt0"], show)
    assert res.returncode == 0, res.stderr
    assert re.search(r"^\d+: alt0\s+inet 192\.0\.2\.5/24 ", res.stdout, re.M), res.stdout
    assert re.search(r"^default via 192\.0\.2\.1 dev alt0", res.stdout, re.M), res.stdout
    assert re.search(r"^\d+: alt0: .* mtu 65520 ", res.stdout, re.M), res.stdout  # the tap's, not alt0's 9000
    plain = in_pasta(topo, pasta_bin, ["--config-net"], show)
    assert re.search(rf"^\d+: {HOST_IF}\s+inet {re.escape(HOST_ADDR4)}/24 ", plain.stdout, re.M), plain.stdout


@pytest.mark.conformance("host.ipv6-prefix", "ndp.ra.prefix")
def test_slaac_prefix_when_host_address_is_a_128(topo: Topology, pasta_bin: str) -> None:
    """The host holds fd77::2/128 only (as on many hosted VMs): the RA still announces a /64
    that the namespace's kernel uses for SLAAC, and IPv6 reaches wan."""
    _host_ip(topo, "-6", "addr", "del", f"{HOST_ADDR6}/64", "dev", HOST_IF)
    _host_ip(topo, "-6", "addr", "add", f"{HOST_ADDR6}/128", "dev", HOST_IF, "nodad")
    _host_ip(topo, "-6", "route", "replace", f"{WAN_GW6}/128", "dev", HOST_IF)
    _host_ip(topo, "-6", "route", "replace", "default", "via", WAN_GW6, "dev", HOST_IF)
    topo.start_echo(port=TCP_ECHO)
    script = (
        f"sysctl -qw net.ipv6.conf.{HOST_IF}.accept_dad=0; "
        f"{WAIT_RA}"
        f"ip -o -6 addr show dev {HOST_IF} scope global; "
        f"echo tcp6-ok | timeout 6 socat -t 2 - TCP:[{WAN_ADDR6}]:{TCP_ECHO},connect-timeout=2"
    )
    res = in_pasta(topo, pasta_bin, [], script)
    assert res.returncode == 0, res.stdout + res.stderr
    assert re.search(r"inet6 fd77::[0-9a-f:]+/64 .*dynamic", res.stdout), res.stdout
    assert res.stdout.strip().endswith("tcp6-ok"), res.stdout


@pytest.mark.conformance("notes.nat.ipv6-linklocal")
def test_link_local_destination_reaches_guest_link_local(topo: Topology, pasta_bin: str, tmp_path: Path) -> None:
    """A host client connecting to the host's own link-local address on a forwarded port reaches
    the namespace at its observed link-local address (not its global one)."""
    done, info = tmp_path / "done", tmp_path / "info"
    script = (
        f"sysctl -qw net.ipv6.conf.{HOST_IF}.accept_dad=0; "
        "socat TCP6-LISTEN:7100,ipv6only=1,reuseaddr,fork 'SYSTEM:echo local=$SOCAT_SOCKADDR' & "
        f"{WAIT_RA}"
        f"ip -o -6 addr show dev {HOST_IF} scope link > {info}.tmp; mv {info}.tmp {info}; "
        f"while [ ! -e {done} ]; do sleep 0.05; done; kill %1"
    )
    proc = topo.popen(topo.host, [pasta_bin, "-q", "--config-net", "-t", "7100", "--", "sh", "-c", script])
    try:
        wait_until(info.exists, timeout=20, what="namespace ready")
        ns_ll = re.search(r"inet6 (fe80::[0-9a-f:]+)/64", info.read_text())
        assert ns_ll is not None, info.read_text()
        host_ll = re.search(r"inet6 (fe80::[0-9a-f:]+)/64",
                            topo.run(topo.host, ["ip", "-o", "-6", "addr", "show", "dev", HOST_IF, "scope", "link"]).stdout)
        assert host_ll is not None
        topo.wait_listening(topo.host, 7100)
        res = topo.run(topo.host, ["socat", "-t", "3", "-", f"TCP6:[{host_ll[1]}%{HOST_IF}]:7100"], input="", timeout=30)
        seen = re.fullmatch(r"local=\[([0-9a-f:]+)\]", res.stdout.strip())
        assert seen is not None, res.stdout + res.stderr
        assert IPv6Address(seen[1]) == IPv6Address(ns_ll[1]), (seen[1], ns_ll[1])
    finally:
        done.touch()
        proc.wait(20)


def _announced_windows(pcap: Path, port: int) -> list[int]:
    """Windows (scaled) that pasta announced to the namespace on the connection to `port`, after its SYN-ACK."""
    from scapy.layers.inet import TCP
    from scapy.utils import rdpcap

    shift, windows = 0, []
    for pkt in rdpcap(str(pcap)):
        if not pkt.haslayer(TCP) or pkt[TCP].sport != port:
            continue
        tcp = pkt[TCP]
        if tcp.flags.S:
            shift = dict(tcp.options).get("WScale", 0)
            continue
        windows.append(tcp.window << shift)
    return windows


@pytest.mark.parametrize("rcvbuf", [4096, 0], ids=["small-peer-window", "default-peer-window"])
@pytest.mark.conformance("tcp.window-reflect")
def test_window_announced_to_namespace_follows_the_peer(topo: Topology, pasta_bin: str, tmp_path: Path,
                                                        rcvbuf: int) -> None:
    """A wan receiver with a 4 KiB receive buffer that reads late: every window pasta announces
    to the namespace's sender stays that small (reflected from TCP_INFO), and the 1 MiB still
    arrives whole; with a default buffer the windows open wide."""
    pcap, sink = tmp_path / "cap.pcap", tmp_path / "sink"
    opt = f",rcvbuf={rcvbuf}" if rcvbuf else ""
    topo.popen(topo.wan, ["socat", "-u", f"TCP-LISTEN:9100,reuseaddr{opt}", f"SYSTEM:sleep 1; wc -c > {sink}"])
    topo.wait_listening(topo.wan, 9100)
    script = f"head -c 1048576 /dev/zero | socat -u - TCP:{WAN_ADDR4}:9100"
    res = in_pasta(topo, pasta_bin, ["--config-net", "-p", str(pcap)], script)
    assert res.returncode == 0, res.stdout + res.stderr
    wait_until(lambda: sink.exists() and sink.read_text().strip() != "", timeout=20, what="receiver done")
    assert sink.read_text().split()[0] == "1048576"
    windows = _announced_windows(pcap, 9100)
    assert windows, "no frame from the peer's side captured"
    if rcvbuf:
        assert max(windows) <= 8192, sorted(set(windows))[-5:]
    else:
        assert max(windows) >= 65536, sorted(set(windows))[-5:]


#: In the namespace: one ICMP echo request with identifier 4242 through a raw socket, then the
#: identifier of the reply from wan (or "none" after 5 s).
_ECHO_WITH_ID = r"""
import socket, struct, sys, time
def csum(b):
    s = sum(struct.unpack("!%dH" % (len(b) // 2), b))
    s = (s >> 16) + (s & 0xFFFF); s += s >> 16
    return ~s & 0xFFFF
raw = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
msg = struct.pack("!BBHHH", 8, 0, 0, 4242, 1) + b"fallback-id!"
msg = msg[:2] + struct.pack("!H", csum(msg)) + msg[4:]
raw.sendto(msg, (sys.argv[1], 0))
raw.settimeout(0.5)
deadline = time.monotonic() + 5
while time.monotonic() < deadline:
    try:
        pkt = raw.recv(2048)
    except socket.timeout:
        continue
    icmp = pkt[(pkt[0] & 0x0F) * 4:]
    if icmp[0] == 0 and icmp[8:] == b"fallback-id!":
        print("reply-id", struct.unpack("!H", icmp[4:6])[0]); break
else:
    print("reply-id none")
"""

#: In the host namespace: hold a ping socket bound to identifier 4242 until stdin closes.
_HOLD_ID = r"""
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_ICMP)
s.bind(("0.0.0.0", 4242))
print("held", flush=True)
sys.stdin.read()
"""


#: In wan: the identifier of the first echo request carrying our payload, as it arrived.
_SEEN_ID = r"""
import socket, struct
raw = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
print("ready", flush=True)
while True:
    pkt = raw.recv(2048)
    icmp = pkt[(pkt[0] & 0x0F) * 4:]
    if icmp[0] == 8 and icmp[8:] == b"fallback-id!":
        print("request-id", struct.unpack("!H", icmp[4:6])[0], flush=True)
        break
"""


@pytest.mark.conformance("notes.icmp.fallback-id")
def test_echo_identifier_taken_on_host_still_answers_with_the_guests_id(topo: Topology, pasta_bin: str,
                                                                         tmp_path: Path) -> None:
    """The host already has a ping socket on identifier 4242, so pasta cannot bind that one: it
    sends with another identifier and maps the reply back to 4242 for the namespace."""
    holder = topo.popen(topo.host, [sys.executable, "-c", _HOLD_ID], stdin=subprocess.PIPE)
    seen = topo.popen(topo.wan, [sys.executable, "-c", _SEEN_ID])
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == b"held"
        assert seen.stdout is not None and seen.stdout.readline().strip() == b"ready"
        script = tmp_path / "echo.py"
        script.write_text(_ECHO_WITH_ID)
        res = topo.run(topo.host, [pasta_bin, "-q", "--config-net", "--", sys.executable, str(script), WAN_ADDR4],
                       timeout=60)
        assert res.returncode == 0, res.stdout + res.stderr
        assert res.stdout.split() == ["reply-id", "4242"], res.stdout + res.stderr
        # ...while wan saw the request under another identifier
        out, _ = seen.communicate(timeout=10)
        words = out.decode().split()
        assert words[:1] == ["request-id"] and words[1] != "4242", words
    finally:
        assert holder.stdin is not None
        holder.stdin.close()
        holder.wait(10)
