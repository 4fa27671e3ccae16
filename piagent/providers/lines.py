"""Incremental line splitting of an upstream byte stream, bounded, on b"\\n" only; NDJSON and SSE alike."""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterable

from piagent.exceptions import UpstreamError


async def iter_lines(chunks: AsyncIterable[bytes], max_line_bytes: int, upstream: str) -> AsyncGenerator[bytes, None]:
    """Yield each non-blank line (without its b"\\n") as soon as it is complete.

    Splitting bytes on b"\\n" ourselves, rather than `aiter_lines()`, keeps JSON strings whole: those
    may hold U+2028, U+0085 and other characters that `str.splitlines()` would split on. A line
    longer than `max_line_bytes` is an upstream error, so a broken server cannot grow memory.
    """
    pending = b""
    async for chunk in chunks:
        if pending:
            chunk = pending + chunk
        start = 0
        while (end := chunk.find(b"\n", start)) != -1:
            if end - start > max_line_bytes:
                break
            line = chunk[start:end]
            if line and not line.isspace():
                yield line
            start = end + 1
        pending = chunk[start:]
        if len(pending) > max_line_bytes:
            raise UpstreamError(f"{upstream} sent a line longer than {max_line_bytes} bytes")
    if pending and not pending.isspace():
        yield pending


def sse_data(line: bytes, upstream: str) -> bytes | None:
    """The payload of one server-sent-events line from `iter_lines`, or None for a line that carries none.

    Comments (`:` lines, keep-alives) and the other fields (`event:`, `id:`, `retry:`) carry none; a
    CRLF line end leaves a trailing b"\\r" on the payload, which JSON reads as whitespace. Every
    OpenAI-compatible server sends one JSON document per `data:` line, so each line is one payload (a
    multi-line `data:` event is not joined). A line that looks like bare JSON means the server is not
    sending events at all: an upstream error rather than silence. A plain function, not another
    generator around `iter_lines`: it runs once per token.
    """
    if line.startswith(b"data: "):
        return line[6:]
    if line.startswith(b"data:"):
        return line[5:]
    if line.startswith((b"{", b"[")):
        raise UpstreamError(f"{upstream} sent JSON where server-sent events were expected")
    return None
