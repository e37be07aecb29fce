"""Port forwarding changed at run time: `forward list|add|delete|clear`.

Specs are parsed by the CLI's own parser (ports.parse_port_spec), so the
grammar and the one-line error messages are the command line's.  Decisions
are pure functions of the current spec (`added`, `deleted`); `ForwardTable`
keeps the four logical specs (-t, -u, and in pasta -T, -U) and pushes each
change to the listeners (Forwarder.apply): a listener that stays is kept,
existing connections are never touched.

Rules (docs/control.md, docs/conformance_catalogue.toml):

- add: to an empty or default table the spec is taken as if it had been
  the option on the command line; otherwise it is merged as a second `-t`
  on the command line would be (ports.merge_port_fwd: a port named twice, a
  keyword or a different address is refused with the CLI's message).
- delete: ports are removed by listening port (a target given must match);
  from `all`/`auto` they become exclusions; a port not forwarded is refused.
- clear: the option becomes `none`.
- UDP follows TCP as on the command line: while -u (-U) was never given
  explicitly, it is recomputed from -t (-T) after every change.
- pasta's -T/-U listeners are bound per loopback address; a run-time -T/-U
  spec with an address of its own is refused (one listener set per address
  was decided at start).

A refused request changes nothing: the new specs are computed first and
pushed only when every one of them is valid.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any, Final

from passt.config import FwdMode, Mode, PortFwd
from passt.flows.fwd import TCP, UDP, Forwarder
from passt.ports import ConfigError, follow, merge_port_fwd, parse_port_spec

#: option -> (direction, protocol)
OPTIONS: Final = {"-t": ("in", TCP), "-u": ("in", UDP), "-T": ("out", TCP), "-U": ("out", UDP)}


def default_fwd(mode: Mode) -> PortFwd:
    """What an option not given means (cli: none in passt, auto in pasta)."""
    return PortFwd(mode=FwdMode.NONE) if mode is Mode.PASST else PortFwd(mode=FwdMode.AUTO)


def added(current: PortFwd, spec: PortFwd, option: str) -> PortFwd:
    """`current` with `spec` added (ConfigError with the CLI's message if refused)."""
    if current.mode is FwdMode.NONE or not current.explicit:
        return spec
    return merge_port_fwd(current, spec, option=option)


def deleted(current: PortFwd, spec: PortFwd, option: str) -> PortFwd:
    """`current` without the listening ports of `spec` (ConfigError if refused)."""
    if spec.mode is not FwdMode.SPEC:
        raise ConfigError(f"delete from {option} takes ports, not a keyword or exclusions only")
    if spec.addr is not None and spec.addr != current.addr:
        raise ConfigError(f"{option} forwards {'no address' if current.addr is None else current.addr}, "
                          f"not {spec.addr}")
    if current.mode in (FwdMode.ALL, FwdMode.AUTO):
        return dataclasses.replace(current, excluded=current.excluded | {p for p, _ in spec.ports},
                                   explicit=True)
    mapping = current.mapping() if current.mode is FwdMode.SPEC else {}
    for port, target in spec.ports:
        if port not in mapping:
            raise ConfigError(f"port {port} is not forwarded by {option}")
        if target != port and mapping[port] != target:
            raise ConfigError(f"port {port} is forwarded by {option} to {mapping[port]}, not {target}")
        del mapping[port]
    if not mapping:
        return PortFwd(mode=FwdMode.NONE, explicit=True)
    return dataclasses.replace(current, ports=tuple(sorted(mapping.items())), explicit=True)


def following(tcp: PortFwd, udp: PortFwd, mode: Mode) -> PortFwd:
    """UDP after a TCP change: unchanged if given explicitly, else what the CLI derives."""
    if udp.explicit:
        return udp
    if tcp.explicit and tcp.mode is FwdMode.SPEC:
        return follow(tcp)
    return default_fwd(mode)


def spec_text(fwd: PortFwd) -> str:
    """`fwd` in the CLI's grammar (what `forward list` shows and `add` accepts back)."""
    if fwd.mode is FwdMode.NONE:
        return "none"
    items: list[str] = []
    if fwd.mode is FwdMode.SPEC:
        items = _runs(list(fwd.ports))
    items += ["~" + r.partition(":")[0] for r in _runs([(p, p) for p in sorted(fwd.excluded)])]
    if not items:
        return "all" if fwd.mode is FwdMode.ALL else "auto"
    prefix = ""
    if fwd.addr is not None:
        prefix = f"[{fwd.addr}]/" if fwd.addr.version == 6 else f"{fwd.addr}/"
    return prefix + ",".join(items)


def _runs(pairs: Sequence[tuple[int, int]]) -> list[str]:
    """Collapse (port, target) pairs into `A-B:C-D`, `A-B`, `A:T` and `A` items."""
    out: list[str] = []
    i = 0
    while i < len(pairs):
        j = i
        while j + 1 < len(pairs) and pairs[j + 1][0] == pairs[j][0] + 1 and pairs[j + 1][1] == pairs[j][1] + 1:
            j += 1
        (a, c), (b, d) = pairs[i], pairs[j]
        src = f"{a}" if a == b else f"{a}-{b}"
        dst = f"{c}" if c == d else f"{c}-{d}"
        out.append(src if (a, b) == (c, d) else f"{src}:{dst}")
        i = j + 1
    return out


class ForwardTable:
    """The four logical specs and the Forwarders that serve them."""

    def __init__(self, mode: Mode, specs: dict[str, PortFwd], host: Forwarder,
                 ns: Sequence[Forwarder]) -> None:  # fmt: skip
        """`specs` by option; `host` serves -t/-u, `ns` (pasta) -T/-U, one per loopback address."""
        self.mode = mode
        self.specs = dict(specs)
        self.host = host
        self.ns = list(ns)

    def options(self) -> list[str]:
        return ["-t", "-u"] if self.mode is Mode.PASST else ["-t", "-u", "-T", "-U"]

    def _forwarders(self, direction: str) -> list[Forwarder]:
        return [self.host] if direction == "in" else self.ns

    def listing(self) -> list[dict[str, Any]]:
        """One entry per option: its spec and what is bound for it now."""
        out: list[dict[str, Any]] = []
        for option in self.options():
            direction, proto = OPTIONS[option]
            fwd = self.specs[option]
            listening: set[int] = set()
            failed: dict[str, str] = {}
            for f in self._forwarders(direction):
                listening |= {port for (p, port) in f.listening() if p == proto}
                failed.update({str(port): why for (p, port), why in f.failures.items() if p == proto})
            out.append({
                "option": option, "spec": spec_text(fwd), "mode": fwd.mode.value,
                "explicit": fwd.explicit, "listening": sorted(listening), "failed": failed,
            })  # fmt: skip
        return out

    def change(self, op: str, option: str, spec_arg: str | None) -> list[dict[str, Any]]:
        """Apply `op` (add, delete, clear) to `option`; ConfigError changes nothing."""
        if option not in self.options():
            raise ConfigError(f"unknown option '{option}': one of {', '.join(self.options())}")
        direction, proto = OPTIONS[option]
        new = dict(self.specs)
        if op == "clear":
            new[option] = PortFwd(mode=FwdMode.NONE, explicit=True)
        else:
            if spec_arg is None:
                raise ConfigError(f"{op} needs a port spec for {option}")
            spec = parse_port_spec(spec_arg, mode=self.mode, option=option)
            if direction == "out" and spec.addr is not None:
                raise ConfigError(f"{option} with an address can't change at run time; "
                                  "restart with it on the command line")
            new[option] = added(new[option], spec, option) if op == "add" else deleted(new[option], spec, option)
        if proto == TCP:
            udp_option = "-u" if direction == "in" else "-U"
            new[udp_option] = following(new[option], new[udp_option], self.mode)
        if direction == "out" and not self.ns and any(
            new[o].mode is not FwdMode.NONE for o in ("-T", "-U")
        ):
            raise ConfigError("-T/-U were none at start: the namespace side has no listeners to "
                              "change; restart pasta with -T/-U")
        changed = [o for o in self.options() if new[o] != self.specs[o]]
        self.specs = new
        for o in changed:
            d, p = OPTIONS[o]
            for f in self._forwarders(d):
                own = f.tcp_fwd if p == TCP else f.udp_fwd
                fwd = new[o] if d == "in" or own.addr is None else dataclasses.replace(new[o], addr=own.addr)
                f.apply(p, fwd)
        return [entry for entry in self.listing() if entry["option"] in changed or entry["option"] == option]
