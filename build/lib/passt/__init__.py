"""passt and pasta: unprivileged user-mode networking for VMs and network namespaces.

See docs/architecture.md for the module map and the path of one frame.
"""

__version__ = "0.1.0"
