"""A helper process living in pasta's target namespace, making sockets for us.

Why a process: a socket stays in the network namespace it was created in, but
an unprivileged process that joins a child user namespace can never return to
the init network namespace (setns needs CAP_SYS_ADMIN over the namespace's
owner).  So pasta itself never leaves the init namespace; at start it forks
this helper, which joins the target user and network namespaces and then:

1. brings lo up, creates the tap (IFF_TAP | IFF_NO_PI | IFF_VNET_HDR, with
   TUNSETOFFLOAD), sets its MTU, brings it up, optionally configures addresses
   and routes (--config-net), and opens ping_group_range;
2. passes the tap descriptor back over a SOCK_SEQPACKET socketpair
   (SCM_RIGHTS), with the tap's MAC;
3. serves requests for new sockets inside the namespace (the loopback bypass
   and the -T/-U listeners need them), each answered with a descriptor.

Requests and replies are small JSON objects, one per datagram.  The helper
dies with pasta (EOF on the pair ends its loop).  Its /proc/PID/net
shows the namespace's sockets, which the `auto` port scan reads.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import socket
import sys
from typing import Any, Final

from passt import syscalls
from passt.netconf import TapSetup

#: Largest request or reply datagram.
MSG_MAX: Final = 4096


class NsHelperError(Exception):
    """The helper could not set up the namespace side (message says why)."""


class NsHelper:
    """Client side: talks to the helper process; implements NsSocketFactory."""

    def __init__(self, sock: socket.socket, pid: int) -> None:
        self.sock = sock
        self.pid = pid

    @classmethod
    def start(
        cls,
        *,
        userns: str | None,
        netns: str,
        setup: TapSetup,
    ) -> tuple[NsHelper, int, bytes, int]:
        """Fork the helper; returns (helper, tap fd, tap MAC, tap ifindex).

        `userns`/`netns` are paths such as /proc/PID/ns/user; userns None means
        the network namespace belongs to a user namespace we already are in
        (or we are root in the init namespace).
        """
        return cls.spawn(userns=userns, netns=netns, setup=setup).wait_ready()

    @classmethod
    def spawn(cls, *, userns: str | None, netns: str, setup: TapSetup) -> NsHelper:
        """Fork the helper and return at once: it joins and configures the namespace
        while we go on (pasta imports its data plane meanwhile); then `wait_ready`."""
        parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        pid = os.fork()
        if pid == 0:  # pragma: no cover - runs in the child
            parent.close()
            code = 1
            try:
                _helper_main(child, userns, netns, setup)
                code = 0
            except BaseException:  # noqa: BLE001 - last resort in a forked child
                code = 1
            finally:
                os._exit(code)
        child.close()
        return cls(parent, pid)

    def wait_ready(self) -> tuple[NsHelper, int, bytes, int]:
        """The helper's set-up report: (helper, tap fd, tap MAC, tap ifindex); NsHelperError if it failed."""
        helper = self
        reply, fds = helper._recv()
        if not reply.get("ok"):
            helper.close()
            raise NsHelperError(str(reply.get("error", "namespace helper failed")))
        if len(fds) != 1:
            helper.close()
            raise NsHelperError("namespace helper sent no tap descriptor")
        return helper, fds[0], bytes.fromhex(reply["mac"]), int(reply["ifindex"])

    def _recv(self) -> tuple[dict[str, Any], list[int]]:
        try:
            msg, fds, _flags, _addr = socket.recv_fds(self.sock, MSG_MAX, 4)
        except OSError as exc:
            raise NsHelperError(f"namespace helper: {exc.strerror}") from exc
        if not msg:
            raise NsHelperError("namespace helper exited")
        data: dict[str, Any] = json.loads(msg)
        return data, fds

    def socket(self, family: int, type: int, proto: int = 0) -> socket.socket:
        """A new socket created inside the target namespace."""
        self.sock.sendall(json.dumps({"op": "socket", "family": family, "type": type, "proto": proto}).encode())
        reply, fds = self._recv()
        if not reply.get("ok") or len(fds) != 1:
            for fd in fds:
                os.close(fd)
            err = int(reply.get("errno", 0))
            raise OSError(err, f"socket in namespace: {reply.get('error', 'failed')}")
        return socket.socket(fileno=fds[0])

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass
        try:
            os.kill(self.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass  # gone, or root-owned while we run as --runas: EOF ends it
        try:
            os.waitpid(self.pid, 0)
        except ChildProcessError:
            pass  # not our child any more (we daemonized)


def _send(sock: socket.socket, obj: dict[str, Any], fds: list[int] | None = None) -> None:
    data = json.dumps(obj).encode()
    if fds:
        socket.send_fds(sock, [data], fds)
    else:
        sock.send(data)


def _join(userns: str | None, netns: str) -> None:
    if userns is not None:
        fd = os.open(userns, os.O_RDONLY | os.O_CLOEXEC)
        try:
            own = os.stat("/proc/self/ns/user")
            target = os.fstat(fd)
            if (own.st_dev, own.st_ino) != (target.st_dev, target.st_ino):
                syscalls.setns(fd, syscalls.CLONE_NEWUSER)
        finally:
            os.close(fd)
    fd = os.open(netns, os.O_RDONLY | os.O_CLOEXEC)
    try:
        syscalls.setns(fd, syscalls.CLONE_NEWNET)
    finally:
        os.close(fd)


def _open_tap(name: str) -> int:
    fd = os.open("/dev/net/tun", os.O_RDWR | os.O_CLOEXEC | os.O_NONBLOCK)
    syscalls.tun_set_iff(fd, name, syscalls.IFF_TAP | syscalls.IFF_NO_PI | syscalls.IFF_VNET_HDR)
    syscalls.tun_set_vnet_hdr_size(fd, 10)
    syscalls.tun_set_offload(fd, syscalls.TUN_F_CSUM | syscalls.TUN_F_TSO4 | syscalls.TUN_F_TSO6)
    return fd


def _helper_main(sock: socket.socket, userns: str | None, netns: str, setup: TapSetup) -> None:  # pragma: no cover
    """Body of the helper process (forked)."""
    # No PR_SET_PDEATHSIG: pasta may daemonize after forking us, and the
    # signal would fire when its first process exits.  EOF on the socketpair
    # (pasta gone, whatever way) ends the request loop instead.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        _join(userns, netns)
    except OSError as exc:
        _send(sock, {"ok": False, "error": f"can't join namespace {netns}: {exc.strerror}"})
        return
    try:
        tap = _open_tap(setup.ifname)
    except OSError as exc:
        _send(sock, {"ok": False, "error": f"can't create tap {setup.ifname} in the namespace: {exc.strerror}"})
        return
    try:
        from passt import netconf
        from passt.rtnl import Rtnl

        with Rtnl() as nl:
            netconf.bring_up_lo(nl)
            index, mac = netconf.configure_tap(nl, setup)
        netconf.set_ping_group_range()
    except (OSError, ValueError) as exc:  # ValueError: rtnl.ParseError, a bad --ns-mac-addr
        _send(sock, {"ok": False, "error": f"can't configure {setup.ifname} in the namespace: {exc}"})
        return
    _send(sock, {"ok": True, "mac": mac.hex(), "ifindex": index}, [tap])
    os.close(tap)
    sys.stdout.flush()
    # Set-up is reported: keep none of the caller's stdio, or a caller that
    # reads pasta's output to EOF (Podman) would wait for this helper too.
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    os.close(devnull)
    while True:
        try:
            msg = sock.recv(MSG_MAX)
        except InterruptedError:
            continue
        if not msg:
            return
        try:
            req = json.loads(msg)
        except ValueError:
            return
        if req.get("op") == "socket":
            try:
                s = socket.socket(int(req["family"]), int(req["type"]), int(req.get("proto", 0)))
            except OSError as exc:
                _send(sock, {"ok": False, "errno": exc.errno or 0, "error": exc.strerror or "error"})
                continue
            _send(sock, {"ok": True}, [s.fileno()])
            s.close()
        else:
            _send(sock, {"ok": False, "error": "unknown request"})


def setup_as_dict(setup: TapSetup) -> dict[str, Any]:
    return dataclasses.asdict(setup)
