"""The control protocol, sans-IO: request parsing, answer building, line framing."""

from __future__ import annotations

import json
import random

import pytest

from passt.control.protocol import (
    MAX_REQUEST_BYTES,
    PROTOCOL_VERSION,
    LineBuffer,
    ProtocolError,
    Request,
    decode_answer,
    encode_answer,
    encode_error,
    encode_request,
    parse_request,
    request_id,
)


def test_request_parsed_with_version_id_and_args() -> None:
    req = parse_request(b'{"v": 1, "id": 7, "cmd": "forward", "op": "add", "option": "-t", "spec": "80"}')
    assert req == Request(cmd="forward", id=7, args={"op": "add", "option": "-t", "spec": "80"})


def test_request_without_version_is_version_1() -> None:
    assert parse_request(b'{"cmd": "stats"}').cmd == "stats"


@pytest.mark.parametrize("line, message", [
    (b'{"v": 2, "cmd": "stats"}', "unsupported protocol version 2: this server speaks 1"),
    (b'{"v": true, "cmd": "stats"}', "unsupported protocol version true"),
    (b'{"cmd": "reboot"}', 'unknown command "reboot": one of flows, stats, config, forward, version'),
    (b'{"v": 1}', "unknown command null"),
    (b'[1, 2]', "not a JSON object"),
    (b'\xff\xfe garbage', "not a JSON object"),
    (b'', "not a JSON object"),
    (b'[' * 100000, "not a JSON object"),
    (b'\x00{\x00"', "not a JSON object"),  # json.loads(bytes) would guess UTF-16-BE
    (b'{\x00"\x00', "not a JSON object"),
    (b'\x00\x00\x00{', "not a JSON object"),
])  # fmt: skip
def test_bad_request_refused_with_one_line(line: bytes, message: str) -> None:
    with pytest.raises(ProtocolError) as e:
        parse_request(line)
    assert str(e.value).startswith(message)
    assert "\n" not in str(e.value)


def test_every_prefix_of_a_request_is_refused_or_parsed() -> None:
    line = encode_request("flows", 3, limit=10).rstrip(b"\n")
    for i in range(len(line)):
        with pytest.raises(ProtocolError):
            parse_request(line[:i])
    assert parse_request(line).args == {"limit": 10}


def test_random_bytes_only_ever_refused() -> None:
    rng = random.Random(13)
    for _ in range(2000):
        line = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 64)))
        try:
            parse_request(line)
        except ProtocolError:
            pass


@pytest.mark.parametrize("value, ok", [(5, True), (0, True), (-1, False), (10**6, False), ("5", False), (True, False)])
def test_int_arg_bounds(value: object, ok: bool) -> None:
    req = Request(cmd="flows", args={"limit": value})
    if ok:
        assert req.int_arg("limit", 1, 0, 100) == value
    else:
        with pytest.raises(ProtocolError, match="'limit' must be an integer from 0 to 100"):
            req.int_arg("limit", 1, 0, 100)


def test_answers_are_one_line_with_version_and_id() -> None:
    ok = encode_answer({"x": 1}, {"a": [1, 2]})
    err = encode_error("abc", "no such port")
    for line in (ok, err):
        assert line.endswith(b"\n") and line.count(b"\n") == 1
    assert json.loads(ok) == {"v": PROTOCOL_VERSION, "id": {"x": 1}, "ok": True, "result": {"a": [1, 2]}}
    assert decode_answer(err.rstrip()) == {"v": 1, "id": "abc", "ok": False, "error": "no such port"}


def test_client_refuses_other_versions_and_non_answers() -> None:
    with pytest.raises(ProtocolError, match="speaks protocol version 9"):
        decode_answer(b'{"v": 9, "ok": true}')
    with pytest.raises(ProtocolError):
        decode_answer(b'{"v": 1}')


def test_request_id_recovered_for_error_answers() -> None:
    assert request_id(b'{"id": 4, "cmd": "nope"}') == 4
    assert request_id(b"garbage") is None
    assert request_id(b"[4]") is None


def test_line_buffer_splits_partial_and_crlf() -> None:
    buf = LineBuffer()
    buf.feed(b'{"cmd":"a"}\r\n{"cmd"')
    assert buf.next_line() == b'{"cmd":"a"}'
    assert buf.next_line() is None and not buf.has_line()
    buf.feed(b':"b"}\n\n')
    assert buf.next_line() == b'{"cmd":"b"}'
    assert buf.next_line() == b""
    assert len(buf) == 0


def test_line_buffer_overflow_keeps_nothing() -> None:
    buf = LineBuffer()
    for _ in range(MAX_REQUEST_BYTES // 4096 + 1):
        buf.feed(b"x" * 4096)
    assert buf.overflowed
    assert len(buf) == 0
    buf.feed(b"more\n")
    assert buf.next_line() is None and len(buf) == 0


def test_line_buffer_long_but_complete_line_accepted() -> None:
    buf = LineBuffer(limit=100)
    buf.feed(b"a" * 99 + b"\n" + b"b" * 50)
    assert not buf.overflowed
    assert buf.next_line() == b"a" * 99
