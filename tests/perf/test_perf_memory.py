"""Memory of a pasta at idle and with many open flows, ours beside the C ones.

Each implementation serves a fresh topology (conftest.Served); a hold-server in WAN accepts and
holds TCP connections and echoes UDP, and a hold-client in the container namespace opens FEW
flows, then FLOWS, through the tool. After every step, once the tool's RSS has settled, VmRSS,
PSS and USS (/proc/PID/smaps_rollup, summed over the tool and its children: our pasta has a
namespace helper process) are read: idle, after 256 MiB up and 256 MiB down (iperf3,
buffers allocated on first use stay), then with the flows. Per-flow bytes are the growth from FEW to FLOWS
flows, so buffers a tool allocates on its first flow are not charged to every flow.

Collapse-only gate on ours: idle RSS under IDLE_MAX_KIB, the bulk moved and RSS after it under
AFTER_BULK_MAX_KIB, every flow opened, per-flow RSS under
PER_FLOW_MAX_B. The C peers are only recorded. Numbers go to $PASST_PERF_OUT/memory.json.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Final

import pytest

from harness.netns import WAN_ADDR4
from harness.netns.topology import cleanup_stale
from harness.perf import tool_memory
from tests.perf.conftest import OUT, WAN_IPERF, Served, StartError, impls, python_env

FLOWS: Final = int(os.environ.get("PASST_PERF_FLOWS", "10000"))
FEW: Final = 100
HOLD_PORT: Final = 7100
IDLE_MAX_KIB: Final = 150 * 1024
"""Ours idle: ~38 MiB measured; a multiple of that is a collapse (say scapy or a huge buffer)."""
PER_FLOW_MAX_B: Final = 64 * 1024
"""Ours per open flow: a few KiB measured; 64 KiB a flow would be a buffer per flow."""
AFTER_BULK_MAX_KIB: Final = 300 * 1024
"""Ours after 2 x BULK: ~38 MiB measured (pages of the lazy rings that frames touched stay)."""
BULK: Final = "256M"
BULK_TIMEOUT_S: Final = 60.0
STEP_TIMEOUT_S: Final = 180.0
SETTLE_S: Final = 3.0


def settled(pid: int) -> dict[str, int]:
    """The tool's memory once its RSS stopped moving (three equal reads 0.1 s apart, at most
    SETTLE_S): a program finishing its start or its last flow is still allocating."""
    last, same = tool_memory(pid), 0
    deadline = time.monotonic() + SETTLE_S
    while same < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
        cur = tool_memory(pid)
        same = same + 1 if cur["rss"] == last["rss"] else 0
        last = cur
    return last


def hold(cli: subprocess.Popen[bytes], n: int) -> tuple[int, int]:
    """Ask the hold-client for `n` flows; (held, errors) from its answer."""
    assert cli.stdin is not None and cli.stdout is not None
    cli.stdin.write(f"{n}\n".encode())
    cli.stdin.flush()
    ready, _, _ = select.select([cli.stdout], [], [], STEP_TIMEOUT_S)
    line = cli.stdout.readline().decode() if ready else ""
    parts = line.split()
    if len(parts) != 4 or parts[0] != "held":
        raise TimeoutError(f"hold-client gave no answer for {n} flows: {line!r}")
    return int(parts[1]), int(parts[3])


def measure(key: str) -> dict[str, object]:
    """Idle and per-flow memory of one implementation (a fresh topology, closed on any exit)."""
    impl = impls()[key]
    if impl.binary is None:
        return {"impl": key, "note": "not installed"}
    row: dict[str, object] = {"impl": key, "binary": impl.binary}
    with Served(impl, 65520, OUT / "logs") as s:
        assert s.pid is not None
        row["idle"] = settled(s.pid)
        t = s.topo
        # buffers a tool allocates on its first bulk flow stay: "after" is idle again after one.
        # iperf3 takes one end condition: -n, bounded by the run's timeout (a C pasta's tap
        # upload may stall on this machine, bench README finding 1).
        for extra in ([], ["-R"]):
            what = f"iperf3 -n {BULK} {' '.join(extra) or 'up'}"
            try:
                done = t.run(s.ns, ["iperf3", "-c", WAN_ADDR4, "-p", str(WAN_IPERF), "-n", BULK,
                                    "--connect-timeout", "3000", *extra], timeout=BULK_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                row["bulk_note"] = f"{what} did not finish in {BULK_TIMEOUT_S:.0f} s"
                continue
            if done.returncode != 0:
                row["bulk_note"] = f"{what} failed: {(done.stderr + done.stdout).strip()[:200]}"
        row["after_bulk"] = settled(s.pid)
        t.popen(t.wan, [sys.executable, "-m", "harness.perf", "hold-server", "--port", str(HOLD_PORT),
                        "--lifetime", "900"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                env=python_env())
        t.wait_listening(t.wan, HOLD_PORT)
        for proto in ("tcp", "udp"):
            cli = t.popen(s.ns, [sys.executable, "-m", "harness.perf", "hold-client", proto, WAN_ADDR4,
                                 str(HOLD_PORT)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                          stderr=subprocess.DEVNULL, env=python_env())
            try:
                held_few, _ = hold(cli, FEW)
                few = settled(s.pid)
                held, errors = hold(cli, FLOWS)
                many = settled(s.pid)
            finally:
                with contextlib.suppress(OSError):
                    assert cli.stdin is not None
                    cli.stdin.close()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    cli.wait(timeout=30)
            flows = max(1, held - held_few)
            row[proto] = {"few": few, "many": many, "held": held, "errors": errors,
                          "per_flow_b": {k: (many[k] - few[k]) * 1024 // flows for k in ("rss", "pss", "uss")}}
            if not s.alive():
                row["note"] = f"exited with {s.proc.returncode if s.proc else '?'} during {proto}"
                break
    return row


def report(row: dict[str, object]) -> str:
    """One line per implementation for the session's output."""
    if "idle" not in row:
        return f"[perf] memory {row['impl']:6} {row.get('note', '')}"
    idle = row["idle"]
    assert isinstance(idle, dict)
    bits = [f"[perf] memory {row['impl']:6} idle rss {idle['rss'] / 1024:.1f} pss {idle['pss'] / 1024:.1f} "
            f"uss {idle['uss'] / 1024:.1f} MiB ({idle['procs']} processes)"]
    after = row.get("after_bulk")
    if isinstance(after, dict):
        bits.append(f"after 2 x {BULK} bulk rss {after['rss'] / 1024:.1f} uss {after['uss'] / 1024:.1f} MiB"
                    + (f" ({row['bulk_note']})" if "bulk_note" in row else ""))
    for proto in ("tcp", "udp"):
        got = row.get(proto)
        if isinstance(got, dict):
            pf, many = got["per_flow_b"], got["many"]
            bits.append(f"{proto} {got['held']} held ({got['errors']} errors): rss {many['rss'] / 1024:.1f} MiB, "
                        f"per flow rss {pf['rss']} uss {pf['uss']} B")
    if "note" in row:
        bits.append(str(row["note"]))
    return "; ".join(bits)


@pytest.fixture(scope="module")
def memory_rows() -> Iterator[dict[str, dict[str, object]]]:
    if os.geteuid() != 0:
        pytest.skip("the memory measure needs root (namespaces, tap devices)")
    cleanup_stale()
    rows: dict[str, dict[str, object]] = {}
    yield rows
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "memory.json").write_text(json.dumps(rows, indent=1) + "\n")


def _row(rows: dict[str, dict[str, object]], key: str) -> dict[str, object]:
    if key not in rows:
        try:
            rows[key] = measure(key)
        except (StartError, TimeoutError, OSError, subprocess.SubprocessError) as e:
            rows[key] = {"impl": key, "note": f"failed: {str(e)[:500]}"}
        print("\n" + report(rows[key]), flush=True)
    return rows[key]


@pytest.mark.parametrize("key", ["c", "peer"])
def test_memory_c_baseline(memory_rows: dict[str, dict[str, object]], key: str) -> None:
    """Debian's C pasta and the peer ($PASST_PERF_PEER_PASTA): recorded, never gated."""
    if key not in impls():
        pytest.skip("PASST_PERF_PEER_PASTA not set")
    row = _row(memory_rows, key)
    if "idle" not in row:
        pytest.skip(str(row.get("note")))


def test_memory_ours_rss_and_per_flow(memory_rows: dict[str, dict[str, object]]) -> None:
    """Ours: idle RSS under IDLE_MAX_KIB; 2 x BULK moved and RSS after it under
    AFTER_BULK_MAX_KIB; FLOWS TCP and FLOWS UDP flows held, each under PER_FLOW_MAX_B of RSS."""
    row = _row(memory_rows, "ours")
    assert "idle" in row, f"ours: {row.get('note')}"
    idle = row["idle"]
    assert isinstance(idle, dict)
    assert idle["rss"] < IDLE_MAX_KIB, f"ours idle RSS {idle['rss']} KiB >= {IDLE_MAX_KIB}"
    assert "bulk_note" not in row, f"ours: {row['bulk_note']}"
    after = row["after_bulk"]
    assert isinstance(after, dict)
    assert after["rss"] < AFTER_BULK_MAX_KIB, f"ours RSS after bulk {after['rss']} KiB >= {AFTER_BULK_MAX_KIB}"
    assert "note" not in row, row["note"]
    for proto in ("tcp", "udp"):
        got = row[proto]
        assert isinstance(got, dict)
        assert got["held"] == FLOWS, f"ours held {got['held']} of {FLOWS} {proto} flows"
        per = got["per_flow_b"]["rss"]
        assert per < PER_FLOW_MAX_B, f"ours: {per} B of RSS per {proto} flow >= {PER_FLOW_MAX_B}"


def test_memory_helpers_over_loopback(tmp_path: Path) -> None:
    """tool_memory reads this process; hold-server/hold-client hold TCP and UDP flows on loopback."""
    me = tool_memory(os.getpid())
    assert 0 < me["uss"] <= me["rss"] and 0 < me["pss"] <= me["rss"] and me["procs"] == 1
    port = HOLD_PORT + 1
    env = python_env()
    srv = subprocess.Popen([sys.executable, "-m", "harness.perf", "hold-server", "--port", str(port),
                            "--lifetime", "30"], env=env, start_new_session=True)
    try:
        deadline = time.monotonic() + 10
        for proto in ("tcp", "udp"):
            while True:  # readiness: the first flow of each kind is retried until the server is up
                cli = subprocess.Popen([sys.executable, "-m", "harness.perf", "hold-client", proto,
                                        "127.0.0.1", str(port)], stdin=subprocess.PIPE,
                                       stdout=subprocess.PIPE, env=env)
                out, _ = cli.communicate(b"5\n20\n", timeout=30)
                if out.split() == [b"held", b"5", b"errors", b"0", b"held", b"20", b"errors", b"0"]:
                    break
                assert time.monotonic() < deadline, f"{proto}: {out!r}"
    finally:
        srv.kill()
        srv.wait()
