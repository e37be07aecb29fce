"""The one interface both tap back-ends offer: frames in, batches of frames out.

passt's back-end is a UNIX stream socket carrying QEMU's framing (a 4-byte
big-endian length before each Ethernet frame); pasta's is a tap device opened
with IFF_VNET_HDR, where the kernel checksums and segments for us.  The
dispatcher and the flows see only this Protocol.

    guest --frames--> read_frames() --> dispatch.from_tap()
    flows/services --send()/send_gso()--> out batch --flush()--> guest
                                          pending() after flush: loop watches EVENT_WRITE, flushes again
"""

from __future__ import annotations

from typing import Final, Protocol, TypeAlias

#: Anything a frame can be handed over as (collections.abc.Buffer is 3.12+).
Buffer: TypeAlias = bytes | bytearray | memoryview

#: virtio-net header gso_type values (linux/virtio_net.h).
GSO_NONE: Final = 0
GSO_TCPV4: Final = 1
GSO_UDP: Final = 3
GSO_TCPV6: Final = 4


class TapBackend(Protocol):
    """A connected guest link."""

    #: True when the link takes partial checksums and GSO frames (pasta's tap
    #: with IFF_VNET_HDR and TUNSETOFFLOAD); False: every frame we send must be
    #: complete, MTU-sized and carry full checksums (passt's stream socket).
    offload: bool

    def fileno(self) -> int:
        """Descriptor to poll for readability."""
        ...

    def read_frames(self) -> list[memoryview]:
        """Read every frame available now (until EAGAIN or a batch bound).

        The views point into the back-end's preallocated buffers and are valid
        only until the next call.  Frames that arrive with a partial checksum
        (offloaded) carry it unverified.  An empty list with `closed` set means
        the guest went away.
        """
        ...

    @property
    def closed(self) -> bool:
        """True once the guest side has gone away (EOF, reset, lost framing)."""
        ...

    def send(self, frame: Buffer) -> None:
        """Queue one complete Ethernet frame (checksums filled in) for the next flush."""
        ...

    def send_gso(
        self,
        frame: Buffer,
        *,
        csum_start: int,
        csum_offset: int,
        gso_type: int,
        gso_size: int,
        hdr_len: int,
    ) -> None:
        """Queue a frame whose L4 checksum field holds only the pseudo-header sum.

        Only valid when `offload` is True: the kernel completes the checksum
        from `csum_start` (storing at `csum_start + csum_offset`) and, when
        `gso_type` is not GSO_NONE, cuts the payload into `gso_size` segments.
        """
        ...

    def flush(self) -> None:
        """Write everything queued, in as few system calls as possible.

        Frames the guest cannot take right now (a full socket buffer) stay
        queued up to a bound, as copies: once flush() returns the back-end
        holds no reference into a caller's buffer (the TCP frame ring reuses
        its slots then).  Beyond the bound they are dropped and counted, since
        TCP retransmits and UDP may lose.  A back-end may also drop what the
        guest cannot take now (the tap device does).
        """
        ...

    def pending(self) -> bool:
        """True when frames wait after a flush: the caller watches `fileno()` for writability.

        Context.flush_tap adds EVENT_WRITE to the tap's registration while this
        holds and removes it once it no longer does; the tap's handler flushes
        on EVENT_WRITE.
        """
        ...

    def close(self) -> None:
        """Release the descriptor."""
        ...
