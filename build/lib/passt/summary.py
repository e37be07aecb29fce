"""The start-up summary both programs print, shaped as in the man page's EXAMPLES.

    Outbound interface: eth0[, namespace interface: eth0]   (pasta adds the tap name)
    ARP:                                  only with IPv4
        address: <our MAC>
    DHCP:                                 IPv4 and DHCP enabled
        assign: <address>
        mask: <dotted netmask>
        router: <gateway>                 when there is one
        DNS:                              when there are IPv4 servers
            <server>                      one a line
        search:                           when there is a search list
            <domain>                      one a line
    NDP/DHCPv6:                           IPv6 enabled; "NDP:" or "DHCPv6:" when only
        assign: <address>                 one of the two is enabled, omitted if neither
        router: <gateway>
        DNS: / search:                    as above, IPv6 servers

The man page's roff shows every nested line with one leading space, which is
what its renderer leaves of the real indentation; we indent by four spaces
per level.  Every line, the last included, ends in a newline.
"""

from __future__ import annotations

from typing import Final

from passt.config import Config, Mode

INDENT: Final = "    "


def format_mac(mac: bytes) -> str:
    """aa:bb:cc:dd:ee:ff."""
    return ":".join(f"{b:02x}" for b in mac)


def _names(lines: list[str], title: str, items: tuple[object, ...]) -> None:
    if items:
        lines.append(f"{INDENT}{title}:")
        lines.extend(f"{INDENT}{INDENT}{item}" for item in items)


def format_summary(conf: Config) -> str:
    """The summary block for `conf` (see the module docstring for its shape)."""
    head = f"Outbound interface: {conf.out_ifname}"
    if conf.mode is Mode.PASTA:
        head += f", namespace interface: {conf.tap_name}"
    lines = [head]

    if conf.ip4 is not None:
        lines += ["ARP:", f"{INDENT}address: {format_mac(conf.our_mac)}"]
        if conf.dhcp:
            lines += ["DHCP:",
                      f"{INDENT}assign: {conf.ip4.addr}",
                      f"{INDENT}mask: {conf.ip4.netmask}"]
            if conf.ip4.gateway is not None:
                lines.append(f"{INDENT}router: {conf.ip4.gateway}")
            _names(lines, "DNS", conf.ip4.dns)
            _names(lines, "search", conf.search)

    if conf.ip6 is not None:
        services = [name for name, on in (("NDP", conf.ndp), ("DHCPv6", conf.dhcpv6)) if on]
        if services:
            lines += [f"{'/'.join(services)}:",
                      f"{INDENT}assign: {conf.ip6.addr}",
                      f"{INDENT}router: {conf.ip6.gateway}"]
            _names(lines, "DNS", conf.ip6.dns)
            _names(lines, "search", conf.search)

    return "\n".join(lines) + "\n"
