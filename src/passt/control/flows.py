"""Flow tables read for the `flows` command: one small adapter per protocol.

The handlers keep what the data path needs and nothing for us; the
adapters read it without changing it (no counter is added to any data path,
so a process without control clients pays nothing).  What a handler does
not keep is reported as null (see docs/control.md, "What flows shows"):

    TCP (tap)     guest/remote tuple, host socket's addresses, state bits,
                  data bytes each way (TcpConn offsets), segments each way
                  and RTT of the host socket (TCP_INFO), windows, bytes in
                  flight, age (from the handshake deadline), idle time
    TCP (splice)  both sockets' addresses, bytes and segments each way (each
                  socket's TCP_INFO), bytes waiting in the pipes
    UDP (tap)     tuple, direction, idle time; no byte counts (not kept)
    UDP (splice)  peer, listener, idle time
    ICMP          identifier, remote, idle time

Every access to TcpConn's fields is in `_tcp_static` and `_tcp_row` (TCP is being
restructured: re-pointing the adapter is one edit).  Rows are lists in
COLUMNS order, not objects: for 10,000 flows json.dumps of lists took 29 ms
here against 65 ms for objects (the answer must come within 100 ms).

Initiator of a TCP flow ("tap": the guest opened it; "host": it came
through a -t listener) is inferred from the host socket: an accepted
socket's local port is a forwarded port we listen on.  A guest connection
whose ephemeral source port happens to equal a forwarded port would be
misnamed; TcpConn keeps no flag for it.
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Callable, Iterable
from typing import Any, Final

#: Column names of a flow row (docs/control.md explains each).
COLUMNS: Final = (
    "proto", "pif", "initiator", "state",
    "guest_addr", "guest_port", "remote_addr", "remote_port",
    "host_local", "host_peer",
    "bytes_to_guest", "bytes_from_guest", "packets_to_guest", "packets_from_guest",
    "age_ms", "idle_ms",
    "wnd_from_guest", "wnd_to_guest", "unacked_to_guest", "unacked_from_guest", "rtt_us",
)  # fmt: skip
Row = list[Any]

#: struct tcp_info (linux/tcp.h): tcpi_rtt (u32 at 68), tcpi_bytes_acked, tcpi_bytes_received
#: (u64 at 120, 128), tcpi_segs_out, tcpi_segs_in (u32 at 136, 140).
_TI_LEN: Final = 144
_TI_RTT: Final = struct.Struct("=I")
_TI_BYTES: Final = struct.Struct("=QQII")
_TI_RTT_OFF: Final = 68
_TI_BYTES_OFF: Final = 120


class TcpInfo:
    """The few TCP_INFO fields we show; zeros when the socket can't tell."""

    __slots__ = ("rtt_us", "bytes_acked", "bytes_received", "segs_out", "segs_in")

    def __init__(self, sock: socket.socket) -> None:
        try:
            raw = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, _TI_LEN)
        except OSError:
            raw = b""
        if len(raw) < _TI_LEN:
            self.rtt_us = self.bytes_acked = self.bytes_received = self.segs_out = self.segs_in = 0
            return
        (self.rtt_us,) = _TI_RTT.unpack_from(raw, _TI_RTT_OFF)
        self.bytes_acked, self.bytes_received, self.segs_out, self.segs_in = _TI_BYTES.unpack_from(
            raw, _TI_BYTES_OFF)


def addr_text(af: int, packed: bytes) -> str:
    """Printable address of a packed 4- or 16-byte address."""
    return socket.inet_ntop(socket.AF_INET if af == 4 else socket.AF_INET6, packed)


def sockname(sock: socket.socket, peer: bool) -> str | None:
    """`ADDR:PORT` (IPv6 `[ADDR]:PORT`) of a socket's local or peer end; None if unknown."""
    try:
        name = sock.getpeername() if peer else sock.getsockname()
    except OSError:
        return None
    return endpoint(name)


def endpoint(name: Any) -> str | None:
    """`ADDR:PORT` of a socket address tuple; None for anything else."""
    if not isinstance(name, tuple) or len(name) < 2:
        return None
    host, port = name[0], name[1]
    if ":" in host:
        if host.startswith("::ffff:") and "." in host:
            return f"{host[7:]}:{port}"
        return f"[{host}]:{port}"
    return f"{host}:{port}"


def _ms(seconds: float) -> int:
    return int(seconds * 1000)


# TCP through the tap ------------------------------------------------------------
#: What a flow's row starts with and never changes once established (protocol,
#: initiator, addresses), kept per connection between answers.
StaticCache = dict[Any, tuple[Any, ...]]


def tcp_rows(conns: Iterable[Any], now: float, listen_ports: set[int], cache: StaticCache) -> list[Row]:
    """Rows of TcpHandler's flows (`conns`: its TcpConn objects).

    `cache` holds each established connection's unchanging columns from the
    previous answer (the socket names cost two system calls and most of the
    formatting); it is rebuilt from `conns` every time, so it never holds a
    closed connection past one answer.
    """
    rows: list[Row] = []
    fresh: StaticCache = {}
    for conn in conns:
        static = cache.get(conn)
        if static is None:
            static = _tcp_static(conn, listen_ports)
        if not static[-1]:  # names and initiator are final once past the handshake
            fresh[conn] = static
        rows.append(_tcp_row(conn, now, static))
    cache.clear()
    cache.update(fresh)
    return rows


def _tcp_static(conn: Any, listen_ports: set[int]) -> tuple[Any, ...]:
    """The unchanging columns of a TcpConn (every TcpConn field read is here or in `_tcp_row`)."""
    from passt.flows import tcp_state as t
    from passt.flows.tcp import SYN_TIMEOUT_S

    af, gaddr, gport, raddr, rport = conn.key
    sock = conn.sock
    local = sockname(sock, False)
    state = conn.state
    if state & t.SYN_SENT:
        initiator = "host"
    elif state & (t.CONNECTING | t.SYNACK_SENT):
        initiator = "tap"
    else:
        initiator = "host" if local is not None and _port_of(local) in listen_ports else "tap"
    return (initiator, addr_text(af, gaddr), gport, addr_text(af, raddr), rport, local,
            sockname(sock, True), conn.syn_deadline - SYN_TIMEOUT_S,
            bool(state & (t.CONNECTING | t.SYNACK_SENT | t.SYN_SENT)))  # fmt: skip


def _tcp_row(conn: Any, now: float, static: tuple[Any, ...]) -> Row:
    """One TcpConn's row from its static part and its live fields."""
    initiator, gaddr, gport, raddr, rport, local, peer, born, _handshake = static
    state = conn.state
    name = _STATE_NAMES.get(state)
    if name is None:
        name = _STATE_NAMES[state] = tcp_state_name(state)
    rtt, segs_out, segs_in = _tcp_info(conn.sock)
    wnd_sent = conn.wnd_sent
    sent, rcvd = conn.sent, conn.rcvd
    return [
        "tcp", "tap", initiator, name, gaddr, gport, raddr, rport, local, peer,
        sent, rcvd, segs_in, segs_out, int((now - born) * 1000), int((now - conn.last_activity) * 1000),
        conn.wnd_from_guest, wnd_sent << conn.ws_to_guest if wnd_sent >= 0 else None,
        sent - conn.acked, rcvd - conn.ack_off, rtt,
    ]  # fmt: skip


_STATE_NAMES: dict[int, str] = {}
_TI_ROW: Final = struct.Struct("=68xI64xII")


def _tcp_info(sock: socket.socket) -> tuple[int, int, int]:
    """(tcpi_rtt, tcpi_segs_out, tcpi_segs_in) of a TCP socket; zeros if it can't tell."""
    try:
        raw = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, _TI_LEN)
    except OSError:
        return 0, 0, 0
    if len(raw) < _TI_LEN:
        return 0, 0, 0
    rtt, out, inn = _TI_ROW.unpack_from(raw)
    return rtt, out, inn


def tcp_state_name(state: int) -> str:
    """TcpConn state bits as words: the handshake step, else ESTABLISHED plus closing steps."""
    from passt.flows import tcp_state as t

    if state & t.CONNECTING:
        return "CONNECTING"
    if state & t.SYNACK_SENT:
        return "SYNACK_SENT"
    if state & t.SYN_SENT:
        return "SYN_SENT"
    words = [name for bit, name in ((t.GUEST_FIN, "GUEST_FIN"), (t.GUEST_FIN_ACKED, "GUEST_FIN_ACKED"),
                                    (t.SOCK_EOF, "SOCK_EOF"), (t.FIN_SENT, "FIN_SENT"),
                                    (t.FIN_ACKED, "FIN_ACKED")) if state & bit]  # fmt: skip
    return "|".join(words) if words else "ESTABLISHED"


def _port_of(text: str) -> int:
    return int(text.rpartition(":")[2])


# TCP spliced (pasta's loopback bypass) --------------------------------------------
def splice_rows(conns: Iterable[Any], direction: str) -> list[Row]:
    """Rows of one SpliceHandler's connections; `direction` "in" (-t) or "out" (-T).

    Side 0 is the accepted socket (the initiator), side 1 the one we connected.
    For -t the initiator is on the host, the target in the namespace; -T the reverse.
    """
    rows: list[Row] = []
    for conn in conns:
        a, b = conn.socks
        ns_side, host_side = (b, a) if direction == "in" else (a, b)
        ia, ib = TcpInfo(a), TcpInfo(b)
        # guest (namespace) columns describe the namespace socket, host columns the host one
        ns_local = sockname(ns_side, False)
        ns_peer = sockname(ns_side, True)
        to_ns = ib.bytes_acked if direction == "in" else ia.bytes_received
        from_ns = ib.bytes_received if direction == "in" else ia.bytes_acked
        ns_info = ib if direction == "in" else ia
        state = "CONNECTING" if conn.connecting else (
            "|".join(f"EOF{d}" for d in (0, 1) if conn.eof[d]) or "ESTABLISHED")
        rows.append([
            "tcp", "splice", "host" if direction == "in" else "tap", state,
            *_split(ns_local), *_split(ns_peer),
            sockname(host_side, False), sockname(host_side, True),
            to_ns, from_ns, ns_info.segs_out, ns_info.segs_in,
            None, None, None, None, conn.pending[0] + conn.pending[1], None, ns_info.rtt_us,
        ])  # fmt: skip
    return rows


def _split(text: str | None) -> tuple[str | None, int | None]:
    if text is None:
        return None, None
    host, _, port = text.rpartition(":")
    return host.strip("[]"), int(port)


# UDP and ICMP ----------------------------------------------------------------------
def udp_rows(flows: Iterable[Any], now: float) -> list[Row]:
    """Rows of UdpHandler's flows (UdpFlow objects)."""
    rows: list[Row] = []
    for f in flows:
        af = f.af
        if f.inbound:
            host_local, host_peer = sockname(f.sock, False), endpoint(f.host_peer)
        else:
            host_local, host_peer = sockname(f.sock, False), sockname(f.sock, True)
        rows.append([
            "udp", "tap", "host" if f.inbound else "tap", "REPLIED" if f.replied else "OPEN",
            addr_text(af, f.guest_addr), f.guest_port, addr_text(af, f.peer_addr), f.peer_port,
            host_local, host_peer,
            None, None, None, None, None, _ms(now - f.last), None, None, None, None, None,
        ])  # fmt: skip
    return rows


def udp_splice_rows(flows: Iterable[Any], now: float, direction: str) -> list[Row]:
    """Rows of one UdpSpliceHandler (UdpSpliceFlow objects)."""
    rows: list[Row] = []
    for f in flows:
        listener = sockname(f.lsock, False)
        peer = endpoint(f.peer)
        inner = sockname(f.sock, False)
        target = sockname(f.sock, True)
        if direction == "in":  # host peer -> our listener; namespace socket -> its loopback
            ns_cols, host_cols = (*_split(inner), *_split(target)), (listener, peer)
        else:
            ns_cols, host_cols = (*_split(peer), *_split(listener)), (inner, target)
        rows.append([
            "udp", "splice", "host" if direction == "in" else "tap", "OPEN",
            *ns_cols, *host_cols,
            None, None, None, None, None, _ms(now - f.last), None, None, None, None, None,
        ])  # fmt: skip
    return rows


def icmp_rows(flows: Iterable[Any], now: float) -> list[Row]:
    """Rows of IcmpHandler's echo flows (IcmpFlow objects); the ports are echo identifiers."""
    rows: list[Row] = []
    for f in flows:
        af = f.af
        rows.append([
            "icmp" if af == 4 else "icmpv6", "tap", "tap", "OPEN",
            addr_text(af, f.guest_addr) if f.guest_addr else None, f.guest_id,
            addr_text(af, f.remote), None,
            sockname(f.sock, False), None,
            None, None, None, None, None, _ms(now - f.last), None, None, None, None, None,
        ])  # fmt: skip
    return rows


RowSource = Callable[[float], list[Row]]
