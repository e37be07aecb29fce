"""The performance bench: implementations served on fresh topologies, measured in one run.

Each implementation ("direct", our pasta, Debian's C pasta, slirp4netns) serves its own
:class:`harness.netns.Topology` at one MTU, with one extra "container" namespace for the tools::

    netns WAN    iperf3 :5201, rr echo :7001 (on 10.77.1.1)
        | veth (MTU 1500)
    netns HOST   iperf3 :5202 (target of -T, splice path); the tool runs here
        | tap (pasta / slirp4netns, MTU 65520 or 1500)
    netns CNS    iperf3 :5203 (target of -t); the ns-side clients run here

"direct" has no tool and no CNS: its clients run in HOST itself, so its numbers are the veth and
loopback ceilings that the gate compares against. Only one implementation runs at a time; a
measurement is taken lazily the first time a test asks for it and then cached, so a gate always
has its same-run baseline even when run alone with ``-k``.

Everything is written to ``$PASST_PERF_OUT`` (default ``perf-results/`` at the repository root)
after every measurement: results.json, results.md, logs/ (tool output); the charts at the end.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Protocol

import pytest

from harness.netns import HOST_ADDR4, WAN_ADDR4, Topology
from harness.netns.topology import cleanup_stale
from harness.perf import (
    CLK_TCK,
    FAIL,
    NA,
    OK,
    PATHS,
    RR_IO_TIMEOUT_S,
    Measurement,
    ResultSet,
    RrResult,
    machine_info,
    parse_iperf3,
    tool_cpu_split,
)

REPO: Final = Path(__file__).resolve().parents[2]
SECONDS: Final = float(os.environ.get("PASST_PERF_SECONDS", "5"))
"""Duration of one iperf3 run."""
RUNS: Final = int(os.environ.get("PASST_PERF_RUNS", "3"))
"""Runs per measurement; the median is reported and gated."""
RR_SECONDS: Final = float(os.environ.get("PASST_PERF_RR_SECONDS", str(min(SECONDS, 3.0))))
"""Duration of one TCP_RR / TCP_CRR run."""
MIN_RATIO: Final = float(os.environ.get("PASST_PERF_MIN_RATIO", "0.02"))
"""The gate: ours below this fraction of the direct ceiling is a collapse."""
C_PEER_RATIO: Final = 0.25
"""Below MIN_RATIO of direct, ours still passes if it reaches this fraction of C pasta's median on
the same path in the same run: then the path is slow on this machine for both."""
OUT: Final = Path(os.environ.get("PASST_PERF_OUT", str(REPO / "perf-results")))

MTUS: Final = (65520, 1500)
PATHS_AT: Final[dict[int, tuple[str, ...]]] = {
    65520: ("tcp4_up", "tcp4_down", "fwd_ext", "fwd_lo", "out_lo", "udp4_up", "tcp_rr", "tcp_crr",
            "udp_rr"),
    1500: ("tcp4_up", "tcp4_down"),
}
"""At MTU 1500 only the two tap bulk directions: splice and 1-byte RR traffic do not depend on the
tap MTU, fwd_ext is the download direction of the tap again, and leaving them out keeps the whole
session near 10 minutes."""
DIRECT_PATHS: Final = PATHS_AT[65520]

WAN_IPERF: Final = 5201
HOST_IPERF: Final = 5202
NS_IPERF: Final = 5203
WAN_RR: Final = 7001
SERVER_LIFETIME_S: Final = 1800
START_TIMEOUT_S: Final = 30.0
"""How long a tool may take to configure the namespace (our pasta starts a Python interpreter)."""
PAUSE_S: Final = 0.3
"""Between runs, so the previous iperf3 session is gone from the server."""

# C pasta 2023 run as root drops to nobody and then cannot join the namespace: --runas 0.
PASTA_ARGS: Final = ("--config-net", "-f", "-q", "--runas", "0")

C_PASTA: Final = "/usr/bin/pasta"
C_PASST: Final = "/usr/bin/passt"
SLIRP: Final = "/usr/bin/slirp4netns"
PEER_PASTA: Final = os.environ.get("PASST_PERF_PEER_PASTA", "")
"""Another pasta to measure beside ours (say, a build of upstream's C), column "peer"; unset: none."""
PEER_PASST: Final = os.environ.get("PASST_PERF_PEER_PASST", "")
"""The same for passt (the relay paths)."""
PASST_START_S: Final = 20.0
"""How long passt may take to bind its socket."""


def our_program(name: str) -> str | None:
    """Our console script next to the running interpreter, or None if the project isn't installed."""
    path = Path(sys.executable).parent / name
    return str(path) if path.exists() else None


def installed(path: str) -> str | None:
    return path if os.access(path, os.X_OK) else None


def python_env() -> dict[str, str]:
    """Environment for ``python -m harness.perf`` in a namespace: the repository importable."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    return env


@dataclass(frozen=True, slots=True)
class Impl:
    """An implementation under measurement."""

    key: str
    """Result column: "direct", "ours", "c", "slirp4netns"."""
    kind: str
    """"direct", "pasta" or "slirp4netns": how it is started."""
    binary: str | None
    """None: not installed (its measurements are n/a)."""


def impls() -> dict[str, Impl]:
    return {
        "direct": Impl("direct", "direct", "-"),
        "ours": Impl("ours", "pasta", our_program("pasta")),
        "c": Impl("c", "pasta", installed(C_PASTA)),
        "slirp4netns": Impl("slirp4netns", "slirp4netns", installed(SLIRP)),
        **({"peer": Impl("peer", "pasta", installed(PEER_PASTA))} if PEER_PASTA else {}),
    }


def start_passt(topo: Topology, binary: str, sock: Path, log: Path) -> subprocess.Popen[bytes]:
    """passt in the host namespace, serving `sock`; returns once the socket exists.

    C passt started as root drops to nobody before it binds: `sock`'s directory must be
    world-writable (mode 1777).
    """
    with open(log, "wb") as logf:
        proc = topo.popen(topo.host, [binary, "-f", "-s", str(sock)], stdout=logf.fileno(),
                          stderr=subprocess.STDOUT)
    deadline = time.monotonic() + PASST_START_S
    while not sock.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise TimeoutError(f"passt did not bind {sock}: {_tail(log, 800)}")
        time.sleep(0.05)
    return proc


class Serving(Protocol):
    """What the run loops need of a served implementation (Served, or the relay's)."""

    topo: Topology
    impl: Impl
    proc: subprocess.Popen[bytes] | None

    @property
    def ns(self) -> str:
        """Where the namespace-side clients run."""
        ...

    @property
    def pid(self) -> int | None: ...

    def alive(self) -> bool: ...

    def log_tail(self) -> str: ...


class StartError(RuntimeError):
    """The tool did not configure the namespace; the message has its log tail."""


def _tail(path: Path, n: int = 1500) -> str:
    try:
        return path.read_text(errors="replace")[-n:]
    except OSError:
        return ""


def tune_for_crr(ns: str) -> None:
    """TCP_CRR opens thousands of connections a second; the closing side keeps TIME_WAIT."""
    Topology.sysctl(ns, "net.ipv4.ip_local_port_range", "10000 65535")
    Topology.sysctl(ns, "net.ipv4.tcp_tw_reuse", "1")


def serve(topo: Topology, ns: str, argv: list[str], port: int) -> None:
    """A server in `ns` (stopped with the topology), once it listens on `port`."""
    topo.popen(ns, argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=python_env())
    topo.wait_listening(ns, port)


def serve_iperf(topo: Topology, ns: str, port: int) -> None:
    serve(topo, ns, ["timeout", str(SERVER_LIFETIME_S), "iperf3", "-s", "-p", str(port),
                     "--rcv-timeout", "10000"], port)


def serve_wan(topo: Topology) -> None:
    """wan's servers: iperf3 on WAN_IPERF and the rr echo server on WAN_RR."""
    tune_for_crr(topo.wan)
    serve_iperf(topo, topo.wan, WAN_IPERF)
    serve(topo, topo.wan, [sys.executable, "-m", "harness.perf", "rr-server", "--port",
                           str(WAN_RR), "--lifetime", str(SERVER_LIFETIME_S)], WAN_RR)


class ProcServed:
    """A served tool's process and log (the parts of Serving every kind shares)."""

    proc: subprocess.Popen[bytes] | None
    log: Path

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def alive(self) -> bool:
        return self.proc is None or self.proc.poll() is None

    def log_tail(self) -> str:
        return _tail(self.log)


def measure_together(bench: Bench, ms: dict[str, Measurement], binary: str | None,
                     run: Callable[[], None], errors: tuple[type[BaseException], ...]) -> dict[str, Measurement]:  # fmt: skip
    """Measure several paths of one implementation in one set-up (`run` fills `ms`), record them.

    Not installed: all n/a. A set-up failure (`errors`) fails the paths that got no value.
    """
    if binary is None:
        for m in ms.values():
            m.status, m.note = NA, "not installed"
    else:
        bench.stop_served()
        caught: tuple[type[BaseException], ...] = (TimeoutError, OSError, subprocess.SubprocessError, *errors)
        try:
            run()
        except caught as e:
            for m in ms.values():
                if not m.values:
                    m.status, m.note = FAIL, str(e)[:2000]
    return {p: bench.record(m) for p, m in ms.items()}


class Served(ProcServed):
    """One implementation serving fresh namespaces at one MTU; a context manager."""

    def __init__(self, impl: Impl, mtu: int | None, logdir: Path) -> None:
        self.impl = impl
        self.mtu = mtu
        self.topo = Topology("perf")
        self.cns: str | None = None
        self.ns_mtu: int | None = None
        """The namespace MTU the tool really configured (checked, recorded in the results)."""
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = logdir / f"{impl.key}-{mtu or 'na'}.log"
        self._tmp = Path(tempfile.mkdtemp(prefix="pperf-"))
        logdir.mkdir(parents=True, exist_ok=True)

    @property
    def ns(self) -> str:
        """Where the namespace-side clients run."""
        return self.cns or self.topo.host

    @property
    def fwd_port(self) -> int:
        """The host port that reaches the ns server (-t); direct: the host's own server."""
        return HOST_IPERF if self.cns is None else NS_IPERF


    def __enter__(self) -> Served:
        try:
            self.topo.__enter__()
            self._start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.topo.close()
        if self.cns is not None:
            Topology.kill_all_in(self.cns)
            subprocess.run(["ip", "netns", "del", self.cns], capture_output=True, check=False)
            self.cns = None
        shutil.rmtree(self._tmp, ignore_errors=True)

    def _start(self) -> None:
        t = self.topo
        tune_for_crr(t.host)
        serve_wan(t)
        serve_iperf(t, t.host, HOST_IPERF)
        if self.impl.kind == "direct":
            return
        assert self.impl.binary is not None
        self.cns = t.host[: -len("-h")] + "-c"
        subprocess.run(["ip", "netns", "add", self.cns], check=True, capture_output=True)
        subprocess.run(["ip", "-n", self.cns, "link", "set", "lo", "up"], check=True)
        tune_for_crr(self.cns)
        serve_iperf(t, self.cns, NS_IPERF)
        mtu = self.mtu or 65520
        with open(self.log, "wb") as logf:
            if self.impl.kind == "pasta":
                argv = [self.impl.binary, *PASTA_ARGS]
                if mtu != 65520:
                    argv += ["-m", str(mtu)]
                argv += ["--netns", f"/run/netns/{self.cns}", "-t", str(NS_IPERF), "-T",
                         str(HOST_IPERF), "-u", "none", "-U", "none"]
            else:
                api = self._tmp / "slirp.sock"
                argv = [self.impl.binary, "--configure", f"--mtu={mtu}", "--disable-host-loopback",
                        "--enable-ipv6", "--api-socket", str(api), "--netns-type=path",
                        f"/run/netns/{self.cns}", "tap0"]
            logf.write((" ".join(argv) + "\n").encode())
            logf.flush()
            self.proc = t.popen(t.host, argv, stdout=logf.fileno(), stderr=subprocess.STDOUT)
        self._wait_configured()
        self.ns_mtu = self._ns_mtu()
        with open(self.log, "a") as logf:
            logf.write(f"[perf harness] namespace MTU {self.ns_mtu}\n")
        if self.impl.kind == "slirp4netns":
            self._slirp_hostfwd(self._tmp / "slirp.sock", NS_IPERF)
        else:
            t.wait_listening(t.host, NS_IPERF, timeout=START_TIMEOUT_S)
            try:  # -T: the tool listens in the namespace; a missing one fails out_lo only
                t.wait_listening(self.cns, HOST_IPERF, timeout=5)
            except TimeoutError as e:
                with open(self.log, "a") as logf:
                    logf.write(f"[perf harness] {e}\n")

    def _wait_configured(self) -> None:
        """Wait for the tool's default route in the namespace (the end of its configuration)."""
        assert self.cns is not None
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if not self.alive():
                raise StartError(f"{self.impl.key} exited with {self.proc.returncode if self.proc else '?'}:\n"
                                 f"{self.log_tail()}")
            out = self.topo.run(self.cns, ["ip", "-4", "route", "show", "default"]).stdout
            if out.strip():
                return
            time.sleep(0.05)
        raise StartError(f"{self.impl.key}: no default route in the namespace after "
                         f"{START_TIMEOUT_S:.0f} s:\n{self.log_tail()}")

    def _ns_mtu(self) -> int | None:
        """The MTU the tool really gave the namespace's default-route device (None if unknown)."""
        assert self.cns is not None
        route = self.topo.run(self.cns, ["ip", "-4", "route", "show", "default"]).stdout.split()
        if "dev" not in route or route.index("dev") + 1 >= len(route):
            return None
        dev = route[route.index("dev") + 1]
        link = subprocess.run(["ip", "-n", self.cns, "-o", "link", "show", "dev", dev],
                              capture_output=True, text=True, check=False).stdout.split()
        if "mtu" in link and link.index("mtu") + 1 < len(link):
            with contextlib.suppress(ValueError):
                return int(link[link.index("mtu") + 1])
        return None

    def _slirp_hostfwd(self, api: Path, port: int) -> None:
        """Forward host 0.0.0.0:port to the guest through slirp4netns' API socket."""
        deadline = time.monotonic() + 10
        while not api.exists():
            if time.monotonic() > deadline:
                raise StartError(f"slirp4netns API socket never appeared:\n{self.log_tail()}")
            time.sleep(0.05)
        req = {"execute": "add_hostfwd", "arguments": {
            "proto": "tcp", "host_addr": "0.0.0.0", "host_port": port, "guest_port": port}}
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(5)
            s.connect(str(api))
            s.sendall(json.dumps(req).encode())
            s.shutdown(socket.SHUT_WR)
            reply = s.recv(4096).decode(errors="replace")
        if "error" in reply:
            raise StartError(f"slirp4netns add_hostfwd: {reply}")
        self.topo.wait_listening(self.topo.host, port)


class Bench:
    """Lazily measured, cached results of every (implementation, path, MTU) in this session."""

    def __init__(self, out: Path) -> None:
        self.out = out
        self.impls = impls()
        self.results = ResultSet(machine_info({
            "seconds": f"{SECONDS:g}", "runs": str(RUNS), "rr_seconds": f"{RR_SECONDS:g}",
            "min_ratio": f"{MIN_RATIO:g}",
            "ours_pasta": self.impls["ours"].binary or "not installed",
        }))
        self._served: Served | None = None
        self._start_failed: dict[tuple[str, int | None], str] = {}

    def close(self) -> None:
        self._stop()
        self.results.meta["loadavg_end"] = Path("/proc/loadavg").read_text().strip()
        self.results.save(self.out, charts=True)

    def save(self) -> None:
        self.results.save(self.out, charts=False)

    # instances

    def stop_served(self) -> None:
        """Stop the running implementation (before a measurement that needs the CPUs itself)."""
        self._stop()

    def _stop(self) -> None:
        if self._served is not None:
            self._served.close()
            self._served = None

    def _serve(self, impl: Impl, mtu: int | None) -> Served:
        cur = self._served
        if cur is not None and cur.impl.key == impl.key and cur.mtu == mtu and cur.alive():
            return cur
        self._stop()
        key = (impl.key, mtu)
        if key in self._start_failed:
            raise StartError(self._start_failed[key])
        try:
            served = Served(impl, mtu, self.out / "logs")
            served.__enter__()
        except (StartError, subprocess.SubprocessError, TimeoutError, OSError) as e:
            self._start_failed[key] = f"start failed: {e}"
            raise StartError(self._start_failed[key]) from e
        self._served = served
        return served

    # measurements

    def measure(self, impl_key: str, path: str, mtu: int | None) -> Measurement:
        """The measurement, taken now if this session has not taken it yet."""
        if impl_key == "direct":
            mtu = None
        got = self.results.get(impl_key, path, mtu)
        if got is not None:
            return got
        impl = self.impls[impl_key]
        m = Measurement(impl_key, path, mtu, PATHS[path].unit)
        if impl_key == "direct" and path == "out_lo":
            # without a tool, "ns -> host loopback" is the very command of fwd_lo: reuse it
            same = self.measure("direct", "fwd_lo", None)
            m.values, m.extras, m.errors = list(same.values), dict(same.extras), list(same.errors)
            m.status, m.note = same.status, same.note or "same measurement as fwd_lo"
            return self.record(m)
        if impl.binary is None:
            m.status, m.note = NA, "not installed"
        elif impl.kind == "slirp4netns" and path == "out_lo":
            m.status, m.note = NA, "slirp4netns has no -T / host loopback splice"
        else:
            try:
                served = self._serve(impl, mtu)
                if served.ns_mtu is not None:
                    self.results.meta[f"ns_mtu_{impl_key}_{mtu}"] = str(served.ns_mtu)
                self._measure(served, m)
            except StartError as e:
                m.status, m.note = FAIL, str(e)
        return self.record(m)

    def record(self, m: Measurement) -> Measurement:
        """Keep a finished measurement (also ones taken outside this class) and save at once."""
        m.finish()
        self.results.add(m)
        self.save()
        print(f"\n[perf] {m.impl:12} {m.path:10} mtu={m.mtu}: "
              f"{self.results.cell(m.impl, m.path, m.mtu)}", flush=True)
        return m

    def _measure(self, s: Served, m: Measurement) -> None:
        t = s.topo
        p = m.path
        ns_args: dict[str, tuple[str, list[str]]] = {
            "tcp4_up": (s.ns, ["-c", WAN_ADDR4, "-p", str(WAN_IPERF)]),
            "tcp4_down": (s.ns, ["-c", WAN_ADDR4, "-p", str(WAN_IPERF), "-R"]),
            "fwd_ext": (t.wan, ["-c", HOST_ADDR4, "-B", WAN_ADDR4, "-p", str(s.fwd_port)]),
            "fwd_lo": (t.host, ["-c", "127.0.0.1", "-p", str(s.fwd_port)]),
            "out_lo": (s.ns, ["-c", "127.0.0.1", "-p", str(HOST_IPERF)]),
            "udp4_up": (s.ns, ["-c", WAN_ADDR4, "-p", str(WAN_IPERF), "-u", "-b", "0",
                               "-l", "1400"]),
        }
        if p in ns_args:
            ns, args = ns_args[p]
            self.run_iperf(s, m, ns, args)
        elif p in ("tcp_rr", "tcp_crr", "udp_rr"):
            self.run_rr(s, m, p, WAN_ADDR4, WAN_RR)
        else:
            raise AssertionError(f"unknown path {p}")

    def _check_alive(self, s: Serving, m: Measurement) -> bool:
        if s.alive():
            return True
        m.errors.append(f"{s.impl.key} exited with {s.proc.returncode if s.proc else '?'}: "
                        f"{s.log_tail()[-300:]}")
        return False

    def run_iperf(self, s: Serving, m: Measurement, ns: str, args: list[str]) -> None:
        """RUNS iperf3 runs from `ns` into `m`, with the tool's CPU share and CPU time per GB."""
        argv = ["iperf3", "-J", "-t", f"{SECONDS:g}", "--connect-timeout", "3000", *args]
        for _ in range(RUNS):
            if not self._check_alive(s, m):
                break
            (u0, k0), t0 = tool_cpu_split(s.pid), time.monotonic()
            try:
                out = s.topo.run(ns, argv, timeout=SECONDS + 20).stdout
            except subprocess.TimeoutExpired:
                m.errors.append(f"iperf3 did not finish within {SECONDS + 20:g} s")
                continue
            (u1, k1), t1 = tool_cpu_split(s.pid), time.monotonic()
            c0, c1 = u0 + k0, u1 + k1
            res = parse_iperf3(out)
            if res.error is not None:
                m.errors.append(res.error)
            else:
                m.values.append(res.bps / 1e9)
                if res.retransmits is not None:
                    m.add_extra("retr", res.retransmits)
                if res.lost_percent is not None:
                    m.add_extra("loss_pct", res.lost_percent)
                if PATHS[m.path].tcp:
                    m.add_extra("zero_intervals", res.zero_intervals)
            if s.pid is not None:
                m.add_extra("cpu_pct", (c1 - c0) / CLK_TCK / (t1 - t0) * 100)
                if res.error is None and res.bps > 0:
                    gb = res.bps * SECONDS / 8e9
                    m.add_extra("cpu_s_per_gb", (c1 - c0) / CLK_TCK / gb)
                    m.add_extra("cpu_user_s_per_gb", (u1 - u0) / CLK_TCK / gb)
            time.sleep(PAUSE_S)

    def run_rr(self, s: Serving, m: Measurement, mode: str, host: str, port: int) -> None:
        """RUNS rr-client runs from `s.ns` into `m`, with the tool's CPU time per transaction."""
        argv = [sys.executable, "-m", "harness.perf", "rr-client", mode, host, str(port),
                f"{RR_SECONDS:g}"]
        budget = RR_SECONDS + RR_IO_TIMEOUT_S * 2 + 15
        for _ in range(RUNS):
            if not self._check_alive(s, m):
                break
            (u0, k0), t0 = tool_cpu_split(s.pid), time.monotonic()
            try:
                res = s.topo.run(s.ns, argv, timeout=budget, env=python_env())
            except subprocess.TimeoutExpired:
                m.errors.append(f"rr-client did not finish within {budget:g} s")
                continue
            (u1, k1), t1 = tool_cpu_split(s.pid), time.monotonic()
            c0, c1 = u0 + k0, u1 + k1
            try:
                rr = RrResult.from_json(res.stdout)
            except ValueError as e:
                m.errors.append(f"{e} {res.stderr[-300:]}")
                continue
            if rr.transactions == 0:
                m.errors.append(f"no transaction completed: {rr.first_error}")
                continue
            m.values.append(rr.tps)
            m.add_extra("p99_us", rr.p99_us)
            if rr.errors:
                m.add_extra("rr_errors", rr.errors)
            if s.pid is not None:
                m.add_extra("cpu_pct", (c1 - c0) / CLK_TCK / (t1 - t0) * 100)
                m.add_extra("cpu_us_per_tx", (c1 - c0) / CLK_TCK * 1e6 / rr.transactions)
                m.add_extra("cpu_user_us_per_tx", (u1 - u0) / CLK_TCK * 1e6 / rr.transactions)
            time.sleep(PAUSE_S)


def gate(bench: Bench, path: str, mtu: int) -> None:
    """Fail only on a collapse of ours relative to the same-run direct ceiling.

    A collapse is: no result at all, a failed run, (TCP bulk paths) an iperf3 interval that moved
    nothing, or a median below MIN_RATIO of direct, unless ours reaches C_PEER_RATIO of C pasta's
    median in this run (then both are slow on this machine). Everything else is only recorded.
    """
    ours = bench.measure("ours", path, mtu)
    direct = bench.measure("direct", path, None)
    assert ours.status != NA, "our pasta is not installed (pip install -e .)"
    assert ours.status == OK, f"ours failed on {path} at MTU {mtu}: {ours.note}"
    assert not ours.errors, f"ours: {len(ours.errors)} of {RUNS} runs failed: {ours.errors[0]}"
    if PATHS[path].tcp:
        zeros = sum(ours.extras.get("zero_intervals", []))
        assert zeros == 0, f"ours stalled on {path}: {zeros:g} iperf3 intervals at 0 bit/s"
    if direct.status != OK or not direct.median:
        pytest.fail(f"no direct baseline for {path}: {direct.note}")
    assert ours.median is not None
    ratio = ours.median / direct.median
    if ratio >= MIN_RATIO:
        return
    c = bench.measure("c", path, mtu)
    if c.status == OK and c.median and ours.median >= C_PEER_RATIO * c.median:
        # the C implementation is just as low in this run: a property of the machine
        # (bench README finding 1: tap upload stalls here), not a collapse of ours
        print(f"\n[perf] {path} MTU {mtu}: ours {ratio * 100:.1f}% of direct, but C pasta is "
              f"as low ({c.median:.3g} {c.unit}); not a collapse", flush=True)
        return
    pytest.fail(
        f"ours collapsed on {path} at MTU {mtu}: {ours.median:.3g} {ours.unit} is "
        f"{ratio * 100:.1f}% of direct ({direct.median:.3g}); the gate is {MIN_RATIO * 100:g}%")


def passt_gate(ours: Measurement, c: Measurement) -> None:
    """Our passt does not collapse: every run completes, no 0 bit/s interval on a TCP bulk
    path, at least MIN_RATIO of C passt's median in the same run (a VM has no "direct")."""
    path = ours.path
    assert ours.status != NA, "our passt is not installed (pip install -e .)"
    assert ours.status == OK, f"ours failed on {path}: {ours.note}"
    assert not ours.errors, f"ours: {len(ours.errors)} of {RUNS} runs failed: {ours.errors[0]}"
    zeros = sum(ours.extras.get("zero_intervals", []))
    assert zeros == 0, f"ours stalled on {path}: {zeros:g} iperf3 intervals at 0 bit/s"
    if c.status == OK and c.median and ours.median is not None:
        ratio = ours.median / c.median
        assert ratio >= MIN_RATIO, (
            f"ours collapsed on {path}: {ours.median:.3g} {ours.unit} is {ratio * 100:.1f}% of "
            f"C passt ({c.median:.3g}); the gate is {MIN_RATIO * 100:g}%")


def check_baseline(m: Measurement) -> None:
    """A baseline that is installed must produce a number: otherwise the harness is broken."""
    if m.status == NA:
        pytest.skip(f"{m.impl} {m.path}: n/a ({m.note})")
    assert m.status == OK, f"baseline {m.impl} failed on {m.path}: {m.note}"


# --- pytest wiring -----------------------------------------------------------------------------


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.perf)


@pytest.fixture(scope="session")
def bench() -> Iterator[Bench]:
    if os.geteuid() != 0:
        pytest.skip("perf gates need root (namespaces, tap devices)")
    if shutil.which("iperf3") is None:
        pytest.skip("iperf3 not installed")
    cleanup_stale()
    b = Bench(OUT)
    try:
        yield b
    finally:
        with contextlib.suppress(OSError):
            b.close()
        print(f"\n[perf] results in {OUT}/results.md, results.json and *.png", flush=True)
