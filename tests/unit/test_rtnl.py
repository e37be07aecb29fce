"""rtnl: request bytes and reply decoding by hand, then requests against a real kernel (unshare -n)."""

from __future__ import annotations

import json
import os
import shutil
import socket
import struct
import subprocess
import sys
import textwrap

import pytest

from passt import rtnl


def _hdr(length: int, kind: int, flags: int, seq: int) -> bytes:
    return struct.pack("=IHHII", length, kind, flags, seq, 0)


def _attr(kind: int, value: bytes) -> bytes:
    raw = struct.pack("=HH", 4 + len(value), kind) + value
    return raw + bytes(-len(raw) % 4)


# -- encode ------------------------------------------------------------------


def test_dump_link_bytes() -> None:
    # nlmsghdr: len 32, RTM_GETLINK (18), REQUEST|DUMP (0x301), seq 7; ifinfomsg all zero
    assert rtnl.encode_dump(rtnl.Msg.GETLINK, 7) == bytes.fromhex(
        "20000000" "1200" "0103" "07000000" "00000000" + "00" * 16)


def test_dump_route_family_bytes() -> None:
    # RTM_GETROUTE (26), rtmsg of 12 bytes with family AF_INET6 (10)
    assert rtnl.encode_dump(rtnl.Msg.GETROUTE, 1, socket.AF_INET6) == bytes.fromhex(
        "1c000000" "1a00" "0103" "01000000" "00000000" "0a" + "00" * 11)


def test_dump_of_other_message_refused() -> None:
    with pytest.raises(ValueError):
        rtnl.encode_dump(rtnl.Msg.NEWLINK, 1)


def test_set_link_up_mtu_mac_bytes() -> None:
    got = rtnl.encode_set_link(3, 5, up=True, mtu=65520, mac=bytes.fromhex("9a55aa55aa55"))
    assert got == bytes.fromhex(
        "34000000" "1300" "0500" "03000000" "00000000"  # len 52, RTM_SETLINK, REQUEST|ACK
        "00" "00" "0000" "05000000" "01000000" "01000000"  # AF_UNSPEC, index 5, flags/change IFF_UP
        "0800" "0400" "f0ff0000"  # IFLA_MTU 65520
        "0a00" "0100" "9a55aa55aa55" "0000")  # IFLA_ADDRESS, padded to 4


def test_set_link_only_mtu_leaves_flags_alone() -> None:
    got = rtnl.encode_set_link(1, 2, mtu=1500)
    _family, _type, index, flags, change = struct.unpack_from("=BxHiII", got, 16)
    assert (index, flags, change) == (2, 0, 0)


def test_new_addr4_bytes() -> None:
    got = rtnl.encode_new_addr(9, 4, bytes([192, 0, 2, 1]), 24)
    assert got == bytes.fromhex(
        "28000000" "1400" "0506" "09000000" "00000000"  # len 40, RTM_NEWADDR, REQUEST|ACK|EXCL|CREATE
        "02" "18" "00" "00" "04000000"  # AF_INET, /24, flags 0, universe, index 4
        "0800" "0200" "c0000201"  # IFA_LOCAL
        "0800" "0100" "c0000201")  # IFA_ADDRESS


def test_new_addr6_has_no_local_and_wide_flags_go_in_ifa_flags() -> None:
    addr = bytes.fromhex("20010db8" + "00" * 11 + "01")
    got = rtnl.encode_new_addr(1, 3, addr, 64, flags=0x280)
    family, prefixlen, flags8, _scope, index = struct.unpack_from("=BBBBI", got, 16)
    assert (family, prefixlen, flags8, index) == (socket.AF_INET6, 64, 0x80, 3)
    assert got[24:] == _attr(rtnl.IFA_ADDRESS, addr) + _attr(rtnl.IFA_FLAGS, struct.pack("=I", 0x280))


def test_new_route_onlink_bytes() -> None:
    got = rtnl.encode_new_route(2, 6, bytes([10, 0, 0, 1]), onlink=True)
    assert got == bytes.fromhex(
        "2c000000" "1800" "0506" "02000000" "00000000"  # len 44, RTM_NEWROUTE
        "02" "00" "00" "00" "fe" "04" "00" "01" "04000000"  # AF_INET, /0, main, static, universe, unicast, ONLINK
        "0800" "0500" "0a000001"  # RTA_GATEWAY
        "0800" "0400" "06000000")  # RTA_OIF


# -- decode ------------------------------------------------------------------


def test_decode_link() -> None:
    body = (struct.pack("=BxHiII", 0, 1, 3, 0x1043, 0) + _attr(rtnl.IFLA_IFNAME, b"eth0\0")
            + _attr(rtnl.IFLA_MTU, struct.pack("=I", 9000)) + _attr(rtnl.IFLA_ADDRESS, bytes(range(6)))
            + _attr(0x8000 | 27, _attr(1, b"nested")))  # unknown nested attribute: kept, ignored
    msg = _hdr(16 + len(body), rtnl.Msg.NEWLINK, rtnl.NLM_F_MULTI, 1) + body
    [(kind, _flags, seq, payload)] = list(rtnl.parse_messages(msg))
    assert (kind, seq) == (rtnl.Msg.NEWLINK, 1)
    assert rtnl.decode_link(payload) == rtnl.Link(index=3, ifname="eth0", mac=bytes(range(6)), mtu=9000,
                                                  flags=0x1043)


def test_decode_link_without_address() -> None:
    body = struct.pack("=BxHiII", 0, 65534, 7, 0, 0) + _attr(rtnl.IFLA_IFNAME, b"tun0\0")
    link = rtnl.decode_link(memoryview(body))
    assert (link.ifname, link.mac, link.mtu) == ("tun0", None, None)


def test_decode_addr_prefers_ifa_flags() -> None:
    addr = bytes([192, 0, 2, 5])
    body = (struct.pack("=BBBBI", socket.AF_INET, 24, 0x01, 0, 2) + _attr(rtnl.IFA_ADDRESS, addr)
            + _attr(rtnl.IFA_LOCAL, addr) + _attr(rtnl.IFA_FLAGS, struct.pack("=I", 0x281)))
    got = rtnl.decode_addr(memoryview(body))
    assert got == rtnl.Addr(family=socket.AF_INET, prefixlen=24, flags=0x281, scope=0, index=2,
                            address=addr, local=addr)
    short = struct.pack("=BBBBI", socket.AF_INET6, 64, 0x20, 253, 1)
    assert rtnl.decode_addr(memoryview(short)).flags == 0x20


def test_decode_route_plain_and_multipath() -> None:
    plain = (struct.pack("=BBBBBBBBI", socket.AF_INET, 0, 0, 0, 254, 4, 0, 1, 0)
             + _attr(rtnl.RTA_TABLE, struct.pack("=I", 254)) + _attr(rtnl.RTA_PRIORITY, struct.pack("=I", 100))
             + _attr(rtnl.RTA_GATEWAY, bytes([192, 0, 2, 1])) + _attr(rtnl.RTA_OIF, struct.pack("=I", 2)))
    r = rtnl.decode_route(memoryview(plain))
    assert (r.dst_len, r.table, r.type, r.oif, r.gateway, r.priority, r.multipath) == (
        0, 254, 1, 2, bytes([192, 0, 2, 1]), 100, ())
    hop1 = _attr(rtnl.RTA_GATEWAY, bytes([10, 0, 0, 1]))
    hop2 = _attr(rtnl.RTA_GATEWAY, bytes([10, 0, 1, 1]))
    hops = struct.pack("=HBBi", 8 + len(hop1), 0, 0, 5) + hop1 + struct.pack("=HBBi", 8 + len(hop2), 0, 0, 6) + hop2
    mp = struct.pack("=BBBBBBBBI", socket.AF_INET, 0, 0, 0, 200, 4, 0, 1, 0) + _attr(rtnl.RTA_MULTIPATH, hops)
    r = rtnl.decode_route(memoryview(mp))
    assert (r.table, r.oif, r.gateway, r.priority) == (200, None, None, 0)
    assert r.multipath == (rtnl.Nexthop(5, bytes([10, 0, 0, 1])), rtnl.Nexthop(6, bytes([10, 0, 1, 1])))


def test_error_and_done_messages() -> None:
    request_hdr = _hdr(32, rtnl.Msg.NEWADDR, 5, 4)
    err = _hdr(36, rtnl.Msg.ERROR, 0, 4) + struct.pack("=i", -17) + request_hdr
    ack = _hdr(36, rtnl.Msg.ERROR, 0x100, 5) + struct.pack("=i", 0) + request_hdr
    done = _hdr(20, rtnl.Msg.DONE, rtnl.NLM_F_MULTI, 6) + struct.pack("=i", 0)
    msgs = list(rtnl.parse_messages(err + ack + done))
    assert [(k, s) for k, _f, s, _p in msgs] == [(rtnl.Msg.ERROR, 4), (rtnl.Msg.ERROR, 5), (rtnl.Msg.DONE, 6)]
    assert rtnl.parse_error(msgs[0][3]) == 17
    assert rtnl.parse_error(msgs[1][3]) == 0


@pytest.mark.parametrize("data", [
    _hdr(40, rtnl.Msg.NEWLINK, 0, 1) + bytes(8),  # length past the datagram
    _hdr(8, rtnl.Msg.NEWLINK, 0, 1),  # length shorter than the header
])
def test_bad_message_length(data: bytes) -> None:
    with pytest.raises(rtnl.ParseError):
        list(rtnl.parse_messages(data))


def test_bad_attribute_and_short_bodies() -> None:
    with pytest.raises(rtnl.ParseError):
        rtnl.parse_attrs(memoryview(struct.pack("=HH", 12, 1) + b"ab"))
    with pytest.raises(rtnl.ParseError):
        rtnl.decode_link(memoryview(bytes(8)))
    with pytest.raises(rtnl.ParseError):
        rtnl.decode_addr(memoryview(bytes(4)))
    with pytest.raises(rtnl.ParseError):
        rtnl.decode_route(memoryview(bytes(8)))
    with pytest.raises(rtnl.ParseError):
        rtnl.parse_error(memoryview(b"\0"))


# -- against the kernel, in a throwaway network namespace --------------------

_KERNEL_SCRIPT = textwrap.dedent("""
    import errno, json, socket, subprocess
    from ipaddress import ip_address
    from passt.rtnl import Rtnl
    out = {}
    subprocess.run(["ip", "link", "add", "v0", "type", "veth", "peer", "name", "v1"], check=True)
    with Rtnl() as nl:
        v0 = nl.link("v0")
        nl.set_link(v0.index, mtu=1400)
        nl.set_link(v0.index, mac=bytes.fromhex("02aabbccddee"))
        nl.set_link(v0.index, up=True)
        nl.add_addr(v0.index, ip_address("192.0.2.2").packed, 24)
        nl.add_default_route(v0.index, ip_address("198.51.100.1").packed, onlink=True)
        nl.add_addr(v0.index, ip_address("2001:db8::2").packed, 64, flags=0x80)
        nl.add_default_route(v0.index, ip_address("2001:db8::1").packed)
        try:
            nl.add_addr(v0.index, ip_address("192.0.2.2").packed, 24)
        except OSError as e:
            out["dup_errno"] = e.errno == errno.EEXIST
        try:
            nl.link("nosuch0")
        except OSError as e:
            out["nodev_errno"] = e.errno == errno.ENODEV
        link = nl.link("v0")
        out["link"] = [link.index == v0.index, link.mtu, link.mac.hex(), bool(link.flags & 1)]
        out["links"] = sorted(l.ifname for l in nl.links())
        out["addrs"] = sorted(f"{ip_address(a.address)}/{a.prefixlen}" for a in nl.addrs()
                              if a.index == v0.index and a.scope == 0)
        out["routes"] = sorted(f"{ip_address(r.gateway)} {r.oif == v0.index} {r.table}"
                               for r in nl.routes() if r.dst_len == 0 and r.gateway)
    out["ip"] = subprocess.run(["ip", "route", "show", "default"], capture_output=True, text=True).stdout
    print(json.dumps(out))
""")


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("unshare") is None or shutil.which("ip") is None,
                    reason="needs root, unshare and ip")
def test_requests_against_kernel() -> None:
    proc = subprocess.run(["unshare", "-n", sys.executable, "-c", _KERNEL_SCRIPT],
                          capture_output=True, text=True, timeout=30, check=False)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["dup_errno"] is True
    assert out["nodev_errno"] is True
    assert out["link"] == [True, 1400, "02aabbccddee", True]
    assert out["links"] == ["lo", "v0", "v1"]
    assert out["addrs"] == ["192.0.2.2/24", "2001:db8::2/64"]
    assert out["routes"] == ["198.51.100.1 True 254", "2001:db8::1 True 254"]
    assert "onlink" in out["ip"] and "proto static" in out["ip"]
