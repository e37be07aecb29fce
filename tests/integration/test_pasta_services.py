"""pasta with real clients in the namespace: udhcpc, dhclient -6, the kernel's SLAAC.

Each test runs a script inside pasta's namespace (pasta runs it as its command)
and asserts what the client configured, as `ip` shows it.
"""

from __future__ import annotations

import re
import shutil
import tempfile
from pathlib import Path

import pytest

from harness.netns import HOST_ADDR4, HOST_ADDR6, WAN_GW4, Topology
from harness.netns.topology import HOST_IF, HOST_MAC, WAN_ADDR4, WAN_GW6
from tests.integration.clients import in_pasta, udhcpc_hook, udhcpc_lease
from tests.integration.conftest import unprivileged


@pytest.mark.conformance(
    "example.pasta.udhcpc", "dhcp.yiaddr", "dhcp.option1.netmask", "dhcp.option3.router",
    "dhcp.option6.dns", "dhcp.option119.search", "dhcp.option26.mtu", "dhcp.lease-infinite",
    "opt.address.default", "opt.netmask.default-host", "opt.gateway.default",
    "opt.mac-addr.default",
)
def test_udhcpc_gets_host_address_and_options(topo: Topology, pasta_bin: str, tmp_path: Path) -> None:
    """udhcpc in the namespace leases the host's address, mask, router (our MAC: the host's), and the -D/-S/-m values."""
    hook = udhcpc_hook(tmp_path)
    script = (
        f"udhcpc -f -q -n -t 5 -T 1 -i {HOST_IF} -s {hook} -O search -O mtu 2>&1; "
        f"ip -o -4 addr show dev {HOST_IF}; ip -4 route show; "
        f"ping -c 1 -W 3 {WAN_ADDR4} >/dev/null; ip -4 neigh show dev {HOST_IF}"
    )
    res = in_pasta(topo, pasta_bin, ["-D", "10.77.1.53", "-S", "example.test corp.test", "-m", "1500"], script)
    assert res.returncode == 0, res.stdout + res.stderr
    fields = udhcpc_lease(res.stdout)
    assert fields["ip"] == HOST_ADDR4, f"[dhcp.yiaddr, opt.address.default] the host's address: {fields}"
    assert fields["mask"] == "24", f"[dhcp.option1.netmask, opt.netmask.default-host] the host's /24: {fields}"
    assert fields["router"] == WAN_GW4, f"[dhcp.option3.router, opt.gateway.default] the host's gateway: {fields}"
    assert fields["dns"].split() == ["10.77.1.53"], f"[dhcp.option6.dns] -D: {fields}"
    assert fields["search"].split() == ["example.test", "corp.test"], f"[dhcp.option119.search] -S: {fields}"
    assert fields["mtu"] == "1500", f"[dhcp.option26.mtu] -m: {fields}"
    assert fields["lease"] == "4294967295", f"[dhcp.lease-infinite] {fields}"
    assert f"inet {HOST_ADDR4}/24" in res.stdout, f"[example.pasta.udhcpc] address configured: {res.stdout}"
    assert f"default via {WAN_GW4} dev {HOST_IF}" in res.stdout, f"[example.pasta.udhcpc] route: {res.stdout}"
    # the router resolves (ARP) to our MAC, which defaults to the host interface's
    assert re.search(rf"^{re.escape(WAN_GW4)} lladdr {HOST_MAC} ", res.stdout, re.M), \
        f"[opt.mac-addr.default] the gateway's MAC is not the host interface's: {res.stdout}"


@pytest.mark.conformance("dns.pasta-none", "opt.mtu.default-none", "search.pasta-none")
def test_udhcpc_pasta_sends_no_dns_by_default(topo: Topology, pasta_bin: str, tmp_path: Path) -> None:
    """In pasta mode no DNS servers or search list are sent unless -D/-S give them."""
    hook = udhcpc_hook(tmp_path)
    res = in_pasta(topo, pasta_bin, [], f"udhcpc -f -q -n -t 5 -T 1 -i {HOST_IF} -s {hook} -O search 2>&1")
    assert res.returncode == 0, res.stdout + res.stderr
    fields = udhcpc_lease(res.stdout)
    assert fields["dns"] == "" and fields["search"] == ""
    assert fields["mtu"] == "65520"  # today's passt default, as the EXAMPLES show


@pytest.mark.conformance("example.pasta.dhclient6", "dhcpv6.option5.addr", "dhcpv6.handshake")
def test_dhclient6_gets_host_ipv6_address(topo: Topology, pasta_bin: str, tmp_path: Path) -> None:
    """dhclient -6 in the namespace obtains the host's IPv6 address from the DHCPv6 server."""
    lease = tmp_path / "dhclient6.leases"
    script = (
        f"sysctl -qw net.ipv6.conf.{HOST_IF}.accept_dad=0; "
        f"for i in $(seq 100); do ip -6 addr show dev {HOST_IF} scope link | grep -q tentative || break; sleep 0.05; done; "
        f"dhclient -6 -1 -v -lf {lease} -pf {tmp_path}/dh.pid -sf /sbin/dhclient-script {HOST_IF} 2>&1; "
        f"ip -o -6 addr show dev {HOST_IF}; kill $(cat {tmp_path}/dh.pid) 2>/dev/null || true"
    )
    res = in_pasta(topo, pasta_bin, [], script)
    assert res.returncode == 0, res.stdout + res.stderr
    assert f"inet6 {HOST_ADDR6}/128" in res.stdout, res.stdout


@pytest.mark.conformance("ndp.ra.prefix", "example.pasta.ip-address", "ndp.rs.ra", "ndp.ns.na")
def test_kernel_slaac_takes_prefix_and_default_route(topo: Topology, pasta_bin: str) -> None:
    """The kernel's RS gets an RA (SLAAC address in the /64, default route via link-local); on-link NS get our MAC."""
    script = (
        f"sysctl -qw net.ipv6.conf.{HOST_IF}.accept_dad=0; "
        f"for i in $(seq 100); do ip -6 route show default | grep -q 'proto ra' && break; sleep 0.1; done; "
        f"ip -o -6 addr show dev {HOST_IF}; ip -6 route show; "
        # fd77::/64 is on-link: the kernel solicits fd77::1 itself (NS) and needs our NA to ping it
        f"ping -6 -c 1 -W 3 {WAN_GW6}; ip -6 neigh show {WAN_GW6} dev {HOST_IF}"
    )
    res = in_pasta(topo, pasta_bin, [], script)
    assert res.returncode == 0, res.stdout + res.stderr
    assert re.search(r"^default via fe80::\S+ dev \S+ proto ra", res.stdout, re.M), res.stdout
    assert "proto ra" in res.stdout
    slaac = [line for line in res.stdout.splitlines() if "inet6 fd77::" in line and "/64" in line and "dynamic" in line]
    assert slaac, res.stdout
    assert "1 received" in res.stdout, res.stdout
    assert re.search(rf"^{re.escape(WAN_GW6)} lladdr {HOST_MAC} ", res.stdout, re.M), res.stdout


@pytest.mark.conformance("example.pasta.ip-address", "example.pasta.udhcpc", "example.pasta.dhclient6",
                         "example.pasta.ip-route")
def test_man_page_example_sequence(topo: Topology, pasta_bin: str, tmp_path: Path) -> None:
    """The EXAMPLES session: udhcpc, dhclient -6, then `ip address show` and the routes look like the man page."""
    hook = udhcpc_hook(tmp_path)
    script = (
        f"for i in $(seq 100); do ip -6 addr show dev {HOST_IF} scope link | grep -q tentative || break; sleep 0.05; done; "
        f"udhcpc -f -q -n -t 5 -T 1 -i {HOST_IF} -s {hook} >/dev/null 2>&1; "
        f"dhclient -6 -1 -lf {tmp_path}/l6 -pf {tmp_path}/p6 -sf /sbin/dhclient-script {HOST_IF} >/dev/null 2>&1; "
        f"for i in $(seq 100); do ip -6 route show default | grep -q 'proto ra' && break; sleep 0.1; done; "
        f"kill $(cat {tmp_path}/p6) 2>/dev/null; "
        "echo ADDR; ip address show; echo ROUTE4; ip route show; echo ROUTE6; ip -6 route show"
    )
    res = in_pasta(topo, pasta_bin, [], script)
    assert res.returncode == 0, res.stdout + res.stderr
    addr, rest = res.stdout.split("ADDR", 1)[1].split("ROUTE4")
    route4, route6 = rest.split("ROUTE6")
    assert "1: lo: <LOOPBACK,UP,LOWER_UP> mtu 65536" in addr
    assert f"2: {HOST_IF}: <BROADCAST,MULTICAST,UP,LOWER_UP> mtu 65520" in addr
    assert f"inet {HOST_ADDR4}/24 " in addr
    assert f"inet6 {HOST_ADDR6}/128 scope global" in addr          # DHCPv6
    assert re.search(r"inet6 fd77::[0-9a-f:]+/64 scope global (tentative )?dynamic", addr), addr  # SLAAC
    assert "scope link" in addr                                    # link-local
    assert f"default via {WAN_GW4} dev {HOST_IF}" in route4
    assert f"10.77.0.0/24 dev {HOST_IF} proto kernel scope link src {HOST_ADDR4}" in route4
    assert f"{HOST_ADDR6} dev {HOST_IF} proto kernel" in route6
    assert f"fd77::/64 dev {HOST_IF} proto kernel" in route6
    assert "default via fe80::" in route6 and "proto ra" in route6


@pytest.mark.conformance(
    "opt.address", "opt.netmask.default-class", "opt.gateway", "opt.mac-addr", "opt.dns.repeat",
    "pasta.unprivileged",
)
def test_udhcpc_sees_overrides_from_unprivileged_pasta(topo: Topology, pasta_bin: str, tmp_path: Path) -> None:
    """pasta as nobody, no capability: udhcpc leases -a with its class mask, -g, both -D; -M answers ARP; wan pings."""
    shared = Path(tempfile.mkdtemp(prefix="pt-hook-"))  # nobody can't see tmp_path (mode 0700)
    shared.chmod(0o755)
    hook = udhcpc_hook(shared)
    script = (
        "grep -E '^CapBnd' /proc/$PPID/status; cat /proc/self/uid_map; "
        f"udhcpc -f -q -n -t 5 -T 1 -i {HOST_IF} -s {hook} 2>&1; "
        f"ping -c 1 -W 3 {WAN_ADDR4}; ip -4 neigh show dev {HOST_IF}"
    )
    args = ["-a", "172.20.0.5", "-g", "172.20.0.1", "-M", "02:11:22:33:44:55",
            "-D", "10.77.1.53", "-D", "10.77.1.54"]
    try:
        res = topo.run(topo.host, unprivileged([pasta_bin, "-q", *args, "--", "sh", "-ec", script]), timeout=60)
    finally:
        shutil.rmtree(shared)
    assert res.returncode == 0, res.stdout + res.stderr
    # pasta itself (the command's parent) runs as nobody: no capability in the init namespace
    assert re.search(r"^CapBnd:\s+0+$", res.stdout, re.M), res.stdout
    assert re.search(r"^\s*0\s+65534\s+1$", res.stdout, re.M), res.stdout  # its user namespace maps nobody
    fields = udhcpc_lease(res.stdout)
    assert fields["ip"] == "172.20.0.5"
    assert fields["mask"] == "16"  # no host address matches: class B (RFC 4632 section 3.1)
    assert fields["router"] == "172.20.0.1"
    assert fields["dns"].split() == ["10.77.1.53", "10.77.1.54"]
    assert "1 received" in res.stdout, res.stdout
    assert re.search(r"^172\.20\.0\.1 lladdr 02:11:22:33:44:55 ", res.stdout, re.M), res.stdout
