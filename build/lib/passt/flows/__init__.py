"""Flows: translation between guest frames and host Layer-4 sockets."""
