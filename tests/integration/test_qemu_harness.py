"""The QEMU harness itself: the guest boots, commands round-trip, and its NIC speaks the passt framing.

Every other QEMU test relies on these facts, so they are checked against independent oracles: the
guest's own kernel (``uname -r`` must equal the host kernel's release we booted), scapy for the
frames, and a stand-in for passt written here (a UNIX stream socket exchanging Ethernet frames each
preceded by a 4-byte big-endian length).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import struct
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from scapy.layers.dhcp import BOOTP, DHCP
from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import ARP, Ether

from harness.qemu.guest import (
    PROBE_TIMEOUT_S,
    GuestCommandTimeout,
    GuestError,
    QemuGuest,
    boot_image,
    choose_accel,
    kernel_path,
    modules_dir,
    probe_kvm,
)
from harness.qemu.initramfs import build_initramfs, resolve_modules

pytestmark = [
    pytest.mark.qemu,
    pytest.mark.integration,
    pytest.mark.skipif(
        shutil.which("qemu-system-x86_64") is None or not list(Path("/boot").glob("vmlinuz-*")),
        reason="needs qemu-system-x86 and linux-image-amd64",
    ),
]

GUEST_MAC = "52:54:00:12:34:56"
GUEST_IP = "192.0.2.15"
"""TEST-NET-1 (RFC 5737): only ever configured inside the guest, whose NIC ends in our socket."""
STANDIN_MAC = "9a:55:9a:55:9a:55"
STANDIN_IP = "192.0.2.2"


@pytest.fixture(scope="module")
def plain_guest() -> Iterator[QemuGuest]:
    """A guest without NIC under forced TCG, with iperf3 (a dynamically linked binary) inside."""
    with QemuGuest(net_args=["-nic", "none"], accel="tcg", extra_binaries=["/usr/bin/iperf3"]) as g:
        yield g


def test_guest_boots_and_runs_commands(plain_guest: QemuGuest) -> None:
    """uname -r in the guest is the host kernel we booted; output and exit status come back intact."""
    release = kernel_path().name.removeprefix("vmlinuz-")
    res = plain_guest.run("uname -r")
    assert res == (0, release + "\n")
    assert plain_guest.run("echo hello; echo err >&2; exit 3") == (3, "hello\nerr\n")
    # Output without a trailing newline, and bytes our framing uses, survive the channel.
    assert plain_guest.run("printf '@@PQ> x 0\\n\\001no-newline'") == (0, "@@PQ> x 0\n\x01no-newline")
    big = plain_guest.run("seq 1 20000")
    assert big.rc == 0 and big.output.splitlines() == [str(i) for i in range(1, 20001)]
    assert plain_guest.boot_seconds is not None
    print(f"boot to command loop: {plain_guest.boot_seconds:.2f} s ({plain_guest.accel_used})")


def test_guest_extra_binary_with_shared_libraries(plain_guest: QemuGuest) -> None:
    """A dynamically linked extra binary runs: its libraries and the ELF loader were copied."""
    res = plain_guest.run("iperf3 --version")
    assert res.rc == 0, res.output
    assert res.output.startswith("iperf ")


def test_guest_command_timeout_keeps_channel(plain_guest: QemuGuest) -> None:
    """A hung command is killed in the guest at its timeout and the next command still works."""
    t0 = time.monotonic()
    with pytest.raises(GuestCommandTimeout):
        plain_guest.run("echo started; sleep 30", timeout=1)
    assert time.monotonic() - t0 < 10
    assert plain_guest.run("echo alive") == (0, "alive\n")


def test_forced_tcg_boot(plain_guest: QemuGuest) -> None:
    """accel='tcg' really runs under TCG: the guest sees no KVM paravirtual clock."""
    assert plain_guest.accel_used == "tcg"
    assert "-accel" in plain_guest.argv and "tcg" in plain_guest.argv
    clocks = plain_guest.run("cat /sys/devices/system/clocksource/clocksource0/available_clocksource")
    assert clocks.rc == 0 and "kvm-clock" not in clocks.output


def test_kvm_probe_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    """The KVM probe decides within its bound (~6 s) even where KVM hangs; env forces a choice."""
    t0 = time.monotonic()
    works = probe_kvm()
    elapsed = time.monotonic() - t0
    assert isinstance(works, bool)
    assert elapsed < PROBE_TIMEOUT_S + 4, elapsed
    print(f"kvm probe: {works} in {elapsed:.1f} s")
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        assert works is False
    monkeypatch.delenv("PASST_TEST_ACCEL", raising=False)
    assert choose_accel() in ("kvm", "tcg")
    monkeypatch.setenv("PASST_TEST_ACCEL", "tcg")
    assert choose_accel() == "tcg"
    monkeypatch.setenv("PASST_TEST_ACCEL", "kvm")
    assert choose_accel() == "kvm"


def test_module_order_puts_dependencies_first() -> None:
    """virtio_net's dependencies (failover, net_failover, virtio, virtio_ring) load before it."""
    names = [p.name.split(".ko")[0] for p in resolve_modules(modules_dir(kernel_path()),
                                                            ["virtio_pci", "virtio_net"])]
    assert names[-1] == "virtio_net"
    for dep in ("failover", "net_failover", "virtio", "virtio_ring"):
        if dep in names:
            assert names.index(dep) < names.index("virtio_net")
    assert names.index("failover") < names.index("net_failover")


def test_initramfs_is_cached(tmp_path: Path) -> None:
    """The same inputs give the same image without rebuilding; the kernel image is reused too."""
    a = build_initramfs(tmp_path)
    mtime = a.stat().st_mtime_ns
    b = build_initramfs(tmp_path)
    assert a == b and b.stat().st_mtime_ns == mtime
    assert build_initramfs(tmp_path, init_script="#!/bin/sh\nexec sh\n") != a
    assert boot_image() == boot_image()


# --- networking through a passt stand-in ---------------------------------------------------------


class FrameServer:
    """A minimal passt stand-in: accept one QEMU on a UNIX socket, record and send framed frames."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.frames: list[bytes] = []
        self.bad_lengths: list[int] = []
        self._cond = threading.Condition()
        self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._listener.bind(str(path))
        self._listener.listen(1)
        self._conn: socket.socket | None = None
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        conn, _ = self._listener.accept()
        with self._cond:
            self._conn = conn
            self._cond.notify_all()
        buf = b""
        while True:
            try:
                chunk = conn.recv(65536)
            except OSError:
                return
            if not chunk:
                return
            buf += chunk
            while len(buf) >= 4:
                (length,) = struct.unpack_from("!I", buf)
                if length < 14 or length > 65535 + 14:
                    self.bad_lengths.append(length)
                    return
                if len(buf) < 4 + length:
                    break
                with self._cond:
                    self.frames.append(buf[4 : 4 + length])
                    self._cond.notify_all()
                buf = buf[4 + length :]

    def send(self, frame: bytes) -> None:
        with self._cond:
            assert self._cond.wait_for(lambda: self._conn is not None, timeout=10)
            assert self._conn is not None
            self._conn.sendall(struct.pack("!I", len(frame)) + frame)

    def wait_for(self, match: type, timeout: float = 20.0) -> list[Ether]:
        """Wait for received frames containing layer ``match``; return them dissected by scapy."""
        def found() -> list[Ether]:
            return [Ether(f) for f in self.frames if Ether(f).haslayer(match)]

        with self._cond:
            self._cond.wait_for(lambda: bool(found()), timeout=timeout)
            return found()

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
        self._listener.close()


@pytest.fixture
def frame_server(tmp_path: Path) -> Iterator[FrameServer]:
    server = FrameServer(tmp_path / "passt.sock")
    try:
        yield server
    finally:
        server.close()


@pytest.mark.parametrize("attach", ["netdev-stream", "socket-fd"])
def test_guest_nic_speaks_stream_framing(frame_server: FrameServer, attach: str) -> None:
    """virtio-net over -netdev stream (QEMU >= 7.2) or an inherited socket (the qrap way): the
    guest's DHCPDISCOVER arrives length-prefixed, and a length-prefixed ARP request we send is
    answered by the guest."""
    fds: tuple[int, ...] = ()
    client: socket.socket | None = None
    if attach == "netdev-stream":
        net = [
            "-netdev", f"stream,id=n0,server=off,addr.type=unix,addr.path={frame_server.path}",
            "-device", f"virtio-net-pci,netdev=n0,mac={GUEST_MAC}",
        ]
    else:
        client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        client.connect(str(frame_server.path))
        fds = (client.fileno(),)
        net = ["-net", f"socket,fd={fds[0]}", "-net", f"nic,model=virtio,macaddr={GUEST_MAC}"]
    with contextlib.ExitStack() as stack:
        if client is not None:
            stack.enter_context(client)  # closed after the guest; QEMU holds its own copy
        g = stack.enter_context(QemuGuest(net_args=net, pass_fds=fds))
        print(f"boot to command loop: {g.boot_seconds:.2f} s ({g.accel_used})")
        link = g.run("ip link show eth0")
        assert link.rc == 0 and GUEST_MAC in link.output, link.output
        assert "virtio_net" in g.run("lsmod").output

        res = g.run("ip link set eth0 up; udhcpc -i eth0 -n -q -t 2 -T 1", timeout=30)
        assert res.rc != 0  # nobody answers, so no lease; what matters is what went on the wire
        assert not frame_server.bad_lengths
        discovers = [
            f for f in frame_server.wait_for(DHCP)
            if ("message-type", 1) in f[DHCP].options
        ]
        assert discovers, [Ether(f).summary() for f in frame_server.frames]
        d = discovers[0]
        assert d[Ether].src == GUEST_MAC and d[Ether].dst == "ff:ff:ff:ff:ff:ff"
        assert d[IP].src == "0.0.0.0" and d[UDP].sport == 68 and d[UDP].dport == 67
        assert d[BOOTP].chaddr[:6] == bytes.fromhex(GUEST_MAC.replace(":", ""))

        assert g.run(f"ip addr add {GUEST_IP}/24 dev eth0").rc == 0
        who_has = Ether(src=STANDIN_MAC, dst="ff:ff:ff:ff:ff:ff") / ARP(
            op=1, hwsrc=STANDIN_MAC, psrc=STANDIN_IP, pdst=GUEST_IP
        )
        frame_server.send(bytes(who_has))
        replies = [
            f for f in frame_server.wait_for(ARP) if f[ARP].op == 2 and f[ARP].psrc == GUEST_IP
        ]
        assert replies, "guest did not answer our ARP request"
        assert replies[0][ARP].hwsrc == GUEST_MAC and replies[0][Ether].dst == STANDIN_MAC


def test_boot_failure_reports_diagnostics() -> None:
    """A QEMU that cannot start raises GuestError quoting QEMU's stderr, and leaves no files."""
    guest = QemuGuest(net_args=["-device", "no-such-nic-model"], accel="tcg", boot_timeout=20)
    with pytest.raises(GuestError) as info, guest:
        pass
    assert "no-such-nic-model" in str(info.value)
    assert guest.proc is not None and guest.proc.poll() is not None
    assert not guest.workdir.exists()


def test_boot_timeout_reports_console() -> None:
    """A guest that is not ready in time raises GuestError with the console tail, and is killed."""
    guest = QemuGuest(net_args=["-nic", "none"], accel="tcg", boot_timeout=0.3)
    with pytest.raises(GuestError, match="console tail"), guest:
        pass
    assert guest.proc is not None and guest.proc.poll() is not None
