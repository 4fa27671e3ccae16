"""Answering one request on a connection: the routes, and a chat reply written at once or paced by its script."""

from __future__ import annotations

import asyncio
import zlib
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Literal

import msgspec

from .scripts import Recorded, Script
from .wire import VERSION, Reply, openai_error

if TYPE_CHECKING:
    from .connection import Connection

__all__ = ["route"]

_Outcome = Literal["done", "error", "stall", "reset", "close"]
_END: bytes = b"0\r\n\r\n"
_NOT_FOUND = b'{"error":"not found"}'
_NOT_ALLOWED = b'{"error":"method not allowed"}'
_CHATS = ("/api/chat", "/api/generate", "/v1/chat/completions")


class _Framer:
    """Frames payloads as HTTP chunks, gzip-compressed (flushed per chunk) when the script asks for it."""

    def __init__(self, compress: bool) -> None:
        self._zip = zlib.compressobj(wbits=31) if compress else None

    def __call__(self, payload: bytes) -> bytes:
        if self._zip is not None:
            payload = self._zip.compress(payload) + self._zip.flush(zlib.Z_SYNC_FLUSH)
        return b"%x\r\n%s\r\n" % (len(payload), payload)

    def end(self) -> bytes:
        if self._zip is None:
            return _END
        tail = self._zip.flush()
        return b"%x\r\n%s\r\n%s" % (len(tail), tail, _END)


def route(conn: Connection, req: Recorded, keep: bool) -> None:
    """Answer ``req``: a chat through :func:`_chat`, anything else at once."""
    fake, wire = conn.fake, conn.fake.wire
    path, method = req.path, req.method
    if fake.api_key is not None and req.headers.get("authorization") != f"Bearer {fake.api_key}":
        error = {"error": {"message": "Invalid API key", "type": "invalid_request_error", "code": 401}}
        conn.write(wire.json(401, error, keep))
        return
    if path in _CHATS and method == "POST":
        _chat(conn, req, keep)
        return
    fake.stats.other_requests += 1
    extra = fake.extra_endpoint(method, path, req.body, keep)
    if extra is not None:
        conn.write(extra)
        return
    gets: dict[str, Callable[[], Any]] = {
        "/api/version": lambda: {"version": VERSION},
        "/api/tags": lambda: wire.tags(list(fake.models)),
        "/api/ps": lambda: wire.ps(list(fake.loaded)),
        "/v1/models": lambda: wire.openai_models(list(fake.models)),
    }
    if path == "/" and method in ("GET", "HEAD"):
        response = wire.whole(200, b"Ollama is running", keep, "text/plain; charset=utf-8")
    elif path == "/api/show" and method == "POST":
        name = (req.json.get("model") or req.json.get("name")) if isinstance(req.json, dict) else None
        if fake.strict_models and name not in fake.models:
            response = wire.json(404, {"error": f"model '{name}' not found"}, keep)
        else:
            response = wire.json(200, wire.show(list(fake.capabilities)), keep)
    elif path in gets and method in ("GET", "HEAD"):
        response = wire.json(200, gets[path](), keep)
    elif path in gets or path in _CHATS:
        response = wire.whole(405, _NOT_ALLOWED, keep)
    elif path.startswith("/v1/"):
        response = wire.json(404, {"error": {"message": "not found", "code": 404}}, keep)
    else:
        response = wire.whole(404, _NOT_FOUND, keep)
    conn.write(response[: response.index(b"\r\n\r\n") + 4] if method == "HEAD" else response)


def _error(openai: bool, message: str, status: int) -> dict[str, Any]:
    return openai_error(message, status) if openai else {"error": message}


def _chat(conn: Connection, req: Recorded, keep: bool) -> None:
    fake, wire = conn.fake, conn.fake.wire
    openai = req.path == "/v1/chat/completions"
    body = req.json
    model = body.get("model") if isinstance(body, dict) else None
    if not isinstance(body, dict) or not isinstance(model, str) or not model:
        fake.stats.bad_requests += 1
        message = "model is required" if isinstance(body, dict) or openai else "invalid request body"
        conn.write(wire.json(400, _error(openai, message, 400), keep))
        return
    stats = fake.stats
    stats.chat_requests += 1
    stats.last_chat_body = msgspec.Raw(req.body)
    if fake.strict_models and model not in fake.models:
        conn.write(wire.json(404, _error(openai, f"model '{model}' not found", 404), keep))
        return
    script = fake.script_for(req, model)
    stream = body.get("stream") is True if openai else body.get("stream") is not False
    if stream:
        stats.stream_requests += 1
    else:
        stats.nonstream_requests += 1
    at_once = script.header_delay <= 0 and not script.stall_before_headers
    if script.status != 200 and at_once:
        conn.write(wire.json(script.status, _error(openai, script.error, script.status), keep))
        return
    whole, reply = b"", None
    if not stream:
        whole = (
            wire.openai_whole(script, model) if openai else wire.ollama_whole(script, model, req.path != "/api/chat")
        )
    elif openai:
        options = body.get("stream_options")
        reply = wire.openai_stream(script, model, isinstance(options, dict) and bool(options.get("include_usage")))
    else:
        reply = wire.ollama_stream(script, model, req.path == "/api/generate")
    if at_once and script.is_plain():
        _write_at_once(conn, script, keep, openai, whole, reply)
        return
    conn.busy = True
    conn.task = asyncio.get_running_loop().create_task(_scripted(conn, script, keep, openai, whole, reply))


def _stream_head(conn: Connection, script: Script, keep: bool, openai: bool) -> bytes:
    content_type = "text/event-stream" if openai else "application/x-ndjson"
    return conn.fake.wire.head(200, content_type, keep, None, script)


def _whole(conn: Connection, script: Script, keep: bool, body: bytes) -> bytes:
    if script.raw_body is not None:
        body = b"".join(script.raw_body)
    if script.gzip:
        import gzip  # only a test asks for it

        body = gzip.compress(body)
    return conn.fake.wire.head(200, "application/json", keep, len(body), script) + body


def _write_at_once(
    conn: Connection, script: Script, keep: bool, openai: bool, whole: bytes, reply: Reply | None
) -> None:
    """A reply nothing delays: one write per line (or per reply with ``batch_writes`` or ``unchunked``), no task."""
    conn.fake.stats.tokens_sent += len(script.tokens)
    if reply is None:
        conn.write(_whole(conn, script, keep, whole))
        return
    if conn.fake.unchunked and not script.gzip:
        body = b"".join([reply.lead, *reply.items, reply.tail, script.after_done])
        content_type = "text/event-stream" if openai else "application/x-ndjson"
        conn.write(conn.fake.wire.head(200, content_type, keep, len(body), script) + body)
        return
    frame = _Framer(script.gzip)
    parts: list[bytes] = []
    write = parts.append if conn.fake.batch_writes or conn.transport is None else conn.transport.write
    first = _stream_head(conn, script, keep, openai) + (frame(reply.lead) if reply.lead else b"")
    items = reply.items
    write(first + frame(items[0]) if items else first)
    if script.gzip:
        for item in items[1:]:
            write(frame(item))
    else:  # the benchmark's per-token path: one format and one write per line
        for item in items[1:]:
            write(b"%x\r\n%s\r\n" % (len(item), item))
    after = frame(script.after_done) if script.after_done else b""
    write((frame(reply.tail) if reply.tail else b"") + after + frame.end())
    if parts:
        conn.write(b"".join(parts))


async def _pace(script: Script, count: int, emit: Callable[[int], Awaitable[None]] | None) -> _Outcome:
    """Walk through ``count`` items with the script's delays, stalls, resets, closes and errors."""
    for i in range(count + 1):
        if script.reset_after == i:
            return "reset"
        if script.close_after == i:
            return "close"
        if script.stall_after == i:
            return "stall"
        pause = script.first_delay if i == 0 else script.delay if i < count else script.final_delay
        if pause is None:
            pause = script.delay
        if pause > 0:
            await asyncio.sleep(pause)
        if script.error_after == i:
            return "error"
        if i < count and emit is not None:
            await emit(i)
    return "done"


async def _scripted(
    conn: Connection, script: Script, keep: bool, openai: bool, whole: bytes, reply: Reply | None
) -> None:
    """A reply with delays or faults, run as a task; the requests pipelined behind it wait."""
    wire = conn.fake.wire
    alive = False
    try:
        if script.header_delay > 0:
            await asyncio.sleep(script.header_delay)
        if script.reset_after == -1:
            conn.reset()
        elif script.close_after == -1:
            conn.close()
        elif script.stall_before_headers:
            await conn.left.wait()
        elif script.status != 200:
            conn.write(wire.json(script.status, _error(openai, script.error, script.status), keep))
            alive = True
        else:
            alive = await _paced(conn, script, keep, openai, whole, reply)
    except asyncio.CancelledError:
        conn.fake.stats.disconnects_mid_reply += 1
        raise
    except Exception as exc:
        conn.fake.errors.append(exc)
        conn.abort()
    finally:
        conn.task = None
        conn.busy = False
    if alive and not keep:
        conn.close()
    elif alive and conn.buf:
        conn.process()


async def _paced(conn: Connection, script: Script, keep: bool, openai: bool, whole: bytes, reply: Reply | None) -> bool:
    """Write the reply item by item with the script's pauses; True when the connection stays usable."""
    frame = _Framer(script.gzip)
    if reply is None:
        count = len(script.raw_body) if script.raw_body is not None else len(script.tokens)
        outcome = await _pace(script, count, None)
    else:
        items = reply.items

        async def emit(i: int) -> None:
            conn.write(frame(items[i]))
            conn.fake.stats.tokens_sent += 1
            await conn.drain()

        conn.write(_stream_head(conn, script, keep, openai) + (frame(reply.lead) if reply.lead else b""))
        outcome = await _pace(script, len(items), emit)
    if outcome == "reset":
        conn.reset()
        return False
    if outcome == "close":
        conn.close()
        return False
    if outcome == "stall":
        await conn.left.wait()
        return False
    if reply is None:
        failed = outcome == "error"
        conn.write(
            conn.fake.wire.json(500, _error(openai, script.error, 500), keep)
            if failed
            else _whole(conn, script, keep, whole)
        )
        return True
    if outcome == "error":
        conn.write(frame(reply.error) + frame.end())
        return True
    conn.write((frame(reply.tail) if reply.tail else b"") + (frame(script.after_done) if script.after_done else b""))
    if script.hang_after_done:
        await conn.left.wait()
        return False
    conn.write(frame.end())
    return True
