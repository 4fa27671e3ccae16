"""Helpers for unit-level upstream tests: Ollama NDJSON bodies and byte streams cut where we like."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Iterable, Sequence

import httpx
import msgspec


def ollama_lines(tokens: Sequence[str], done_reason: str = "stop", prompt: int = 5) -> bytes:
    """An /api/chat NDJSON body exactly as Ollama writes it."""
    lines = [
        {
            "model": "m",
            "created_at": "2026-11-26T00:00:00Z",
            "message": {"role": "assistant", "content": t},
            "done": False,
        }
        for t in tokens
    ]
    lines.append(
        {
            "model": "m",
            "created_at": "2026-11-26T00:00:01Z",
            "message": {"role": "assistant", "content": ""},
            "done": True,
            "done_reason": done_reason,
            "total_duration": 10,
            "prompt_eval_count": prompt,
            "eval_count": len(tokens),
        }
    )
    return b"".join(msgspec.json.encode(line) + b"\n" for line in lines)


class Chunks(httpx.AsyncByteStream):
    """A response body delivered in exactly these chunks."""

    def __init__(self, chunks: Iterable[bytes]) -> None:
        self._chunks = list(chunks)

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for chunk in self._chunks:
            yield chunk


async def iterate(chunks: Iterable[bytes]) -> AsyncIterator[bytes]:
    for chunk in chunks:
        yield chunk


def cut(data: bytes, positions: Iterable[int]) -> list[bytes]:
    """`data` split at the given byte offsets."""
    bounds = [0, *sorted(set(positions)), len(data)]
    return [data[a:b] for a, b in itertools.pairwise(bounds)]
