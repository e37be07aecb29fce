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

# Only the standard library above this line: the socket is bound before the
# rest is imported (see `main`); passt.* modules are imported there.

SOCKET_TEMPLATE: Final = "/tmp/passt_{}.socket"
SOCKET_MAX: Final = 64
#: Pause before accepting again when out of descriptors.
ACCEPT_BACKOFF_S: Final = 1.0


def fail(msg: str, code: int = 1) -> SystemExit:
    sys.stderr.write(f"passt: {msg}\n")
    sys.stderr.flush()
    return SystemExit(code)


class BindError(Exception):
    """No socket could be bound (the message says why and what to do)."""


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
        raise BindError(f"{last_error}; choose another path with -s")
    raise BindError(f"no free socket between {candidates[0]} and {candidates[-1]}; use -s PATH")


#: Short options that take a value in a separate word (cli.OPTIONS says the
#: same; tests/unit/test_passt_early.py holds the two together).
VALUE_LETTERS: Final = frozenset("PlmanMgiDSstuFcHo")


def early_socket_path(argv: Sequence[str]) -> tuple[bool, str | None]:
    """(bind early?, -s path or None for the default probe), from a cheap scan of argv.

    Only a guess, so that the socket can listen before the heavy imports: main
    checks it against the full parse and rebinds (or unbinds) when it was
    wrong.  No early bind for -F (no socket at all), -h/--version (exit) or
    -p (the capture file must exist before a client can connect: whoever
    connects may open it at once).
    """
    path: str | None = None
    i = 0
    while i < len(argv):
        word = argv[i]
        i += 1
        if word == "--":
            break
        if word.startswith("--"):
            name, eq, value = word[2:].partition("=")
            if name in ("help", "version", "fd", "pcap"):
                return False, None
            if name == "socket":
                if not eq:
                    if i >= len(argv):
                        return False, None
                    value = argv[i]
                    i += 1
                path = value
            continue
        if word.startswith("-") and len(word) > 1:
            for j, letter in enumerate(word[1:], start=1):
                if letter in "hFp":
                    return False, None
                if letter in VALUE_LETTERS:
                    value = word[j + 1:]
                    if not value:
                        if i >= len(argv):
                            return False, None
                        value = argv[i]
                        i += 1
                    if letter == "s":
                        path = value
                    break
    return True, path


def _given_socket(fd: int) -> socket.socket:
    """-F FD: the caller's already connected stream socket to the guest."""
    try:
        sock = socket.socket(fileno=fd)
    except OSError as exc:
        raise fail(f"-F {fd}: {exc.strerror}: give an open, connected UNIX stream socket") from None
    if sock.type != socket.SOCK_STREAM:
        sock.detach()
        raise fail(f"-F {fd}: not a stream socket: give a connected UNIX stream socket")
    sock.setblocking(False)
    return sock


def main(argv: Sequence[str] | None = None) -> None:
    """Bind first, import and build the rest after: a guest can connect ~exec + 40 ms.

    Connections wait in the backlog until the loop runs.  A SIGTERM during
    set-up is held until set-up is done, then honoured (socket removed,
    capture closed), as it would be later.
    """
    args = list(sys.argv[1:] if argv is None else argv)
    early, early_path = early_socket_path(args)
    listener: socket.socket | None = None
    path = ""
    terminated: list[int] = []
    if early:
        previous = signal.signal(signal.SIGTERM, lambda signum, _f: terminated.append(signum))
        try:
            listener, path = bind_socket(early_path)
        except BindError:
            signal.signal(signal.SIGTERM, previous)
            listener = None  # report it after the full parse, which may say why better
    try:
        _serve(args, listener, path, early_path, terminated)
    finally:
        if listener is not None and listener.fileno() >= 0:
            listener.close()
            _unlink(path)


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def _serve(args: list[str], listener: socket.socket | None, path: str, early_path: str | None,
           terminated: list[int]) -> None:
    from passt import daemon, log
    from passt.cli import ConfigError, parse_args
    from passt.config import Mode
    from passt.loop import EVENT_READ
    from passt.runtime import Runtime, local_addresses
    from passt.summary import format_summary
    from passt.tap.pcap import Pcap
    from passt.tap.stream import StreamTap
    from passt.wire import checksum

    try:
        conf = parse_args(Mode.PASST, args)
    except ConfigError as exc:
        raise fail(str(exc)) from None
    if listener is not None and (conf.fd is not None or conf.socket_path != early_path):
        listener.close()  # the guess was wrong: bind what the options really say
        _unlink(path)
        listener = None
    try:
        log.setup("passt", debug=conf.debug, quiet=conf.quiet, stderr=conf.stderr, log_file=conf.log_file,
                  log_size=conf.log_size, trace=conf.trace)
    except OSError as exc:
        raise fail(f"can't open log file {conf.log_file}: {exc.strerror}; choose another with -l") from None
    # The capture file exists before the socket does: a client that can
    # connect may look for the capture at once.
    try:
        pcap = Pcap(conf.pcap) if conf.pcap else None
    except OSError as exc:
        raise fail(f"can't open capture file {conf.pcap}: {exc.strerror}; choose another with -p") from None
    if conf.fd is not None:
        guest = _given_socket(conf.fd)
        path = f"descriptor {conf.fd}"
    elif listener is None:
        try:
            listener, path = bind_socket(conf.socket_path)
        except BindError as exc:
            raise fail(str(exc)) from None
    if listener is not None:
        listener.setblocking(False)
    runtime = Runtime(conf, local_addrs=local_addresses())
    runtime.start_forwarding()
    if conf.conf_path:  # -c: the control socket (passt.control, docs/control.md)
        from passt.control.server import start_control

        start_control(runtime)
    out = format_summary(conf)
    if listener is not None:
        out += f"UNIX domain socket bound at {path}\n\n"
        out += "You can now start qemu (>= 7.2, with a stream netdev):\n"
        out += (
            "    qemu-system-x86_64 ... -device virtio-net-pci,netdev=s "
            f"-netdev stream,id=s,server=off,addr.type=unix,addr.path={path}\n"
        )
        out += "or qrap, for earlier qemu versions:\n"
        out += "    ./qrap 5 qemu-system-x86_64 ... -net socket,fd=5 -net nic,model=virtio\n"
    log.block(out)
    loop = runtime.loop
    # From the moment a client can connect, SIGTERM is an orderly stop
    # (socket removed, capture closed), never the default abrupt death.
    signal.signal(signal.SIGTERM, lambda *_: loop.stop())
    signal.signal(signal.SIGINT, lambda *_: loop.stop())

    def on_accept(_mask: int, _now: float) -> None:
        assert listener is not None
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
        if conf.one_off or listener is None:
            log.info("guest disconnected: exiting (--one-off)")
            loop.stop()
            return
        log.info("guest disconnected, waiting for the next one")
        loop.register(listener.fileno(), EVENT_READ, on_accept)

    runtime.on_tap_closed = on_closed
    if listener is not None:
        loop.register(listener.fileno(), EVENT_READ, on_accept)
    else:
        runtime.attach_tap(StreamTap(guest, runtime.ctx.counters, pcap))
    # Ready: the socket listens.  Fork now (unless -f/-d), so that the
    # caller's process exits 0 only when a guest can connect.
    readiness = daemon.foreground() if conf.foreground else daemon.background(keep_stderr=conf.stderr)
    try:
        daemon.write_pid_file(conf.pid_file)
    except OSError as exc:
        raise readiness.failed("passt", f"can't write PID file {conf.pid_file}: {exc.strerror}") from None
    # Everything privileged is done (socket, listeners, capture file).
    # numpy (payload checksums) loads after the caller hears we are ready,
    # unless we drop privileges and the user we become might not read its
    # files or the interpreter's (daemon.import_before_drop).
    preload_first = daemon.import_before_drop(conf.runas)
    if preload_first:
        checksum.preload()
    try:
        daemon.drop_privileges(conf.runas)
    except OSError as exc:
        raise readiness.failed("passt", f"can't switch to --runas user: {exc.strerror}") from None
    readiness.ready()
    if not preload_first:
        checksum.preload()
    try:
        if not terminated:
            loop.run()
    finally:
        if listener is not None:
            listener.close()
            _unlink(path)
        if pcap is not None:
            pcap.close()
    raise SystemExit(0)


if __name__ == "__main__":
    main()
