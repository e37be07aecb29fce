"""pasta: connect a network namespace through a tap device.

Without a target, pasta creates a user and network namespace (the caller
mapped to root), and runs $SHELL or the given command in it, exiting with its
status.  With TARGET_PID, or --netns/--userns, it joins those namespaces.

    pasta (init namespace)                       target namespace
    ----------------------                       ----------------
    loop: tap fd  <---- tap device ----------->  eth0 (IFF_VNET_HDR, offloads)
          host sockets (TCP/UDP/ping)            lo up; -T/-U listeners (via helper)
          splice: -t/-T loopback bypass  <------>  namespace loopback sockets (via helper)
          nshelper socketpair  <-- fds --------  helper process (setns'd)
          pidfd of the command/target            $SHELL or COMMAND

Setup order matters: the command starts only once the tap exists and (with
--config-net) carries its addresses, so `pasta --config-net -- ip addr` sees
them.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Callable, Sequence
from typing import Final

# What set-up needs before the namespace helper starts; the data plane
# (runtime and everything under it) is imported in `main` while the helper
# configures the namespace, so the two overlap.  The control socket's and
# the namespace watch's modules load only when -c / --netns ask for them.
from passt import daemon, log, syscalls
from passt.cli import ConfigError, parse_args
from passt.config import Config, Mode
from passt.netconf import TapSetup
from passt.nshelper import NsHelper, NsHelperError
from passt.summary import format_mac

#: After the command exits, how long connections it left may still drain.
DRAIN_S: Final = 5.0
DRAIN_POLL_S: Final = 0.02


def fail(msg: str, code: int = 1) -> SystemExit:
    sys.stderr.write(f"pasta: {msg}\n")
    sys.stderr.flush()
    return SystemExit(code)


def _check_tun() -> None:
    if not os.path.exists("/dev/net/tun"):
        raise fail("/dev/net/tun not found: load the tun module (modprobe tun) or create the device node")
    if not os.access("/dev/net/tun", os.R_OK | os.W_OK):
        raise fail("no access to /dev/net/tun: make it readable and writable (mode 0666) for this user")


class SpawnedNamespace:
    """A child that unshares user+net namespaces, then execs the command when told."""

    def __init__(self, command: Sequence[str]) -> None:
        uid, gid = os.getuid(), os.getgid()
        to_parent_r, to_parent_w = os.pipe()
        to_child_r, to_child_w = os.pipe()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - child
            os.close(to_parent_r)
            os.close(to_child_w)
            try:
                syscalls.unshare(syscalls.CLONE_NEWUSER | syscalls.CLONE_NEWNET)
            except OSError as exc:
                os.write(to_parent_w, f"E{exc.strerror}".encode())
                os._exit(1)
            os.write(to_parent_w, b"U")
            if os.read(to_child_r, 1) != b"M":  # maps written
                os._exit(1)
            if os.read(to_child_r, 1) != b"G":  # tap ready: go
                os._exit(1)
            os.close(to_child_r)
            os.close(to_parent_w)
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            try:
                os.execvp(command[0], list(command))
            except OSError as exc:
                sys.stderr.write(f"pasta: can't run {command[0]}: {exc.strerror}\n")
                os._exit(127)
        os.close(to_parent_w)
        os.close(to_child_r)
        self.pid = pid
        self._go = to_child_w
        status = os.read(to_parent_r, 256)
        os.close(to_parent_r)
        if not status.startswith(b"U"):
            os.waitpid(pid, 0)
            reason = status[1:].decode(errors="replace") or "unknown error"
            raise fail(
                f"can't create user and network namespace: {reason} "
                "(are user namespaces enabled? see /proc/sys/user/max_user_namespaces)"
            )
        try:
            with open(f"/proc/{pid}/setgroups", "w") as f:
                f.write("deny")
            with open(f"/proc/{pid}/uid_map", "w") as f:
                f.write(f"0 {uid} 1")
            with open(f"/proc/{pid}/gid_map", "w") as f:
                f.write(f"0 {gid} 1")
        except OSError as exc:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            raise fail(f"can't map user in the new namespace: {exc.strerror}") from exc
        os.write(self._go, b"M")

    def go(self) -> None:
        os.write(self._go, b"G")
        os.close(self._go)

    def abort(self) -> None:
        try:
            os.kill(self.pid, signal.SIGKILL)
            os.waitpid(self.pid, 0)
        except (ProcessLookupError, ChildProcessError):
            pass


def _ns_paths(conf: Config) -> tuple[str | None, str, int | None]:
    """(userns path or None, netns path, pid to watch or None) for join mode."""
    if conf.target_pid is not None:
        pid = conf.target_pid
        if not os.path.exists(f"/proc/{pid}"):
            raise fail(f"no process with PID {pid}: give the PID of a process in the target namespace")
        userns = None if conf.netns_only else conf.userns or f"/proc/{pid}/ns/user"
        return userns, conf.netns or f"/proc/{pid}/ns/net", pid
    assert conf.netns is not None
    if not os.path.exists(conf.netns):
        raise fail(f"network namespace {conf.netns} not found: create it or give its full path")
    return None if conf.netns_only else conf.userns, conf.netns, None


def _tap_setup(conf: Config) -> TapSetup:
    ip4, ip6 = conf.ip4, conf.ip6
    return TapSetup(
        ifname=conf.tap_name,
        mtu=conf.tap_mtu,
        config_net=conf.config_net,
        addr4=str(ip4.addr) if ip4 else None,
        prefix4=ip4.prefix_len if ip4 else 0,
        gw4=str(ip4.gateway) if ip4 and ip4.gateway else None,
        addr6=str(ip6.addr) if ip6 else None,
        prefix6=ip6.prefix_len if ip6 else 64,
        gw6=str(ip6.gateway) if ip6 else None,
        mac=format_mac(conf.ns_mac_addr) if conf.ns_mac_addr is not None else None,
    )


def _scanner(helper_pid: int) -> Callable[[bool], set[int]]:
    from passt.ports import scan_bound_ports

    def scan(tcp: bool) -> set[int]:
        names = ("tcp", "tcp6") if tcp else ("udp", "udp6")
        return scan_bound_ports([f"/proc/{helper_pid}/net/{n}" for n in names], tcp=tcp)

    return scan


def main(argv: Sequence[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        conf = parse_args(Mode.PASTA, args)
    except ConfigError as exc:
        raise fail(str(exc)) from None
    try:
        log.setup("pasta", debug=conf.debug, quiet=conf.quiet, stderr=conf.stderr, log_file=conf.log_file,
                  log_size=conf.log_size, trace=conf.trace)
    except OSError as exc:
        raise fail(f"can't open log file {conf.log_file}: {exc.strerror}; choose another with -l") from None
    _check_tun()

    spawned: SpawnedNamespace | None = None
    watch_pid: int | None
    if conf.target_pid is None and conf.netns is None:
        command = list(conf.command) or [os.environ.get("SHELL") or "/bin/sh"]
        spawned = SpawnedNamespace(command)
        userns: str | None = f"/proc/{spawned.pid}/ns/user"
        netns = f"/proc/{spawned.pid}/ns/net"
        watch_pid = spawned.pid
    else:
        userns, netns, watch_pid = _ns_paths(conf)

    # Watch the namespace's owner from now on: if it dies during set-up we
    # still notice (the pidfd becomes readable), instead of racing with it.
    # --no-netns-quit: a joined namespace may outlive its TARGET_PID.
    if spawned is None and conf.no_netns_quit:
        watch_pid = None
    pidfd = -1
    if watch_pid is not None:
        try:
            pidfd = os.pidfd_open(watch_pid)
        except OSError as exc:
            if spawned is not None:
                spawned.abort()
            raise fail(f"can't watch PID {watch_pid}: {exc.strerror}") from None

    # The helper joins and configures the namespace while we import the data plane.
    pending = NsHelper.spawn(userns=userns, netns=netns, setup=_tap_setup(conf))
    from passt.loop import EVENT_READ
    from passt.runtime import Runtime, local_addresses
    from passt.summary import format_summary
    from passt.tap.tuntap import TunTap
    from passt.wire import checksum

    local_addrs = local_addresses()  # ours, in this namespace: no need to wait for the helper
    try:
        helper, tap_fd, tap_mac, _index = pending.wait_ready()
    except NsHelperError as exc:
        if spawned is not None:
            spawned.abort()
        raise fail(str(exc)) from None

    scan = _scanner(helper.pid)
    runtime = Runtime(conf, local_addrs=local_addrs, scan_ns_ports=scan, ns_socket=helper.socket,
                      ns_pid=helper.pid)
    ctx = runtime.ctx
    ctx.guest.learn_mac(tap_mac)
    pcap = None
    if conf.pcap:
        from passt.tap.pcap import Pcap

        pcap = Pcap(conf.pcap)
    runtime.attach_tap(TunTap(tap_fd, ctx.counters, pcap))
    runtime.start_forwarding()
    if conf.conf_path:  # -c: the control socket (passt.control, docs/control.md)
        from passt.control.server import start_control

        start_control(runtime)
    log.block(format_summary(conf))

    exit_code = 0

    def drain(now: float, deadline: float) -> None:
        """Keep serving until the namespace's last connections are done, or the deadline."""
        tcp = runtime.tcp
        left = (tcp.flow_count() if tcp is not None else 0) + runtime.bypass_flow_tcp_count()
        if left == 0 or now >= deadline:
            runtime.loop.stop()
            return
        runtime.loop.call_later(DRAIN_POLL_S, lambda t: drain(t, deadline))

    def target_gone(_mask: int, now: float) -> None:
        nonlocal exit_code
        runtime.loop.unregister(pidfd)
        if spawned is not None:
            _, status = os.waitpid(spawned.pid, 0)
            exit_code = os.waitstatus_to_exitcode(status)
            if exit_code < 0:
                exit_code = 128 - exit_code
            # A command that wrote into a socket and exited leaves data in the
            # namespace's socket buffers: let it reach the peer before we go.
            drain(now, now + DRAIN_S)
        else:
            log.info(f"target process {watch_pid} exited, namespace gone: exiting")
            runtime.loop.stop()

    if pidfd >= 0:
        runtime.loop.register(pidfd, EVENT_READ, target_gone)

    def netns_gone() -> None:
        log.info(f"namespace {conf.netns} is gone: exiting")
        runtime.loop.stop()

    if conf.netns is not None and not conf.no_netns_quit:
        from passt.nswatch import NetnsWatch

        try:
            NetnsWatch(runtime.loop, conf.netns, netns_gone)
        except OSError as exc:
            raise fail(f"can't watch namespace {conf.netns}: {exc.strerror or exc}") from None

    # Ready: namespace configured, forwards bound.  Ctrl-C belongs to the
    # shell in the namespace, not to us, and pasta stays with its command;
    # otherwise fork now (unless -f/-d): the caller's process exits 0 only
    # when the namespace is usable.
    readiness = daemon.foreground()
    if spawned is not None:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        spawned.go()
    elif not conf.foreground:
        readiness = daemon.background(keep_stderr=conf.stderr)
    # once only, and after the fork: the file names the process that serves
    try:
        daemon.write_pid_file(conf.pid_file)
    except OSError as exc:
        raise readiness.failed("pasta", f"can't write PID file {conf.pid_file}: {exc.strerror}") from None
    signal.signal(signal.SIGTERM, lambda *_: runtime.loop.stop())
    # Set-up is done: the tap, listeners and helper exist; serve unprivileged.
    # numpy (payload checksums) loads after the caller is told we are ready,
    # unless we drop privileges and the user we become might not read its
    # files or the interpreter's (daemon.import_before_drop).
    preload_first = daemon.import_before_drop(conf.runas)
    if preload_first:
        checksum.preload()
    try:
        daemon.drop_privileges(conf.runas)
    except OSError as exc:
        raise readiness.failed("pasta", f"can't switch to --runas user: {exc.strerror}") from None
    readiness.ready()
    if not preload_first:
        checksum.preload()
    try:
        runtime.loop.run()
    finally:
        helper.close()
        if pcap is not None:
            pcap.close()
    raise SystemExit(exit_code)


if __name__ == "__main__":
    main()
