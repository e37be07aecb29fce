"""Running real clients inside pasta's namespace: the command line, udhcpc's hook, its lease.

Shared by the pasta test modules: each runs a shell script as pasta's command
and reads what the clients printed.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from harness.netns import Topology

UDHCPC_SCRIPT = """#!/bin/sh
# minimal udhcpc hook: apply the lease the way a distribution's script does
case "$1" in
bound|renew)
    ip addr add "$ip/$mask" dev "$interface"
    [ -n "$router" ] && ip route add default via "$router" dev "$interface"
    [ -n "$mtu" ] && ip link set dev "$interface" mtu "$mtu"
    for v in ip mask router dns domain search mtu lease; do eval "echo LEASE_$v=\\\"\\$$v\\\""; done ;;
esac
exit 0
"""


def udhcpc_hook(directory: Path) -> Path:
    """Write UDHCPC_SCRIPT as an executable `udhcpc.sh` in `directory` (for `udhcpc -s`)."""
    hook = directory / "udhcpc.sh"
    hook.write_text(UDHCPC_SCRIPT)
    hook.chmod(0o755)
    return hook


def udhcpc_lease(out: str) -> dict[str, str]:
    """The variables udhcpc handed our hook script (LEASE_name="value" lines)."""
    found = {}
    for line in out.splitlines():
        if line.startswith("LEASE_"):
            key, _, value = line[6:].partition("=")
            found[key] = value.strip('"')
    assert found, out
    return found


def in_pasta(topo: Topology, pasta_bin: str, args: list[str], script: str,
             timeout: float = 90) -> subprocess.CompletedProcess[str]:
    """Run `script` (sh -e) as quiet pasta's command from the host namespace, to completion."""
    return topo.run(topo.host, [pasta_bin, "-q", *args, "--", "sh", "-ec", script], timeout=timeout)
