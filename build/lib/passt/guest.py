"""What we have observed of the guest (or the namespace behind pasta's tap).

The services learn the guest's MAC from every frame it sends (ARP, DHCP) and
its addresses from the source addresses it uses; the address translation of
the man page's NOTES uses the observed address, falling back to the
configured one while nothing has been seen yet.

Addresses are kept packed (4 or 16 bytes): the data path compares bytes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final

from passt.config import MAC_BROADCAST, Config

_ZERO4: Final = bytes(4)
_ZERO16: Final = bytes(16)


@dataclass(slots=True)
class GuestState:
    """Mutable record of the guest's observed link-layer and network identity."""

    #: Guest MAC; broadcast until the first frame from the guest is seen.
    mac: bytes = MAC_BROADCAST
    #: Last observed IPv4 source (packed); None until seen.
    addr4: bytes | None = None
    #: Last observed global IPv6 source (packed); None until seen.
    addr6: bytes | None = None
    #: Last observed link-local IPv6 source (packed); None until seen.
    addr6_ll: bytes | None = None
    #: Configured fallbacks (packed), copied from Config at construction.
    conf_addr4: bytes = field(default=_ZERO4)
    conf_addr6: bytes = field(default=_ZERO16)

    @classmethod
    def from_config(cls, conf: Config) -> GuestState:
        return cls(
            conf_addr4=conf.ip4.addr.packed if conf.ip4 else _ZERO4,
            conf_addr6=conf.ip6.addr.packed if conf.ip6 else _ZERO16,
        )

    def learn_mac(self, mac: bytes) -> None:
        """Remember the guest's MAC (ignores multicast/broadcast sources)."""
        if not mac[0] & 1 and mac != self.mac:
            self.mac = bytes(mac)

    def learn_addr4(self, addr: bytes) -> None:
        """Remember an IPv4 source the guest used (0.0.0.0 is ignored)."""
        if addr != _ZERO4 and addr != self.addr4:
            self.addr4 = bytes(addr)

    def learn_addr6(self, addr: bytes) -> None:
        """Remember an IPv6 source: link-local and global are tracked apart."""
        if addr == _ZERO16 or addr[0] == 0xFF:
            return
        if addr[0] == 0xFE and (addr[1] & 0xC0) == 0x80:
            if addr != self.addr6_ll:
                self.addr6_ll = bytes(addr)
        elif addr != self.addr6:
            self.addr6 = bytes(addr)

    @property
    def effective_addr4(self) -> bytes:
        """Observed IPv4 address, else the configured one."""
        return self.addr4 if self.addr4 is not None else self.conf_addr4

    @property
    def effective_addr6(self) -> bytes:
        """Observed global IPv6 address, else the configured one."""
        return self.addr6 if self.addr6 is not None else self.conf_addr6
