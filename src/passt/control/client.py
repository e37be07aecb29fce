"""pesto: the control socket's client (console script).

    pesto [OPTION]... PATH

Accepts upstream pesto(1)'s options (PATH is the -c socket of passt or
pasta; -d, -h, --version; -s shows the forwarding table, -A/-D add or
delete the -t/-u/-T/-U specs given, -C clears one table), plus ours:
--flows, --stats, --config, --json (for scripts: the answers' results as
JSON, flows as a list of objects) and --watch (redraw the flow table like
top; Ctrl-C ends it).  Without an operation, specs are added; without
anything, the table is shown.

Exit status: 0 done, 1 the server refused the request or can't be reached
(one line on stderr), 2 a usage error.
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
import time
from collections.abc import Sequence
from typing import Any, Final

from passt import __version__
from passt.control.protocol import ProtocolError, decode_answer, encode_request

#: Longest answer line we accept (a full flows answer is a few MB).
MAX_ANSWER_BYTES: Final = 64 << 20
TIMEOUT_S: Final = 10.0
#: -C names: upstream's interface names, or one option.
CLEAR_NAMES: Final = {"host": ("-t", "-u"), "tap": ("-t", "-u"), "splice": ("-T", "-U"),
                      "ns": ("-T", "-U"), "-t": ("-t",), "-u": ("-u",), "-T": ("-T",), "-U": ("-U",)}


class ClientError(Exception):
    """The request failed; the message is one line."""


class Connection:
    """A blocking connection to the control socket, one request at a time."""

    def __init__(self, path: str, timeout: float = TIMEOUT_S) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        try:
            self.sock.connect(path)
        except OSError as e:
            self.sock.close()
            raise ClientError(f"can't connect to {path}: {e.strerror or e}") from None
        self._buf = bytearray()
        self._next_id = 0

    def call(self, cmd: str, **args: Any) -> Any:
        """Send one request and return its result; ClientError with the server's message."""
        self._next_id += 1
        try:
            self.sock.sendall(encode_request(cmd, self._next_id, **args))
            line = self._line()
            answer = decode_answer(line)
        except (OSError, ProtocolError) as e:
            raise ClientError(str(e) or "connection lost") from None
        if not answer["ok"]:
            raise ClientError(str(answer.get("error")))
        return answer.get("result")

    def _line(self) -> bytes:
        while True:
            end = self._buf.find(b"\n")
            if end >= 0:
                line = bytes(self._buf[:end])
                del self._buf[: end + 1]
                return line
            if len(self._buf) > MAX_ANSWER_BYTES:
                raise ProtocolError("answer too long")
            data = self.sock.recv(1 << 20)
            if not data:
                raise ProtocolError("the server closed the connection")
            self._buf += data

    def close(self) -> None:
        self.sock.close()


# rendering ---------------------------------------------------------------------
def flow_objects(result: dict[str, Any]) -> list[dict[str, Any]]:
    """The rows of a flows answer as objects keyed by column."""
    cols = result["columns"]
    return [dict(zip(cols, row, strict=True)) for row in result["rows"]]


def _size(n: Any) -> str:
    if n is None:
        return "-"
    value = float(n)
    for unit in ("", "K", "M", "G", "T"):
        if value < 1024 or unit == "T":
            return f"{int(value)}{unit}" if unit == "" else f"{value:.1f}{unit}"
        value /= 1024
    return str(n)


def _secs(ms: Any) -> str:
    if ms is None:
        return "-"
    s = ms / 1000
    return f"{s:.1f}s" if s < 600 else f"{int(s // 60)}m"


def _ep(addr: Any, port: Any) -> str:
    if addr is None:
        return "-"
    text = f"[{addr}]" if ":" in str(addr) else str(addr)
    return text if port is None else f"{text}:{port}"


def format_flows(result: dict[str, Any]) -> str:
    """The flow table for people."""
    head = ("PROTO", "PIF", "BY", "STATE", "GUEST", "REMOTE", "HOST LOCAL", "HOST PEER",
            "TO GUEST", "FROM GUEST", "AGE", "IDLE")  # fmt: skip
    lines = [head]
    for f in flow_objects(result):
        lines.append((f["proto"], f["pif"], f["initiator"], f["state"],
                      _ep(f["guest_addr"], f["guest_port"]), _ep(f["remote_addr"], f["remote_port"]),
                      f["host_local"] or "-", f["host_peer"] or "-",
                      _size(f["bytes_to_guest"]), _size(f["bytes_from_guest"]),
                      _secs(f["age_ms"]), _secs(f["idle_ms"])))  # fmt: skip
    widths = [max(len(row[i]) for row in lines) for i in range(len(head))]
    out = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in lines]
    more = f" (first {len(result['rows'])} shown)" if result.get("truncated") else ""
    out.append(f"{result['total']} flows{more}")
    return "\n".join(out) + "\n"


def format_forward(entries: list[dict[str, Any]]) -> str:
    """The forwarding table for people: option, spec, what is bound."""
    out = []
    for e in entries:
        bound = _port_list(e["listening"]) if e["listening"] else "nothing"
        line = f"{e['option']} {e['spec']:<24} listening: {bound}"
        if e["failed"]:
            line += "; failed: " + ", ".join(f"{p} ({why})" for p, why in sorted(e["failed"].items()))
        out.append(line)
    return "\n".join(out) + "\n"


def _port_list(ports: list[int]) -> str:
    runs: list[str] = []
    start = prev = ports[0]
    for p in [*ports[1:], -1]:
        if p == prev + 1:
            prev = p
            continue
        runs.append(str(start) if start == prev else f"{start}-{prev}")
        start = prev = p
    return ",".join(runs)


def format_stats(result: dict[str, Any]) -> str:
    lines = [f"{result['program']}: guest {'connected' if result['guest_connected'] else 'not connected'}, "
             f"RSS {_size(result['rss_bytes'])}"]  # fmt: skip
    frames = result.get("frames")
    if frames:
        lines.append(f"frames: {frames['to_guest']} to guest ({_size(frames['to_guest_bytes'])}), "
                     f"{frames['from_guest']} from guest ({_size(frames['from_guest_bytes'])})")
    lines.append("flows: " + ", ".join(f"{name} {t['flows']}/{t['capacity']}"
                                       for name, t in result["flows"].items()))  # fmt: skip
    lines.append(f"dropped: {result['dropped']}" + "".join(f"\n  {k}: {v}" for k, v in result["drops"].items()))
    if result["events"]:
        lines.append("events:" + "".join(f"\n  {k}: {v}" for k, v in result["events"].items()))
    return "\n".join(lines) + "\n"


def format_config(result: dict[str, Any]) -> str:
    lines = [f"{result['program']} on {result['interface']}"
             + (f", tap {result['tap']}" if result["tap"] else "")
             + f", MTU {result['tap_mtu']}" + (f" (announced {result['mtu']})" if result["mtu"] else "")]
    for fam in ("ipv4", "ipv6"):
        c = result[fam]
        if c:
            lines.append(f"{fam}: {c['addr']}/{c['prefix_len']} via {c['gateway']}, "
                         f"DNS {' '.join(c['dns']) or '-'}")
    if result["search"]:
        lines.append("search: " + " ".join(result["search"]))
    seen = result["observed"]
    lines.append("observed: " + ", ".join(f"{k} {v}" for k, v in seen.items() if v) if any(seen.values())
                 else "observed: nothing yet")  # fmt: skip
    return "\n".join(lines) + "\n" + format_forward(result["forward"])


# command line ------------------------------------------------------------------
def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="pesto", description="Configure and inspect a running passt or pasta "
                                "through its control socket (-c PATH).")  # fmt: skip
    p.add_argument("path", metavar="PATH", help="the control socket (passt/pasta -c PATH)")
    p.add_argument("-d", "--debug", action="store_true", help="print requests and answers on stderr")
    p.add_argument("--version", action="version", version=f"pesto {__version__}")
    op = p.add_mutually_exclusive_group()
    op.add_argument("-s", "--show", action="store_true", help="show the forwarding table")
    op.add_argument("-A", "--add", action="store_true", help="add the -t/-u/-T/-U specs given (default)")
    op.add_argument("-D", "--delete", action="store_true", help="delete the -t/-u/-T/-U specs given")
    op.add_argument("-C", "--clear", metavar="PIF", choices=sorted(CLEAR_NAMES),
                    help="clear a table: host (-t, -u), splice (-T, -U) or one option")
    op.add_argument("--flows", action="store_true", help="list the flows")
    op.add_argument("--stats", action="store_true", help="counters, flow tables, memory")
    op.add_argument("--config", action="store_true", help="what the guest was given and what was observed")
    op.add_argument("--watch", nargs="?", type=float, const=1.0, metavar="SECONDS",
                    help="redraw the flow table every SECONDS (1)")
    for opt in ("-t", "-u", "-T", "-U"):
        p.add_argument(opt, action="append", default=[], metavar="SPEC", dest=f"spec_{opt[1]}",
                       help=f"a {opt} spec, passt(1)'s grammar")
    p.add_argument("--json", action="store_true", help="print results as JSON (for programs)")
    return p


def _specs(args: argparse.Namespace) -> list[tuple[str, str]]:
    return [(opt, spec) for opt in ("-t", "-u", "-T", "-U") for spec in getattr(args, f"spec_{opt[1]}")]


def _emit(args: argparse.Namespace, result: Any, text: str) -> None:
    sys.stdout.write(json.dumps(result, indent=2) + "\n" if args.json else text)


def run(argv: Sequence[str]) -> int:
    """pesto with `argv` (without the program name); the exit status."""
    args = _parser().parse_args(list(argv))
    specs = _specs(args)
    try:
        conn = Connection(args.path)
    except ClientError as e:
        sys.stderr.write(f"pesto: {e}\n")
        return 1
    try:
        if args.watch is not None:
            return _watch(conn, args)
        if args.flows:
            r = conn.call("flows")
            _emit(args, {"total": r["total"], "truncated": r["truncated"], "flows": flow_objects(r)},
                  format_flows(r))
        elif args.stats:
            r = conn.call("stats")
            _emit(args, r, format_stats(r))
        elif args.config:
            r = conn.call("config")
            _emit(args, r, format_config(r))
        elif args.clear:
            entries: list[dict[str, Any]] = []
            for opt in CLEAR_NAMES[args.clear]:
                entries = _merge(entries, conn.call("forward", op="clear", option=opt)["forward"])
            _emit(args, {"forward": entries}, format_forward(entries))
        elif specs and not args.show:
            op = "delete" if args.delete else "add"
            entries = []
            for opt, spec in specs:
                entries = _merge(entries, conn.call("forward", op=op, option=opt, spec=spec)["forward"])
            _emit(args, {"forward": entries}, format_forward(entries))
        else:
            r = conn.call("forward", op="list")
            _emit(args, r, format_forward(r["forward"]))
    except ClientError as e:
        sys.stderr.write(f"pesto: {e}\n")
        return 1
    finally:
        conn.close()
    return 0


def _merge(old: list[dict[str, Any]], new: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Entries by option, later ones replacing earlier ones."""
    by = {e["option"]: e for e in old}
    by.update({e["option"]: e for e in new})
    return list(by.values())


def _watch(conn: Connection, args: argparse.Namespace) -> int:
    """Redraw the flow table every args.watch seconds until Ctrl-C."""
    interval = max(0.1, float(args.watch))
    try:
        while True:
            r = conn.call("flows")
            if args.json:
                sys.stdout.write(json.dumps({"time": time.time(), "flows": flow_objects(r)}) + "\n")
            else:
                sys.stdout.write("\x1b[H\x1b[2J" + time.strftime("%H:%M:%S  ") + format_flows(r))
            sys.stdout.flush()
            time.sleep(interval)
    except KeyboardInterrupt:
        return 0


def main(argv: Sequence[str] | None = None) -> None:
    raise SystemExit(run(sys.argv[1:] if argv is None else argv))


if __name__ == "__main__":
    main()
