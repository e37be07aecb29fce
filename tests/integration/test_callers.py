"""The real callers of passt and pasta: rootless Podman, libvirt, C qrap.

Podman 5.4 and libvirt 11.3 come from a Debian 13 root (harness.trixie) entered inside the test
topology's "host" namespace; each test runs twice, first with trixie's C passt/pasta (the control:
if it fails, the harness is broken, not our programs), then with ours. The callers reach the
programs through recording wrappers, so every test also keeps the argv the caller passed
(docs/callers.md quotes them). What is asserted is what a user sees: the container's and the
guest's addresses and routes, names resolved, SHA-256 of bytes fetched from wan, answers on the
published port, exit statuses, and the process list after the container or domain is gone.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.netns import HOST_ADDR4, WAN_ADDR4, WAN_ADDR6, Topology
from harness.netns.topology import DNS_ADDR4, DNS_ADDR6, HOST_ADDR6, WAN_GW4, WAN_GW6
from harness.qemu.guest import QemuGuest
from harness.trixie.callers import Impl, install_wrappers, recorded
from harness.trixie.libvirt import LibvirtGuest, start_libvirtd
from harness.trixie.root import build_wheel, ensure_root
from harness.trixie.session import RootSession, entered
from tests.integration.conftest import accepts_unix, need, read_bound, wait_until

pytestmark = [pytest.mark.qemu, pytest.mark.timeout(900)]

IMPLS = [pytest.param(Impl.C, id="c"), pytest.param(Impl.OURS, id="ours")]
ARGV_RECORD_DIR = Path(os.environ.get("PASST_CALLERS_ARGV_DIR", "/tmp/passt-callers-argv"))
"""Where each test leaves the argv its caller passed (JSON), for docs/callers.md."""
PODMAN_ENV = {"PODMAN_IGNORE_CGROUPSV1_WARNING": "1"}
IMAGE = "localhost/bb"
CALLER_TIMEOUT_S = 60.0
"""How long `podman run` or `virsh create` may take (C's: about 1 s): a caller that never returns
is a failure of the program it waits for (not forking to the background once ready)."""
GONE_TIMEOUT_S = 15.0
"""How long a pasta or passt may take to quit once its container or domain is gone."""

FETCH = r"""
import sys, time, urllib.request
deadline = time.monotonic() + float(sys.argv[2])
while True:
    try:
        with urllib.request.urlopen(sys.argv[1], timeout=3) as r:
            sys.stdout.write(r.read().decode()); break
    except OSError as e:
        if time.monotonic() > deadline:
            sys.exit(f"fetch {sys.argv[1]}: {e}")
        time.sleep(0.1)
"""


def fetch(topo: Topology, ns: str, url: str, timeout: float = 20) -> subprocess.CompletedProcess[str]:
    """GET `url` from namespace `ns`, retrying until something answers (the caller's readiness)."""
    return topo.run(ns, [sys.executable, "-c", FETCH, url, str(timeout)], timeout=timeout + 10)


@pytest.fixture(scope="module")
def trixie_root() -> Path:
    need("debootstrap")
    return ensure_root()


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Our project as a wheel: this checkout's, or ``$PASST_CALLERS_WHEEL`` (another build to try)."""
    given = os.environ.get("PASST_CALLERS_WHEEL")
    return Path(given) if given else build_wheel(tmp_path_factory.mktemp("wheel"))


@pytest.fixture
def blob(topo: Topology, tmp_path: Path) -> bytes:
    """1 MiB of random bytes served by wan's HTTP server as /blob."""
    data = os.urandom(1 << 20)
    (tmp_path / "www").mkdir()
    (tmp_path / "www" / "blob").write_bytes(data)
    topo.start_http(tmp_path / "www")
    return data


@pytest.fixture(params=IMPLS)
def root(request: pytest.FixtureRequest, topo: Topology, trixie_root: Path, wheel: Path) -> Iterator[RootSession]:
    """The trixie root in `topo`'s host namespace, its callers pointed at C's or our programs."""
    impl: Impl = request.param
    topo.popen(topo.wan, [sys.executable, "-m", "harness.trixie.dnsserver", DNS_ADDR4, DNS_ADDR6])
    topo.wait_listening(topo.wan, 53, udp=True, count=2)
    with entered(trixie_root, topo.host) as session:
        if impl is Impl.OURS:
            session.install_project(wheel)
        install_wrappers(session.shared, impl)
        yield session
        ARGV_RECORD_DIR.mkdir(parents=True, exist_ok=True)
        argv = {name: recorded(session.shared, name) for name in ("passt", "pasta")}
        (ARGV_RECORD_DIR / f"{request.node.name}.json").write_text(json.dumps(argv, indent=1))


def import_busybox_image(root: RootSession) -> None:
    """A busybox image from trixie's busybox-static, made by ``podman import`` (no registry)."""
    script = (
        "set -e; d=$(mktemp -d); mkdir $d/bin $d/etc $d/tmp $d/www; cp /usr/bin/busybox $d/bin/; "
        "for a in $(busybox --list); do [ $a = busybox ] || ln -s busybox $d/bin/$a; done; "
        f"tar -C $d -c . | podman import -q - {IMAGE}; rm -rf $d"
    )
    root.check(["sh", "-c", script], user=True, env=PODMAN_ENV)


def podman(root: RootSession, *args: str) -> subprocess.CompletedProcess[str]:
    """Run podman as the unprivileged user; a podman that does not return fails with what pasta got."""
    try:
        return root.run(["podman", *args], user=True, env=PODMAN_ENV, timeout=CALLER_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        pytest.fail(f"podman {' '.join(args)} did not return in {CALLER_TIMEOUT_S:.0f} s; pasta argv: "
                    f"{recorded(root.shared, 'pasta')}; processes: {root.processes('pasta')}")


@pytest.mark.xdist_group("trixie")
def test_podman_container_gets_host_addresses_dns_and_wan(topo: Topology, root: RootSession, blob: bytes) -> None:
    """`podman run --network pasta`: host's addresses and routes, a name through --dns-forward, wan over IPv4 and IPv6."""
    import_busybox_image(root)
    script = (
        "ip -4 -o addr show; ip -4 route; ip -6 -o addr show; ip -6 route; head -1 /etc/resolv.conf; "
        "nslookup wan.example.test; "
        f"wget -q -O - http://{WAN_ADDR4}:8080/blob | sha256sum; "
        f"wget -q -O - 'http://[{WAN_ADDR6}]:8080/blob' | sha256sum"
    )
    res = podman(root, "run", "--rm", "--network", "pasta", IMAGE, "sh", "-c", script)
    assert res.returncode == 0, res.stdout + res.stderr
    out = res.stdout
    assert re.search(rf"inet {re.escape(HOST_ADDR4)}/24 ", out), out
    assert re.search(rf"inet6 {re.escape(HOST_ADDR6)}/64 ", out), out
    assert f"default via {WAN_GW4} " in out, out
    assert f"default via {WAN_GW6} " in out, out
    # Podman's resolv.conf names the --dns-forward address first (only if pasta configured an
    # address of its family), and nslookup got its answer from there, not from the next server
    assert "nameserver 169.254.1.1\n" in out, out
    assert "Server:\t\t169.254.1.1" in out, out
    assert f"Address: {WAN_ADDR4}" in out and f"Address: {WAN_ADDR6}" in out, out
    digest = hashlib.sha256(blob).hexdigest()
    assert re.findall(r"^([0-9a-f]{64})  -$", out, re.M) == [digest, digest], out
    assert [a for a in recorded(root.shared, "pasta") if "--config-net" in a], "Podman never ran pasta"
    wait_until(lambda: not root.processes("pasta"), GONE_TIMEOUT_S, "pasta left after podman run --rm")


@pytest.mark.xdist_group("trixie")
def test_podman_published_port_answers_and_stop_leaves_no_pasta(topo: Topology, root: RootSession) -> None:
    """`-p 18080:8080` answers on the host's loopback and from wan; after stop and rm no pasta is left."""
    import_busybox_image(root)
    token = os.urandom(8).hex()
    serve = f"echo {token} > /www/index.html && exec httpd -f -p 8080 -h /www"
    res = podman(root, "run", "-d", "--name", "web", "--network", "pasta", "-p", "18080:8080", IMAGE,
                 "sh", "-c", serve)
    assert res.returncode == 0, res.stdout + res.stderr
    # C runs one process; ours may keep a helper inside the namespace: what counts is that pasta
    # serves the container while it runs and nothing is left after it
    assert root.processes("pasta"), "no pasta serves the container"
    local = fetch(topo, topo.host, "http://127.0.0.1:18080/index.html")
    assert local.returncode == 0 and local.stdout.strip() == token, local.stdout + local.stderr
    remote = fetch(topo, topo.wan, f"http://{HOST_ADDR4}:18080/index.html")
    assert remote.returncode == 0 and remote.stdout.strip() == token, remote.stdout + remote.stderr
    stop = podman(root, "stop", "-t", "1", "web")
    assert stop.returncode == 0, stop.stdout + stop.stderr
    rm = podman(root, "rm", "web")
    assert rm.returncode == 0, rm.stdout + rm.stderr
    wait_until(lambda: not root.processes("pasta"), GONE_TIMEOUT_S,
               f"pasta left after podman stop/rm: {root.processes('pasta')}")
    forwards = [a for a in recorded(root.shared, "pasta") if "18080-18080:8080-8080" in a]
    assert forwards, recorded(root.shared, "pasta")


@pytest.mark.xdist_group("trixie")
def test_libvirt_domain_with_passt_backend(topo: Topology, root: RootSession, blob: bytes) -> None:
    """A TCG domain with `<backend type='passt'/>`: lease of the host's address, wan, the forwarded port, no passt after destroy."""
    start_libvirtd(root)
    token = os.urandom(8).hex()
    with LibvirtGuest(root, "ptguest", port_forwards=((18080, 8080),)) as guest:
        out = guest.check("ip link set eth0 up; udhcpc -f -q -n -t 5 -T 1 -i eth0 2>&1; "
                          "ip -o -4 addr show dev eth0; ip route", timeout=60)
        assert f"inet {HOST_ADDR4}/24" in out, out
        assert f"default via {WAN_GW4} dev eth0" in out, out
        digest = guest.check(f"wget -q -O - http://{WAN_ADDR4}:8080/blob | sha256sum", timeout=120)
        assert digest.split()[0] == hashlib.sha256(blob).hexdigest(), digest
        guest.check(f"mkdir -p /www && echo {token} > /www/index.html && httpd -p 8080 -h /www")
        local = fetch(topo, topo.host, "http://127.0.0.1:18080/index.html", timeout=30)
        assert local.returncode == 0 and local.stdout.strip() == token, local.stdout + local.stderr
        assert root.processes("passt"), "no passt serves the domain"
        res = guest.destroy()
        assert res.returncode == 0, res.stdout + res.stderr
    wait_until(lambda: not root.processes("passt"), GONE_TIMEOUT_S,
               f"passt left after virsh destroy: {root.processes('passt')}")
    argv = recorded(root.shared, "passt")
    assert len(argv) == 1 and "--one-off" in argv[0] and "18080:8080" in argv[0], argv


@pytest.mark.xdist_group("default-socket")
@pytest.mark.parametrize("impl", IMPLS)
def test_c_qrap_with_passt(topo: Topology, impl: Impl, passt_bin: str) -> None:
    """Debian's C qrap (its ARP probe of /tmp/passt_N.socket) connects QEMU to passt: the guest leases the host's address."""
    qrap = need("/usr/bin/qrap")
    binary = need("/usr/bin/passt") if impl is Impl.C else passt_bin
    if not accepts_unix("/tmp/passt_1.socket"):
        # a stale root-owned file left by an earlier passt: C passt binds after dropping to nobody
        # and could not replace it in sticky /tmp
        Path("/tmp/passt_1.socket").unlink(missing_ok=True)
    proc = topo.popen(topo.host, [binary, "-f", "-s", "/tmp/passt_1.socket"])
    try:
        # ready by its own word, not by a test connection (see read_bound)
        assert read_bound(proc) == "/tmp/passt_1.socket"
        net = ["-net", "socket,fd=5", "-net", "nic,model=virtio,macaddr=52:54:00:12:34:56"]
        # C qrap takes QEMU_CMD only as a bare name it knows (a path makes it patch the command
        # line for a qemu it looks up itself): the shell drops the harness's path to QEMU
        prefix = ["sh", "-c", f'shift; exec {qrap} 5 qemu-system-x86_64 "$@"', "sh"]
        with QemuGuest(net_args=net, qemu_argv_prefix=prefix, netns=topo.host) as guest:
            out = guest.check("ip link set eth0 up; udhcpc -f -q -n -t 5 -T 1 -i eth0 2>&1; "
                              "ip -o -4 addr show dev eth0", timeout=60)
        assert f"inet {HOST_ADDR4}/24" in out, out
    finally:
        proc.terminate()
        proc.wait(10)
        Path("/tmp/passt_1.socket").unlink(missing_ok=True)  # as nobody, passt could not
