"""The control commands: a request in, a result (JSON-able) out.

`Commands` reads the running program through `RuntimeView`, the one place
that knows which attributes of `runtime.Runtime` hold the handlers and
forwarders (runtime.py is being rewired: re-pointing is one edit).  Every
command runs inside the event loop, between two wake-ups; the costliest,
`flows`, takes a few microseconds per flow (about 40 ms for 10,000 here)
and is bounded by FLOWS_MAX rows.
"""

from __future__ import annotations

import os
import resource
from dataclasses import dataclass
from typing import Any, Final

from passt import __version__ as _version
from passt.config import Config, Mode
from passt.context import Context
from passt.control import flows as fl
from passt.control.forward import ForwardTable
from passt.control.protocol import FORWARD_OPS, PROTOCOL_VERSION, ProtocolError, Request
from passt.flows.fwd import TCP, Forwarder
from passt.ports import ConfigError

#: Most rows one `flows` answer carries (its size stays below ~3 MB); `total` says how many exist.
FLOWS_MAX: Final = 16384
_PAGE: Final = os.sysconf("SC_PAGE_SIZE")


@dataclass(slots=True)
class RuntimeView:
    """What the commands read of a running program (see module doc)."""

    conf: Config
    ctx: Context
    tcp: Any
    udp: Any
    icmp: Any
    splice_in: Any
    splice_out: Any
    udp_splice_in: Any
    udp_splice_out: Any
    forwarder: Forwarder
    ns_forwarders: list[Forwarder]
    #: pasta: the namespace helper's PID (its /proc/PID/net/dev shows the tap); passt: None
    ns_pid: int | None = None

    @classmethod
    def of(cls, runtime: Any) -> RuntimeView:
        """The view of a `passt.runtime.Runtime`."""
        return cls(conf=runtime.conf, ctx=runtime.ctx, tcp=runtime.tcp, udp=runtime.udp,
                   icmp=runtime.icmp, splice_in=runtime.splice_in, splice_out=runtime.splice_out,
                   udp_splice_in=runtime.udp_splice_in, udp_splice_out=runtime.udp_splice_out,
                   forwarder=runtime.forwarder, ns_forwarders=runtime.ns_forwarders,
                   ns_pid=runtime.ns_pid)  # fmt: skip

    def tables(self) -> list[tuple[str, Any, Any]]:
        """(name, handler, its FlowTable) of every flow table that exists."""
        out: list[tuple[str, Any, Any]] = []
        for name, h, attr in (("tcp", self.tcp, "flows"), ("udp", self.udp, "flows"),
                              ("icmp", self.icmp, "flows"), ("tcp_splice_in", self.splice_in, "conns"),
                              ("tcp_splice_out", self.splice_out, "conns"),
                              ("udp_splice_in", self.udp_splice_in, "flows"),
                              ("udp_splice_out", self.udp_splice_out, "flows")):  # fmt: skip
            if h is not None:
                out.append((name, h, getattr(h, attr)))
        return out


class Commands:
    """Serves parsed requests against one running program."""

    def __init__(self, view: RuntimeView) -> None:
        self.view = view
        conf = view.conf
        self.forward = ForwardTable(
            conf.mode,
            {"-t": conf.tcp_in, "-u": conf.udp_in, "-T": conf.tcp_out, "-U": conf.udp_out},
            view.forwarder, view.ns_forwarders,
        )
        self._tcp_static: fl.StaticCache = {}

    def handle(self, req: Request, now: float) -> Any:
        """The result of `req`; ProtocolError (its message one line) when it can't be served."""
        if req.cmd == "flows":
            return self.flows(req, now)
        if req.cmd == "stats":
            return self.stats()
        if req.cmd == "config":
            return self.config()
        if req.cmd == "forward":
            return self.forward_cmd(req)
        return {"protocol": PROTOCOL_VERSION, "program": self.view.conf.mode.value,
                "version": _version, "pid": os.getpid()}  # fmt: skip

    # flows ---------------------------------------------------------------------
    def flows(self, req: Request, now: float) -> dict[str, Any]:
        limit = req.int_arg("limit", FLOWS_MAX, 0, FLOWS_MAX)
        proto = req.str_arg("proto")
        v = self.view
        listen = {port for (p, port) in v.forwarder.listening() if p == TCP}
        rows: list[fl.Row] = []
        total = 0
        for name, _h, table in v.tables():
            total += len(table)
            if proto is not None and not name.startswith(proto):
                continue
            room = limit - len(rows)
            if room <= 0:
                continue
            items = table.values()[:room]
            if name == "tcp":
                rows += fl.tcp_rows(items, now, listen, self._tcp_static)
            elif name == "udp":
                rows += fl.udp_rows(items, now)
            elif name == "icmp":
                rows += fl.icmp_rows(items, now)
            elif name.startswith("tcp_splice"):
                rows += fl.splice_rows(items, name.rpartition("_")[2])
            else:
                rows += fl.udp_splice_rows(items, now, name.rpartition("_")[2])
        return {"columns": fl.COLUMNS, "rows": rows, "total": total, "truncated": len(rows) < total
                and proto is None}  # fmt: skip

    # stats ---------------------------------------------------------------------
    def stats(self) -> dict[str, Any]:
        v = self.view
        counters = v.ctx.counters
        tables = {name: {"flows": len(t), "capacity": t.capacity} for name, _h, t in v.tables()}
        return {
            "program": v.conf.mode.value,
            "frames": self._frames(),
            "drops": dict(sorted(counters.drops.items())),
            "dropped": counters.dropped,
            "events": dict(sorted(counters.events.items())),
            "flows": tables,
            "guest_connected": v.ctx.tap is not None,
            "rss_bytes": _rss(),
            "max_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        }

    def _frames(self) -> dict[str, int] | None:
        """Frames and bytes to and from the guest: pasta reads the tap's own counters.

        The tap lives in the namespace; its helper process's /proc/PID/net/dev
        shows it (rx there = frames we sent to the namespace).  passt's stream
        back-end counts nothing: None.
        """
        pid = self.view.ns_pid
        if pid is None:
            return None
        try:
            with open(f"/proc/{pid}/net/dev", encoding="ascii") as f:
                lines = f.read().splitlines()[2:]
        except OSError:
            return None
        want = self.view.conf.tap_name
        for line in lines:
            name, _, rest = line.partition(":")
            if name.strip() == want:
                n = [int(x) for x in rest.split()]
                # /proc/net/dev: receive bytes, packets, errs, drop ... (8 fields), then transmit
                return {"to_guest": n[1], "to_guest_bytes": n[0], "to_guest_dropped": n[3],
                        "from_guest": n[9], "from_guest_bytes": n[8], "from_guest_dropped": n[11]}
        return None

    # config --------------------------------------------------------------------
    def config(self) -> dict[str, Any]:
        v = self.view
        conf, guest = v.conf, v.ctx.guest
        out: dict[str, Any] = {
            "program": conf.mode.value, "interface": conf.out_ifname,
            "tap": conf.tap_name if conf.mode is Mode.PASTA else None,
            "our_mac": conf.our_mac.hex(":"), "mtu": conf.mtu, "tap_mtu": conf.tap_mtu,
            "search": list(conf.search), "ipv4": None, "ipv6": None,
        }  # fmt: skip
        if conf.ip4 is not None:
            ip4 = conf.ip4
            out["ipv4"] = {"addr": str(ip4.addr), "prefix_len": ip4.prefix_len,
                           "gateway": str(ip4.gateway) if ip4.gateway else None,
                           "dns": [str(a) for a in ip4.dns],
                           "host_addr": str(ip4.host_addr) if ip4.host_addr else None}  # fmt: skip
        if conf.ip6 is not None:
            ip6 = conf.ip6
            out["ipv6"] = {"addr": str(ip6.addr), "prefix_len": ip6.prefix_len,
                           "gateway": str(ip6.gateway), "dns": [str(a) for a in ip6.dns],
                           "host_addr": str(ip6.host_addr) if ip6.host_addr else None}  # fmt: skip
        out["observed"] = {
            "mac": guest.mac.hex(":") if guest.mac != b"\xff" * 6 else None,
            "addr4": fl.addr_text(4, guest.addr4) if guest.addr4 else None,
            "addr6": fl.addr_text(6, guest.addr6) if guest.addr6 else None,
            "addr6_ll": fl.addr_text(6, guest.addr6_ll) if guest.addr6_ll else None,
        }
        out["forward"] = self.forward.listing()
        return out

    # forward -------------------------------------------------------------------
    def forward_cmd(self, req: Request) -> dict[str, Any]:
        op = req.str_arg("op", "list")
        if op not in FORWARD_OPS:
            raise ProtocolError(f"unknown forward op '{op}': one of {', '.join(FORWARD_OPS)}")
        if op == "list":
            return {"forward": self.forward.listing()}
        option = req.str_arg("option")
        if option is None:
            raise ProtocolError(f"forward {op} needs 'option' (-t, -u{', -T, -U' if self.view.conf.mode is Mode.PASTA else ''})")
        try:
            return {"forward": self.forward.change(op, option, req.str_arg("spec"))}
        except ConfigError as e:
            raise ProtocolError(str(e)) from None


def _rss() -> int:
    """Resident set size now (bytes)."""
    try:
        with open("/proc/self/statm", encoding="ascii") as f:
            return int(f.read().split()[1]) * _PAGE
    except (OSError, ValueError, IndexError):
        return 0
