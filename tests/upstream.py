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


def openai_events(
    tokens: Sequence[str],
    finish_reason: str = "stop",
    usage: tuple[int, int] | None = (5, -1),
    end: bytes = b"\n",
    done: bool = True,
) -> bytes:
    """A /v1/chat/completions SSE body as llama.cpp's server writes it; usage (-1: len(tokens)) or none."""
    base = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "m"}

    def event(obj: object) -> bytes:
        return b"data: " + msgspec.json.encode(obj) + end + end

    def choice(delta: dict[str, str], finish: str | None) -> dict[str, object]:
        return {**base, "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]}

    events = [event(choice({"role": "assistant", "content": ""}, None))]
    events += [event(choice({"content": t}, None)) for t in tokens]
    events.append(event(choice({}, finish_reason)))
    if usage is not None:
        prompt, completion = usage
        completion = len(tokens) if completion < 0 else completion
        counts = {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}
        events.append(event({**base, "choices": [], "usage": counts}))
    if done:
        events.append(b"data: [DONE]" + end + end)
    return b"".join(events)


def ollama_tool_lines(calls: Sequence[tuple[str, object]], text: str = "", ids: bool = False) -> bytes:
    """An /api/chat NDJSON body with tool calls, as Ollama writes it: all of them whole in one line (after
    any text), then the done line, whose reason is `stop`; `ids` as newer versions send them."""
    tool_calls = [
        {"function": {"name": name, "arguments": arguments}, **({"id": f"call_{n}"} if ids else {})}
        for n, (name, arguments) in enumerate(calls)
    ]
    lines = ollama_lines([text] if text else []).splitlines(keepends=True)
    line = {
        "model": "m",
        "created_at": "2026-11-26T00:00:00Z",
        "message": {"role": "assistant", "content": "", "tool_calls": tool_calls},
        "done": False,
    }
    lines.insert(len(lines) - 1, msgspec.json.encode(line) + b"\n")
    return b"".join(lines)


def openai_tool_events(pieces: Sequence[dict[str, object]], text: str = "", end: bytes = b"\n") -> bytes:
    """A /v1/chat/completions SSE body whose deltas carry these `tool_calls` pieces (one a chunk, as OpenAI
    streams them), after any text, ending with `finish_reason: tool_calls`, usage and [DONE]."""
    body = openai_events([text] if text else [], finish_reason="tool_calls", end=end)
    base = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "m"}
    events = [
        b"data: "
        + msgspec.json.encode(
            {**base, "choices": [{"index": 0, "delta": {"tool_calls": [piece]}, "finish_reason": None}]}
        )
        + end
        + end
        for piece in pieces
    ]
    finish = body.rindex(b"data: ", 0, body.index(b'"delta":{},'))  # the event with the finish_reason
    return body[:finish] + b"".join(events) + body[finish:]


def openai_call_pieces(index: int, call_id: str, name: str, arguments: str, size: int = 4) -> list[dict[str, object]]:
    """One call as OpenAI streams it: id, type and name with empty arguments, then the arguments in pieces."""
    pieces: list[dict[str, object]] = [
        {"index": index, "id": call_id, "type": "function", "function": {"name": name, "arguments": ""}}
    ]
    for start in range(0, len(arguments), size):
        pieces.append({"index": index, "function": {"arguments": arguments[start : start + size]}})
    return pieces
