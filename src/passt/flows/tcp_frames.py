"""Pre-cooked TCP frames towards the guest: per-flow header templates and a frame ring.

Every frame a flow sends the guest shares Ethernet addresses, IP addresses,
ports and most IP fields; only lengths, sequence/ack numbers, flags, window
and checksums change.  A `FrameTemplate` holds those constant bytes once per
flow (passt's pre-cooked headers) plus the partial sums of the constant IPv4
header words and of the TCP pseudo-header, so filling a frame is one slice
copy, three `pack_into` calls and (without offload) one checksum over the
segment.  The Ethernet and IP part and its sums depend on the addresses
only: they are kept per address pair (up to ADDR_PARTS_MAX pairs), so a
new flow's template is one concatenation with its ports:

    slot: | eth 14 | ip 20/40 | tcp 20 | payload ... (peeked in place) |
           \\___________ template ________/ \\__ recv(MSG_PEEK) writes here

The `FrameRing` is one preallocated bytearray cut into equal slots.  Data
segments are peeked straight into a slot's payload area and queued to the tap
as memoryviews, with no copy.  The tap keeps references until its flush, which
the loop runs as deferred work at the end of the turn; the ring is rewound by
a deferred callback queued *after* the flush, so a slot is never rewritten
while queued.  When the ring runs out inside one turn, the flow waits for the
next turn.  Bounds: `RING_BYTES` of memory (8 MiB), at most `RING_SLOTS_MAX`
slots (1024, also IOV_MAX for the scatter `recvmsg_into`), at least
`RING_SLOTS_MIN`.

Control frames (SYN, pure ACK, FIN, RST) carry options sometimes and are
built into fresh small bytearrays: they own their memory, so the ring's
lifetime rule does not apply.  Short flows are mostly control frames (a
TCP_CRR transaction sends two or three), so the template also keeps the
sum of the TCP header's constant words with the pseudo-header
(`ctl_sum`): a control frame is one copy, two or three `pack_into` and a few
additions, its TCP checksum never summed over bytes.
"""

from __future__ import annotations

import struct
from typing import Final

from passt.buffers import lazy_buffer
from passt.wire.checksum import csum_partial, pseudo_sum4, pseudo_sum6
from passt.wire.eth import ETH_P_IP, ETH_P_IPV6
from passt.wire.tcp import TCP_HLEN

ETH_HLEN: Final = 14
IP4_HLEN: Final = 20
IP6_HLEN: Final = 40
IPPROTO_TCP: Final = 6
#: IPv4 TTL and IPv6 hop limit of everything we send the guest.
TTL: Final = 255

#: Memory for one turn's data frames.
RING_BYTES: Final = 8 << 20
#: Scatter lists above IOV_MAX (1024 on Linux) are refused by recvmsg.
RING_SLOTS_MAX: Final = 1024
RING_SLOTS_MIN: Final = 16
#: Address pairs whose template parts are kept (`_ADDR_PARTS`; emptied when full).
ADDR_PARTS_MAX: Final = 256
#: Largest IPv4 datagram / IPv6 payload: caps an offloaded (GSO) frame.
IP_MAX_LEN: Final = 65535

_ETH: Final = struct.Struct("!6s6sH")
_IP4: Final = struct.Struct("!BBHHHBBH4s4s")
_IP6: Final = struct.Struct("!IHBB16s16s")
_U16: Final = struct.Struct("!H")
#: seq, ack, data offset + flags, window: bytes 4..15 of the TCP header.
_TCP_VAR: Final = struct.Struct("!IIHH")
#: Ports and data offset of a template's TCP header (seq, ack, flags, window, checksum, urgent: 0).
_TCP_PORTS: Final = struct.Struct("!HH8xH6x")
#: The same and the checksum: bytes 4..17 (control frames).
_TCP_CTL: Final = struct.Struct("!IIHHH")
_DOFF5: Final = 5 << 12


def _fold(total: int) -> int:
    total = (total & 0xFFFF) + (total >> 16)
    total = (total & 0xFFFF) + (total >> 16)
    return total


class FrameTemplate:
    """Constant header bytes of one flow towards the guest, and their partial sums."""

    __slots__ = ("af", "hdr", "l4_off", "hdr_len", "ip_base", "ph_base", "guest_mac", "ctl_sum")

    def __init__(
        self,
        af: int,
        guest_mac: bytes,
        our_mac: bytes,
        src: bytes,
        dst: bytes,
        sport: int,
        dport: int,
    ) -> None:
        #: 4 or 6.
        self.af = af
        #: The guest MAC baked in (compared by identity to notice a change).
        self.guest_mac = guest_mac
        key = (af, guest_mac, our_mac, src, dst)
        addr = _ADDR_PARTS.get(key)
        if addr is None:
            addr = _addr_part(af, guest_mac, our_mac, src, dst)
            if len(_ADDR_PARTS) >= ADDR_PARTS_MAX:
                _ADDR_PARTS.clear()
            _ADDR_PARTS[key] = addr
        prefix, ip_base, ph_base = addr
        #: Sum of the IPv4 header words that never change (length and checksum are 0; IPv6: 0).
        self.ip_base = ip_base
        #: Pseudo-header sum without the length.
        self.ph_base = ph_base
        #: Ethernet + IP + TCP header with ports; variable fields zero.
        self.hdr = prefix + _TCP_PORTS.pack(sport, dport, _DOFF5)
        #: Offset of the TCP header in a frame (virtio csum_start).
        self.l4_off = len(prefix)
        #: Bytes before the payload of a data frame (virtio hdr_len).
        self.hdr_len = self.l4_off + TCP_HLEN
        #: Pseudo-header sum (without the length) plus the TCP header's constant words (the ports).
        self.ctl_sum = self.ph_base + sport + dport

    def fill(
        self,
        frame: memoryview,
        payload_len: int,
        seq: int,
        ack: int,
        flags: int,
        window: int,
        partial_csum: bool,
    ) -> int:
        """Write the headers of a data frame whose payload is already in place.

        With `partial_csum` the TCP checksum field gets the folded, not
        complemented, pseudo-header sum over the full TCP length (virtio
        NEEDS_CSUM); otherwise the full checksum.  Returns the frame length.
        """
        l4 = self.l4_off
        frame[0 : self.hdr_len] = self.hdr
        tcp_len = TCP_HLEN + payload_len
        if self.af == 4:
            total = IP4_HLEN + tcp_len
            _U16.pack_into(frame, ETH_HLEN + 2, total)
            _U16.pack_into(frame, ETH_HLEN + 10, ~_fold(self.ip_base + total) & 0xFFFF)
        else:
            _U16.pack_into(frame, ETH_HLEN + 4, tcp_len)
        _TCP_VAR.pack_into(frame, l4 + 4, seq, ack, _DOFF5 | flags, window)
        if partial_csum:
            _U16.pack_into(frame, l4 + 16, _fold(self.ph_base + tcp_len))
        else:
            total_sum = csum_partial(frame[l4 : l4 + tcp_len], self.ph_base + tcp_len)
            _U16.pack_into(frame, l4 + 16, ~total_sum & 0xFFFF)
        return l4 + tcp_len


def _addr_part(af: int, guest_mac: bytes, our_mac: bytes, src: bytes, dst: bytes) -> tuple[bytes, int, int]:
    """Ethernet and IP header bytes of one address pair, the IPv4 header's and the pseudo-header's sums."""
    if af == 4:
        ip = _IP4.pack(0x45, 0, 0, 0, 0x4000, TTL, IPPROTO_TCP, 0, src, dst)
        eth = _ETH.pack(guest_mac, our_mac, ETH_P_IP)
        return eth + ip, csum_partial(ip), pseudo_sum4(src, dst, IPPROTO_TCP, 0)
    ip = _IP6.pack(6 << 28, 0, IPPROTO_TCP, TTL, src, dst)
    eth = _ETH.pack(guest_mac, our_mac, ETH_P_IPV6)
    return eth + ip, 0, pseudo_sum6(src, dst, IPPROTO_TCP, 0)


#: Address parts of recent templates: short flows between the same two
#: addresses (TCP_CRR) share them, and a template is then one concatenation.
_ADDR_PARTS: dict[tuple[int, bytes, bytes, bytes, bytes], tuple[bytes, int, int]] = {}


def build_control(
    tpl: FrameTemplate, seq: int, ack: int, flags: int, window: int, options: bytes = b""
) -> bytearray:
    """A payload-less frame from `tpl`, with `options` (a multiple of 4 bytes).

    The TCP checksum is added up from the words that vary (seq, ack,
    offset and flags, window, options) and the template's `ctl_sum`.
    """
    seq &= 0xFFFFFFFF
    ack &= 0xFFFFFFFF
    frame = bytearray(tpl.hdr)
    if options:
        frame += options
        tcp_len = TCP_HLEN + len(options)
        total = tpl.ctl_sum + tcp_len + csum_partial(options)
    else:
        tcp_len = TCP_HLEN
        total = tpl.ctl_sum + TCP_HLEN
    if tpl.af == 4:
        ip_len = IP4_HLEN + tcp_len
        _U16.pack_into(frame, ETH_HLEN + 2, ip_len)
        _U16.pack_into(frame, ETH_HLEN + 10, ~_fold(tpl.ip_base + ip_len) & 0xFFFF)
    else:
        _U16.pack_into(frame, ETH_HLEN + 4, tcp_len)
    off_flags = (tcp_len >> 2) << 12 | flags
    total += (seq >> 16) + (seq & 0xFFFF) + (ack >> 16) + (ack & 0xFFFF) + off_flags + window
    _TCP_CTL.pack_into(frame, tpl.l4_off + 4, seq, ack, off_flags, window, ~_fold(total) & 0xFFFF)
    return frame


def gso_payload_cap(af: int, mss: int) -> int:
    """Largest payload of one offloaded frame: what the IP length field allows, in whole MSS."""
    room = IP_MAX_LEN - TCP_HLEN - (IP4_HLEN if af == 4 else 0)
    if mss >= room:
        return room
    return (room // mss) * mss


def slot_size_for(offload: bool, tap_mtu: int) -> int:
    """Bytes per ring slot: a full GSO frame with offload, else one MTU-sized frame."""
    if offload:
        size = ETH_HLEN + IP6_HLEN + IP_MAX_LEN
    else:
        size = ETH_HLEN + max(tap_mtu, IP6_HLEN + TCP_HLEN + 1)
    return (size + 63) & ~63


class FrameRing:
    """Preallocated frame slots handed out within one loop turn (see module doc).

    Ownership: slots `[0, used)` belong to the tap, from the moment a flow
    raises `used` past them (the hand-over: their frames are queued with
    `send`/`send_gso`) until `rewind()` (the release), which runs as deferred
    work after the turn's tap flush.  The tap's flush contract (tap/base.py)
    makes that safe: once flush() returns, the tap holds copies of what it
    did not write, or nothing.  `used` only grows between rewinds: a slot is
    never taken back from the tap while it may still be queued.
    """

    __slots__ = ("offload", "slot_size", "slots", "_used", "_buf")

    def __init__(self, *, offload: bool, tap_mtu: int, budget: int = RING_BYTES) -> None:
        #: The tap mode this ring was sized for.
        self.offload = offload
        self.slot_size = slot_size_for(offload, tap_mtu)
        count = max(RING_SLOTS_MIN, min(RING_SLOTS_MAX, budget // self.slot_size))
        self._buf = lazy_buffer(self.slot_size * count)
        view = memoryview(self._buf)
        size = self.slot_size
        #: One writable view per slot.
        self.slots = [view[i * size : (i + 1) * size] for i in range(count)]
        self._used = 0

    @property
    def used(self) -> int:
        """Slots handed to the tap since the last rewind (the first free slot)."""
        return self._used

    @used.setter
    def used(self, value: int) -> None:
        """Hand slots `[used, value)` over to the tap (their frames are queued)."""
        assert self._used <= value <= len(self.slots), "a queued slot taken back before the flush"
        self._used = value

    def rewind(self) -> None:
        """Release every slot: the tap's flush has returned, so it holds no view into them."""
        self._used = 0
