"""Frame templates and the frame ring: control frames match a full build, slots belong to the tap until rewind()."""

from __future__ import annotations

import random
import struct

import pytest

from passt.flows import tcp_frames
from passt.flows.tcp_frames import RING_SLOTS_MIN, FrameRing, FrameTemplate, build_control
from passt.wire.checksum import csum_partial, pseudo_sum4, pseudo_sum6
from passt.wire.tcp import build_tcp


def test_frame_ring_slots_handed_over_until_rewind() -> None:
    ring = FrameRing(offload=False, tap_mtu=1500)
    assert len(ring.slots) >= RING_SLOTS_MIN and ring.used == 0
    ring.used = 3
    ring.used = 5  # more frames queued this turn
    with pytest.raises(AssertionError):
        ring.used = 4  # slot 4 is still queued in the tap
    with pytest.raises(AssertionError):
        ring.used = len(ring.slots) + 1
    ring.rewind()  # the tap flushed: every slot is free again
    assert ring.used == 0
    ring.used = 1


def _reference(tpl: FrameTemplate, seq: int, ack: int, flags: int, window: int, options: bytes) -> bytes:
    """The control frame written out field by field, both checksums summed over the bytes."""
    l4 = tpl.l4_off
    tcp_len = 20 + len(options)
    frame = bytearray(tpl.hdr) + options
    if tpl.af == 4:
        struct.pack_into("!H", frame, 16, 20 + tcp_len)
        struct.pack_into("!H", frame, 24, 0)
        struct.pack_into("!H", frame, 24, ~csum_partial(frame[14:34]) & 0xFFFF)
        ph = pseudo_sum4(bytes(frame[26:30]), bytes(frame[30:34]), 6, tcp_len)
    else:
        struct.pack_into("!H", frame, 18, tcp_len)
        ph = pseudo_sum6(bytes(frame[22:38]), bytes(frame[38:54]), 6, tcp_len)
    struct.pack_into("!IIHH", frame, l4 + 4, seq & 0xFFFFFFFF, ack & 0xFFFFFFFF, (tcp_len >> 2) << 12 | flags, window)
    struct.pack_into("!H", frame, l4 + 16, ~csum_partial(frame[l4:], ph) & 0xFFFF)
    return bytes(frame)


@pytest.mark.parametrize("af", [4, 6])
def test_control_frames_match_a_full_build(af: int) -> None:
    """build_control's checksum, added up from the varying words and the template's ready sums,
    equals one summed over the whole frame, for any numbers and with or without options."""
    rnd = random.Random(af)
    if af == 4:
        src, dst = bytes([10, 0, 2, 2]), bytes([93, 184, 216, 34])
    else:
        src, dst = bytes.fromhex("fd00" + "00" * 12 + "0002"), bytes.fromhex("2001" + "ff" * 14)
    for i in range(400):
        sport, dport = rnd.randrange(1, 65536), rnd.randrange(1, 65536)
        tpl = FrameTemplate(af, bytes(rnd.randrange(256) for _ in range(6)), b"\x02\x00\x00\x00\x00\x01",
                            src, dst, sport, dport)
        seq = rnd.choice([0, 0xFFFFFFFF, rnd.getrandbits(32), rnd.getrandbits(33)])  # callers may pass > 32 bits
        ack = rnd.choice([0, 0xFFFFFFFF, rnd.getrandbits(32)])
        flags = rnd.randrange(256)
        window = rnd.choice([0, 65535, rnd.randrange(65536)])
        options = [b"", b"\x02\x04\x05\xb4", b"\x02\x04\x05\xb4\x01\x03\x03\x08", bytes(rnd.randrange(256) for _ in range(12))][i % 4]
        frame = build_control(tpl, seq, ack, flags, window, options)
        assert bytes(frame) == _reference(tpl, seq, ack, flags, window, options)


def test_templates_share_address_parts_within_a_bound() -> None:
    """Flows between the same addresses share the cached Ethernet/IP part; the ports, the guest
    MAC and the addresses still tell templates apart; the cache stays within ADDR_PARTS_MAX."""
    mac, ours = b"\x02\x00\x00\x00\x00\x09", b"\x02\x00\x00\x00\x00\x01"
    src, dst = bytes([10, 0, 2, 2]), bytes([10, 0, 2, 15])
    a = FrameTemplate(4, mac, ours, src, dst, 80, 40000)
    b = FrameTemplate(4, mac, ours, src, dst, 80, 40001)
    assert a.hdr[:34] == b.hdr[:34] and a.hdr != b.hdr
    tcp = bytearray(20)
    build_tcp(tcp, 0, sport=80, dport=40001, seq=0, ack=0, flags=0, window=0)
    assert b.hdr[34:] == bytes(tcp) and b.l4_off == 34 and b.hdr_len == 54
    other_mac = b"\x02\x00\x00\x00\x00\x0a"
    c = FrameTemplate(4, other_mac, ours, src, dst, 80, 40000)
    assert c.hdr[:6] == other_mac and c.guest_mac is other_mac and c.hdr[6:] == a.hdr[6:]
    for i in range(tcp_frames.ADDR_PARTS_MAX + 10):
        FrameTemplate(6, mac, ours, i.to_bytes(16, "big"), dst * 4, 1, 2)
        assert len(tcp_frames._ADDR_PARTS) <= tcp_frames.ADDR_PARTS_MAX
    v6 = FrameTemplate(6, mac, ours, (5).to_bytes(16, "big"), dst * 4, 1, 2)
    assert v6.l4_off == 54 and v6.hdr[54:56] == b"\x00\x01" and v6.hdr[12:14] == b"\x86\xdd"
