"""The start-up summary against the man page's EXAMPLES blocks."""

from __future__ import annotations

from dataclasses import replace
from ipaddress import IPv4Address, IPv4Interface, IPv6Address

import pytest

from passt.cli import parse_args
from passt.config import Mode
from passt.hostinfo import HostInfo
from passt.summary import format_mac, format_summary

from .conftest import make_config, make_ip4, make_ip6

# The host of the man page's examples (data only; nothing is contacted).
HOST = HostInfo(
    ifname="eth0",
    mac=bytes.fromhex("2816ad39a9ea"),
    mtu=1500,
    addr4=IPv4Address("192.168.1.118"),
    prefix4=24,
    gw4=IPv4Address("192.168.1.1"),
    addr6=IPv6Address("2a02:6d40:3ca5:2001:b81d:fa4a:8cdd:cf17"),
    prefix6=128,
    gw6=IPv6Address("fe80::62e3:27ff:fe33:2b01"),
    dns4=(IPv4Address("127.0.0.53"),),
    search=("redhat.com",),
    route4=True,
    route6=True,
    all_ifaddrs=(IPv4Interface("192.168.1.118/24"),),
)

# Verbatim from passt.1, EXAMPLES (the roff keeps one leading space per nested line).
MAN_PASTA = """\
Outbound interface: eth0, namespace interface: eth0
ARP:
 address: 28:16:ad:39:a9:ea
DHCP:
 assign: 192.168.1.118
 mask: 255.255.255.0
 router: 192.168.1.1
NDP/DHCPv6:
 assign: 2a02:6d40:3ca5:2001:b81d:fa4a:8cdd:cf17
 router: fe80::62e3:27ff:fe33:2b01
"""

MAN_PASST = """\
Outbound interface: eth0
ARP:
 address: 28:16:ad:39:a9:ea
DHCP:
 assign: 192.168.1.118
 mask: 255.255.255.0
 router: 192.168.1.1
 search:
 redhat.com
NDP/DHCPv6:
 assign: 2a02:6d40:3ca5:2001:b81d:fa4a:8cdd:cf17
 router: fe80::62e3:27ff:fe33:2b01
 search:
 redhat.com
"""


def _shape(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines()]


@pytest.mark.conformance("summary.pasta")
def test_pasta_summary_matches_man_page() -> None:
    """`./pasta` prints the man page's block: interfaces, ARP, DHCP, NDP/DHCPv6."""
    text = format_summary(parse_args(Mode.PASTA, [], host=HOST))
    assert _shape(text) == _shape(MAN_PASTA)
    assert text.endswith("\n")


@pytest.mark.conformance("summary.passt")
def test_passt_summary_matches_man_page() -> None:
    """`./passt -f -t 2222:22` prints the man page's block, search list from resolv.conf."""
    text = format_summary(parse_args(Mode.PASST, ["-f", "-t", "2222:22"], host=HOST))
    assert _shape(text) == _shape(MAN_PASST)


def test_passt_summary_exact_indentation() -> None:
    text = format_summary(parse_args(Mode.PASST, ["-D", "192.0.2.53", "-D", "2001:db8::53"],
                                     host=HOST))
    assert text == (
        "Outbound interface: eth0\n"
        "ARP:\n"
        "    address: 28:16:ad:39:a9:ea\n"
        "DHCP:\n"
        "    assign: 192.168.1.118\n"
        "    mask: 255.255.255.0\n"
        "    router: 192.168.1.1\n"
        "    DNS:\n"
        "        192.0.2.53\n"
        "    search:\n"
        "        redhat.com\n"
        "NDP/DHCPv6:\n"
        "    assign: 2a02:6d40:3ca5:2001:b81d:fa4a:8cdd:cf17\n"
        "    router: fe80::62e3:27ff:fe33:2b01\n"
        "    DNS:\n"
        "        2001:db8::53\n"
        "    search:\n"
        "        redhat.com\n"
    )


def test_pasta_names_its_tap() -> None:
    text = format_summary(parse_args(Mode.PASTA, ["-I", "tap9"], host=HOST))
    assert text.splitlines()[0] == "Outbound interface: eth0, namespace interface: tap9"


@pytest.mark.conformance("summary.omitted-blocks")
def test_blocks_omitted_for_disabled_families_and_services() -> None:
    """Blocks of a disabled family or service are left out."""
    lines = format_summary(make_config(ip6=None)).splitlines()
    assert "ARP:" in lines and "DHCP:" in lines and not any(line.startswith("NDP") for line in lines)
    lines = format_summary(make_config(ip4=None)).splitlines()
    assert "ARP:" not in lines and "DHCP:" not in lines and "NDP/DHCPv6:" in lines
    lines = format_summary(make_config(dhcp=False)).splitlines()
    assert "ARP:" in lines and "DHCP:" not in lines
    assert "NDP:" in format_summary(make_config(dhcpv6=False)).splitlines()
    assert "DHCPv6:" in format_summary(make_config(ndp=False)).splitlines()
    lines = format_summary(make_config(ndp=False, dhcpv6=False)).splitlines()
    assert not any("assign: 2001" in line for line in lines)


def test_optional_lines() -> None:
    text = format_summary(make_config(ip4=make_ip4(gateway=None, dns=()), ip6=make_ip6(dns=()),
                                      search=()))
    assert "router: 192" not in text and "DNS:" not in text and "search:" not in text
    assert "    router: fe80::1\n" in text
    text = format_summary(make_config(ip4=make_ip4(prefix_len=20)))
    assert "    mask: 255.255.240.0\n" in text


def test_format_mac() -> None:
    assert format_mac(bytes.fromhex("0a0b0c0d0e0f")) == "0a:0b:0c:0d:0e:0f"


def test_summary_host_replace_keeps_mac() -> None:
    conf = parse_args(Mode.PASST, ["-M", "9a:55:9a:55:9a:55"], host=replace(HOST, search=()))
    assert "    address: 9a:55:9a:55:9a:55\n" in format_summary(conf)
