"""Today's DNS and name options in passt mode, with a QEMU guest and its udhcpc.

The host's resolv.conf names a loopback stub first (as systemd-resolved's
127.0.0.53 does), which a guest can't reach; with --dns-forward the guest is
handed the forward address in its place, and its queries there reach the stub.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from harness.netns import Topology
from harness.netns.dns import ANSWER_A, queries, start_dns
from harness.netns.topology import DNS_ADDR4
from harness.qemu.guest import QemuGuest
from tests.integration.conftest import wait_until

pytestmark = pytest.mark.qemu

GUEST_MAC = "52:54:00:12:34:57"
FWD4 = "169.254.1.1"
STUB = "127.0.0.53"
HOOK = b"""#!/bin/sh
case "$1" in bound|renew)
    echo "LEASE_dns=$dns"; echo "LEASE_hostname=$hostname"; env | grep -E '^opt81=' | sed 's/^/LEASE_/'
    ip addr add "$ip/$mask" dev "$interface"; ip route add default via "$router" dev "$interface";;
esac
exit 0
"""


@pytest.mark.conformance("callers.dns-forward", "callers.dns-host", "callers.hostname", "callers.fqdn")
def test_guest_leases_forward_dns_and_names_and_resolves_through_host_stub(topo: Topology, passt_bin: str,
                                                                            tmp_path: Path) -> None:
    """udhcpc gets --dns-forward in place of the host's 127.0.0.53 (the real resolver stays), -H as
    option 12 and --fqdn as option 81; nslookup at the forward address is answered by the host's stub."""
    Path(f"/etc/netns/{topo.host}/resolv.conf").write_text(f"nameserver {STUB}\nnameserver {DNS_ADDR4}\n")
    log = tmp_path / "dns.log"
    start_dns(topo, log, [STUB], ns=topo.host)
    sock = str(tmp_path / "passt.socket")
    topo.popen(topo.host, [passt_bin, "-f", "-q", "-s", sock,
                           "--dns-forward", FWD4, "-H", "vm7", "--fqdn", "vm7.example.test"])  # fmt: skip
    wait_until(lambda: os.path.exists(sock), what="passt's socket")
    net = ["-netdev", f"stream,id=n0,server=off,addr.type=unix,addr.path={sock}",
           "-device", f"virtio-net-pci,netdev=n0,mac={GUEST_MAC}"]  # fmt: skip
    with QemuGuest(net_args=net, netns=None, extra_files={"etc/hook.sh": HOOK}) as guest:
        out = guest.check("ip link set eth0 up; udhcpc -f -q -n -t 5 -T 1 -i eth0 -s /etc/hook.sh "
                          f"-O hostname -O 81 2>&1; nslookup -type=a vm.example.test {FWD4} 2>&1", timeout=60)
    assert f"LEASE_dns={FWD4} {DNS_ADDR4}" in out, out
    assert "LEASE_hostname=vm7" in out, out
    assert re.search(r"^LEASE_opt81=04ffff03766d37076578616d706c6504746573740+$", out, re.M), out
    assert re.search(rf"Address:\s+{re.escape(ANSWER_A)}\b", out), out
    assert [q[:4] for q in queries(log)] == [["udp", "127.0.0.1", STUB, "vm.example.test"]], queries(log)
