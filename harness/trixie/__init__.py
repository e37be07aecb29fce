"""The real callers of passt and pasta (Podman, libvirt) in a Debian 13 root: see root.py, session.py."""
