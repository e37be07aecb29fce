"""netconf: the ping_group_range span a user namespace allows."""

from __future__ import annotations

from passt.netconf import PING_GROUP_MAX, mapped_gid_range


def test_single_gid_namespace() -> None:
    """pasta's own namespace maps gid 0 only: the range is 0..0."""
    assert mapped_gid_range("         0       1000          1\n") == (0, 0)


def test_init_namespace_capped() -> None:
    """The init namespace maps every gid: capped to the sysctl's maximum."""
    assert mapped_gid_range("0 0 4294967295\n") == (0, PING_GROUP_MAX)


def test_empty_map() -> None:
    assert mapped_gid_range("") == (0, 0)
