"""The test topology: a "host" namespace whose uplink is a veth to "wan".

    netns WAN     lo: 10.77.1.1/32, fd77:1::1/128  (test servers: HTTP, echo, iperf3, DNS)
                  wan0: 10.77.0.1/24, fd77::1/64
                    | veth
    netns HOST    uplink0: 10.77.0.2/24, fd77::2/64, default via 10.77.0.1 / fd77::1
                  /etc/netns/HOST/resolv.conf -> 10.77.1.53 (never the real resolver)
                  passt/pasta under test run here (`ip netns exec HOST ...`)

Names carry a per-test suffix so xdist workers never collide; every
namespace, process and file is removed on exit, also when the test failed.
`cleanup_stale()` removes leftovers of crashed runs (our prefix only).
Nothing here touches the machine's own interfaces.
"""

from __future__ import annotations

import itertools
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Final

PREFIX: Final = "pt"
HOST_IF: Final = "uplink0"
WAN_IF: Final = "wan0"
HOST_ADDR4: Final = "10.77.0.2"
HOST_ADDR6: Final = "fd77::2"
WAN_GW4: Final = "10.77.0.1"
WAN_GW6: Final = "fd77::1"
WAN_ADDR4: Final = "10.77.1.1"
WAN_ADDR6: Final = "fd77:1::1"
DNS_ADDR4: Final = "10.77.1.53"
DNS_ADDR6: Final = "fd77:1::53"
HOST_MAC: Final = "02:77:00:00:00:02"

_counter = itertools.count()


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], check=check, capture_output=True, text=True)


def cleanup_stale() -> None:
    """Delete namespaces of ours whose creating process is gone."""
    out = _ip("netns", "list", check=False).stdout
    for line in out.splitlines():
        name = line.split()[0] if line.split() else ""
        parts = name.split("-")
        if len(parts) >= 3 and parts[0] == PREFIX and parts[1].isdigit():
            if not Path(f"/proc/{parts[1]}").exists():
                _ip("netns", "del", name, check=False)
                shutil.rmtree(f"/etc/netns/{name}", ignore_errors=True)


class Topology:
    """Creates HOST and WAN namespaces linked by a veth; a context manager."""

    def __init__(self, tag: str = "t") -> None:
        n = next(_counter)
        base = f"{PREFIX}-{os.getpid()}-{n}{tag[:4]}"
        self.host = f"{base}-h"
        self.wan = f"{base}-w"
        self._procs: list[subprocess.Popen[bytes]] = []
        self._created: list[str] = []

    # lifecycle ------------------------------------------------------------
    def __enter__(self) -> Topology:
        try:
            self._create()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _create(self) -> None:
        for ns in (self.wan, self.host):
            _ip("netns", "add", ns)
            self._created.append(ns)
            _ip("-n", ns, "link", "set", "lo", "up")
            self.sysctl(ns, "net.ipv4.ping_group_range", "0 2147483647")
            self.sysctl(ns, "net.ipv6.conf.all.accept_dad", "0")
            self.sysctl(ns, "net.ipv6.conf.default.accept_dad", "0")
        _ip("link", "add", HOST_IF, "netns", self.host, "address", HOST_MAC, "type", "veth",
            "peer", "name", WAN_IF, "netns", self.wan)
        _ip("-n", self.wan, "addr", "add", f"{WAN_GW4}/24", "dev", WAN_IF)
        _ip("-n", self.wan, "addr", "add", f"{WAN_GW6}/64", "dev", WAN_IF, "nodad")
        for addr in (f"{WAN_ADDR4}/32", f"{DNS_ADDR4}/32"):
            _ip("-n", self.wan, "addr", "add", addr, "dev", "lo")
        for addr in (f"{WAN_ADDR6}/128", f"{DNS_ADDR6}/128"):
            # nodad: a tentative address can't be a route's preferred source
            _ip("-n", self.wan, "addr", "add", addr, "dev", "lo", "nodad")
        _ip("-n", self.host, "addr", "add", f"{HOST_ADDR4}/24", "dev", HOST_IF)
        _ip("-n", self.host, "addr", "add", f"{HOST_ADDR6}/64", "dev", HOST_IF, "nodad")
        _ip("-n", self.wan, "link", "set", WAN_IF, "up")
        _ip("-n", self.host, "link", "set", HOST_IF, "up")
        # wan answers from its "internet" addresses
        _ip("-n", self.wan, "route", "replace", "10.77.0.0/24", "dev", WAN_IF, "src", WAN_ADDR4)
        _ip("-n", self.wan, "-6", "route", "replace", "fd77::/64", "dev", WAN_IF, "src", WAN_ADDR6)
        _ip("-n", self.host, "route", "add", "default", "via", WAN_GW4, "dev", HOST_IF)
        _ip("-n", self.host, "-6", "route", "add", "default", "via", WAN_GW6, "dev", HOST_IF)
        etc = Path(f"/etc/netns/{self.host}")
        etc.mkdir(parents=True, exist_ok=True)
        (etc / "resolv.conf").write_text(f"nameserver {DNS_ADDR4}\nnameserver {DNS_ADDR6}\nsearch example.test\n")

    def close(self) -> None:
        """Stop every process we started, delete the namespaces and files."""
        for proc in reversed(self._procs):
            # the group may outlive its leader (servers a pasta command left
            # in the background): signal it whatever the leader's state
            try:
                os.killpg(proc.pid, signal.SIGTERM)
            except (ProcessLookupError, PermissionError):
                pass
        deadline = time.monotonic() + 5
        for proc in self._procs:
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            proc.wait()
        self._procs.clear()
        for ns in self._created:
            self.kill_all_in(ns)
            _ip("netns", "del", ns, check=False)
            shutil.rmtree(f"/etc/netns/{ns}", ignore_errors=True)
        self._created.clear()

    @staticmethod
    def kill_all_in(ns: str) -> None:
        """Kill processes still running in `ns` (ip netns pids)."""
        out = _ip("netns", "pids", ns, check=False).stdout
        for pid in out.split():
            try:
                os.kill(int(pid), signal.SIGKILL)
            except (ProcessLookupError, ValueError):
                pass

    # running things ----------------------------------------------------
    @staticmethod
    def sysctl(ns: str, key: str, value: str) -> None:
        subprocess.run(["ip", "netns", "exec", ns, "sysctl", "-qw", f"{key}={value}"], check=True)

    def run(
        self, ns: str, argv: Sequence[str], *, timeout: float = 60, check: bool = False,
        input: str | None = None, env: dict[str, str] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run a command to completion inside `ns`; output captured as text."""
        return subprocess.run(
            ["ip", "netns", "exec", ns, *argv], capture_output=True, text=True, timeout=timeout,
            check=check, input=input, env=env,
        )

    def popen(
        self, ns: str, argv: Sequence[str], *, stdout: int | IO[bytes] | None = subprocess.PIPE,
        stderr: int | IO[bytes] | None = subprocess.PIPE, stdin: int | None = subprocess.DEVNULL,
        env: dict[str, str] | None = None,
    ) -> subprocess.Popen[bytes]:
        """Start a process in `ns` in its own process group; killed at close()."""
        proc = subprocess.Popen(
            ["ip", "netns", "exec", ns, *argv], stdout=stdout, stderr=stderr, stdin=stdin,
            start_new_session=True, env=env,
        )
        self._procs.append(proc)
        return proc

    def wait_listening(self, ns: str, port: int, *, udp: bool = False, timeout: float = 10, count: int = 1) -> None:
        """Wait until `count` sockets in `ns` listen on `port` (a readiness check, not a sleep)."""
        proto = "-lun" if udp else "-ltn"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            out = self.run(ns, ["ss", "-H", proto, f"sport = :{port}"]).stdout
            if len(out.strip().splitlines()) >= count:
                return
            time.sleep(0.02)
        raise TimeoutError(f"nothing listens on port {port} in {ns}")

    # servers in wan -----------------------------------------------------
    def start_http(self, root: Path, port: int = 8080) -> None:
        """Python's http.server on wan's addresses, serving `root`."""
        self.popen(self.wan, ["python3", "-m", "http.server", "--bind", "::", "--directory", str(root), str(port)],
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.wait_listening(self.wan, port)

    def start_iperf3(self, ns: str | None = None, port: int = 5201) -> None:
        self.popen(ns or self.wan, ["iperf3", "-s", "-p", str(port)], stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)
        self.wait_listening(ns or self.wan, port)

    def start_echo(self, ns: str | None = None, port: int = 7001, *, udp: bool = False) -> None:
        """socat echo server (TCP or UDP) on every address.

        UDP in wan: one server per wan address, each bound to it.  A wildcard UDP
        socket answers IPv6 from the address routing picks (wan0's, not the
        loopback one the client wrote to), and a connected client, such as the
        host socket of a translated flow, rightly drops answers from elsewhere.
        """
        ns = ns or self.wan
        if not udp:
            specs = [f"TCP6-LISTEN:{port},ipv6only=0,reuseaddr,fork"]
        elif ns == self.wan:
            specs = [f"UDP4-RECVFROM:{port},bind={WAN_ADDR4},fork", f"UDP6-RECVFROM:{port},bind=[{WAN_ADDR6}],fork"]
        else:
            specs = [f"UDP6-RECVFROM:{port},ipv6only=0,fork"]
        for spec in specs:
            self.popen(ns, ["socat", spec, "EXEC:cat"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.wait_listening(ns, port, udp=udp, count=len(specs))
