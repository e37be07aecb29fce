"""TCP listeners out of descriptors: accept() failing with EMFILE/ENFILE must not spin the loop.

The connection that could not be accepted stays queued, so the listener
stays readable; the handler takes the listener out of the (level-triggered)
loop for ACCEPT_BACKOFF_S and then serves it again.
"""

from __future__ import annotations

import errno
import socket
import time

import pytest

from passt.flows import tcp_open
from passt.loop import EVENT_READ
from tests.unit.tcp_fakes import G4, GW4, LO4, Guest, Seg, make_handler, pump


class FlakyListener:
    """A real listening socket whose accept() fails with `err` while `failing`."""

    def __init__(self, real: socket.socket, err: int) -> None:
        self.real = real
        self.err = err
        self.failing = True
        self.calls = 0

    def fileno(self) -> int:
        return self.real.fileno()

    def accept(self) -> tuple[socket.socket, object]:
        self.calls += 1
        if self.failing:
            raise OSError(self.err, "out of descriptors")
        return self.real.accept()


@pytest.mark.parametrize("err", [errno.EMFILE, errno.ENFILE])
def test_accept_out_of_descriptors_backs_off_then_resumes(
    err: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tcp_open, "ACCEPT_BACKOFF_S", 0.15)
    ctx, tap, h = make_handler()
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.bind((LO4, 0))
    srv.listen(8)
    srv.setblocking(False)
    lsock = FlakyListener(srv, err)
    fd = srv.fileno()
    ctx.loop.register(fd, EVENT_READ, lambda _m, now: h.listen_ready(lsock, 8080, now))  # type: ignore[arg-type]
    cli = socket.create_connection(srv.getsockname())
    cport = cli.getsockname()[1]
    try:
        assert pump(ctx, lambda: lsock.calls >= 1, timeout=2)
        t0 = time.monotonic()
        # The listener is still readable; without the back-off every turn calls accept() again.
        turns = 0
        while time.monotonic() - t0 < 0.08:
            ctx.loop.run_once(0.005)
            turns += 1
        assert turns > 3
        assert lsock.calls == 1
        assert ctx.counters.drops["tcp_accept"] == 1
        assert ctx.counters.events["tcp_accept_backoff"] == 1
        assert ctx.loop.is_registered(fd)  # paused, not forgotten
        assert tap.frames == []
        # Descriptors are back: after the pause the queued connection reaches the guest.
        lsock.failing = False
        g = Guest(ctx, tap, h, 4, G4, 8080, GW4, cport)
        got: list[Seg] = []

        def syn_seen() -> bool:
            got.extend(g.take())
            return bool(got)

        assert pump(ctx, syn_seen, timeout=2)
        assert time.monotonic() - t0 >= 0.15 - 0.01
        assert lsock.calls >= 2  # the accept that worked (then EAGAIN ends the batch)
        assert got[0].flags == "S" and (got[0].sport, got[0].dport) == (cport, 8080)
        assert h.flow_count() == 1
    finally:
        ctx.loop.unregister(fd)
        cli.close()
        h.close()
        srv.close()


def test_accept_other_error_does_not_pause_listener() -> None:
    """Only running out of descriptors pauses the listener (other errors are per connection)."""
    ctx, _tap, h = make_handler()
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.bind((LO4, 0))
    srv.listen(8)
    srv.setblocking(False)
    lsock = FlakyListener(srv, errno.ECONNABORTED)
    fd = srv.fileno()
    ctx.loop.register(fd, EVENT_READ, lambda _m, now: h.listen_ready(lsock, 8080, now))  # type: ignore[arg-type]
    try:
        h.listen_ready(lsock, 8080, time.monotonic())  # type: ignore[arg-type]
        assert ctx.counters.drops["tcp_accept"] == 1
        assert not ctx.loop.is_suspended(fd)
    finally:
        ctx.loop.unregister(fd)
        h.close()
        srv.close()
