"""The part of HTTP/1.1 the front receiver reads itself, as pure functions (no I/O).

A request head (request line and header fields, up to :data:`MAX_HEAD` bytes), the framing
of its body (``Content-Length`` or ``chunked``), and replies. What an inverter sends is
exactly ``POST <path> HTTP/1.1``, ``Host``, ``Connection: close``, ``Content-Length`` and a
45- or 69-byte body; everything else is read strictly enough to refuse smuggling (a
``Transfer-Encoding`` other than ``chunked``, conflicting lengths, folded header lines) and
leniently where browsers and tools differ (a bare ``LF`` as line end, blank lines before the
request line, an absolute URI as target).

Every refusal is an :class:`HttpError` with the status to answer and a one-line reason; it
carries the request line when that much was readable, so an inverter's POST with a broken
head can still get its timestamp.
"""
from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from urllib.parse import unquote, urlsplit

MAX_HEAD = 8192
"""Request line plus header fields, in bytes."""
MAX_CHUNK_LINE = 1024

_REQUEST_LINE = re.compile(rb"([!#$%&'*+.^_`|~0-9A-Za-z-]+) +(\S+)(?: +(\S+))?")
_VERSION = re.compile(rb"HTTP/1\.[0-9]")
_TOKEN = re.compile(rb"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_HEAD_END = re.compile(rb"\r?\n\r?\n")

REASONS = {200: "OK", 100: "Continue", 400: "Bad Request", 404: "Not Found", 408: "Request Timeout",
           411: "Length Required", 413: "Content Too Large", 431: "Request Header Fields Too Large",
           501: "Not Implemented", 502: "Bad Gateway", 503: "Service Unavailable"}


@dataclass(frozen=True)
class RequestLine:
    method: str
    target: str
    """As sent (at most 200 characters of it are ever shown)."""
    path: str
    """The target's path, percent-decoded (UTF-8, undecodable bytes replaced)."""
    version: str


class HttpError(Exception):
    """A request that cannot be read: ``status`` to answer, the message says why in one line;
    ``line`` is the request line when it could be read."""

    def __init__(self, status: int, reason: str, line: RequestLine | None = None) -> None:
        super().__init__(reason)
        self.status = status
        self.line = line


@dataclass(frozen=True)
class RequestHead:
    line: RequestLine
    headers: tuple[tuple[str, str], ...]
    """(lower-case name, value) in the order sent."""
    content_length: int | None
    chunked: bool
    expect_continue: bool = False
    size: int = 0
    """Bytes of the head, blank line included."""

    def get(self, name: str, default: str | None = None) -> str | None:
        name = name.lower()
        return next((value for key, value in self.headers if key == name), default)


def head_end(buffer: bytes | bytearray) -> int:
    """The index just after the blank line that ends the head, or -1 while it is incomplete."""
    match = _HEAD_END.search(buffer, _leading_blank_lines(buffer))
    return match.end() if match else -1


def _leading_blank_lines(buffer: bytes | bytearray) -> int:
    start = 0
    while buffer[start:start + 2] == b"\r\n" or buffer[start:start + 1] == b"\n":
        start += 2 if buffer[start:start + 1] == b"\r" else 1
    return start


def request_line(buffer: bytes | bytearray) -> RequestLine | None:
    """The request line, once a whole one has arrived (None before); ``HttpError`` if it is not one."""
    start = _leading_blank_lines(buffer)
    end = buffer.find(b"\n", start)
    if end < 0:
        if len(buffer) - start > MAX_HEAD:
            raise HttpError(400, f"no request line in the first {MAX_HEAD} bytes")
        return None
    return parse_request_line(bytes(buffer[start:end]).rstrip(b"\r"))


def parse_request_line(raw: bytes) -> RequestLine:
    match = _REQUEST_LINE.fullmatch(raw)
    if not match:
        raise HttpError(400, f"not an HTTP request line: {_show(raw)}")
    method, target, version = match.group(1), match.group(2), match.group(3) or b""
    text = target.decode("latin-1")
    if text.startswith("/"):
        raw_path = text.split("?", 1)[0].split("#", 1)[0]
    elif "://" in text:
        raw_path = urlsplit(text).path or "/"
    else:
        raw_path = text
    line = RequestLine(method.decode("ascii").upper(), text, unquote(raw_path, errors="replace"),
                       version.decode("latin-1"))
    if not _VERSION.fullmatch(version):
        raise HttpError(400, f"not HTTP/1.x: {_show(version or b'(no version)')}", line)
    return line


def parse_head(data: bytes | bytearray) -> RequestHead:
    """The whole head (``data`` up to :func:`head_end`); ``HttpError`` for anything unreadable."""
    start = _leading_blank_lines(data)
    lines = bytes(data[start:]).replace(b"\r\n", b"\n").split(b"\n")
    line = parse_request_line(lines[0])
    if len(data) > MAX_HEAD:
        raise HttpError(431, f"request head over {MAX_HEAD} bytes", line)
    headers: list[tuple[str, str]] = []
    for raw in lines[1:]:
        if not raw:
            break
        if raw[:1] in (b" ", b"\t"):
            raise HttpError(400, "folded header line (obsolete, refused)", line)
        name, colon, value = raw.partition(b":")
        if not colon or not _TOKEN.fullmatch(name):
            raise HttpError(400, f"not a header field: {_show(raw)}", line)
        headers.append((name.decode("ascii").lower(), value.strip(b" \t").decode("latin-1")))
    return RequestHead(line, tuple(headers), *_framing(headers, line), size=len(data))


def _framing(headers: list[tuple[str, str]], line: RequestLine) -> tuple[int | None, bool, bool]:
    lengths = {value for name, value in headers if name == "content-length"}
    codings = [c.strip().lower() for name, value in headers if name == "transfer-encoding"
               for c in value.split(",") if c.strip()]
    expect = any(name == "expect" and value.lower() == "100-continue" for name, value in headers)
    if codings:
        if codings != ["chunked"]:
            raise HttpError(501, f"Transfer-Encoding {', '.join(codings)} is not supported", line)
        if lengths:
            raise HttpError(400, "both Content-Length and Transfer-Encoding", line)
        return None, True, expect
    if not lengths:
        return None, False, expect
    if len(lengths) > 1:
        raise HttpError(400, "conflicting Content-Length values", line)
    value = lengths.pop()
    if not value.isdigit() or len(value) > 18:
        raise HttpError(400, f"Content-Length {_show(value.encode('latin-1'))} is not a length", line)
    return int(value), False, expect


class ChunkedBody:
    """Decodes a ``chunked`` body as it arrives: ``feed(data)`` until ``done``; ``HttpError``
    for a malformed body (400) or one over ``limit`` bytes (413). Trailer fields are skipped;
    bytes after the end are left in ``rest``."""

    def __init__(self, limit: int, line: RequestLine | None = None) -> None:
        self.limit = limit
        self.line = line
        self.done = False
        self.rest = b""
        self._parts: list[bytes] = []
        self._size = 0
        self._buffer = bytearray()
        self._need = 0  # data bytes still to come in the current chunk
        self._state = "size"  # size -> data -> crlf -> size ... -> trailer

    @property
    def body(self) -> bytes:
        return b"".join(self._parts)

    def feed(self, data: bytes) -> None:
        if self.done:
            self.rest += data
            return
        self._buffer += data
        while not self.done:
            if self._state == "data":
                if not self._buffer:
                    return
                take = bytes(self._buffer[:self._need])
                del self._buffer[:len(take)]
                self._parts.append(take)
                self._need -= len(take)
                if self._need:
                    return
                self._state = "crlf"
                continue
            end = self._buffer.find(b"\n")
            if end < 0:
                if len(self._buffer) > MAX_CHUNK_LINE:
                    raise self._error(400, "a chunk line is too long")
                return
            raw = bytes(self._buffer[:end]).rstrip(b"\r")
            del self._buffer[:end + 1]
            if self._state == "crlf":
                if raw:
                    raise self._error(400, "no line end after a chunk's data")
                self._state = "size"
            elif self._state == "size":
                self._start_chunk(raw)
            elif not raw:  # trailer: its blank line ends the body
                self.done, self.rest = True, bytes(self._buffer)
                self._buffer.clear()

    def _start_chunk(self, raw: bytes) -> None:
        digits = raw.split(b";", 1)[0].strip(b" \t")
        if not digits or len(digits) > 15 or not all(c in b"0123456789abcdefABCDEF" for c in digits):
            raise self._error(400, f"chunk size {_show(raw)} is not hexadecimal")
        size = int(digits, 16)
        if self._size + size > self.limit:
            raise self._error(413, f"chunked body over {self.limit} bytes")
        self._size += size
        if size == 0:
            self._state = "trailer"
        else:
            self._need, self._state = size, "data"

    def _error(self, status: int, reason: str) -> HttpError:
        return HttpError(status, f"malformed chunked body: {reason}" if status == 400 else reason, self.line)


def _show(raw: bytes, limit: int = 60) -> str:
    text = repr(raw[:limit])[2:-1]
    return f"'{text}…'" if len(raw) > limit else f"'{text}'"


def stamp(now: float | None = None) -> str:
    """The inverters' answer: local time as ``YYYYMMDDHHMMSS`` (month before day)."""
    return time.strftime("%Y%m%d%H%M%S", time.localtime(now))


def response(status: int, body: bytes, content_type: str = "text/plain; charset=utf-8",
             headers: tuple[tuple[str, str], ...] = ()) -> bytes:
    """A whole ``Connection: close`` response."""
    lines = [f"HTTP/1.1 {status} {REASONS.get(status, 'Error')}", f"Content-Type: {content_type}",
             f"Content-Length: {len(body)}", "Connection: close", *(f"{k}: {v}" for k, v in headers)]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def timestamp_response(now: float | None = None) -> bytes:
    """``200``, ``text/html``, the 14-digit local time."""
    return response(200, stamp(now).encode("ascii"), "text/html")


def error_response(error: HttpError) -> bytes:
    return response(error.status, f"{REASONS.get(error.status, 'Error')}: {error}\n".encode("utf-8", "replace"))


@dataclass
class ForwardedHead:
    """The head sent on to the UI server: hop-by-hop fields dropped, the body's length fixed,
    the peer's address in our own fields (any such field the client sent is dropped first)."""

    head: RequestHead
    peer: tuple[str, int]
    server_port: int
    drop: frozenset[str] = field(default_factory=lambda: frozenset({
        "connection", "keep-alive", "proxy-connection", "te", "trailer", "transfer-encoding", "upgrade",
        "content-length", "expect", PEER_HEADER.lower(), PEER_PORT_HEADER.lower(), SERVER_PORT_HEADER.lower()}))

    def encode(self, body_length: int) -> bytes:
        line = self.head.line
        out = [f"{line.method} {line.target} {line.version}"]
        out += [f"{name}: {value}" for name, value in self.head.headers if name not in self.drop]
        if body_length or line.method not in ("GET", "HEAD", "DELETE", "OPTIONS"):
            out.append(f"Content-Length: {body_length}")
        out += [f"{PEER_HEADER}: {self.peer[0]}", f"{PEER_PORT_HEADER}: {self.peer[1]}",
                f"{SERVER_PORT_HEADER}: {self.server_port}", "Connection: close"]
        return ("\r\n".join(out) + "\r\n\r\n").encode("latin-1")


PEER_HEADER = "X-Solargw-Peer"
PEER_PORT_HEADER = "X-Solargw-Peer-Port"
SERVER_PORT_HEADER = "X-Solargw-Server-Port"
