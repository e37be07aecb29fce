"""C qrap's socket probe gets its ARP reply, and nothing else from a broadcast source does.

The probe bytes are what Debian's /usr/bin/qrap (passt 0.0~git20230309)
sent to our passt, read back from passt's -p capture: Ethernet
ff:ff:ff:ff:ff:ff -> ff:ff:ff:ff:ff:ff, ARP request, sender 00:00:00:00:00:00
0.0.0.0, target 0.0.0.0.
"""

from __future__ import annotations

import pytest

from passt.config import MAC_BROADCAST
from passt.counters import Counters
from passt.guest import GuestState
from passt.services.arp import ArpService
from passt.wire.arp import ARP_OP_REPLY, parse_arp
from passt.wire.eth import ETH_HLEN, parse_eth
from tests.unit.conftest import OUR_MAC, make_config

QRAP_PROBE = bytes.fromhex("ffffffffffffffffffffffff0806000108000604000100000000000000000000"
                           "000000000000000000000000")


def _service() -> tuple[ArpService, GuestState, Counters]:
    conf = make_config()
    guest = GuestState.from_config(conf)
    counters = Counters()
    return ArpService(conf, guest, counters), guest, counters


@pytest.mark.conformance("arp.qrap-probe")
def test_qrap_probe_answered_to_broadcast_learning_nothing() -> None:
    arp, guest, counters = _service()
    mac_before, addr_before = guest.mac, guest.addr4
    reply = arp.handle(memoryview(QRAP_PROBE))
    assert reply is not None
    eth = parse_eth(memoryview(reply))
    assert eth.dst == MAC_BROADCAST and eth.src == OUR_MAC
    answer = parse_arp(memoryview(reply)[ETH_HLEN:])
    assert answer.op == ARP_OP_REPLY and answer.sha == OUR_MAC
    assert guest.mac == mac_before and guest.addr4 == addr_before
    assert counters.events["arp: qrap probe"] == 1 and counters.dropped == 0


def test_other_broadcast_source_frames_still_dropped_and_counted() -> None:
    arp, guest, counters = _service()
    # a broadcast source asking for a real address, and a multicast source probing 0.0.0.0
    asks_gateway = bytearray(QRAP_PROBE)
    asks_gateway[38:42] = bytes([10, 0, 2, 2])
    multicast = bytearray(QRAP_PROBE)
    multicast[6:12] = bytes.fromhex("01005e000001")
    reply_op = bytearray(QRAP_PROBE)
    reply_op[21] = 2
    for frame in (asks_gateway, multicast, reply_op):
        assert arp.handle(memoryview(bytes(frame))) is None
    assert counters.drops["arp: multicast source"] == 3
    assert "arp: qrap probe" not in counters.events
