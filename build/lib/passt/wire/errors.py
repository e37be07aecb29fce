"""The one error family for untrusted bytes."""


class ParseError(ValueError):
    """A frame or option could not be parsed; the reason is short and static."""
