"""Process behaviour of passt: background, PID file, log file, privileges, exposure, pcap name."""

from __future__ import annotations

import json
import os
import re
import select
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness.netns import Topology
from tests.integration.conftest import accepts_unix as _accepts
from tests.integration.conftest import run_on_terminal
from tests.integration.conftest import wait_until as _wait
from tests.statements import assert_statement


@pytest.mark.conformance("daemon.background-from-terminal")
def test_background_from_terminal_with_pid_file(topo: Topology, passt_bin: str, tmp_path: Path) -> None:
    """Started from a terminal without -f, passt forks into background; -P names the daemon's PID."""
    sock, pidf = str(tmp_path / "p.sock"), tmp_path / "passt.pid"
    code, output = run_on_terminal(["ip", "netns", "exec", topo.host, passt_bin, "-q", "-s", sock, "-P", str(pidf)])
    assert code == 0, output
    _wait(lambda: pidf.exists() and pidf.read_text().strip() != "", what="pid file")
    daemon_pid = int(pidf.read_text())
    try:
        assert Path(f"/proc/{daemon_pid}").exists()
        _wait(lambda: _accepts(sock), what="daemon accepts")
    finally:
        os.kill(daemon_pid, 15)


@pytest.mark.conformance("daemon.background-from-terminal")
def test_foreground_non_interactive_logs_to_stderr_and_file(topo: Topology, passt_bin: str, tmp_path: Path) -> None:
    """With -f, not on a terminal, passt stays in front and logs to stderr; -l also writes the log file."""
    sock, logf = str(tmp_path / "p.sock"), tmp_path / "passt.log"
    proc = topo.popen(topo.host, [passt_bin, "-f", "-s", sock, "-l", str(logf)], stdout=subprocess.DEVNULL)
    _wait(lambda: _accepts(sock), what="passt accepts")
    c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    c.connect(sock)
    _wait(lambda: logf.exists() and "guest connected" in logf.read_text(), what="log line")
    c.close()
    assert proc.poll() is None  # still in the foreground, serving
    proc.terminate()
    _, err = proc.communicate(timeout=10)
    assert b"guest connected" in err


@pytest.mark.conformance("opt.version", "opt.help", "synopsis.passt")
def test_version_and_help(passt_bin: str, pasta_bin: str) -> None:
    """--version prints one line and exits 0; -h prints the options of that program; passt takes no operand."""
    for prog in (passt_bin, pasta_bin):
        res = subprocess.run([prog, "--version"], capture_output=True, text=True)
        assert res.returncode == 0 and len(res.stdout.strip().splitlines()) == 1
    res = subprocess.run([passt_bin, "-h"], capture_output=True, text=True)
    assert res.returncode == 0 and "--socket" in res.stdout and "--ns-ifname" not in res.stdout
    res = subprocess.run([pasta_bin, "--help"], capture_output=True, text=True)
    assert res.returncode == 0 and "--ns-ifname" in res.stdout and "--socket" not in res.stdout
    res = subprocess.run([passt_bin, "-f", "1234"], capture_output=True, text=True, timeout=30)
    assert res.returncode != 0 and res.stdout == ""
    assert res.stderr.strip().splitlines() == ["passt: unexpected argument '1234'; see passt --help"], res.stderr


@pytest.mark.conformance("security.runas")
def test_root_drops_to_nobody_after_setup(topo: Topology, passt_bin: str, tmp_path: Path) -> None:
    """Started as root, passt serves as nobody (default --runas) once set up; --runas picks another user."""
    sock = str(tmp_path / "p.sock")
    proc = topo.popen(topo.host, [passt_bin, "-f", "-q", "-s", sock])
    _wait(lambda: _accepts(sock), what="passt accepts")
    pid = _find_child(proc.pid, "passt")
    _wait(lambda: _uid(pid) == 65534, what="uid nobody")
    proc.terminate()
    sock2 = str(tmp_path / "q.sock")
    proc = topo.popen(topo.host, [passt_bin, "-f", "-q", "-s", sock2, "--runas", "1234:1234"])
    _wait(lambda: _accepts(sock2), what="passt accepts")
    pid = _find_child(proc.pid, "passt")
    _wait(lambda: _uid(pid) == 1234, what="uid 1234")


def _cap_eff(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("CapEff:"):
            return int(line.split()[1], 16)
    raise AssertionError("no CapEff line")


def _uid(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Uid:"):
            return int(line.split()[2])  # effective
    raise AssertionError("no Uid line")


def _find_child(pid: int, name: str) -> int:
    """`ip netns exec` execs the program, so the Popen pid is passt itself; follow children otherwise."""
    comm = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    if any(name.encode() in part for part in comm[:2]):
        return pid
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return int(children[0])


@pytest.mark.conformance("security.exposure", "ports.passt-default-none", "ports.none")
def test_passt_listens_on_nothing_unasked(topo: Topology, passt_bin: str, tmp_path: Path) -> None:
    """Without -t/-u (and with -t none -u none) passt opens no TCP or UDP listening socket."""
    for i, extra in enumerate(([], ["-t", "none", "-u", "none"])):
        sock = str(tmp_path / f"p{i}.sock")
        proc = topo.popen(topo.host, [passt_bin, "-f", "-q", "-s", sock, *extra])
        _wait(lambda: _accepts(sock), what="passt accepts")  # noqa: B023 - called at once
        out = topo.run(topo.host, ["ss", "-Hltunp"]).stdout
        assert "passt" not in out and out.strip() == "", (extra, out)
        proc.terminate()
        proc.wait(10)


@pytest.mark.conformance("opt.pcap", "opt.pcap.default-path")
def test_bare_pcap_uses_default_name(topo: Topology, passt_bin: str, tmp_path: Path) -> None:
    """A bare -p captures to /tmp/passt_<ISO8601 timestamp>_<instance>.pcap."""
    before = set(Path("/tmp").glob("passt_*.pcap"))
    sock = str(tmp_path / "p.sock")
    proc = topo.popen(topo.host, [passt_bin, "-f", "-q", "-s", sock, "-p"])
    _wait(lambda: _accepts(sock), what="passt accepts")
    proc.terminate()
    proc.wait(10)
    new = set(Path("/tmp").glob("passt_*.pcap")) - before
    assert len(new) == 1
    path = new.pop()
    try:
        assert re.fullmatch(r"passt_\d{4}-\d\d-\d\dT\d\d[:_]?\d\d[:_]?\d\dZ?_\d+\.pcap", path.name), path.name
        data = path.read_bytes()
        assert data[:4] == bytes.fromhex("d4c3b2a1")  # pcap magic, little-endian
    finally:
        path.unlink()


def _holder_pid(topo: Topology) -> int:
    """PID of a `sleep` in a fresh user+network namespace (what `unshare -rUn` gives a user)."""
    holder = topo.popen(topo.host, ["unshare", "-rUn", "sleep", "120"])
    def found() -> bool:
        return Path(f"/proc/{holder.pid}/comm").read_text().strip() == "sleep"
    _wait(found, what="holder in its namespace")
    return holder.pid


@pytest.mark.conformance("security.runas", "pasta.join-pid", "notes.icmp.ping-sockets")
def test_pasta_daemon_serves_joined_namespace_as_nobody(topo: Topology, pasta_bin: str, tmp_path: Path) -> None:
    """pasta PID from a terminal goes to background, drops to nobody, and the namespace pings wan (ping sockets)."""
    target = _holder_pid(topo)
    pidf = tmp_path / "pasta.pid"
    code, output = run_on_terminal(["ip", "netns", "exec", topo.host, pasta_bin, "-q", "--config-net", "-P",
                                    str(pidf), str(target)])
    assert code == 0, output
    _wait(lambda: pidf.exists() and pidf.read_text().strip() != "", what="pid file")
    daemon_pid = int(pidf.read_text())
    try:
        _wait(lambda: _uid(daemon_pid) == 65534, what="pasta as nobody")
        # no CAP_NET_RAW (nor any other) left: echo requests can only go out through ping sockets
        assert _cap_eff(daemon_pid) == 0
        res = subprocess.run(["nsenter", "-t", str(target), "-U", "-n", "--preserve-credentials", "ping", "-c", "1",
                              "-W", "3", "10.77.1.1"], capture_output=True, text=True, timeout=20)
        assert res.returncode == 0, res.stdout + res.stderr
    finally:
        os.kill(target, 9)
    _wait(lambda: not Path(f"/proc/{daemon_pid}").exists(), what="pasta exits with its namespace")


@pytest.mark.conformance("notes.low-ports", "opt.tcp-ports")
def test_low_port_without_capability_warns_and_others_work(topo: Topology, passt_bin: str, tmp_path: Path) -> None:
    """Without CAP_NET_BIND_SERVICE, -t 80,8080: one clear line for port 80, and 8080 is forwarded anyway."""
    sock = str(tmp_path / "p.sock")
    proc = topo.popen(topo.host, ["setpriv", "--bounding-set=-net_bind_service", passt_bin, "-f", "-q", "-s", sock,
                                  "-t", "80,8080"])
    _wait(lambda: _accepts(sock), what="passt accepts")
    topo.wait_listening(topo.host, 8080)
    assert not topo.run(topo.host, ["ss", "-Hltn", "sport = :80"]).stdout.strip()
    proc.terminate()
    _, err = proc.communicate(timeout=10)
    lines = [line for line in err.decode().splitlines() if "port 80" in line]
    assert lines and all("CAP_NET_BIND_SERVICE" in line for line in lines), err
    assert len([line for line in lines if "TCP" in line]) == 1


@pytest.mark.conformance("notes.icmp.ping-group-range")
def test_pasta_opens_ping_group_range_in_namespace(topo: Topology, pasta_bin: str) -> None:
    """pasta sets ping_group_range inside its namespace so every (mapped) group may use ping sockets."""
    res = topo.run(topo.host, [pasta_bin, "-q", "--", "cat", "/proc/sys/net/ipv4/ping_group_range"])
    assert res.returncode == 0, res.stderr
    assert res.stdout.split() == ["0", "0"]  # pasta's namespace maps one gid: 0
    # an unprivileged ping (ICMP datagram socket, no CAP_NET_RAW) works in there
    script = ("import socket; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_ICMP); "
              "print('ping socket ok')")
    res = topo.run(topo.host, [pasta_bin, "-q", "--", "python3", "-c", script])
    assert res.stdout.strip() == "ping socket ok", res.stderr


#: Runs inside a private mount namespace: a tmpfs over /dev holding our own
#: /dev/log (a datagram socket we read, as a syslog daemon would) beside the
#: real null/zero/urandom/tty; then passt with the given options (-f: in the
#: foreground; without it, backgrounded, the survivor named by a PID file), with
#: standard error either a pipe or a terminal.  Prints what each sink got.
_SYSLOG_PROBE = r"""
import json, os, pty, select, socket, subprocess, sys, time
passt, work, interactive, extra = sys.argv[1], sys.argv[2], sys.argv[3] == "1", sys.argv[4:]
pid_file = os.path.join(work, "passt.pid")
if "-f" not in extra:
    extra = [*extra, "-P", pid_file]
master, slave = pty.openpty()  # before /dev is replaced
old = os.path.join(work, "olddev")
os.mkdir(old)
subprocess.run(["mount", "--rbind", "/dev", old], check=True)
subprocess.run(["mount", "-t", "tmpfs", "probe-dev", "/dev"], check=True)
for name in ("null", "zero", "urandom", "random", "tty"):
    open(f"/dev/{name}", "w").close()
    subprocess.run(["mount", "--bind", f"{old}/{name}", f"/dev/{name}"], check=True)
log = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
log.bind("/dev/log")
os.chmod("/dev/log", 0o666)  # passt writes after dropping to nobody
sock = os.path.join(work, "p.sock")
if interactive:
    proc = subprocess.Popen([passt, *extra, "-s", sock], stdin=slave, stdout=slave, stderr=slave)
    os.close(slave)
    err_fd = master
else:
    proc = subprocess.Popen([passt, *extra, "-s", sock], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    err_fd = proc.stderr.fileno()
deadline = time.monotonic() + 20
client = None
while client is None and time.monotonic() < deadline:
    try:
        c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        c.connect(sock)
        client = c
    except OSError:
        c.close()
        time.sleep(0.05)
syslog, stderr = [], b""
log.settimeout(0.1)
while time.monotonic() < deadline and not any("guest connected" in m for m in syslog):
    try:
        syslog.append(log.recv(4096).decode(errors="replace"))
    except socket.timeout:
        pass
proc.terminate()
proc.wait(10)
if "-f" not in extra:  # the backgrounded survivor: stop it and wait until it is gone
    survivor = int(open(pid_file).read())
    os.kill(survivor, 15)
    def gone():
        try:
            with open(f"/proc/{survivor}/stat") as f:
                return f.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")
        except OSError:
            return True
    while not gone() and time.monotonic() < deadline + 10:
        time.sleep(0.02)
while select.select([err_fd], [], [], 0.2)[0]:
    try:
        chunk = os.read(err_fd, 65536)
    except OSError:
        break
    if not chunk:
        break
    stderr += chunk
print(json.dumps({"syslog": syslog, "stderr": stderr.decode(errors="replace")}))
"""


@pytest.mark.parametrize(("interactive", "extra"), [
    (False, ["-f"]), (True, ["-f"]),
    pytest.param(True, ["-f", "-e"], marks=pytest.mark.conformance("opt.stderr")),
    pytest.param(True, ["-e"], marks=pytest.mark.conformance("opt.stderr")),
], ids=["pipe", "terminal", "terminal-e", "terminal-e-background"])
@pytest.mark.conformance("log.default-destination")
def test_default_log_destination(topo: Topology, passt_bin: str, tmp_path: Path, interactive: bool,
                                 extra: list[str]) -> None:
    """Log lines reach the system logger (/dev/log) always, and stderr too unless it is a terminal
    (with -e, a terminal too, also once passt went to the background)."""
    script = tmp_path / "probe.py"
    script.write_text(_SYSLOG_PROBE)
    res = topo.run(topo.host, ["unshare", "-m", "--propagation", "private", sys.executable, str(script), passt_bin,
                               str(tmp_path), "1" if interactive else "0", *extra], timeout=60)
    assert res.returncode == 0, res.stderr
    seen = json.loads(res.stdout)
    line = next((m for m in seen["syslog"] if "guest connected" in m), None)
    # syslog(3)'s datagram: <facility*8+priority>timestamp ident[pid]: message (daemon.info = 30)
    assert line is not None and re.match(r"<30>.*passt\[\d+\]: guest connected to ", line), seen
    if interactive and "-e" not in extra:
        assert "guest connected" not in seen["stderr"], seen
    else:
        assert "guest connected" in seen["stderr"], f"[opt.stderr, log.default-destination] {seen}"


@pytest.mark.conformance("log.never-stdout")
def test_passt_output_is_never_on_stdout(topo: Topology, passt_bin: str, tmp_path: Path) -> None:
    """passt -f with stdout and stderr in separate files: the summary and a log line (a guest
    connecting) are in stderr's, stdout's stays empty."""
    sock = str(tmp_path / "p.sock")
    out_path, err_path = tmp_path / "stdout", tmp_path / "stderr"
    with out_path.open("wb") as out, err_path.open("wb") as err:
        proc = topo.popen(topo.host, [passt_bin, "-f", "-s", sock], stdout=out, stderr=err)
    try:
        _wait(lambda: _accepts(sock), what="passt accepts")  # the connection is a guest's
        _wait(lambda: any("guest connected" in f.read_text(errors="replace") for f in (out_path, err_path)),
              what="passt logs the guest")
    finally:
        proc.terminate()
        proc.wait(10)
    stdout = out_path.read_bytes()
    assert_statement("log.never-stdout", stdout == b"", f"passt wrote to stdout: {stdout[:500]!r}")
    errors = err_path.read_text(errors="replace")
    assert "Outbound interface" in errors and "guest connected" in errors, errors


@pytest.mark.conformance("summary.passt")
def test_passt_prints_the_examples_summary(topo: Topology, passt_bin: str, tmp_path: Path) -> None:
    """passt -f -t 2222:22 prints the EXAMPLES' summary block for block: outbound interface, ARP,
    DHCP and NDP/DHCPv6 (with the resolvers and search list of the host's resolv.conf), the socket."""
    sock = str(tmp_path / "p.sock")
    proc = topo.popen(topo.host, [passt_bin, "-f", "-s", sock, "-t", "2222:22"], stdout=subprocess.PIPE,
                      stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    out = b""
    deadline = time.monotonic() + 20
    try:
        while b"UNIX domain socket bound at" not in out or not out.endswith(b"\n"):
            assert time.monotonic() < deadline, out
            if select.select([proc.stderr], [], [], 0.2)[0]:
                chunk = os.read(proc.stderr.fileno(), 65536)
                assert chunk, out  # EOF: passt exited
                out += chunk
    finally:
        proc.terminate()
        stdout, _ = proc.communicate(timeout=10)
    assert stdout == b""  # the summary is a log block: stderr, never stdout
    lines = out.decode().split("\n")
    lines = lines[: next(i for i, line in enumerate(lines) if line.startswith("UNIX domain socket")) + 1]
    assert lines == [
        "Outbound interface: uplink0",
        "ARP:",
        "    address: 02:77:00:00:00:02",
        "DHCP:",
        "    assign: 10.77.0.2",
        "    mask: 255.255.255.0",
        "    router: 10.77.0.1",
        "    DNS:",
        "        10.77.1.53",
        "    search:",
        "        example.test",
        "NDP/DHCPv6:",
        "    assign: fd77::2",
        "    router: fd77::1",
        "    DNS:",
        "        fd77:1::53",
        "    search:",
        "        example.test",
        f"UNIX domain socket bound at {sock}",
    ], "\n".join(lines)


def _kill_from(pidf: Path) -> None:
    """Stop a daemon named by its PID file (it's no child of ours: topo can't reap it)."""
    try:
        os.kill(int(pidf.read_text()), 15)
    except (OSError, ValueError):
        pass


def _gone(pid: int) -> bool:
    """Exited (a zombie waiting for a slow init counts as gone)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return True
    return state in ("Z", "X")


@pytest.mark.conformance("daemon.background-always", "opt.pid", "cli.callers-options")
def test_passt_libvirt_argv_backgrounds_when_ready_without_terminal(topo: Topology, passt_bin: str,
                                                                      tmp_path: Path) -> None:
    """libvirt's argv from a script (pipes, no terminal): the started process exits 0 once the socket
    accepts, leaves the caller's pipes at EOF, and the PID file names the serving process (nobody)."""
    sock, pidf = str(tmp_path / "1-vm-net0.socket"), tmp_path / "1-vm-net0-passt.pid"
    try:
        res = topo.run(topo.host, ["timeout", "20", passt_bin, "--one-off", "--socket", sock, "--pid", str(pidf),
                                   "--tcp-ports", "2280:80"], input="")
        assert res.returncode == 0, res.stderr
        assert res.stdout == ""
        assert _accepts(sock)  # at once: ready before the caller's process exited
        daemon_pid = int(pidf.read_text())
        assert not _gone(daemon_pid) and _uid(daemon_pid) == 65534
        for fd in (0, 1, 2):
            assert os.readlink(f"/proc/{daemon_pid}/fd/{fd}") == "/dev/null"
    finally:
        _kill_from(pidf)


@pytest.mark.conformance("daemon.background-always", "opt.one-off")
def test_passt_one_off_quits_when_its_guest_leaves(topo: Topology, passt_bin: str, tmp_path: Path) -> None:
    sock, pidf = str(tmp_path / "p.sock"), tmp_path / "p.pid"
    try:
        assert topo.run(topo.host, [passt_bin, "-q", "-1", "-s", sock, "-P", str(pidf)]).returncode == 0
        pid = int(pidf.read_text())
        c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        c.connect(sock)
        c.close()
        _wait(lambda: _gone(pid), what="passt --one-off exits after its guest")
    finally:
        _kill_from(pidf)


@pytest.mark.conformance("daemon.background-always")
def test_setup_error_before_the_fork_is_the_callers(topo: Topology, passt_bin: str, tmp_path: Path) -> None:
    """A set-up failure: non-zero, one line on the caller's stderr, nothing left behind."""
    pidf = tmp_path / "no" / "such" / "dir.pid"
    res = topo.run(topo.host, ["timeout", "20", passt_bin, "-s", str(tmp_path / "p.sock"), "-P", str(pidf)])
    assert res.returncode == 1, res
    assert res.stderr.strip().splitlines()[-1] == (
        f"passt: can't write PID file {pidf}: No such file or directory"), res.stderr
    res = topo.run(topo.host, ["timeout", "20", passt_bin, "--vhost-user"])
    assert res.returncode == 1 and res.stderr.startswith("passt: --vhost-user is not implemented")


@pytest.mark.parametrize("prog", ["passt", "pasta"])
def test_unknown_option_in_getopts_words(topo: Topology, passt_bin: str, pasta_bin: str, prog: str) -> None:
    """What Podman's fallback matches on: "unrecognized option '--x'", exit 1."""
    binary = passt_bin if prog == "passt" else pasta_bin
    res = topo.run(topo.host, ["timeout", "20", binary, "--bogus-option"])
    assert res.returncode == 1 and res.stdout == ""
    assert res.stderr == f"{prog}: unrecognized option '--bogus-option'\n"


@pytest.mark.conformance("daemon.background-always", "pasta.netns-gone")
def test_pasta_podman_argv_ready_then_quits_with_its_netns(topo: Topology, pasta_bin: str, tmp_path: Path) -> None:
    """Podman 5.4's argv on a namespace from `ip netns add`: exit 0 once configured, then gone
    within a second of `ip netns delete`, leaving no process."""
    name = f"{topo.host}-pod"
    pidf = tmp_path / "pasta.pid"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        res = topo.run(topo.host, ["timeout", "30", pasta_bin, "--config-net", "-t", "18080-18080:8080-8080",
                                   "--dns-forward", "169.254.1.1", "-u", "none", "-T", "none", "-U", "none",
                                   "--no-map-gw", "--quiet", "--netns", f"/run/netns/{name}",
                                   "--map-guest-addr", "169.254.1.2", "-P", str(pidf)], input="")
        assert res.returncode == 0 and res.stdout == "" and res.stderr == "", res
        addrs = subprocess.run(["ip", "-n", name, "-o", "addr", "show"], capture_output=True, text=True).stdout
        assert "10.77.0.2/24" in addrs, addrs  # configured before the caller's process exited
        pid = int(pidf.read_text())
        assert not _gone(pid)
        topo.wait_listening(topo.host, 18080)
        subprocess.run(["ip", "netns", "delete", name], check=True)
        start = time.monotonic()
        _wait(lambda: _gone(pid), timeout=5, what="pasta exits with its namespace")
        assert time.monotonic() - start < 1.0
    finally:
        _kill_from(pidf)
        subprocess.run(["ip", "netns", "delete", name], capture_output=True)


@pytest.mark.conformance("security.runas")
def test_root_in_user_namespace_keeps_identity(topo: Topology, passt_bin: str, pasta_bin: str,
                                               tmp_path: Path) -> None:
    """unshare --user --map-root-user (one-uid map): passt and pasta start, run and keep uid 0."""
    sock, pidf = str(tmp_path / "u.sock"), tmp_path / "u.pid"
    tmp_path.chmod(0o777)
    script = (f"{passt_bin} -q -s {sock} -P {pidf} || exit 11; "
              f"{pasta_bin} -q --config-net -- sh -c 'id -u; ip -o -4 addr show' || exit 12")
    try:
        res = topo.run(topo.host, ["timeout", "30", "unshare", "--user", "--map-root-user", "sh", "-c", script])
        assert res.returncode == 0, res.stderr
        assert res.stdout.splitlines()[0] == "0" and "10.77.0.2/24" in res.stdout, res.stdout
        assert _accepts(sock)
        assert _uid(int(pidf.read_text())) == 0  # root of the namespace, seen from outside: our uid 0
    finally:
        _kill_from(pidf)
