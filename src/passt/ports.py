"""Port-forwarding specs (-t/-u/-T/-U) and the /proc/net scans behind `auto`.

A spec is one of the keywords, or a comma-separated list of items:

    spec   := "none" | "all" (passt only) | "auto" (pasta only) | [ADDR "/"] items
    items  := item ("," item)*
    item   := ports [":" ports]          forward, optionally to other port numbers
            | "~" ports                  exclude (upstream syntax)
    ports  := PORT | PORT "-" PORT       1..65535, a range low to high

`A-B:C-D` maps A..B one to one onto C..D, so both ranges must have the same
length; `A:T` maps one port.  A port may be named once per spec: overlapping
items are an error rather than "last one wins", because a silent overlap is
almost always a typo.  Exclusions take ports out of the listed ones; a spec
made only of exclusions means "every non-ephemeral port but these" (ALL
mode) in passt and pasta alike, as today's passt does: in pasta that is not
`auto` minus the ports, but a fixed set bound at start.  The optional `ADDR/` prefix binds the
listeners to one local address instead of the wildcard.

The man page's own `22-80-32:90` example is a known erratum; the accepted
form is `22-80:32-90`.

`scan_bound_ports` reads the kernel's socket tables (proc(5)): each line has a
hex `ADDR:PORT` local address, a remote one and a hex state.  TCP counts
sockets in LISTEN (0x0A); UDP counts bound, unconnected sockets (state 0x07
"close", remote port 0).  A missing file (no IPv6 in the kernel) counts as
empty.  This is what pasta's AUTO mode rescans while running; the caller
decides which side's /proc to read (a /proc/PID/net path reads the
namespace of PID).
"""

from __future__ import annotations

from collections.abc import Sequence
from ipaddress import IPv4Address, IPv6Address, ip_address
from typing import Final

from passt.config import FwdMode, Mode, PortFwd

#: Highest TCP/UDP port number; 0 is not a port one can forward.
PORT_MAX: Final = 65535

#: /proc/net/tcp state for a listening socket (include/net/tcp_states.h).
TCP_LISTEN_STATE: Final = 0x0A
#: /proc/net/udp state of a bound, unconnected UDP socket (TCP_CLOSE).
UDP_UNCONNECTED_STATE: Final = 0x07

#: Where Linux keeps the ephemeral (auto-bind) range.
EPHEMERAL_RANGE_PATH: Final = "/proc/sys/net/ipv4/ip_local_port_range"
#: Linux's default ephemeral range, used when the file can't be read.
DEFAULT_EPHEMERAL_RANGE: Final = (32768, 60999)


class ConfigError(Exception):
    """A bad option or environment: the message is one line saying what is wrong and what to do.

    Lives here because this is the lowest of the configuration modules; `cli`
    re-exports it.  Messages carry no program name: the caller prints
    "passt: <message>".
    """


def _parse_port(text: str, option: str, spec: str) -> int:
    if not text:
        raise ConfigError(f"empty port in {option} '{spec}'")
    if not (text.isascii() and text.isdigit()) or len(text) > 5:
        raise ConfigError(f"invalid port '{text}' in {option} '{spec}': ports are 1-65535")
    port = int(text)
    if not 1 <= port <= PORT_MAX:
        raise ConfigError(f"invalid port '{text}' in {option} '{spec}': ports are 1-65535")
    return port


def _parse_range(text: str, option: str, spec: str) -> tuple[int, int]:
    """`PORT` or `LOW-HIGH` -> (first, last), inclusive."""
    if not text:
        raise ConfigError(f"empty port in {option} '{spec}'")
    low_s, sep, high_s = text.partition("-")
    low = _parse_port(low_s, option, spec)
    if not sep:
        return low, low
    high = _parse_port(high_s, option, spec)
    if high < low:
        raise ConfigError(f"invalid range '{text}' in {option} '{spec}': first port is above last")
    return low, high


def _parse_bind_addr(text: str, option: str, spec: str) -> IPv4Address | IPv6Address:
    stripped = text[1:-1] if text.startswith("[") and text.endswith("]") else text
    try:
        return ip_address(stripped)
    except ValueError:
        raise ConfigError(f"invalid address '{text}' in {option} '{spec}'") from None


def parse_port_spec(spec: str, *, mode: Mode, option: str) -> PortFwd:
    """Parse one -t/-u/-T/-U argument; `option` is named in error messages.

    Raises ConfigError (one line, no program prefix) on any malformed input.
    """
    text = spec.strip()
    if text == "none":
        return PortFwd(mode=FwdMode.NONE, explicit=True)
    if text == "all":
        if mode is not Mode.PASST:
            raise ConfigError(f"'all' is passt-only for {option}; pasta uses 'auto'")
        return PortFwd(mode=FwdMode.ALL, explicit=True)
    if text == "auto":
        if mode is not Mode.PASTA:
            raise ConfigError(f"'auto' is pasta-only for {option}; passt uses 'all'")
        return PortFwd(mode=FwdMode.AUTO, explicit=True)
    if not text:
        raise ConfigError(f"empty port spec for {option}; give ports, 'none' or "
                          f"'{'all' if mode is Mode.PASST else 'auto'}'")

    addr: IPv4Address | IPv6Address | None = None
    if "/" in text:
        addr_s, _, text = text.partition("/")
        addr = _parse_bind_addr(addr_s, option, spec)
        if not text:
            raise ConfigError(f"no ports after address in {option} '{spec}'")

    mapping: dict[int, int] = {}
    excluded: set[int] = set()
    for item in text.split(","):
        item = item.strip()
        if not item:
            raise ConfigError(f"empty item in {option} '{spec}'")
        if item.startswith("~"):
            low, high = _parse_range(item[1:], option, spec)
            excluded.update(range(low, high + 1))
            continue
        src_s, colon, dst_s = item.partition(":")
        low, high = _parse_range(src_s, option, spec)
        if colon:
            dst_low, dst_high = _parse_range(dst_s, option, spec)
            if dst_high - dst_low != high - low:
                raise ConfigError(f"ranges of different length in {option} '{item}': "
                                  f"{high - low + 1} ports map to {dst_high - dst_low + 1}")
        else:
            dst_low = low
        for port in range(low, high + 1):
            if port in mapping:
                raise ConfigError(f"port {port} given twice in {option} '{spec}'")
            mapping[port] = dst_low + (port - low)

    if not mapping:
        # Only exclusions: every non-ephemeral port but these, in both programs
        # (today's passt; the 2021 page has no '~'): ALL mode, bound at start.
        return PortFwd(mode=FwdMode.ALL, excluded=frozenset(excluded), addr=addr, explicit=True)
    ports = tuple((p, t) for p, t in sorted(mapping.items()) if p not in excluded)
    if not ports:
        raise ConfigError(f"{option} '{spec}' excludes every port it lists")
    return PortFwd(mode=FwdMode.SPEC, ports=ports, excluded=frozenset(excluded),
                   addr=addr, explicit=True)


def merge_port_fwd(first: PortFwd, second: PortFwd, *, option: str) -> PortFwd:
    """Combine two specs given for the same option (`-t 22 -t 80`).

    Only lists combine; a keyword (none/all/auto) must be the only spec.
    """
    if first.mode is not FwdMode.SPEC or second.mode is not FwdMode.SPEC:
        raise ConfigError(f"{option} given more than once with none/all/auto or exclusions only; "
                          "give one spec")
    if first.addr != second.addr:
        raise ConfigError(f"{option} given with different bind addresses; use one")
    seen = dict(first.ports)
    for port, target in second.ports:
        if port in seen:
            raise ConfigError(f"port {port} given twice in {option}")
        seen[port] = target
    excluded = first.excluded | second.excluded
    ports = tuple((p, t) for p, t in sorted(seen.items()) if p not in excluded)
    return PortFwd(mode=FwdMode.SPEC, ports=ports, excluded=excluded,
                   addr=first.addr, explicit=True)


def follow(tcp: PortFwd) -> PortFwd:
    """The UDP forwarding implied by a TCP spec when -u (or -U) is absent.

    Man page, -u: "UDP ports with numbers corresponding to forwarded TCP port
    numbers are forwarded too, without, however, any port translation".  A
    list gives the same listening ports, each to itself; `all` gives `all`
    with the same exclusions; `auto` gives `auto`, whose rescan also takes
    the TCP ports found (flows/fwd.py); `none` gives `none`.
    """
    if tcp.mode is FwdMode.SPEC:
        return PortFwd(mode=FwdMode.SPEC, ports=tuple((p, p) for p, _ in tcp.ports),
                       excluded=tcp.excluded, addr=tcp.addr, explicit=False)
    return PortFwd(mode=tcp.mode, excluded=tcp.excluded, addr=tcp.addr, explicit=False)


def _hex_port(field: str) -> int | None:
    """Port of a /proc/net `HEXADDR:HEXPORT` field; None if malformed."""
    _, colon, port_s = field.rpartition(":")
    if not colon or not port_s:
        return None
    try:
        return int(port_s, 16)
    except ValueError:
        return None


def parse_proc_net(text: str, *, tcp: bool) -> set[int]:
    """Bound local ports in one /proc/net/{tcp,tcp6,udp,udp6} table's text."""
    ports: set[int] = set()
    lines = text.splitlines()
    for line in lines[1:]:  # first line is the column header
        fields = line.split()
        if len(fields) < 4:
            continue
        local, remote, state_s = fields[1], fields[2], fields[3]
        try:
            state = int(state_s, 16)
        except ValueError:
            continue
        port = _hex_port(local)
        if port is None or port == 0:
            continue
        if tcp:
            if state != TCP_LISTEN_STATE:
                continue
        else:
            if state != UDP_UNCONNECTED_STATE or _hex_port(remote) != 0:
                continue
        ports.add(port)
    return ports


def scan_bound_ports(paths: Sequence[str], *, tcp: bool) -> set[int]:
    """Union of bound ports over /proc/net tables; unreadable files count as empty."""
    ports: set[int] = set()
    for path in paths:
        try:
            with open(path, encoding="ascii", errors="replace") as f:
                text = f.read()
        except OSError:
            continue
        ports |= parse_proc_net(text, tcp=tcp)
    return ports


def ephemeral_range(path: str = EPHEMERAL_RANGE_PATH) -> tuple[int, int]:
    """The kernel's ephemeral port range (inclusive); Linux's default if unreadable."""
    try:
        with open(path, encoding="ascii") as f:
            fields = f.read().split()
        low, high = int(fields[0]), int(fields[1])
    except (OSError, ValueError, IndexError):
        return DEFAULT_EPHEMERAL_RANGE
    if not 1 <= low <= high <= PORT_MAX:
        return DEFAULT_EPHEMERAL_RANGE
    return low, high
