"""UDP GSO batching of guest datagrams: what a peer receives is exactly what the guest sent."""

from __future__ import annotations

import errno
import socket
from collections.abc import Callable

import pytest

from passt.counters import Counters
from passt.flows.udp import UdpHandler
from passt.flows.udp_batch import GSO_MAX_SEGMENTS, UdpSendBatch
from tests.unit.fakes import G4, guest_udp, make_ctx, packed, pump, udp_server


def _pair() -> tuple[socket.socket, socket.socket]:
    """A loopback server and a non-blocking client connected to it."""
    srv = udp_server(4)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    cli = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    cli.setblocking(False)
    cli.connect(srv.getsockname())
    return srv, cli


def _received(srv: socket.socket, count: int) -> list[bytes]:
    return [srv.recv(70000) for _ in range(count)]


def _batch() -> tuple[UdpSendBatch, Counters, list[Callable[[float], None]]]:
    deferred: list[Callable[[float], None]] = []
    counters = Counters()
    return UdpSendBatch(counters, deferred.append), counters, deferred


def test_equal_runs_arrive_as_the_same_datagrams_in_order() -> None:
    """100 datagrams of 1400 bytes and a short tail: three GSO sends, 101 datagrams out, in order."""
    srv, cli = _pair()
    batch, counters, deferred = _batch()
    sent = [bytes([i]) * 1400 for i in range(100)] + [b"tail"]
    for p in sent:
        batch.add(cli, memoryview(p))
    assert len(deferred) == 1, "one deferred flush per turn"
    deferred[0](0.0)
    assert _received(srv, len(sent)) == sent
    # 46 + 46 (GSO_MAX_BYTES) + 8 and the tail, which ends the third run
    assert counters.events["udp_gso_send"] == 3
    assert not counters.drops
    srv.close()
    cli.close()


def test_mixed_sizes_split_into_runs_without_changing_datagrams() -> None:
    """A larger datagram starts a new run, a shorter one ends one; a lone one goes out plain."""
    srv, cli = _pair()
    batch, counters, deferred = _batch()
    sizes = [500, 500, 300, 900, 100, 100, 100, 2000, 7]
    sent = [bytes([i + 1]) * n for i, n in enumerate(sizes)]
    for p in sent:
        batch.add(cli, memoryview(p))
    deferred[0](0.0)
    assert _received(srv, len(sent)) == sent
    # runs: [500 500 300] [900 100] [100 100] [2000 7]
    assert counters.events["udp_gso_send"] == 4
    srv.close()
    cli.close()


def test_run_bounded_by_segment_count() -> None:
    """More than GSO_MAX_SEGMENTS equal datagrams: several sends, none lost or merged."""
    srv, cli = _pair()
    batch, counters, deferred = _batch()
    sent = [i.to_bytes(2, "big") * 50 for i in range(GSO_MAX_SEGMENTS * 2 + 5)]
    for p in sent:
        batch.add(cli, memoryview(p))
    deferred[0](0.0)
    assert _received(srv, len(sent)) == sent
    assert counters.events["udp_gso_send"] == 3
    srv.close()
    cli.close()


class RefusingSocket:
    """sendmsg with UDP_SEGMENT fails as on a kernel or path without UDP GSO."""

    def __init__(self) -> None:
        self.sent: list[bytes] = []
        self.gso_tries = 0

    def sendmsg(self, bufs: list[memoryview], anc: object) -> int:
        self.gso_tries += 1
        raise OSError(errno.EINVAL, "Invalid argument")

    def send(self, data: memoryview) -> int:
        self.sent.append(bytes(data))
        return len(data)


def test_refused_gso_falls_back_to_single_sends_for_good() -> None:
    """EINVAL on the GSO send: the run goes out datagram by datagram, and GSO is not retried."""
    batch, counters, deferred = _batch()
    sock = RefusingSocket()
    first = [bytes([i]) * 10 for i in range(5)]
    for p in first:
        batch.add(sock, memoryview(p))  # type: ignore[arg-type]
    deferred[0](0.0)
    assert sock.sent == first and sock.gso_tries == 1
    assert counters.events["udp_gso_refused"] == 1 and not counters.drops
    for p in first:
        batch.add(sock, memoryview(p))  # type: ignore[arg-type]
    deferred[1](0.0)
    assert sock.sent == first * 2 and sock.gso_tries == 1


def test_forget_sends_what_a_closing_socket_has_queued() -> None:
    """Closing a flow mid-turn still delivers its queued datagrams, and the flush skips it."""
    srv, cli = _pair()
    batch, _, deferred = _batch()
    batch.add(cli, memoryview(b"a" * 100))
    batch.add(cli, memoryview(b"b" * 100))
    batch.forget(cli)
    assert _received(srv, 2) == [b"a" * 100, b"b" * 100]
    deferred[0](0.0)  # nothing left for it
    srv.settimeout(0.05)
    with pytest.raises(TimeoutError):
        srv.recv(100)
    srv.close()
    cli.close()


def test_handler_batches_guest_datagrams_within_one_turn() -> None:
    """UdpHandler(gso_batch=True): a burst of guest datagrams reaches the server intact after the turn."""
    ctx, _tap = make_ctx()
    udp = UdpHandler(ctx, loopback_dst=True, gso_batch=True)
    srv = udp_server(4)
    port = srv.getsockname()[1]
    lo = packed(4, "127.0.0.1")
    sent = [bytes([65 + i % 26]) * 1200 for i in range(40)]
    for p in sent:
        udp.from_tap(4, packed(4, G4), lo, guest_udp(4, G4, "127.0.0.1", 41000, port, p), 0.0)
    assert pump(ctx, lambda: ctx.counters.events["udp_gso_send"] == 1)
    assert _received(srv, len(sent)) == sent
    udp.tap_reset()
    srv.close()
