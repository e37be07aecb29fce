"""pasta end to end: namespaces, the tap, --config-net, exit status, errors."""

from __future__ import annotations

import re
import subprocess
import sys
import time

import pytest

from harness.netns import HOST_ADDR4, HOST_ADDR6, Topology
from harness.netns.topology import HOST_IF
from tests.statements import assert_statement


@pytest.mark.conformance("pasta.spawn-namespace", "pasta.tap-device", "host.default-route-iface", "opt.ns-ifname.default")
def test_config_net_puts_host_address_on_tap(topo: Topology, pasta_bin: str) -> None:
    """`pasta --config-net -- ip -o addr` shows the tap, named like the host interface, with the host's addresses."""
    res = topo.run(topo.host, [pasta_bin, "-q", "--config-net", "--", "ip", "-o", "addr", "show"])
    assert res.returncode == 0, res.stderr
    lines = [line for line in res.stdout.splitlines() if f" {HOST_IF} " in line]
    assert any(f"inet {HOST_ADDR4}/24" in line for line in lines), res.stdout
    assert any(f"inet6 {HOST_ADDR6}/64" in line for line in lines), res.stdout


@pytest.mark.conformance("pasta.spawn-namespace", "notes.pasta.lo-up", "opt.ns-ifname", "example.pasta.exit-with-shell")
def test_plain_pasta_shell_sees_tap_and_lo_up(topo: Topology, pasta_bin: str) -> None:
    """Plain pasta runs $SHELL in the namespace: lo is UP, the tap exists (and -I renames it); `exit` ends pasta."""
    env = {"SHELL": "/bin/sh", "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}
    res = topo.run(topo.host, [pasta_bin, "-q"], input="ip -o link show\nexit 0\n", env=env)
    assert res.returncode == 0, res.stderr
    lo = next(line for line in res.stdout.splitlines() if ": lo:" in line)
    assert "UP" in lo.split("<")[1].split(">")[0]
    assert f": {HOST_IF}:" in res.stdout
    res = topo.run(topo.host, [pasta_bin, "-q", "-I", "tap9", "--", "ip", "-o", "link", "show"])
    assert res.returncode == 0, res.stderr
    assert ": tap9:" in res.stdout and f": {HOST_IF}:" not in res.stdout


@pytest.mark.conformance("synopsis.pasta", "opt.quiet")
def test_exit_status_of_command_is_pastas(topo: Topology, pasta_bin: str) -> None:
    """A non-PID operand is a command run instead of $SHELL, whose exit status is pasta's; -q / -d set the noise."""
    res = topo.run(topo.host, [pasta_bin, "-q", "sh", "-c", "exit 7"])
    assert res.returncode == 7
    assert res.stderr == "" and res.stdout == ""  # -q: not even the summary
    res = topo.run(topo.host, [pasta_bin, "--", "sh", "-c", "exit 3"])
    assert res.returncode == 3
    assert "Outbound interface" in res.stderr and "DHCP:" in res.stderr, res.stderr
    assert res.stdout == ""
    assert "guest IPv6 source seen" not in res.stderr
    # -d: debug lines as well, and no fork (the command still runs, its status is ours)
    script = (f"ip addr add fd77::99/64 dev {HOST_IF} nodad; ip addr add fd77::98/64 dev {HOST_IF} nodad; "
              "for a in fd77::99 fd77::98; do ping -6 -c 1 -W 2 -I $a fd77::1 >/dev/null; done; exit 4")
    res = topo.run(topo.host, [pasta_bin, "-d", "--", "sh", "-c", script])
    assert res.returncode == 4
    assert "guest IPv6 source seen: fd7700000000000000000000000000" in res.stderr, res.stderr


@pytest.mark.conformance("pasta.join-pid", "notes.pasta.lo-up", "synopsis.pasta")
def test_join_existing_namespace_by_pid(topo: Topology, pasta_bin: str) -> None:
    """`pasta PID` joins the user and network namespace of PID and creates the tap there."""
    holder = topo.popen(topo.host, ["unshare", "-rUn", "sleep", "60"])
    # wait until the child has really unshared (its net namespace differs from ours)
    deadline = time.monotonic() + 10
    pid = None
    while time.monotonic() < deadline:
        kids = subprocess.run(["pgrep", "-P", str(holder.pid)], capture_output=True, text=True).stdout.split()
        cand = [int(p) for p in kids] or [holder.pid]
        for p in cand:
            try:
                comm = open(f"/proc/{p}/comm").read().strip()
            except OSError:
                continue
            if comm == "sleep":
                pid = p
        if pid is not None:
            break
        time.sleep(0.02)
    assert pid is not None
    pasta = topo.popen(topo.host, [pasta_bin, "-q", "-f", "--config-net", str(pid)])
    deadline = time.monotonic() + 10
    out = ""
    while time.monotonic() < deadline:
        out = subprocess.run(["nsenter", "-t", str(pid), "-U", "-n", "ip", "-o", "addr", "show"],
                             capture_output=True, text=True).stdout
        if HOST_ADDR4 in out:
            break
        time.sleep(0.05)
    assert f"inet {HOST_ADDR4}/24" in out
    lo = subprocess.run(["nsenter", "-t", str(pid), "-U", "-n", "ip", "-o", "link", "show", "lo"],
                        capture_output=True, text=True).stdout
    assert "UP" in lo
    # the namespace owner dies: pasta notices and exits
    holder.kill()
    subprocess.run(["kill", "-9", str(pid)])
    assert pasta.wait(10) == 0


@pytest.mark.parametrize(
    ("args", "pattern"),
    [
        (["--frobnicate"], r"--frobnicate"),
        (["-a", "10.0.0.300"], r"10\.0\.0\.300"),
        (["-t", "80-22"], r"80-22"),
        (["-m", "70000"], r"70000"),
        (["-s", "/tmp/x.sock"], r"-s"),
    ],
)
@pytest.mark.conformance("cli.errors")
def test_bad_options_one_line_nonzero(topo: Topology, pasta_bin: str, args: list[str], pattern: str) -> None:
    """A bad option, value or combination: one line on stderr naming it, non-zero exit."""
    res = topo.run(topo.host, [pasta_bin, *args, "--", "true"])
    assert res.returncode != 0
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1, res.stderr
    assert lines[0].startswith("pasta: ") and re.search(pattern, lines[0]), lines[0]


@pytest.mark.conformance("cli.errors")
def test_missing_tun_device_is_one_clear_line(topo: Topology, pasta_bin: str) -> None:
    """Without /dev/net/tun pasta says so in one line and exits non-zero."""
    script = f"mount -t tmpfs none /dev/net && exec {pasta_bin} -q -- true"
    res = topo.run(topo.host, ["unshare", "-m", "--propagation", "private", "sh", "-c", script])
    assert res.returncode != 0
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "/dev/net/tun" in lines[0], res.stderr


@pytest.mark.conformance("cli.errors", "pasta.join-pid")
def test_missing_target_pid_is_one_clear_line(topo: Topology, pasta_bin: str) -> None:
    """A TARGET_PID that does not exist: one clear line, non-zero exit."""
    res = topo.run(topo.host, [pasta_bin, "-q", "-f", "4194000"])
    assert res.returncode != 0
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "4194000" in lines[0], res.stderr


_RS_THEN_HELLO = r"""
import select, socket, sys, time
ifindex = next(i for i, name in socket.if_nameindex() if name != "lo")
s = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, 255)  # NDP needs hop limit 255
deadline = time.monotonic() + 10
while time.monotonic() < deadline:
    s.sendto(bytes([133, 0, 0, 0, 0, 0, 0, 0]), ("ff02::2", 0, 0, ifindex))  # RS, kernel checksums
    if select.select([s], [], [], 1)[0] and s.recv(2048)[0] == 134:  # an RA
        print("HELLO")
        sys.exit(0)
sys.exit("no Router Advertisement from pasta")
"""


@pytest.mark.parametrize("extra", [[], ["-d"]], ids=["default", "debug"])
@pytest.mark.conformance("log.never-stdout")
def test_command_output_is_the_commands(topo: Topology, pasta_bin: str, extra: list[str]) -> None:
    """`pasta --config-net -- sh -c 'echo HELLO' > out` leaves exactly HELLO in out; the summary is on
    stderr, and NDP's per-packet lines only with -d (with -d, every debug line is on stderr too)."""
    # The command sends a Router Solicitation and waits for pasta's RA before it prints: one NDP
    # exchange surely happened (--config-net sets the routes itself, so nothing else waits for one).
    res = topo.run(topo.host, [pasta_bin, *extra, "--config-net", "--", sys.executable, "-c", _RS_THEN_HELLO])
    assert res.returncode == 0, res.stderr
    assert_statement("log.never-stdout", res.stdout == "HELLO\n", f"stdout is not the command's: {res.stdout!r}")
    assert "Outbound interface" in res.stderr, res.stderr
    if extra:
        assert "NDP: received" in res.stderr, f"-d shows no NDP line: the test proves nothing: {res.stderr}"
    else:
        assert_statement("log.never-stdout", "NDP: received" not in res.stderr,
                         f"a per-packet NDP line without -d: {res.stderr}")
