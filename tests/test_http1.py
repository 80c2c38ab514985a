"""The front receiver's HTTP/1.1 reading (pure): heads, body framing, chunked bodies, replies."""
from __future__ import annotations

import random

import pytest
from hypothesis import given, settings, strategies as st

from appliance.protocols.nep import build_request
from appliance.web import http1
from appliance.web.http1 import ChunkedBody, ForwardedHead, HttpError, head_end, parse_head, request_line
from vectors import NEP_BDM400

BDM400 = bytes.fromhex(NEP_BDM400["hex"])


def test_an_inverters_request_is_read_exactly():
    raw = build_request("www.nepviewer.net", "/i.php", BDM400)
    end = head_end(raw)
    head = parse_head(raw[:end])
    assert (head.line.method, head.line.path, head.line.version) == ("POST", "/i.php", "HTTP/1.1")
    assert head.content_length == 45 and not head.chunked and head.get("Host") == "www.nepviewer.net"
    assert raw[end:] == BDM400


def test_the_head_end_waits_for_the_blank_line():
    assert head_end(b"POST /i.php HTTP/1.1\r\nHost: x\r\n") == -1
    assert head_end(b"POST /i.php HTTP/1.1\r\n\r\nrest") == len(b"POST /i.php HTTP/1.1\r\n\r\n")
    assert head_end(b"POST / HTTP/1.1\nHost: x\n\nrest") == len(b"POST / HTTP/1.1\nHost: x\n\n")  # bare LF
    assert head_end(b"\r\n\r\nGET / HTTP/1.1\r\n\r\n") == len(b"\r\n\r\nGET / HTTP/1.1\r\n\r\n")  # blank lines first


@pytest.mark.parametrize("target,path", [
    ("/i%0a.php", "/i\n.php"), ("/t.php?x=1", "/t.php"), ("http://www.nepviewer.net/i.php", "/i.php"),
    ("/%ff", "/\ufffd"), ("*", "*"),
])
def test_the_path_is_decoded(target, path):
    assert parse_head(f"POST {target} HTTP/1.1\r\n\r\n".encode()).line.path == path


@pytest.mark.parametrize("raw,status,why", [
    (b"POST /i.php HTTP/1.1\r\nContent-Length: 45\r\nContent-Length: 46\r\n\r\n", 400, "conflicting"),
    (b"POST /i.php HTTP/1.1\r\nContent-Length: -1\r\n\r\n", 400, "not a length"),
    (b"POST /i.php HTTP/1.1\r\nContent-Length: 4x\r\n\r\n", 400, "not a length"),
    (b"POST /i.php HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", 501, "not supported"),
    (b"POST /i.php HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n", 400, "both"),
    (b"POST /i.php HTTP/1.1\r\nHost: a\r\n  folded\r\n\r\n", 400, "folded"),
    (b"POST /i.php HTTP/1.1\r\nno colon here\r\n\r\n", 400, "not a header field"),
    (b"POST /i.php HTTP/9.9\r\n\r\n", 400, "not HTTP/1.x"),
    (b"POST /i.php\r\n\r\n", 400, "not HTTP/1.x"),
])
def test_a_broken_head_is_refused_but_keeps_its_request_line(raw, status, why):
    with pytest.raises(HttpError) as caught:
        parse_head(raw)
    assert caught.value.status == status and why in str(caught.value)
    assert caught.value.line is not None and caught.value.line.path == "/i.php"  # an inverter still gets its time


@pytest.mark.parametrize("raw", [b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", b"GARBAGE\r\n\r\n", b" / HTTP/1.1\r\n\r\n"])
def test_garbage_is_no_request_line(raw):
    with pytest.raises(HttpError) as caught:
        request_line(raw + b"\n")
    assert caught.value.line is None and caught.value.status == 400


def test_no_line_end_in_the_first_8_kib_is_refused():
    assert request_line(b"x" * 100) is None  # may still come
    with pytest.raises(HttpError):
        request_line(b"x" * (http1.MAX_HEAD + 1))


def test_a_head_over_8_kib_is_431():
    raw = b"POST /i.php HTTP/1.1\r\n" + b"X-Pad: " + b"a" * http1.MAX_HEAD + b"\r\n\r\n"
    with pytest.raises(HttpError) as caught:
        parse_head(raw)
    assert caught.value.status == 431 and caught.value.line.path == "/i.php"


def chunked(body: bytes, sizes: list[int]) -> bytes:
    out, at = b"", 0
    for size in sizes:
        out += f"{size:x}\r\n".encode() + body[at:at + size] + b"\r\n"
        at += size
    return out + b"0\r\nTrailer: x\r\n\r\n"


def test_a_chunked_body_in_pieces_of_any_size():
    wire = chunked(BDM400, [10, 30, 5])
    for step in (1, 2, 7, len(wire)):
        decoder = ChunkedBody(4096)
        for at in range(0, len(wire), step):
            decoder.feed(wire[at:at + step])
        assert decoder.done and decoder.body == BDM400


@pytest.mark.parametrize("wire,why", [
    (b"zz\r\n", "not hexadecimal"),
    (b"5\r\nabcdeXX\r\n", "no line end after"),
    (b"5;" + b"e" * 2000, "too long"),
    (b"1" * 20 + b"\r\n", "not hexadecimal"),
])
def test_a_malformed_chunked_body_is_one_clear_error(wire, why):
    decoder = ChunkedBody(4096)
    with pytest.raises(HttpError) as caught:
        decoder.feed(wire)
    assert caught.value.status == 400 and why in str(caught.value) and "malformed chunked body" in str(caught.value)


def test_a_chunked_body_over_the_limit_is_413_before_it_is_read():
    with pytest.raises(HttpError) as caught:
        ChunkedBody(4096).feed(b"100000\r\n")
    assert caught.value.status == 413


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_any_bytes_give_a_head_or_a_clear_error(data):
    end = head_end(data)
    try:
        if end >= 0:
            parse_head(data[:end])
        else:
            request_line(data)
        decoder = ChunkedBody(4096)
        decoder.feed(data)
    except HttpError as error:
        assert error.status in (400, 413, 431, 501) and str(error)


def test_replies():
    stamp = http1.timestamp_response(0).split(b"\r\n\r\n")
    assert stamp[0].startswith(b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: 14\r\n")
    assert len(stamp[1]) == 14 and stamp[1].isdigit()
    assert http1.error_response(HttpError(400, "bad")).startswith(b"HTTP/1.1 400 Bad Request\r\n")


def test_the_forwarded_head_drops_hop_by_hop_fields_and_any_forged_peer():
    raw = (b"POST /settings HTTP/1.1\r\nHost: gw\r\nTransfer-Encoding: chunked\r\nConnection: keep-alive\r\n"
           b"X-Solargw-Peer: 10.42.0.9\r\nExpect: 100-continue\r\nCookie: session=abc\r\n\r\n")
    forwarded = ForwardedHead(parse_head(raw), ("192.168.1.20", 5555), 80).encode(12).decode()
    lines = forwarded.split("\r\n")
    assert lines[0] == "POST /settings HTTP/1.1"
    assert "cookie: session=abc" in lines and "host: gw" in lines and "Content-Length: 12" in lines  # names: any case
    assert [line for line in lines if line.lower().startswith("x-solargw-peer:")] == ["X-Solargw-Peer: 192.168.1.20"]
    assert not any(line.lower().startswith(("transfer-encoding", "expect", "connection: keep")) for line in lines)
    assert "Connection: close" in lines


def test_random_splits_of_an_inverters_request_give_the_same_head():
    raw = build_request("www.nepviewer.net", "/t.php", BDM400)
    rng = random.Random(3)
    for _ in range(50):
        cut = rng.randrange(1, len(raw))
        assert head_end(raw[:cut]) in (-1, head_end(raw))
