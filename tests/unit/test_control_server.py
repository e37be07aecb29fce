"""The control server against real UNIX sockets and a real Runtime (no guest attached).

The loop is turned by hand (`turn`), so each test sees exactly what one
wake-up does with a client.
"""

from __future__ import annotations

import json
import os
import socket
import stat
import struct
from collections.abc import Iterator
from pathlib import Path

import pytest

from passt.config import FwdMode, Mode, PortFwd
from passt.control import server as srv
from passt.control.commands import Commands, RuntimeView
from passt.control.protocol import MAX_REQUEST_BYTES, encode_request
from passt.control.server import ControlError, ControlServer
from passt.runtime import Runtime
from tests.unit.conftest import make_config


@pytest.fixture
def runtime() -> Iterator[Runtime]:
    rt = Runtime(make_config(mode=Mode.PASST, tcp_in=PortFwd(mode=FwdMode.NONE)))
    yield rt
    rt.forwarder.stop()


@pytest.fixture
def server(runtime: Runtime, tmp_path: Path) -> Iterator[ControlServer]:
    s = ControlServer(runtime.loop, str(tmp_path / "ctl"), Commands(RuntimeView.of(runtime)), "passt")
    yield s
    s.close()


def turn(server: ControlServer, n: int = 3) -> None:
    for _ in range(n):
        server.loop.run_once(timeout=0.01)


def connect(server: ControlServer) -> socket.socket:
    c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    c.connect(server.path)
    c.settimeout(2)
    turn(server, 1)
    return c


def answers(server: ControlServer, c: socket.socket, n: int) -> list[dict[str, object]]:
    """Read `n` answer lines, turning the loop meanwhile."""
    buf = b""
    c.setblocking(False)
    for _ in range(200):
        turn(server, 1)
        try:
            buf += c.recv(1 << 20)
        except BlockingIOError:
            pass
        if buf.count(b"\n") >= n:
            break
    return [json.loads(line) for line in buf.splitlines()[:n]]


def test_socket_mode_0600_and_removed_on_close(server: ControlServer) -> None:
    assert stat.S_IMODE(os.stat(server.path).st_mode) == 0o600
    server.close()
    assert not os.path.exists(server.path)


def test_second_server_on_a_live_socket_refused(server: ControlServer, runtime: Runtime) -> None:
    with pytest.raises(ControlError, match="in use by another process; choose another with -c"):
        ControlServer(runtime.loop, server.path, server.commands, "passt")


def test_version_stats_config_answered_in_order(server: ControlServer) -> None:
    c = connect(server)
    c.sendall(encode_request("version", 1) + encode_request("stats", 2) + encode_request("config", 3))
    got = answers(server, c, 3)
    assert [a["id"] for a in got] == [1, 2, 3] and all(a["ok"] for a in got)
    assert got[0]["result"]["program"] == "passt"  # type: ignore[index]
    assert got[1]["result"]["guest_connected"] is False  # type: ignore[index]
    assert got[2]["result"]["ipv4"]["addr"] == "192.0.2.118"  # type: ignore[index]


def test_garbage_answered_and_connection_kept(server: ControlServer) -> None:
    c = connect(server)
    c.sendall(b"\x00\xffgarbage\n" + encode_request("version", 9))
    bad, good = answers(server, c, 2)
    assert bad == {"v": 1, "id": None, "ok": False, "error": "not a JSON object: send one JSON object per line"}
    assert good["ok"] and good["id"] == 9


def test_overlong_request_refused_and_closed(server: ControlServer) -> None:
    c = connect(server)
    c.setblocking(False)
    sent = 0
    while sent <= MAX_REQUEST_BYTES + 4096:
        try:
            sent += c.send(b"x" * 4096)
        except BlockingIOError:
            pass
        turn(server, 1)
    got = answers(server, c, 1)
    assert got[0]["error"] == f"request longer than {MAX_REQUEST_BYTES} bytes: closing"
    turn(server)
    assert not server.clients


def test_pipelined_requests_bounded_per_turn(server: ControlServer) -> None:
    c = connect(server)
    c.sendall(b"".join(encode_request("version", i) for i in range(50)))
    turn(server, 1)
    # one wake-up serves at most LINES_PER_TURN of them; the rest follow
    assert [a["id"] for a in answers(server, c, 50)] == list(range(50))


def test_never_reading_client_holds_one_answer_then_is_closed(server: ControlServer, monkeypatch: pytest.MonkeyPatch) -> None:
    c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    c.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    c.connect(server.path)
    c.setblocking(False)
    turn(server, 1)
    req = encode_request("config", 1)
    for _ in range(2000):  # far more answers than the socket buffers hold
        try:
            c.send(req)
        except BlockingIOError:
            break
        turn(server, 1)
    else:
        pytest.fail("the server kept reading from a client that never reads")
    client = next(iter(server.clients.values()))
    assert len(client.out) < 4096 and len(client.buf) <= MAX_REQUEST_BYTES + srv.RECV_BYTES
    other = connect(server)
    other.sendall(encode_request("version", 5))
    assert answers(server, other, 1)[0]["ok"]
    monkeypatch.setattr(srv, "STALL_S", 0.2)
    for _ in range(200):
        turn(server, 1)
        if client.fd not in server.clients:
            break
    assert client.fd not in server.clients


def test_client_leaving_mid_answer_changes_nothing(server: ControlServer) -> None:
    c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    c.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1024)
    c.connect(server.path)
    turn(server, 1)
    c.sendall(b"".join(encode_request("config", i) for i in range(30)))
    turn(server, 2)
    c.close()
    turn(server, 5)
    assert not server.clients
    other = connect(server)
    other.sendall(encode_request("version", 1))
    assert answers(server, other, 1)[0]["ok"]


def test_client_flood_evicts_the_longest_idle(server: ControlServer) -> None:
    socks = [connect(server) for _ in range(srv.MAX_CLIENTS + 5)]
    assert len(server.clients) == srv.MAX_CLIENTS
    last = socks[-1]
    last.sendall(encode_request("version", 1))
    assert answers(server, last, 1)[0]["ok"]


def test_other_uid_refused_and_counted(server: ControlServer, monkeypatch: pytest.MonkeyPatch) -> None:
    real = socket.socket.getsockopt

    def fake(self: socket.socket, *args: int) -> int | bytes:
        if args[:2] == (socket.SOL_SOCKET, socket.SO_PEERCRED):
            return struct.pack("3i", 4242, 12345, 12345)
        return real(self, *args)

    monkeypatch.setattr(socket.socket, "getsockopt", fake)
    c = connect(server)
    turn(server)
    assert not server.clients and server.refused == 1
    assert c.recv(10) == b""
    assert server.commands.view.ctx.counters.events["control_refused"] == 1


def test_forward_add_via_socket_opens_listener(server: ControlServer, runtime: Runtime) -> None:
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    c = connect(server)
    c.sendall(encode_request("forward", 1, op="add", option="-t", spec=str(port)))
    got = answers(server, c, 1)[0]
    assert got["ok"], got
    assert ("tcp", port) in runtime.forwarder.listening()
    assert ("udp", port) in runtime.forwarder.listening()  # UDP follows TCP
    c.sendall(encode_request("forward", 2, op="delete", option="-t", spec="1"))
    assert answers(server, c, 1)[0]["error"] == "port 1 is not forwarded by -t"
    c.sendall(encode_request("forward", 3, op="clear", option="-t"))
    assert answers(server, c, 1)[0]["ok"]
    assert not runtime.forwarder.listening()
