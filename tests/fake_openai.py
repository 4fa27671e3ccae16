"""A fake OpenAI-compatible server for tests: real HTTP/1.1 on 127.0.0.1, streaming server-sent events.

It shares the fake Ollama's connection handling (keep-alive, request recording, noticing a client that
leaves) and its :class:`Script` knobs (tokens, delays, error statuses, mid-stream errors, stalls, resets,
raw bodies), and speaks ``POST /v1/chat/completions`` the way llama.cpp's server and OpenAI do:
``text/event-stream`` with one ``data: {chunk}`` event per token, a last chunk carrying ``finish_reason``,
a usage chunk when the request asked for ``stream_options.include_usage``, then ``data: [DONE]``.  A
mid-stream error is ``data: {"error": {...}}`` and the stream ends without ``[DONE]``.  ``"stream": false``
gets one ``chat.completion`` object.  ``GET /v1/models`` lists :attr:`FakeOllama.models`.

Usage::

    with FakeOpenAI() as fake:
        fake.script = OpenAIScript(tokens=["a", "b"], crlf=True)
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
from typing import Any

from tests.fake_ollama import FakeOllama, Recorded, Script, _chunk, _Conn, _dumps

__all__ = ["FakeOpenAI", "OpenAIScript"]


@dataclasses.dataclass
class OpenAIScript(Script):
    """A :class:`Script` with the OpenAI-specific knobs; ``done_reason`` is the ``finish_reason``,
    ``prompt_eval_count`` / ``eval_count`` the usage counts."""

    usage: bool = True  # send the usage chunk when asked for (llama-cpp-python never does)
    crlf: bool = False  # end lines with \r\n, as some servers do
    comments: bool = False  # a ": keep-alive" comment and an "event:"/"id:" field before each event
    send_done: bool = True  # end with data: [DONE]


def _error_object(message: str, status: int) -> dict[str, Any]:
    return {"error": {"message": message, "type": "server_error", "param": None, "code": status}}


class FakeOpenAI(FakeOllama):
    """A scriptable fake OpenAI-compatible server; ``api_key`` set means requests without it get 401."""

    def __init__(self) -> None:
        super().__init__()
        self.script: Script = OpenAIScript()
        self.models = ["fake-model"]
        self.api_key: str | None = None

    @property
    def chat_requests(self) -> list[Any]:
        """The JSON bodies of the ``/v1/chat/completions`` requests received so far."""
        return [r.json for r in list(self.requests) if r.method == "POST" and r.path == "/v1/chat/completions"]

    async def _dispatch(self, conn: _Conn, req: Recorded, keep: bool) -> bool:
        if self.api_key is not None and req.headers.get("authorization") != f"Bearer {self.api_key}":
            error = {"error": {"message": "Invalid API key", "type": "invalid_request_error", "code": 401}}
            await self._send_json(conn, 401, error, keep_alive=keep)
            return True
        if req.path == "/v1/chat/completions" and req.method == "POST":
            return await self._guarded(conn, self._completions(conn, req, keep))
        if req.path == "/v1/models" and req.method == "GET":
            models = [{"id": m, "object": "model", "created": 1, "owned_by": "fake"} for m in self.models]
            await self._send_json(conn, 200, {"object": "list", "data": models}, keep_alive=keep)
            return True
        await self._send_json(conn, 404, {"error": {"message": "not found", "code": 404}}, keep_alive=keep)
        return True

    async def _completions(self, conn: _Conn, req: Recorded, keep: bool) -> bool:
        body = req.json
        if not isinstance(body, dict) or not isinstance(body.get("model"), str):
            await self._send_json(conn, 400, _error_object("model is required", 400), keep_alive=keep)
            return True
        model = body["model"]
        script = self.scripts.get(model, self.script)
        extra = script if isinstance(script, OpenAIScript) else OpenAIScript()
        if script.header_delay > 0:
            await asyncio.sleep(script.header_delay)
        if script.reset_after == -1:
            conn.reset()
            return False
        if script.stall_before_headers:
            await conn.gone.wait()
            return False
        if script.status != 200:
            await self._send_json(conn, script.status, _error_object(script.error, script.status), keep_alive=keep)
            return True
        if body.get("stream") is not True:
            return await self._whole(conn, script, model, keep)
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        return await self._stream(conn, script, extra, model, keep, include_usage)

    def _counts(self, script: Script) -> dict[str, int]:
        completion = len(script.tokens) if script.eval_count is None else script.eval_count
        return {
            "prompt_tokens": script.prompt_eval_count,
            "completion_tokens": completion,
            "total_tokens": script.prompt_eval_count + completion,
        }

    async def _stream(
        self, conn: _Conn, script: Script, extra: OpenAIScript, model: str, keep: bool, include_usage: bool
    ) -> bool:
        head = self._head_sse(keep)
        await conn.write(head)
        end = b"\r\n" if extra.crlf else b"\n"
        base = {"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": 1, "model": model}

        def event(obj: object) -> bytes:
            prefix = b": keep-alive" + end + b"event: message" + end + b"id: 1" + end if extra.comments else b""
            return prefix + b"data: " + _dumps(obj) + end + end

        def chunk(delta: dict[str, Any], finish: str | None) -> dict[str, Any]:
            return {**base, "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]}

        raw = None if script.raw_body is None else [part for part in script.raw_body if part]
        tokens = list(script.tokens)
        await conn.write(_chunk(event(chunk({"role": "assistant", "content": ""}, None))))

        async def emit(i: int) -> None:
            if raw is not None:
                await conn.write(_chunk(raw[i]))
            else:
                await conn.write(_chunk(event(chunk({"content": tokens[i]}, None))))

        outcome = await self._pace(script, len(tokens) if raw is None else len(raw), emit)
        if outcome in ("stall", "reset"):
            return await self._finish_abnormally(conn, outcome)
        if outcome == "error":
            await conn.write(_chunk(event(_error_object(script.error, 500))))
        elif raw is None:
            await conn.write(_chunk(event(chunk({}, script.done_reason))))
            if include_usage and extra.usage:
                await conn.write(_chunk(event({**base, "choices": [], "usage": self._counts(script)})))
            if extra.send_done:
                await conn.write(_chunk(b"data: [DONE]" + end + end))
        await conn.write(b"0\r\n\r\n")
        return True

    def _head_sse(self, keep: bool) -> bytes:
        lines = ["HTTP/1.1 200 OK", "Content-Type: text/event-stream", "Transfer-Encoding: chunked"]
        if not keep:
            lines.append("Connection: close")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")

    async def _whole(self, conn: _Conn, script: Script, model: str, keep: bool) -> bool:
        async def emit(i: int) -> None:
            return None

        outcome = await self._pace(script, len(script.tokens), emit)
        if outcome in ("stall", "reset"):
            return await self._finish_abnormally(conn, outcome)
        if outcome == "error":
            await self._send_json(conn, 500, _error_object(script.error, 500), keep_alive=keep)
            return True
        whole = {
            "id": "chatcmpl-fake",
            "object": "chat.completion",
            "created": 1,
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": "".join(script.tokens)},
                    "finish_reason": script.done_reason,
                }
            ],
            "usage": self._counts(script),
        }
        await self._send(conn, 200, json.dumps(whole).encode(), "application/json", keep_alive=keep)
        return True
