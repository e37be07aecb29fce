"""DHCPv6 messages (RFC 8415) between clients and servers, and their options.

A client/server message is a 1-byte type, a 3-byte transaction id, then
options as 2-byte code, 2-byte length, value; some options (IA_NA, IA_TA,
IA Address) carry options of their own in the same format.  Relay messages
(types 12 and 13) have another header and are refused: a guest on our link
is never a relay.

Every option list is parsed into (code, value view) pairs with each length
checked against the bytes left, and must be consumed exactly; at most
MAX_DHCPV6_OPTIONS per list.  Unknown codes are kept, not refused.

Builders return bytes: this is the slow path.
"""

from __future__ import annotations

import struct
from typing import Final, NamedTuple

from passt.wire.errors import ParseError

DHCPV6_CLIENT_PORT: Final = 546
DHCPV6_SERVER_PORT: Final = 547
#: ff02::1:2, All_DHCP_Relay_Agents_and_Servers.
ALL_DHCP_SERVERS: Final = bytes.fromhex("ff020000000000000000000000010002")

# message types
SOLICIT: Final = 1
ADVERTISE: Final = 2
REQUEST: Final = 3
CONFIRM: Final = 4
RENEW: Final = 5
REBIND: Final = 6
REPLY: Final = 7
RELEASE: Final = 8
DECLINE: Final = 9
RECONFIGURE: Final = 10
INFORMATION_REQUEST: Final = 11
RELAY_FORW: Final = 12
RELAY_REPL: Final = 13

# option codes
OPT_CLIENTID: Final = 1
OPT_SERVERID: Final = 2
OPT_IA_NA: Final = 3
OPT_IA_TA: Final = 4
OPT_IAADDR: Final = 5
OPT_ORO: Final = 6
OPT_PREFERENCE: Final = 7
OPT_ELAPSED_TIME: Final = 8
OPT_STATUS_CODE: Final = 13
OPT_RAPID_COMMIT: Final = 14
OPT_DNS_SERVERS: Final = 23
OPT_DOMAIN_LIST: Final = 24
OPT_IA_PD: Final = 25
#: Client FQDN (RFC 4704): one flags byte, then the name in DNS wire format.
OPT_CLIENT_FQDN: Final = 39
#: Option 39 flags (RFC 4704 section 4.1): S, the client asks the server to update AAAA;
#: O, the server overrode the client's S (we never update DNS).
FQDN6_FLAG_S: Final = 0x01
FQDN6_FLAG_O: Final = 0x02
OPT_IAPREFIX: Final = 26

# status codes (RFC 8415 section 21.13)
STATUS_SUCCESS: Final = 0
STATUS_UNSPEC_FAIL: Final = 1
STATUS_NO_ADDRS_AVAIL: Final = 2
STATUS_NO_BINDING: Final = 3
STATUS_NOT_ON_LINK: Final = 4
STATUS_USE_MULTICAST: Final = 5
STATUS_NO_PREFIX_AVAIL: Final = 6

#: DUID types (RFC 8415 section 11).
DUID_LL: Final = 3
INFINITY: Final = 0xFFFFFFFF
DHCPV6_HLEN: Final = 4
#: Bound on options in one list (each is at least 4 bytes; 64 KiB could hold 16383).
MAX_DHCPV6_OPTIONS: Final = 128

_OPT: Final = struct.Struct("!HH")
_IA: Final = struct.Struct("!III")
_IAADDR: Final = struct.Struct("!16sII")


class Dhcpv6Option(NamedTuple):
    """One option: code and value."""

    code: int
    data: memoryview


class Dhcpv6Message(NamedTuple):
    """A client/server DHCPv6 message."""

    msg_type: int
    #: Transaction id (24 bits).
    xid: int
    options: list[Dhcpv6Option]


class IaNa(NamedTuple):
    """An IA_NA option's content (RFC 8415 section 21.4)."""

    iaid: int
    t1: int
    t2: int
    options: list[Dhcpv6Option]


class IaAddr(NamedTuple):
    """An IA Address option's content (RFC 8415 section 21.6)."""

    addr: bytes
    preferred: int
    valid: int
    options: list[Dhcpv6Option]


def parse_options6(view: memoryview) -> list[Dhcpv6Option]:
    """Split an option list; ParseError if an option runs past the end."""
    out: list[Dhcpv6Option] = []
    n = len(view)
    i = 0
    while i < n:
        if len(out) == MAX_DHCPV6_OPTIONS:
            raise ParseError("too many dhcpv6 options")
        if i + 4 > n:
            raise ParseError("truncated dhcpv6 option")
        code, length = _OPT.unpack_from(view, i)
        end = i + 4 + length
        if end > n:
            raise ParseError("dhcpv6 option length")
        out.append(Dhcpv6Option(code, view[i + 4 : end]))
        i = end
    return out


def parse_dhcpv6(payload: memoryview) -> Dhcpv6Message:
    """Parse a client/server DHCPv6 message (the UDP payload)."""
    if len(payload) < DHCPV6_HLEN:
        raise ParseError("short dhcpv6 message")
    msg_type = payload[0]
    if msg_type in (RELAY_FORW, RELAY_REPL):
        raise ParseError("dhcpv6 relay message")
    xid = int.from_bytes(payload[1:4], "big")
    return Dhcpv6Message(msg_type, xid, parse_options6(payload[DHCPV6_HLEN:]))


def parse_ia_na(data: memoryview) -> IaNa:
    """Parse the value of an IA_NA option."""
    if len(data) < 12:
        raise ParseError("short ia_na")
    iaid, t1, t2 = _IA.unpack_from(data, 0)
    return IaNa(iaid, t1, t2, parse_options6(data[12:]))


def parse_iaaddr(data: memoryview) -> IaAddr:
    """Parse the value of an IA Address option."""
    if len(data) < 24:
        raise ParseError("short iaaddr")
    addr, preferred, valid = _IAADDR.unpack_from(data, 0)
    return IaAddr(addr, preferred, valid, parse_options6(data[24:]))


def find_option(options: list[Dhcpv6Option], code: int) -> memoryview | None:
    """The value of the first option with `code`; None when absent."""
    for opt in options:
        if opt.code == code:
            return opt.data
    return None


def option6(code: int, data: bytes = b"") -> bytes:
    """Encode one option."""
    return _OPT.pack(code, len(data)) + data


def build_dhcpv6(msg_type: int, xid: int, options: bytes) -> bytes:
    """A whole message: type, transaction id, the encoded options."""
    return bytes((msg_type,)) + (xid & 0xFFFFFF).to_bytes(3, "big") + options


def duid_ll(mac: bytes) -> bytes:
    """A DUID-LL for an Ethernet MAC (RFC 8415 section 11.4)."""
    return struct.pack("!HH", DUID_LL, 1) + mac


def opt_ia_na(iaid: int, t1: int, t2: int, sub: bytes = b"") -> bytes:
    """An IA_NA option."""
    return option6(OPT_IA_NA, _IA.pack(iaid, t1, t2) + sub)


def opt_iaaddr(addr: bytes, preferred: int, valid: int, sub: bytes = b"") -> bytes:
    """An IA Address option."""
    return option6(OPT_IAADDR, _IAADDR.pack(addr, preferred, valid) + sub)


def opt_status(code: int, message: str = "") -> bytes:
    """A Status Code option (the message is UTF-8, RFC 8415 section 21.13)."""
    return option6(OPT_STATUS_CODE, struct.pack("!H", code) + message.encode())
