"""Command line of passt and pasta: argv -> a frozen `Config`.

Two passes.  First a small getopt-like tokenizer (hand-rolled: argparse's
messages span lines and it has no notion of "optional argument in a separate
word only when it looks like a file"), then `_build` turns the collected
options plus a `HostInfo` snapshot into a `Config`, applying the man page's
defaults.

Syntax accepted, for every option of the man page in both spellings:

    --opt value   --opt=value   -o value   -ovalue   -fd (bundled flags)
    -fm1500 / -fm 1500 (a value-taking letter ends a bundle)
    --            ends options (pasta: the rest is the command)

Decisions the man page leaves open, made here:

* -p/--pcap takes an optional argument.  Attached forms (`-pFILE`,
  `--pcap=FILE`) always work.  A separate word is taken as the file in passt
  when it doesn't start with "-" (passt has no positional arguments); in
  pasta only when it also contains "/" or ends in ".pcap", because
  `pasta -p sh` must run `sh`.  Bare -p writes
  /tmp/{passt,pasta}_<UTC ISO 8601 timestamp>_<N>.pcap where N is the number of
  *other* running processes of the same program (found by scanning /proc
  for that command name), so the first instance writes ..._0.pcap.
* -m accepts 68..65520.  Below 1280 IPv6 can't work (RFC 8200 section 5):
  IPv6 is disabled with a warning on stderr, and with -6 that is an error.
  -m sets both the advertised MTU and pasta's tap MTU.
* -a/-g take one address per family; a second one of the same family is an
  error.  -a also accepts ADDR/PREFIX (then -n must not also be given).
* A family is enabled when an address is known (-a or the host's) and a
  route is (the host's default route, or an explicit -g for that family).
  So `-a` plus `-g` makes a family work on a host without a default route.
* -n: given mask, else -a's /PREFIX, else the prefix of the host address equal
  to the assigned one, else the RFC 4632 class (A /8, B /16, C /24; /24 for
  anything above class C).  IPv6 prefix: -a's /PREFIX, else the host
  address's prefix when it is 64 or shorter, else 64 (a DHCPv6-assigned /128
  would make a useless Router Advertisement prefix).
* IPv6 gateway: -g, else the host's default gateway, else (a default route
  without a gateway) fe80::1.
* DNS: -D repeatable, per family by address; `-D ""` alone disables DNS.
  Without -D, passt sends the resolv.conf nameservers, loopback ones (a guest
  can't reach the host's 127.0.0.53 stub) replaced by --dns-forward, else
  --map-host-loopback, else left out (flows/outbound.py); pasta sends none.
  Search: -S space-separated, repeatable, `-S ""` disables; without it passt
  sends the resolv.conf list, pasta none.
* Port forwarding: -t/-u/-T/-U repeatable when each is a list (`-t 22 -t 80`
  merges).  Defaults: passt none; pasta auto.  UDP follows TCP: if -u is not
  given and -t is an explicit list, -u gets the same listening ports, each
  mapped to itself (likewise -U after -T).  When TCP is `auto` (pasta's
  default) UDP stays `auto` too: the man page's "UDP ports matching
  forwarded TCP ports" then has to be honoured by the run-time scan, which
  should add the TCP listening ports to the UDP set.  --no-tcp/--no-udp turn
  the defaults into none; combined with an explicit spec they are an error.
* pasta positionals: the first one, if all digits, is TARGET_PID (options
  may follow it, another positional may not); otherwise it and everything
  after it is the command, unparsed (`pasta ls -l` runs `ls -l`).  After
  `--` everything is the command.  --netns NAME means /run/netns/NAME; a
  value with "/" is a path.  --netns with TARGET_PID, or a command with
  TARGET_PID, is an error; --userns needs --netns or TARGET_PID.  The tap
  is named after -I, else the host interface, else "eth0" (only reachable
  with -a and -g on a host without a default route).
* -d implies -f (the man page: "Be verbose, don't run in background"); -d
  with -q is an error.  --runas UID[:GID] accepts numbers or names; without
  GID the user's primary group, or GID = UID for a number not in passwd.
  No --runas leaves `runas` None (the caller keeps its identity).

* -m 0 is upstream's "no MTU assignment": DHCP/NDP carry no MTU option, the
  tap keeps 65520.  Without -m, 65520 is sent (as today's passt).
* The options today's callers pass (Podman, libvirt, RootlessKit) follow
  upstream passt(1): --dns-forward, --dns-host, --map-host-loopback,
  --map-guest-addr and -o take one address per family; "none" (map options
  only) maps nothing, and --map-host-loopback none is --no-map-gw.  The
  Config holds them as given; the data path owns their defaults.  -F implies
  -1 in passt, as upstream.  --log-size defaults to 1 MiB, at least 4096.
  --trace implies -d.  --vhost-user is recognised only to be refused.
* Long options may be abbreviated to a unique prefix (getopt_long does).
  Unknown options, missing and unwanted values are reported in glibc
  getopt's words ("unrecognized option '--x'", "invalid option -- 'x'",
  "option '--mtu' requires an argument"): Podman's fallback for older pasta
  matches on them.

Every error is a `ConfigError` whose message is one line without the program
name, e.g. "invalid address '10.0.0.300' for -a"; the caller prints it as
"pasta: <message>".  Other usage errors end in "; see pasta --help".
"""

from __future__ import annotations

import enum
import grp
import os
import pwd
import sys
import time
from dataclasses import dataclass, field
from ipaddress import (
    IPv4Address,
    IPv4Network,
    IPv6Address,
    ip_address,
)
from typing import Final

from passt import __version__
from passt.config import (
    DEFAULT_TAP_MTU,
    MIN_MTU,
    MIN_MTU_IPV6,
    Config,
    FwdMode,
    Ip4Config,
    Ip6Config,
    Mode,
    PortFwd,
)
from passt.flows.outbound import advertised_dns
from passt.hostinfo import HostInfo, discover
from passt.ports import ConfigError, follow, merge_port_fwd, parse_port_spec

__all__ = ["ConfigError", "parse_args", "help_text", "default_pcap_path"]

#: Largest MTU we accept: 65535 minus the 15 bytes that keep frame + headers in 64 KiB.
MAX_MTU: Final = DEFAULT_TAP_MTU
#: Linux IFNAMSIZ - 1.
IFNAMSIZ_MAX: Final = 15
#: sun_path is 108 bytes including the terminating NUL.
SUN_PATH_MAX: Final = 107
#: Where `ip netns add NAME` puts named namespaces.
NETNS_RUN_DIR: Final = "/run/netns"
#: Locally administered MAC used when neither -M nor the host interface gives one.
FALLBACK_MAC: Final = bytes.fromhex("9a559a559a55")
#: pasta's tap name when neither -I nor a host interface with a default route gives one.
FALLBACK_NS_IFNAME: Final = "eth0"
#: IPv6 gateway when the host's default route has none (a device route).
FALLBACK_GW6: Final = IPv6Address("fe80::1")
#: RFC 8200 has no prefix shorter rule for SLAAC, but RFC 4862 needs /64 for it.
DEFAULT_PREFIX6: Final = 64
#: --log-size default (upstream's) and the smallest size we accept (a few lines).
DEFAULT_LOG_SIZE: Final = 1 << 20
MIN_LOG_SIZE: Final = 4096
#: Upper bound of one DNS name (RFC 1035 section 2.3.4).
DNS_NAME_MAX: Final = 253
DNS_LABEL_MAX: Final = 63


class Arg(enum.Enum):
    """Whether an option takes a value."""

    NONE = enum.auto()
    REQUIRED = enum.auto()
    OPTIONAL = enum.auto()


BOTH: Final = frozenset({Mode.PASST, Mode.PASTA})
PASST_ONLY: Final = frozenset({Mode.PASST})
PASTA_ONLY: Final = frozenset({Mode.PASTA})


@dataclass(frozen=True, slots=True)
class Opt:
    """One command-line option: spellings, value kind, programs, help line."""

    long: str
    short: str | None
    arg: Arg
    modes: frozenset[Mode]
    metavar: str = ""
    help: str = ""
    #: Left out of --help (recognised only to be refused clearly).
    hidden: bool = False


OPTIONS: Final[tuple[Opt, ...]] = (
    Opt("debug", "d", Arg.NONE, BOTH, help="Be verbose, don't run in background"),
    Opt("quiet", "q", Arg.NONE, BOTH, help="Don't print informational messages"),
    Opt("foreground", "f", Arg.NONE, BOTH, help="Don't run in background"),
    Opt("stderr", "e", Arg.NONE, BOTH, help="Log to stderr too"),
    Opt("help", "h", Arg.NONE, BOTH, help="Display this help message and exit"),
    Opt("version", None, Arg.NONE, BOTH, help="Show the version and exit"),
    Opt("pcap", "p", Arg.OPTIONAL, BOTH, "[FILE]",
        "Log tap-facing traffic to pcap FILE\n"
        "default: /tmp/{prog}_ISO8601-timestamp_instance.pcap"),
    Opt("pid", "P", Arg.REQUIRED, BOTH, "FILE", "Write own PID to FILE once initialised"),
    Opt("log-file", "l", Arg.REQUIRED, BOTH, "FILE", "Also log to FILE"),
    Opt("mtu", "m", Arg.REQUIRED, BOTH, "MTU",
        "Assign MTU via DHCP/NDP (68-65520; IPv6 needs 1280)\n"
        "a zero value disables assignment\n"
        "default: 65520, sent via DHCP/NDP{tap_mtu}"),
    Opt("address", "a", Arg.REQUIRED, BOTH, "ADDR",
        "Assign IPv4 or IPv6 address ADDR[/PREFIX] (once per family)\n"
        "default: from interface with the first default route"),
    Opt("netmask", "n", Arg.REQUIRED, BOTH, "MASK",
        "Assign IPv4 MASK, dot-decimal or number of bits\n"
        "default: netmask of the matching host address, else RFC 4632 class"),
    Opt("mac-addr", "M", Arg.REQUIRED, BOTH, "ADDR",
        "Use source MAC address ADDR\n"
        "default: MAC address of interface with the first default route"),
    Opt("gateway", "g", Arg.REQUIRED, BOTH, "ADDR",
        "Pass IPv4 or IPv6 ADDR as gateway (once per family)\n"
        "default: gateway from the first default route"),
    Opt("interface", "i", Arg.REQUIRED, BOTH, "NAME",
        "Interface for addresses and routes\n"
        "default: interface with the first default route"),
    Opt("dns", "D", Arg.REQUIRED, BOTH, "ADDR",
        "Pass IPv4 or IPv6 ADDR as DNS (repeatable; -D \"\" disables)\n"
        "default: {dns_default}"),
    Opt("search", "S", Arg.REQUIRED, BOTH, "LIST",
        "Space-separated list, search domains (-S \"\" disables)\n"
        "default: {search_default}"),
    Opt("no-tcp", None, Arg.NONE, BOTH, help="Disable TCP protocol handler"),
    Opt("no-udp", None, Arg.NONE, BOTH, help="Disable UDP protocol handler"),
    Opt("no-icmp", None, Arg.NONE, BOTH, help="Disable ICMP/ICMPv6 echo handler"),
    Opt("no-dhcp", None, Arg.NONE, BOTH, help="Disable DHCP server"),
    Opt("no-ndp", None, Arg.NONE, BOTH, help="Disable NDP responses"),
    Opt("no-dhcpv6", None, Arg.NONE, BOTH, help="Disable DHCPv6 server"),
    Opt("no-ra", None, Arg.NONE, BOTH, help="Disable router advertisements"),
    Opt("ipv4-only", "4", Arg.NONE, BOTH, help="Enable IPv4 operation only"),
    Opt("ipv6-only", "6", Arg.NONE, BOTH, help="Enable IPv6 operation only"),
    Opt("runas", None, Arg.REQUIRED, BOTH, "UID[:GID]",
        "Run as UID:GID (numbers or names) once set up"),
    Opt("socket", "s", Arg.REQUIRED, PASST_ONLY, "PATH",
        "UNIX domain socket path\n"
        "default: probe free path starting from /tmp/passt_1.socket"),
    Opt("ns-ifname", "I", Arg.REQUIRED, PASTA_ONLY, "NAME",
        "Namespace interface name\n"
        "default: same interface name as external one"),
    Opt("tcp-ports", "t", Arg.REQUIRED, BOTH, "SPEC",
        "TCP port forwarding to {target}\n"
        "can be specified multiple times\n"
        "SPEC can be:\n"
        "  'none': don't forward any ports\n"
        "{all_or_auto}"
        "  a comma-separated list, optionally ranged with '-'\n"
        "    and optional target ports after ':', with optional\n"
        "    exclusions '~PORT' and bind address 'ADDR/', e.g.:\n"
        "    -t 22          forward local port 22 to 22\n"
        "    -t 22:23       forward local port 22 to 23\n"
        "    -t 22,25       forward ports 22, 25 to ports 22, 25\n"
        "    -t 22-80       forward ports 22 to 80\n"
        "    -t 22-80:32-90 forward ports 22 to 80 to\n"
        "                   corresponding ports plus 10\n"
        "    -t 1000-2000,~1500  forward 1000-2000 but 1500\n"
        "default: {fwd_default}"),
    Opt("udp-ports", "u", Arg.REQUIRED, BOTH, "SPEC",
        "UDP port forwarding to {target}\n"
        "SPEC is as described for TCP above\n"
        "default: {fwd_default}; without -u, ports of an explicit -t\n"
        "list are forwarded for UDP too, untranslated"),
    Opt("tcp-ns", "T", Arg.REQUIRED, PASTA_ONLY, "SPEC",
        "TCP port forwarding from namespace to init namespace\n"
        "SPEC is as described above\n"
        "default: auto"),
    Opt("udp-ns", "U", Arg.REQUIRED, PASTA_ONLY, "SPEC",
        "UDP port forwarding from namespace to init namespace\n"
        "SPEC is as described above\n"
        "default: auto; without -U, ports of an explicit -T list"),
    Opt("config-net", None, Arg.NONE, PASTA_ONLY,
        help="Configure tap interface in namespace (address, routes, MTU, up)"),
    Opt("netns", None, Arg.REQUIRED, PASTA_ONLY, "PATH|NAME",
        "Join network namespace at PATH, or /run/netns/NAME"),
    Opt("userns", None, Arg.REQUIRED, PASTA_ONLY, "PATH",
        "Join user namespace at PATH (with --netns or TARGET_PID)"),
    # options today's callers pass (Podman, libvirt, RootlessKit), upstream's syntax
    Opt("trace", None, Arg.NONE, BOTH, help="Be extra verbose, show single packets; implies -d"),
    Opt("log-size", None, Arg.REQUIRED, BOTH, "SIZE",
        "Largest size of the -l FILE in bytes; old lines make room\n"
        "default: 1 MiB"),
    Opt("fd", "F", Arg.REQUIRED, BOTH, "FD", "{fd_help}"),
    Opt("one-off", "1", Arg.NONE, PASST_ONLY, help="Quit after handling a single guest connection"),
    Opt("conf-path", "c", Arg.REQUIRED, BOTH, "PATH", "Control socket path (see docs/control.md)"),
    Opt("hostname", "H", Arg.REQUIRED, BOTH, "NAME",
        "Hostname for the guest (DHCP option 12)"),
    Opt("fqdn", None, Arg.REQUIRED, BOTH, "NAME",
        "FQDN for the guest (DHCP option 81, DHCPv6 option 39)"),
    Opt("dns-forward", None, Arg.REQUIRED, BOTH, "ADDR",
        "Answer DNS queries to ADDR through the host's resolver\n"
        "once per family; default: no forwarding address"),
    Opt("dns-host", None, Arg.REQUIRED, BOTH, "ADDR",
        "Host resolver that --dns-forward queries go to\n"
        "once per family; default: the host's first nameserver"),
    Opt("no-map-gw", None, Arg.NONE, BOTH,
        help="Don't map the gateway address to the host (= --map-host-loopback none)"),
    Opt("map-host-loopback", None, Arg.REQUIRED, BOTH, "ADDR",
        "Guest-side ADDR that stands for the host's loopback\n"
        "once per family; 'none' disables the mapping"),
    Opt("map-guest-addr", None, Arg.REQUIRED, BOTH, "ADDR",
        "Guest-side ADDR that stands for the host address the guest shadows\n"
        "once per family; default: none"),
    Opt("outbound", "o", Arg.REQUIRED, BOTH, "ADDR",
        "Source address for host-side sockets, once per family"),
    Opt("outbound-if4", None, Arg.REQUIRED, BOTH, "NAME",
        "Bind IPv4 host-side sockets to interface NAME"),
    Opt("outbound-if6", None, Arg.REQUIRED, BOTH, "NAME",
        "Bind IPv6 host-side sockets to interface NAME"),
    Opt("netns-only", None, Arg.NONE, PASTA_ONLY,
        help="Join only the network namespace, not a user namespace"),
    Opt("no-netns-quit", None, Arg.NONE, PASTA_ONLY,
        help="Keep running when the namespace or TARGET_PID goes away"),
    Opt("ns-mac-addr", None, Arg.REQUIRED, PASTA_ONLY, "ADDR",
        "MAC address of the namespace's tap\n"
        "default: the kernel's choice"),
    Opt("no-splice", None, Arg.NONE, PASTA_ONLY,
        help="No loopback bypass: local traffic goes through the tap too"),
    Opt("vhost-user", None, Arg.NONE, PASST_ONLY, hidden=True),
)

_BY_LONG: Final = {o.long: o for o in OPTIONS}
_BY_SHORT: Final = {o.short: o for o in OPTIONS if o.short is not None}


def _prog(mode: Mode) -> str:
    return mode.value


def _spelling(opt: Opt) -> str:
    return f"-{opt.short}, --{opt.long}" if opt.short else f"    --{opt.long}"


def help_text(mode: Mode) -> str:
    """The -h/--help text of one program."""
    prog = _prog(mode)
    if mode is Mode.PASST:
        usage = f"Usage: {prog} [OPTION]..."
        fmt = {
            "prog": prog, "target": "guest",
            "all_or_auto": "  'all': forward all unbound, non-ephemeral ports\n",
            "fwd_default": "none",
            "dns_default": "use addresses from /etc/resolv.conf",
            "search_default": "use search list from /etc/resolv.conf",
            "tap_mtu": "",
            "fd_help": "Use FD, an already connected guest socket; implies -1",
        }
    else:
        usage = f"Usage: {prog} [OPTION]... [TARGET_PID | [--] COMMAND [ARG]...]"
        fmt = {
            "prog": prog, "target": "namespace",
            "all_or_auto": "  'auto': forward all ports currently bound in namespace\n",
            "fwd_default": "auto",
            "dns_default": "don't send any addresses",
            "search_default": "don't send any search list",
            "tap_mtu": "; tap MTU 65520",
            "fd_help": "Use FD, an open tap device, instead of creating one",
        }
    lines = [usage, ""]
    for opt in OPTIONS:
        if mode not in opt.modes or opt.hidden:
            continue
        head = _spelling(opt)
        if opt.metavar:
            head += f" {opt.metavar}"
        body = opt.help.format(**fmt).split("\n")
        pad = 26
        if len(head) + 2 < pad:
            lines.append(f"  {head:<{pad - 2}}{body[0]}")
        else:
            lines.append(f"  {head}")
            lines.append(" " * pad + body[0])
        lines.extend(" " * (pad + 2) + b for b in body[1:])
    if mode is Mode.PASTA:
        lines += [
            "",
            "Without TARGET_PID, a new user and network namespace is created and",
            "COMMAND (default: $SHELL) runs in it; with TARGET_PID, pasta joins the",
            "user and network namespace of that process.",
        ]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- tokenizer


@dataclass(slots=True)
class _Given:
    """Options as given, in order, before any meaning is attached."""

    opts: list[tuple[Opt, str, str | None]] = field(default_factory=list)
    target_pid: int | None = None
    command: list[str] = field(default_factory=list)


def _usage_error(mode: Mode, msg: str) -> ConfigError:
    prog = _prog(mode)
    return ConfigError(f"{msg}; see {prog} --help")


def _check_mode(mode: Mode, opt: Opt, spelled: str) -> None:
    if mode not in opt.modes:
        only = "passt" if Mode.PASST in opt.modes else "pasta"
        raise _usage_error(mode, f"{spelled} is {only}-only")


def _pcap_word_ok(mode: Mode, word: str) -> bool:
    """Whether a separate word after a bare -p is its file (see module docstring)."""
    if not word or word.startswith("-"):
        return False
    if mode is Mode.PASST:
        return True
    return "/" in word or word.endswith(".pcap")


def _early_exit(mode: Mode, opt: Opt) -> None:
    if opt.long == "help":
        sys.stdout.write(help_text(mode))
        sys.stdout.flush()
        raise SystemExit(0)
    if opt.long == "version":
        if mode is Mode.PASST:
            sys.stdout.write(f"passt-py {__version__}\n")
        else:
            sys.stdout.write(f"pasta (passt-py) {__version__}\n")
        sys.stdout.flush()
        raise SystemExit(0)


def _lookup_long(word: str, name: str) -> Opt:
    """The option a long word names: exact, else a unique prefix (as getopt_long).

    Errors are glibc getopt's words, which callers match on: Podman retries
    without --map-guest-addr when pasta says "unrecognized option
    '--map-guest-addr'".
    """
    opt = _BY_LONG.get(name)
    if opt is not None:
        return opt
    matches = [o for o in OPTIONS if name and o.long.startswith(name)]
    if len(matches) == 1:
        return matches[0]
    if matches:
        choices = " ".join(f"'--{o.long}'" for o in matches)
        raise ConfigError(f"option '{word}' is ambiguous; possibilities: {choices}")
    raise ConfigError(f"unrecognized option '{word}'")


def _tokenize(mode: Mode, argv: list[str]) -> _Given:
    given = _Given()
    i = 0
    n = len(argv)
    while i < n:
        word = argv[i]
        i += 1
        if word == "--":
            if mode is Mode.PASST:
                if i < n:
                    raise _usage_error(mode, f"unexpected argument '{argv[i]}'")
                break
            given.command = argv[i:]
            break
        if word.startswith("--"):
            name, eq, value = word[2:].partition("=")
            opt = _lookup_long(word, name)
            spelled = f"--{opt.long}"
            _check_mode(mode, opt, spelled)
            if opt.arg is Arg.NONE:
                if eq:
                    raise ConfigError(f"option '{spelled}' doesn't allow an argument")
                _early_exit(mode, opt)
                given.opts.append((opt, spelled, None))
            elif opt.arg is Arg.REQUIRED:
                if not eq:
                    if i >= n:
                        raise ConfigError(f"option '{spelled}' requires an argument")
                    value = argv[i]
                    i += 1
                given.opts.append((opt, spelled, value))
            else:
                if not eq and i < n and _pcap_word_ok(mode, argv[i]):
                    value, eq = argv[i], "="
                    i += 1
                given.opts.append((opt, spelled, value if eq else None))
            continue
        if word.startswith("-") and len(word) > 1:
            j = 1
            while j < len(word):
                letter = word[j]
                j += 1
                spelled = f"-{letter}"
                sopt = _BY_SHORT.get(letter)
                if sopt is None:
                    raise ConfigError(f"invalid option -- '{letter}'")
                _check_mode(mode, sopt, spelled)
                if sopt.arg is Arg.NONE:
                    _early_exit(mode, sopt)
                    given.opts.append((sopt, spelled, None))
                    continue
                rest = word[j:]
                if sopt.arg is Arg.REQUIRED:
                    if rest:
                        svalue = rest
                    elif i < n:
                        svalue = argv[i]
                        i += 1
                    else:
                        raise ConfigError(f"option requires an argument -- '{letter}'")
                    given.opts.append((sopt, spelled, svalue))
                else:
                    pvalue: str | None = rest or None
                    if pvalue is None and i < n and _pcap_word_ok(mode, argv[i]):
                        pvalue = argv[i]
                        i += 1
                    given.opts.append((sopt, spelled, pvalue))
                break
            continue
        # a positional argument
        if mode is Mode.PASST:
            raise _usage_error(mode, f"unexpected argument '{word}'")
        if _is_number(word) and not given.command:
            if given.target_pid is not None:
                raise _usage_error(mode, f"unexpected argument '{word}' after TARGET_PID")
            pid = int(word)
            if pid < 1:
                raise _usage_error(mode, f"invalid TARGET_PID '{word}'")
            given.target_pid = pid
            continue
        if given.target_pid is not None:
            raise _usage_error(mode, f"unexpected argument '{word}' after TARGET_PID "
                               f"{given.target_pid}; give a PID or a command, not both")
        given.command = argv[i - 1:]
        break
    if given.target_pid is not None and given.command:
        raise _usage_error(mode, f"TARGET_PID {given.target_pid} and a command given; "
                           "give one of them")
    return given


# --------------------------------------------------------------------------- value parsers


def _is_number(text: str) -> bool:
    """At most 10 ASCII digits: str.isdigit() also accepts "²", which int() rejects,
    and int() refuses strings of over 4300 digits."""
    return text.isascii() and text.isdigit() and len(text) <= 10


def _bad(mode: Mode, msg: str) -> ConfigError:
    """A ConfigError about a value; `mode` is kept for symmetry with `_usage_error`."""
    del mode
    return ConfigError(msg)


def _parse_mtu(mode: Mode, spelled: str, value: str) -> int:
    """-m: 68..65520, or 0 (upstream's "no MTU assignment"; the tap keeps 65520)."""
    if not _is_number(value.strip()):
        raise _bad(mode, f"invalid MTU '{value}' for {spelled}: give a number {MIN_MTU}-{MAX_MTU}"
                   " or 0")
    mtu = int(value)
    if mtu != 0 and not MIN_MTU <= mtu <= MAX_MTU:
        raise _bad(mode, f"MTU {mtu} out of range for {spelled}: give {MIN_MTU}-{MAX_MTU} or 0")
    return mtu


def _parse_ip(mode: Mode, spelled: str, value: str) -> IPv4Address | IPv6Address:
    try:
        return ip_address(value.strip())
    except ValueError:
        raise _bad(mode, f"invalid address '{value}' for {spelled}") from None


def _unusable(addr: IPv4Address | IPv6Address, *, allow_link_local: bool) -> str | None:
    """Why `addr` can't be handed to a guest, or None if it can."""
    if addr.is_unspecified:
        return "unspecified"
    if addr.is_multicast:
        return "multicast"
    if addr.is_loopback:
        return "loopback"
    if isinstance(addr, IPv4Address) and addr == IPv4Address("255.255.255.255"):
        return "broadcast"
    if isinstance(addr, IPv6Address):
        if addr.ipv4_mapped is not None:
            return "IPv4-mapped"
        if addr.is_link_local and not allow_link_local:
            return "link-local"
    return None


def _parse_address(mode: Mode, spelled: str, value: str) -> tuple[IPv4Address | IPv6Address,
                                                                  int | None]:
    """-a ADDR[/PREFIX]."""
    addr_s, slash, prefix_s = value.strip().partition("/")
    addr = _parse_ip(mode, spelled, addr_s)
    why = _unusable(addr, allow_link_local=False)
    if why:
        raise _bad(mode, f"invalid address '{value}' for {spelled}: {why}")
    if not slash:
        return addr, None
    limit = 32 if isinstance(addr, IPv4Address) else 128
    if not _is_number(prefix_s) or not 1 <= int(prefix_s) <= limit:
        raise _bad(mode, f"invalid prefix length '/{prefix_s}' for {spelled}: give 1-{limit}")
    return addr, int(prefix_s)


def _parse_netmask(mode: Mode, spelled: str, value: str) -> int:
    text = value.strip().removeprefix("/")
    if _is_number(text):
        bits = int(text)
        if not 1 <= bits <= 32:
            raise _bad(mode, f"invalid netmask '{value}' for {spelled}: give 1-32 bits")
        return bits
    try:
        return IPv4Network(f"0.0.0.0/{text}").prefixlen
    except ValueError:
        raise _bad(mode, f"invalid netmask '{value}' for {spelled}: "
                   "give a dot-decimal mask like 255.255.255.0 or a number of bits") from None


def _parse_mac(mode: Mode, spelled: str, value: str) -> bytes:
    parts = value.strip().replace("-", ":").split(":")
    if len(parts) != 6 or not all(len(p) in (1, 2) for p in parts):
        raise _bad(mode, f"invalid MAC address '{value}' for {spelled}: "
                   "give six hex bytes like 9a:55:9a:55:9a:55")
    try:
        mac = bytes(int(p, 16) for p in parts)
    except ValueError:
        raise _bad(mode, f"invalid MAC address '{value}' for {spelled}: "
                   "give six hex bytes like 9a:55:9a:55:9a:55") from None
    if mac[0] & 1:
        raise _bad(mode, f"invalid MAC address '{value}' for {spelled}: "
                   "multicast/broadcast can't be a source")
    return mac


def _parse_ifname(mode: Mode, spelled: str, value: str) -> str:
    if (not value or len(value.encode()) > IFNAMSIZ_MAX or "/" in value
            or any(c.isspace() for c in value) or value in (".", "..")):
        raise _bad(mode, f"invalid interface name '{value}' for {spelled}: "
                   f"1-{IFNAMSIZ_MAX} characters, no '/' or spaces")
    return value


def _parse_domains(mode: Mode, spelled: str, value: str) -> list[str]:
    out: list[str] = []
    for name in value.split():
        bare = name.rstrip(".")
        labels = bare.split(".")
        if (not bare or len(bare) > DNS_NAME_MAX
                or any(not lab or len(lab) > DNS_LABEL_MAX for lab in labels)):
            raise _bad(mode, f"invalid search domain '{name}' for {spelled}")
        out.append(bare)
    return out


def _parse_runas(mode: Mode, spelled: str, value: str) -> tuple[int, int]:
    user_s, colon, group_s = value.partition(":")
    if not user_s or (colon and not group_s):
        raise _bad(mode, f"invalid user '{value}' for {spelled}: give UID[:GID] or USER[:GROUP]")
    pw: pwd.struct_passwd | None
    if _is_number(user_s):
        uid = int(user_s)
        try:
            pw = pwd.getpwuid(uid)
        except KeyError:
            pw = None
    else:
        try:
            pw = pwd.getpwnam(user_s)
        except KeyError:
            raise _bad(mode, f"unknown user '{user_s}' for {spelled}") from None
        uid = pw.pw_uid
    if not colon:
        gid = pw.pw_gid if pw is not None else uid
    elif _is_number(group_s):
        gid = int(group_s)
    else:
        try:
            gid = grp.getgrnam(group_s).gr_gid
        except KeyError:
            raise _bad(mode, f"unknown group '{group_s}' for {spelled}") from None
    if uid > 0xFFFFFFFE or gid > 0xFFFFFFFE:
        raise _bad(mode, f"invalid user '{value}' for {spelled}: ID out of range")
    return uid, gid


def _parse_log_size(mode: Mode, spelled: str, value: str) -> int:
    if not _is_number(value.strip()) or int(value) < MIN_LOG_SIZE:
        raise _bad(mode, f"invalid size '{value}' for {spelled}: give at least "
                   f"{MIN_LOG_SIZE} bytes")
    return int(value)


def _parse_fd(mode: Mode, spelled: str, value: str) -> int:
    """-F FD: upstream refuses stdout and stderr (they stay the log's); stdin is allowed."""
    if not _is_number(value.strip()) or int(value) > 0x7FFFFFFF or int(value) in (1, 2):
        raise _bad(mode, f"invalid descriptor '{value}' for {spelled}: give an open descriptor "
                   "number other than 1 and 2")
    return int(value)


def _parse_dns_name(mode: Mode, spelled: str, value: str, what: str) -> str:
    """-H/--fqdn: a DNS name (labels of 1-63 bytes, at most 253), without spaces."""
    bare = value.strip().rstrip(".")
    labels = bare.split(".")
    if (not bare or len(bare.encode()) > DNS_NAME_MAX or not bare.isprintable()
            or any(c.isspace() for c in bare)
            or any(not lab or len(lab.encode()) > DNS_LABEL_MAX for lab in labels)):
        raise _bad(mode, f"invalid {what} '{value}' for {spelled}: give a DNS name of at most "
                   f"{DNS_NAME_MAX} characters")
    return bare


def _count_other_instances(prog: str) -> int:
    """Processes other than us running `prog` (by comm, or argv[0]/argv[1] basename)."""
    me = os.getpid()
    count = 0
    try:
        entries = os.listdir("/proc")
    except OSError:
        return 0
    for entry in entries:
        if not entry.isdigit() or int(entry) == me:
            continue
        try:
            with open(f"/proc/{entry}/comm", encoding="utf-8", errors="replace") as f:
                comm = f.read().strip()
            if comm == prog:
                count += 1
                continue
            with open(f"/proc/{entry}/cmdline", "rb") as fb:
                args = fb.read().split(b"\0")[:2]
        except OSError:
            continue
        names = {os.path.basename(a.decode(errors="replace")) for a in args}
        if prog in names or f"passt.{prog}_main" in names:
            count += 1
    return count


def default_pcap_path(mode: Mode, *, now: float | None = None, instance: int | None = None) -> str:
    """/tmp/{passt,pasta}_<UTC ISO 8601>_<other instances>.pcap (man page, -p)."""
    prog = _prog(mode)
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now))
    if instance is None:
        instance = _count_other_instances(prog)
    return f"/tmp/{prog}_{stamp}_{instance}.pcap"


def _classful_prefix(addr: IPv4Address) -> int:
    """RFC 4632 section 2 / RFC 791 classes: A /8, B /16, C /24 (and /24 above C)."""
    first = addr.packed[0]
    if first < 128:
        return 8
    if first < 192:
        return 16
    return 24


def _warn(mode: Mode, msg: str) -> None:
    # Logging isn't set up yet when options are parsed: write the one line ourselves.
    try:
        sys.stderr.write(f"{_prog(mode)}: {msg}\n")
        sys.stderr.flush()
    except (OSError, ValueError):
        pass


# --------------------------------------------------------------------------- building Config


@dataclass(slots=True)
class _Values:
    """Options with meaning attached, before defaults from the host."""

    flags: set[str] = field(default_factory=set)
    pcap: str | None = None
    pcap_given: bool = False
    mtu: int | None = None
    addr4: IPv4Address | None = None
    addr4_prefix: int | None = None
    addr6: IPv6Address | None = None
    addr6_prefix: int | None = None
    netmask: int | None = None
    mac: bytes | None = None
    gw4: IPv4Address | None = None
    gw6: IPv6Address | None = None
    ifname: str | None = None
    dns_given: bool = False
    dns_disabled: bool = False
    dns4: list[IPv4Address] = field(default_factory=list)
    dns6: list[IPv6Address] = field(default_factory=list)
    search_given: bool = False
    search: list[str] = field(default_factory=list)
    fwd: dict[str, PortFwd] = field(default_factory=dict)
    fwd_spelled: dict[str, str] = field(default_factory=dict)
    socket_path: str | None = None
    ns_ifname: str | None = None
    netns: str | None = None
    userns: str | None = None
    runas: tuple[int, int] | None = None
    pid_file: str | None = None
    log_file: str | None = None
    log_size: int = DEFAULT_LOG_SIZE
    fd: int | None = None
    conf_path: str | None = None
    hostname: str | None = None
    fqdn: str | None = None
    #: per-family address options (dns-forward, dns-host, map-*, outbound), by option name
    per_family: dict[str, dict[int, IPv4Address | IPv6Address]] = field(default_factory=dict)
    #: address options given as "none"
    none_given: set[str] = field(default_factory=set)
    outbound_if4: str | None = None
    outbound_if6: str | None = None
    ns_mac: bytes | None = None


#: Options that may be given once only (a second one is more likely a mistake than an override).
_ONCE: Final = frozenset({"pcap", "mtu", "netmask", "mac-addr", "interface", "socket",
                          "ns-ifname", "netns", "userns", "runas", "pid", "log-file",
                          "log-size", "fd", "conf-path", "hostname", "fqdn", "outbound-if4",
                          "outbound-if6", "ns-mac-addr"})

#: Address options taking one address per family; what each may not be.
#: dns-host may be loopback (the host's own stub resolver); outbound may be
#: loopback and link-local (a source address, never handed to the guest).
_PER_FAMILY: Final[dict[str, frozenset[str]]] = {
    "dns-forward": frozenset({"unspecified", "multicast", "broadcast", "loopback", "IPv4-mapped"}),
    "dns-host": frozenset({"unspecified", "multicast", "broadcast", "IPv4-mapped"}),
    "map-host-loopback": frozenset({"unspecified", "multicast", "broadcast", "loopback",
                                    "IPv4-mapped"}),
    "map-guest-addr": frozenset({"unspecified", "multicast", "broadcast", "loopback",
                                 "IPv4-mapped"}),
    "outbound": frozenset({"unspecified", "multicast", "broadcast", "IPv4-mapped"}),
}
#: Of those, the ones that accept "none" (no mapping at all).
_NONE_OK: Final = frozenset({"map-host-loopback", "map-guest-addr"})


def _collect(mode: Mode, given: _Given) -> _Values:
    v = _Values()
    seen: dict[str, str] = {}
    for opt, spelled, value in given.opts:
        key = opt.long
        if key in _ONCE and key in seen:
            raise _bad(mode, f"{spelled} given more than once (also as {seen[key]}); give it once")
        seen.setdefault(key, spelled)
        if opt.arg is Arg.NONE:
            v.flags.add(key)
            continue
        if key == "pcap":
            v.pcap_given = True
            if value is not None and not value:
                raise _bad(mode, f"empty file name for {spelled}")
            v.pcap = value
            continue
        assert value is not None  # REQUIRED options always carry a value
        if key == "mtu":
            v.mtu = _parse_mtu(mode, spelled, value)
        elif key == "address":
            addr, prefix = _parse_address(mode, spelled, value)
            if isinstance(addr, IPv4Address):
                if v.addr4 is not None:
                    raise _bad(mode, f"{spelled} given twice for IPv4 ({v.addr4}, {addr}); "
                               "give one address per family")
                v.addr4, v.addr4_prefix = addr, prefix
            else:
                if v.addr6 is not None:
                    raise _bad(mode, f"{spelled} given twice for IPv6 ({v.addr6}, {addr}); "
                               "give one address per family")
                v.addr6, v.addr6_prefix = addr, prefix
        elif key == "netmask":
            v.netmask = _parse_netmask(mode, spelled, value)
        elif key == "mac-addr":
            v.mac = _parse_mac(mode, spelled, value)
        elif key == "gateway":
            gw = _parse_ip(mode, spelled, value)
            why = _unusable(gw, allow_link_local=True)
            if why:
                raise _bad(mode, f"invalid address '{value}' for {spelled}: {why}")
            if isinstance(gw, IPv4Address):
                if v.gw4 is not None:
                    raise _bad(mode, f"{spelled} given twice for IPv4 ({v.gw4}, {gw}); "
                               "give one gateway per family")
                v.gw4 = gw
            else:
                if v.gw6 is not None:
                    raise _bad(mode, f"{spelled} given twice for IPv6 ({v.gw6}, {gw}); "
                               "give one gateway per family")
                v.gw6 = gw
        elif key == "interface":
            v.ifname = _parse_ifname(mode, spelled, value)
        elif key == "ns-ifname":
            v.ns_ifname = _parse_ifname(mode, spelled, value)
        elif key == "dns":
            v.dns_given = True
            if not value.strip():
                v.dns_disabled = True
                continue
            dns = _parse_ip(mode, spelled, value)
            if dns.is_unspecified or dns.is_multicast:
                raise _bad(mode, f"invalid address '{value}' for {spelled}: "
                           "not a unicast address")
            if isinstance(dns, IPv4Address):
                if dns not in v.dns4:
                    v.dns4.append(dns)
            elif dns not in v.dns6:
                v.dns6.append(dns)
        elif key == "search":
            v.search_given = True
            for name in _parse_domains(mode, spelled, value):
                if name not in v.search:
                    v.search.append(name)
        elif key in ("tcp-ports", "udp-ports", "tcp-ns", "udp-ns"):
            try:
                fwd = parse_port_spec(value, mode=mode, option=spelled)
                if key in v.fwd:
                    fwd = merge_port_fwd(v.fwd[key], fwd, option=spelled)
            except ConfigError as e:
                raise _bad(mode, str(e)) from None
            v.fwd[key] = fwd
            v.fwd_spelled[key] = spelled
        elif key == "socket":
            if not value or len(value.encode()) > SUN_PATH_MAX:
                raise _bad(mode, f"invalid socket path for {spelled}: "
                           f"give 1-{SUN_PATH_MAX} bytes")
            v.socket_path = value
        elif key == "netns":
            if not value or value in (".", ".."):
                raise _bad(mode, f"invalid namespace '{value}' for {spelled}")
            v.netns = value if "/" in value else f"{NETNS_RUN_DIR}/{value}"
        elif key == "userns":
            if not value:
                raise _bad(mode, f"empty path for {spelled}")
            v.userns = value
        elif key == "runas":
            v.runas = _parse_runas(mode, spelled, value)
        elif key == "pid":
            if not value:
                raise _bad(mode, f"empty file name for {spelled}")
            v.pid_file = value
        elif key == "log-file":
            if not value:
                raise _bad(mode, f"empty file name for {spelled}")
            v.log_file = value
        elif key in _PER_FAMILY:
            _collect_per_family(mode, v, key, spelled, value)
        else:
            _collect_callers(mode, v, key, spelled, value)
    _check_callers(mode, v)
    _check_common(mode, v)
    return v


def _collect_callers(mode: Mode, v: _Values, key: str, spelled: str, value: str) -> None:
    """The single-valued options of today's callers (upstream passt's syntax)."""
    if key == "log-size":
        v.log_size = _parse_log_size(mode, spelled, value)
    elif key == "fd":
        v.fd = _parse_fd(mode, spelled, value)
    elif key == "conf-path":
        if not value or len(value.encode()) > SUN_PATH_MAX:
            raise _bad(mode, f"invalid socket path for {spelled}: give 1-{SUN_PATH_MAX} bytes")
        v.conf_path = value
    elif key == "hostname":
        v.hostname = _parse_dns_name(mode, spelled, value, "hostname")
    elif key == "fqdn":
        v.fqdn = _parse_dns_name(mode, spelled, value, "FQDN")
    elif key == "outbound-if4":
        v.outbound_if4 = _parse_ifname(mode, spelled, value)
    elif key == "outbound-if6":
        v.outbound_if6 = _parse_ifname(mode, spelled, value)
    elif key == "ns-mac-addr":
        v.ns_mac = _parse_mac(mode, spelled, value)
    else:  # pragma: no cover - every REQUIRED option is handled  # pragma: no cover - every REQUIRED option is handled above
        raise AssertionError(key)


def _collect_per_family(mode: Mode, v: _Values, key: str, spelled: str, value: str) -> None:
    """--dns-forward, --dns-host, --map-host-loopback, --map-guest-addr, -o: one per family."""
    if value.strip() == "none" and key in _NONE_OK:
        if v.per_family.get(key):
            raise _bad(mode, f"{spelled} none given together with an address; give one of them")
        v.none_given.add(key)
        return
    if key in v.none_given:
        raise _bad(mode, f"{spelled} none given together with an address; give one of them")
    addr = _parse_ip(mode, spelled, value)
    why = _unusable(addr, allow_link_local=True)
    if why in _PER_FAMILY[key]:
        raise _bad(mode, f"invalid address '{value}' for {spelled}: {why}")
    family = addr.version
    seen = v.per_family.setdefault(key, {})
    if family in seen:
        raise _bad(mode, f"{spelled} given twice for IPv{family} ({seen[family]}, {addr}); "
                   "give one address per family")
    seen[family] = addr


def _check_callers(mode: Mode, v: _Values) -> None:
    """Combinations of the callers' options that can't both hold."""
    if "vhost-user" in v.flags:
        raise _bad(mode, "--vhost-user is not implemented; connect QEMU to the UNIX socket "
                   "(-netdev stream) instead")
    if "trace" in v.flags and "quiet" in v.flags:
        raise _bad(mode, "--trace and -q given together; give at most one")
    if "netns-only" in v.flags and v.userns is not None:
        raise _bad(mode, "--netns-only and --userns given together; give at most one")
    if v.fd is not None and v.socket_path is not None:
        raise _bad(mode, "-F and -s given together; passt serves either the socket it binds "
                   "or the one it was given")
    if "no-map-gw" in v.flags and v.per_family.get("map-host-loopback"):
        raise _bad(mode, "--no-map-gw given together with --map-host-loopback ADDR; "
                   "give one of them")


def _check_common(mode: Mode, v: _Values) -> None:
    if v.dns_disabled and (v.dns4 or v.dns6):
        raise _bad(mode, "-D \"\" (no DNS) given together with DNS addresses; give one or the other")
    if "ipv4-only" in v.flags and "ipv6-only" in v.flags:
        raise _bad(mode, "-4 and -6 given together; give at most one")
    if "debug" in v.flags and "quiet" in v.flags:
        raise _bad(mode, "-d and -q given together; give at most one")
    if v.netmask is not None and v.addr4_prefix is not None:
        raise _bad(mode, "-n given together with -a ADDR/PREFIX; give the prefix once")


def _port_defaults(mode: Mode, v: _Values) -> tuple[PortFwd, PortFwd, PortFwd, PortFwd]:
    """tcp_in, udp_in, tcp_out, udp_out after defaults, UDP-follows-TCP and --no-tcp/--no-udp."""
    default = (PortFwd(mode=FwdMode.NONE) if mode is Mode.PASST
               else PortFwd(mode=FwdMode.AUTO))
    no_tcp = "no-tcp" in v.flags
    no_udp = "no-udp" in v.flags
    for key, disabled, flag in (("tcp-ports", no_tcp, "--no-tcp"), ("tcp-ns", no_tcp, "--no-tcp"),
                                ("udp-ports", no_udp, "--no-udp"), ("udp-ns", no_udp, "--no-udp")):
        fwd = v.fwd.get(key)
        if disabled and fwd is not None and fwd.mode is not FwdMode.NONE:
            raise _bad(mode, f"{v.fwd_spelled[key]} given with {flag}; drop one of them")

    def pick(tcp_key: str, udp_key: str, dflt: PortFwd) -> tuple[PortFwd, PortFwd]:
        tcp = v.fwd.get(tcp_key, dflt)
        if udp_key in v.fwd:
            udp = v.fwd[udp_key]
        elif tcp.explicit and tcp.mode is FwdMode.SPEC:
            udp = follow(tcp)
        else:
            udp = dflt
        if no_tcp:
            tcp = PortFwd(mode=FwdMode.NONE)
        if no_udp:
            udp = PortFwd(mode=FwdMode.NONE)
        return tcp, udp

    tcp_in, udp_in = pick("tcp-ports", "udp-ports", default)
    if mode is Mode.PASST:
        return tcp_in, udp_in, PortFwd(), PortFwd()
    tcp_out, udp_out = pick("tcp-ns", "udp-ns", default)
    return tcp_in, udp_in, tcp_out, udp_out


def _build(mode: Mode, given: _Given, v: _Values, host: HostInfo) -> Config:
    v4_only = "ipv4-only" in v.flags
    v6_only = "ipv6-only" in v.flags
    if v4_only and (v.addr6 is not None or v.gw6 is not None):
        raise _bad(mode, "IPv6 -a/-g given with -4 (IPv4 only); drop one of them")
    if v6_only and (v.addr4 is not None or v.gw4 is not None):
        raise _bad(mode, "IPv4 -a/-g given with -6 (IPv6 only); drop one of them")

    # IPv4: an address and a route (the host's default, or -g).
    ip4: Ip4Config | None = None
    addr4 = v.addr4 if v.addr4 is not None else host.addr4
    if not v6_only and addr4 is not None and (host.route4 or v.gw4 is not None):
        if v.netmask is not None:
            prefix4 = v.netmask
        elif v.addr4_prefix is not None:
            prefix4 = v.addr4_prefix
        else:
            host_prefix = host.prefix_of(addr4)
            if host_prefix is None and addr4 == host.addr4 and host.prefix4:
                host_prefix = host.prefix4
            prefix4 = host_prefix if host_prefix is not None else _classful_prefix(addr4)
        if v.dns_given:
            dns4 = tuple(v.dns4)
        elif mode is Mode.PASST:
            dns4 = advertised_dns(host.dns4, _v4(v, "dns-forward"), _v4(v, "map-host-loopback"))
        else:
            dns4 = ()
        ip4 = Ip4Config(addr=addr4, prefix_len=prefix4,
                        gateway=v.gw4 if v.gw4 is not None else host.gw4,
                        dns=dns4, host_addr=host.addr4)

    # IPv6: likewise; MTU below 1280 rules it out.
    ip6: Ip6Config | None = None
    addr6 = v.addr6 if v.addr6 is not None else host.addr6
    if not v4_only and addr6 is not None and (host.route6 or v.gw6 is not None):
        if v.addr6_prefix is not None:
            prefix6 = v.addr6_prefix
        else:
            host_prefix6 = host.prefix_of(addr6)
            if host_prefix6 is None and addr6 == host.addr6 and host.prefix6:
                host_prefix6 = host.prefix6
            prefix6 = (host_prefix6 if host_prefix6 is not None and host_prefix6 <= DEFAULT_PREFIX6
                       else DEFAULT_PREFIX6)
        if v.dns_given:
            dns6 = tuple(v.dns6)
        elif mode is Mode.PASST:
            dns6 = advertised_dns(host.dns6, _v6(v, "dns-forward"), _v6(v, "map-host-loopback"))
        else:
            dns6 = ()
        gw6 = v.gw6 if v.gw6 is not None else host.gw6
        ip6 = Ip6Config(addr=addr6, prefix_len=prefix6,
                        gateway=gw6 if gw6 is not None else FALLBACK_GW6,
                        dns=dns6, host_addr=host.addr6)
    if ip6 is not None and v.mtu and v.mtu < MIN_MTU_IPV6:
        if ip4 is None or v6_only:
            raise _bad(mode, f"MTU {v.mtu} is below IPv6's minimum of {MIN_MTU_IPV6} and IPv4 "
                       "is off; raise -m")
        _warn(mode, f"MTU {v.mtu} is below IPv6's minimum of {MIN_MTU_IPV6}: IPv6 disabled")
        ip6 = None

    where = f" on {v.ifname}" if v.ifname else ""
    if v4_only and ip4 is None:
        raise _bad(mode, f"-4 given but no IPv4 default route and address found{where}; "
                   "use -i, or -a and -g")
    if v6_only and ip6 is None:
        raise _bad(mode, f"-6 given but no IPv6 default route and global address found{where}; "
                   "use -i, or -a and -g")
    if ip4 is None and ip6 is None:
        raise _bad(mode, f"no interface with a default route and an address{where}; "
                   "use -i, or -a and -g")

    if v.search_given:
        search = tuple(v.search)
    elif mode is Mode.PASST:
        search = host.search
    else:
        search = ()

    mac = v.mac if v.mac is not None else host.mac
    if not any(mac):
        mac = FALLBACK_MAC

    if v.netns is not None and given.target_pid is not None:
        raise _bad(mode, "--netns and TARGET_PID given together; give one of them")
    if v.netns is not None and given.command:
        raise _bad(mode, "--netns and a command given together; the command needs a new "
                   "namespace, drop --netns")
    if v.userns is not None and v.netns is None and given.target_pid is None:
        raise _bad(mode, "--userns needs --netns or a TARGET_PID")

    tcp_in, udp_in, tcp_out, udp_out = _port_defaults(mode, v)

    pcap: str | None = None
    if v.pcap_given:
        pcap = v.pcap if v.pcap is not None else default_pcap_path(mode)

    out_ifname = v.ifname or host.ifname
    return Config(
        mode=mode,
        out_ifname=out_ifname,
        our_mac=mac,
        ip4=ip4,
        ip6=ip6,
        # today's passt advertises 65520 unless -m says otherwise (the EXAMPLES
        # show guests at 65520; see docs/conformance.md, opt.mtu.default-none)
        mtu=(v.mtu or None) if v.mtu is not None else DEFAULT_TAP_MTU,
        tap_mtu=v.mtu or DEFAULT_TAP_MTU,
        search=search,
        tcp="no-tcp" not in v.flags,
        udp="no-udp" not in v.flags,
        icmp="no-icmp" not in v.flags,
        dhcp="no-dhcp" not in v.flags,
        ndp="no-ndp" not in v.flags,
        dhcpv6="no-dhcpv6" not in v.flags,
        ra="no-ra" not in v.flags,
        tcp_in=tcp_in,
        udp_in=udp_in,
        tcp_out=tcp_out,
        udp_out=udp_out,
        debug="debug" in v.flags or "trace" in v.flags,
        quiet="quiet" in v.flags,
        foreground=bool({"foreground", "debug", "trace"} & v.flags),
        stderr="stderr" in v.flags,
        pcap=pcap,
        pid_file=v.pid_file,
        log_file=v.log_file,
        runas=v.runas,
        socket_path=v.socket_path,
        ns_ifname=(v.ns_ifname or out_ifname or FALLBACK_NS_IFNAME) if mode is Mode.PASTA else "",
        target_pid=given.target_pid,
        netns=v.netns,
        userns=v.userns,
        command=tuple(given.command),
        config_net="config-net" in v.flags,
        # the callers' options, as given (their defaults are the data path's)
        # -F: passt serves that one connection and quits after it (upstream)
        one_off="one-off" in v.flags or (v.fd is not None and mode is Mode.PASST),
        fd=v.fd,
        log_size=v.log_size,
        trace="trace" in v.flags,
        hostname=v.hostname,
        fqdn=v.fqdn,
        dns_forward4=_v4(v, "dns-forward"),
        dns_forward6=_v6(v, "dns-forward"),
        dns_host4=_v4(v, "dns-host"),
        dns_host6=_v6(v, "dns-host"),
        no_map_gw="no-map-gw" in v.flags or "map-host-loopback" in v.none_given,
        map_host_loopback4=_v4(v, "map-host-loopback"),
        map_host_loopback6=_v6(v, "map-host-loopback"),
        map_guest_addr4=_v4(v, "map-guest-addr"),
        map_guest_addr6=_v6(v, "map-guest-addr"),
        outbound4=_v4(v, "outbound"),
        outbound6=_v6(v, "outbound"),
        outbound_if4=v.outbound_if4,
        outbound_if6=v.outbound_if6,
        conf_path=v.conf_path,
        netns_only="netns-only" in v.flags,
        no_netns_quit="no-netns-quit" in v.flags,
        ns_mac_addr=v.ns_mac,
        splice="no-splice" not in v.flags,
    )


def _v4(v: _Values, key: str) -> IPv4Address | None:
    addr = v.per_family.get(key, {}).get(4)
    return addr if isinstance(addr, IPv4Address) else None


def _v6(v: _Values, key: str) -> IPv6Address | None:
    addr = v.per_family.get(key, {}).get(6)
    return addr if isinstance(addr, IPv6Address) else None


def parse_args(mode: Mode, argv: list[str], *, host: HostInfo | None = None) -> Config:
    """Parse one program's argv (without the program name) into a Config.

    `host` None discovers the host with `hostinfo.discover` (on -i's interface
    if given).  -h/--help and --version print to stdout and raise
    SystemExit(0).  Every other problem raises ConfigError with a one-line
    message, to be printed after "<program>: ".
    """
    given = _tokenize(mode, argv)
    values = _collect(mode, given)
    if host is None:
        try:
            host = discover(values.ifname)
        except ConfigError as e:
            raise _bad(mode, str(e)) from None
    return _build(mode, given, values, host)
