"""HTTP/1.1 request parsing over a connection's receive buffer: heads, Content-Length and chunked bodies."""

from __future__ import annotations

import dataclasses
from typing import Final

__all__ = ["MAX_BODY", "BadRequest", "Head", "parse_body", "parse_head"]

MAX_HEAD: Final = 64 * 1024
MAX_HEADERS: Final = 100
MAX_BODY: Final = 32 * 1024 * 1024
_ACTED_ON: Final = ("connection", "transfer-encoding", "content-length", "expect", "authorization")


class BadRequest(Exception):
    """The request could not be parsed; answer ``status`` and close."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclasses.dataclass(slots=True)
class Head:
    """A parsed request line and headers, and where the body starts in the buffer."""

    method: str
    path: str
    headers: dict[str, str]
    keep_alive: bool
    body_start: int
    length: int  # Content-Length, 0 when absent or chunked
    chunked: bool
    continue_sent: bool = False


def _framing_headers(rest: str) -> dict[str, str]:
    """Only the headers the fake itself acts on, found without splitting every line (the benchmark's path)."""
    low = "\r\n" + rest.lower()
    found: dict[str, str] = {}
    for name in _ACTED_ON:
        at = low.find(f"\r\n{name}:")
        if at >= 0:
            start = at + len(name) + 3
            stop = low.find("\r\n", start)
            found[name] = rest[start - 2 : (len(low) if stop < 0 else stop) - 2].strip()
    return found


def _all_headers(rest: str) -> dict[str, str]:
    lines = rest.split("\r\n") if rest else []
    if len(lines) > MAX_HEADERS:
        raise BadRequest(431, "too many headers")
    headers: dict[str, str] = {}
    for line in lines:
        name, sep, value = line.partition(":")
        key = name.strip().lower()
        if not sep or not key:
            raise BadRequest(400, "malformed header")
        value = value.strip()
        headers[key] = f"{headers[key]}, {value}" if key in headers else value
    return headers


def parse_head(buf: bytearray, every_header: bool = True) -> Head | None:
    """Parse the head at the start of ``buf`` (blank lines before it are dropped); None while incomplete.

    Without ``every_header`` only the headers the fake acts on are read (and the others not checked).
    """
    while buf.startswith(b"\r\n"):
        del buf[:2]
    end = buf.find(b"\r\n\r\n")
    if end < 0:
        if len(buf) > MAX_HEAD:
            raise BadRequest(431, "request head too large")
        return None
    request_line, _, rest = bytes(buf[:end]).decode("latin-1").partition("\r\n")
    parts = request_line.split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
        raise BadRequest(400, "malformed request line")
    headers = _all_headers(rest) if every_header else _framing_headers(rest)
    method, target, version = parts
    connection = headers.get("connection")
    keep_alive = version != "HTTP/1.0"
    if connection is not None:
        tokens = {t.strip().lower() for t in connection.split(",")}
        keep_alive = "close" not in tokens and (keep_alive or "keep-alive" in tokens)
    encoding = headers.get("transfer-encoding", "").strip().lower()
    if encoding and encoding.split(",")[-1].strip() != "chunked":
        raise BadRequest(501, f"unsupported transfer-encoding {encoding!r}")
    length = 0
    if not encoding and "content-length" in headers:
        try:
            length = int(headers["content-length"])
        except ValueError:
            raise BadRequest(400, "malformed content-length") from None
        if length < 0:
            raise BadRequest(400, "malformed content-length")
        if length > MAX_BODY:
            raise BadRequest(413, "request body too large")
    path = target.split("?", 1)[0]
    return Head(method.upper(), path, headers, keep_alive, end + 4, length, bool(encoding))


def parse_body(buf: bytearray, head: Head) -> tuple[bytes, int] | None:
    """The body and the offset just past the request; None while incomplete."""
    start = head.body_start
    if not head.chunked:
        stop = start + head.length
        return (bytes(buf[start:stop]), stop) if len(buf) >= stop else None
    parts: list[bytes] = []
    total = 0
    pos = start
    while True:
        eol = buf.find(b"\r\n", pos)
        if eol < 0:
            return None
        try:
            size = int(bytes(buf[pos:eol]).split(b";", 1)[0].strip(), 16)
        except ValueError:
            raise BadRequest(400, "malformed chunk size") from None
        pos = eol + 2
        if size == 0:
            break
        total += size
        if size < 0 or total > MAX_BODY:
            raise BadRequest(413, "request body too large")
        if len(buf) < pos + size + 2:
            return None
        parts.append(bytes(buf[pos : pos + size]))
        if buf[pos + size : pos + size + 2] != b"\r\n":
            raise BadRequest(400, "malformed chunk")
        pos += size + 2
    while True:  # trailers, then the empty line
        eol = buf.find(b"\r\n", pos)
        if eol < 0:
            return None
        if eol == pos:
            return b"".join(parts), eol + 2
        pos = eol + 2
