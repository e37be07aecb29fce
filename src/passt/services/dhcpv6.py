"""DHCPv6 server (RFC 8415), stateful for one address, one guest.

Like DHCP, there is one client and one address (conf.ip6.addr), so no
bindings are kept: every IA_NA the guest asks about is answered with that
address, infinite lifetimes and T1 = T2 = infinity (RFC 8415 section 7.7:
the client never renews).  Our DUID is a DUID-LL of our MAC, stable for a
given -M.

    frame --eth/ipv6/udp(547)/dhcpv6 checks--> learn MAC/address
          SOLICIT               -> ADVERTISE (preference 255), or REPLY with
                                   Rapid Commit when the client asked for it
          REQUEST/RENEW/REBIND  -> REPLY with the IA_NA(s)
          CONFIRM               -> REPLY, status Success or NotOnLink (an address
                                   outside conf.ip6.addr/prefix_len); nothing when
                                   the CONFIRM carries no address (section 18.3.3)
          INFORMATION-REQUEST   -> REPLY without IAs
          RELEASE/DECLINE       -> REPLY, status Success
          anything else         -> dropped

Each reply carries Server ID (2), the client's Client ID (1), DNS servers
(23) when conf.ip6.dns has any, the domain list (24, RFC 1035 format
without compression) when conf.search has any, and the client FQDN (39,
RFC 4704) with --fqdn (flag O when the client asked us to update DNS, which
we never do; as upstream), whether or not the Option Request option named
them (servers MAY send unrequested options); RELEASE/DECLINE replies carry
only the status.  Only the
first IA_NA of a message gets the address; further IA_NAs get status
NoAddrsAvail, IA_TA NoAddrsAvail, IA_PD NoPrefixAvail.

Server ID checks (RFC 8415 section 16): SOLICIT, CONFIRM and REBIND carrying
one are discarded; REQUEST, RENEW, RELEASE and DECLINE must carry ours; an
INFORMATION-REQUEST naming another server is discarded.  A Client ID is
required except in INFORMATION-REQUEST.

Replies go from conf.ip6.our_ll port 547 to the client's address port 546,
to the MAC the request came from.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from ipaddress import IPv6Address, IPv6Network
from typing import Final

from passt.config import Config
from passt.counters import Counters
from passt.guest import GuestState
from passt.wire.dhcp import domain_labels, encode_domain_names
from passt.wire.dhcpv6 import (
    ADVERTISE,
    CONFIRM,
    DECLINE,
    DHCPV6_CLIENT_PORT,
    DHCPV6_SERVER_PORT,
    FQDN6_FLAG_O,
    FQDN6_FLAG_S,
    INFINITY,
    INFORMATION_REQUEST,
    OPT_CLIENT_FQDN,
    OPT_CLIENTID,
    OPT_DNS_SERVERS,
    OPT_DOMAIN_LIST,
    OPT_IA_NA,
    OPT_IA_PD,
    OPT_IA_TA,
    OPT_IAADDR,
    OPT_PREFERENCE,
    OPT_RAPID_COMMIT,
    OPT_SERVERID,
    REBIND,
    RELEASE,
    RENEW,
    REPLY,
    REQUEST,
    SOLICIT,
    STATUS_NO_ADDRS_AVAIL,
    STATUS_NO_PREFIX_AVAIL,
    STATUS_NOT_ON_LINK,
    STATUS_SUCCESS,
    Dhcpv6Message,
    build_dhcpv6,
    duid_ll,
    find_option,
    opt_ia_na,
    opt_iaaddr,
    opt_status,
    option6,
    parse_dhcpv6,
    parse_ia_na,
    parse_iaaddr,
)
from passt.wire.errors import ParseError
from passt.wire.eth import ETH_HLEN, ETH_P_IPV6, build_eth, parse_eth
from passt.wire.ipv6 import IPV6_ANY, IPV6_HLEN, PROTO_UDP, build_ipv6, parse_ipv6
from passt.wire.udp import UDP_HLEN, build_udp, parse_udp, set_udp_checksum6, udp_checksum_ok6

#: Longest DUID (RFC 8415 section 11.1: 128 octets plus the 2-octet type).
MAX_DUID_LEN: Final = 130
#: ADVERTISE preference: 255 tells the client to stop collecting and pick us at once.
PREFERENCE: Final = 255

_NEEDS_OUR_SERVER_ID: Final = frozenset((REQUEST, RENEW, RELEASE, DECLINE))
_NO_SERVER_ID: Final = frozenset((SOLICIT, CONFIRM, REBIND))
_NAMES: Final = {
    SOLICIT: "SOLICIT",
    REQUEST: "REQUEST/RENEW/CONFIRM",
    RENEW: "REQUEST/RENEW/CONFIRM",
    REBIND: "REQUEST/RENEW/CONFIRM",
    CONFIRM: "REQUEST/RENEW/CONFIRM",
    INFORMATION_REQUEST: "INFORMATION-REQUEST",
    RELEASE: "RELEASE/DECLINE",
    DECLINE: "RELEASE/DECLINE",
}


class Dhcpv6Service:
    """Answers the guest's DHCPv6 requests; sans-IO, one frame in, at most one out."""

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
        self._server_id = duid_ll(conf.our_mac)
        self._our_ll = b""
        #: Options every reply carries after Server/Client ID.
        self._info = b""
        self._fqdn = b""
        self._net: IPv6Network | None = None
        ip6 = conf.ip6
        if ip6 is None:
            return
        self._our_ll = ip6.our_ll.packed
        self._net = IPv6Network((int(ip6.addr), ip6.prefix_len), strict=False)
        if ip6.dns:
            self._info += option6(OPT_DNS_SERVERS, b"".join(a.packed for a in ip6.dns))
        domains = encode_domain_names(conf.search, compress=False)
        if domains:
            self._info += option6(OPT_DOMAIN_LIST, domains)
        #: --fqdn in wire format for option 39; b"": none (or not encodable).
        self._fqdn = b""
        if conf.fqdn and conf.fqdn.strip(".") and domain_labels(conf.fqdn) is not None:
            self._fqdn = encode_domain_names([conf.fqdn], compress=False)

    def _drop(self, reason: str) -> None:
        self._counters.drop("dhcpv6: " + reason)

    def handle(self, frame: memoryview) -> bytes | None:
        """Handle one Ethernet/IPv6/UDP frame to port 547; returns the reply frame, or None."""
        conf = self._conf
        if conf.ip6 is None or not conf.dhcpv6:
            self._drop("disabled")
            return None
        try:
            eth = parse_eth(frame)
            if eth.ethertype != ETH_P_IPV6:
                raise ParseError("not ipv6")
            iph, proto, l4 = parse_ipv6(frame[ETH_HLEN:])
            if proto != PROTO_UDP:
                raise ParseError("not udp")
            udph, payload = parse_udp(l4)
            if udph.dport != DHCPV6_SERVER_PORT:
                raise ParseError("not port 547")
            if self._verify_l4 and not udp_checksum_ok6(l4[: udph.length], iph.src, iph.dst):
                raise ParseError("bad udp checksum")
            if iph.src == IPV6_ANY or iph.src[0] == 0xFF:
                raise ParseError("bad source address")
            if eth.src[0] & 1:
                raise ParseError("multicast source")
            msg = parse_dhcpv6(payload)
            options = self._reply_options(msg)
        except ParseError as e:
            self._drop(str(e))
            return None
        if options is None:
            return None

        self._guest.learn_mac(eth.src)
        self._guest.learn_addr6(iph.src)
        reply_type = REPLY
        if msg.msg_type == SOLICIT and find_option(msg.options, OPT_RAPID_COMMIT) is None:
            reply_type = ADVERTISE
        payload_out = build_dhcpv6(reply_type, msg.xid, options)

        udp_len = UDP_HLEN + len(payload_out)
        buf = bytearray(ETH_HLEN + IPV6_HLEN + udp_len)
        off = build_eth(buf, 0, eth.src, conf.our_mac, ETH_P_IPV6)
        off = build_ipv6(
            buf, off, src=self._our_ll, dst=iph.src, next_header=PROTO_UDP, payload_len=udp_len
        )
        udp_off = off
        off = build_udp(
            buf,
            off,
            sport=DHCPV6_SERVER_PORT,
            dport=DHCPV6_CLIENT_PORT,
            payload_len=len(payload_out),
        )
        buf[off:] = payload_out
        set_udp_checksum6(buf, udp_off, udp_len, self._our_ll, iph.src)

        sent = "ADVERTISE" if reply_type == ADVERTISE else "REPLY"
        self._counters.event("dhcpv6: " + sent.lower())
        if self._log is not None:
            self._log(f"DHCPv6: received {_NAMES[msg.msg_type]}, sending {sent}")
        return bytes(buf)

    def _reply_options(self, msg: Dhcpv6Message) -> bytes | None:
        """Options of the reply to `msg`; None (counted) when it gets no reply."""
        kind = msg.msg_type
        if kind not in _NAMES:
            self._drop("unexpected message type")
            return None
        client_id = find_option(msg.options, OPT_CLIENTID)
        if client_id is not None and not 0 < len(client_id) <= MAX_DUID_LEN:
            raise ParseError("bad client id")
        if client_id is None and kind != INFORMATION_REQUEST:
            raise ParseError("no client id")
        server_id = find_option(msg.options, OPT_SERVERID)
        if server_id is not None and kind in _NO_SERVER_ID:
            raise ParseError("server id not allowed")
        if kind in _NEEDS_OUR_SERVER_ID and server_id is None:
            raise ParseError("no server id")
        if server_id is not None and bytes(server_id) != self._server_id:
            self._counters.event("dhcpv6: message for another server")
            return None

        head = option6(OPT_SERVERID, self._server_id)
        if client_id is not None:
            head += option6(OPT_CLIENTID, bytes(client_id))
        if kind in (SOLICIT, REQUEST, RENEW, REBIND):
            body = self._ias(msg)
            if kind == SOLICIT:
                if find_option(msg.options, OPT_RAPID_COMMIT) is not None:
                    head += option6(OPT_RAPID_COMMIT)
                else:
                    head += option6(OPT_PREFERENCE, bytes((PREFERENCE,)))
            return head + body + self._info + self._client_fqdn(msg)
        if kind == CONFIRM:
            status = self._confirm(msg)
            if status is None:
                self._counters.event("dhcpv6: confirm without addresses")
                return None
            return head + opt_status(status) + self._info + self._client_fqdn(msg)
        if kind in (RELEASE, DECLINE):
            return head + opt_status(STATUS_SUCCESS)
        return head + self._info + self._client_fqdn(msg)

    def _client_fqdn(self, msg: Dhcpv6Message) -> bytes:
        """Option 39 with --fqdn (RFC 4704), as upstream: flag O when the client set S; b"": none."""
        if not self._fqdn:
            return b""
        theirs = find_option(msg.options, OPT_CLIENT_FQDN)
        flags = FQDN6_FLAG_O if theirs is not None and len(theirs) and theirs[0] & FQDN6_FLAG_S else 0
        return option6(OPT_CLIENT_FQDN, bytes((flags,)) + self._fqdn)

    def _ias(self, msg: Dhcpv6Message) -> bytes:
        """IA options answering the client's: our address in the first IA_NA."""
        assert self._conf.ip6 is not None
        addr = self._conf.ip6.addr_b
        out = b""
        given = False
        for opt in msg.options:
            if opt.code == OPT_IA_NA:
                ia = parse_ia_na(opt.data)
                if not given:
                    out += opt_ia_na(
                        ia.iaid, INFINITY, INFINITY, opt_iaaddr(addr, INFINITY, INFINITY)
                    )
                    given = True
                else:
                    out += opt_ia_na(
                        ia.iaid, 0, 0, opt_status(STATUS_NO_ADDRS_AVAIL, "one address only")
                    )
            elif opt.code == OPT_IA_TA:
                if len(opt.data) < 4:
                    raise ParseError("short ia_ta")
                iaid = bytes(opt.data[:4])
                out += option6(
                    OPT_IA_TA, iaid + opt_status(STATUS_NO_ADDRS_AVAIL, "no temporary addresses")
                )
            elif opt.code == OPT_IA_PD:
                if len(opt.data) < 12:
                    raise ParseError("short ia_pd")
                iaid = bytes(opt.data[:4])
                out += option6(
                    OPT_IA_PD,
                    iaid
                    + struct.pack("!II", 0, 0)
                    + opt_status(STATUS_NO_PREFIX_AVAIL, "no prefixes"),
                )
        return out

    def _confirm(self, msg: Dhcpv6Message) -> int | None:
        """Status for a CONFIRM: NotOnLink if any address is off our prefix; None if no address."""
        assert self._net is not None
        seen = False
        for opt in msg.options:
            if opt.code != OPT_IA_NA:
                continue
            for sub in parse_ia_na(opt.data).options:
                if sub.code != OPT_IAADDR:
                    continue
                seen = True
                if IPv6Address(parse_iaaddr(sub.data).addr) not in self._net:
                    return STATUS_NOT_ON_LINK
        return STATUS_SUCCESS if seen else None
