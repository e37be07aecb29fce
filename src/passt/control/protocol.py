"""The control protocol, sans-IO: request lines in, answer lines out.

Framing: one JSON object per line (UTF-8, `\\n`-terminated) each way.  A
client sends a request, the server answers it, in order; a client may send
several requests before reading (they are answered one after the other).

    request  {"v": 1, "id": ANY, "cmd": "flows" | "stats" | "config" | "forward" | "version", ...}
    answer   {"v": 1, "id": ANY, "ok": true, "result": {...}}
             {"v": 1, "id": ANY, "ok": false, "error": "one line"}

`v` is the protocol version (PROTOCOL_VERSION); a request without it is
taken as version 1, one with another version is refused.  `id` is echoed
untouched (any JSON value; null when absent), so a client can match answers.

Bounds: a request line is at most MAX_REQUEST_BYTES; a longer one is
refused and the connection closed after the answer (the framing is lost).
`LineBuffer` never holds more than MAX_REQUEST_BYTES plus one read.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Final

PROTOCOL_VERSION: Final = 1
#: Longest request line accepted (a request is a few dozen bytes; specs are short).
MAX_REQUEST_BYTES: Final = 64 << 10
#: Commands the server knows.
COMMANDS: Final = ("flows", "stats", "config", "forward", "version")
#: Operations of `forward`.
FORWARD_OPS: Final = ("list", "add", "delete", "clear")


class ProtocolError(ValueError):
    """A request that cannot be served; the message is the answer's one-line error."""


@dataclass(frozen=True, slots=True)
class Request:
    """One parsed request."""

    cmd: str
    #: Echoed in the answer (any JSON value).
    id: Any = None
    #: The remaining members of the request object, by name.
    args: dict[str, Any] = field(default_factory=dict)

    def str_arg(self, name: str, default: str | None = None) -> str | None:
        """A string argument; ProtocolError when present with another type."""
        value = self.args.get(name, default)
        if value is not None and not isinstance(value, str):
            raise ProtocolError(f"'{name}' must be a string")
        return value

    def int_arg(self, name: str, default: int, low: int, high: int) -> int:
        """An integer argument within [low, high]; ProtocolError otherwise."""
        value = self.args.get(name, default)
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise ProtocolError(f"'{name}' must be an integer from {low} to {high}")
        return value


def parse_request(line: bytes) -> Request:
    """Parse one request line (without its newline); ProtocolError says what is wrong."""
    obj = _json(line)
    if not isinstance(obj, dict):
        raise ProtocolError("not a JSON object: send one JSON object per line")
    version = obj.pop("v", PROTOCOL_VERSION)
    req_id = obj.pop("id", None)
    if version != PROTOCOL_VERSION or isinstance(version, bool):
        raise ProtocolError(f"unsupported protocol version {json.dumps(version)}: "
                            f"this server speaks {PROTOCOL_VERSION}")
    cmd = obj.pop("cmd", None)
    if not isinstance(cmd, str) or cmd not in COMMANDS:
        raise ProtocolError(f"unknown command {json.dumps(cmd)}: one of {', '.join(COMMANDS)}")
    return Request(cmd=cmd, id=req_id, args=obj)


def request_id(line: bytes) -> Any:
    """Best-effort `id` of a line that failed to parse (for the error answer); None if none."""
    try:
        obj = _json(line)
    except ProtocolError:
        return None
    return obj.get("id") if isinstance(obj, dict) else None


def _json(line: bytes) -> Any:
    """The JSON value of a UTF-8 line; ProtocolError for anything else.

    Decoded here rather than by json.loads: given bytes, it guesses UTF-16/32
    from the first bytes, and garbage that looks like UTF-16-BE made it
    raise LookupError (seen under a garbage flood).
    """
    try:
        return json.loads(line.decode("utf-8"))
    except (ValueError, RecursionError):
        raise ProtocolError("not a JSON object: send one JSON object per line") from None


def encode_request(cmd: str, req_id: Any = None, **args: Any) -> bytes:
    """One request line (clients)."""
    return _line({"v": PROTOCOL_VERSION, "id": req_id, "cmd": cmd, **args})


def encode_answer(req_id: Any, result: Any) -> bytes:
    """One successful answer line."""
    return _line({"v": PROTOCOL_VERSION, "id": req_id, "ok": True, "result": result})


def encode_error(req_id: Any, error: str) -> bytes:
    """One error answer line; `error` is one line."""
    return _line({"v": PROTOCOL_VERSION, "id": req_id, "ok": False, "error": error})


def decode_answer(line: bytes) -> dict[str, Any]:
    """Parse an answer line (clients); ProtocolError on anything but an answer object."""
    try:
        obj = json.loads(line)
    except ValueError:
        raise ProtocolError("the server sent something that is not JSON") from None
    if not isinstance(obj, dict) or "ok" not in obj:
        raise ProtocolError("the server sent something that is not an answer")
    if obj.get("v") != PROTOCOL_VERSION:
        raise ProtocolError(f"the server speaks protocol version {obj.get('v')}, "
                            f"this client {PROTOCOL_VERSION}")
    return obj


def _line(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode() + b"\n"


class LineBuffer:
    """Bytes received on one connection, cut into lines, bounded.

    `feed` appends; `next_line` returns the next complete line (without its
    newline), None when none is complete.  Once the partial line exceeds
    MAX_REQUEST_BYTES the buffer is `overflowed` (framing lost) and keeps
    nothing more.
    """

    __slots__ = ("_buf", "_start", "overflowed", "limit")

    def __init__(self, limit: int = MAX_REQUEST_BYTES) -> None:
        self._buf = bytearray()
        self._start = 0
        self.overflowed = False
        self.limit = limit

    def feed(self, data: bytes) -> None:
        if self.overflowed:
            return
        if self._start:
            del self._buf[: self._start]
            self._start = 0
        self._buf += data
        if len(self._buf) > self.limit and self._buf.find(b"\n", 0, self.limit + 1) < 0:
            self.overflowed = True
            self._buf.clear()

    def next_line(self) -> bytes | None:
        end = self._buf.find(b"\n", self._start)
        if end < 0:
            return None
        line = bytes(self._buf[self._start : end])
        self._start = end + 1
        return line.rstrip(b"\r")

    def has_line(self) -> bool:
        return self._buf.find(b"\n", self._start) >= 0

    def __len__(self) -> int:
        return len(self._buf) - self._start
