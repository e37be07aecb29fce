"""DHCP messages (RFC 2131) and their options (RFC 2132), plus DNS name encoding.

A DHCP message is a fixed 236-byte BOOTP header, the magic cookie
99.130.83.99, then options as code/length/value triplets ended by 255 (End);
0 (Pad) is a lone byte.  Parsing here:

    payload --parse_dhcp--> DhcpMessage(fixed fields, options: {code: value})
              |- options field, then (option 52 Overload) file, then sname
              |- each option's length checked against the bytes left
              '- a code seen twice is concatenated (RFC 3396 long options)

Nothing needs the End option to be present (some clients pad to the end
instead), but an option running past the end of its field is an error.  At
most MAX_OPTIONS options are read, so a hostile message cannot make us loop
for long (a 64 KiB message of Pads is still only read up to that bound).

Building: `build_dhcp` writes the fixed header and the given options, split
into 255-byte pieces where a value is longer (RFC 3396), then End, and pads to
the 300 bytes BOOTP relays and old clients expect (RFC 1542 section 2.1).

`encode_domain_names` is shared with NDP (DNSSL) and DHCPv6 (domain list):
RFC 1035 wire format, with RFC 1035 section 4.1.4 compression for DHCP option
119 (RFC 3397 asks for it) and without for the IPv6 ones (RFC 8106 section
5.2, RFC 8415 section 10 forbid it).
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from typing import Final, NamedTuple

from passt.wire.errors import ParseError

DHCP_SERVER_PORT: Final = 67
DHCP_CLIENT_PORT: Final = 68

BOOTP_HLEN: Final = 236
MAGIC_COOKIE: Final = b"\x63\x82\x53\x63"
#: Header plus cookie: where options start.
OPTIONS_OFFSET: Final = BOOTP_HLEN + 4
#: Smallest BOOTP message (RFC 951's 64-byte vendor area); replies are padded to it.
BOOTP_MIN_LEN: Final = 300
#: Bound on options read from one message (each is at least 2 bytes but Pads are 1).
MAX_OPTIONS: Final = 512

BOOTREQUEST: Final = 1
BOOTREPLY: Final = 2
HTYPE_ETHER: Final = 1
#: flags: the client cannot receive unicast before it is configured (RFC 2131 section 2).
FLAG_BROADCAST: Final = 0x8000

# message types (option 53)
DHCPDISCOVER: Final = 1
DHCPOFFER: Final = 2
DHCPREQUEST: Final = 3
DHCPDECLINE: Final = 4
DHCPACK: Final = 5
DHCPNAK: Final = 6
DHCPRELEASE: Final = 7
DHCPINFORM: Final = 8

# option codes
OPT_PAD: Final = 0
OPT_NETMASK: Final = 1
OPT_ROUTER: Final = 3
OPT_DNS: Final = 6
OPT_HOSTNAME: Final = 12
OPT_DOMAIN_NAME: Final = 15
OPT_MTU: Final = 26
OPT_REQUESTED_ADDR: Final = 50
OPT_LEASE_TIME: Final = 51
OPT_OVERLOAD: Final = 52
OPT_MSG_TYPE: Final = 53
OPT_SERVER_ID: Final = 54
OPT_PARAM_REQUEST: Final = 55
OPT_MESSAGE: Final = 56
OPT_MAX_MSG_SIZE: Final = 57
OPT_CLIENT_ID: Final = 61
#: Client FQDN (RFC 4702): flags, two obsolete RCODE bytes, the name.
OPT_CLIENT_FQDN: Final = 81
OPT_DOMAIN_SEARCH: Final = 119
OPT_END: Final = 255

_BOOTP: Final = struct.Struct("!BBBBIHH4s4s4s4s16s64s128s")


class DhcpMessage(NamedTuple):
    """A parsed DHCP message; `options` maps code to (concatenated) value."""

    op: int
    htype: int
    hlen: int
    hops: int
    xid: int
    secs: int
    flags: int
    ciaddr: bytes
    yiaddr: bytes
    siaddr: bytes
    giaddr: bytes
    #: Client hardware address field, all 16 bytes (the MAC is the first hlen).
    chaddr: bytes
    options: dict[int, bytes]


def _parse_options(field: memoryview, options: dict[int, bytes], budget: int) -> int:
    """Read the options in `field` into `options`; returns the remaining option budget."""
    n = len(field)
    i = 0
    while i < n:
        if budget == 0:
            raise ParseError("too many dhcp options")
        budget -= 1
        code = field[i]
        if code == OPT_PAD:
            i += 1
            continue
        if code == OPT_END:
            break
        if i + 2 > n:
            raise ParseError("truncated dhcp option")
        length = field[i + 1]
        end = i + 2 + length
        if end > n:
            raise ParseError("dhcp option length")
        value = bytes(field[i + 2 : end])
        prev = options.get(code)
        options[code] = value if prev is None else prev + value
        i = end
    return budget


def parse_dhcp(payload: memoryview) -> DhcpMessage:
    """Parse a DHCP message (the UDP payload).

    Raises ParseError for a message shorter than header plus cookie, a wrong
    magic cookie, an option running past its field, a bad Overload value, or
    more than MAX_OPTIONS options.  Field semantics (op, htype, message type)
    are the caller's to check.
    """
    if len(payload) < OPTIONS_OFFSET:
        raise ParseError("short dhcp message")
    if bytes(payload[BOOTP_HLEN:OPTIONS_OFFSET]) != MAGIC_COOKIE:
        raise ParseError("dhcp magic cookie")
    (
        op,
        htype,
        hlen,
        hops,
        xid,
        secs,
        flags,
        ciaddr,
        yiaddr,
        siaddr,
        giaddr,
        chaddr,
        _sname,
        _file,
    ) = _BOOTP.unpack_from(payload, 0)
    options: dict[int, bytes] = {}
    budget = _parse_options(payload[OPTIONS_OFFSET:], options, MAX_OPTIONS)
    overload = options.pop(OPT_OVERLOAD, None)
    if overload is not None:
        if len(overload) != 1 or overload[0] not in (1, 2, 3):
            raise ParseError("dhcp option overload")
        if overload[0] & 1:
            budget = _parse_options(payload[108:236], options, budget)
        if overload[0] & 2:
            _parse_options(payload[44:108], options, budget)
    return DhcpMessage(
        op, htype, hlen, hops, xid, secs, flags, ciaddr, yiaddr, siaddr, giaddr, chaddr, options
    )


def encode_options(options: Iterable[tuple[int, bytes]]) -> bytes:
    """Encode (code, value) pairs, splitting values over 255 bytes (RFC 3396); no End."""
    out = bytearray()
    for code, value in options:
        if not value:
            out += bytes((code, 0))
            continue
        for start in range(0, len(value), 255):
            piece = value[start : start + 255]
            out += bytes((code, len(piece)))
            out += piece
    return bytes(out)


def build_dhcp(
    *,
    op: int,
    xid: int,
    flags: int,
    ciaddr: bytes,
    yiaddr: bytes,
    siaddr: bytes,
    giaddr: bytes,
    chaddr: bytes,
    options: bytes,
    htype: int = HTYPE_ETHER,
    hlen: int = 6,
    secs: int = 0,
) -> bytes:
    """A whole DHCP message: header, cookie, `options` (already encoded), End, padding."""
    head = _BOOTP.pack(
        op, htype, hlen, 0, xid, secs, flags, ciaddr, yiaddr, siaddr, giaddr, chaddr, b"", b""
    )
    msg = head + MAGIC_COOKIE + options + bytes((OPT_END,))
    if len(msg) < BOOTP_MIN_LEN:
        msg += bytes(BOOTP_MIN_LEN - len(msg))
    return msg


def domain_labels(name: str) -> list[bytes] | None:
    """Split a domain name into wire labels; None if it cannot be encoded.

    A trailing dot is accepted; empty labels, labels over 63 bytes, names over
    255 bytes on the wire and non-ASCII names (IDNA is the caller's job) are
    refused.
    """
    name = name.rstrip(".") if name != "." else ""
    if not name:
        return []
    try:
        raw = name.encode("ascii")
    except UnicodeEncodeError:
        return None
    labels = raw.split(b".")
    if any(not label or len(label) > 63 for label in labels):
        return None
    if sum(len(label) + 1 for label in labels) + 1 > 255:
        return None
    return labels


def encode_domain_names(names: Iterable[str], *, compress: bool) -> bytes:
    """Encode names in DNS wire format, one after another.

    With `compress`, a suffix already written is replaced by a pointer to it
    (RFC 1035 section 4.1.4; offsets count from the start of the returned
    bytes, which is what RFC 3397 section 2 specifies for option 119).
    Names that cannot be encoded are skipped.
    """
    out = bytearray()
    seen: dict[bytes, int] = {}
    for name in names:
        labels = domain_labels(name)
        if labels is None:
            continue
        for i in range(len(labels)):
            suffix = b".".join(labels[i:]).lower()
            if compress:
                ptr = seen.get(suffix)
                if ptr is not None:
                    out += struct.pack("!H", 0xC000 | ptr)
                    break
                if len(out) < 0x4000:
                    seen[suffix] = len(out)
            out += bytes((len(labels[i]),)) + labels[i]
        else:
            out += b"\0"
    return bytes(out)


#: Option 81 flag E (RFC 4702 section 2.1): the name is in DNS wire format.
FQDN_FLAG_E: Final = 0x04
#: Value servers put in option 81's obsolete RCODE1/RCODE2 fields (RFC 4702 section 2.2).
FQDN_RCODE_SERVER: Final = 0xFF


def encode_client_fqdn(name: str) -> bytes | None:
    """Option 81's value for `name` (flags E, RCODEs 255, wire-format name); None: not encodable."""
    if domain_labels(name) is None or not name.strip("."):
        return None
    return bytes((FQDN_FLAG_E, FQDN_RCODE_SERVER, FQDN_RCODE_SERVER)) + encode_domain_names(
        [name], compress=False
    )
