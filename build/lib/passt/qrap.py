"""qrap: connect to passt's socket and hand it to an older QEMU as a descriptor.

    qrap FD QEMU_CMD [ARG]...

Connects to the first passt socket that accepts (/tmp/passt_1.socket ..
/tmp/passt_64.socket, or $PASST_SOCKET), places the connection on descriptor
FD and execs QEMU, which is told `-net socket,fd=FD -net nic,model=virtio`:
QEMU's `-net socket` speaks the same 4-byte length framing as passt.
"""

from __future__ import annotations

import os
import socket
import sys
from collections.abc import Sequence

from passt.passt_main import SOCKET_MAX, SOCKET_TEMPLATE

USAGE = "usage: qrap FDNUM QEMU_CMD [QEMU_ARG]..."


def _fail(msg: str) -> SystemExit:
    sys.stderr.write(f"qrap: {msg}\n")
    return SystemExit(1)


def connect(paths: Sequence[str]) -> tuple[socket.socket, str]:
    for path in paths:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.connect(path)
        except OSError:
            sock.close()
            continue
        return sock, path
    raise _fail(f"no passt instance accepts on {paths[0]}..{paths[-1]}: start passt first")


def main(argv: Sequence[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] in ("-h", "--help"):
        print(USAGE)
        raise SystemExit(0)
    if len(args) < 2:
        raise _fail(f"missing arguments; {USAGE}")
    try:
        fd = int(args[0])
    except ValueError:
        raise _fail(f"invalid descriptor number '{args[0]}'; {USAGE}") from None
    if not 3 <= fd <= 1023:
        raise _fail(f"descriptor number {fd} out of range (3..1023)")
    env_path = os.environ.get("PASST_SOCKET")
    paths = [env_path] if env_path else [SOCKET_TEMPLATE.format(i) for i in range(1, SOCKET_MAX + 1)]
    sock, path = connect(paths)
    sys.stderr.write(f"Connected to {path}\n")
    os.dup2(sock.fileno(), fd, inheritable=True)
    sock.close()
    try:
        os.execvp(args[1], args[1:])
    except OSError as exc:
        raise _fail(f"can't run {args[1]}: {exc.strerror}") from None


if __name__ == "__main__":
    main()
