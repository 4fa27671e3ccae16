"""Incremental line splitting of an upstream byte stream, bounded, on b"\\n" only."""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator

from piagent.exceptions import UpstreamError


async def iter_lines(chunks: AsyncIterable[bytes], max_line_bytes: int, upstream: str) -> AsyncIterator[bytes]:
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
