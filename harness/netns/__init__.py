"""Throwaway network namespaces for the integration tests."""

from harness.netns.topology import (
    HOST_ADDR4,
    HOST_ADDR6,
    WAN_ADDR4,
    WAN_ADDR6,
    WAN_GW4,
    WAN_GW6,
    Topology,
)

__all__ = ["Topology", "HOST_ADDR4", "HOST_ADDR6", "WAN_ADDR4", "WAN_ADDR6", "WAN_GW4", "WAN_GW6"]
