"""passt: connect a QEMU guest over a UNIX stream socket.

Socket: -s PATH, or the first of /tmp/passt_1.socket .. /tmp/passt_64.socket
that nobody accepts on (a stale file left by a dead passt is reused).  One
guest at a time: while one is connected the listening socket is not polled,
so a second QEMU waits in the backlog; when the guest goes away passt forgets
its flows and accepts the next one.

    QEMU --(4-byte length + frame)--> StreamTap --> Dispatcher --> services/flows
"""

from __future__ import annotations

import errno
import os
import signal
import socket
import sys
from collections.abc import Sequence
from typing import Final

from passt import daemon, log
from passt.cli import ConfigError, parse_args
from passt.config import Mode
from passt.control.server import start_control
from passt.loop import EVENT_READ
from passt.runtime import Runtime, local_addresses
from passt.summary import format_summary
from passt.tap.pcap import Pcap
from passt.tap.stream import StreamTap

SOCKET_TEMPLATE: Final = "/tmp/passt_{}.socket"
SOCKET_MAX: Final = 64
#: Pause before accepting again when out of descriptors.
ACCEPT_BACKOFF_S: Final = 1.0


def fail(msg: str, code: int = 1) -> SystemExit:
    sys.stderr.write(f"passt: {msg}\n")
    sys.stderr.flush()
    return SystemExit(code)


def _in_use(path: str) -> bool:
    """True when something accepts connections on `path`."""
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(path)
    except OSError:
        return False
    finally:
        probe.close()
    return True


def bind_socket(path: str | None) -> tuple[socket.socket, str]:
    """Bind the listening socket (probing the default names when `path` is None)."""
    candidates = [path] if path else [SOCKET_TEMPLATE.format(i) for i in range(1, SOCKET_MAX + 1)]
    last_error = ""
    for candidate in candidates:
        if _in_use(candidate):
            last_error = f"{candidate} is in use by another passt"
            continue
        try:
            os.unlink(candidate)
        except FileNotFoundError:
            pass
        except OSError as exc:
            last_error = f"can't remove stale {candidate}: {exc.strerror}"
            continue
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        try:
            sock.bind(candidate)
            sock.listen(1)
        except OSError as exc:
            sock.close()
            last_error = f"can't bind {candidate}: {exc.strerror}"
            continue
        return sock, candidate
    if path:
        raise fail(f"{last_error}; choose another path with -s")
    raise fail(f"no free socket between {candidates[0]} and {candidates[-1]}; use -s PATH")


def main(argv: Sequence[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        conf = parse_args(Mode.PASST, args)
    except ConfigError as exc:
        raise fail(str(exc)) from None
    log.setup("passt", debug=conf.debug, quiet=conf.quiet, stderr=conf.stderr, log_file=conf.log_file)
    # The capture file exists before the socket does: a client that can
    # connect may look for the capture at once.
    try:
        pcap = Pcap(conf.pcap) if conf.pcap else None
    except OSError as exc:
        raise fail(f"can't open capture file {conf.pcap}: {exc.strerror}; choose another with -p") from None
    listener, path = bind_socket(conf.socket_path)
    listener.setblocking(False)
    runtime = Runtime(conf, local_addrs=local_addresses())
    runtime.start_forwarding()
    start_control(runtime)  # -c: the control socket (passt.control, docs/control.md)
    if not conf.quiet:
        out = format_summary(conf)
        out += f"UNIX domain socket bound at {path}\n\n"
        out += "You can now start qemu (>= 7.2, with a stream netdev):\n"
        out += (
            "    qemu-system-x86_64 ... -device virtio-net-pci,netdev=s "
            f"-netdev stream,id=s,server=off,addr.type=unix,addr.path={path}\n"
        )
        out += "or qrap, for earlier qemu versions:\n"
        out += "    ./qrap 5 qemu-system-x86_64 ... -net socket,fd=5 -net nic,model=virtio\n"
        sys.stdout.write(out)
        sys.stdout.flush()
    loop = runtime.loop
    # From the moment a client can connect, SIGTERM is an orderly stop
    # (socket removed, capture closed), never the default abrupt death.
    signal.signal(signal.SIGTERM, lambda *_: loop.stop())
    signal.signal(signal.SIGINT, lambda *_: loop.stop())

    def on_accept(_mask: int, _now: float) -> None:
        try:
            conn, _ = listener.accept()
        except OSError as exc:
            if exc.errno in (errno.EMFILE, errno.ENFILE):
                # The socket stays readable: stop polling it for a while
                # instead of spinning until a descriptor frees up.
                log.warn(f"accept on {path}: {exc.strerror}; retrying in {ACCEPT_BACKOFF_S} s")
                loop.suspend(listener.fileno(), ACCEPT_BACKOFF_S)
            elif exc.errno not in (errno.EAGAIN, errno.ECONNABORTED, errno.EINTR):
                log.warn(f"accept on {path}: {exc.strerror}")
            return
        loop.unregister(listener.fileno())
        log.info(f"guest connected to {path}")
        runtime.attach_tap(StreamTap(conn, runtime.ctx.counters, pcap))

    def on_closed(_now: float) -> None:
        log.info("guest disconnected, waiting for the next one")
        loop.register(listener.fileno(), EVENT_READ, on_accept)

    runtime.on_tap_closed = on_closed
    loop.register(listener.fileno(), EVENT_READ, on_accept)
    if not (conf.foreground or conf.debug) and daemon.interactive():
        daemon.daemonize()
    daemon.write_pid_file(conf.pid_file)
    # Everything privileged is done (socket, listeners, capture file).
    try:
        daemon.drop_privileges(conf.runas)
    except OSError as exc:
        raise fail(f"can't switch to --runas user: {exc.strerror}") from None
    try:
        loop.run()
    finally:
        listener.close()
        try:
            os.unlink(path)
        except OSError:
            pass
        if pcap is not None:
            pcap.close()
    raise SystemExit(0)


if __name__ == "__main__":
    main()
