"""TCP header (RFC 9293 section 3.1): parse from a memoryview, build into a buffer.

Only what the translation layer uses is decoded: ports, sequence and
acknowledgment numbers, flags, window, and, on SYN segments only, the MSS
(RFC 9293 section 3.7.1) and window scale (RFC 7323 section 2) options.  SACK,
timestamps and every other option are skipped (see the man page's
LIMITATIONS); unknown options never fail a parse, but an option whose length
runs past the header does.

The checksum is not verified: guest frames may carry a partial checksum when
the tap offloads (docs/architecture.md, the path of a frame), and passt trusts its guest's
checksums as the kernel trusts a local sender.

Nothing here does I/O.
"""

from __future__ import annotations

import struct
from typing import Final, NamedTuple

from passt.wire.errors import ParseError

#: Fixed header: sport, dport, seq, ack, data offset/flags (16 bits), window, checksum, urgent.
TCP_HDR: Final = struct.Struct("!HHIIHHHH")
TCP_HLEN: Final = 20
#: Largest header: data offset 15 words.
TCP_HLEN_MAX: Final = 60
#: Offset of the checksum field inside the header (virtio csum_offset).
TCP_CSUM_OFF: Final = 16

FIN: Final = 0x01
SYN: Final = 0x02
RST: Final = 0x04
PSH: Final = 0x08
ACK: Final = 0x10
URG: Final = 0x20
ECE: Final = 0x40
CWR: Final = 0x80

OPT_EOL: Final = 0
OPT_NOP: Final = 1
OPT_MSS: Final = 2
OPT_WS: Final = 3

#: RFC 7323 section 2.3: a shift above 14 is used as 14.
WS_MAX: Final = 14

_MSS_OPT: Final = struct.Struct("!BBH")
_WS_OPT: Final = struct.Struct("!BBBB")  # NOP, kind, len, shift


class TcpSegment(NamedTuple):
    """A parsed TCP header; `mss`/`wscale` come from options on SYN segments only."""

    sport: int
    dport: int
    seq: int
    ack: int
    #: The 8 flag bits (FIN..CWR).
    flags: int
    #: Raw (unscaled) window field.
    window: int
    #: Header length in bytes (data offset * 4): the payload starts here.
    hdr_len: int
    #: MSS option value; 0 when absent or not a SYN.
    mss: int
    #: Window scale shift (clamped to 14); -1 when absent or not a SYN.
    wscale: int


def parse_tcp(l4: memoryview) -> TcpSegment:
    """Parse the TCP header at the start of `l4` (bounded by the IP length).

    Raises ParseError when the segment is shorter than 20 bytes, the data
    offset is below 5 or past the segment, or a SYN's option runs past the
    header.
    """
    if len(l4) < TCP_HLEN:
        raise ParseError("tcp_short")
    sport, dport, seq, ack, off_flags, window, _csum, _urg = TCP_HDR.unpack_from(l4, 0)
    hdr_len = (off_flags >> 12) << 2
    if hdr_len < TCP_HLEN or hdr_len > len(l4):
        raise ParseError("tcp_doff")
    flags = off_flags & 0xFF
    mss = 0
    wscale = -1
    if flags & SYN and hdr_len > TCP_HLEN:
        mss, wscale = _parse_syn_options(l4[TCP_HLEN:hdr_len])
    return TcpSegment(sport, dport, seq, ack, flags, window, hdr_len, mss, wscale)


def _parse_syn_options(opts: memoryview) -> tuple[int, int]:
    """MSS and window scale from a SYN's options (at most 40 bytes, so looping is cheap)."""
    mss = 0
    wscale = -1
    i = 0
    end = len(opts)
    while i < end:
        kind = opts[i]
        if kind == OPT_EOL:
            break
        if kind == OPT_NOP:
            i += 1
            continue
        if i + 1 >= end:
            raise ParseError("tcp_opt_len")
        length = opts[i + 1]
        if length < 2 or i + length > end:
            raise ParseError("tcp_opt_len")
        if kind == OPT_MSS and length == 4:
            mss = (opts[i + 2] << 8) | opts[i + 3]
        elif kind == OPT_WS and length == 3:
            wscale = min(opts[i + 2], WS_MAX)
        i += length
    return mss, wscale


def syn_options(mss: int, wscale: int) -> bytes:
    """Options for our SYN or SYN-ACK: MSS, then NOP + window scale unless `wscale` < 0.

    The result is a multiple of 4 bytes, as the data offset requires.
    """
    out = _MSS_OPT.pack(OPT_MSS, 4, mss)
    if wscale >= 0:
        out += _WS_OPT.pack(OPT_NOP, OPT_WS, 3, wscale)
    return out


def build_tcp(
    buf: bytearray | memoryview,
    off: int,
    *,
    sport: int,
    dport: int,
    seq: int,
    ack: int,
    flags: int,
    window: int,
    options: bytes = b"",
    csum: int = 0,
) -> int:
    """Write a TCP header (and `options`, padded to 4 bytes) at `off`; returns its length.

    The checksum field is written as `csum` (0 by default: the caller fills it
    in once the payload is in place).
    """
    pad = (-len(options)) & 3
    hdr_len = TCP_HLEN + len(options) + pad
    if hdr_len > TCP_HLEN_MAX:
        raise ValueError("tcp options too long")
    TCP_HDR.pack_into(
        buf,
        off,
        sport,
        dport,
        seq & 0xFFFFFFFF,
        ack & 0xFFFFFFFF,
        ((hdr_len >> 2) << 12) | (flags & 0xFF),
        window,
        csum,
        0,
    )
    if options:
        end = off + TCP_HLEN + len(options)
        buf[off + TCP_HLEN : end] = options
        if pad:
            buf[end : end + pad] = bytes(pad)
    return hdr_len


def seg_len(seg: TcpSegment, payload_len: int) -> int:
    """Sequence space a segment occupies: payload plus one each for SYN and FIN."""
    return payload_len + (1 if seg.flags & SYN else 0) + (1 if seg.flags & FIN else 0)
