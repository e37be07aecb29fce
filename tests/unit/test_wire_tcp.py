"""wire/tcp.py against scapy: parse, build, options, truncation and bad lengths."""

from __future__ import annotations

import random
from typing import Any

import pytest
from scapy.compat import raw
from scapy.layers.inet import TCP

from passt.wire.errors import ParseError
from passt.wire.tcp import (
    ACK,
    FIN,
    PSH,
    RST,
    SYN,
    TCP_HLEN,
    build_tcp,
    parse_tcp,
    seg_len,
    syn_options,
)
from tests.unit.conftest import check_prefixes


def scapy_tcp(**kw: Any) -> bytes:
    data: bytes = raw(TCP(**kw))
    return data


def test_parse_tcp_plain_segment() -> None:
    data = scapy_tcp(sport=1234, dport=80, seq=0xFFFFFFF0, ack=7, flags="PA", window=513) + b"xyz"
    seg = parse_tcp(memoryview(data))
    assert (seg.sport, seg.dport, seg.seq, seg.ack) == (1234, 80, 0xFFFFFFF0, 7)
    assert seg.flags == PSH | ACK
    assert seg.window == 513
    assert seg.hdr_len == TCP_HLEN
    assert bytes(data[seg.hdr_len :]) == b"xyz"
    assert (seg.mss, seg.wscale) == (0, -1)


def test_parse_tcp_syn_options_mss_wscale_amid_others() -> None:
    data = scapy_tcp(
        sport=1,
        dport=2,
        flags="S",
        options=[("MSS", 1460), ("SAckOK", b""), ("Timestamp", (1, 0)), ("NOP", None), ("WScale", 7)],
    )
    seg = parse_tcp(memoryview(data))
    assert seg.flags == SYN
    assert seg.mss == 1460
    assert seg.wscale == 7
    assert seg.hdr_len == len(data)


def test_parse_tcp_wscale_clamped_to_14() -> None:
    """RFC 7323 section 2.3: a shift above 14 is used as 14."""
    data = scapy_tcp(flags="S", options=[("WScale", 20)])
    assert parse_tcp(memoryview(data)).wscale == 14


def test_parse_tcp_options_ignored_without_syn() -> None:
    data = scapy_tcp(flags="A", options=[("MSS", 1000), ("WScale", 3)])
    seg = parse_tcp(memoryview(data))
    assert (seg.mss, seg.wscale) == (0, -1)
    assert seg.hdr_len == len(data)


def test_parse_tcp_every_prefix_of_header_fails() -> None:
    data = scapy_tcp(flags="S", options=[("MSS", 1460), ("WScale", 7)])
    check_prefixes(parse_tcp, data)


def test_parse_tcp_data_offset_below_5_rejected() -> None:
    data = bytearray(scapy_tcp(flags="A"))
    data[12] = 4 << 4
    with pytest.raises(ParseError):
        parse_tcp(memoryview(bytes(data)))


def test_parse_tcp_data_offset_past_segment_rejected() -> None:
    data = bytearray(scapy_tcp(flags="A"))
    data[12] = 6 << 4
    with pytest.raises(ParseError):
        parse_tcp(memoryview(bytes(data)))


def test_parse_tcp_option_running_past_header_rejected() -> None:
    # MSS option claiming 8 bytes inside a 4-byte option area.
    data = bytearray(scapy_tcp(flags="S", options=[("MSS", 1460)]))
    data[21] = 8
    with pytest.raises(ParseError):
        parse_tcp(memoryview(bytes(data)))
    data[21] = 1  # length below 2
    with pytest.raises(ParseError):
        parse_tcp(memoryview(bytes(data)))


def test_parse_tcp_eol_stops_option_parsing() -> None:
    data = bytearray(scapy_tcp(flags="S", options=[("EOL", None), ("NOP", None), ("NOP", None), ("NOP", None)]))
    data[21:24] = b"\x02\x04\x05"  # garbage after EOL must not be read
    seg = parse_tcp(memoryview(bytes(data)))
    assert seg.mss == 0


def test_build_tcp_matches_scapy_dissection() -> None:
    buf = bytearray(64)
    n = build_tcp(
        buf,
        4,
        sport=40000,
        dport=443,
        seq=(1 << 32) + 5,
        ack=99,
        flags=SYN | ACK,
        window=29200,
        options=syn_options(1460, 7),
    )
    assert n == 28
    pkt = TCP(bytes(buf[4 : 4 + n]))
    assert (pkt.sport, pkt.dport, pkt.seq, pkt.ack, pkt.window) == (40000, 443, 5, 99, 29200)
    assert str(pkt.flags) == "SA"
    assert dict(pkt.options)["MSS"] == 1460
    assert dict(pkt.options)["WScale"] == 7
    seg = parse_tcp(memoryview(bytes(buf[4 : 4 + n])))
    assert (seg.mss, seg.wscale, seg.hdr_len) == (1460, 7, 28)


def test_syn_options_without_wscale() -> None:
    opts = syn_options(536, -1)
    assert opts == b"\x02\x04\x02\x18"


def test_seg_len_counts_syn_and_fin() -> None:
    seg = parse_tcp(memoryview(scapy_tcp(flags="SF")))
    assert seg_len(seg, 10) == 12
    seg = parse_tcp(memoryview(scapy_tcp(flags="R")))
    assert seg.flags == RST
    assert seg_len(seg, 0) == 0
    assert FIN == 1


def test_parse_tcp_random_garbage_only_raises_parse_error() -> None:
    rng = random.Random(7)
    for _ in range(3000):
        data = rng.randbytes(rng.randint(0, 80))
        if len(data) > 13 and rng.random() < 0.5:
            data = data[:13] + bytes([data[13] | SYN]) + data[14:]
        try:
            seg = parse_tcp(memoryview(data))
        except ParseError:
            continue
        assert TCP_HLEN <= seg.hdr_len <= len(data)
        assert -1 <= seg.wscale <= 14
