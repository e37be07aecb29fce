"""DHCP server (RFC 2131, options RFC 2132): one fixed lease for one guest.

There is exactly one client and one address to hand out (conf.ip4.addr), so
there is no lease database: every DISCOVER gets an OFFER of that address,
every REQUEST for it an ACK, a REQUEST for anything else a NAK.  The lease is
infinite (0xFFFFFFFF, RFC 2131 section 3.3), so no T1/T2 are sent and clients
never renew.

    frame --eth/ipv4/udp/dhcp parse + checks--> learn MAC/address
          DISCOVER -> OFFER           REQUEST -> ACK | NAK (wrong address)
          INFORM   -> ACK (no yiaddr, no lease time; RFC 2131 section 3.4)
          DECLINE, RELEASE -> nothing (counted)
          REQUEST naming another server (option 54) -> nothing

Options sent (those we have a value for): 53 message type, 54 server
identifier, 51 lease time (not to INFORM), 1 netmask, 3 router (when a
gateway is configured), 6 DNS (when any), 119 search list (when any, RFC 3397
with RFC 1035 compression), 26 MTU (when -m was given), 12 host name (-H) and
81 client FQDN (--fqdn; RFC 4702: flags E, RCODEs 255, the name in wire
format), as upstream sends them: whether or not the client asked.  RFC 2131 section
4.3.1 says a server MUST send the options the client asked for (option 55)
that it has, and MAY send others; clients such as udhcpc and dhclient accept
unrequested ones, so we always send everything we have, requested ones first
in the client's order.  When that would exceed the client's maximum message
size (option 57, else the 576-byte IP datagram every client must accept) we
leave out options from the end of that order (unrequested first); 53, 54 and
51 always stay.  Option overload is parsed in requests but never used in
replies.

Server identifier: the gateway when one is configured (it is the address the
guest routes through, so replies from it look natural); otherwise an address
that is not the guest's: the first host of the guest's subnet, or the second
if that is the guest, or for /31 and /32 the guest's address with its lowest
bit flipped.  Replies come from that address, UDP port 67 to 68.

Destination (RFC 2131 section 4.1; giaddr is ignored: a guest on our link is
not a relay): NAK is broadcast; a non-zero ciaddr is unicast to ciaddr;
with the broadcast flag set, to 255.255.255.255 / ff:ff:ff:ff:ff:ff;
otherwise unicast to yiaddr at chaddr.

Every check failure drops the frame and counts it ("dhcp: <reason>").
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from ipaddress import IPv4Address, IPv4Network
from typing import Final

from passt.config import Config, Ip4Config
from passt.counters import Counters
from passt.guest import GuestState
from passt.wire.dhcp import (
    BOOTP_HLEN,
    BOOTREPLY,
    BOOTREQUEST,
    DHCP_CLIENT_PORT,
    DHCP_SERVER_PORT,
    DHCPACK,
    DHCPDECLINE,
    DHCPDISCOVER,
    DHCPINFORM,
    DHCPNAK,
    DHCPOFFER,
    DHCPRELEASE,
    DHCPREQUEST,
    FLAG_BROADCAST,
    HTYPE_ETHER,
    OPT_CLIENT_FQDN,
    OPT_DNS,
    OPT_DOMAIN_SEARCH,
    OPT_HOSTNAME,
    OPT_LEASE_TIME,
    OPT_MAX_MSG_SIZE,
    OPT_MSG_TYPE,
    OPT_MTU,
    OPT_NETMASK,
    OPT_PARAM_REQUEST,
    OPT_REQUESTED_ADDR,
    OPT_ROUTER,
    OPT_SERVER_ID,
    DhcpMessage,
    build_dhcp,
    encode_client_fqdn,
    encode_domain_names,
    encode_options,
    parse_dhcp,
)
from passt.wire.errors import ParseError
from passt.wire.eth import ETH_BROADCAST, ETH_HLEN, ETH_P_IP, build_eth, parse_eth
from passt.wire.ipv4 import (
    IPV4_BROADCAST,
    IPV4_HLEN,
    PROTO_UDP,
    build_ipv4,
    ipv4_header_ok,
    parse_ipv4,
)
from passt.wire.udp import UDP_HLEN, build_udp, parse_udp, set_udp_checksum4, udp_checksum_ok4

#: Lease time we hand out: infinite (RFC 2131 section 3.3).
LEASE_TIME_S: Final = 0xFFFFFFFF
#: Every DHCP client must accept an IP datagram this long (RFC 2131 section 2).
MIN_DATAGRAM: Final = 576
_ZERO4: Final = bytes(4)
_NAMES: Final = {DHCPOFFER: "offer", DHCPACK: "ack", DHCPNAK: "nak"}
_REQ_NAMES: Final = {DHCPDISCOVER: "discover", DHCPREQUEST: "request", DHCPINFORM: "inform"}


def server_identifier(ip4: Ip4Config) -> bytes:
    """The address we answer from (see the module docstring for the choice)."""
    if ip4.gateway is not None:
        return ip4.gateway.packed
    if ip4.prefix_len <= 30:
        net = IPv4Network((int(ip4.addr), ip4.prefix_len), strict=False)
        first = net.network_address + 1
        return (first if first != ip4.addr else first + 1).packed
    return IPv4Address(int(ip4.addr) ^ 1).packed


class DhcpService:
    """Answers the guest's DHCP requests; sans-IO, one frame in, at most one out."""

    def __init__(
        self,
        conf: Config,
        guest: GuestState,
        counters: Counters,
        log: Callable[[str], None] | None = None,
        *,
        verify_l4_checksum: bool = True,
    ) -> None:
        #: False for pasta's offloading tap: a UDP socket in the namespace
        #: hands over frames with only a partial (pseudo-header) checksum.
        self._verify_l4 = verify_l4_checksum
        self._conf = conf
        self._guest = guest
        self._counters = counters
        self._log = log
        self._server_id = b""
        #: Optional options in our default order: (code, value); fixed for our lifetime.
        self._optional: list[tuple[int, bytes]] = []
        ip4 = conf.ip4
        if ip4 is None:
            return
        self._server_id = server_identifier(ip4)
        self._optional.append((OPT_NETMASK, ip4.netmask.packed))
        if ip4.gateway is not None:
            self._optional.append((OPT_ROUTER, ip4.gateway.packed))
        if ip4.dns:
            self._optional.append((OPT_DNS, b"".join(a.packed for a in ip4.dns)))
        search = encode_domain_names(conf.search, compress=True)
        if search:
            self._optional.append((OPT_DOMAIN_SEARCH, search))
        if conf.mtu is not None:
            self._optional.append((OPT_MTU, struct.pack("!H", min(conf.mtu, 0xFFFF))))
        if conf.hostname:
            self._optional.append((OPT_HOSTNAME, conf.hostname.encode("ascii", "replace")))
        fqdn = encode_client_fqdn(conf.fqdn) if conf.fqdn else None
        if fqdn is not None:
            self._optional.append((OPT_CLIENT_FQDN, fqdn))

    def _drop(self, reason: str) -> None:
        self._counters.drop("dhcp: " + reason)

    def handle(self, frame: memoryview) -> bytes | None:
        """Handle one Ethernet/IPv4/UDP frame to port 67; returns the reply frame, or None."""
        ip4 = self._conf.ip4
        if ip4 is None or not self._conf.dhcp:
            self._drop("disabled")
            return None
        try:
            eth = parse_eth(frame)
            if eth.ethertype != ETH_P_IP:
                raise ParseError("not ipv4")
            l3 = frame[ETH_HLEN:]
            iph, l4 = parse_ipv4(l3)
            if iph.proto != PROTO_UDP:
                raise ParseError("not udp")
            if not ipv4_header_ok(l3, iph.header_len):
                raise ParseError("bad ipv4 checksum")
            udph, payload = parse_udp(l4)
            if udph.dport != DHCP_SERVER_PORT:
                raise ParseError("not port 67")
            if self._verify_l4 and not udp_checksum_ok4(l4[: udph.length], iph.src, iph.dst):
                raise ParseError("bad udp checksum")
            msg = parse_dhcp(payload)
        except ParseError as e:
            self._drop(str(e))
            return None
        if msg.op != BOOTREQUEST or msg.htype != HTYPE_ETHER or msg.hlen != 6:
            self._drop("not an ethernet bootrequest")
            return None
        mtype = msg.options.get(OPT_MSG_TYPE)
        if mtype is None or len(mtype) != 1:
            self._drop("no message type")
            return None
        if eth.src[0] & 1:
            self._drop("multicast source")
            return None

        self._guest.learn_mac(eth.src)
        self._guest.learn_addr4(iph.src)

        kind = mtype[0]
        if kind == DHCPDISCOVER:
            return self._reply(eth.src, msg, DHCPOFFER, ip4.addr_b)
        if kind == DHCPREQUEST:
            server = msg.options.get(OPT_SERVER_ID)
            if server is not None and server != self._server_id:
                self._counters.event("dhcp: request for another server")
                return None
            requested = msg.options.get(OPT_REQUESTED_ADDR)
            if requested is not None and len(requested) != 4:
                self._drop("bad requested address option")
                return None
            if requested is None and msg.ciaddr != _ZERO4:
                requested = msg.ciaddr
            if requested is None:
                self._drop("request without address")
                return None
            if requested != ip4.addr_b:
                return self._reply(eth.src, msg, DHCPNAK, _ZERO4)
            return self._reply(eth.src, msg, DHCPACK, ip4.addr_b)
        if kind == DHCPINFORM:
            return self._reply(eth.src, msg, DHCPACK, _ZERO4, inform=True)
        if kind in (DHCPDECLINE, DHCPRELEASE):
            self._counters.event("dhcp: decline or release")
            return None
        self._drop("unexpected message type")
        return None

    def _options(self, msg: DhcpMessage, reply_type: int, inform: bool, budget: int) -> bytes:
        """Encode the reply's options within `budget` bytes (End excluded)."""
        fixed: list[tuple[int, bytes]] = [
            (OPT_MSG_TYPE, bytes((reply_type,))),
            (OPT_SERVER_ID, self._server_id),
        ]
        if reply_type == DHCPNAK:
            return encode_options(fixed)
        if not inform:
            fixed.append((OPT_LEASE_TIME, struct.pack("!I", LEASE_TIME_S)))
        requested = msg.options.get(OPT_PARAM_REQUEST, b"")
        rank = {code: i for i, code in reversed(list(enumerate(requested)))}
        optional = sorted(self._optional, key=lambda item: rank.get(item[0], len(requested)))
        head = encode_options(fixed)
        while True:
            encoded = head + encode_options(optional)
            if len(encoded) <= budget or not optional:
                return encoded
            optional.pop()
            self._counters.event("dhcp: option left out for size")

    def _reply(
        self, mac: bytes, msg: DhcpMessage, reply_type: int, yiaddr: bytes, inform: bool = False
    ) -> bytes:
        """Build the whole reply frame to `msg`."""
        max_size = MIN_DATAGRAM
        opt57 = msg.options.get(OPT_MAX_MSG_SIZE)
        if opt57 is not None and len(opt57) == 2:
            max_size = max(MIN_DATAGRAM, int.from_bytes(opt57, "big"))
        budget = max_size - IPV4_HLEN - UDP_HLEN - BOOTP_HLEN - 4 - 1
        options = self._options(msg, reply_type, inform, budget)
        payload = build_dhcp(
            op=BOOTREPLY,
            xid=msg.xid,
            flags=msg.flags,
            ciaddr=msg.ciaddr,
            yiaddr=yiaddr,
            siaddr=_ZERO4,
            giaddr=msg.giaddr,
            chaddr=msg.chaddr,
            options=options,
        )

        chaddr = msg.chaddr[:6]
        if reply_type == DHCPNAK or (msg.ciaddr == _ZERO4 and msg.flags & FLAG_BROADCAST):
            dst_mac, dst_ip = ETH_BROADCAST, IPV4_BROADCAST
        elif msg.ciaddr != _ZERO4:
            dst_mac, dst_ip = mac, msg.ciaddr
        elif yiaddr != _ZERO4:
            dst_mac, dst_ip = (chaddr if not chaddr[0] & 1 else mac), yiaddr
        else:
            dst_mac, dst_ip = ETH_BROADCAST, IPV4_BROADCAST

        udp_len = UDP_HLEN + len(payload)
        buf = bytearray(ETH_HLEN + IPV4_HLEN + udp_len)
        off = build_eth(buf, 0, dst_mac, self._conf.our_mac, ETH_P_IP)
        off = build_ipv4(
            buf, off, src=self._server_id, dst=dst_ip, proto=PROTO_UDP, payload_len=udp_len
        )
        udp_off = off
        off = build_udp(
            buf, off, sport=DHCP_SERVER_PORT, dport=DHCP_CLIENT_PORT, payload_len=len(payload)
        )
        buf[off:] = payload
        set_udp_checksum4(buf, udp_off, udp_len, self._server_id, dst_ip)

        name = _NAMES[reply_type]
        self._counters.event("dhcp: " + name)
        if self._log is not None:
            self._log(f"DHCP: {name} to {_REQ_NAMES.get(msg.options[OPT_MSG_TYPE][0], '?')}")
        return bytes(buf)
