"""tcp_kernel: the socket options TCP translation reads, on a real loopback connection."""

from __future__ import annotations

import select
import socket
import struct
from collections.abc import Iterator

import pytest

from passt.flows import tcp_kernel as k


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(1)
    cli = socket.create_connection(lsock.getsockname())
    srv, _ = lsock.accept()
    lsock.close()
    yield cli, srv
    cli.close()
    srv.close()


def test_tcp_info_fields_match_the_header_offsets(pair: tuple[socket.socket, socket.socket]) -> None:
    """One Struct for both fields reads what separate reads at 120 (u64) and 228 (u32) give."""
    cli, srv = pair
    cli.sendall(b"x" * 1000)
    assert srv.recv(2000)
    info = k.tcp_info(cli)
    assert len(info) == k.TCP_INFO_LEN
    acked, wnd = k.TI_ACKED_WND.unpack_from(info, k.TI_BYTES_ACKED_OFF)
    assert acked == struct.unpack_from("=Q", info, 120)[0] == k.info_bytes_acked(info)
    assert wnd == struct.unpack_from("=I", info, 228)[0] == k.info_snd_wnd(info) > 0
    assert acked >= 1000


def test_short_tcp_info_reads_as_unknown() -> None:
    """A pre-5.3 struct (no tcpi_snd_wnd) and a failed read say so."""
    assert k.info_snd_wnd(bytes(192)) == -1
    assert k.info_bytes_acked(b"") == 0
    closed = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    closed.close()
    assert k.tcp_info(closed) == b""


def test_meminfo_reports_the_send_buffer(pair: tuple[socket.socket, socket.socket]) -> None:
    cli, _srv = pair
    mem = k.meminfo(cli)
    assert mem is not None
    sndbuf, queued = mem
    assert sndbuf == cli.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF)
    assert queued >= 0


def test_tune_and_peek_offset(pair: tuple[socket.socket, socket.socket]) -> None:
    cli, srv = pair
    k.tune_new(cli)
    assert cli.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1
    k.tune_bulk(cli, 1 << 20, True)
    assert cli.getsockopt(socket.SOL_SOCKET, k.SO_TIMESTAMPING) == k.ACK_TSTAMP_FLAGS
    assert cli.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF) >= 1 << 20
    if k.set_peek_off(srv):  # Linux >= 6.10
        cli.sendall(b"abcdef")
        assert srv.recv(3, socket.MSG_PEEK) == b"abc"
        assert srv.recv(3, socket.MSG_PEEK) == b"def"
        assert k.set_peek_off(srv)
        assert srv.recv(3, socket.MSG_PEEK) == b"abc"


def test_poll_out_and_errqueue(pair: tuple[socket.socket, socket.socket]) -> None:
    cli, _srv = pair
    cli.setblocking(False)
    assert k.poll_out(select.poll(), cli.fileno()) & select.POLLOUT
    assert k.drain_errqueue(cli, bytearray(1))  # empty: done at once
