"""The control socket's I/O: a nonblocking UNIX stream listener in the program's loop.

    listener --READ--> accept (ACCEPT_BATCH per wake-up) --SO_PEERCRED--> same uid or root?
        no  -> closed, one log line per second at most (the rest counted)
        yes -> Client: READ -> LineBuffer -> one request -> Commands -> answer bytes
                       WRITE while an answer waits (reading stops meanwhile)

Bounds and hostile clients:
- MAX_CLIENTS connections; one more evicts the client idle longest, so a
  flood of connections can't lock the socket up.
- A request line is at most MAX_REQUEST_BYTES (protocol.py); a longer one
  is answered with an error and the connection closed.
- One answer at a time per client, and no reading while it waits: a client
  that never reads holds one answer (at most FLOWS_MAX rows) and the socket
  buffer, never more; after STALL_S without progress it is closed.
- At most LINES_PER_TURN requests per client per wake-up; pipelined ones
  wait for the next (the socket's writability wakes us).
- A client that goes away mid-answer: send() fails, the client is dropped;
  nothing else changes (commands never depend on the client).
- IDLE_S without a request closes a client.
Every socket is nonblocking: no call here ever waits.
"""

from __future__ import annotations

import atexit
import errno
import functools
import os
import socket
import stat
import struct
import sys
from typing import Any, Final

from passt import log
from passt.control.commands import Commands, RuntimeView
from passt.control.protocol import (
    LineBuffer,
    ProtocolError,
    encode_answer,
    encode_error,
    parse_request,
    request_id,
)
from passt.loop import EVENT_READ, EVENT_WRITE, EventLoop, Handler, Timer

MAX_CLIENTS: Final = 16
ACCEPT_BATCH: Final = 16
RECV_BYTES: Final = 16 << 10
LINES_PER_TURN: Final = 8
STALL_S: Final = 10.0
IDLE_S: Final = 300.0
SWEEP_S: Final = 1.0
REFUSAL_LOG_S: Final = 1.0
_UCRED: Final = struct.Struct("3i")


class ControlError(Exception):
    """The control socket can't be set up; one line saying why and what to do."""


class Client:
    """One accepted connection."""

    __slots__ = ("sock", "fd", "buf", "out", "out_off", "closing", "last", "events", "handler")

    def __init__(self, sock: socket.socket, now: float) -> None:
        self.sock = sock
        self.fd = sock.fileno()
        self.buf = LineBuffer()
        self.out = b""
        self.out_off = 0
        #: Close once the pending answer is out (framing lost).
        self.closing = False
        #: Last progress (a request read or answer bytes written).
        self.last = now
        self.events = EVENT_READ
        #: Its loop handler (set by the server).
        self.handler: Handler | None = None


class ControlServer:
    """Listener and clients of the control socket, registered in `loop`."""

    def __init__(self, loop: EventLoop, path: str, commands: Commands, prog: str) -> None:
        self.loop = loop
        self.path = path
        self.commands = commands
        self.prog = prog
        self.clients: dict[int, Client] = {}
        self.refused = 0
        self._last_refusal_log = -REFUSAL_LOG_S
        self._sweep: Timer | None = None
        self.listener = _bind(path)
        loop.register(self.listener.fileno(), EVENT_READ, self._on_accept)

    # accept ------------------------------------------------------------------
    def _on_accept(self, _mask: int, now: float) -> None:
        for _ in range(ACCEPT_BATCH):
            try:
                sock, _addr = self.listener.accept()
            except BlockingIOError:
                return
            except OSError as e:
                if e.errno in (errno.EMFILE, errno.ENFILE):
                    log.warn(f"control socket {self.path}: {e.strerror}; retrying in 1 s")
                    self.loop.suspend(self.listener.fileno(), 1.0)
                return
            if not self._allowed(sock, now):
                sock.close()
                continue
            sock.setblocking(False)
            if len(self.clients) >= MAX_CLIENTS:
                self._close(min(self.clients.values(), key=lambda c: c.last))
            client = Client(sock, now)
            self.clients[client.fd] = client
            client.handler = handler = functools.partial(self._on_client, client)
            self.loop.register(client.fd, EVENT_READ, handler)
            if self._sweep is None:
                self._sweep = self.loop.call_later(SWEEP_S, self._on_sweep)

    def _allowed(self, sock: socket.socket, now: float) -> bool:
        """SO_PEERCRED: our own uid or root; anyone else is refused and logged."""
        try:
            pid, uid, _gid = _UCRED.unpack(sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED,
                                                           _UCRED.size))  # fmt: skip
        except OSError:
            return False
        if uid == os.getuid() or uid == 0:
            return True
        self.refused += 1
        self.commands.view.ctx.counters.event("control_refused")
        if now - self._last_refusal_log >= REFUSAL_LOG_S:
            self._last_refusal_log = now
            log.warn(f"control socket {self.path}: refused uid {uid} (pid {pid}): "
                     f"only uid {os.getuid()} and root may connect ({self.refused} refused so far)")
        return False

    # clients -------------------------------------------------------------------
    def _on_client(self, c: Client, mask: int, now: float) -> None:
        if mask & EVENT_WRITE and c.out and not self._flush(c, now):
            return
        if mask & EVENT_READ and not c.out:
            try:
                data = c.sock.recv(RECV_BYTES)
            except BlockingIOError:
                data = None
            except OSError:
                self._close(c)
                return
            if data == b"":
                self._close(c)
                return
            if data:
                c.buf.feed(data)
        served = 0
        while not c.out and not c.closing and served < LINES_PER_TURN:
            line = c.buf.next_line()
            if line is None:
                if c.buf.overflowed:
                    c.out = encode_error(None, f"request longer than {c.buf.limit} bytes: closing")
                    c.closing = True
                break
            served += 1
            c.last = now
            c.out = self._answer(line, now)
            c.out_off = 0
            if not self._flush(c, now):
                return
        if c.closing and not c.out:
            self._close(c)
            return
        want = EVENT_WRITE if c.out or (c.buf.has_line() and not c.closing) else EVENT_READ
        if want != c.events:
            self._modify(c, want)

    def _answer(self, line: bytes, now: float) -> bytes:
        try:
            req = parse_request(line)
        except ProtocolError as e:
            self.commands.view.ctx.counters.event("control_bad_request")
            return encode_error(request_id(line), str(e))
        try:
            return encode_answer(req.id, self.commands.handle(req, now))
        except ProtocolError as e:
            return encode_error(req.id, str(e))

    def _flush(self, c: Client, now: float) -> bool:
        """Send what we can of the pending answer; False: the client is gone."""
        try:
            sent = c.sock.send(memoryview(c.out)[c.out_off :])
        except BlockingIOError:
            return True
        except OSError:
            self._close(c)
            return False
        c.last = now
        c.out_off += sent
        if c.out_off >= len(c.out):
            c.out = b""
            c.out_off = 0
        if c.closing and not c.out:
            self._close(c)
            return False
        if c.out and c.events != EVENT_WRITE:
            self._modify(c, EVENT_WRITE)
        return True

    def _modify(self, c: Client, events: int) -> None:
        c.events = events
        assert c.handler is not None
        self.loop.modify(c.fd, events, c.handler)

    def _on_sweep(self, now: float) -> None:
        """Close stalled readers and idle clients; runs only while clients exist."""
        self._sweep = None
        for c in list(self.clients.values()):
            if (c.out and now - c.last > STALL_S) or now - c.last > IDLE_S:
                self._close(c)
        if self.clients:
            self._sweep = self.loop.call_later(SWEEP_S, self._on_sweep)

    def _close(self, c: Client) -> None:
        if self.clients.pop(c.fd, None) is None:
            return
        self.loop.unregister(c.fd)
        c.sock.close()

    def close(self) -> None:
        """Close every client and the listener, remove the socket file."""
        for c in list(self.clients.values()):
            self._close(c)
        if self._sweep is not None:
            self.loop.cancel(self._sweep)
            self._sweep = None
        if self.listener.fileno() >= 0:
            self.loop.unregister(self.listener.fileno())
            self.listener.close()
            try:
                if stat.S_ISSOCK(os.lstat(self.path).st_mode):
                    os.unlink(self.path)
            except OSError:
                pass


def _bind(path: str) -> socket.socket:
    """A listening socket at `path`, mode 0600 from the start (umask), a stale file replaced."""
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(path)
    except OSError:
        pass
    else:
        raise ControlError(f"control socket {path} is in use by another process; choose another with -c")
    finally:
        probe.close()
    try:
        if stat.S_ISSOCK(os.lstat(path).st_mode):
            os.unlink(path)
    except FileNotFoundError:
        pass
    except OSError as e:
        raise ControlError(f"can't replace control socket {path}: {e.strerror}") from None
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC | socket.SOCK_NONBLOCK)
    old = os.umask(0o177)
    try:
        sock.bind(path)
        sock.listen(MAX_CLIENTS)
    except OSError as e:
        sock.close()
        raise ControlError(f"can't bind control socket {path}: {e.strerror}; choose another with -c") from None
    finally:
        os.umask(old)
    return sock


def start_control(runtime: Any) -> ControlServer | None:
    """The control socket of `runtime` when -c was given (None otherwise); exits on failure.

    Called by the programs' main once the runtime's forwarding is started;
    the socket is removed at exit.
    """
    conf = runtime.conf
    path = conf.conf_path
    if not path:
        return None
    prog = conf.mode.value
    try:
        server = ControlServer(runtime.loop, path, Commands(RuntimeView.of(runtime)), prog)
    except ControlError as e:
        sys.stderr.write(f"{prog}: {e}\n")
        sys.stderr.flush()
        raise SystemExit(1) from None
    atexit.register(server.close)
    return server
