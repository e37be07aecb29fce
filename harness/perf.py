"""Measurement helpers for the performance gates (``nox -s perf``, tests/perf).

Theory of operation
-------------------
The gates compare implementations measured in the *same* run on the *same* machine, because on
a 2-vCPU VM the absolute numbers move by tens of percent from one run to the next (sender, tool,
receiver and softirq share two CPUs). Each implementation serves a fresh
:class:`harness.netns.Topology`; the clients are real programs:

- bulk TCP/UDP: ``iperf3 -J``; :func:`parse_iperf3` keeps the received rate, the sender's
  retransmits, the UDP loss and the per-interval rates (a 0 bit/s interval is a stall, which a
  median would hide);
- request/response latency: :func:`tcp_rr` and :func:`tcp_crr` below, a 1-byte request and a
  1-byte response over TCP, counted for N seconds (netperf's TCP_RR/TCP_CRR idea; netperf itself is
  not in Debian main). :func:`rr_serve` is the matching echo server. Both are plain Python, so the
  absolute rate includes ~10-20 us of interpreter time per transaction on each side; that cost is
  the same for every implementation, so the ratios stay meaningful, but they are not comparable
  with numbers from a C client.

They run as ``python -m harness.perf rr-server|rr-client`` inside the namespaces
(``ip netns exec``). This module must therefore import fast: matplotlib is imported only by
:func:`write_charts`.

Results
-------
Every number goes into a :class:`ResultSet`: one :class:`Measurement` per (implementation, path,
MTU), with all runs kept and the median reported. ``ResultSet.save(dir)`` writes
``results.json``, ``results.md`` (one table, a column per implementation, each cell with its
ratio to the "direct" ceiling) and one bar chart per path (``<path>.png``, matplotlib Agg).
A baseline that is not installed is recorded with status ``n/a``, not as a failure.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import selectors
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Final

RR_PAYLOAD: Final = b"x"
RR_IO_TIMEOUT_S: Final = 5.0
"""A transaction that waits longer than this is an error, not a slow sample: a stalled path must
not make the client hang past its time budget."""
RR_MAX_ERRORS: Final = 50
"""The client gives up after this many failed transactions (connect refused, timeouts)."""
MIN_INTERVAL_S: Final = 0.5
"""iperf3 intervals shorter than this (the tail of a run) are not judged for stalls."""

OK: Final = "ok"
NA: Final = "n/a"
FAIL: Final = "fail"


@dataclass(frozen=True, slots=True)
class PathInfo:
    """What one measured path is."""

    title: str
    """One line for tables and charts."""
    unit: str
    """"Gbit/s" or "trans/s"; higher is better for both."""
    tcp: bool
    """TCP bulk path: a 0 bit/s interval counts as a stall."""


PATHS: Final[dict[str, PathInfo]] = {
    "tcp4_up": PathInfo("TCP4 ns -> wan (tap, upload)", "Gbit/s", True),
    "tcp4_down": PathInfo("TCP4 wan -> ns (tap, download, iperf3 -R)", "Gbit/s", True),
    "fwd_ext": PathInfo("TCP4 wan -> host:5203 -> ns (-t, tap)", "Gbit/s", True),
    "fwd_lo": PathInfo("TCP4 host 127.0.0.1:5203 -> ns (-t, splice)", "Gbit/s", True),
    "out_lo": PathInfo("TCP4 ns -> 127.0.0.1:5202 host loopback (-T, splice)", "Gbit/s", True),
    "udp4_up": PathInfo("UDP4 ns -> wan, -b 0 -l 1400, received", "Gbit/s", False),
    "tcp_rr": PathInfo("TCP_RR 1 byte ns -> wan (tap)", "trans/s", False),
    "tcp_crr": PathInfo("TCP_CRR 1 byte ns -> wan (tap)", "trans/s", False),
    "udp_rr": PathInfo("UDP_RR 1 byte ns -> wan (tap)", "trans/s", False),
    "vm_up": PathInfo("VM guest -> wan TCP (passt, iperf3)", "Gbit/s", True),
    "vm_down": PathInfo("VM wan -> guest TCP (passt, iperf3 -R)", "Gbit/s", True),
    "relay_up": PathInfo("passt socket: relay ns -> wan TCP (iperf3)", "Gbit/s", True),
    "relay_down": PathInfo("passt socket: relay wan -> ns TCP (iperf3 -R)", "Gbit/s", True),
    "relay_rr": PathInfo("passt socket: relay TCP_RR 1 byte ns -> wan", "trans/s", False),
    "relay_crr": PathInfo("passt socket: relay TCP_CRR 1 byte ns -> wan", "trans/s", False),
}
"""Every path the gates know, in report order."""

IMPL_ORDER: Final = ("direct", "ours", "c", "peer", "slirp4netns")
"""Column order in tables and charts; "ours" is pasta or passt from this project, "c" Debian's,
"peer" another build given by path ($PASST_PERF_PEER_PASTA / $PASST_PERF_PEER_PASST)."""

IMPL_TITLES: Final = {
    "direct": "direct (no tool)",
    "ours": "ours (Python)",
    "c": "C (Debian 2023)",
    "peer": "C peer (by path)",
    "slirp4netns": "slirp4netns",
}


# --- iperf3 ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class IperfResult:
    """The parts of one ``iperf3 -J`` report that the gates use."""

    bps: float
    """Received rate, bit/s (for UDP: what arrived, not what was offered)."""
    sent_bps: float
    retransmits: int | None
    """Sender's TCP retransmits; None for UDP or when iperf3 did not report them."""
    lost_percent: float | None
    """UDP datagram loss; None for TCP."""
    intervals_bps: tuple[float, ...]
    """Per-interval sum rates (sender's view), intervals shorter than MIN_INTERVAL_S left out."""
    error: str | None = None
    """iperf3's own error text, or why the report could not be read; then the numbers are 0."""

    @property
    def zero_intervals(self) -> int:
        """How many full intervals moved no data at all (a stall)."""
        return sum(1 for b in self.intervals_bps if b <= 0.0)


def _failed(error: str) -> IperfResult:
    return IperfResult(0.0, 0.0, None, None, (), error)


def _num(d: Any, key: str) -> float:
    v = d.get(key) if isinstance(d, dict) else None
    return float(v) if isinstance(v, int | float) else 0.0


def parse_iperf3(text: str) -> IperfResult:
    """Read an ``iperf3 -J`` report (TCP or UDP, with or without -R).

    Returns a result with ``error`` set when the text is not a report or iperf3 reported an error
    (a JSON report with an "error" key, as iperf3 writes when it cannot connect).
    """
    start = text.find("{")
    if start < 0:
        return _failed(f"no JSON in iperf3 output: {text.strip()[:200]!r}")
    try:
        doc = json.loads(text[start:])
    except ValueError as e:
        return _failed(f"bad iperf3 JSON: {e}")
    if not isinstance(doc, dict):
        return _failed("iperf3 JSON is not an object")
    err = doc.get("error")
    if err:
        return _failed(str(err))
    end = doc.get("end")
    if not isinstance(end, dict):
        return _failed("iperf3 JSON has no 'end' section")
    intervals: list[float] = []
    for iv in doc.get("intervals") or []:
        s = iv.get("sum") if isinstance(iv, dict) else None
        if isinstance(s, dict) and _num(s, "seconds") >= MIN_INTERVAL_S:
            intervals.append(_num(s, "bits_per_second"))
    udp = isinstance(end.get("sum"), dict) and "lost_percent" in end["sum"]
    if udp:
        rx = end.get("sum_received") or end["sum"]
        tx = end.get("sum_sent") or end["sum"]
        lost = _num(rx, "lost_percent") if "lost_percent" in rx else _num(end["sum"], "lost_percent")
        return IperfResult(_num(rx, "bits_per_second"), _num(tx, "bits_per_second"), None, lost,
                           tuple(intervals))
    rx = end.get("sum_received")
    tx = end.get("sum_sent")
    if not isinstance(rx, dict) or not isinstance(tx, dict):
        return _failed("iperf3 JSON has no sum_received/sum_sent")
    retr = tx.get("retransmits")
    return IperfResult(_num(rx, "bits_per_second"), _num(tx, "bits_per_second"),
                       int(retr) if isinstance(retr, int) else None, None, tuple(intervals))


# --- request/response --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RrResult:
    """Outcome of one request/response run."""

    mode: str
    transactions: int
    seconds: float
    errors: int
    mean_us: float
    p50_us: float
    p99_us: float
    first_error: str = ""

    @property
    def tps(self) -> float:
        """Completed transactions per second."""
        return self.transactions / self.seconds if self.seconds > 0 else 0.0

    def to_json(self) -> str:
        d = asdict(self)
        d["tps"] = self.tps
        return json.dumps(d)

    @staticmethod
    def from_json(text: str) -> RrResult:
        """The last JSON line printed by ``rr-client``; raises ValueError if there is none."""
        for line in reversed(text.strip().splitlines()):
            if line.startswith("{"):
                d = json.loads(line)
                d.pop("tps", None)
                return RrResult(**d)
        raise ValueError(f"no rr-client result in {text.strip()[-300:]!r}")


def _summarize(mode: str, lat: list[float], elapsed: float, errors: int, first_error: str) -> RrResult:
    if lat:
        lat.sort()
        mean = sum(lat) / len(lat)
        p50 = lat[len(lat) // 2]
        p99 = lat[min(len(lat) - 1, math.ceil(len(lat) * 0.99) - 1)]
    else:
        mean = p50 = p99 = 0.0
    return RrResult(mode, len(lat), elapsed, errors, mean * 1e6, p50 * 1e6, p99 * 1e6, first_error)


def tcp_rr(host: str, port: int, seconds: float) -> RrResult:
    """TCP_RR: one connection, send 1 byte, wait for 1 byte back, repeat for ``seconds``."""
    lat: list[float] = []
    errors = 0
    first_error = ""
    clock = time.perf_counter
    start = clock()
    deadline = start + seconds
    while clock() < deadline and errors < RR_MAX_ERRORS:
        try:
            with socket.create_connection((host, port), timeout=RR_IO_TIMEOUT_S) as s:
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                send, recv = s.send, s.recv
                while True:
                    t0 = clock()
                    send(RR_PAYLOAD)
                    if not recv(1):
                        raise ConnectionResetError("server closed the connection")
                    t1 = clock()
                    lat.append(t1 - t0)
                    if t1 >= deadline:
                        break
        except OSError as e:
            errors += 1
            first_error = first_error or f"{type(e).__name__}: {e}"
    return _summarize("tcp_rr", lat, clock() - start, errors, first_error)


def tcp_crr(host: str, port: int, seconds: float) -> RrResult:
    """TCP_CRR: connect, send 1 byte, receive 1 byte, close; repeat for ``seconds``.

    The client closes first, so its side collects TIME_WAIT sockets: the namespaces get
    ``tcp_tw_reuse=1`` and a wide ephemeral port range (see tests/perf/conftest.py).
    """
    lat: list[float] = []
    errors = 0
    first_error = ""
    clock = time.perf_counter
    start = clock()
    deadline = start + seconds
    while errors < RR_MAX_ERRORS:
        t0 = clock()
        if t0 >= deadline:
            break
        try:
            s = socket.create_connection((host, port), timeout=RR_IO_TIMEOUT_S)
            try:
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                s.send(RR_PAYLOAD)
                if not s.recv(1):
                    raise ConnectionResetError("server closed the connection")
            finally:
                s.close()
            lat.append(clock() - t0)
        except OSError as e:
            errors += 1
            first_error = first_error or f"{type(e).__name__}: {e}"
    return _summarize("tcp_crr", lat, clock() - start, errors, first_error)


def udp_rr(host: str, port: int, seconds: float) -> RrResult:
    """UDP_RR: one connected UDP socket, send 1 byte, wait for 1 byte back, repeat for ``seconds``.

    A datagram lost either way is a timeout: counted as an error, and the next one is sent.
    """
    lat: list[float] = []
    errors = 0
    first_error = ""
    clock = time.perf_counter
    start = clock()
    deadline = start + seconds
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(RR_IO_TIMEOUT_S / 5)
        s.connect((host, port))
        send, recv = s.send, s.recv
        while clock() < deadline and errors < RR_MAX_ERRORS:
            t0 = clock()
            try:
                send(RR_PAYLOAD)
                recv(64)
            except OSError as e:
                errors += 1
                first_error = first_error or f"{type(e).__name__}: {e}"
                continue
            lat.append(clock() - t0)
    return _summarize("udp_rr", lat, clock() - start, errors, first_error)


def _any_address(kind: socket.SocketKind, port: int) -> tuple[socket.socket, tuple[str, int]]:
    """A socket of `kind` and the wildcard address for `port`: IPv6 dual-stack where the
    namespace has IPv6, IPv4 otherwise."""
    try:
        s = socket.socket(socket.AF_INET6, kind)
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        return s, ("::", port)
    except OSError:
        return socket.socket(socket.AF_INET, kind), ("0.0.0.0", port)


def _listen_udp(port: int) -> socket.socket:
    """A UDP echo socket on every address, dual-stack where the namespace has IPv6."""
    s, addr = _any_address(socket.SOCK_DGRAM, port)
    s.bind(addr)
    s.setblocking(False)
    return s


def _listen(port: int) -> socket.socket:
    """A listening TCP socket on every address, IPv6 dual-stack where the namespace has IPv6."""
    s, addr = _any_address(socket.SOCK_STREAM, port)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(addr)
    s.listen(1024)
    s.setblocking(False)
    return s


def rr_serve(port: int, lifetime: float) -> None:
    """Echo server for the rr clients: every byte received is sent back; exits after ``lifetime``.

    One thread and an epoll selector: with 1-byte messages the work per wake-up is one recv and
    one send, and a single thread keeps the server's cost the same for every implementation.
    """
    sel = selectors.DefaultSelector()
    lsock = _listen(port)
    sel.register(lsock, selectors.EVENT_READ, None)
    usock = _listen_udp(port)
    sel.register(usock, selectors.EVENT_READ, False)
    end = time.monotonic() + lifetime
    while True:
        left = end - time.monotonic()
        if left <= 0:
            break
        for key, _ in sel.select(min(left, 1.0)):
            sock = key.fileobj
            assert isinstance(sock, socket.socket)
            if key.data is None:
                try:
                    conn, _ = sock.accept()
                except (BlockingIOError, InterruptedError, ConnectionAbortedError):
                    continue
                conn.setblocking(False)
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                sel.register(conn, selectors.EVENT_READ, True)
                continue
            if key.data is False:  # the UDP echo: every datagram back to its sender
                try:
                    data, peer = sock.recvfrom(4096)
                    sock.sendto(data, peer)
                except OSError:
                    pass
                continue
            try:
                data = sock.recv(4096)
            except (BlockingIOError, InterruptedError):
                continue
            except OSError:
                data = b""
            if data:
                try:
                    sock.send(data)
                    continue
                except (BlockingIOError, InterruptedError):
                    continue  # 1-byte replies never fill a send buffer; dropping one is a test error
                except OSError:
                    pass
            sel.unregister(sock)
            sock.close()
    sel.close()
    lsock.close()
    usock.close()


# --- many open flows (the memory measure) -----------------------------------------------------


def _raise_nofile() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def hold_serve(port: int, lifetime: float) -> None:
    """Accept TCP connections on `port` and hold them open without reading; echo every UDP
    datagram on the same port. Exits after ``lifetime`` (its sockets close with it)."""
    _raise_nofile()
    lsock = _listen(port)
    lsock.setblocking(True)
    usock = _listen_udp(port)
    usock.setblocking(True)
    held: list[socket.socket] = []

    def accept() -> None:
        while True:
            try:
                held.append(lsock.accept()[0])
            except OSError:
                return

    def echo() -> None:
        while True:
            try:
                data, peer = usock.recvfrom(4096)
                usock.sendto(data, peer)
            except OSError:
                return

    for fn in (accept, echo):
        threading.Thread(target=fn, daemon=True).start()
    time.sleep(lifetime)


def hold_open(proto: str, host: str, port: int, lines: Iterable[str]) -> None:
    """Open and hold flows to `host`:`port`: each input line ``N`` opens flows until N are held
    (TCP: connected sockets; UDP: one socket per flow whose datagram was echoed), then prints
    ``held N errors E``. At the end of the input every socket is closed."""
    _raise_nofile()
    held: list[socket.socket] = []
    errors = 0
    for line in lines:
        want = int(line)
        while len(held) < want and errors < RR_MAX_ERRORS:
            try:
                if proto == "tcp":
                    s = socket.create_connection((host, port), timeout=RR_IO_TIMEOUT_S)
                else:
                    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                    s.settimeout(1.0)
                    s.connect((host, port))
                    s.send(RR_PAYLOAD)
                    s.recv(64)
            except OSError:
                errors += 1
                continue
            held.append(s)
        print(f"held {len(held)} errors {errors}", flush=True)
    for s in held:
        s.close()


def _descendants(pid: int) -> list[int]:
    """`pid` and every process below it (children of each of its threads, recursively)."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        for task in Path(f"/proc/{p}/task").glob("*/children"):
            try:
                todo.extend(int(c) for c in task.read_text().split())
            except OSError:
                pass
    return out


def tool_memory(pid: int) -> dict[str, int]:
    """A tool's memory in KiB: rss (VmRSS of `pid` itself), and over `pid` with all its
    descendants (our pasta's namespace helper is a child process): pss and uss (Private_Clean +
    Private_Dirty) from /proc/PID/smaps_rollup, and procs, how many. OSError if `pid` is gone."""
    fields: dict[str, int] = {}
    pss = uss = procs = 0
    for p in _descendants(pid):
        try:
            rollup = Path(f"/proc/{p}/smaps_rollup").read_text()
        except OSError:
            if p == pid:
                raise
            continue
        one = _kib_fields(rollup)
        pss += one["Pss"]
        uss += one["Private_Clean"] + one["Private_Dirty"]
        procs += 1
        if p == pid:
            fields = _kib_fields(Path(f"/proc/{pid}/status").read_text())
    return {"rss": fields["VmRSS"], "pss": pss, "uss": uss, "procs": procs}


def _kib_fields(text: str) -> dict[str, int]:
    """The ``Name:  N kB`` lines of a /proc file."""
    fields: dict[str, int] = {}
    for line in text.splitlines():
        name, _, rest = line.partition(":")
        parts = rest.split()
        if len(parts) == 2 and parts[1] == "kB":
            fields[name] = int(parts[0])
    return fields


RR_CLIENTS: Final = {"tcp_rr": tcp_rr, "tcp_crr": tcp_crr, "udp_rr": udp_rr}
"""The rr-client modes (each a path of the same name)."""


# --- results -----------------------------------------------------------------------------------


@dataclass(slots=True)
class Measurement:
    """All runs of one implementation on one path at one MTU."""

    impl: str
    """"direct", "ours", "c", "peer" or "slirp4netns" (see IMPL_TITLES)."""
    path: str
    """A key of PATHS."""
    mtu: int | None
    """The namespace/guest MTU; None where the tool sets none (direct: the veth's 1500)."""
    unit: str
    values: list[float] = field(default_factory=list)
    """One number per run, in ``unit``; failed runs are not in here (see errors)."""
    status: str = OK
    """OK, NA (not installed / no such path in this tool) or FAIL (nothing measured)."""
    note: str = ""
    """Why n/a or fail, or the first error of a run."""
    errors: list[str] = field(default_factory=list)
    extras: dict[str, list[float]] = field(default_factory=dict)
    """Side numbers per run: retr, loss_pct, cpu_pct (the tool's CPU share), cpu_us_per_tx and
    cpu_s_per_gb (its CPU time per transaction or per GB moved), cpu_user_us_per_tx and
    cpu_user_s_per_gb (the user-space part of those), p99_us, zero_intervals."""

    @property
    def median(self) -> float | None:
        return statistics.median(self.values) if self.values else None

    def add_extra(self, key: str, value: float) -> None:
        self.extras.setdefault(key, []).append(value)

    def extra_median(self, key: str) -> float | None:
        v = self.extras.get(key)
        return statistics.median(v) if v else None

    def finish(self) -> None:
        """Set the status from what was collected (call after the last run)."""
        if self.status == OK and not self.values:
            self.status = FAIL
            self.note = self.note or (self.errors[0] if self.errors else "no result")


def _run_text(argv: Sequence[str]) -> str:
    try:
        return subprocess.run(list(argv), capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def machine_info(extra: dict[str, str] | None = None) -> dict[str, str]:
    """Machine and tool versions for the report header."""
    pkgs = _run_text(["dpkg-query", "-W", "passt", "slirp4netns", "iperf3", "qemu-system-x86"])
    info = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %z"),
        "nproc": str(os.cpu_count() or 0),
        "kernel": platform.release(),
        "cpu": _cpu_model(),
        "python": platform.python_version(),
        "packages": "; ".join(" ".join(line.split()) for line in pkgs.splitlines()),
        "loadavg": _read("/proc/loadavg"),
        "congestion_control": _read("/proc/sys/net/ipv4/tcp_congestion_control"),
    }
    info.update(extra or {})
    return info


def _read(path: str) -> str:
    try:
        return Path(path).read_text().strip()
    except OSError:
        return ""


def _cpu_model() -> str:
    for line in _read("/proc/cpuinfo").splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.machine()


def _fmt(v: float | None, unit: str) -> str:
    if v is None:
        return "n/a"
    if unit == "Gbit/s":
        return f"{v:.2f}"
    return f"{v:.0f}"


class ResultSet:
    """Every measurement of one run, with the machine description; saved as JSON, markdown, PNGs."""

    def __init__(self, meta: dict[str, str] | None = None) -> None:
        self.meta: dict[str, str] = dict(meta or {})
        self._items: dict[tuple[str, str, int | None], Measurement] = {}

    def add(self, m: Measurement) -> Measurement:
        self._items[(m.impl, m.path, m.mtu)] = m
        return m

    def get(self, impl: str, path: str, mtu: int | None) -> Measurement | None:
        return self._items.get((impl, path, mtu))

    def measurements(self) -> list[Measurement]:
        return list(self._items.values())

    # serialization

    def to_dict(self) -> dict[str, Any]:
        rows = []
        for m in self._items.values():
            d = asdict(m)
            d["median"] = m.median
            rows.append(d)
        return {"meta": self.meta, "paths": {k: asdict(v) for k, v in PATHS.items()}, "results": rows}

    @staticmethod
    def from_dict(doc: dict[str, Any]) -> ResultSet:
        rs = ResultSet(doc.get("meta") or {})
        for d in doc.get("results") or []:
            d = dict(d)
            d.pop("median", None)
            rs.add(Measurement(**d))
        return rs

    def save(self, out: Path, *, charts: bool = True) -> None:
        """Write results.json and results.md to ``out`` and, if asked, one PNG per path."""
        out.mkdir(parents=True, exist_ok=True)
        tmp = out / ".results.json.tmp"
        tmp.write_text(json.dumps(self.to_dict(), indent=1) + "\n")
        os.replace(tmp, out / "results.json")
        (out / "results.md").write_text(self.markdown())
        if charts:
            write_charts(self, out)

    # report

    def columns(self) -> list[str]:
        present = {m.impl for m in self._items.values()}
        return [i for i in IMPL_ORDER if i in present] + sorted(present - set(IMPL_ORDER))

    def rows(self) -> list[tuple[str, int | None]]:
        keys = {(m.path, m.mtu) for m in self._items.values() if m.impl != "direct"}
        keys |= {(m.path, None) for m in self._items.values() if m.impl == "direct"
                 and not any(k[0] == m.path for k in keys)}
        order = list(PATHS)
        return sorted(keys, key=lambda k: (order.index(k[0]) if k[0] in order else 99,
                                           -(k[1] or 0)))

    def cell(self, impl: str, path: str, mtu: int | None) -> str:
        """One table cell: median (min-max), ratio to direct, and side numbers."""
        m = self.get(impl, path, mtu)
        if m is None and impl == "direct":
            m = self.get(impl, path, None)
        if m is None:
            return ""
        if m.status == NA:
            return "n/a"
        if m.status == FAIL:
            return f"FAIL ({m.note[:60]})" if m.note else "FAIL"
        med = m.median
        s = _fmt(med, m.unit)
        if len(m.values) > 1:
            s += f" ({_fmt(min(m.values), m.unit)}-{_fmt(max(m.values), m.unit)})"
        bits = []
        ref_impl, ref = "direct", self.get("direct", path, None)
        if ref is None and impl != "c":
            # no ceiling for a VM: compare with the C implementation instead
            ref_impl, ref = "c", self.get("c", path, mtu)
        rmed = ref.median if ref is not None and ref.status == OK else None
        if impl != ref_impl and rmed and med is not None:
            bits.append(f"{med / rmed * 100:.0f}% of {ref_impl}")
        for key, label in (("retr", "retr"), ("loss_pct", "loss %"), ("cpu_pct", "cpu %"),
                           ("cpu_us_per_tx", "cpu us/trans"), ("cpu_s_per_gb", "cpu s/GB"),
                           ("p99_us", "p99 us"), ("zero_intervals", "0-intervals")):
            v = m.extra_median(key)
            if v is not None and (key != "zero_intervals" or v > 0):
                bits.append(f"{label} {v:.2f}" if key == "cpu_s_per_gb" else f"{label} {v:.0f}")
        if m.errors:
            bits.append(f"{len(m.errors)} failed runs")
        return s + (f" [{', '.join(bits)}]" if bits else "")

    def markdown(self) -> str:
        """One table: a row per (path, MTU), a column per implementation."""
        cols = self.columns()
        head = ["path", "MTU", "unit", *[IMPL_TITLES.get(c, c) for c in cols]]
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for path, mtu in self.rows():
            info = PATHS.get(path)
            unit = info.unit if info else ""
            cells = [self.cell(c, path, mtu) for c in cols]
            title = f"{path}: {info.title}" if info else path
            lines.append("| " + " | ".join([title, str(mtu or "-"), unit, *cells]) + " |")
        return "\n".join(lines) + "\n" + self.cpu_markdown()

    def cpu_markdown(self) -> str:
        """The tool's own CPU time per unit of work (utime+stime from /proc/PID/stat), a column
        per implementation: per transaction on request/response paths, per GB moved on bulk ones,
        with the user-space part in brackets (the rest is kernel time, see `tool_cpu_split`).
        The measure that holds when cores are shared. Empty without any such number."""
        cols = [c for c in self.columns() if c != "direct"]
        lines = []
        for path, mtu in self.rows():
            cells = []
            for c in cols:
                m = self.get(c, path, mtu)
                cells.append(_cpu_cell(m) if m is not None else "")
            if any(cells):
                lines.append("| " + " | ".join([path, str(mtu or "-"), *cells]) + " |")
        if not lines:
            return ""
        head = ["CPU of the tool", "MTU", *[IMPL_TITLES.get(c, c) for c in cols]]
        return "\n" + "\n".join(["| " + " | ".join(head) + " |", "|" + "---|" * len(head), *lines]) + "\n"


def _cpu_cell(m: Measurement) -> str:
    """'282 us/trans (user 140)' or '0.52 s/GB (user 0.21)'; '' when nothing was measured."""
    tx = m.extra_median("cpu_us_per_tx")
    if tx is not None:
        user = m.extra_median("cpu_user_us_per_tx")
        return f"{tx:.0f} us/trans" + (f" (user {user:.0f})" if user is not None else "")
    gb = m.extra_median("cpu_s_per_gb")
    if gb is not None:
        user = m.extra_median("cpu_user_s_per_gb")
        return f"{gb:.2f} s/GB" + (f" (user {user:.2f})" if user is not None else "")
    return ""


def write_charts(rs: ResultSet, out: Path) -> list[Path]:
    """One bar chart per path: bars per implementation (median, whiskers min-max of the runs),
    grouped by MTU; returns the files written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written: list[Path] = []
    cols = rs.columns()
    by_path: dict[str, list[int | None]] = {}
    for path, mtu in rs.rows():
        by_path.setdefault(path, []).append(mtu)
    for path, mtus in by_path.items():
        info = PATHS.get(path)
        unit = info.unit if info else ""
        fig, ax = plt.subplots(figsize=(7.5, 3.6), dpi=100)
        width = 0.8 / max(1, len(cols))
        for ci, impl in enumerate(cols):
            xs: list[float] = []
            ys: list[float] = []
            lo: list[float] = []
            hi: list[float] = []
            labels: list[str] = []
            for gi, mtu in enumerate(mtus):
                m = rs.get(impl, path, mtu) or (rs.get(impl, path, None) if impl == "direct" else None)
                if m is None:
                    continue
                x = gi + (ci - (len(cols) - 1) / 2) * width
                med = m.median if m.status == OK else None
                xs.append(x)
                ys.append(med or 0.0)
                lo.append((med or 0.0) - min(m.values) if med is not None else 0.0)
                hi.append(max(m.values) - (med or 0.0) if med is not None else 0.0)
                labels.append(_fmt(med, unit) if m.status == OK else m.status.upper())
            if not xs:
                continue
            bars = ax.bar(xs, ys, width * 0.95, label=IMPL_TITLES.get(impl, impl),
                          yerr=[lo, hi], capsize=2, error_kw={"elinewidth": 0.8})
            for bar, text, top in zip(bars, labels, hi, strict=True):
                ax.annotate(text, (bar.get_x() + bar.get_width() / 2, bar.get_height() + top),
                            ha="center", va="bottom", fontsize=7, xytext=(0, 1),
                            textcoords="offset points")
        ax.set_xticks(range(len(mtus)))
        ax.set_xticklabels([f"MTU {m}" if m else "-" for m in mtus])
        ax.set_ylabel(unit)
        ax.set_title(f"{path}: {info.title if info else ''}", fontsize=9)
        ax.legend(fontsize=7, loc="upper right", framealpha=0.8)
        ax.margins(y=0.15)
        fig.tight_layout()
        target = out / f"{path}.png"
        fig.savefig(target)
        plt.close(fig)
        written.append(target)
    return written


def tool_cpu_split(pid: int | None) -> tuple[int, int]:
    """(utime, stime) of a process in clock ticks ((0, 0) if it is gone).

    Kept apart because the two answer different questions: the kernel time
    of a user-mode networking tool is mostly the other stacks' work that runs
    inside its system calls (a tap write runs the guest's receive path), the
    same for every implementation making the same calls; the user time is the
    implementation's own cost per frame.
    """
    if pid is None:
        return 0, 0
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0, 0
    fields = stat.rsplit(")", 1)[1].split()
    return int(fields[11]), int(fields[12])


def tool_cpu_ticks(pid: int | None) -> int:
    """utime+stime of a process in clock ticks (0 if it is gone), for the tool's CPU share."""
    user, system = tool_cpu_split(pid)
    return user + system


CLK_TCK: Final = os.sysconf("SC_CLK_TCK")


# --- command line ------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m harness.perf", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    srv = sub.add_parser("rr-server", help="1-byte echo server for the rr clients")
    srv.add_argument("--port", type=int, required=True)
    srv.add_argument("--lifetime", type=float, default=3600.0)
    cli = sub.add_parser("rr-client", help="TCP_RR / TCP_CRR / UDP_RR client; prints one JSON line")
    cli.add_argument("mode", choices=tuple(RR_CLIENTS))
    cli.add_argument("host")
    cli.add_argument("port", type=int)
    cli.add_argument("seconds", type=float)
    hsrv = sub.add_parser("hold-server", help="accept and hold TCP connections, echo UDP")
    hsrv.add_argument("--port", type=int, required=True)
    hsrv.add_argument("--lifetime", type=float, default=3600.0)
    hcli = sub.add_parser("hold-client", help="open and hold flows; stdin lines give the counts")
    hcli.add_argument("proto", choices=("tcp", "udp"))
    hcli.add_argument("host")
    hcli.add_argument("port", type=int)
    rep = sub.add_parser("report", help="re-render results.md and charts from results.json")
    rep.add_argument("dir", type=Path)
    args = p.parse_args(argv)
    if args.cmd == "rr-server":
        rr_serve(args.port, args.lifetime)
    elif args.cmd == "hold-server":
        hold_serve(args.port, args.lifetime)
    elif args.cmd == "hold-client":
        hold_open(args.proto, args.host, args.port, sys.stdin)
    elif args.cmd == "rr-client":
        print(RR_CLIENTS[args.mode](args.host, args.port, args.seconds).to_json(), flush=True)
    else:
        rs = ResultSet.from_dict(json.loads((args.dir / "results.json").read_text()))
        rs.save(args.dir)
        sys.stdout.write(rs.markdown())
    return 0


if __name__ == "__main__":
    sys.exit(main())
