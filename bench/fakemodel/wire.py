"""The bytes the fake writes: response heads, Ollama NDJSON and OpenAI SSE replies, error and listing bodies."""

from __future__ import annotations

import dataclasses
import email.utils
import http
import time
from typing import Any, Final, cast

import msgspec

from .scripts import Script, ToolCall

__all__ = ["VERSION", "Reply", "Wire"]

VERSION: Final = "0.12.0"
_MODEL_SIZE: Final = 397821319
_DETAILS: Final = {"format": "gguf", "family": "qwen2", "parameter_size": "494M", "quantization_level": "Q4_K_M"}
_TOKEN_CACHE: Final = 4096  # encoded tokens kept; the benchmark's vocabulary is 16


@dataclasses.dataclass(slots=True)
class Reply:
    """A streamed reply cut where a script may pause or break it; every part is a payload, framed when written."""

    lead: bytes  # written with the head (OpenAI's role chunk)
    items: list[bytes]  # token lines, then tool-call lines (or the raw chunks)
    tail: bytes  # the final line(s)
    error: bytes  # the in-band error line that replaces the tail


def _created_at() -> bytes:
    now = time.time()
    return (time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int((now % 1) * 1e6):06d}Z").encode()


def openai_error(message: str, status: int) -> dict[str, Any]:
    """OpenAI's error object, as llama.cpp's server fills it (``code`` is the status)."""
    return {"error": {"message": message, "type": "server_error", "param": None, "code": status}}


def _ollama_calls(calls: list[ToolCall]) -> list[dict[str, Any]]:
    return [{"function": {"name": call.name, "arguments": call.arguments}} for call in calls]


def _call_id(call: ToolCall, index: int) -> str:
    return call.id if call.id is not None else f"call_{index}"


class Wire:
    """Builds response bytes with one shared encoder, a cache of encoded tokens and a Date recomputed per second."""

    def __init__(self) -> None:
        self.encode = msgspec.json.Encoder().encode
        self._tokens: dict[str, bytes] = {}
        self._status_lines: dict[int, bytes] = {}
        self._dones: dict[tuple[str, int, int], bytes] = {}
        self._date_second = -1
        self._date = b""

    def token(self, text: str) -> bytes:
        """``text`` as a JSON string, cached."""
        encoded = self._tokens.get(text)
        if encoded is None:
            if len(self._tokens) >= _TOKEN_CACHE:
                self._tokens.clear()
            encoded = self._tokens[text] = self.encode(text)
        return encoded

    def tokens(self, texts: list[str]) -> list[bytes]:
        """Each of ``texts`` as a JSON string (the per-token hot path: one dict lookup each when cached)."""
        get = self._tokens.get
        encoded = [get(text) for text in texts]
        return [self.token(text) for text in texts] if None in encoded else cast("list[bytes]", encoded)

    def date(self) -> bytes:
        """The HTTP ``Date`` value."""
        now = int(time.time())
        if now != self._date_second:
            self._date_second, self._date = now, email.utils.formatdate(now, usegmt=True).encode()
        return self._date

    def head(
        self, status: int, content_type: str, keep_alive: bool, length: int | None, script: Script | None = None
    ) -> bytes:
        """A response head; chunked when ``length`` is None; the script's extra headers and gzip marker added."""
        status_line = self._status_lines.get(status)
        if status_line is None:
            try:
                reason = http.HTTPStatus(status).phrase
            except ValueError:
                reason = "Unknown"
            status_line = self._status_lines[status] = f"HTTP/1.1 {status} {reason}".encode()
        framing = b"Transfer-Encoding: chunked" if length is None else b"Content-Length: %d" % length
        extra = b"" if keep_alive else b"\r\nConnection: close"
        if script is not None and (script.headers or script.gzip):
            extra += b"".join(f"\r\n{k}: {v}".encode("latin-1") for k, v in script.headers.items())
            extra += b"\r\nContent-Encoding: gzip" if script.gzip else b""
        return b"%s\r\nContent-Type: %s\r\nDate: %s\r\n%s%s\r\n\r\n" % (
            status_line,
            content_type.encode(),
            self.date(),
            framing,
            extra,
        )

    def whole(self, status: int, body: bytes, keep_alive: bool, content_type: str = "application/json") -> bytes:
        """A complete response with a Content-Length body."""
        return self.head(status, content_type, keep_alive, len(body)) + body

    def json(self, status: int, obj: object, keep_alive: bool) -> bytes:
        """A complete JSON response."""
        return self.whole(status, self.encode(obj), keep_alive)

    # ------------------------------------------------------------------ Ollama

    def _done(self, script: Script) -> bytes:
        key = (script.done_reason, script.prompt_eval_count, script.completion_tokens())
        done = self._dones.get(key)
        if done is None:
            if len(self._dones) >= _TOKEN_CACHE:
                self._dones.clear()
            done = self._dones[key] = (
                b'"done":true,"done_reason":%s,"total_duration":123456,"load_duration":1000,"prompt_eval_count":%d,'
                b'"prompt_eval_duration":1000,"eval_count":%d,"eval_duration":5000' % (self.encode(key[0]), *key[1:])
            )
        return done

    def ollama_stream(self, script: Script, model: str, generate: bool) -> Reply:
        """An ``/api/chat`` (or ``/api/generate``) NDJSON reply."""
        key = b"response" if generate else b"message"
        prefix = b'{"model":%s,"created_at":"%s",' % (self.token(model), _created_at())
        prefix += b'"response":' if generate else b'"message":{"role":"assistant","content":'
        close = b"," if generate else b"},"
        if script.raw_body is not None:
            items = [part for part in script.raw_body if part]  # b"" would end the body
        else:
            items = [b'%s%s%s"done":false}\n' % (prefix, token, close) for token in self.tokens(script.tokens)]
        if script.tool_calls and script.raw_body is None and not generate:
            calls = self.encode(_ollama_calls(script.tool_calls))
            items.append(b'%s"","tool_calls":%s},"done":false}\n' % (prefix, calls))
        context = b',"context":[1,2,3]' if key == b"response" else b""
        tail = b"" if script.raw_body is not None else b'%s""%s%s%s}\n' % (prefix, close, self._done(script), context)
        return Reply(b"", items, tail, self.encode({"error": script.error}) + b"\n")

    def ollama_whole(self, script: Script, model: str, generate: bool) -> bytes:
        """The ``"stream": false`` body."""
        text = "".join(script.tokens)
        fields: dict[str, Any] = {"model": model, "created_at": _created_at().decode()}
        if generate:
            fields["response"] = text
        else:
            message: dict[str, Any] = {"role": "assistant", "content": text}
            if script.tool_calls:
                message["tool_calls"] = _ollama_calls(script.tool_calls)
            fields["message"] = message
        body = self.encode(fields)[:-1] + b"," + self._done(script)
        return body + (b',"context":[1,2,3]}' if generate else b"}")

    # ------------------------------------------------------------------ OpenAI

    def _finish(self, script: Script) -> str:
        return "tool_calls" if script.tool_calls and script.done_reason == "stop" else script.done_reason

    def _usage(self, script: Script) -> dict[str, int]:
        completion = script.completion_tokens()
        prompt = script.prompt_eval_count
        return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}

    def openai_stream(self, script: Script, model: str, include_usage: bool) -> Reply:
        """A ``/v1/chat/completions`` SSE reply: one event per token, tool calls in pieces, finish, usage, [DONE]."""
        end = b"\r\n" if script.crlf else b"\n"
        fields = b": keep-alive%sevent: message%sid: 1%s" % (end, end, end) if script.comments else b""
        base = b'{"id":"chatcmpl-fake","object":"chat.completion.chunk","created":1,"model":%s,' % self.token(model)
        choice = base + b'"choices":[{"index":0,"delta":%s,"logprobs":null,"finish_reason":%s}]}'

        def event(data: bytes) -> bytes:
            return b"%sdata: %s%s%s" % (fields, data, end, end)

        lead = event(choice % (b'{"role":"assistant","content":""}', b"null"))
        if script.raw_body is not None:
            error = event(self.encode(openai_error(script.error, 500)))
            return Reply(lead, [part for part in script.raw_body if part], b"", error)
        items = [event(choice % (b'{"content":%s}' % token, b"null")) for token in self.tokens(script.tokens)]
        for index, call in enumerate(script.tool_calls):
            first = {"index": index, "id": _call_id(call, index), "type": "function"}
            first["function"] = {"name": call.name, "arguments": ""}
            items.append(event(choice % (self.encode({"tool_calls": [first]}), b"null")))
            arguments = self.encode(call.arguments).decode()
            size = max(1, -(-len(arguments) // max(1, call.pieces)))
            for start in range(0, len(arguments), size):
                piece = {"index": index, "function": {"arguments": arguments[start : start + size]}}
                items.append(event(choice % (self.encode({"tool_calls": [piece]}), b"null")))
        tail = event(choice % (b"{}", self.token(self._finish(script))))
        if include_usage and script.usage:
            tail += event(base + b'"choices":[],"usage":%s}' % self.encode(self._usage(script)))
        if script.send_done:
            tail += b"data: [DONE]" + end + end
        return Reply(lead, items, tail, event(self.encode(openai_error(script.error, 500))))

    def openai_whole(self, script: Script, model: str) -> bytes:
        """The ``chat.completion`` object for a request without ``"stream": true``."""
        text = "".join(script.tokens)
        message: dict[str, Any] = {"role": "assistant", "content": text if text or not script.tool_calls else None}
        if script.tool_calls:
            message["tool_calls"] = [
                {
                    "id": _call_id(call, index),
                    "type": "function",
                    "function": {"name": call.name, "arguments": self.encode(call.arguments).decode()},
                }
                for index, call in enumerate(script.tool_calls)
            ]
        choice = {"index": 0, "message": message, "finish_reason": self._finish(script)}
        whole = {"id": "chatcmpl-fake", "object": "chat.completion", "created": 1, "model": model}
        return self.encode({**whole, "choices": [choice], "usage": self._usage(script)})

    # ------------------------------------------------------------------ listings

    def tags(self, models: list[str]) -> dict[str, Any]:
        """``/api/tags``."""
        return {
            "models": [
                {
                    "name": name,
                    "model": name,
                    "modified_at": "2026-11-01T00:00:00Z",
                    "size": _MODEL_SIZE,
                    "digest": "abc",
                    "details": _DETAILS,
                }
                for name in models
            ]
        }

    def ps(self, loaded: list[str]) -> dict[str, Any]:
        """``/api/ps``: the models marked loaded."""
        rows = [
            {"name": n, "model": n, "size": _MODEL_SIZE, "digest": "abc", "details": _DETAILS}
            | {"expires_at": "2026-11-01T00:05:00Z", "size_vram": 0}
            for n in loaded
        ]
        return {"models": rows}

    def show(self, capabilities: list[str]) -> dict[str, Any]:
        """``/api/show`` for any known model."""
        return {
            "modelfile": "FROM fake\n",
            "parameters": "stop <|im_end|>",
            "template": "{{ .Prompt }}",
            "details": _DETAILS,
            "model_info": {"general.architecture": "qwen2", "qwen2.context_length": 32768},
            "capabilities": capabilities,
        }

    def openai_models(self, models: list[str]) -> dict[str, Any]:
        """``/v1/models``."""
        return {
            "object": "list",
            "data": [{"id": m, "object": "model", "created": 1, "owned_by": "fake"} for m in models],
        }
