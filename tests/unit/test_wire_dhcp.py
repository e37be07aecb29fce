"""wire/dhcp.py against scapy, and the DNS name encoding (RFC 1035/3397)."""

from __future__ import annotations

import pytest
from scapy.compat import raw
from scapy.layers.dhcp import BOOTP, DHCP

from passt.wire.dhcp import (
    BOOTP_MIN_LEN,
    DHCPDISCOVER,
    MAGIC_COOKIE,
    OPT_MSG_TYPE,
    OPT_PARAM_REQUEST,
    DhcpMessage,
    build_dhcp,
    domain_labels,
    encode_domain_names,
    encode_options,
    parse_dhcp,
)
from passt.wire.errors import ParseError
from tests.unit.conftest import check_prefixes, decode_names

CHADDR = bytes.fromhex("525400123456")
MSG = raw(
    BOOTP(op=1, chaddr=CHADDR, xid=0xDEADBEEF, flags=0x8000, secs=3)
    / DHCP(
        options=[
            ("message-type", "discover"),
            ("param_req_list", [1, 3, 6]),
            ("hostname", b"guest"),
            "end",
        ]
    )
)


def test_parse_dhcp_whole() -> None:
    msg = parse_dhcp(memoryview(MSG))
    assert (msg.op, msg.htype, msg.hlen, msg.xid, msg.flags, msg.secs) == (
        1,
        1,
        6,
        0xDEADBEEF,
        0x8000,
        3,
    )
    assert msg.chaddr[:6] == CHADDR
    assert msg.options == {
        OPT_MSG_TYPE: bytes([DHCPDISCOVER]),
        OPT_PARAM_REQUEST: bytes([1, 3, 6]),
        12: b"guest",
    }


def test_parse_dhcp_prefixes() -> None:
    """A prefix cut at an option boundary is a valid message (End is optional)."""
    full = parse_dhcp(memoryview(MSG)).options
    check_prefixes(
        parse_dhcp, MSG, ok=lambda m: all(full.get(k) == v for k, v in m.options.items())
    )


def test_parse_dhcp_trailing_after_end_ignored() -> None:
    assert parse_dhcp(memoryview(MSG + b"\x35\x05garbage")) == parse_dhcp(memoryview(MSG))


@pytest.mark.parametrize(
    "data",
    [
        MSG[:236] + b"\x63\x82\x53\x64" + MSG[240:],
        MSG[:240] + b"\x35\x05\x01",
        MSG[:240] + b"\x35",
        MSG[:240] + b"\x34\x01\x04\xff",
        MSG[:240] + b"\x34\x02\x01\x01\xff",
        MSG[:240] + b"\x00" * 600,
    ],
    ids=[
        "cookie",
        "overlong-option",
        "no-length",
        "overload-value",
        "overload-length",
        "too-many-pads",
    ],
)
def test_parse_dhcp_refuses(data: bytes) -> None:
    with pytest.raises(ParseError):
        parse_dhcp(memoryview(data))


def test_parse_dhcp_overload_and_long_options() -> None:
    """Option 52 moves options into file/sname; a repeated code is concatenated (RFC 3396)."""
    base = bytearray(MSG[:240])
    base[108:114] = b"\x0c\x02ab\xff\x00"  # file: hostname "ab"
    base[44:50] = b"\x0c\x02cd\xff\x00"  # sname: hostname "cd"
    data = bytes(base) + b"\x35\x01\x01\x34\x01\x03\xff"
    msg = parse_dhcp(memoryview(data))
    assert msg.options == {53: b"\x01", 12: b"abcd"}


def test_dhcp_build_parse_build() -> None:
    msg = parse_dhcp(memoryview(MSG))
    out = build_dhcp(
        op=msg.op,
        xid=msg.xid,
        flags=msg.flags,
        ciaddr=msg.ciaddr,
        yiaddr=msg.yiaddr,
        siaddr=msg.siaddr,
        giaddr=msg.giaddr,
        chaddr=msg.chaddr,
        options=encode_options(msg.options.items()),
        secs=msg.secs,
    )
    assert len(out) >= BOOTP_MIN_LEN and out[236:240] == MAGIC_COOKIE
    again = parse_dhcp(memoryview(out))
    assert again == msg
    pkt = BOOTP(out)
    assert pkt[BOOTP].xid == 0xDEADBEEF and ("message-type", 1) in pkt[DHCP].options


def test_encode_options_splits_long_values() -> None:
    value = bytes(range(256)) * 2
    encoded = encode_options([(119, value)])
    assert (
        encoded[:2] == b"\x77\xff"
        and encoded[257:259] == b"\x77\xff"
        and encoded[514:516] == b"\x77\x02"
    )
    msg = parse_dhcp(memoryview(MSG[:240] + encoded + b"\xff"))
    assert msg.options[119] == value


def test_domain_names_compressed_rfc3397_example() -> None:
    """RFC 3397 section 2 example: eng.apple.com, marketing.apple.com."""
    encoded = encode_domain_names(["eng.apple.com", "marketing.apple.com"], compress=True)
    assert encoded == b"\x03eng\x05apple\x03com\x00\x09marketing\xc0\x04"
    assert decode_names(encoded) == ["eng.apple.com.", "marketing.apple.com."]


def test_domain_names_uncompressed_and_invalid_skipped() -> None:
    encoded = encode_domain_names(
        ["a.example.", "b.example", "x" * 64 + ".com", "ex\u00e4mple.com"], compress=False
    )
    assert encoded == b"\x01a\x07example\x00\x01b\x07example\x00"
    assert (
        domain_labels("a..b") is None
        and domain_labels(".") == []
        and domain_labels("a" * 300) is None
    )


def test_dhcp_message_is_namedtuple() -> None:
    assert DhcpMessage._fields[-1] == "options"
