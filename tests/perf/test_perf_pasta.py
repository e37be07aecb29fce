"""pasta throughput and latency gates against baselines measured in the same run.

Baselines first (direct = the veth/loopback ceiling, Debian's C pasta, slirp4netns), then ours on
the same paths; see conftest.py for the topology and harness/perf.py for the measurements.
Only a collapse of ours fails (conftest.gate); every number is recorded in $PASST_PERF_OUT.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest

from harness.perf import (
    NA,
    Measurement,
    ResultSet,
    RrResult,
    parse_iperf3,
    rr_serve,
    tcp_crr,
    tcp_rr,
    udp_rr,
)
from tests.perf.conftest import DIRECT_PATHS, MTUS, PATHS_AT, Bench, check_baseline, gate

CASES = [pytest.param(mtu, path, id=f"{mtu}-{path}") for mtu in MTUS for path in PATHS_AT[mtu]]


@pytest.mark.parametrize("path", DIRECT_PATHS)
def test_direct_baseline(bench: Bench, path: str) -> None:
    """The no-tool ceiling: clients in the host namespace over the veth or its loopback."""
    check_baseline(bench.measure("direct", path, None))


@pytest.mark.parametrize(("mtu", "path"), CASES)
def test_c_pasta_baseline(bench: Bench, mtu: int, path: str) -> None:
    """Debian's C pasta on the same path (n/a when not installed)."""
    check_baseline(bench.measure("c", path, mtu))


@pytest.mark.parametrize(("mtu", "path"), CASES)
def test_peer_pasta_baseline(bench: Bench, mtu: int, path: str) -> None:
    """Another pasta by path ($PASST_PERF_PEER_PASTA, say upstream's C), column "peer"."""
    if "peer" not in bench.impls:
        pytest.skip("PASST_PERF_PEER_PASTA not set")
    check_baseline(bench.measure("peer", path, mtu))


@pytest.mark.parametrize(("mtu", "path"), CASES)
def test_slirp4netns_baseline(bench: Bench, mtu: int, path: str) -> None:
    """slirp4netns on the same path (n/a for -T splice, or when not installed)."""
    check_baseline(bench.measure("slirp4netns", path, mtu))


@pytest.mark.parametrize(("mtu", "path"), CASES)
def test_pasta_gate(bench: Bench, mtu: int, path: str) -> None:
    """Our pasta does not collapse: >= MIN_RATIO of direct, every run completes, no TCP stall."""
    gate(bench, path, mtu)


# --- self-checks of the measurement helpers (loopback only, a few seconds) --------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _iperf_loopback(*args: str) -> str:
    port = _free_port()
    server = subprocess.Popen(["iperf3", "-s", "-B", "127.0.0.1", "-p", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        # a probe connection would count as iperf3's client: ask ss instead
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            ss = subprocess.run(["ss", "-Hltn", f"sport = :{port}"], capture_output=True, text=True)
            if ss.stdout.strip():
                break
            time.sleep(0.02)
        return subprocess.run(["iperf3", "-J", "-c", "127.0.0.1", "-p", str(port), *args],
                              capture_output=True, text=True, timeout=20).stdout
    finally:
        server.kill()
        server.wait()


@pytest.mark.skipif(shutil.which("iperf3") is None, reason="iperf3 not installed")
def test_parse_iperf3_reads_real_tcp_and_udp_reports() -> None:
    """The parser reads iperf3's own JSON: TCP rate, retransmits, intervals; UDP rate and loss."""
    tcp = parse_iperf3(_iperf_loopback("-t", "3", "-i", "1"))
    assert tcp.error is None
    assert tcp.bps > 1e8 and tcp.sent_bps > 1e8
    assert isinstance(tcp.retransmits, int) and tcp.lost_percent is None
    assert len(tcp.intervals_bps) >= 2 and tcp.zero_intervals == 0
    udp = parse_iperf3(_iperf_loopback("-u", "-b", "20M", "-l", "1400", "-t", "1"))
    assert udp.error is None and udp.retransmits is None
    assert udp.lost_percent is not None and 0 <= udp.lost_percent <= 100
    assert 10e6 < udp.bps < 30e6


def test_parse_iperf3_errors_and_stalls() -> None:
    """iperf3's error reports and non-JSON give an error; a full interval at 0 bit/s is a stall."""
    refused = parse_iperf3('{"start": {}, "intervals": [], "end": {},'
                           ' "error": "unable to connect to server: Connection refused"}')
    assert refused.error is not None and "refused" in refused.error and refused.bps == 0
    assert parse_iperf3("iperf3: error - bad port").error is not None
    assert parse_iperf3('{"end": ').error is not None

    def iv(secs: float, bps: float) -> dict[str, object]:
        return {"sum": {"seconds": secs, "bits_per_second": bps}}

    doc = {"intervals": [iv(1.0, 5e9), iv(1.0, 0.0), iv(1.0, 2e9), iv(0.1, 0.0)],
           "end": {"sum_sent": {"bits_per_second": 2.3e9, "retransmits": 7},
                   "sum_received": {"bits_per_second": 2.2e9}}}
    res = parse_iperf3(json.dumps(doc))
    assert res.error is None and res.bps == 2.2e9 and res.retransmits == 7
    assert res.intervals_bps == (5e9, 0.0, 2e9)  # the 0.1 s tail is not judged
    assert res.zero_intervals == 1


def test_rr_client_and_server_over_loopback() -> None:
    """TCP_RR, TCP_CRR and UDP_RR complete transactions against rr_serve; a closed port only counts errors."""
    port = _free_port()
    threading.Thread(target=rr_serve, args=(port, 5.0), daemon=True).start()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                break
        time.sleep(0.02)
    rr = tcp_rr("127.0.0.1", port, 0.5)
    assert rr.errors == 0 and rr.transactions > 100, rr
    assert 0 < rr.p50_us <= rr.p99_us and rr.tps > 200
    crr = tcp_crr("127.0.0.1", port, 0.5)
    assert crr.errors == 0 and crr.transactions > 50, crr
    assert RrResult.from_json("noise\n" + crr.to_json() + "\n") == crr
    urr = udp_rr("127.0.0.1", port, 0.5)
    assert urr.errors == 0 and urr.transactions > 100, urr
    dead = tcp_crr("127.0.0.1", _free_port(), 0.3)
    assert dead.transactions == 0 and dead.errors > 0 and "Refused" in dead.first_error


def test_result_set_report_and_charts(tmp_path: Path) -> None:
    """Results round-trip through JSON; the table shows medians, ratios to direct and n/a; PNGs are written."""
    rs = ResultSet({"kernel": "test"})
    rs.add(Measurement("direct", "tcp4_up", None, "Gbit/s", [10.0, 12.0, 8.0]))
    rs.add(Measurement("ours", "tcp4_up", 65520, "Gbit/s", [5.0, 6.0, 4.0], extras={"retr": [3, 1, 2],
                                                                                  "cpu_s_per_gb": [1.5, 2.5],
                                                                                  "cpu_user_s_per_gb": [0.5, 0.75]}))
    rs.add(Measurement("ours", "udp_rr", 65520, "trans/s", [900.0], extras={"cpu_us_per_tx": [41.0],
                                                                            "cpu_user_us_per_tx": [17.0]}))
    rs.add(Measurement("c", "udp_rr", 65520, "trans/s", [800.0], extras={"cpu_us_per_tx": [30.0]}))
    rs.add(Measurement("c", "tcp4_up", 65520, "Gbit/s", status=NA, note="not installed"))
    bad = Measurement("slirp4netns", "tcp4_up", 65520, "Gbit/s", errors=["boom"])
    bad.finish()
    rs.add(bad)
    rs.save(tmp_path)
    again = ResultSet.from_dict(json.loads((tmp_path / "results.json").read_text()))
    md = again.markdown()
    row = next(line for line in md.splitlines() if line.startswith("| tcp4_up"))
    assert "| 10.00 (8.00-12.00)" in row
    assert "5.00 (4.00-6.00) [50% of direct, retr 2, cpu s/GB 2.00]" in row
    assert "| n/a |" in row and "FAIL (boom)" in row
    cpu = md[md.index("| CPU of the tool"):].splitlines()
    # The user-space part in brackets where it was measured (an older results.json has none).
    assert "| tcp4_up | 65520 | 2.00 s/GB (user 0.62) |  |  |" in cpu, cpu
    assert "| udp_rr | 65520 | 41 us/trans (user 17) | 30 us/trans |  |" in cpu, cpu
    assert (tmp_path / "tcp4_up.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
