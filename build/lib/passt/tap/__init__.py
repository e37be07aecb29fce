"""Tap back-ends: passt's UNIX stream socket and pasta's tap device."""
